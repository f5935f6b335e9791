//! The `bogie` library behind the binary: CLI parsing, the subcommands and the progress
//! display. End-to-end tests drive it with their own registries of fixture tests.

pub mod cli;
pub mod cli_cloud;
pub mod commands;
pub mod progress;

/// A usage or input error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Shorthand for an input error.
pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.into()))
}
