//! Credentials never appear in logs, errors or reports.
//!
//! Two layers: a [`Secret`] prints as `[redacted]` wherever it is formatted, and
//! [`redact`] scrubs text (an API's error body, a command's output) of every secret
//! registered with [`register`] and of anything that looks like a credential (bearer
//! tokens, `X-Auth-Token` headers, SAS signatures, OAuth `access_token` fields, private
//! keys, JWTs, AWS secret keys).

use std::fmt;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

/// What a scrubbed credential is replaced with.
pub const REDACTED: &str = "[redacted]";

/// A credential. `Debug` and `Display` print `[redacted]`; [`Secret::expose`] gives the
/// value to the one place that needs it (an HTTP header). Creating one registers the value
/// so [`redact`] removes it from any text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps (and registers) a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        let v = value.into();
        register(&v);
        Secret(v)
    }

    /// The value, for the request that needs it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

fn registry() -> &'static Mutex<Vec<String>> {
    static R: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers a credential so [`redact`] removes it from any text. Values shorter than
/// 6 characters are not registered (they would mangle ordinary text).
pub fn register(secret: &str) {
    let s = secret.trim();
    if s.len() < 6 {
        return;
    }
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|x| x == s) {
        r.push(s.to_string());
        // Longest first, so a secret containing another is replaced whole.
        r.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

fn patterns() -> &'static [(Regex, &'static str)] {
    static P: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    P.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("valid redaction pattern");
        vec![
            // Authorization: Bearer xxx / Basic xxx
            (r(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/=]{8,}"), "$1 [redacted]"),
            // Header-style credentials: X-Auth-Token: xxx, x-api-key=xxx
            (
                r(r#"(?i)\b(x-auth-token|x-api-key|authorization|api[_-]?key|auth[_-]?token|client[_-]?secret|password|aws_secret_access_key|aws_session_token|secret[_-]?access[_-]?key)("?\s*[:=]\s*"?)[^\s",}&]+"#),
                "$1$2[redacted]",
            ),
            // OAuth token fields in JSON: "access_token": "xxx"
            (
                r(r#"(?i)("(?:access_token|refresh_token|id_token|token|private_key|private_key_id|client_secret)"\s*:\s*")[^"]*""#),
                "$1[redacted]\"",
            ),
            // SAS signatures and signed URL credentials: sig=xxx, X-Amz-Signature=xxx
            (
                r(r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=[^&\s]+"),
                "$1=[redacted]",
            ),
            // PEM private keys
            (
                r(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
                "[redacted private key]",
            ),
            // JWTs (header.payload.signature, base64url)
            (
                r(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
                "[redacted]",
            ),
        ]
    })
}

/// Removes every registered secret and anything credential-shaped from `text`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    {
        let r = registry().lock().unwrap_or_else(|e| e.into_inner());
        for s in r.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
    }
    for (re, with) in patterns() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *with).into_owned();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("tok-SECRET-123456");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        let msg = "request failed: invalid token tok-SECRET-123456 for subscription";
        assert_eq!(
            redact(msg),
            "request failed: invalid token [redacted] for subscription"
        );
        assert_eq!(s.expose(), "tok-SECRET-123456");
    }

    #[test]
    fn credential_shapes_are_scrubbed() {
        let cases = [
            ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
            ("X-Auth-Token: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
            (
                r#"{"access_token": "ya29.a0AfH6SMB", "expires_in": 3599}"#,
                "ya29.a0AfH6SMB",
            ),
            (
                "https://x.blob.core.windows.net/c/serial.log?sv=2020&sig=AbC%2Fdef123&se=1",
                "AbC%2Fdef123",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
                "wJalrXUtnFEMI/K7MDENG",
            ),
            (
                "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
                "MIIEvQIBADANBg",
            ),
            (
                "token eyJhbGciOiJSUzI1.eyJpc3MiOiJib2dp.c2lnbmF0dXJlX3g",
                "eyJpc3MiOiJib2dp",
            ),
        ];
        for (text, secret) in cases {
            let r = redact(text);
            assert!(!r.contains(secret), "{text:?} became {r:?}");
            assert!(r.contains("redacted"), "{r}");
        }
        assert_eq!(redact("nothing secret here"), "nothing secret here");
    }
}
