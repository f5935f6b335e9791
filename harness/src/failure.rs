//! How a failed attempt is classed: the errors bring-up and the body raise, and the
//! report's [`Failure`] record made from them.

use std::time::Duration;

use bogie_reports::{Failure, FailureClass};

use crate::bootwatch::BootFailure;
use crate::ssh::SshError;

/// A problem of the harness or platform rather than of the image (class `harness`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(pub String);

/// A unit failed during bring-up (class `systemd`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnitFailure(pub String);

/// The test ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("test timed out after {}s", .0.as_secs())]
pub struct TimedOut(pub Duration);

/// The class of a test's error: a [`BootFailure`]'s own, `timeout`, `harness` (also for
/// SSH errors anywhere in the chain), `systemd` for a [`UnitFailure`], else `assertion`
/// (which [`make_failure`] may refine from the message).
pub fn classify(e: &anyhow::Error) -> FailureClass {
    if let Some(b) = e.downcast_ref::<BootFailure>() {
        b.class
    } else if e.downcast_ref::<TimedOut>().is_some() {
        FailureClass::Timeout
    } else if e.downcast_ref::<HarnessError>().is_some() {
        FailureClass::Harness
    } else if e.downcast_ref::<UnitFailure>().is_some() {
        FailureClass::Systemd
    } else if e.chain().any(|c| c.downcast_ref::<SshError>().is_some()) {
        FailureClass::Harness
    } else {
        FailureClass::Assertion
    }
}

/// A failure record: the class given, the signature from triage's masking of the
/// decisive line, the first line as the message.
pub fn make_failure(class: FailureClass, message: &str, excerpt: &str) -> Failure {
    let (tclass, sig) = bogie_reports::triage::triage(message, excerpt);
    let class = if class == FailureClass::Assertion {
        tclass
    } else {
        class
    };
    Failure {
        class,
        signature: sig,
        message: message.lines().next().unwrap_or("").to_string(),
        excerpt: if excerpt.is_empty() {
            message.to_string()
        } else {
            format!("{message}\n{excerpt}")
        },
    }
}
