//! What makes an external test unusable.

use std::path::PathBuf;

/// Bad external tests: every one is an input error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// Metadata or a config that does not parse.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A tree or file bogie cannot use as it is.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Two tests got the same name (two `-E` directories with one basename, or a lone
    /// `test.sh` named like a file beside its directory).
    #[error("two external tests are named {name}: {} and {}", first.display(), second.display())]
    Duplicate {
        /// The name.
        name: String,
        /// One executable.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
}
