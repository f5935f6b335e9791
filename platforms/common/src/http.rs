//! One HTTP client setup for the REST platforms, and API errors as short, redacted
//! messages.

use std::time::Duration;

use bogie_harness::PlatformError;

use crate::redact::redact;

/// The longest part of an error body kept in a message.
const MAX_BODY: usize = 600;

/// Makes rustls use ring (already built for SSH) as its crypto provider. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client with a per-request timeout and bogie's user agent (rustls with ring).
pub fn client(timeout: Duration) -> Result<reqwest::Client, PlatformError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("bogie/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PlatformError::Api {
            service: "http".into(),
            message: redact(&format!("building the HTTP client: {e}")),
        })
}

/// A platform API error for `service`: the message is redacted and cut short.
pub fn api_error(service: &str, message: impl AsRef<str>) -> PlatformError {
    let mut m = redact(message.as_ref());
    if m.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    PlatformError::Api {
        service: service.to_string(),
        message: m,
    }
}

/// A transport error (no response) as a platform API error; the URL's query (which may
/// carry a signature) is left out.
pub fn transport_error(service: &str, what: &str, e: &reqwest::Error) -> PlatformError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let url = e
        .url()
        .map(|u| {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            )
        })
        .unwrap_or_default();
    let source = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    api_error(service, format!("{what}: {kind} ({url}){source}"))
}

/// Turns a non-success response into an error naming the operation, the status and
/// (redacted) the start of the body. Success passes the response through.
pub async fn check(
    service: &str,
    what: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, PlatformError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(api_error(
        service,
        format!("{what}: HTTP {}: {}", status.as_u16(), body.trim()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_redacted_and_short() {
        crate::redact::register("sekrit-token-value");
        let body = format!("denied for sekrit-token-value {}", "x".repeat(2000));
        let e = api_error("arm", body);
        let s = e.to_string();
        assert!(s.starts_with("arm API error: denied for [redacted]"), "{s}");
        assert!(s.len() < 700);
    }
}
