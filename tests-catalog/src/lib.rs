//! bogie's test catalog: kola's Flatcar tests under their exact names, one module per family.
//!
//! Each test keeps kola's cluster size, platform, architecture and version lists and checks
//! what kola's test checks. Tests that need what an image lacks say so in `requires`
//! (`flatcar`, `flatcar-partitions`, `docker`, `selinux-enforcing`, `tpm`, ...) and are
//! skipped with that reason; tests that need the internet carry the `needs-internet` tag.

use bogie_harness::{Config, Registry, Test};

pub mod basic;
pub mod clusters;
pub mod disk;
pub mod docker;
pub mod etcd;
pub mod ignition;
pub mod linux;
pub mod misc;
pub mod network;
pub mod omaha;
pub mod platform;
pub mod selinux;
pub mod sysext;
pub mod systemd;
pub mod tls;
pub mod update;
pub mod util;

/// Every test of the catalog, in family order.
pub fn all() -> Vec<Test> {
    let mut v = Vec::new();
    v.extend(basic::tests());
    v.extend(ignition::tests());
    v.extend(docker::tests());
    v.extend(etcd::tests());
    v.extend(selinux::tests());
    v.extend(systemd::tests());
    v.extend(network::tests());
    v.extend(linux::tests());
    v.extend(misc::tests());
    v.extend(disk::tests());
    v.extend(update::tests());
    v.extend(sysext::tests());
    v.extend(clusters::tests());
    v.extend(platform::tests());
    for t in v
        .iter_mut()
        .filter(|t| t.timeout.is_none() && REBOOTING.contains(&t.name.as_str()))
    {
        t.timeout = Some(REBOOT_TIMEOUT);
    }
    v
}

/// Tests that reboot their machine (one more boot than most) and so get
/// [`REBOOT_TIMEOUT`] unless they set their own.
const REBOOTING: &[&str] = &[
    "coreos.ignition.once",
    "cl.ignition.v1.once",
    "cl.ignition.oem.regular",
    "cl.ignition.oem.regular.new",
    "cl.ignition.oem.indirect",
    "cl.ignition.oem.indirect.new",
    "cl.ignition.oem.reuse",
    "coreos.selinux.enforce",
    "coreos.selinux.boolean",
    "cl.network.initramfs.second-boot",
    "packages",
    "cl.overlay.cleanup",
    "cl.osreset.ignition-rerun",
    "cl.disk.raid0.root",
    "cl.disk.raid1.root",
    "cl.disk.raid0.data",
    "cl.disk.raid1.data",
    "cl.tang.root",
    "cl.tang.nonroot",
    "cl.tpm.root",
    "cl.tpm.nonroot",
    "cl.tpm.root-cryptenroll",
    "cl.tpm.root-cryptenroll-pcr-noupdate",
    "cl.tpm.root-cryptenroll-pcr-withupdate",
    "cl.update.reboot",
    "cl.sysext.boot",
    "cl.sysext.boot.old",
    "cl.sysext.fallbackdownload",
    "sysext.zfs.reboot",
    "sysext.custom-oem",
    "coreos.locksmith.reboot",
];

/// The timeout of tests that reboot (a boot under software emulation on a busy host can
/// take minutes).
pub const REBOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25 * 60);

/// Ignition configs the test bodies boot machines with (beyond each test's own config),
/// named by test, so the catalog's unit tests can validate them.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    let mut v = Vec::new();
    v.extend(ignition::body_configs());
    v.extend(network::body_configs());
    v.extend(systemd::body_configs());
    v.extend(linux::body_configs());
    v.extend(disk::body_configs());
    v.extend(update::body_configs());
    v.extend(sysext::body_configs());
    v.extend(clusters::body_configs());
    v.extend(platform::body_configs());
    v
}

/// The catalog as a registry.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    for t in all() {
        r.register(t).expect("catalog names are unique");
    }
    r
}

#[cfg(test)]
mod tests;
