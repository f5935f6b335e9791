//! One look at a disk image: container, partitions, the OS as mounted, its `os-release`,
//! architecture and capabilities.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::capabilities::{Evidence, Fact, KernelModules};
use crate::container::Slice;
use crate::error::{DiskError, Result};
use crate::fs::{self, FsKind};
use crate::gpt::{self, types, Partition};
use crate::osrelease::OsRelease;
use crate::view::OsView;

/// Where Flatcar's build puts the dm-verity hash tree (and its superblock) in USR-A.
pub const FLATCAR_VERITY_OFFSET: u64 = 1_065_345_024;

/// The labels of Flatcar's partitions (`build_library/disk_layout.json`).
pub const FLATCAR_LABELS: &[&str] = &["EFI-SYSTEM", "USR-A", "USR-B", "OEM", "OEM-CONFIG", "ROOT"];

/// A CPU architecture an image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// AArch64.
    Arm64,
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        })
    }
}

/// A partition as inspected: its table entry and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The GPT entry.
    pub entry: Partition,
    /// The file system found in it.
    pub fs: FsKind,
}

/// Everything one inspection found.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The image file.
    pub path: PathBuf,
    /// The container (`raw`, `qcow2 v3`, with its backing file).
    pub container: String,
    /// The disk's (virtual) size in bytes.
    pub size: u64,
    /// The GPT's sector size; `None` for a whole-disk file system.
    pub sector_size: Option<u32>,
    /// The partitions (none for a whole-disk file system).
    pub partitions: Vec<PartitionInfo>,
    /// What is mounted where in the OS view (`/` → `ROOT (partition 9, ext4)`).
    pub mounts: Vec<(String, String)>,
    /// The OS's `os-release` (`/etc/os-release`, else `/usr/lib/os-release`).
    pub os_release: Option<OsRelease>,
    /// Why there is no `os_release`.
    pub os_problem: Option<String>,
    /// The architecture, and how it was told (`ELF header of /usr/lib/systemd/systemd`).
    pub arch: Option<(Arch, String)>,
    /// Capability → the evidence for it (see [`crate::capabilities::RULES`]).
    pub capabilities: BTreeMap<String, String>,
    /// How long the inspection took.
    pub elapsed: Duration,
}

/// Inspects the disk image at `path`. An error means not even the container or the
/// partition table could be read; a disk whose OS cannot be read (an unknown file system
/// on USR-A, no ROOT) is an `Ok` with `os_problem` set and the partition capabilities.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let t0 = Instant::now();
    let disk = crate::format::open(path)?;
    let table = gpt::read(&*disk)?;
    let whole = Slice::new(disk.clone(), 0, disk.size());
    let partitions: Vec<PartitionInfo> = match &table {
        Some(t) => t
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                fs: fs::probe(&Slice::new(disk.clone(), p.start, p.size)),
                entry: p.clone(),
            })
            .collect(),
        None => {
            if !fs::probe(&whole).is_ext() {
                return Err(DiskError::NoPartitionTable);
            }
            Vec::new()
        }
    };
    let slice = |p: &PartitionInfo| Slice::new(disk.clone(), p.entry.start, p.entry.size);
    let by_name = |n: &str| partitions.iter().find(|p| p.entry.name == n);

    let facts = partition_facts(&partitions, &slice);
    let usr = by_name("USR-A").or_else(|| {
        partitions
            .iter()
            .find(|p| p.entry.has_type(types::USR_X86_64) || p.entry.has_type(types::USR_ARM64))
    });
    let root = if table.is_none() {
        Some((whole.clone(), "the whole disk".to_string()))
    } else {
        root_partition(&partitions).map(|p| (slice(p), describe(p)))
    };

    let mut mounts = Vec::new();
    let mut problem = None;
    let view = match &root {
        None => {
            problem = Some(DiskError::NoRoot.to_string());
            None
        }
        Some((s, what)) => match fs::open_ext(s, &label_of(what)) {
            Err(e) => {
                problem = Some(e.to_string());
                None
            }
            Ok(fs) => {
                mounts.push(("/".to_string(), what.clone()));
                let mut v = OsView::new(fs);
                if let Some(u) = usr {
                    let name = label_of(&describe(u));
                    match fs::open_ext(&slice(u), &name) {
                        Ok(ufs) => v.mount("/usr", ufs),
                        Err(e) => {
                            let fs = match e {
                                DiskError::UnreadableFs { fs, .. } => fs,
                                e => e.to_string(),
                            };
                            v.mount_unreadable("/usr", &name, &fs)
                        }
                    }
                    mounts.push(("/usr".to_string(), format!("{} read-only", describe(u))));
                }
                Some(v)
            }
        },
    };

    let mut os_release = None;
    if let Some(v) = &view {
        match read_os_release(v) {
            Ok(o) => os_release = Some(o),
            Err(e) => problem = Some(e.to_string()),
        }
    }
    let readable = view.as_ref().filter(|_| os_release.is_some());
    let modules = readable.map(KernelModules::read).unwrap_or_default();
    let capabilities = Evidence {
        facts,
        view: readable,
        modules,
    }
    .capabilities();
    let arch = readable
        .and_then(elf_arch)
        .or_else(|| esp_arch(&partitions, &slice));
    Ok(Inspection {
        path: path.to_path_buf(),
        container: disk.describe(),
        size: disk.size(),
        sector_size: table.as_ref().map(|t| t.sector_size),
        partitions,
        mounts,
        os_release,
        os_problem: problem,
        arch,
        capabilities,
        elapsed: t0.elapsed(),
    })
}

/// `USR-A (partition 3, ext4)`.
fn describe(p: &PartitionInfo) -> String {
    if p.entry.name.is_empty() {
        format!("partition {} ({})", p.entry.number, p.fs)
    } else {
        format!("{} (partition {}, {})", p.entry.name, p.entry.number, p.fs)
    }
}

/// The name in a [`describe`] string (`USR-A`), for error messages.
fn label_of(described: &str) -> String {
    described
        .split(" (")
        .next()
        .unwrap_or(described)
        .to_string()
}

/// The partition mounted at `/`: the one labelled ROOT, else the largest Linux
/// (data, discoverable root or Flatcar resize type) partition with ext2/3/4.
fn root_partition(parts: &[PartitionInfo]) -> Option<&PartitionInfo> {
    if let Some(p) = parts.iter().find(|p| p.entry.name == "ROOT") {
        return Some(p);
    }
    let linux = [
        types::LINUX_DATA,
        types::ROOT_X86_64,
        types::ROOT_ARM64,
        types::FLATCAR_RESIZE,
    ];
    parts
        .iter()
        .filter(|p| p.fs.is_ext() && linux.iter().any(|t| p.entry.has_type(t)))
        .filter(|p| p.entry.name != "USR-A" && p.entry.name != "USR-B" && p.entry.name != "OEM")
        .max_by_key(|p| p.entry.size)
}

/// The partition facts of [`Fact`] that hold, with their evidence.
fn partition_facts(
    parts: &[PartitionInfo],
    slice: &dyn Fn(&PartitionInfo) -> Slice,
) -> BTreeMap<Fact, String> {
    let mut facts = BTreeMap::new();
    let by_name = |n: &str| parts.iter().find(|p| p.entry.name == n);
    let typed = |n: &str, t: &str| by_name(n).is_some_and(|p| p.entry.has_type(t));
    if FLATCAR_LABELS.iter().all(|l| by_name(l).is_some())
        && typed("EFI-SYSTEM", types::ESP)
        && typed("USR-A", types::FLATCAR_USR)
        && typed("USR-B", types::FLATCAR_USR)
        && typed("OEM-CONFIG", types::FLATCAR_RESERVED)
        && typed("ROOT", types::FLATCAR_RESIZE)
    {
        let numbers: Vec<String> = FLATCAR_LABELS
            .iter()
            .map(|l| format!("{l}={}", by_name(l).unwrap().entry.number))
            .collect();
        facts.insert(
            Fact::FlatcarPartitions,
            format!("GPT {} with Flatcar's type GUIDs", numbers.join(" ")),
        );
    } else if FLATCAR_LABELS.iter().all(|l| by_name(l).is_some()) {
        tracing::debug!("Flatcar's partition labels, but not all with Flatcar's type GUIDs");
    }
    if let Some(p) = by_name("OEM") {
        facts.insert(Fact::OemPartition, describe(p));
    }
    if let Some(u) = by_name("USR-A").filter(|u| u.fs.is_known()) {
        facts.insert(Fact::UsrPartition, describe(u));
        let s = slice(u);
        let mut offsets = vec![FLATCAR_VERITY_OFFSET];
        offsets.extend(fs::ext_size(&s).filter(|&e| e != FLATCAR_VERITY_OFFSET));
        for at in offsets {
            let mut magic = [0u8; 8];
            if s.read_at(at, &mut magic).is_ok() && &magic == b"verity\0\0" {
                facts.insert(
                    Fact::Verity,
                    format!("dm-verity superblock at byte {at} of USR-A"),
                );
                break;
            }
        }
    }
    facts
}

/// `/etc/os-release`, else `/usr/lib/os-release` (as `os-release(5)` says).
fn read_os_release(v: &OsView) -> Result<OsRelease> {
    let mut first = None;
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        match v.read(p) {
            Ok(b) => return Ok(OsRelease::parse(&String::from_utf8_lossy(&b))),
            Err(DiskError::NotFound(_)) => {}
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first
        .unwrap_or_else(|| DiskError::NotFound("/etc/os-release and /usr/lib/os-release".into())))
}

/// Binaries whose ELF header tells the OS's architecture, tried in order.
const ELF_PROBES: &[&str] = &[
    "/usr/lib/systemd/systemd",
    "/usr/bin/bash",
    "/usr/bin/busybox",
    "/usr/bin/env",
    "/bin/sh",
];

/// The architecture from the ELF header (`e_machine`) of a well-known binary.
fn elf_arch(v: &OsView) -> Option<(Arch, String)> {
    ELF_PROBES.iter().find_map(|p| {
        let h = v.read_head(p, 20).ok()?;
        let a = elf_machine(&h)?;
        Some((a, format!("ELF header of {p}")))
    })
}

/// The architecture an ELF header is for: `e_machine` 62 (x86-64) or 183 (AArch64).
pub fn elf_machine(h: &[u8]) -> Option<Arch> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let m = match h[5] {
        1 => u16::from_le_bytes([h[18], h[19]]),
        2 => u16::from_be_bytes([h[18], h[19]]),
        _ => return None,
    };
    match m {
        62 => Some(Arch::Amd64),
        183 => Some(Arch::Arm64),
        _ => None,
    }
}

/// How much of the ESP is searched for the removable-media loader's directory entry.
const ESP_SCAN: u64 = 32 << 20;

/// The architecture from the EFI removable-media loader's FAT 8.3 directory entry
/// (`BOOTX64 EFI` / `BOOTAA64EFI`) in the first 32 MiB of the ESP; `None` when neither
/// or both are there.
fn esp_arch(
    parts: &[PartitionInfo],
    slice: &dyn Fn(&PartitionInfo) -> Slice,
) -> Option<(Arch, String)> {
    let esp = parts
        .iter()
        .find(|p| p.entry.has_type(types::ESP) && p.fs == FsKind::Vfat)?;
    let s = slice(esp);
    let len = s.len().min(ESP_SCAN) as usize;
    let mut buf = vec![0u8; len];
    s.read_at(0, &mut buf).ok()?;
    // Directory entries are 32-byte aligned within the partition.
    let mut found = (false, false);
    for e in buf.chunks_exact(32) {
        found.0 |= &e[..11] == b"BOOTX64 EFI";
        found.1 |= &e[..11] == b"BOOTAA64EFI";
    }
    let how = "EFI loader on the ESP".to_string();
    match found {
        (true, false) => Some((Arch::Amd64, format!("{how} (BOOTX64.EFI)"))),
        (false, true) => Some((Arch::Arm64, format!("{how} (BOOTAA64.EFI)"))),
        _ => None,
    }
}

impl Inspection {
    /// The OS's one-line description (`ID=debian VERSION_ID=12 ...`), or why it is unknown.
    pub fn os_summary(&self) -> String {
        match (&self.os_release, &self.os_problem) {
            (Some(o), _) => o.summary(),
            (None, Some(p)) => format!("unknown ({p})"),
            (None, None) => "unknown".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{elf_amd64, flatcar_shaped, mkfs, qcow2_from_raw, tool, MIB};

    const DEBIAN: &str =
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nVARIANT_ID=bogie-test\n";

    fn assert_test_disk(i: &Inspection) {
        let caps: Vec<&str> = i.capabilities.keys().map(String::as_str).collect();
        for c in [
            "flatcar-partitions",
            "oem-partition",
            "usr-readonly",
            "verity",
            "systemd",
            "docker",
            "sysext",
            "sshd",
            "ignition",
            "ignition-spec1",
            "ignition-spec2",
            "ignition-fetch",
        ] {
            assert!(caps.contains(&c), "{c} missing from {caps:?}");
        }
        for c in ["flatcar", "etcd", "nftables", "busybox", "selinux"] {
            assert!(!caps.contains(&c), "{c} in {caps:?}");
        }
        let o = i.os_release.as_ref().expect("os-release");
        assert_eq!((o.id(), o.variant_id()), ("debian", "bogie-test"));
        assert_eq!(
            i.arch,
            Some((Arch::Amd64, "ELF header of /usr/lib/systemd/systemd".into()))
        );
        assert_eq!(
            i.capabilities["verity"],
            format!("dm-verity superblock at byte {} of USR-A", 8 * MIB)
        );
        assert_eq!(
            i.capabilities["docker"],
            "/usr/bin/docker; /usr/sbin/dockerd; modules overlay br_netfilter veth (6.1.0-test-amd64)"
        );
        assert_eq!(
            i.mounts,
            [
                ("/".to_string(), "ROOT (partition 6, ext4)".to_string()),
                (
                    "/usr".to_string(),
                    "USR-A (partition 2, ext4) read-only".to_string()
                )
            ]
        );
    }

    #[test]
    fn a_flatcar_shaped_debian_disk_is_not_flatcar() {
        let d = tempfile::tempdir().unwrap();
        let Some(raw) = flatcar_shaped(d.path(), DEBIAN, None) else {
            return;
        };
        let i = inspect(&raw).unwrap();
        assert_eq!(i.container, "raw");
        assert_eq!(i.sector_size, Some(512));
        assert_eq!(i.os_problem, None);
        assert_test_disk(&i);
        assert_eq!(
            i.os_summary(),
            "ID=debian VERSION_ID=12 VARIANT_ID=bogie-test (Debian GNU/Linux)"
        );
    }

    #[test]
    fn qcow2_disks_read_like_their_raw_disk() {
        let d = tempfile::tempdir().unwrap();
        let Some(raw) = flatcar_shaped(d.path(), DEBIAN, None) else {
            return;
        };
        for compressed in [false, true] {
            let q = d.path().join(format!("disk-{compressed}.qcow2"));
            qcow2_from_raw(&raw, &q, compressed);
            let i = inspect(&q).unwrap();
            assert_eq!(i.container, "qcow2 v3");
            assert_test_disk(&i);
        }
        let Some(qemu_img) = tool("qemu-img") else {
            return;
        };
        for flags in [&["-O", "qcow2"][..], &["-O", "qcow2", "-c"]] {
            let q = d.path().join("qemu-img.qcow2");
            let ok = std::process::Command::new(&qemu_img)
                .arg("convert")
                .args(flags)
                .arg(&raw)
                .arg(&q)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            assert_test_disk(&inspect(&q).unwrap());
        }
    }

    #[test]
    fn an_unreadable_usr_keeps_the_partition_facts_and_says_why() {
        let d = tempfile::tempdir().unwrap();
        let mut btrfs = vec![0u8; 0x20000];
        btrfs[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        let Some(raw) = flatcar_shaped(d.path(), DEBIAN, Some(btrfs)) else {
            return;
        };
        let i = inspect(&raw).unwrap();
        assert_eq!(i.os_release, None);
        assert_eq!(i.os_problem.as_deref(), Some("USR-A is btrfs"));
        let caps: Vec<&str> = i.capabilities.keys().map(String::as_str).collect();
        assert_eq!(
            caps,
            ["flatcar-partitions", "oem-partition", "usr-readonly"]
        );
        assert_eq!(
            i.arch,
            Some((Arch::Amd64, "EFI loader on the ESP (BOOTX64.EFI)".into()))
        );
        // Unknown content: no usr-readonly either.
        let d = tempfile::tempdir().unwrap();
        let raw = flatcar_shaped(d.path(), DEBIAN, Some(vec![0u8; 4096])).unwrap();
        let i = inspect(&raw).unwrap();
        assert_eq!(
            i.os_problem.as_deref(),
            Some("USR-A is no known file system")
        );
        assert!(!i.capabilities.contains_key("usr-readonly"));
    }

    #[test]
    fn flatcar_is_told_by_os_release() {
        let d = tempfile::tempdir().unwrap();
        let Some(raw) = flatcar_shaped(
            d.path(),
            "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION_ID=4230.2.1\n",
            None,
        ) else {
            return;
        };
        let i = inspect(&raw).unwrap();
        let o = i.os_release.unwrap();
        assert!(o.is_flatcar());
        assert_eq!(o.version_id(), "4230.2.1");
    }

    #[test]
    fn a_whole_disk_file_system_is_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("etc/os-release"), DEBIAN).unwrap();
        std::fs::write(root.join("usr/bin/busybox"), "x").unwrap();
        let img = d.path().join("disk.raw");
        if !mkfs(&root, &img, 8, &["-L", "root"]) {
            return;
        }
        let i = inspect(&img).unwrap();
        assert_eq!(i.sector_size, None);
        assert!(i.partitions.is_empty());
        assert_eq!(i.mounts, [("/".to_string(), "the whole disk".to_string())]);
        assert_eq!(i.os_release.unwrap().id(), "debian");
        let caps: Vec<&str> = i.capabilities.keys().map(String::as_str).collect();
        assert_eq!(caps, ["busybox"]);
    }

    #[test]
    fn neither_a_table_nor_a_file_system_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("zeros.img");
        std::fs::write(&p, vec![0u8; 2 << 20]).unwrap();
        assert_eq!(
            inspect(&p).unwrap_err().to_string(),
            "no GPT partition table (and no file system on the whole disk)"
        );
    }

    #[test]
    fn elf_headers_tell_the_arch() {
        assert_eq!(elf_machine(&elf_amd64()), Some(Arch::Amd64));
        let mut h = elf_amd64();
        h[18] = 183;
        assert_eq!(elf_machine(&h), Some(Arch::Arm64));
        h[18] = 40;
        assert_eq!(elf_machine(&h), None);
        assert_eq!(elf_machine(b"#!/bin/sh"), None);
    }
}
