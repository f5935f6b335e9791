//! A machine as a test sees it ([`TestMachine`]: SSH commands, files, reboots), the
//! timeouts of bringing one up ([`BringUp`]), and the wait for its systemd to settle.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio_util::sync::CancellationToken;

use crate::failure::{HarnessError, UnitFailure};
use crate::platform::{Machine, Platform, WatchLimits};
use crate::ssh::{CommandOutput, SshKey, SshSession};
use crate::text::shell_quote;

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
    /// [`Platform::boot_watch`]); `None`: its console is not watched.
    pub boot_watch: Option<WatchLimits>,
}

impl BringUp {
    /// These timeouts for one test attempt on `platform` whose own timeout is
    /// `test_timeout`: the SSH wait ends well before the test's time does (so a machine
    /// that never answers is a `harness` failure, which `--retry-harness-failures` may
    /// retry, not a `timeout`), and the console is watched where the platform allows.
    pub fn for_attempt(self, platform: &dyn Platform, test_timeout: Duration) -> Self {
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

/// How a machine came to the test now using it, for the report (`MachineArtifacts::start`).
#[derive(Debug, Clone, Default)]
pub(crate) struct MachineStart {
    /// `cold`, `snapshot` or `shared`.
    pub(crate) kind: &'static str,
    /// For `shared`: the test that handed the machine on.
    pub(crate) handed_from: Option<String>,
    /// From the emulator's start (or the restore's) to the first SSH login.
    pub(crate) ready_after: Option<Duration>,
    /// What told the harness to log in: `signal` (the guest's readiness line) or `ssh` (an
    /// SSH attempt that got in).
    pub(crate) ready_by: Option<&'static str>,
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
    /// kola's SELinux setup after each boot ([`crate::setup::ENABLE_SELINUX`]).
    pub(crate) enable_selinux: bool,
    /// How the machine came to its current test (updated when it is handed on).
    pub(crate) start: Arc<std::sync::Mutex<MachineStart>>,
}

impl std::fmt::Debug for TestMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestMachine")
            .field("id", &self.inner.id())
            .finish_non_exhaustive()
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
        wait_settled(self, self.bring_up.settle_timeout).await?;
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
                    return self.after_boot().await;
                }
            }
            *self.session.lock().await = None;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// kola's setup after a boot: SELinux enforcing, with the audit rules that hide AVC
    /// denials removed (on SELinux images, unless the test opts out).
    pub(crate) async fn after_boot(&self) -> anyhow::Result<()> {
        if self.enable_selinux {
            self.must_ssh(crate::setup::ENABLE_SELINUX)
                .await
                .with_context(|| format!("machine {}: enabling SELinux", self.id()))?;
        }
        Ok(())
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
                            shell_quote(u)
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
