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

/// The body of a test.
pub type TestBody =
    Arc<dyn Fn(TestCluster) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// A Flatcar-style version, `MAJOR.MINOR.PATCH` (a `+build` suffix is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major (the Flatcar build number, e.g. 4799).
    pub major: u32,
    /// Minor (channel-specific).
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `4799.0.0`, `4799.0.0+nightly-123`, `3913.0.1`, `4799` or `4799.1`.
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.trim().split(['+', '-']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        let patch = it.next().map(str::parse).transpose().ok()?.unwrap_or(0);
        if it.next().is_some() {
            return None;
        }
        Some(Version::new(major, minor, patch))
    }

    /// Like [`Version::parse`], but returns None for empty strings and strings that are not
    /// versions (a test image's Debian version is still parsed by its numeric prefix).
    pub fn parse_lenient(s: &str) -> Option<Version> {
        if s.is_empty() {
            return None;
        }
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

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
    /// Extra empty disks per machine (GiB each).
    pub extra_disks: Vec<u32>,
    /// Extra kernel arguments for direct kernel boot.
    pub kernel_args: Vec<String>,
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
            kernel_args: Vec::new(),
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
    /// Extra empty disks (GiB each).
    pub fn extra_disks(mut self, gib: &[u32]) -> Self {
        self.extra_disks = gib.to_vec();
        self
    }
    /// Extra kernel arguments.
    pub fn kernel_args(mut self, args: &[&str]) -> Self {
        self.kernel_args = args.iter().map(|s| s.to_string()).collect();
        self
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
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("4799.0.0"), Some(Version::new(4799, 0, 0)));
        assert_eq!(
            Version::parse("3913.0.1+nightly-2024"),
            Some(Version::new(3913, 0, 1))
        );
        assert_eq!(Version::parse("3033"), Some(Version::new(3033, 0, 0)));
        assert_eq!(
            Version::parse("12.5+bogie.abc"),
            Some(Version::new(12, 5, 0))
        );
        assert!(Version::parse("abc").is_none());
        assert!(Version::new(3913, 0, 1) > Version::new(3913, 0, 0));
        assert!(Version::parse_lenient("").is_none());
    }

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
