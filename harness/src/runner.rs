//! Running one attempt of one test: bring machines up, run the body under its timeout,
//! collect console and journal, run the console checks, tear down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bogie_reports::{Attempt, Failure, FailureClass, MachineArtifacts};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::checks::{scan, ScanOptions};
use crate::cluster::{BringUp, ClusterState, Phase, Skip, TestCluster, TestEnv, TestMachine};
use crate::ignition::Config;
use crate::platform::{Cluster, ClusterSpec, MachineSpec, Platform, PlatformError};
use crate::sharing::{Lease, SHARED_DIR};
use crate::snapshot::{BootStats, Claim, CountingCluster, Templates};
use crate::ssh::{SshKey, SshSession};
use crate::test::Test;

/// How an attempt ended, before it becomes a report [`Attempt`].
#[derive(Debug)]
pub struct AttemptOutcome {
    /// The report record.
    pub attempt: Attempt,
    /// The test skipped itself at run time (reason).
    pub skipped: Option<String>,
    /// Machines kept alive (their ssh lines are in the attempt's artifacts).
    pub kept: usize,
}

/// Which machines outlive their test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepPolicy {
    /// Tear every machine down (`--remove`, the default).
    #[default]
    None,
    /// Keep machines of failed tests (`--keep-failed`).
    Failed,
    /// Keep every machine (`--remove=false`).
    All,
}

/// Everything an attempt needs from the run.
#[derive(Clone)]
pub struct AttemptContext {
    /// The platform.
    pub platform: Arc<dyn Platform>,
    /// The run's key.
    pub key: SshKey,
    /// Where the key is written (for ssh lines of kept machines).
    pub key_path: PathBuf,
    /// The run's output directory.
    pub out_dir: PathBuf,
    /// Facts for tests.
    pub env: TestEnv,
    /// Default timeout per test.
    pub default_timeout: Duration,
    /// Bring-up timeouts.
    pub bring_up: BringUp,
    /// Keep policy.
    pub keep: KeepPolicy,
    /// `--disable-selinux-avc-checks`.
    pub no_avc_checks: bool,
    /// Memory per machine (platform default when None).
    pub memory_mb: Option<u32>,
    /// The run's cancellation (Ctrl-C).
    pub cancel: CancellationToken,
    /// More public keys to authorize on every machine (`--key`), so people can log in
    /// with their own keys.
    pub extra_keys: Vec<String>,
}

/// Makes a test name safe as a directory name.
pub fn dir_name(test: &str) -> String {
    test.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(crate) fn machine_config(state: &ClusterState, config: Option<Config>) -> Config {
    let mut c = config.unwrap_or_default();
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
        kernel_args: state.kernel_args.clone(),
        tpm: state.tpm,
        may_outlive: state.may_outlive,
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
    let claim = match templates {
        Some(t) => t.claim(&crate::snapshot::template_key(&spec)).await,
        None => Claim::Cold,
    };
    (state.phase)(Phase::Booting);
    let platform_error = |e: PlatformError| anyhow!(HarnessError(format!("platform error: {e}")));
    // A failed restore falls back to the one cold-boot path below.
    let from_snapshot = match &claim {
        Claim::Restore(t) => match state.cluster.restore_machine(spec.clone(), t).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(machine = %spec.id, error = %e, "restore failed; booting cold");
                None
            }
        },
        _ => None,
    };
    let (machine, restored) = match from_snapshot {
        Some(m) => (m, true),
        None => {
            let m = state
                .cluster
                .new_machine(spec)
                .await
                .map_err(platform_error)?;
            (m, false)
        }
    };
    let tm = TestMachine {
        inner: machine.clone(),
        session: Arc::new(tokio::sync::Mutex::new(None)),
        key: state.key.clone(),
        user: state.user.clone(),
        dir,
        bring_up: state.bring_up,
        cancel: state.cancel.clone(),
    };
    // Register before waiting, so a failed bring-up is still torn down and collected.
    state.machines.lock().expect("poisoned").push(tm.clone());
    if state.no_ssh_key {
        return Ok(tm);
    }
    (state.phase)(Phase::WaitingForSsh);
    let m2 = machine.clone();
    let wait = SshSession::wait_ready(
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
    let never_ready = |e| anyhow!(HarnessError(format!("machine {} {e}", machine.id())));
    // The console and the emulator's log are watched beside the SSH wait: a panic, an
    // emergency shell, an emulator error or a silent console ends it at once.
    let session = match state.bring_up.boot_watch {
        Some(limits) => tokio::select! {
            r = wait => r.map_err(never_ready)?,
            f = crate::bootwatch::watch(machine.clone(), limits) => {
                let message = format!("machine {} {}", machine.id(), f.message);
                return Err(anyhow!(crate::bootwatch::BootFailure { message, ..f }));
            }
        },
        None => wait.await.map_err(never_ready)?,
    };
    *tm.session.lock().await = Some(Arc::new(session));
    if restored {
        // The guest's clock stands where the template's stood when it was frozen.
        if let Err(e) = tm.must_ssh(&crate::snapshot::clock_command()).await {
            tracing::warn!(machine = tm.id(), error = %e, "setting the clock of a restored machine");
        }
        let line = format!("machine {} started from a snapshot", tm.id());
        let mut log = state.log.lock().expect("poisoned");
        log.push_str(&line);
        log.push('\n');
    }
    (state.phase)(Phase::Checking);
    wait_settled(&tm, state.bring_up.settle_timeout).await?;
    if let Claim::Build(b) = claim {
        if let Err(e) = b.finish(machine.as_ref()).await {
            tracing::warn!(machine = tm.id(), error = %e, "could not make a template; its config boots cold");
        }
    }
    Ok(tm)
}

/// A problem of the harness or platform rather than of the image (class `harness`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(pub String);

/// A unit failed during bring-up (class `systemd`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnitFailure(pub String);

/// Waits until `systemctl is-system-running` says `running` (or `degraded`, which fails
/// with the failed units and their status).
pub(crate) async fn wait_settled(m: &TestMachine, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let state = match m.ssh("systemctl is-system-running").await {
            Ok(o) => o.stdout_str(),
            Err(e) => format!("ssh error: {e}"),
        };
        match state.as_str() {
            "running" => return Ok(()),
            "degraded" => {
                let units = m
                    .ssh("systemctl --failed --no-legend --plain | awk '{print $1}'")
                    .await
                    .map(|o| o.stdout_str())
                    .unwrap_or_default();
                let units: Vec<&str> = units.split_whitespace().collect();
                let mut detail = String::new();
                for u in &units {
                    if let Ok(o) = m
                        .ssh(&format!(
                            "systemctl status --no-pager --full -n 20 {}",
                            crate::cluster::shell_quote(u)
                        ))
                        .await
                    {
                        detail.push_str(&o.stdout_str());
                        detail.push('\n');
                    }
                }
                bail!(UnitFailure(format!(
                    "machine {} is degraded: failed units: {}\n{}",
                    m.id(),
                    units.join(" "),
                    detail.trim_end()
                )));
            }
            _ => {
                if start.elapsed() > timeout {
                    bail!(HarnessError(format!(
                        "machine {} did not settle within {}s (is-system-running: {state})",
                        m.id(),
                        timeout.as_secs()
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs one attempt of `test`. Never panics outward; every machine is torn down (or kept
/// per policy) before it returns.
pub async fn run_attempt(
    ctx: &AttemptContext,
    test: &Test,
    number: u32,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
) -> AttemptOutcome {
    run_attempt_with(ctx, test, number, phase, AttemptExtras::default())
        .await
        .0
}

/// What an attempt may use beyond the test itself: the run's snapshot templates and a
/// machine shared with the other tests of its unit (see [`crate::snapshot`] and
/// [`crate::sharing`]).
#[derive(Debug, Default)]
pub struct AttemptExtras {
    /// The run's templates: the test's one machine starts from its config's template (or
    /// becomes it). Ignored for tests that cannot use one.
    pub templates: Option<Arc<Templates>>,
    /// A ready machine the previous test of the unit handed over: the test runs on it
    /// instead of booting one.
    pub lease: Option<Lease>,
    /// More tests of the unit follow: when this attempt passes (or skips) and its machine
    /// is still healthy, the machine is handed over instead of torn down.
    pub reuse: bool,
    /// Counts of machines started and reused.
    pub stats: Option<Arc<BootStats>>,
}

/// Whether `test`'s machine may start from (or become) a snapshot template.
pub fn can_use_template(test: &Test) -> bool {
    test.cluster_size == 1
        && !test.needs_first_boot
        && test.extra_disks.is_empty()
        && !test.flags.no_ssh_key_in_user_data
        // A template would not carry the TPM's state: machines with one always boot cold.
        && !needs_tpm(test)
}

/// Whether the test's machines get a TPM (it requires the `tpm` capability).
pub fn needs_tpm(test: &Test) -> bool {
    test.requires.iter().any(|r| r == "tpm")
}

/// Where the console and journal of a shared machine's current test begin.
struct SliceFrom {
    console_offset: usize,
    journal_cursor: Option<String>,
}

/// Runs one attempt of `test` with [`AttemptExtras`]; returns the outcome and, when the
/// machine is handed over, the lease for the next test of the unit.
pub async fn run_attempt_with(
    ctx: &AttemptContext,
    test: &Test,
    number: u32,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
    extras: AttemptExtras,
) -> (AttemptOutcome, Option<Lease>) {
    let AttemptExtras {
        templates,
        lease,
        reuse,
        stats,
    } = extras;
    let reuse = reuse && ctx.keep != KeepPolicy::All && test.cluster_size == 1;
    let templates =
        templates.filter(|_| can_use_template(test) && ctx.platform.supports_snapshots());
    let started = Utc::now();
    let t0 = Instant::now();
    let mut dir = ctx.out_dir.join(dir_name(&test.name));
    if number > 1 {
        dir = dir.join(format!("attempt-{number}"));
    }
    let cancel = ctx.cancel.child_token();
    let may_outlive = ctx.keep != KeepPolicy::None;
    let user = test.default_user.clone().unwrap_or_else(|| {
        ctx.env
            .image
            .manifest
            .as_ref()
            .map(|m| m.default_user.clone())
            .unwrap_or_else(|| "core".into())
    });

    let mut failure: Option<Failure> = None;
    let mut skipped = None;
    let cluster = match std::fs::create_dir_all(&dir) {
        Err(e) => Err(PlatformError::io(format!("creating {}", dir.display()), e)),
        Ok(()) => match &lease {
            Some(l) => Ok(l.cluster.clone()),
            None => ctx
                .platform
                .new_cluster(ClusterSpec {
                    name: format!("{}-{number}", dir_name(&test.name)),
                    dir: dir.clone(),
                })
                .await
                .map(|c| {
                    let c: Arc<dyn Cluster> = Arc::from(c);
                    match &stats {
                        Some(s) => Arc::new(CountingCluster {
                            inner: c,
                            stats: s.clone(),
                        }),
                        None => c,
                    }
                }),
        },
    };
    let cluster: Arc<dyn Cluster> = match cluster {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("platform error: {e}");
            return AttemptOutcome {
                attempt: Attempt {
                    number,
                    passed: false,
                    started,
                    duration: t0.elapsed(),
                    failure: Some(make_failure(FailureClass::Harness, &msg, "")),
                    output: String::new(),
                    machines: Vec::new(),
                    subtests: Vec::new(),
                },
                skipped: None,
                kept: 0,
            }
            .with_lease(None);
        }
    };
    let state = Arc::new(ClusterState {
        cluster: cluster.clone(),
        machines: Mutex::new(Vec::new()),
        key: ctx.key.clone(),
        user,
        dir: dir.clone(),
        test_name: test.name.clone(),
        log: Mutex::new(String::new()),
        subtests: Mutex::new(Vec::new()),
        cancel: cancel.clone(),
        bring_up: ctx.bring_up.for_attempt(
            ctx.platform.as_ref(),
            test.timeout.unwrap_or(ctx.default_timeout),
        ),
        env: ctx.env.clone(),
        may_outlive,
        machine_seq: Mutex::new(0),
        phase,
        default_memory_mb: test.min_memory_mb.or(ctx.memory_mb),
        extra_disks: test.extra_disks.clone(),
        kernel_args: test.kernel_args.clone(),
        tpm: needs_tpm(test),
        no_ssh_key: test.flags.no_ssh_key_in_user_data,
        extra_keys: ctx.extra_keys.clone(),
    });
    let tc = TestCluster {
        state: state.clone(),
    };

    // A shared machine's own files live apart from its tests' artifacts; each test's
    // console and journal are the part written while it ran.
    let shared_root = (reuse && lease.is_none()).then(|| ctx.out_dir.join(SHARED_DIR));
    let mut slice_from = None;
    let mut machine_dir = None;
    let mut lease_ignition = None;
    if let Some(l) = lease {
        let mut m = l.machine.clone();
        m.dir = dir.join(m.id());
        m.cancel = cancel.clone();
        let copied = std::fs::create_dir_all(&m.dir)
            .and_then(|()| std::fs::write(m.dir.join("ignition.json"), &l.ignition));
        if let Err(e) = copied {
            tracing::warn!(machine = m.id(), error = %e, "writing the shared machine's artifacts");
        }
        state.machines.lock().expect("poisoned").push(m);
        if let Some(s) = &stats {
            s.add_reused();
        }
        slice_from = Some(SliceFrom {
            console_offset: l.console_offset,
            journal_cursor: l.journal_cursor.clone(),
        });
        machine_dir = Some(l.machine_dir.clone());
        lease_ignition = Some(l.ignition.clone());
        tc.log(format!(
            "running on shared machine {} (its files are in {})",
            l.machine.id(),
            l.machine_dir.display()
        ));
    } else if shared_root.is_some() {
        slice_from = Some(SliceFrom {
            console_offset: 0,
            journal_cursor: None,
        });
    }
    let adopted = slice_from.is_some() && shared_root.is_none();

    let timeout = test.timeout.unwrap_or(ctx.default_timeout);
    let body = async {
        if adopted {
            // The machine was handed over, ready.
        } else if test.cluster_size == 1 && (templates.is_some() || shared_root.is_some()) {
            boot_machine_with(
                &state,
                test.config.clone(),
                templates.as_ref(),
                shared_root.as_deref(),
            )
            .await?;
        } else if test.cluster_size > 0 {
            tc.new_machines(test.cluster_size, test.config.clone())
                .await?;
        }
        (state.phase)(Phase::Running);
        (test.body)(tc.clone()).await?;
        let failed = tc.failed_subtests();
        if !failed.is_empty() {
            bail!("failed subtests: {}", failed.join(", "));
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, body) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow!(TimedOut(timeout))),
        },
        _ = ctx.cancel.cancelled() => Err(anyhow!(HarnessError("interrupted".into()))),
    };
    let result = match result {
        // A body that failed because the run was interrupted (its subtests or commands
        // cancelled) was interrupted, whatever error it returned.
        Err(_) if ctx.cancel.is_cancelled() => Err(anyhow!(HarnessError("interrupted".into()))),
        Err(e) if e.downcast_ref::<Skip>().is_none() => Err(name_stopped_machine(&tc, e).await),
        r => r,
    };
    if let Err(e) = result {
        if let Some(s) = e.downcast_ref::<Skip>() {
            skipped = Some(s.0.clone());
        } else {
            let class = if let Some(b) = e.downcast_ref::<crate::bootwatch::BootFailure>() {
                b.class
            } else if e.downcast_ref::<TimedOut>().is_some() {
                FailureClass::Timeout
            } else if e.downcast_ref::<HarnessError>().is_some() {
                FailureClass::Harness
            } else if e.downcast_ref::<UnitFailure>().is_some() {
                FailureClass::Systemd
            } else if e
                .chain()
                .any(|c| c.downcast_ref::<crate::ssh::SshError>().is_some())
            {
                FailureClass::Harness
            } else {
                FailureClass::Assertion
            };
            failure = Some(make_failure(class, &format!("{e:#}"), ""));
        }
    }

    // Collect: journal (while SSH still works), console, console checks.
    (state.phase)(Phase::Collecting);
    let machines = tc.machines();
    let mut artifacts = Vec::new();
    let mut check_lines = Vec::new();
    for (i, m) in machines.iter().enumerate() {
        let slice = slice_from.as_ref().filter(|_| i == 0);
        let journal_path = m.dir().join("journal.txt");
        let journal_cmd = match slice.and_then(|s| s.journal_cursor.as_deref()) {
            Some(c) => format!(
                "sudo journalctl --no-pager -o short-monotonic --after-cursor={}",
                crate::cluster::shell_quote(c)
            ),
            None => "sudo journalctl --no-pager -o short-monotonic -b".to_string(),
        };
        // On Ctrl-C, don't wait on SSH (a machine may still be booting): tear down now.
        // Without the harness's key on the machine there is nothing to collect either.
        let no_access = test.flags.no_ssh_key_in_user_data && m.session.lock().await.is_none();
        let journal = async {
            if ctx.cancel.is_cancelled() || no_access {
                return None;
            }
            tokio::time::timeout(Duration::from_secs(60), m.ssh(&journal_cmd))
                .await
                .ok()
        };
        if let Some(Ok(out)) = journal.await {
            let _ = std::fs::write(&journal_path, &out.stdout);
        }
        let mut console = m.console().await.unwrap_or_default();
        if let Some(s) = slice {
            console = tail_from(&console, s.console_offset).to_string();
            if let Err(e) = std::fs::write(m.dir().join("console.txt"), &console) {
                tracing::warn!(machine = m.id(), error = %e, "writing the console part");
            }
        }
        let opts = ScanOptions {
            flags: test.flags,
            no_avc_checks: ctx.no_avc_checks,
            journal: false,
        };
        for hit in scan(&console, opts) {
            check_lines.push((hit, m.id().to_string(), "console"));
        }
        if let Ok(j) = std::fs::read_to_string(&journal_path) {
            for hit in scan(
                &j,
                ScanOptions {
                    journal: true,
                    ..opts
                },
            ) {
                check_lines.push((hit, m.id().to_string(), "journal"));
            }
        }
        artifacts.push(MachineArtifacts {
            id: m.id().to_string(),
            console: rel(&ctx.out_dir, &m.dir().join("console.txt")),
            journal: journal_path
                .exists()
                .then(|| rel(&ctx.out_dir, &journal_path))
                .flatten(),
            ignition: rel(&ctx.out_dir, &m.dir().join("ignition.json")),
            kept_ssh: None,
        });
    }
    if !check_lines.is_empty() && skipped.is_none() {
        // kola: console/journal problems fail the test even when its body passed.
        let mut excerpt = String::new();
        for (hit, id, src) in check_lines.iter().take(20) {
            excerpt.push_str(&format!("{id} {src}:{}: {}\n", hit.line_no, hit.line));
        }
        let (first, _, src) = &check_lines[0];
        match failure.as_mut() {
            Some(f) if f.class == FailureClass::Assertion || f.class == FailureClass::Timeout => {
                // A kernel/SELinux/unit problem on the console usually explains the failure.
                if f.class == FailureClass::Assertion {
                    f.class = first.class;
                    f.signature = bogie_reports_signature(&first.line);
                }
                f.push_excerpt(&excerpt);
            }
            Some(f) => f.push_excerpt(&excerpt),
            None => {
                let msg = format!("found {} on machine {}: {}", first.desc, src, first.line);
                failure = Some(make_failure(first.class, &msg, &excerpt));
            }
        }
    }
    if let Some(f) = failure.as_mut() {
        // Add the console tail for harness failures (why didn't it boot?).
        if f.class == FailureClass::Harness || f.class == FailureClass::Timeout {
            for m in &machines {
                if let Ok(c) = m.console().await {
                    let tail: Vec<&str> = c.lines().rev().take(15).collect();
                    if !tail.is_empty() {
                        f.push_excerpt(&format!("--- console tail of {}:\n", m.id()));
                        for l in tail.into_iter().rev() {
                            f.excerpt.push_str(&crate::checks::strip_ansi(l));
                            f.excerpt.push('\n');
                        }
                    }
                }
            }
        }
    }

    // Hand a shared machine over to the next test, when it is still healthy.
    let passed = failure.is_none();
    let mut lease_out = None;
    if reuse && passed && !ctx.cancel.is_cancelled() && machines.len() == 1 {
        let m = &machines[0];
        if let Some(next) = hand_over(m, test).await {
            let ignition = match lease_ignition.take() {
                Some(i) => i,
                None => std::fs::read_to_string(m.dir().join("ignition.json")).unwrap_or_default(),
            };
            let machine_dir = machine_dir
                .take()
                .or_else(|| shared_root.as_ref().map(|r| r.join(m.id())))
                .unwrap_or_else(|| m.dir().to_path_buf());
            lease_out = Some(Lease {
                cluster: cluster.clone(),
                machine: m.clone(),
                ignition,
                journal_cursor: next.journal_cursor,
                console_offset: next.console_offset,
                machine_dir,
            });
        }
    }

    // Tear down or keep.
    cancel.cancel();
    let keep = match ctx.keep {
        KeepPolicy::All => true,
        KeepPolicy::Failed => !passed && skipped.is_none(),
        KeepPolicy::None => false,
    };
    if !keep && lease_out.is_none() {
        (state.phase)(Phase::Destroying);
    }
    let mut kept = 0;
    if lease_out.is_some() {
        // The next test of the unit goes on with the machine.
    } else if keep {
        for (m, a) in machines.iter().zip(artifacts.iter_mut()) {
            match m.platform_machine().keep().await {
                Ok(desc) => {
                    let _ = std::fs::write(
                        m.dir().join("kept.json"),
                        serde_json::to_vec_pretty(&desc).unwrap_or_default(),
                    );
                    a.kept_ssh = Some(m.ssh_command_line(&ctx.key_path));
                    kept += 1;
                }
                Err(e) => tracing::warn!(machine = m.id(), error = %e, "could not keep machine"),
            }
        }
    } else {
        for m in &machines {
            if let Some(s) = m.session.lock().await.take() {
                s.close().await;
            }
        }
        if let Err(e) = cluster.destroy().await {
            tracing::warn!(test = %test.name, error = %e, "cluster teardown failed");
        }
    }

    let output = state.log.lock().expect("poisoned").clone();
    let subtests = state.subtests.lock().expect("poisoned").clone();
    AttemptOutcome {
        attempt: Attempt {
            number,
            passed,
            started,
            duration: t0.elapsed(),
            failure,
            output,
            machines: artifacts,
            subtests,
        },
        skipped,
        kept,
    }
    .with_lease(lease_out)
}

/// A test whose machine's emulator died under it (killed QEMU, crashed instance) failed
/// because of that, not because of the SSH error it saw: says so, as a `harness` failure.
async fn name_stopped_machine(tc: &TestCluster, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<crate::bootwatch::BootFailure>().is_some() {
        return e;
    }
    for m in tc.machines() {
        let pm = m.platform_machine();
        if pm.is_running().await {
            continue;
        }
        let log = pm.platform_log().await;
        let last = log.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let why = last.map(|l| format!(": {l}")).unwrap_or_default();
        return anyhow!(HarnessError(format!(
            "machine {} stopped running during the test (its emulator exited{why}); the test saw: {e:#}",
            m.id()
        )));
    }
    e
}

impl AttemptOutcome {
    fn with_lease(self, lease: Option<Lease>) -> (AttemptOutcome, Option<Lease>) {
        (self, lease)
    }
}

/// `text` from byte `offset` on (at the next character boundary; all of it when the
/// offset is past the end, e.g. a console that was truncated).
fn tail_from(text: &str, offset: usize) -> &str {
    if offset > text.len() {
        return text;
    }
    let mut o = offset;
    while !text.is_char_boundary(o) {
        o += 1;
    }
    &text[o..]
}

/// Checks that a machine can serve the next test (QEMU alive; with SSH access, systemd
/// `running`) and notes where the next test's console and journal begin.
async fn hand_over(m: &TestMachine, test: &Test) -> Option<SliceFrom> {
    if !m.platform_machine().is_running().await {
        return None;
    }
    let mut journal_cursor = None;
    if !test.flags.no_ssh_key_in_user_data {
        let out = m
            .ssh("systemctl is-system-running; sudo journalctl -q --no-pager -n 1 -o cat --show-cursor")
            .await
            .ok()?
            .stdout_str();
        let mut lines = out.lines();
        let state = lines.next().unwrap_or("").trim();
        if state != "running" {
            tracing::info!(machine = m.id(), state, "not handing the machine over");
            return None;
        }
        journal_cursor = lines
            .rev()
            .find_map(|l| l.strip_prefix("-- cursor: "))
            .map(str::to_string);
    }
    let console_offset = m.console().await.map(|c| c.len()).unwrap_or(0);
    Some(SliceFrom {
        console_offset,
        journal_cursor,
    })
}

/// The test ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("test timed out after {}s", .0.as_secs())]
pub struct TimedOut(pub Duration);

fn rel(base: &Path, p: &Path) -> Option<PathBuf> {
    Some(p.strip_prefix(base).unwrap_or(p).to_path_buf())
}

fn bogie_reports_signature(line: &str) -> String {
    bogie_reports::triage::signature(line)
}

/// A failure record: the class given, the signature from triage's masking of the
/// decisive line, the first line as the message.
pub fn make_failure(class: FailureClass, message: &str, excerpt: &str) -> Failure {
    let (tclass, sig) = bogie_reports::triage::triage(message, excerpt);
    let class = if class == FailureClass::Assertion {
        tclass
    } else {
        class
    };
    Failure {
        class,
        signature: sig,
        message: message.lines().next().unwrap_or("").to_string(),
        excerpt: if excerpt.is_empty() {
            message.to_string()
        } else {
            format!("{message}\n{excerpt}")
        },
    }
}
