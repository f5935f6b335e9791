//! Machines without a test: `bogie spawn` boots N machines with a config, waits for SSH
//! and for systemd to settle, and then keeps them, hands them to an interactive shell, or
//! tears them down.
//!
//! The machines go through the same bring-up as a test's ([`TestCluster::new_machine`]),
//! so what works in a test works here, and the other way round.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::bringup::{ClusterState, Phase};
use crate::cluster::TestCluster;
use crate::env::TestEnv;
use crate::failure::UnitFailure;
use crate::ignition::Config;
use crate::machine::{BringUp, TestMachine};
use crate::platform::{Cluster, ClusterSpec, DiskSpec, Platform};
use crate::setup::{IgnitionVersion, MachineSetup};
use crate::ssh::SshKey;

/// The name of the cluster (and its directory under the run directory) of spawned machines.
pub const SPAWN_DIR: &str = "spawn";

/// What to boot.
#[derive(Clone)]
pub struct SpawnOptions {
    /// The platform.
    pub platform: Arc<dyn Platform>,
    /// The run's key (authorized for the machines' user).
    pub key: SshKey,
    /// More public keys to authorize (`--key`).
    pub extra_keys: Vec<String>,
    /// The run directory; machines live in `<out_dir>/spawn/<machine>`.
    pub out_dir: PathBuf,
    /// Facts about the run (platform, arch, image).
    pub env: TestEnv,
    /// How many machines.
    pub count: usize,
    /// Their Ignition config (the run's key is added to it).
    pub config: Option<Config>,
    /// Bring-up timeouts.
    pub bring_up: BringUp,
    /// Memory per machine (platform default when None).
    pub memory_mb: Option<u32>,
    /// The machines' shape, as a test's would be: extra disks, primary disk size, extra
    /// NICs, kernel arguments, TPM (the fields of [`crate::platform::MachineSpec`] of the
    /// same names).
    pub shape: MachineShape,
    /// Whether the machines may outlive bogie (`--detach`, `--remove=false`); only such
    /// machines can be kept.
    pub may_outlive: bool,
    /// Cancels the bring-up (Ctrl-C).
    pub cancel: CancellationToken,
}

/// What a spawned machine has beyond the platform's defaults (`bogie spawn --disk`,
/// `--primary-disk`, `--nics`, `--kernel-arg`, `--first-boot-kernel-arg`, `--tpm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineShape {
    /// Extra disks.
    pub extra_disks: Vec<DiskSpec>,
    /// The primary disk's minimum size in GiB.
    pub primary_disk_gib: Option<u32>,
    /// Additional user-mode NICs.
    pub extra_nics: u32,
    /// Kernel arguments for every boot.
    pub kernel_args: Vec<String>,
    /// Kernel arguments for the first boot only.
    pub first_boot_kernel_args: Vec<String>,
    /// A TPM 2.0.
    pub tpm: bool,
}

impl MachineShape {
    /// The capabilities a platform must provide for this shape (what a test with these
    /// needs would require), for refusing a spawn the platform cannot honour.
    pub fn requires(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if !self.extra_disks.is_empty() {
            r.push("extra-disk");
        }
        if self.extra_disks.iter().any(|d| d.multipath) {
            r.push("multipath");
        }
        if self.primary_disk_gib.is_some() {
            r.push("primary-disk-size");
        }
        if self.extra_nics > 0 {
            r.push("extra-nic");
        }
        if !self.kernel_args.is_empty() || !self.first_boot_kernel_args.is_empty() {
            r.push("kernel-args");
        }
        if self.tpm {
            r.push("tpm");
        }
        r
    }
}

/// A machine that was kept running: where to reach it and how it is torn down.
#[derive(Debug, Clone)]
pub struct KeptMachine {
    /// The machine's id.
    pub id: String,
    /// A pasteable `ssh` command line.
    pub ssh: String,
    /// The description `bogie down` reads (`<machine dir>/kept.json`).
    pub kept_json: PathBuf,
}

/// Spawned machines. Dropping this without [`Spawned::destroy`] or [`Spawned::keep`] kills
/// machines that may not outlive bogie (the platform's own safety net).
pub struct Spawned {
    cluster: Arc<dyn Cluster>,
    tc: TestCluster,
    /// One line per machine that came up with problems but is usable (e.g. degraded:
    /// failed units), for the user to look at.
    pub warnings: Vec<String>,
    /// One line per machine that did not come up (no SSH, QEMU died, interrupted).
    pub failures: Vec<String>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("machines", &self.tc.machines())
            .field("warnings", &self.warnings)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Boots `opts.count` machines in parallel and waits until each accepts SSH and systemd has
/// settled. A machine that settles `degraded` is usable: it is reported in
/// [`Spawned::warnings`]. Machines that did not come up are in [`Spawned::failures`]; they
/// still belong to the result, so the caller decides whether to keep or destroy them.
/// `phase` sees the machines' bring-up phases as they happen.
pub async fn spawn_machines(
    opts: SpawnOptions,
    phase: impl Fn(Phase) + Send + Sync + 'static,
) -> anyhow::Result<Spawned> {
    let dir = opts.out_dir.join(SPAWN_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster: Arc<dyn Cluster> = Arc::from(
        opts.platform
            .new_cluster(ClusterSpec {
                name: SPAWN_DIR.to_string(),
                dir: dir.clone(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("platform error: {e}"))?,
    );
    let user = opts
        .env
        .image
        .manifest
        .as_ref()
        .map(|m| m.default_user.clone())
        .unwrap_or_else(|| "core".into());
    let state = Arc::new(ClusterState {
        cluster: cluster.clone(),
        machines: Mutex::new(Vec::new()),
        key: opts.key.clone(),
        user,
        dir,
        test_name: SPAWN_DIR.to_string(),
        log: Mutex::new(String::new()),
        subtests: Mutex::new(Vec::new()),
        cancel: opts.cancel.clone(),
        bring_up: BringUp {
            boot_watch: opts
                .bring_up
                .boot_watch
                .or_else(|| opts.platform.boot_watch()),
            ..opts.bring_up
        },
        env: opts.env.clone(),
        may_outlive: opts.may_outlive,
        machine_seq: Mutex::new(0),
        phase: Box::new(phase),
        default_memory_mb: opts.memory_mb,
        extra_disks: opts.shape.extra_disks.clone(),
        primary_disk_gib: opts.shape.primary_disk_gib,
        extra_nics: opts.shape.extra_nics,
        kernel_args: opts.shape.kernel_args.clone(),
        first_boot_kernel_args: opts.shape.first_boot_kernel_args.clone(),
        tpm: opts.shape.tpm,
        no_ssh_key: false,
        no_ssh_key_in_metadata: false,
        extra_keys: opts.extra_keys.clone(),
        setup: spawn_setup(&opts.env),
    });
    let tc = TestCluster { state };
    let boots = (0..opts.count.max(1)).map(|_| tc.new_machine(opts.config.clone()));
    let results = futures::future::join_all(boots).await;
    let mut warnings = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        if let Err(e) = r {
            let line = format!("{e:#}");
            let first = line.lines().next().unwrap_or("").to_string();
            if e.downcast_ref::<UnitFailure>().is_some() {
                warnings.push(first);
            } else {
                failures.push(first);
            }
        }
    }
    Ok(Spawned {
        cluster,
        tc,
        warnings,
        failures,
    })
}

impl Spawned {
    /// The machines, in boot order.
    pub fn machines(&self) -> Vec<TestMachine> {
        self.tc.machines()
    }

    /// The cluster as a test would see it (for running commands on the machines).
    pub fn cluster(&self) -> &TestCluster {
        &self.tc
    }

    /// Keeps every machine running beyond bogie: closes bogie's SSH sessions, writes each
    /// machine's `kept.json` (what `bogie down` reads) and returns how to reach them.
    /// Machines the platform refused to keep are listed with the reason.
    pub async fn keep(&self, key_path: &Path) -> (Vec<KeptMachine>, Vec<String>) {
        let mut kept = Vec::new();
        let mut errors = Vec::new();
        for m in self.machines() {
            if let Some(s) = m.session.lock().await.take() {
                s.close().await;
            }
            match m.platform_machine().keep().await {
                Ok(desc) => {
                    let path = m.dir().join("kept.json");
                    let body = serde_json::to_vec_pretty(&desc).unwrap_or_default();
                    match std::fs::write(&path, body) {
                        Ok(()) => kept.push(KeptMachine {
                            id: m.id().to_string(),
                            ssh: m.ssh_command_line(key_path),
                            kept_json: path,
                        }),
                        Err(e) => {
                            errors.push(format!("{}: writing {}: {e}", m.id(), path.display()));
                            let _ = m.platform_machine().destroy().await;
                        }
                    }
                }
                Err(e) => errors.push(format!("{}: {e}", m.id())),
            }
        }
        (kept, errors)
    }

    /// Tears every machine down (closes SSH sessions first). Idempotent.
    pub async fn destroy(&self) -> anyhow::Result<()> {
        for m in self.machines() {
            if let Some(s) = m.session.lock().await.take() {
                s.close().await;
            }
        }
        match tokio::time::timeout(Duration::from_secs(120), self.cluster.destroy()).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("tearing machines down: {e}")),
            Err(_) => anyhow::bail!("tearing machines down took longer than 120s"),
        }
    }
}

/// kola's spawn sets machines up as its tests' (updates off, SELinux enforcing), with the
/// image's default config spec.
fn spawn_setup(env: &crate::env::TestEnv) -> MachineSetup {
    MachineSetup::for_test(
        false,
        false,
        IgnitionVersion::default_for(env.provides.contains("flatcar"), env.version.as_ref()),
        &env.provides,
    )
}
