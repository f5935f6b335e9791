//! kola's console mangling of a raw Container Linux disk (what `--qemu-skip-mangle` turns
//! off): the run boots a private copy of the disk whose OEM `grub.cfg` ends with
//! `set linux_console="console=ttyS0,115200"`, so the serial port bogie reads is the
//! kernel's and systemd's console. As kola: raw disks only (a qcow2 is booted as it is),
//! and the copy is deleted as soon as it is open, so no run — not even a killed one —
//! leaves it behind.
//!
//! kola mounts the OEM partition through a loop device (root); bogie edits the file system
//! in place without root: ext2/3/4 with e2fsprogs' `debugfs`, FAT with mtools. A btrfs
//! OEM (Flatcar since it moved its OEM to btrfs) cannot be written that way; the disk is
//! then booted unmangled with one warning line.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use bogie_diskinfo::fs::FsKind;
use bogie_harness::PlatformError;

/// The line kola appends to the OEM `grub.cfg`.
pub const CONSOLE_LINE: &str = "set linux_console=\"console=ttyS0,115200\"";

/// A mangled private copy of the disk, open and already unlinked: [`MangledDisk::path`]
/// (`/proc/<pid>/fd/<n>`) stays valid while bogie runs.
#[derive(Debug)]
pub struct MangledDisk {
    file: File,
    path: PathBuf,
}

impl MangledDisk {
    /// The path QEMU and qemu-img open the copy by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open copy.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// What mangling did.
#[derive(Debug)]
pub enum Mangle {
    /// The copy to boot instead of the image.
    Mangled(MangledDisk),
    /// The image is booted as it is, and why (for one log line).
    Skipped {
        /// Why.
        why: String,
        /// Whether a user expecting kola's behaviour should hear of it (warning) or it is
        /// what kola does too (info).
        warn: bool,
    },
}

/// Where the OEM partition is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OemPartition {
    /// First byte on the disk.
    pub offset: u64,
    /// Its file system.
    pub fs: FsKind,
}

/// The OEM partition of `disk` (number 6 or the label `OEM`), None when it has none.
pub fn oem_partition(disk: &Path) -> Option<OemPartition> {
    let i = bogie_diskinfo::inspect(disk).ok()?;
    i.partitions
        .iter()
        .find(|p| p.entry.name == "OEM")
        .or_else(|| i.partitions.iter().find(|p| p.entry.number == 6))
        .map(|p| OemPartition {
            offset: p.entry.start,
            fs: p.fs,
        })
}

/// Where the copy is made: `$TMPDIR`, else `/var/tmp` as kola (not a `/tmp` that may be
/// memory).
pub fn copy_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from)
}

/// kola's mangling of `disk` (format `format`), its copy made in `tmp`.
pub fn mangle(disk: &Path, format: &str, tmp: &Path) -> Result<Mangle, PlatformError> {
    if format != "raw" {
        return Ok(Mangle::Skipped {
            why: format!(
                "{format} image: kola adds the serial console to raw disks only (--qemu-skip-mangle is implied)"
            ),
            warn: false,
        });
    }
    let Some(oem) = oem_partition(disk) else {
        return Ok(Mangle::Skipped {
            // Not a Container Linux layout (Fedora CoreOS, a plain distro disk): kola would
            // find no OEM grub.cfg either.
            why: "the disk has no OEM partition (6 or label OEM) whose grub.cfg could set the console".into(),
            warn: false,
        });
    };
    if !(oem.fs.is_ext() || oem.fs == FsKind::Vfat) {
        return Ok(Mangle::Skipped {
            why: format!(
                "its OEM partition is {}, which bogie cannot write without root (kola mounts it as root); pass --qemu-skip-mangle to boot it as it is without this warning",
                oem.fs
            ),
            warn: true,
        });
    }
    let dir = tempfile::Builder::new()
        .prefix("bogie-mangle-")
        .tempdir_in(tmp)
        .map_err(|e| PlatformError::io(format!("making a directory in {}", tmp.display()), e))?;
    let copy = dir.path().join("disk.raw");
    run(
        Command::new("cp")
            .args(["--sparse=always", "--reflink=auto", "--"])
            .arg(disk)
            .arg(&copy),
        "copying the disk",
    )?;
    let old = read_grub_cfg(&copy, oem)?;
    let new = appended(&old);
    let local = dir.path().join("grub.cfg");
    std::fs::write(&local, &new)
        .map_err(|e| PlatformError::io(format!("writing {}", local.display()), e))?;
    write_grub_cfg(&copy, oem, &local)?;
    let back = read_grub_cfg(&copy, oem)?;
    if back != new {
        return Err(PlatformError::Machine(format!(
            "mangling the OEM grub.cfg of {}: it reads back as {back:?}",
            disk.display()
        )));
    }
    let file = File::open(&copy)
        .map_err(|e| PlatformError::io(format!("opening {}", copy.display()), e))?;
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ));
    // The directory (and the copy's name) goes now; the open file lives on.
    drop(dir);
    Ok(Mangle::Mangled(MangledDisk { file, path }))
}

/// `old` with kola's console line appended (on a line of its own).
pub fn appended(old: &str) -> String {
    let mut s = old.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(CONSOLE_LINE);
    s.push('\n');
    s
}

/// The OEM partition's `/grub.cfg` in `disk` ("" when there is none).
pub fn read_grub_cfg(disk: &Path, oem: OemPartition) -> Result<String, PlatformError> {
    if oem.fs.is_ext() {
        let o = output(
            Command::new("debugfs")
                .arg("-R")
                .arg("cat /grub.cfg")
                .arg(ext_device(disk, oem)),
            "reading the OEM grub.cfg with debugfs",
        )?;
        // debugfs says "File not found by ext2_lookup" on stderr and exits 0.
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        let o = Command::new("mtype")
            .arg("-i")
            .arg(fat_device(disk, oem))
            .arg("::/grub.cfg")
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .map_err(|e| tool_missing("mtype (mtools)", e))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Ok(String::new())
        }
    }
}

/// Replaces the OEM partition's `/grub.cfg` in `disk` with the file `local`.
fn write_grub_cfg(disk: &Path, oem: OemPartition, local: &Path) -> Result<(), PlatformError> {
    if oem.fs.is_ext() {
        // `rm` fails harmlessly when there is no grub.cfg yet; `write` refuses to replace.
        let script = format!("rm /grub.cfg\nwrite {} /grub.cfg\n", local.display());
        let cmds = local.with_extension("debugfs");
        std::fs::write(&cmds, script)
            .map_err(|e| PlatformError::io(format!("writing {}", cmds.display()), e))?;
        output(
            Command::new("debugfs")
                .arg("-w")
                .arg("-f")
                .arg(&cmds)
                .arg(ext_device(disk, oem)),
            "writing the OEM grub.cfg with debugfs",
        )?;
        Ok(())
    } else {
        output(
            Command::new("mcopy")
                .arg("-o")
                .arg("-i")
                .arg(fat_device(disk, oem))
                .arg(local)
                .arg("::/grub.cfg")
                .env("MTOOLS_SKIP_CHECK", "1"),
            "writing the OEM grub.cfg with mcopy",
        )?;
        Ok(())
    }
}

/// e2fsprogs' name for a file system at a byte offset in a file.
fn ext_device(disk: &Path, oem: OemPartition) -> String {
    format!("{}?offset={}", disk.display(), oem.offset)
}

/// mtools' name for a file system at a byte offset in a file.
fn fat_device(disk: &Path, oem: OemPartition) -> String {
    format!("{}@@{}", disk.display(), oem.offset)
}

fn tool_missing(tool: &str, e: std::io::Error) -> PlatformError {
    PlatformError::Input(format!(
        "adding the serial console to the disk's OEM grub.cfg needs {tool} ({e}); install it or pass --qemu-skip-mangle"
    ))
}

fn output(cmd: &mut Command, what: &str) -> Result<std::process::Output, PlatformError> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let o = cmd.output().map_err(|e| tool_missing(&prog, e))?;
    if !o.status.success() {
        return Err(PlatformError::Machine(format!(
            "{what}: {prog} exited with {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(o)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), PlatformError> {
    output(cmd, what).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_line_goes_on_a_line_of_its_own() {
        assert_eq!(appended(""), format!("{CONSOLE_LINE}\n"));
        assert_eq!(
            appended("set oem_id=\"qemu\""),
            format!("set oem_id=\"qemu\"\n{CONSOLE_LINE}\n")
        );
        assert_eq!(appended("a\n"), format!("a\n{CONSOLE_LINE}\n"));
    }

    /// A raw GPT disk with an ext4 OEM partition (number 6, label OEM) holding `grub`,
    /// made with sgdisk and mkfs.ext4 as the test image's builder does. None when those
    /// tools are missing.
    fn raw_disk_with_ext4_oem(dir: &Path, grub: &str) -> Option<PathBuf> {
        let disk = dir.join("disk.raw");
        let f = File::create(&disk).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let ok = Command::new("sgdisk")
            .args(["-n", "6:2048:+32M", "-c", "6:OEM"])
            .arg(&disk)
            .output()
            .ok()?
            .status
            .success();
        assert!(ok, "sgdisk failed");
        let content = dir.join("oem");
        std::fs::create_dir(&content).unwrap();
        std::fs::write(content.join("grub.cfg"), grub).unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-L", "OEM", "-E", "offset=1048576", "-d"])
            .arg(&content)
            .arg(&disk)
            .arg("32768")
            .output()
            .ok()?
            .status
            .success();
        assert!(ok, "mkfs.ext4 failed");
        Some(disk)
    }

    #[test]
    fn a_raw_disk_gets_a_mangled_private_copy_and_the_original_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let Some(disk) = raw_disk_with_ext4_oem(d.path(), "set oem_id=\"qemu\"\n") else {
            eprintln!("skipped: sgdisk or mkfs.ext4 missing");
            return;
        };
        if Command::new("debugfs").arg("-V").output().is_err() {
            eprintln!("skipped: debugfs missing");
            return;
        }
        let before = std::fs::read(&disk).unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let Mangle::Mangled(m) = mangle(&disk, "raw", &tmp).unwrap() else {
            panic!("not mangled")
        };
        let oem = oem_partition(m.path()).expect("OEM partition in the copy");
        assert!(oem.fs.is_ext());
        assert_eq!(
            read_grub_cfg(m.path(), oem).unwrap(),
            format!("set oem_id=\"qemu\"\n{CONSOLE_LINE}\n")
        );
        assert_eq!(std::fs::read(&disk).unwrap(), before, "the image changed");
        // Nothing is left in the directory the copy was made in.
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn qcow2_and_oem_less_disks_boot_as_they_are() {
        let d = tempfile::tempdir().unwrap();
        let Mangle::Skipped { warn, why } =
            mangle(Path::new("/nonexistent"), "qcow2", d.path()).unwrap()
        else {
            panic!("qcow2 mangled")
        };
        assert!(!warn && why.contains("raw disks only"), "{why}");
        let blank = d.path().join("blank.raw");
        File::create(&blank).unwrap().set_len(8 << 20).unwrap();
        let Mangle::Skipped { warn, why } = mangle(&blank, "raw", d.path()).unwrap() else {
            panic!("blank disk mangled")
        };
        assert!(!warn && why.contains("no OEM partition"), "{why}");
    }
}
