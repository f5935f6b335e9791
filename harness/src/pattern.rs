//! Test-name globs as kola matches them, and kola's platform names, shared by selection
//! and the denylist.

use globset::{GlobBuilder, GlobMatcher};

/// Bad selection input.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A pattern is not a valid glob.
    #[error("invalid test pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A pattern matched no registered test.
    #[error("unknown test {0:?} (see `bogie list`)")]
    Unknown(String),
}

/// Compiles a kola-style glob (`*` matches dots too, as Go's filepath.Match with no `/`).
pub fn glob(pattern: &str) -> Result<GlobMatcher, SelectError> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| SelectError::BadPattern {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })
}

/// kola: tests listing `qemu` also run on `qemu-unpriv` and the reverse (bogie's qemu is
/// unprivileged).
pub fn platform_matches(listed: &str, platform: &str) -> bool {
    listed == platform
        || (matches!(listed, "qemu" | "qemu-unpriv") && matches!(platform, "qemu" | "qemu-unpriv"))
}
