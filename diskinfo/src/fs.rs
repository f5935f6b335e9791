//! What file system a partition holds, from its magic numbers; ext2/3/4 are opened with
//! `ext4-view` (read-only, through [`Slice`]).

use std::fmt;

use crate::container::Slice;
use crate::error::{DiskError, Result};

/// The kind of file system (or other content) found in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext2, ext3 or ext4 (`0xEF53` at byte 1080); the number says which features it has.
    Ext(u8),
    /// btrfs (`_BHRfS_M` at 0x10040).
    Btrfs,
    /// XFS (`XFSB` at 0).
    Xfs,
    /// squashfs (`hsqs` at 0).
    Squashfs,
    /// EROFS (`0xE0F5E1E2` at 1024).
    Erofs,
    /// FAT12/16/32.
    Vfat,
    /// A LUKS container.
    Luks,
    /// Linux swap.
    Swap,
    /// Nothing known (all zeros, or a format not listed here).
    Unknown,
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsKind::Ext(n) => write!(f, "ext{n}"),
            FsKind::Btrfs => f.write_str("btrfs"),
            FsKind::Xfs => f.write_str("XFS"),
            FsKind::Squashfs => f.write_str("squashfs"),
            FsKind::Erofs => f.write_str("EROFS"),
            FsKind::Vfat => f.write_str("FAT"),
            FsKind::Luks => f.write_str("LUKS"),
            FsKind::Swap => f.write_str("swap"),
            FsKind::Unknown => f.write_str("no known file system"),
        }
    }
}

impl FsKind {
    /// Whether this is ext2/3/4.
    pub fn is_ext(&self) -> bool {
        matches!(self, FsKind::Ext(_))
    }

    /// Whether anything recognisable is there.
    pub fn is_known(&self) -> bool {
        *self != FsKind::Unknown
    }
}

/// What `part` holds, from the first 68 KiB.
pub fn probe(part: &Slice) -> FsKind {
    let mut b = vec![0u8; 0x10048.min(part.len() as usize)];
    if part.read_at(0, &mut b).is_err() {
        return FsKind::Unknown;
    }
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    if at(1080, &[0x53, 0xef]) {
        let compat = u32::from_le_bytes(b[1116..1120].try_into().unwrap());
        let incompat = u32::from_le_bytes(b[1120..1124].try_into().unwrap());
        // extents, 64bit or flex_bg make it ext4; a journal without them ext3.
        let n = if incompat & (0x40 | 0x80 | 0x200) != 0 {
            4
        } else if compat & 0x4 != 0 {
            3
        } else {
            2
        };
        return FsKind::Ext(n);
    }
    if at(0x10040, b"_BHRfS_M") {
        FsKind::Btrfs
    } else if at(0, b"XFSB") {
        FsKind::Xfs
    } else if at(0, b"hsqs") {
        FsKind::Squashfs
    } else if at(1024, &0xe0f5_e1e2u32.to_le_bytes()) {
        FsKind::Erofs
    } else if at(0, b"LUKS\xba\xbe") {
        FsKind::Luks
    } else if at(4086, b"SWAPSPACE2") {
        FsKind::Swap
    } else if at(510, &[0x55, 0xaa]) && (at(82, b"FAT32   ") || at(54, b"FAT1")) {
        FsKind::Vfat
    } else {
        FsKind::Unknown
    }
}

/// The size in bytes of the ext2/3/4 file system in `part` (blocks × block size), from its
/// superblock; `None` when there is none.
pub fn ext_size(part: &Slice) -> Option<u64> {
    let mut sb = vec![0u8; 1024];
    part.read_at(1024, &mut sb).ok()?;
    if sb[56..58] != [0x53, 0xef] {
        return None;
    }
    let lo = u32::from_le_bytes(sb[4..8].try_into().ok()?) as u64;
    let incompat = u32::from_le_bytes(sb[96..100].try_into().ok()?);
    let hi = if incompat & 0x80 != 0 {
        u32::from_le_bytes(sb[0x150..0x154].try_into().ok()?) as u64
    } else {
        0
    };
    let log = u32::from_le_bytes(sb[24..28].try_into().ok()?);
    if log > 6 {
        return None;
    }
    Some(((hi << 32) | lo) * (1024u64 << log))
}

/// Opens the ext2/3/4 file system in `part` (named `what` in errors).
pub fn open_ext(part: &Slice, what: &str) -> Result<ext4_view::Ext4> {
    let kind = probe(part);
    if !kind.is_ext() {
        return Err(DiskError::UnreadableFs {
            what: what.into(),
            fs: kind.to_string(),
        });
    }
    ext4_view::Ext4::load(Box::new(part.clone())).map_err(|e| DiskError::UnreadableFs {
        what: what.into(),
        fs: format!("{kind} that cannot be read ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::RawDisk;
    use std::sync::Arc;

    fn slice_of(bytes: Vec<u8>) -> Slice {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fs.img");
        std::fs::write(&p, bytes).unwrap();
        Slice::new(Arc::new(RawDisk::open(&p).unwrap()), 0, u64::MAX)
    }

    #[test]
    fn recognises_magic_numbers() {
        let mut b = vec![0u8; 0x20000];
        assert_eq!(probe(&slice_of(b.clone())), FsKind::Unknown);
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        assert_eq!(probe(&slice_of(b.clone())), FsKind::Btrfs);
        assert_eq!(FsKind::Btrfs.to_string(), "btrfs");
        let mut b = vec![0u8; 0x20000];
        b[0..4].copy_from_slice(b"XFSB");
        assert_eq!(probe(&slice_of(b)), FsKind::Xfs);
        let mut b = vec![0u8; 4096];
        b[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(probe(&slice_of(b.clone())), FsKind::Ext(2));
        b[1116] = 4;
        assert_eq!(probe(&slice_of(b.clone())), FsKind::Ext(3));
        b[1120] = 0x40;
        assert_eq!(probe(&slice_of(b)), FsKind::Ext(4));
    }

    /// ext2 (block maps, no extents) and ext4 without a journal both read.
    #[test]
    fn ext4_view_reads_ext2_and_journalless_ext4() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("lib/os-release"), "ID=debian\n").unwrap();
        std::os::unix::fs::symlink("lib/os-release", src.join("os-release")).unwrap();
        for (name, args) in [
            ("ext2", &["-t", "ext2"][..]),
            ("ext4-nojournal", &["-t", "ext4", "-O", "^has_journal"]),
            ("ext4", &["-t", "ext4"]),
        ] {
            let img = d.path().join(format!("{name}.img"));
            if !crate::fixtures::mkfs(&src, &img, 8, args) {
                return;
            }
            let part = Slice::new(Arc::new(RawDisk::open(&img).unwrap()), 0, u64::MAX);
            assert_eq!(ext_size(&part), Some(8 << 20), "{name}");
            let fs = open_ext(&part, name).unwrap();
            assert_eq!(
                fs.read("/lib/os-release").unwrap(),
                b"ID=debian\n",
                "{name}"
            );
            assert_eq!(
                fs.read_link("/os-release").unwrap().to_str().unwrap(),
                "lib/os-release"
            );
        }
    }
}
