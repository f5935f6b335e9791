//! The capabilities a plain disk provides, and the evidence for each: **the one table**
//! ([`RULES`]) that says which files, kernel modules and partitions mean which capability.
//!
//! The content rules mirror the checks `ci/build-test-image` runs on the test image's root
//! before it writes the manifest's `contains` (section 4, "What the image really
//! contains"): the same files, the same modules (a module counts when `modules.dep` or
//! `modules.builtin` of an installed kernel under `/usr/lib/modules/<kver>/` names it).
//! A "program" is a file (or symlink) of that name in `/usr/bin`, `/usr/sbin`, `/bin` or
//! `/sbin`, paths resolved in the OS view (so Debian's `/sbin -> usr/sbin` leads into the
//! USR partition). The partition rules read the GPT and the USR partition.
//!
//! `flatcar` is not in the table: it comes from `os-release` alone (`ID=flatcar`), and
//! then the caller adds what a real Flatcar ships.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::view::OsView;

/// A fact about the disk's partitions, found before any file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fact {
    /// The GPT has Flatcar's labels EFI-SYSTEM, USR-A, USR-B, OEM, OEM-CONFIG and ROOT,
    /// with Flatcar's types: ESP, `5dfbf5f4-…` (USR-A and USR-B), `c95dc21a-…`
    /// (OEM-CONFIG), `3884dd41-…` (ROOT).
    FlatcarPartitions,
    /// A partition labelled OEM.
    OemPartition,
    /// A separate USR-A partition holding a known file system (mounted read-only on
    /// `/usr`).
    UsrPartition,
    /// A dm-verity superblock (`verity\0\0`) in USR-A after its file system: at Flatcar's
    /// hash offset (byte 1065345024) or where the ext2/3/4 file system ends.
    Verity,
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fact::FlatcarPartitions => {
                "GPT labels EFI-SYSTEM USR-A USR-B OEM OEM-CONFIG ROOT with Flatcar's type GUIDs"
            }
            Fact::OemPartition => "a partition labelled OEM",
            Fact::UsrPartition => "a USR-A partition with a file system",
            Fact::Verity => "a dm-verity superblock in USR-A after its file system",
        })
    }
}

/// One piece of evidence a capability needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// One of these paths exists (a file, directory or symlink: `[ -e P ] || [ -L P ]`).
    Any(&'static [&'static str]),
    /// A program of this name in `/usr/bin`, `/usr/sbin`, `/bin` or `/sbin`.
    Program(&'static str),
    /// Every one of these kernel modules (`-` and `_` alike), built in or loadable.
    Modules(&'static [&'static str]),
    /// The file contains this text.
    Contains(&'static str, &'static str),
    /// The file sets `KEY=` to one of the values (`/etc/selinux/config`'s `SELINUX=`).
    Setting(&'static str, &'static str, &'static [&'static str]),
    /// A fact about the partitions.
    Partitions(Fact),
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Any(p) if p.len() == 1 => f.write_str(p[0]),
            Need::Any(p) => write!(f, "one of {}", p.join(" ")),
            Need::Program(n) => write!(f, "program {n}"),
            Need::Modules(m) => write!(f, "modules {}", m.join(" ")),
            Need::Contains(p, t) => write!(f, "{t:?} in {p}"),
            Need::Setting(p, k, v) => write!(f, "{k}={} in {p}", v.join("|")),
            Need::Partitions(fact) => write!(f, "{fact}"),
        }
    }
}

/// A capability and everything it needs (all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The capability name tests `.requires()`.
    pub capability: &'static str,
    /// The evidence, all required.
    pub needs: &'static [Need],
}

use Need::{Any, Contains, Modules, Partitions, Program, Setting};

const SYSTEMD: &[&str] = &["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];
const PAM_SYSTEMD: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/security/pam_systemd.so",
    "/usr/lib/aarch64-linux-gnu/security/pam_systemd.so",
    "/lib/x86_64-linux-gnu/security/pam_systemd.so",
    "/lib/aarch64-linux-gnu/security/pam_systemd.so",
    "/usr/lib64/security/pam_systemd.so",
    "/usr/lib/security/pam_systemd.so",
];
const IGNITION_TRANSLATE: &[&str] = &["/usr/local/lib/ignition-translate.jq"];
const SELINUX_CONFIG: &str = "/etc/selinux/config";

/// Capability → evidence, for plain disks. Order is the order of `bogie list --show-image`.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    Rule { capability: "flatcar-partitions", needs: &[Partitions(Fact::FlatcarPartitions)] },
    Rule { capability: "oem-partition", needs: &[Partitions(Fact::OemPartition)] },
    Rule { capability: "usr-readonly", needs: &[Partitions(Fact::UsrPartition)] },
    Rule { capability: "verity", needs: &[Partitions(Fact::Verity)] },
    Rule { capability: "systemd", needs: &[Any(SYSTEMD)] },
    Rule { capability: "sshd", needs: &[Program("sshd")] },
    Rule {
        capability: "ignition",
        needs: &[
            Any(&["/usr/lib/dracut/modules.d/30ignition/ignition"]),
            Any(&[
                "/etc/initramfs-tools/scripts/local-bottom/ignition",
                "/usr/lib/dracut/modules.d/30ignition/module-setup.sh",
            ]),
        ],
    },
    Rule { capability: "ignition-spec1", needs: &[Any(IGNITION_TRANSLATE), Program("jq")] },
    Rule { capability: "ignition-spec2", needs: &[Any(IGNITION_TRANSLATE), Program("jq")] },
    Rule {
        capability: "ignition-fetch",
        needs: &[
            Program("jq"),
            Contains("/usr/local/libexec/ignition-firstboot", "stage fetch"),
        ],
    },
    Rule { capability: "sudo", needs: &[Program("sudo")] },
    Rule {
        capability: "docker",
        needs: &[
            Program("docker"),
            Program("dockerd"),
            Modules(&["overlay", "br_netfilter", "veth"]),
        ],
    },
    Rule { capability: "containerd", needs: &[Program("containerd")] },
    Rule { capability: "runc", needs: &[Program("runc")] },
    Rule { capability: "etcd", needs: &[Program("etcd")] },
    Rule { capability: "etcdctl", needs: &[Program("etcdctl")] },
    Rule { capability: "wireguard", needs: &[Program("wg"), Modules(&["wireguard"])] },
    Rule { capability: "nftables", needs: &[Program("nft"), Modules(&["nf_tables"])] },
    Rule { capability: "iptables", needs: &[Program("iptables")] },
    Rule {
        capability: "nfs-server",
        needs: &[Program("rpc.nfsd"), Program("exportfs"), Modules(&["nfsd"])],
    },
    Rule { capability: "nfs-client", needs: &[Program("mount.nfs"), Modules(&["nfs", "nfsv4"])] },
    Rule { capability: "busybox", needs: &[Program("busybox")] },
    Rule {
        capability: "journal-remote",
        needs: &[Any(&[
            "/usr/lib/systemd/systemd-journal-remote",
            "/lib/systemd/systemd-journal-remote",
        ])],
    },
    Rule { capability: "btrfs", needs: &[Program("mkfs.btrfs"), Modules(&["btrfs"])] },
    Rule { capability: "xfs", needs: &[Program("mkfs.xfs"), Modules(&["xfs"])] },
    Rule { capability: "vfat", needs: &[Program("mkfs.vfat"), Modules(&["vfat"])] },
    Rule { capability: "cryptsetup", needs: &[Program("cryptsetup"), Modules(&["dm_crypt"])] },
    Rule { capability: "curl", needs: &[Program("curl")] },
    Rule { capability: "tpm2-tools", needs: &[Program("tpm2_eventlog"), Program("tpm2_getcap")] },
    Rule { capability: "clevis", needs: &[Program("clevis"), Program("clevis-luks-bind")] },
    Rule { capability: "openssl", needs: &[Program("openssl")] },
    Rule { capability: "ipvsadm", needs: &[Program("ipvsadm"), Modules(&["ip_vs"])] },
    Rule {
        capability: "timesyncd",
        needs: &[Any(&[
            "/usr/lib/systemd/systemd-timesyncd",
            "/lib/systemd/systemd-timesyncd",
        ])],
    },
    Rule { capability: "pam-systemd", needs: &[Any(PAM_SYSTEMD)] },
    Rule {
        capability: "nbd-root",
        needs: &[
            Program("nbd-client"),
            Any(&["/etc/initramfs-tools/hooks/nbd"]),
            Modules(&["nbd"]),
        ],
    },
    Rule { capability: "sysext", needs: &[Program("systemd-sysext")] },
    Rule { capability: "update-engine", needs: &[Program("update_engine_client")] },
    Rule { capability: "locksmith", needs: &[Program("locksmithctl")] },
    Rule { capability: "torcx", needs: &[Program("torcx")] },
    Rule { capability: "toolbox", needs: &[Program("toolbox")] },
    Rule { capability: "cloudinit", needs: &[Program("coreos-cloudinit")] },
    Rule {
        capability: "selinux",
        needs: &[Setting(SELINUX_CONFIG, "SELINUX", &["enforcing", "permissive"])],
    },
    Rule {
        capability: "selinux-enforcing",
        needs: &[Setting(SELINUX_CONFIG, "SELINUX", &["enforcing"])],
    },
];

/// The directories a [`Need::Program`] is looked for in.
const PROGRAM_DIRS: &[&str] = &["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

/// The kernel modules of the kernels installed in an OS view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelModules {
    /// The kernel versions (`/usr/lib/modules/<kver>` directories with a `modules.dep`).
    pub kernels: Vec<String>,
    /// Module names (`-` as `_`), built in or loadable, of any of them.
    pub names: BTreeSet<String>,
}

impl KernelModules {
    /// Reads `modules.dep` and `modules.builtin` of each kernel under `/usr/lib/modules`
    /// (else `/lib/modules`).
    pub fn read(view: &OsView) -> KernelModules {
        let mut m = KernelModules::default();
        let dir = ["/usr/lib/modules", "/lib/modules"]
            .into_iter()
            .find(|d| matches!(view.metadata(d), Ok(Some(crate::view::Node::Dir))));
        let Some(dir) = dir else {
            return m;
        };
        for kver in view.read_dir(dir).unwrap_or_default() {
            let mut any = false;
            for list in ["modules.dep", "modules.builtin"] {
                let Ok(text) = view.read(&format!("{dir}/{kver}/{list}")) else {
                    continue;
                };
                any = true;
                for line in String::from_utf8_lossy(&text).lines() {
                    let path = line.split(':').next().unwrap_or("");
                    let file = path.rsplit('/').next().unwrap_or("");
                    let Some(stem) = file.find(".ko").map(|i| &file[..i]) else {
                        continue;
                    };
                    if !stem.is_empty() {
                        m.names.insert(stem.replace('-', "_"));
                    }
                }
            }
            if any {
                m.kernels.push(kver);
            }
        }
        m
    }

    /// Whether module `name` is there (`-` and `_` alike).
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(&name.replace('-', "_"))
    }
}

/// What the rules are evaluated against: the partition facts found (with their evidence)
/// and, when the OS could be read, the OS view and its kernel modules.
pub struct Evidence<'a> {
    /// The partition facts that hold, each with what shows it.
    pub facts: BTreeMap<Fact, String>,
    /// The OS view, when ROOT (and USR) could be read.
    pub view: Option<&'a OsView>,
    /// The installed kernels' modules.
    pub modules: KernelModules,
}

impl Evidence<'_> {
    /// What shows `need`, or `None` when it does not hold.
    fn check(&self, need: &Need) -> Option<String> {
        let exists = |p: &str| self.view.is_some_and(|v| v.exists(p).unwrap_or(false));
        match need {
            Need::Partitions(f) => self.facts.get(f).cloned(),
            Need::Any(paths) => paths.iter().find(|p| exists(p)).map(|p| p.to_string()),
            Need::Program(name) => PROGRAM_DIRS
                .iter()
                .map(|d| format!("{d}/{name}"))
                .find(|p| exists(p)),
            Need::Modules(names) => {
                self.view?;
                names.iter().all(|n| self.modules.has(n)).then(|| {
                    format!(
                        "modules {} ({})",
                        names.join(" "),
                        self.modules.kernels.join(" ")
                    )
                })
            }
            Need::Contains(path, text) => {
                let body = self.view?.read(path).ok()?;
                String::from_utf8_lossy(&body)
                    .contains(text)
                    .then(|| format!("{text:?} in {path}"))
            }
            Need::Setting(path, key, values) => {
                let body = self.view?.read(path).ok()?;
                let body = String::from_utf8_lossy(&body);
                let v = crate::osrelease::OsRelease::parse(&body)
                    .get(key)
                    .to_string();
                values
                    .contains(&v.as_str())
                    .then(|| format!("{key}={v} in {path}"))
            }
        }
    }

    /// Every capability of [`RULES`] whose needs all hold, with the evidence (`; `-joined).
    pub fn capabilities(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for r in RULES {
            let found: Option<Vec<String>> = r.needs.iter().map(|n| self.check(n)).collect();
            if let Some(found) = found {
                out.insert(r.capability.to_string(), found.join("; "));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_capability_once_and_every_manifest_check() {
        let mut seen = BTreeSet::new();
        for r in RULES {
            assert!(seen.insert(r.capability), "{} twice", r.capability);
            assert!(!r.needs.is_empty(), "{} needs evidence", r.capability);
        }
        assert!(
            !seen.contains("flatcar"),
            "flatcar comes from os-release only"
        );
        // The names ci/build-test-image's checks add to the manifest's `contains`.
        for c in [
            "systemd",
            "sshd",
            "ignition",
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
            "busybox",
            "journal-remote",
            "btrfs",
            "xfs",
            "vfat",
            "cryptsetup",
            "curl",
            "openssl",
            "ipvsadm",
            "timesyncd",
            "pam-systemd",
            "ignition-spec1",
            "ignition-spec2",
            "nbd-root",
            "ignition-fetch",
        ] {
            assert!(seen.contains(c), "{c} has no rule");
        }
    }

    #[test]
    fn partition_facts_alone_need_no_view() {
        let mut facts = BTreeMap::new();
        facts.insert(
            Fact::OemPartition,
            "partition 6 labelled OEM (ext4)".to_string(),
        );
        let e = Evidence {
            facts,
            view: None,
            modules: KernelModules::default(),
        };
        let caps = e.capabilities();
        assert_eq!(caps.keys().collect::<Vec<_>>(), ["oem-partition"]);
        assert_eq!(
            Need::Modules(&["overlay", "veth"]).to_string(),
            "modules overlay veth"
        );
        assert_eq!(
            Need::Setting(SELINUX_CONFIG, "SELINUX", &["enforcing"]).to_string(),
            "SELINUX=enforcing in /etc/selinux/config"
        );
    }
}
