//! Image versions, Flatcar-style (`MAJOR.MINOR.PATCH`), as tests' version ranges and the
//! run's image name them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Flatcar-style version, `MAJOR.MINOR.PATCH` (a `+build` suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major (the Flatcar build number, e.g. 4799).
    pub major: u32,
    /// Minor (channel-specific).
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `4799.0.0`, `4799.0.0+nightly-123`, `3913.0.1`, `4799` or `4799.1`.
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.trim().split(['+', '-']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        let patch = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        if it.next().is_some() {
            return None;
        }
        Some(Version::new(major, minor, patch))
    }

    /// Like [`Version::parse`], but returns None for empty strings and strings that are not
    /// versions (a test image's Debian version is still parsed by its numeric prefix).
    pub fn parse_lenient(s: &str) -> Option<Version> {
        if s.is_empty() {
            return None;
        }
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("4799.0.0"), Some(Version::new(4799, 0, 0)));
        assert_eq!(
            Version::parse("3913.0.1+nightly-2024"),
            Some(Version::new(3913, 0, 1))
        );
        assert_eq!(Version::parse("3033"), Some(Version::new(3033, 0, 0)));
        assert_eq!(
            Version::parse("12.5+bogie.abc"),
            Some(Version::new(12, 5, 0))
        );
        assert!(Version::parse("abc").is_none());
        assert!(Version::new(3913, 0, 1) > Version::new(3913, 0, 0));
        assert!(Version::parse_lenient("").is_none());
    }
}
