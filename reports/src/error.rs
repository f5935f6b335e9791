//! The crate's error type.

use std::path::{Path, PathBuf};

/// Everything that can go wrong writing or reading reports.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or directory could not be read, written, created or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (or one line of a JSON-lines file) did not parse.
    #[error("{}{}: invalid JSON: {source}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// The 1-based line, for JSON-lines files.
        line: Option<usize>,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be serialized to JSON.
    #[error("cannot serialize to JSON: {0}")]
    JsonSerialize(#[source] serde_json::Error),
    /// A file is not in the format it was expected to be in.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// JUnit XML could not be read.
    #[error("{}: invalid JUnit XML: {source}", path.display())]
    JunitRead {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: quick_junit::DeserializeError,
    },
    /// Two shards of one run disagree about the same test.
    #[error("cannot merge shards: {0}")]
    MergeConflict(Box<MergeConflict>),
    /// Nothing to work on: no runs given, or a directory holds no result file.
    #[error("no results: {0}")]
    NoResults(String),
}

impl ReportError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A format error on `path`.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        ReportError::Format {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }
}

/// Two shards of one run hold different results for the same test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeConflict {
    /// The test's name.
    pub test: String,
    /// Its architecture.
    pub arch: String,
    /// Its platform.
    pub platform: String,
    /// The run id (and shard) of the first occurrence.
    pub first_run: String,
    /// The run id (and shard) of the second occurrence.
    pub second_run: String,
    /// The first occurrence's status.
    pub first_status: &'static str,
    /// The second occurrence's status.
    pub second_status: &'static str,
}

impl std::fmt::Display for MergeConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "test {} ({}/{}) appears in run {} and run {} with different results ({} vs {})",
            self.test,
            self.arch,
            self.platform,
            self.first_run,
            self.second_run,
            self.first_status,
            self.second_status
        )
    }
}

/// The crate's result type.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;
