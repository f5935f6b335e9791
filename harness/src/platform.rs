//! The `Platform` → `Cluster` → `Machine` traits every platform implements.
//!
//! A platform boots machines and tears them down; it knows nothing of tests. The harness
//! renders each machine's Ignition config, waits for SSH and runs the test.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::arch::Arch;
use crate::image::ImageInfo;

/// Errors a platform reports. The harness classes all of them as harness failures.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The user's input is wrong (bad image, wrong arch, missing firmware, unknown flag):
    /// reported as one line with exit code 2, before any test runs.
    #[error("{0}")]
    Input(String),
    /// Starting or talking to a machine failed.
    #[error("{0}")]
    Machine(String),
    /// A cloud/provider API call failed.
    #[error("{service} API error: {message}")]
    Api {
        /// Which service (`ec2`, `arm`, ...).
        service: String,
        /// The error, with credentials removed.
        message: String,
    },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl PlatformError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PlatformError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What the harness asks of a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// A name unique in the run (the test name, plus the attempt for reruns).
    pub name: String,
    /// The directory for this cluster's artifacts (`<out>/<test>`).
    pub dir: PathBuf,
}

/// What the harness asks of a new machine.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// The machine's id (unique in the run; also its artifact directory name).
    pub id: String,
    /// The directory for this machine's artifacts (`<out>/<test>/<machine>`), already created.
    pub dir: PathBuf,
    /// The rendered Ignition config (JSON), already written to `dir/ignition.json`.
    pub ignition: String,
    /// Memory in MiB (platform default when None).
    pub memory_mb: Option<u32>,
    /// vCPUs (platform default when None).
    pub cpus: Option<u32>,
    /// Additional empty disks, sizes in GiB.
    pub extra_disks: Vec<u32>,
    /// Extra kernel arguments (direct kernel boot only).
    pub kernel_args: Vec<String>,
    /// A TPM 2.0 device (platforms that provide the `tpm` capability).
    pub tpm: bool,
    /// The machine may be kept after bogie exits (`--remove=false`, `--keep-failed`,
    /// `spawn --detach`): the platform must not tie its life to bogie's process.
    pub may_outlive: bool,
}

/// A frozen, ready machine further machines start from instead of booting (see
/// [`Platform::supports_snapshots`]). Made by [`Machine::make_template`], used by
/// [`Cluster::restore_machine`]; its files live in `dir`, which the harness removes at the
/// end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Unique in the run (also the last component of `dir`).
    pub id: String,
    /// The directory holding the template's files (platform-specific content).
    pub dir: PathBuf,
}

fn no_snapshots() -> PlatformError {
    PlatformError::Machine("this platform does not support snapshots".into())
}

/// A booted (or booting) machine.
#[async_trait]
pub trait Machine: Send + Sync {
    /// The machine's id.
    fn id(&self) -> &str;
    /// Where its sshd is reachable from the host.
    fn ssh_addr(&self) -> SocketAddr;
    /// Its address on the cluster's private network, when it has one.
    fn private_ip(&self) -> Option<IpAddr>;
    /// The console log so far.
    async fn console_output(&self) -> Result<String, PlatformError>;
    /// Whether the machine is still running (e.g. the QEMU process is alive).
    async fn is_running(&self) -> bool;
    /// The platform's own log of the machine so far (QEMU's stderr), read while it boots
    /// for the emulator's errors. Empty where the platform has none.
    async fn platform_log(&self) -> String {
        String::new()
    }
    /// Tears the machine down. Idempotent.
    async fn destroy(&self) -> Result<(), PlatformError>;
    /// Keeps the machine beyond this run: disarms teardown and returns a JSON description
    /// (written to `<machine dir>/kept.json`) that `bogie down` reads to tear it down later.
    async fn keep(&self) -> Result<serde_json::Value, PlatformError>;
    /// Freezes this ready machine into a template under `dir` (created by the platform),
    /// from which [`Cluster::restore_machine`] starts copies. The machine itself keeps
    /// running afterwards, unchanged for its test. Platforms without snapshots refuse.
    async fn make_template(&self, dir: &Path) -> Result<Template, PlatformError> {
        let _ = dir;
        Err(no_snapshots())
    }
}

/// A group of machines that belong to one test attempt.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Boots one more machine in the cluster. It returns once the machine is started;
    /// the harness waits for SSH.
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError>;
    /// Starts a machine from `template` instead of booting it: its own disk (a copy-on-write
    /// layer over the template's), its own SSH port and console, the template's memory.
    /// `spec.ignition` must be the config the template booted with (it is recorded, not
    /// applied again). It returns once the machine runs; the harness waits for SSH.
    async fn restore_machine(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<dyn Machine>, PlatformError> {
        let _ = (spec, template);
        Err(no_snapshots())
    }
    /// Tears down every machine of the cluster (and any cluster-wide resources). Idempotent.
    async fn destroy(&self) -> Result<(), PlatformError>;
}

/// A place machines boot: QEMU, a cloud, bare metal.
#[async_trait]
pub trait Platform: Send + Sync {
    /// kola's platform name (`qemu`, `aws`, ...).
    fn name(&self) -> &str;
    /// The architecture machines boot as.
    fn arch(&self) -> Arch;
    /// The image under test.
    fn image(&self) -> &ImageInfo;
    /// Capabilities the platform itself offers to tests (e.g. `extra-disk`, `tpm`,
    /// `private-network`, `fw-cfg`), beyond what the image provides.
    fn capabilities(&self) -> BTreeSet<String>;
    /// Creates a cluster.
    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError>;
    /// Whether machines can be frozen into templates and restored from them
    /// ([`Machine::make_template`], [`Cluster::restore_machine`]).
    fn supports_snapshots(&self) -> bool {
        false
    }
    /// Whether machines' consoles are live while they boot, and how long they may stay
    /// silent ([`crate::bootwatch`]); `None` (the default) where the console is not read
    /// while booting (clouds), so silence means nothing.
    fn boot_watch(&self) -> Option<crate::bootwatch::WatchLimits> {
        None
    }
    /// Releases run-wide resources (keys, security groups, ...). Called once at the end.
    async fn shutdown(&self) -> Result<(), PlatformError> {
        Ok(())
    }
}
