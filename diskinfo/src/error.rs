//! The one error type of this crate: every variant reads as one line.

use std::path::PathBuf;

/// Why a disk image (or a part of it) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image file (or a qcow2 backing file) could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A container format this crate does not read (VMDK, VHDX, VDI, ...).
    #[error("{0} images are not supported (only raw and qcow2)")]
    UnsupportedContainer(&'static str),
    /// A qcow2 image whose header or tables make no sense.
    #[error("bad qcow2 image: {0}")]
    BadQcow2(String),
    /// A qcow2 feature this crate does not read.
    #[error("unsupported qcow2 image: {0}")]
    UnsupportedQcow2(String),
    /// A read past the end of the disk or of a partition.
    #[error("read of {len} bytes at {offset} is past the end ({size} bytes)")]
    OutOfRange {
        /// Where the read started.
        offset: u64,
        /// How many bytes were asked for.
        len: usize,
        /// The size of what was read from.
        size: u64,
    },
    /// Neither a GPT (at 512- or 4096-byte sectors) nor a whole-disk file system.
    #[error("no GPT partition table (and no file system on the whole disk)")]
    NoPartitionTable,
    /// A GPT that is damaged.
    #[error("bad GPT: {0}")]
    BadGpt(String),
    /// The partition that holds `/` was not found.
    #[error("no root partition (no partition labelled ROOT, no Linux partition with ext2/3/4)")]
    NoRoot,
    /// A file system that is not ext2/3/4 (or one `ext4-view` refuses).
    #[error("{what} is {fs}")]
    UnreadableFs {
        /// The partition (`USR-A`, `ROOT`, `partition 3`).
        what: String,
        /// What it holds instead (`btrfs`, `no known file system`, or the ext4 reader's error).
        fs: String,
    },
    /// An error of the ext2/3/4 reader while reading a path.
    #[error("{path}: {reason}")]
    Fs {
        /// The path in the OS view.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A path that does not exist in the OS view.
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// Symbolic links that loop or nest too deeply.
    #[error("{0}: too many levels of symbolic links")]
    SymlinkLoop(String),
}

impl DiskError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DiskError {
        DiskError::Io {
            path: path.into(),
            source,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = DiskError> = std::result::Result<T, E>;
