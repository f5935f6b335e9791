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
use crate::platform::{ClusterSpec, MachineSpec, Platform, PlatformError};
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
        may_outlive: state.may_outlive,
    }
}

/// Boots a machine in the cluster, waits for SSH and for systemd to settle.
pub(crate) async fn boot_machine(
    state: &Arc<ClusterState>,
    config: Option<Config>,
) -> anyhow::Result<TestMachine> {
    let config = machine_config(state, config);
    let rendered = config.render_pretty();
    let spec = machine_spec(state, rendered);
    std::fs::create_dir_all(&spec.dir)
        .with_context(|| format!("creating {}", spec.dir.display()))?;
    std::fs::write(spec.dir.join("ignition.json"), &spec.ignition)
        .with_context(|| format!("writing {}/ignition.json", spec.dir.display()))?;
    (state.phase)(Phase::Booting);
    let dir = spec.dir.clone();
    let machine = state
        .cluster
        .new_machine(spec)
        .await
        .map_err(|e| anyhow!(HarnessError(format!("platform error: {e}"))))?;
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
    let session = SshSession::wait_ready(
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
    )
    .await
    .map_err(|e| anyhow!(HarnessError(format!("machine {} {e}", machine.id()))))?;
    *tm.session.lock().await = Some(Arc::new(session));
    (state.phase)(Phase::Checking);
    wait_settled(&tm, state.bring_up.settle_timeout).await?;
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
        Ok(()) => {
            ctx.platform
                .new_cluster(ClusterSpec {
                    name: format!("{}-{number}", dir_name(&test.name)),
                    dir: dir.clone(),
                })
                .await
        }
    };
    let cluster: Arc<dyn crate::platform::Cluster> = match cluster {
        Ok(c) => Arc::from(c),
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
            };
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
        bring_up: ctx.bring_up,
        env: ctx.env.clone(),
        may_outlive,
        machine_seq: Mutex::new(0),
        phase,
        default_memory_mb: test.min_memory_mb.or(ctx.memory_mb),
        extra_disks: test.extra_disks.clone(),
        kernel_args: test.kernel_args.clone(),
        no_ssh_key: test.flags.no_ssh_key_in_user_data,
        extra_keys: ctx.extra_keys.clone(),
    });
    let tc = TestCluster {
        state: state.clone(),
    };

    let timeout = test.timeout.unwrap_or(ctx.default_timeout);
    let body = async {
        if test.cluster_size > 0 {
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
    if let Err(e) = result {
        if let Some(s) = e.downcast_ref::<Skip>() {
            skipped = Some(s.0.clone());
        } else {
            let class = if e.downcast_ref::<TimedOut>().is_some() {
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
    for m in &machines {
        let journal_path = m.dir().join("journal.txt");
        // On Ctrl-C, don't wait on SSH (a machine may still be booting): tear down now.
        let journal = async {
            if ctx.cancel.is_cancelled() {
                return None;
            }
            tokio::time::timeout(
                Duration::from_secs(60),
                m.ssh("sudo journalctl --no-pager -o short-monotonic -b"),
            )
            .await
            .ok()
        };
        if let Some(Ok(out)) = journal.await {
            let _ = std::fs::write(&journal_path, &out.stdout);
        }
        let console = m.console().await.unwrap_or_default();
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
                f.excerpt.push_str(&excerpt);
            }
            Some(f) => f.excerpt.push_str(&excerpt),
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
                        f.excerpt
                            .push_str(&format!("--- console tail of {}:\n", m.id()));
                        for l in tail.into_iter().rev() {
                            f.excerpt.push_str(&crate::checks::strip_ansi(l));
                            f.excerpt.push('\n');
                        }
                    }
                }
            }
        }
    }

    // Tear down or keep.
    cancel.cancel();
    let passed = failure.is_none();
    let keep = match ctx.keep {
        KeepPolicy::All => true,
        KeepPolicy::Failed => !passed && skipped.is_none(),
        KeepPolicy::None => false,
    };
    if !keep {
        (state.phase)(Phase::Destroying);
    }
    let mut kept = 0;
    if keep {
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
