//! Finding binaries and recognising images: which architecture a kernel or disk is for,
//! and whether a disk is qcow2 or raw.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

use bogie_harness::Arch;

/// The QEMU system emulator for an architecture.
pub fn qemu_system_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86_64",
        Arch::Arm64 => "qemu-system-aarch64",
    }
}

/// The Debian package that ships [`qemu_system_binary`].
pub fn qemu_system_package(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86",
        Arch::Arm64 => "qemu-system-arm",
    }
}

/// Looks a program up in a `PATH`-style list; a name with a slash is taken as a path.
pub(crate) fn find_program(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(path_var?)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The architecture of a Linux kernel image from its header bytes: x86 bzImage (`HdrS` at
/// 0x202), arm64 `Image` (`ARM\x64` at 56) or any EFI PE binary (its COFF machine field,
/// which also covers arm64 EFI zboot images). `None` when not recognised (e.g. gzip).
pub fn kernel_arch(header: &[u8]) -> Option<Arch> {
    if header.get(0x202..0x206) == Some(b"HdrS") {
        return Some(Arch::Amd64);
    }
    if header.get(56..60) == Some(b"ARM\x64") {
        return Some(Arch::Arm64);
    }
    if header.get(0..2) == Some(b"MZ") {
        let off = u32::from_le_bytes(header.get(0x3c..0x40)?.try_into().ok()?) as usize;
        if header.get(off..off + 4) == Some(b"PE\0\0") {
            let machine = u16::from_le_bytes(header.get(off + 4..off + 6)?.try_into().ok()?);
            return match machine {
                0x8664 => Some(Arch::Amd64),
                0xaa64 => Some(Arch::Arm64),
                _ => None,
            };
        }
    }
    None
}

/// The architecture named by the EFI removable-media loader on a disk's ESP, from the FAT
/// 8.3 directory entry (`BOOTX64 EFI` / `BOOTAA64EFI`) found in the given raw bytes.
pub fn efi_loader_arch(raw: &[u8]) -> Option<Arch> {
    let x64 = find(raw, b"BOOTX64 EFI");
    let aa64 = find(raw, b"BOOTAA64EFI");
    match (x64, aa64) {
        (Some(_), None) => Some(Arch::Amd64),
        (None, Some(_)) => Some(Arch::Arm64),
        // Both (a multi-arch ESP) or neither: undecided.
        _ => None,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `qcow2` when the file starts with the qcow2 magic, else `raw`.
pub fn disk_format(path: &Path) -> std::io::Result<&'static str> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let n = read_up_to(&mut f, &mut magic)?;
    Ok(if n == 4 && &magic == b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

/// The smallest raw disk image bogie boots: a partition table and one partition need more.
pub const MIN_RAW_DISK_BYTES: u64 = 1 << 20;

/// Why the file at `path` is not a disk image QEMU could boot, or `None` when it is one: a
/// qcow2 file, or a raw disk of at least [`MIN_RAW_DISK_BYTES`] with an MBR boot signature
/// (`55 AA` at byte 510) or a GPT header (`EFI PART` at LBA 1, 512- or 4096-byte sectors).
/// A text file, an empty file or a directory is not one; without this check QEMU would
/// boot it and the test would time out waiting for SSH.
pub fn not_a_disk_image(path: &Path) -> std::io::Result<Option<String>> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(Some("it is a directory".into()));
    }
    if meta.len() == 0 {
        return Ok(Some("it is empty".into()));
    }
    if disk_format(path)? == "qcow2" {
        return Ok(None);
    }
    if meta.len() < MIN_RAW_DISK_BYTES {
        return Ok(Some(format!(
            "it is {} bytes, too small for a raw disk (at least {MIN_RAW_DISK_BYTES})",
            meta.len()
        )));
    }
    let head = read_head(path, 4096 + 8)?;
    let mbr = head.get(510..512) == Some(&[0x55, 0xaa][..]);
    let gpt = [512, 4096]
        .iter()
        .any(|&at| head.get(at..at + 8) == Some(&b"EFI PART"[..]));
    Ok((!mbr && !gpt)
        .then(|| "it has no partition table (no MBR boot signature, no GPT header)".into()))
}

/// Reads the first `len` bytes of a file (fewer when it is shorter).
pub(crate) fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut f = std::fs::File::open(path)?;
    let n = read_up_to(&mut f, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How much of a disk is scanned for the ESP's loader name. Flatcar's ESP starts at 1 MiB
/// and its `EFI/boot` directory is written first, so it lies well inside this.
pub(crate) const ESP_SCAN_BYTES: usize = 32 << 20;

/// Best-effort architecture of a plain (firmware-booted) disk image. Raw disks are read
/// directly; qcow2 disks are converted in part with `qemu-img dd` into a temporary file.
/// `None` when undecided (the caller then trusts `--board`).
pub(crate) fn disk_arch(path: &Path, format: &str, qemu_img: &Path) -> Option<Arch> {
    let head = if format == "raw" {
        read_head(path, ESP_SCAN_BYTES).ok()?
    } else {
        let tmp = std::env::temp_dir().join(format!(
            "bogie-esp-scan-{}-{}.raw",
            std::process::id(),
            rand::random::<u32>()
        ));
        let status = std::process::Command::new(qemu_img)
            .arg("dd")
            .arg("-f")
            .arg(format)
            .arg("-O")
            .arg("raw")
            .arg("bs=1M")
            .arg(format!("count={}", ESP_SCAN_BYTES >> 20))
            .arg(format!("if={}", path.display()))
            .arg(format!("of={}", tmp.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let head = match status {
            Ok(s) if s.success() => read_head(&tmp, ESP_SCAN_BYTES).ok(),
            _ => None,
        };
        let _ = std::fs::remove_file(&tmp);
        head?
    };
    if let Some(a) = kernel_arch(&head) {
        // Someone passed a kernel where a disk was expected; still tell its arch.
        return Some(a);
    }
    efi_loader_arch(&head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kernels() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel_arch(&bz), Some(Arch::Amd64));
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert_eq!(kernel_arch(&image), Some(Arch::Arm64));
        // An EFI zboot image: MZ, PE header at 0x40 with machine 0xaa64.
        let mut pe = vec![0u8; 0x80];
        pe[0..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        pe[0x44..0x46].copy_from_slice(&0xaa64u16.to_le_bytes());
        assert_eq!(kernel_arch(&pe), Some(Arch::Arm64));
        assert_eq!(kernel_arch(&[0x1f, 0x8b, 8, 0]), None);
        assert_eq!(kernel_arch(b""), None);
    }

    #[test]
    fn recognises_esp_loaders() {
        let mut disk = vec![0u8; 4096];
        disk[1000..1011].copy_from_slice(b"BOOTAA64EFI");
        assert_eq!(efi_loader_arch(&disk), Some(Arch::Arm64));
        let mut disk = vec![0u8; 4096];
        disk[4085..4096].copy_from_slice(b"BOOTX64 EFI");
        assert_eq!(efi_loader_arch(&disk), Some(Arch::Amd64));
        disk[10..21].copy_from_slice(b"BOOTAA64EFI");
        assert_eq!(efi_loader_arch(&disk), None);
        assert_eq!(efi_loader_arch(b"BOOTX64"), None);
    }

    #[test]
    fn finds_programs_in_a_path_list() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("qemu-system-aarch64");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_program("qemu-system-aarch64", Some(d.path().as_os_str())),
            None
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program("qemu-system-aarch64", Some(d.path().as_os_str())),
            Some(bin.clone())
        );
        assert_eq!(find_program("qemu-system-aarch64", None), None);
        assert_eq!(find_program(bin.to_str().unwrap(), None), Some(bin));
    }

    #[test]
    fn only_qcow2_and_partitioned_raw_disks_are_disk_images() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let problem = |p: &Path| not_a_disk_image(p).unwrap();
        assert_eq!(problem(&write("q", b"QFI\xfb\0\0\0\x03")), None);
        let mut mbr = vec![0u8; 1 << 20];
        mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(problem(&write("mbr", &mbr)), None);
        for at in [512, 4096] {
            let mut gpt = vec![0u8; 1 << 20];
            gpt[at..at + 8].copy_from_slice(b"EFI PART");
            assert_eq!(problem(&write("gpt", &gpt)), None, "GPT header at {at}");
        }
        assert_eq!(
            problem(&write("empty", b"")).as_deref(),
            Some("it is empty")
        );
        assert_eq!(
            problem(&write("text", b"hello\n")).as_deref(),
            Some("it is 6 bytes, too small for a raw disk (at least 1048576)")
        );
        assert_eq!(
            problem(&write("zeros", &vec![0u8; 1 << 20])).as_deref(),
            Some("it has no partition table (no MBR boot signature, no GPT header)")
        );
        assert_eq!(problem(d.path()).as_deref(), Some("it is a directory"));
        assert!(not_a_disk_image(&d.path().join("missing")).is_err());
    }

    #[test]
    fn tells_qcow2_from_raw() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("a");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(disk_format(&q).unwrap(), "qcow2");
        let r = d.path().join("b");
        std::fs::write(&r, b"QF").unwrap();
        assert_eq!(disk_format(&r).unwrap(), "raw");
    }
}
