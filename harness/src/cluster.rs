//! What a test body sees: [`TestCluster`] (its machines, subtests, logging, more machines)
//! and [`TestMachine`] (SSH commands, files, reboots).

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bogie_reports::{Status, SubtestResult};
use tokio_util::sync::CancellationToken;

use crate::arch::Arch;
use crate::ignition::Config;
use crate::image::ImageInfo;
use crate::platform::{Cluster, Machine};
use crate::ssh::{CommandOutput, SshKey, SshSession};
use crate::test::Version;

/// Raised (through `anyhow`) by a test or subtest that decides at run time that it cannot
/// run here; the harness reports it as skipped with the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// Returns a [`Skip`] error: `return skip("needs a TPM")`.
pub fn skip<T>(reason: impl Into<String>) -> anyhow::Result<T> {
    Err(anyhow::Error::new(Skip(reason.into())))
}

/// Timeouts for bringing machines up.
#[derive(Debug, Clone, Copy)]
pub struct BringUp {
    /// How long to wait for the first SSH login.
    pub ssh_timeout: Duration,
    /// Timeout of every single connect attempt.
    pub ssh_attempt_timeout: Duration,
    /// How long to wait for `systemctl is-system-running` to settle.
    pub settle_timeout: Duration,
    /// How long a booting machine's console may stay silent (the platform's
    /// [`crate::Platform::boot_watch`]); `None`: its console is not watched.
    pub boot_watch: Option<crate::bootwatch::WatchLimits>,
}

impl BringUp {
    /// These timeouts for one test attempt on `platform` whose own timeout is
    /// `test_timeout`: the SSH wait ends well before the test's time does (so a machine
    /// that never answers is a `harness` failure, which `--retry-harness-failures` may
    /// retry, not a `timeout`), and the console is watched where the platform allows.
    pub fn for_attempt(self, platform: &dyn crate::Platform, test_timeout: Duration) -> Self {
        BringUp {
            ssh_timeout: self.ssh_timeout.min(test_timeout.mul_f64(0.75)),
            boot_watch: self.boot_watch.or_else(|| platform.boot_watch()),
            ..self
        }
    }
}

impl Default for BringUp {
    fn default() -> Self {
        BringUp {
            ssh_timeout: Duration::from_secs(420),
            ssh_attempt_timeout: Duration::from_secs(20),
            settle_timeout: Duration::from_secs(240),
            boot_watch: None,
        }
    }
}

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
    pub(crate) extra_disks: Vec<u32>,
    pub(crate) kernel_args: Vec<String>,
    pub(crate) tpm: bool,
    pub(crate) no_ssh_key: bool,
    pub(crate) extra_keys: Vec<String>,
}

/// Facts about the run a test may look at.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Platform name.
    pub platform: String,
    /// Architecture.
    pub arch: Arch,
    /// The image.
    pub image: Arc<ImageInfo>,
    /// The image version, when known.
    pub version: Option<Version>,
    /// Capabilities of image and platform together.
    pub provides: BTreeSet<String>,
    /// Whether the run may reach the internet (`--no-net` clears it).
    pub internet: bool,
}

/// The cluster handed to a test body. Cheap to clone.
#[derive(Clone)]
pub struct TestCluster {
    pub(crate) state: Arc<ClusterState>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("test", &self.state.test_name)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// The machines the harness booted (and any the test added), in order.
    pub fn machines(&self) -> Vec<TestMachine> {
        self.state.machines.lock().expect("poisoned").clone()
    }

    /// The first machine (most tests have one).
    pub fn machine(&self) -> anyhow::Result<TestMachine> {
        self.machines()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the cluster has no machine"))
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.state.test_name
    }

    /// Facts about the run.
    pub fn env(&self) -> &TestEnv {
        &self.state.env
    }

    /// The run's public SSH key (for configs a test writes itself).
    pub fn ssh_public_key(&self) -> &str {
        self.state.key.public_openssh()
    }

    /// The test's artifact directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.state.dir
    }

    /// Cancelled when the test times out or the run is interrupted.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.state.cancel
    }

    /// Appends a line to the test's output (kept in every report).
    pub fn log(&self, line: impl AsRef<str>) {
        let line = line.as_ref();
        tracing::info!(test = %self.state.test_name, "{line}");
        let mut l = self.state.log.lock().expect("poisoned");
        l.push_str(line);
        l.push('\n');
    }

    /// Whether the image/platform provide a capability.
    pub fn has(&self, capability: &str) -> bool {
        self.state.env.provides.contains(capability)
    }

    /// Runs a subtest (kola's `c.Run`): its result is recorded; a failure fails the test at
    /// the end but the remaining subtests still run. Returns whether it passed.
    pub async fn run<F, Fut>(&self, name: &str, f: F) -> bool
    where
        F: FnOnce(TestCluster) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let full = format!("{}/{}", self.state.test_name, name);
        let start = Instant::now();
        let res = f(self.clone()).await;
        let (status, message) = match res {
            Ok(()) => (Status::Pass, String::new()),
            Err(e) => match e.downcast_ref::<Skip>() {
                Some(s) => (Status::Skip, s.0.clone()),
                None => (Status::Fail, format!("{e:#}")),
            },
        };
        let verb = match status {
            Status::Pass => "PASS",
            Status::Skip => "SKIP",
            _ => "FAIL",
        };
        if message.is_empty() {
            self.log(format!("--- {verb}: {full}"));
        } else {
            self.log(format!("--- {verb}: {full}: {message}"));
        }
        self.state
            .subtests
            .lock()
            .expect("poisoned")
            .push(SubtestResult {
                name: full,
                status,
                duration: start.elapsed(),
                message,
            });
        status != Status::Fail
    }

    /// Runs a subtest only when the image provides `capability`, else records it as skipped
    /// with the reason.
    pub async fn run_if<F, Fut>(&self, capability: &str, name: &str, f: F) -> bool
    where
        F: FnOnce(TestCluster) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        if self.has(capability) {
            self.run(name, f).await
        } else {
            let reason = format!("requires {capability:?}, which the image does not provide");
            self.run(name, |_| async move { skip(reason) }).await
        }
    }

    /// Names of failed subtests so far.
    pub fn failed_subtests(&self) -> Vec<String> {
        self.state
            .subtests
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|s| s.status == Status::Fail)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Boots one more machine with `config` (the run's SSH key is added to it) and waits
    /// until it is up.
    pub async fn new_machine(&self, config: Option<Config>) -> anyhow::Result<TestMachine> {
        crate::runner::boot_machine(&self.state, config).await
    }

    /// Boots several machines with the same config in parallel.
    pub async fn new_machines(
        &self,
        n: usize,
        config: Option<Config>,
    ) -> anyhow::Result<Vec<TestMachine>> {
        let futs = (0..n).map(|_| crate::runner::boot_machine(&self.state, config.clone()));
        futures::future::try_join_all(futs).await
    }

    /// Renders a config the way the harness does for its machines (adds the SSH key), for
    /// tests that pass configs around themselves.
    pub fn render_config(&self, config: Option<Config>) -> Config {
        crate::runner::machine_config(&self.state, config)
    }
}

/// A machine as a test sees it.
#[derive(Clone)]
pub struct TestMachine {
    pub(crate) inner: Arc<dyn Machine>,
    pub(crate) session: Arc<tokio::sync::Mutex<Option<Arc<SshSession>>>>,
    pub(crate) key: SshKey,
    pub(crate) user: String,
    pub(crate) dir: PathBuf,
    pub(crate) bring_up: BringUp,
    pub(crate) cancel: CancellationToken,
}

impl std::fmt::Debug for TestMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMachine")
            .field("id", &self.inner.id())
            .finish_non_exhaustive()
    }
}

/// Quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl TestMachine {
    /// The machine's id.
    pub fn id(&self) -> &str {
        self.inner.id()
    }

    /// The platform machine.
    pub fn platform_machine(&self) -> &Arc<dyn Machine> {
        &self.inner
    }

    /// The machine's address on the cluster's private network.
    pub fn private_ip(&self) -> Option<IpAddr> {
        self.inner.private_ip()
    }

    /// The machine's artifact directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The SSH user.
    pub fn user(&self) -> &str {
        &self.user
    }

    async fn session(&self) -> anyhow::Result<Arc<SshSession>> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let s = Arc::new(
            SshSession::connect(
                self.inner.ssh_addr(),
                &self.user,
                &self.key,
                self.bring_up.ssh_attempt_timeout,
            )
            .await?,
        );
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Runs a command; returns its output whatever its exit status.
    pub async fn ssh(&self, command: &str) -> anyhow::Result<CommandOutput> {
        self.ssh_with_stdin(command, None).await
    }

    /// Runs a command with data on its stdin.
    pub async fn ssh_with_stdin(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<CommandOutput> {
        let s = self.session().await?;
        let out = tokio::select! {
            r = s.exec_with_stdin(command, stdin) => r,
            _ = self.cancel.cancelled() => bail!("cancelled while running {command:?}"),
        };
        match out {
            Ok(o) => Ok(o),
            Err(e) => {
                // The connection may have dropped (reboot); one retry on a new session.
                *self.session.lock().await = None;
                Err(anyhow!(e)).with_context(|| format!("running {command:?} on {}", self.id()))
            }
        }
    }

    /// Runs a command that must succeed; returns its trimmed stdout. The error names the
    /// command, its status and its stderr.
    pub async fn must_ssh(&self, command: &str) -> anyhow::Result<String> {
        let out = self.ssh(command).await?;
        if !out.success() {
            bail!(
                "{command:?} on {} exited {}: {}",
                self.id(),
                out.status
                    .map(|s| s.to_string())
                    .or(out.signal.clone())
                    .unwrap_or_else(|| "without status".into()),
                first_lines(&out.stderr_str(), &out.stdout_str())
            );
        }
        Ok(out.stdout_str())
    }

    /// Writes a file on the machine (through `sudo tee`), with `mode` (e.g. 0o644).
    pub async fn write_file(&self, path: &str, data: &[u8], mode: u32) -> anyhow::Result<()> {
        let q = shell_quote(path);
        let cmd = format!(
            "sudo mkdir -p \"$(dirname {q})\" && sudo tee {q} >/dev/null && sudo chmod {mode:o} {q}"
        );
        let out = self.ssh_with_stdin(&cmd, Some(data)).await?;
        if !out.success() {
            bail!("writing {path} on {}: {}", self.id(), out.stderr_str());
        }
        Ok(())
    }

    /// Reads a file on the machine (through `sudo cat`).
    pub async fn read_file(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let out = self.ssh(&format!("sudo cat {}", shell_quote(path))).await?;
        if !out.success() {
            bail!("reading {path} on {}: {}", self.id(), out.stderr_str());
        }
        Ok(out.stdout)
    }

    /// The current boot id.
    pub async fn boot_id(&self) -> anyhow::Result<String> {
        self.must_ssh("cat /proc/sys/kernel/random/boot_id").await
    }

    /// Reboots the machine and waits until it is back with a new boot id and SSH works.
    pub async fn reboot(&self) -> anyhow::Result<()> {
        let before = self.boot_id().await?;
        // The command may not return: the connection drops.
        let s = self.session().await?;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            s.exec("sudo systemd-run --no-block --on-active=1 systemctl reboot"),
        )
        .await;
        self.wait_for_new_boot(&before).await?;
        crate::runner::wait_settled(self, self.bring_up.settle_timeout).await?;
        Ok(())
    }

    /// Waits (up to the bring-up SSH timeout) until the machine answers over SSH with a
    /// boot id other than `before`: it is back from a reboot, whoever started it.
    pub async fn wait_for_new_boot(&self, before: &str) -> anyhow::Result<()> {
        *self.session.lock().await = None;
        let deadline = Instant::now() + self.bring_up.ssh_timeout;
        tokio::time::sleep(Duration::from_secs(3)).await;
        loop {
            if Instant::now() > deadline {
                bail!("machine {} did not come back after reboot", self.id());
            }
            if self.cancel.is_cancelled() {
                bail!("cancelled during reboot");
            }
            if let Ok(id) = self.boot_id().await {
                if id != before {
                    return Ok(());
                }
            }
            *self.session.lock().await = None;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The console log so far.
    pub async fn console(&self) -> anyhow::Result<String> {
        Ok(self.inner.console_output().await?)
    }

    /// An `ssh` command line a person can paste to reach this machine.
    pub fn ssh_command_line(&self, key_path: &std::path::Path) -> String {
        let addr = self.inner.ssh_addr();
        format!(
            "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR {}@{}",
            shell_quote(&key_path.display().to_string()),
            addr.port(),
            self.user,
            addr.ip()
        )
    }
}

fn first_lines(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = text.lines().take(12).collect();
    if lines.is_empty() {
        "(no output)".into()
    } else {
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/etc/hostname"), "/etc/hostname");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn skip_errors_downcast() {
        let e: anyhow::Error = skip::<()>("no tpm").unwrap_err();
        assert_eq!(e.downcast_ref::<Skip>().unwrap().0, "no tpm");
    }
}
