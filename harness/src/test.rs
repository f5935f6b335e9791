//! The test descriptor: kola's `register.Test` fields plus timeout, tags and requirements.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::cluster::TestCluster;
use crate::ignition::Config;
use crate::platform::DiskSpec;
pub use crate::version::Version;

/// The body of a test.
pub type TestBody =
    Arc<dyn Fn(TestCluster) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// kola's test flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFlags {
    /// Don't put the run's SSH key in the Ignition config (the test provides access itself).
    pub no_ssh_key_in_user_data: bool,
    /// Don't put the run's SSH key in platform metadata.
    pub no_ssh_key_in_metadata: bool,
    /// Don't fail on an emergency shell on the console.
    pub no_emergency_shell_check: bool,
    /// Don't run `setenforce 1` at bring-up.
    pub no_enable_selinux: bool,
    /// Don't fail on a kernel panic on the console.
    pub no_kernel_panic_check: bool,
    /// Don't fail on dm-verity corruption messages.
    pub no_verity_corruption_check: bool,
    /// Don't disable updates in the default config.
    pub no_disable_updates: bool,
    /// Don't fail on SELinux AVC denials.
    pub no_selinux_avc_checks: bool,
}

/// A registered test.
#[derive(Clone)]
pub struct Test {
    /// kola's exact name (`cl.basic`).
    pub name: String,
    /// One line on what it checks.
    pub description: String,
    /// The body.
    pub body: TestBody,
    /// Machines the harness boots before the body runs (0: the test boots its own).
    pub cluster_size: usize,
    /// The Ignition config every harness-booted machine gets (the run's SSH key is added).
    pub config: Option<Config>,
    /// Platforms the test runs on (empty: all).
    pub platforms: Vec<String>,
    /// Platforms the test never runs on.
    pub exclude_platforms: Vec<String>,
    /// What the test needed from kola's privileged `qemu` platform, for a test kola keeps
    /// off `qemu-unpriv`: on bogie's (unprivileged) QEMU that exclusion is lifted and these
    /// capabilities are required instead ([`crate::select::PRIVILEGED_QEMU_NEEDS`] says
    /// what each is). None: the exclusion stands.
    pub privileged_qemu_needs: Option<Vec<String>>,
    /// Architectures the test runs on (empty: all).
    pub architectures: Vec<Arch>,
    /// Architectures the test never runs on.
    pub exclude_architectures: Vec<Arch>,
    /// Distros (`cl`, `fcos`, `rhcos`; empty: all).
    pub distros: Vec<String>,
    /// Distros excluded.
    pub exclude_distros: Vec<String>,
    /// Channels (empty: all).
    pub channels: Vec<String>,
    /// Channels excluded.
    pub exclude_channels: Vec<String>,
    /// Offerings (`basic`, `pro`; empty: all).
    pub offerings: Vec<String>,
    /// kola's flags.
    pub flags: TestFlags,
    /// First image version the test applies to.
    pub min_version: Option<Version>,
    /// First image version the test no longer applies to (range is `[min, end)`).
    pub end_version: Option<Version>,
    /// Per-test timeout (the run's default when None).
    pub timeout: Option<Duration>,
    /// Tags (`needs-internet`, `platform-independent`, ...).
    pub tags: Vec<String>,
    /// Capabilities the image or platform must provide (`docker`, `flatcar`, `tpm`, ...).
    pub requires: Vec<String>,
    /// The test leaves its machine as it found it, so compatible tests may share a machine.
    pub non_exclusive: bool,
    /// Tests that must not share a machine with this one.
    pub conflicts: Vec<String>,
    /// The test must see a true first boot (no machine restored from a snapshot).
    pub needs_first_boot: bool,
    /// Memory per machine in MiB, when more than the platform default is needed.
    pub min_memory_mb: Option<u32>,
    /// Extra empty disks per machine (size, interface, sectors, serial, multipath).
    pub extra_disks: Vec<DiskSpec>,
    /// The primary disk's minimum size in GiB (coreos-assembler's `minDisk`).
    pub primary_disk_gib: Option<u32>,
    /// Additional user-mode NICs per machine (MACs from [`crate::platform::extra_nic_mac`]).
    pub extra_nics: u32,
    /// Extra kernel arguments for direct kernel boot, every boot.
    pub kernel_args: Vec<String>,
    /// Extra kernel arguments for the first boot only (coreos-assembler's
    /// `appendFirstbootKernelArgs`).
    pub first_boot_kernel_args: Vec<String>,
    /// The SSH user (kola's `DefaultUser`), `core` when None.
    pub default_user: Option<String>,
    /// coreos-assembler's `requiredTag`: the test runs only when `--tag` names this tag.
    pub required_tag: Option<String>,
    /// Why this bogie cannot run the test at all (an external test's metadata key it
    /// cannot honour yet): the test is always skipped with this reason.
    pub unsupported: Option<String>,
}

impl fmt::Debug for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Test")
            .field("name", &self.name)
            .field("cluster_size", &self.cluster_size)
            .field("requires", &self.requires)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl Test {
    /// A test named `name` with body `f`, one machine, no config.
    pub fn new<F, Fut>(name: &str, f: F) -> Test
    where
        F: Fn(TestCluster) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Test {
            name: name.to_string(),
            description: String::new(),
            body: Arc::new(move |c| Box::pin(f(c))),
            cluster_size: 1,
            config: None,
            platforms: Vec::new(),
            exclude_platforms: Vec::new(),
            privileged_qemu_needs: None,
            architectures: Vec::new(),
            exclude_architectures: Vec::new(),
            distros: vec!["cl".to_string()],
            exclude_distros: Vec::new(),
            channels: Vec::new(),
            exclude_channels: Vec::new(),
            offerings: Vec::new(),
            flags: TestFlags::default(),
            min_version: None,
            end_version: None,
            timeout: None,
            tags: Vec::new(),
            requires: Vec::new(),
            non_exclusive: false,
            conflicts: Vec::new(),
            needs_first_boot: false,
            min_memory_mb: None,
            extra_disks: Vec::new(),
            primary_disk_gib: None,
            extra_nics: 0,
            kernel_args: Vec::new(),
            first_boot_kernel_args: Vec::new(),
            default_user: None,
            required_tag: None,
            unsupported: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, d: &str) -> Self {
        self.description = d.to_string();
        self
    }
    /// Sets the number of machines the harness boots.
    pub fn cluster_size(mut self, n: usize) -> Self {
        self.cluster_size = n;
        self
    }
    /// Sets the Ignition config of harness-booted machines.
    pub fn config(mut self, c: Config) -> Self {
        self.config = Some(c);
        self
    }
    /// Platform allow-list; names starting with `!` go to the deny-list.
    pub fn platforms(mut self, list: &[&str]) -> Self {
        for p in list {
            match p.strip_prefix('!') {
                Some(x) => self.exclude_platforms.push(x.to_string()),
                None => self.platforms.push(p.to_string()),
            }
        }
        self
    }
    /// Names what the test needed from kola's privileged `qemu` (host services at fixed
    /// guest addresses, ...) when it excludes `qemu-unpriv`: bogie's QEMU runs it when the
    /// platform provides every one of them, and skips it naming the first missing otherwise.
    /// An empty list: nothing bogie's QEMU lacks (kola's reason was its own).
    pub fn privileged_qemu(mut self, needs: &[&str]) -> Self {
        self.privileged_qemu_needs = Some(needs.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Architecture allow-list.
    pub fn architectures(mut self, list: &[Arch]) -> Self {
        self.architectures = list.to_vec();
        self
    }
    /// Architecture deny-list.
    pub fn exclude_architectures(mut self, list: &[Arch]) -> Self {
        self.exclude_architectures = list.to_vec();
        self
    }
    /// Distro allow-list; `!x` excludes.
    pub fn distros(mut self, list: &[&str]) -> Self {
        self.distros.clear();
        for d in list {
            match d.strip_prefix('!') {
                Some(x) => self.exclude_distros.push(x.to_string()),
                None => self.distros.push(d.to_string()),
            }
        }
        self
    }
    /// Channel allow-list; `!x` excludes.
    pub fn channels(mut self, list: &[&str]) -> Self {
        for d in list {
            match d.strip_prefix('!') {
                Some(x) => self.exclude_channels.push(x.to_string()),
                None => self.channels.push(d.to_string()),
            }
        }
        self
    }
    /// Offering allow-list.
    pub fn offerings(mut self, list: &[&str]) -> Self {
        self.offerings = list.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Sets kola's flags.
    pub fn flags(mut self, f: TestFlags) -> Self {
        self.flags = f;
        self
    }
    /// First version (inclusive).
    pub fn min_version(mut self, v: Version) -> Self {
        self.min_version = Some(v);
        self
    }
    /// End version (exclusive).
    pub fn end_version(mut self, v: Version) -> Self {
        self.end_version = Some(v);
        self
    }
    /// Per-test timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Adds tags.
    pub fn tags(mut self, t: &[&str]) -> Self {
        self.tags.extend(t.iter().map(|s| s.to_string()));
        self
    }
    /// Adds required capabilities.
    pub fn requires(mut self, r: &[&str]) -> Self {
        self.requires.extend(r.iter().map(|s| s.to_string()));
        self
    }
    /// Tests (names or globs) this one must not share a machine or a merged config with.
    pub fn conflicts(mut self, tests: &[&str]) -> Self {
        self.conflicts.extend(tests.iter().map(|s| s.to_string()));
        self
    }
    /// Marks the test as leaving its machine as it found it.
    pub fn non_exclusive(mut self) -> Self {
        self.non_exclusive = true;
        self
    }
    /// Marks the test as needing a true first boot.
    pub fn needs_first_boot(mut self) -> Self {
        self.needs_first_boot = true;
        self
    }
    /// Memory per machine in MiB.
    pub fn min_memory_mb(mut self, mb: u32) -> Self {
        self.min_memory_mb = Some(mb);
        self
    }
    /// Extra empty virtio disks (GiB each).
    pub fn extra_disks(mut self, gib: &[u32]) -> Self {
        self.extra_disks = gib.iter().map(|g| DiskSpec::new(*g)).collect();
        self
    }
    /// Extra disks with their interface, sectors and serial; adds the `extra-disk`
    /// requirement.
    pub fn disks(mut self, disks: &[DiskSpec]) -> Self {
        self.extra_disks = disks.to_vec();
        self.require("extra-disk");
        self
    }
    /// The primary disk's minimum size in GiB; adds the `primary-disk-size` requirement.
    pub fn primary_disk_gib(mut self, gib: u32) -> Self {
        self.primary_disk_gib = Some(gib);
        self.require("primary-disk-size");
        self
    }
    /// Additional user-mode NICs; adds the `extra-nic` requirement.
    pub fn extra_nics(mut self, n: u32) -> Self {
        self.extra_nics = n;
        if n > 0 {
            self.require("extra-nic");
        }
        self
    }
    /// Extra kernel arguments for every boot; adds the `kernel-args` requirement.
    pub fn kernel_args(mut self, args: &[&str]) -> Self {
        self.kernel_args = args.iter().map(|s| s.to_string()).collect();
        self.require("kernel-args");
        self
    }
    /// Extra kernel arguments for the first boot only; adds the `kernel-args` requirement.
    /// Such a machine always boots cold (no snapshot template).
    pub fn first_boot_kernel_args(mut self, args: &[&str]) -> Self {
        self.first_boot_kernel_args = args.iter().map(|s| s.to_string()).collect();
        self.require("kernel-args");
        self
    }
    /// Adds a required capability unless the test already requires it.
    pub(crate) fn require(&mut self, capability: &str) {
        if !self.requires.iter().any(|r| r == capability) {
            self.requires.push(capability.to_string());
        }
    }
    /// The SSH user.
    pub fn default_user(mut self, u: &str) -> Self {
        self.default_user = Some(u.to_string());
        self
    }

    /// Whether the test carries a tag.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_splits_excludes() {
        let t = Test::new("x", |_c| async { Ok(()) })
            .platforms(&["qemu", "!azure"])
            .distros(&["cl", "!fcos"]);
        assert_eq!(t.platforms, vec!["qemu"]);
        assert_eq!(t.exclude_platforms, vec!["azure"]);
        assert_eq!(t.distros, vec!["cl"]);
        assert_eq!(t.exclude_distros, vec!["fcos"]);
    }
}
