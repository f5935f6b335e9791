//! The result model of a bogie run and every writer and reader of it.
//!
//! This crate knows nothing of machines or platforms: it works on result files from any run
//! on any host, so `bogie report merge`/`matrix`/`diff` can run anywhere.
//!
//! - [`model`]: runs, tests, attempts, failures;
//! - [`jsonl`]: `results.jsonl`, appended as tests finish ([`jsonl::ResultsSink`]);
//! - [`junit`], [`tap`], [`kola_json`]: JUnit XML, kola's TAP and `report.json`, written and
//!   read back;
//! - [`triage`]: failure classes and signatures;
//! - [`matrix`]: the per-arch matrix across runs, and [`matrix::load_run`];
//! - [`merge`]: shards into one run, and [`merge::write_all`];
//! - [`diff`]: a run against a baseline;
//! - [`atomic`]: crash-safe file replacement.

pub mod atomic;
pub mod diff;
pub mod error;
pub mod jsonl;
pub mod junit;
pub mod kola_json;
pub mod matrix;
pub mod merge;
pub mod model;
pub mod tap;
pub mod triage;

#[cfg(test)]
mod testutil;

pub use error::{ReportError, Result};
pub use model::*;
