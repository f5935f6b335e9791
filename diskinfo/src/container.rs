//! A disk that can be read at any offset ([`Disk`]), a raw image file as one
//! ([`RawDisk`]), and a window of one (a partition, [`Slice`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{DiskError, Result};

/// A disk that can be read at any offset (shared by partitions and file systems).
pub trait Disk: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with the bytes at `offset`; a read past [`Disk::size`] is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// The disk's size in bytes (a qcow2 image's virtual size).
    fn size(&self) -> u64;
    /// What the container is, for messages: `raw`, `qcow2 v3`, `qcow2 v3 (backing: ...)`.
    fn describe(&self) -> String;
}

/// A raw image file: the disk is the file.
#[derive(Debug)]
pub struct RawDisk {
    file: File,
    path: PathBuf,
    size: u64,
}

impl RawDisk {
    /// Opens `path` as a raw disk.
    pub fn open(path: &Path) -> Result<RawDisk> {
        let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
        let size = file.metadata().map_err(|e| DiskError::io(path, e))?.len();
        Ok(RawDisk {
            file,
            path: path.to_path_buf(),
            size,
        })
    }
}

impl Disk for RawDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.size)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| DiskError::io(&self.path, e))
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn describe(&self) -> String {
        "raw".into()
    }
}

/// An error unless `len` bytes at `offset` lie within `size`.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange { offset, len, size }),
    }
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer at the end of file).
pub(crate) fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A window of a disk (a partition) that is itself read like a disk.
#[derive(Clone)]
pub struct Slice {
    disk: Arc<dyn Disk>,
    start: u64,
    len: u64,
}

impl Slice {
    /// The `len` bytes of `disk` from `start` on (clamped to the disk's end).
    pub fn new(disk: Arc<dyn Disk>, start: u64, len: u64) -> Slice {
        let len = len.min(disk.size().saturating_sub(start));
        Slice { disk, start, len }
    }

    /// Reads within the slice.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(offset, buf.len(), self.len)?;
        self.disk.read_at(self.start + offset, buf)
    }

    /// The slice's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slice")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

impl ext4_view::Ext4Read for Slice {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.read_at(start_byte, dst)
            .map_err(|e| e.to_string().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::open;

    #[test]
    fn raw_reads_and_refuses_past_the_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.img");
        std::fs::write(&p, (0..=255u8).collect::<Vec<_>>()).unwrap();
        let disk = open(&p).unwrap();
        assert_eq!(disk.size(), 256);
        assert_eq!(disk.describe(), "raw");
        let mut b = [0u8; 4];
        disk.read_at(252, &mut b).unwrap();
        assert_eq!(b, [252, 253, 254, 255]);
        let e = disk.read_at(253, &mut b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "read of 4 bytes at 253 is past the end (256 bytes)"
        );
        let s = Slice::new(disk, 16, 8);
        s.read_at(4, &mut b).unwrap();
        assert_eq!(b, [20, 21, 22, 23]);
        assert!(s.read_at(5, &mut b).is_err());
    }

    #[test]
    fn other_containers_are_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.vmdk");
        std::fs::write(&p, b"KDMV\x01\0\0\0 rest").unwrap();
        assert_eq!(
            open(&p).unwrap_err().to_string(),
            "VMDK images are not supported (only raw and qcow2)"
        );
        let e = open(&d.path().join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing: No such file"), "{e}");
    }
}
