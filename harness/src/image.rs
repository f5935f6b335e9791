//! The image under test: a bogie image manifest (from `ci/build-test-image`) or a plain disk
//! image (a real Flatcar `.img`/`.bin`, booted through firmware). A plain disk is read with
//! `bogie-diskinfo` (GPT, ext2/3/4, `os-release`): its capabilities are derived from what is
//! on it, and only a disk that cannot be read is assumed to be a Flatcar image.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::version::Version;

/// The manifest `ci/build-test-image` writes beside the disk. Paths are relative to the
/// manifest's directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format marker, `bogie-image/1`.
    pub format: String,
    /// Image name.
    #[serde(default)]
    pub name: String,
    /// Architecture of the image.
    pub arch: Arch,
    /// Image version string.
    #[serde(default)]
    pub version: String,
    /// `direct-kernel` or `firmware`.
    #[serde(default = "default_boot")]
    pub boot: String,
    /// Disk image path.
    pub disk: PathBuf,
    /// `qcow2` or `raw`.
    #[serde(default = "default_disk_format")]
    pub disk_format: String,
    /// Kernel for direct kernel boot.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// Initrd for direct kernel boot.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line for direct kernel boot.
    #[serde(default)]
    pub kernel_args: String,
    /// The fw_cfg name the image's Ignition reads.
    #[serde(default)]
    pub fw_cfg_name: Option<String>,
    /// `ID=` of the image's os-release.
    #[serde(default)]
    pub os_id: String,
    /// The default SSH user.
    #[serde(default = "default_user")]
    pub default_user: String,
    /// SELinux mode: `disabled`, `permissive` or `enforcing`.
    #[serde(default)]
    pub selinux: String,
    /// What the image contains (capabilities tests may require: `docker`, `etcd`, ...).
    #[serde(default)]
    pub contains: BTreeSet<String>,
}

fn default_boot() -> String {
    "direct-kernel".into()
}
fn default_disk_format() -> String {
    "qcow2".into()
}
fn default_user() -> String {
    "core".into()
}

/// Errors reading the image argument.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The path does not exist.
    #[error("image not found: {0}")]
    NotFound(PathBuf),
    /// The manifest could not be read or parsed.
    #[error("invalid image manifest {path}: {reason}")]
    BadManifest {
        /// Manifest path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file the manifest names is missing.
    #[error("image manifest {manifest} names a missing file: {missing}")]
    MissingFile {
        /// Manifest path.
        manifest: PathBuf,
        /// The missing file.
        missing: PathBuf,
    },
}

/// What bogie knows about the image under test.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// The path the user gave.
    pub path: PathBuf,
    /// The manifest, when the path is one (paths inside made absolute).
    pub manifest: Option<Manifest>,
    /// The image's architecture, when known (from the manifest).
    pub arch: Option<Arch>,
    /// The image version, when known.
    pub version: Option<Version>,
    /// Capabilities the image provides (from the manifest; read from a plain disk, or the
    /// Flatcar set when it cannot be read).
    pub provides: BTreeSet<String>,
    /// Where `provides` (and a plain disk's arch and version) came from.
    pub provides_from: ProvidesFrom,
}

/// Where an image's capabilities came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvidesFrom {
    /// The manifest's `contains` (and `selinux`).
    Manifest,
    /// Read from the plain disk: what `bogie_diskinfo::inspect` found (`os-release`, the
    /// evidence for each capability). A Flatcar `os-release` adds [`FLATCAR_PROVIDES`].
    Disk(Box<bogie_diskinfo::Inspection>),
    /// Not read from the image: a real Flatcar image is assumed ([`FLATCAR_PROVIDES`]).
    Assumed {
        /// Why (the disk could not be read, or the image is remote).
        reason: String,
        /// What was read of the disk anyway (its partitions), if anything.
        inspection: Option<Box<bogie_diskinfo::Inspection>>,
    },
}

impl Default for ProvidesFrom {
    fn default() -> Self {
        ProvidesFrom::Assumed {
            reason: "the image was not read".into(),
            inspection: None,
        }
    }
}

impl ProvidesFrom {
    /// One line for people: `manifest`, `disk (ID=debian ...)`, `assumed Flatcar (why)`.
    pub fn summary(&self) -> String {
        match self {
            ProvidesFrom::Manifest => "the image manifest's contains".into(),
            ProvidesFrom::Disk(i) => {
                format!("read from the disk: {} ({})", i.os_summary(), i.container)
            }
            ProvidesFrom::Assumed { reason, .. } => {
                format!("assumed to be a Flatcar image ({reason})")
            }
        }
    }

    /// The disk inspection behind it, if any.
    pub fn inspection(&self) -> Option<&bogie_diskinfo::Inspection> {
        match self {
            ProvidesFrom::Disk(i) => Some(i),
            ProvidesFrom::Assumed { inspection, .. } => inspection.as_deref(),
            ProvidesFrom::Manifest => None,
        }
    }
}

/// What a real Flatcar production image provides: given to a plain disk whose
/// `os-release` says `ID=flatcar`, and assumed for a disk bogie cannot read.
pub const FLATCAR_PROVIDES: &[&str] = &[
    "flatcar",
    "systemd",
    "sshd",
    "ignition",
    "ignition-spec1",
    "ignition-spec2",
    "sudo",
    "docker",
    "containerd",
    "runc",
    "etcd",
    "etcdctl",
    "wireguard",
    "nftables",
    "iptables",
    "nfs-server",
    "nfs-client",
    "journal-remote",
    "btrfs",
    "xfs",
    "vfat",
    "cryptsetup",
    "curl",
    "openssl",
    "update-engine",
    "locksmith",
    "sysext",
    "torcx",
    "selinux",
    "selinux-enforcing",
    "verity",
    "oem-partition",
    "flatcar-partitions",
    "usr-readonly",
    "toolbox",
    "cloudinit",
    "ignition-fetch",
    "ignition-disks",
    "tpm2-tools",
    "clevis",
];

/// Whether a manifest's `os_id` names Flatcar (an empty one is taken as Flatcar, as for
/// manifests written before `os_id` existed).
fn is_flatcar_os(os_id: &str) -> bool {
    matches!(os_id, "" | "flatcar" | "flatcar-linux")
}

/// `p` made absolute against `dir`.
fn absolute(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

impl ImageInfo {
    /// Reads the image argument: a manifest JSON (`manifest.json`) or a plain disk image.
    pub fn load(path: &Path) -> Result<ImageInfo, ImageError> {
        if !path.exists() {
            return Err(ImageError::NotFound(path.to_path_buf()));
        }
        let is_manifest = path.extension().is_some_and(|e| e == "json");
        if !is_manifest {
            return Ok(plain_disk(path));
        }
        let bad = |reason: String| ImageError::BadManifest {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let mut m: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !m.format.starts_with("bogie-image/") {
            return Err(bad(format!("unknown format {:?}", m.format)));
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        m.disk = absolute(&dir, &m.disk);
        m.kernel = m.kernel.as_deref().map(|p| absolute(&dir, p));
        m.initrd = m.initrd.as_deref().map(|p| absolute(&dir, p));
        for f in std::iter::once(&m.disk)
            .chain(m.kernel.iter())
            .chain(m.initrd.iter())
        {
            if !f.exists() {
                return Err(ImageError::MissingFile {
                    manifest: path.to_path_buf(),
                    missing: f.clone(),
                });
            }
        }
        // Only a Flatcar version orders against the tests' min/end versions; another OS's
        // version (the test image's Debian `12.x`) is unknown, not "older than everything".
        let version = if is_flatcar_os(&m.os_id) {
            Version::parse_lenient(&m.version)
        } else {
            None
        };
        let mut provides = m.contains.clone();
        if m.selinux == "enforcing" {
            provides.insert("selinux".into());
            provides.insert("selinux-enforcing".into());
        } else if m.selinux == "permissive" {
            provides.insert("selinux".into());
        }
        Ok(ImageInfo {
            path: path.to_path_buf(),
            arch: Some(m.arch),
            version,
            provides,
            manifest: Some(m),
            provides_from: ProvidesFrom::Manifest,
        })
    }

    /// Whether the image is Flatcar as far as versions go: a manifest whose `os_id` is
    /// Flatcar's, a plain disk whose `os-release` is, or a disk assumed to be Flatcar.
    /// Another OS's version says nothing about Flatcar's version range.
    pub fn has_flatcar_versions(&self) -> bool {
        if let Some(m) = &self.manifest {
            return is_flatcar_os(&m.os_id);
        }
        match &self.provides_from {
            ProvidesFrom::Disk(i) => i.os_release.as_ref().is_some_and(|o| o.is_flatcar()),
            _ => true,
        }
    }

    /// Whether the image provides a capability.
    pub fn has(&self, capability: &str) -> bool {
        self.provides.contains(capability)
    }
}

/// A plain disk image, read with `bogie_diskinfo::inspect`: a Flatcar `os-release` gets
/// [`FLATCAR_PROVIDES`] and its version, another OS the capabilities found on the disk. A
/// disk that cannot be read (or whose OS cannot) is assumed to be Flatcar, with one warning.
fn plain_disk(path: &Path) -> ImageInfo {
    let flatcar = || FLATCAR_PROVIDES.iter().map(|s| s.to_string());
    let assumed = |reason: String, inspection: Option<bogie_diskinfo::Inspection>| {
        let mut provides: BTreeSet<String> = flatcar().collect();
        if let Some(i) = &inspection {
            provides.extend(i.capabilities.keys().cloned());
        }
        ImageInfo {
            path: path.to_path_buf(),
            manifest: None,
            arch: inspection
                .as_ref()
                .and_then(|i| i.arch.as_ref())
                .map(|a| arch_of(a.0)),
            version: None,
            provides,
            provides_from: ProvidesFrom::Assumed {
                reason,
                inspection: inspection.map(Box::new),
            },
        }
    };
    let i = match bogie_diskinfo::inspect(path) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(
                "cannot read {} ({e}): assuming a Flatcar image",
                path.display()
            );
            return assumed(e.to_string(), None);
        }
    };
    tracing::debug!(
        "read {} in {} ms: {}",
        path.display(),
        i.elapsed.as_millis(),
        i.os_summary()
    );
    let Some(os) = i.os_release.clone() else {
        let why = i
            .os_problem
            .clone()
            .unwrap_or_else(|| "no os-release".into());
        tracing::warn!(
            "cannot read os-release from {} ({why}): assuming a Flatcar image",
            path.display()
        );
        return assumed(why, Some(i));
    };
    let mut provides: BTreeSet<String> = i.capabilities.keys().cloned().collect();
    let mut version = None;
    if os.is_flatcar() {
        provides.extend(flatcar());
        version = Version::parse_lenient(os.version_id())
            .or_else(|| Version::parse_lenient(os.version()));
    }
    ImageInfo {
        path: path.to_path_buf(),
        manifest: None,
        arch: i.arch.as_ref().map(|a| arch_of(a.0)),
        version,
        provides,
        provides_from: ProvidesFrom::Disk(Box::new(i)),
    }
}

fn arch_of(a: bogie_diskinfo::Arch) -> Arch {
    match a {
        bogie_diskinfo::Arch::Amd64 => Arch::Amd64,
        bogie_diskinfo::Arch::Arm64 => Arch::Arm64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_image_is_named() {
        let e = ImageInfo::load(Path::new("/nonexistent/img")).unwrap_err();
        assert_eq!(e.to_string(), "image not found: /nonexistent/img");
    }

    #[test]
    fn manifest_paths_become_absolute_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("disk.qcow2"), b"x").unwrap();
        let m = d.path().join("manifest.json");
        std::fs::write(
            &m,
            r#"{"format":"bogie-image/1","arch":"arm64","version":"12.5+bogie.abc","disk":"disk.qcow2","contains":["docker"],"selinux":"permissive"}"#,
        )
        .unwrap();
        let info = ImageInfo::load(&m).unwrap();
        assert_eq!(info.arch, Some(Arch::Arm64));
        assert!(info.manifest.as_ref().unwrap().disk.is_absolute());
        assert!(info.has("docker") && info.has("selinux") && !info.has("flatcar"));
        // No os_id: a Flatcar version.
        assert_eq!(info.version, Some(Version::new(12, 5, 0)));
        std::fs::write(
            &m,
            r#"{"format":"bogie-image/1","arch":"arm64","version":"12.5+bogie.abc","os_id":"debian","disk":"disk.qcow2"}"#,
        )
        .unwrap();
        assert_eq!(ImageInfo::load(&m).unwrap().version, None);
        std::fs::write(
            &m,
            r#"{"format":"bogie-image/1","arch":"arm64","version":"4230.2.1","os_id":"flatcar","disk":"disk.qcow2"}"#,
        )
        .unwrap();
        assert_eq!(
            ImageInfo::load(&m).unwrap().version,
            Some(Version::new(4230, 2, 1))
        );
        std::fs::write(
            &m,
            r#"{"format":"bogie-image/1","arch":"arm64","disk":"disk.qcow2","kernel":"nope"}"#,
        )
        .unwrap();
        assert!(matches!(
            ImageInfo::load(&m),
            Err(ImageError::MissingFile { .. })
        ));
    }

    const DEBIAN: &str =
        "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nVARIANT_ID=bogie-test\n";

    fn flatcar_set() -> BTreeSet<String> {
        FLATCAR_PROVIDES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_disk_that_cannot_be_read_is_assumed_to_be_flatcar() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("flatcar_production_image.bin");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
        std::fs::write(&p, bytes).unwrap();
        let info = ImageInfo::load(&p).unwrap();
        assert_eq!(info.provides, flatcar_set());
        assert!(info.has_flatcar_versions());
        assert_eq!((info.arch, info.version), (None, None));
        assert_eq!(
            info.provides_from.summary(),
            "assumed to be a Flatcar image (no GPT partition table (and no file system on the whole disk))"
        );
    }

    #[test]
    fn a_flatcar_shaped_debian_disk_provides_what_is_on_it() {
        let d = tempfile::tempdir().unwrap();
        let Some(disk) = bogie_diskinfo::fixtures::flatcar_shaped(d.path(), DEBIAN, None) else {
            return;
        };
        let info = ImageInfo::load(&disk).unwrap();
        for c in [
            "flatcar-partitions",
            "oem-partition",
            "usr-readonly",
            "verity",
            "docker",
            "sysext",
        ] {
            assert!(info.has(c), "{c}: {:?}", info.provides);
        }
        for c in ["flatcar", "locksmith", "etcd", "selinux"] {
            assert!(!info.has(c), "{c}: {:?}", info.provides);
        }
        assert_eq!(info.arch, Some(Arch::Amd64));
        assert_eq!(info.version, None);
        assert!(
            !info.has_flatcar_versions(),
            "Debian's 12 is no Flatcar version"
        );
        assert!(matches!(info.provides_from, ProvidesFrom::Disk(_)));
        assert!(
            info.provides_from.summary().starts_with(
                "read from the disk: ID=debian VERSION_ID=12 VARIANT_ID=bogie-test (Debian GNU/Linux) (raw)"
            ),
            "{}",
            info.provides_from.summary()
        );
    }

    #[test]
    fn a_flatcar_os_release_gets_flatcar_provides_and_its_version() {
        let d = tempfile::tempdir().unwrap();
        let os = "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION=4230.2.1\nVERSION_ID=4230.2.1\n";
        let Some(disk) = bogie_diskinfo::fixtures::flatcar_shaped(d.path(), os, None) else {
            return;
        };
        let info = ImageInfo::load(&disk).unwrap();
        assert!(info.provides.is_superset(&flatcar_set()));
        assert!(info.has("docker") && info.has("flatcar"));
        assert_eq!(info.version, Some(Version::new(4230, 2, 1)));
        assert!(info.has_flatcar_versions());
    }

    #[test]
    fn an_unreadable_usr_falls_back_to_flatcar_with_the_partition_facts() {
        let d = tempfile::tempdir().unwrap();
        let mut btrfs = vec![0u8; 0x20000];
        btrfs[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        let Some(disk) = bogie_diskinfo::fixtures::flatcar_shaped(d.path(), DEBIAN, Some(btrfs))
        else {
            return;
        };
        let info = ImageInfo::load(&disk).unwrap();
        assert_eq!(
            info.provides,
            flatcar_set(),
            "usr-readonly is in the Flatcar set"
        );
        assert_eq!(info.arch, Some(Arch::Amd64), "from the ESP");
        assert!(info.has_flatcar_versions());
        match &info.provides_from {
            ProvidesFrom::Assumed { reason, inspection } => {
                assert_eq!(reason, "USR-A is btrfs");
                assert!(inspection
                    .as_ref()
                    .unwrap()
                    .capabilities
                    .contains_key("flatcar-partitions"));
            }
            other => panic!("{other:?}"),
        }
    }
}
