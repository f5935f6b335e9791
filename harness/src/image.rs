//! The image under test: a bogie image manifest (from `ci/build-test-image`) or a plain disk
//! image (a real Flatcar `.img`/`.bin`, booted through firmware).

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
    /// Capabilities the image provides (from the manifest; the Flatcar set for plain disks).
    pub provides: BTreeSet<String>,
}

/// What a real Flatcar production image provides, assumed for plain disk images.
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
    "toolbox",
    "cloudinit",
    "ignition-fetch",
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
            return Ok(ImageInfo {
                path: path.to_path_buf(),
                manifest: None,
                arch: None,
                version: None,
                provides: FLATCAR_PROVIDES.iter().map(|s| s.to_string()).collect(),
            });
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
        })
    }

    /// Whether the image is Flatcar as far as versions go: a plain disk, or a manifest whose
    /// `os_id` is Flatcar's. Another OS's version says nothing about Flatcar's version range.
    pub fn has_flatcar_versions(&self) -> bool {
        self.manifest
            .as_ref()
            .is_none_or(|m| is_flatcar_os(&m.os_id))
    }

    /// Whether the image provides a capability.
    pub fn has(&self, capability: &str) -> bool {
        self.provides.contains(capability)
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
}
