//! A small JSON REST client: base URL, authentication, retries on throttling and server
//! errors, redacted errors.

use std::sync::Arc;
use std::time::Duration;

use bogie_harness::PlatformError;
use bogie_platform_common::http::{api_error, client, transport_error};
use bogie_platform_common::Secret;
use serde_json::Value;

use crate::auth::TokenSource;

/// How requests authenticate.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>` from a token source.
    Bearer(Arc<dyn TokenSource>),
    /// A fixed header (`X-Auth-Token: <key>`).
    Header(&'static str, Secret),
}

/// A REST client for one service.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    service: &'static str,
    attempts: u32,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("service", &self.service)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A response: status and JSON body (Null when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
    /// The raw body when it was not JSON.
    pub text: String,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Resp {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Rest {
    /// A client for `service` at `base` (no trailing slash).
    pub fn new(service: &'static str, base: &str, auth: Auth) -> Result<Rest, PlatformError> {
        Ok(Rest {
            http: client(Duration::from_secs(120))?,
            base: base.trim_end_matches('/').to_string(),
            auth,
            service,
            attempts: 4,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to `path` (relative to the base, with its query). Any status is
    /// returned; transport errors, and 429/5xx after the retries, are errors.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Resp, PlatformError> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        };
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), &url);
            match &self.auth {
                Auth::Bearer(src) => {
                    let t = src.token().await?;
                    req = req.bearer_auth(t.expose());
                }
                Auth::Header(name, v) => req = req.header(*name, v.expose()),
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.attempts && (e.is_connect() || e.is_timeout()) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
                Err(e) => return Err(transport_error(self.service, what, &e)),
            };
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let text = resp
                .text()
                .await
                .map_err(|e| transport_error(self.service, what, &e))?;
            if (status == 429 || status >= 500) && attempt < self.attempts {
                tracing::debug!(service = self.service, status, "{what}: retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Ok(Resp {
                status,
                body,
                text,
                headers,
            });
        }
    }

    /// Like [`Rest::send`], but a non-2xx status is an error naming `what`.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Resp, PlatformError> {
        let r = self.send(method, path, body, what).await?;
        if (200..300).contains(&r.status) {
            Ok(r)
        } else {
            Err(self.error(what, &r))
        }
    }

    /// An API error from a response.
    pub fn error(&self, what: &str, r: &Resp) -> PlatformError {
        let detail = error_message(&r.body).unwrap_or_else(|| r.text.trim().to_string());
        api_error(self.service, format!("{what}: HTTP {}: {detail}", r.status))
    }
}

/// The human part of the usual error bodies: ARM's and Google's `error.message`,
/// Equinix's `errors[]`.
fn error_message(v: &Value) -> Option<String> {
    if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
        let code = v
            .pointer("/error/code")
            .map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        return Some(if code.is_empty() {
            m.to_string()
        } else {
            format!("{code}: {m}")
        });
    }
    if let Some(a) = v.get("errors").and_then(Value::as_array) {
        let parts: Vec<String> = a
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect();
        return Some(parts.join("; "));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_are_read() {
        assert_eq!(
            error_message(&json!({"error": {"code": "Conflict", "message": "busy"}})).unwrap(),
            "Conflict: busy"
        );
        assert_eq!(
            error_message(&json!({"error": {"code": 404, "message": "nope"}})).unwrap(),
            "404: nope"
        );
        assert_eq!(
            error_message(&json!({"errors": ["a", "b"]})).unwrap(),
            "a; b"
        );
        assert!(error_message(&json!({})).is_none());
    }
}
