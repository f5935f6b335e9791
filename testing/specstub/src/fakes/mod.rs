//! In-memory fakes of the services, answering requests the description allows.

pub mod azure;
pub mod equinix;
pub mod gce;

use axum::http::HeaderMap;

/// Checks a header carries the expected credential (`Authorization: Bearer T`,
/// `X-Auth-Token: T`).
pub(crate) fn check_header(headers: &HeaderMap, name: &str, expected: &str) -> Result<(), String> {
    match headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(v) if v == expected => Ok(()),
        Some(_) => Err(format!("wrong {name}")),
        None => Err(format!("no {name} header")),
    }
}
