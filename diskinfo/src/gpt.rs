//! The GUID partition table: the header at LBA 1 (512- or 4096-byte sectors) and its
//! partition entries. Both CRC32s (header and entry array) are checked.

use std::fmt;

use crate::container::Disk;
use crate::error::{DiskError, Result};

/// A GUID as GPT stores it (the first three fields little-endian), shown in the usual
/// lower-case `8-4-4-4-12` form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case); `None` when malformed.
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: String = s.chars().filter(|&c| c != '-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        // The text is big-endian throughout; GPT stores the first three fields reversed.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(Guid(b))
    }

    /// Whether all bytes are zero (an unused partition entry's type).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Well-known partition type GUIDs.
pub mod types {
    /// EFI system partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// BIOS boot partition (GRUB's core.img).
    pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
    /// Linux file system data.
    pub const LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    /// Flatcar's `/usr` (USR-A, USR-B; `sgdisk` code 8500 "CoreOS /usr").
    pub const FLATCAR_USR: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
    /// Flatcar's root, grown on first boot ("CoreOS auto-resize", code 8501).
    pub const FLATCAR_RESIZE: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e";
    /// Flatcar's reserved partition (OEM-CONFIG, code 8502).
    pub const FLATCAR_RESERVED: &str = "c95dc21a-df0e-4340-8d7b-26cbfa9a03e0";
    /// Discoverable partitions: x86-64 root.
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Discoverable partitions: arm64 root.
    pub const ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
    /// Discoverable partitions: x86-64 `/usr`.
    pub const USR_X86_64: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    /// Discoverable partitions: arm64 `/usr`.
    pub const USR_ARM64: &str = "b0e01050-ee5f-4390-949a-9101b17104e9";
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The partition number (its 1-based index in the entry array, as Linux numbers it).
    pub number: u32,
    /// The label (the entry's UTF-16LE name).
    pub name: String,
    /// The partition type.
    pub type_guid: Guid,
    /// The partition's own GUID (`PARTUUID`).
    pub unique_guid: Guid,
    /// First byte on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The attribute bits (bit 0 required, 2 legacy BIOS bootable, 48-63 type-specific:
    /// Flatcar's priority, tries and successful flags for USR-A/B).
    pub attributes: u64,
}

impl Partition {
    /// Whether the partition's type is `guid` (one of [`types`]).
    pub fn has_type(&self, guid: &str) -> bool {
        Guid::parse(guid) == Some(self.type_guid)
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    /// The logical sector size the table was found at (512 or 4096).
    pub sector_size: u32,
    /// The disk's GUID.
    pub disk_guid: Guid,
    /// The used entries, in entry order.
    pub partitions: Vec<Partition>,
}

impl Gpt {
    /// The partition labelled `name`, if any (the first one).
    pub fn by_name(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Reads the GPT of `disk`: at LBA 1 of 512-byte sectors, else of 4096-byte sectors.
/// `Ok(None)` when neither has the `EFI PART` signature.
pub fn read(disk: &dyn Disk) -> Result<Option<Gpt>> {
    for sector in [512u64, 4096] {
        let mut h = vec![0u8; sector as usize];
        if disk.read_at(sector, &mut h).is_err() {
            continue;
        }
        if &h[..8] == b"EFI PART" {
            return parse(disk, sector, &h).map(Some);
        }
    }
    Ok(None)
}

fn parse(disk: &dyn Disk, sector: u64, h: &[u8]) -> Result<Gpt> {
    let bad = |s: String| DiskError::BadGpt(s);
    let header_size = le32(h, 12) as usize;
    if !(92..=h.len()).contains(&header_size) {
        return Err(bad(format!("header size {header_size}")));
    }
    let mut copy = h[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != le32(h, 16) {
        return Err(bad("header checksum mismatch".into()));
    }
    let disk_guid = Guid(h[56..72].try_into().unwrap());
    let entries_lba = le64(h, 72);
    let count = le32(h, 80) as u64;
    let entry_size = le32(h, 84) as u64;
    if entry_size < 128 || !entry_size.is_multiple_of(8) || count > 4096 {
        return Err(bad(format!("{count} entries of {entry_size} bytes")));
    }
    let mut entries = vec![0u8; (count * entry_size) as usize];
    disk.read_at(entries_lba * sector, &mut entries)
        .map_err(|e| bad(format!("partition entries: {e}")))?;
    if crc32fast::hash(&entries) != le32(h, 88) {
        return Err(bad("partition entry checksum mismatch".into()));
    }
    let mut partitions = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = Guid(e[0..16].try_into().unwrap());
        if type_guid.is_zero() {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        if last < first {
            return Err(bad(format!(
                "partition {} ends ({last}) before it starts ({first})",
                i + 1
            )));
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&units),
            type_guid,
            unique_guid: Guid(e[16..32].try_into().unwrap()),
            start: first * sector,
            size: (last - first + 1) * sector,
            attributes: le64(e, 48),
        });
    }
    Ok(Gpt {
        sector_size: sector as u32,
        disk_guid,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::RawDisk;
    use crate::fixtures::{gpt_disk, PartSpec};
    use crate::format::open;

    #[test]
    fn guids_round_trip_in_gpt_byte_order() {
        let g = Guid::parse(types::FLATCAR_USR).unwrap();
        assert_eq!(
            g.0[..4],
            [0xf4, 0xf5, 0xfb, 0x5d],
            "first field little-endian"
        );
        assert_eq!(g.0[8..10], [0xaa, 0x5e], "fourth field as written");
        assert_eq!(g.to_string(), types::FLATCAR_USR);
        assert_eq!(Guid::parse("5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6"), Some(g));
        assert_eq!(Guid::parse("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a"), None);
        assert_eq!(Guid::parse("5dfbf5f4x2848-4bac-aa5e-0d9a20b745a6"), None);
    }

    #[test]
    fn reads_entries_at_512_and_4096_byte_sectors() {
        let d = tempfile::tempdir().unwrap();
        for sector in [512u64, 4096] {
            let p = d.path().join(format!("gpt-{sector}.img"));
            let parts = [
                PartSpec::new("EFI-SYSTEM", types::ESP, 1 << 20, 1 << 20),
                PartSpec {
                    attributes: (1 << 48) | (1 << 56),
                    unique: Some("7130c94a-213a-4e5a-8e26-6cce9662f132"),
                    ..PartSpec::new("USR-A", types::FLATCAR_USR, 2 << 20, 3 << 20)
                },
                PartSpec::new("ROOT", types::FLATCAR_RESIZE, 5 << 20, 1 << 20),
            ];
            gpt_disk(&p, sector, &parts, 8 << 20);
            let disk = open(&p).unwrap();
            let gpt = read(&*disk).unwrap().unwrap();
            assert_eq!(gpt.sector_size as u64, sector);
            let names: Vec<_> = gpt.partitions.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["EFI-SYSTEM", "USR-A", "ROOT"]);
            let usr = gpt.by_name("USR-A").unwrap();
            assert_eq!(usr.number, 2);
            assert!(usr.has_type(types::FLATCAR_USR));
            assert_eq!((usr.start, usr.size), (2 << 20, 3 << 20));
            assert_eq!(usr.attributes, (1 << 48) | (1 << 56));
            assert_eq!(
                usr.unique_guid.to_string(),
                "7130c94a-213a-4e5a-8e26-6cce9662f132"
            );
        }
    }

    #[test]
    fn no_signature_is_no_table_and_a_bad_checksum_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("zeros.img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(read(&RawDisk::open(&p).unwrap()).unwrap(), None);
        gpt_disk(
            &p,
            512,
            &[PartSpec::new("ROOT", types::LINUX_DATA, 1 << 20, 1 << 20)],
            4 << 20,
        );
        let mut b = std::fs::read(&p).unwrap();
        b[512 + 40] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert_eq!(
            read(&RawDisk::open(&p).unwrap()).unwrap_err().to_string(),
            "bad GPT: header checksum mismatch"
        );
    }

    /// `sgdisk` writes what this reads (names, types, GUIDs, attributes).
    #[test]
    fn reads_what_sgdisk_writes() {
        let Some(sgdisk) = crate::fixtures::tool("sgdisk") else {
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let ok = std::process::Command::new(sgdisk)
            .args([
                "-n",
                "1:2048:+8M",
                "-t",
                "1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "-c",
                "1:EFI-SYSTEM",
                "-n",
                "3:0:+16M",
                "-t",
                "3:5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6",
                "-c",
                "3:USR-A",
                "-A",
                "3:set:48",
                "-u",
                "3:7130c94a-213a-4e5a-8e26-6cce9662f132",
            ])
            .arg(&p)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let gpt = read(&RawDisk::open(&p).unwrap()).unwrap().unwrap();
        let usr = gpt.by_name("USR-A").unwrap();
        assert_eq!(usr.number, 3);
        assert_eq!(usr.attributes, 1 << 48);
        assert_eq!(usr.size, 16 << 20);
        assert_eq!(
            usr.unique_guid.to_string(),
            "7130c94a-213a-4e5a-8e26-6cce9662f132"
        );
        assert!(gpt.by_name("EFI-SYSTEM").unwrap().has_type(types::ESP));
    }
}
