//! Bring-up, the first phase of a test's life: render a machine's Ignition config (the
//! run's SSH keys added), boot it (cold, or restored from a snapshot template), wait for
//! SSH while the boot watch reads its console, and let systemd settle.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use bogie_reports::SubtestResult;
use tokio_util::sync::CancellationToken;

use crate::bootwatch::{watch, BootFailure};
use crate::env::TestEnv;
use crate::failure::HarnessError;
use crate::ignition::Config;
use crate::machine::{wait_settled, BringUp, MachineStart, TestMachine};
use crate::platform::{Cluster, DiskSpec, Machine, MachineSpec, PlatformError};
use crate::setup::MachineSetup;
use crate::snapshot::{clock_command, template_key, Claim, Templates};
use crate::ssh::{SshKey, SshSession};

/// The phases of a test, for the progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starting machines.
    Booting,
    /// Waiting for SSH logins.
    WaitingForSsh,
    /// Checking the machines are up (`is-system-running`).
    Checking,
    /// The test body is running.
    Running,
    /// Collecting console and journal, running console checks.
    Collecting,
    /// Tearing down.
    Destroying,
}

impl Phase {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Booting => "booting",
            Phase::WaitingForSsh => "waiting for SSH",
            Phase::Checking => "checking",
            Phase::Running => "running",
            Phase::Collecting => "collecting",
            Phase::Destroying => "destroying",
        }
    }
}

/// Shared state of one test attempt.
pub(crate) struct ClusterState {
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) machines: Mutex<Vec<TestMachine>>,
    pub(crate) key: SshKey,
    pub(crate) user: String,
    pub(crate) dir: PathBuf,
    pub(crate) test_name: String,
    pub(crate) log: Mutex<String>,
    pub(crate) subtests: Mutex<Vec<SubtestResult>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) bring_up: BringUp,
    pub(crate) env: TestEnv,
    pub(crate) may_outlive: bool,
    pub(crate) machine_seq: Mutex<usize>,
    pub(crate) phase: Box<dyn Fn(Phase) + Send + Sync>,
    pub(crate) default_memory_mb: Option<u32>,
    pub(crate) extra_disks: Vec<DiskSpec>,
    pub(crate) primary_disk_gib: Option<u32>,
    pub(crate) extra_nics: u32,
    pub(crate) kernel_args: Vec<String>,
    pub(crate) first_boot_kernel_args: Vec<String>,
    pub(crate) tpm: bool,
    pub(crate) no_ssh_key: bool,
    pub(crate) no_ssh_key_in_metadata: bool,
    pub(crate) extra_keys: Vec<String>,
    pub(crate) setup: MachineSetup,
}

pub(crate) fn machine_config(state: &ClusterState, config: Option<Config>) -> Config {
    let mut c = state.setup.config(config);
    if !state.no_ssh_key {
        c.add_ssh_key(&state.user, state.key.public_openssh());
        for k in &state.extra_keys {
            c.add_ssh_key(&state.user, k);
        }
    }
    c
}

pub(crate) fn machine_spec(state: &ClusterState, ignition: String) -> MachineSpec {
    let n = {
        let mut seq = state.machine_seq.lock().expect("poisoned");
        *seq += 1;
        *seq
    };
    let id = format!("m{n}-{:04x}", rand::random::<u16>());
    MachineSpec {
        dir: state.dir.join(&id),
        id,
        ignition,
        memory_mb: state.default_memory_mb,
        cpus: None,
        extra_disks: state.extra_disks.clone(),
        primary_disk_gib: state.primary_disk_gib,
        extra_nics: state.extra_nics,
        kernel_args: state.kernel_args.clone(),
        first_boot_kernel_args: state.first_boot_kernel_args.clone(),
        tpm: state.tpm,
        may_outlive: state.may_outlive,
        no_ssh_key_in_metadata: state.no_ssh_key_in_metadata,
    }
}

/// Boots a machine in the cluster, waits for SSH and for systemd to settle.
pub(crate) async fn boot_machine(
    state: &Arc<ClusterState>,
    config: Option<Config>,
) -> anyhow::Result<TestMachine> {
    boot_machine_with(state, config, None, None).await
}

/// [`boot_machine`], optionally through the run's `templates` (restore from the config's
/// template, or make it once this machine is ready) and with the machine's own files in
/// `<machine_root>/<id>` instead of the test's directory (shared machines).
pub(crate) async fn boot_machine_with(
    state: &Arc<ClusterState>,
    config: Option<Config>,
    templates: Option<&Arc<Templates>>,
    machine_root: Option<&Path>,
) -> anyhow::Result<TestMachine> {
    let (spec, dir) = prepare(state, config, machine_root)?;
    let claim = match templates {
        Some(t) => t.claim(&template_key(&spec)).await,
        None => Claim::Cold,
    };
    (state.phase)(Phase::Booting);
    let began = std::time::Instant::now();
    let (machine, restored) = start(state, spec, &claim).await?;
    let tm = TestMachine {
        inner: machine.clone(),
        session: Arc::new(tokio::sync::Mutex::new(None)),
        key: state.key.clone(),
        user: state.user.clone(),
        dir,
        bring_up: state.bring_up,
        cancel: state.cancel.clone(),
        enable_selinux: state.setup.enable_selinux,
        start: Arc::new(std::sync::Mutex::new(MachineStart {
            kind: if restored { "snapshot" } else { "cold" },
            ..MachineStart::default()
        })),
    };
    // Register before waiting, so a failed bring-up is still torn down and collected.
    state.machines.lock().expect("poisoned").push(tm.clone());
    if state.no_ssh_key {
        return Ok(tm);
    }
    (state.phase)(Phase::WaitingForSsh);
    let (session, by) = wait_for_ssh(state, &machine).await?;
    {
        let mut start = tm.start.lock().expect("poisoned");
        start.ready_after = Some(began.elapsed());
        start.ready_by = Some(by);
    }
    *tm.session.lock().await = Some(Arc::new(session));
    if restored {
        note_restored(state, &tm).await;
    }
    (state.phase)(Phase::Checking);
    wait_settled(&tm, state.bring_up.settle_timeout).await?;
    tm.after_boot().await?;
    if let Claim::Build(b) = claim {
        if let Err(e) = b.finish(machine.as_ref()).await {
            tracing::warn!(machine = tm.id(), error = %e, "could not make a template; its config boots cold");
        }
    }
    Ok(tm)
}

/// The machine's spec with its rendered config, written as `ignition.json` into the test's
/// directory for the machine (returned) and, for a shared machine, its own directory
/// under `machine_root`.
fn prepare(
    state: &ClusterState,
    config: Option<Config>,
    machine_root: Option<&Path>,
) -> anyhow::Result<(MachineSpec, PathBuf)> {
    let config = machine_config(state, config);
    let rendered = config.render_pretty();
    let mut spec = machine_spec(state, rendered);
    let dir = spec.dir.clone();
    if let Some(root) = machine_root {
        spec.dir = root.join(&spec.id);
    }
    for d in [&dir, &spec.dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        std::fs::write(d.join("ignition.json"), &spec.ignition)
            .with_context(|| format!("writing {}/ignition.json", d.display()))?;
    }
    Ok((spec, dir))
}

/// Starts the machine: restored from its template when the claim says so (a failed
/// restore falls back to the one cold-boot path), else booted cold. Says whether it was
/// restored.
async fn start(
    state: &ClusterState,
    spec: MachineSpec,
    claim: &Claim,
) -> anyhow::Result<(Arc<dyn Machine>, bool)> {
    if let Claim::Restore(t) = claim {
        match state.cluster.restore_machine(spec.clone(), t).await {
            Ok(m) => return Ok((m, true)),
            Err(e) => {
                tracing::warn!(machine = %spec.id, error = %e, "restore failed; booting cold");
            }
        }
    }
    let platform_error = |e: PlatformError| anyhow!(HarnessError(format!("platform error: {e}")));
    let m = state
        .cluster
        .new_machine(spec)
        .await
        .map_err(platform_error)?;
    Ok((m, false))
}

/// Waits for the first SSH login: an SSH attempt once a second and, where the platform has
/// a readiness channel ([`Machine::ready_file`]), a fresh attempt the moment the guest says
/// it is ready (an attempt in flight may be waiting out a connection the guest never saw).
/// Says which of the two got in (`signal` or `ssh`). The console and the emulator's log are
/// watched beside the wait where the platform allows: a panic, an emergency shell, an
/// emulator error or a silent console ends it at once with a classed [`BootFailure`].
async fn wait_for_ssh(
    state: &ClusterState,
    machine: &Arc<dyn Machine>,
) -> anyhow::Result<(SshSession, &'static str)> {
    let m2 = machine.clone();
    let polling = SshSession::wait_ready(
        machine.ssh_addr(),
        &state.user,
        &state.key,
        state.bring_up.ssh_timeout,
        state.bring_up.ssh_attempt_timeout,
        &state.cancel,
        move || {
            let m = m2.clone();
            async move { m.is_running().await }
        },
    );
    let wait = async {
        let Some(file) = machine.ready_file() else {
            return polling.await.map(|s| (s, "ssh"));
        };
        tokio::pin!(polling);
        tokio::select! {
            r = &mut polling => r.map(|s| (s, "ssh")),
            () = ready_line(&file) => {
                let attempt = SshSession::connect(
                    machine.ssh_addr(),
                    &state.user,
                    &state.key,
                    state.bring_up.ssh_attempt_timeout,
                )
                .await;
                match attempt {
                    Ok(s) => Ok((s, "signal")),
                    Err(e) => {
                        tracing::debug!(machine = machine.id(), error = %e, "ready, but SSH failed; trying on");
                        polling.await.map(|s| (s, "ssh"))
                    }
                }
            }
        }
    };
    let never_ready = |e| anyhow!(HarnessError(format!("machine {} {e}", machine.id())));
    match state.bring_up.boot_watch {
        Some(limits) => tokio::select! {
            r = wait => r.map_err(never_ready),
            f = watch(machine.clone(), limits) => {
                let message = format!("machine {} {}", machine.id(), f.message);
                Err(anyhow!(BootFailure { message, ..f }))
            }
        },
        None => wait.await.map_err(never_ready),
    }
}

/// Returns once `file` holds a line starting with `ready` (the guest's readiness line; a
/// local file the emulator writes, looked at ten times a second). Never returns otherwise.
async fn ready_line(file: &Path) {
    loop {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            if text.lines().any(|l| l.starts_with("ready")) {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A restored machine gets the host's clock (the guest's stands where the template's
/// stood when it was frozen), and the test's output says it started from a snapshot.
async fn note_restored(state: &ClusterState, tm: &TestMachine) {
    if let Err(e) = tm.must_ssh(&clock_command()).await {
        tracing::warn!(machine = tm.id(), error = %e, "setting the clock of a restored machine");
    }
    state.log(format!("machine {} started from a snapshot", tm.id()));
}

impl ClusterState {
    /// Appends a line to the test's output (kept in every report).
    pub(crate) fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        tracing::info!(test = %self.test_name, "{line}");
        let mut l = self.log.lock().expect("poisoned");
        l.push_str(line);
        l.push('\n');
    }
}
