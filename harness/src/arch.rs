//! CPU architectures and kola's board names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A machine architecture, in Debian/Go spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64.
    Arm64,
}

impl Arch {
    /// `amd64` / `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// kola's board name: `amd64-usr` / `arm64-usr`.
    pub fn board(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64-usr",
            Arch::Arm64 => "arm64-usr",
        }
    }

    /// The architecture of the host bogie runs on.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::Amd64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An architecture or board name that bogie does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown architecture or board {0:?} (expected amd64, arm64, amd64-usr, arm64-usr, x86_64 or aarch64)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "amd64" | "amd64-usr" | "x86_64" | "x86-64" => Ok(Arch::Amd64),
            "arm64" | "arm64-usr" | "aarch64" => Ok(Arch::Arm64),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_boards_and_arches() {
        assert_eq!("amd64-usr".parse::<Arch>().unwrap(), Arch::Amd64);
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert_eq!(Arch::Arm64.board(), "arm64-usr");
        assert!("riscv".parse::<Arch>().is_err());
    }
}
