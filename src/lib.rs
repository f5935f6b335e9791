//! The `bogie` library behind the binary. The flow: clap parses the command line into
//! `cli.rs` (and `cli_cloud.rs`); `options` turns those flags into each command's own
//! options, once; `commands` runs the command, setting up images and platforms through
//! `setup` (and `cloud`), and shows progress through `progress`. End-to-end tests drive it
//! with their own registries of fixture tests.

pub mod cli;
pub mod cli_cloud;
pub mod cloud;
pub mod commands;
pub mod host;
pub mod options;
pub mod parse;
pub mod progress;
pub mod setup;

/// A usage or input error: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Shorthand for an input error.
pub fn input_error(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(msg.into()))
}
