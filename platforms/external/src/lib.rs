//! bogie's external platform: tests on machines bogie does not create.
//!
//! Two ways, as kola's `external` platform:
//!
//! - **Existing hosts** (`--external-host [user@]host[:port]`, repeatable, logged into with
//!   `--external-key`): each host is a machine. bogie installs the run's SSH key for the
//!   test user (from the machine's Ignition config) in `~/.ssh/authorized_keys`, marked with
//!   the run, and removes it at teardown; a host serves one test at a time. The rest of the
//!   Ignition config cannot be applied to a running host and is ignored (with a warning).
//!   This is how a lab board (an ARM64 box on a desk) is tested.
//! - **Provisioned machines** (`--external-provisioning-cmds`): a shell script run on the
//!   management host (the one `--external-host`, or locally when none is given) with the
//!   rendered config in `$USERDATA`; it boots or installs a machine (PXE, `flatcar-install
//!   -i`) and prints the machine's address as the last line of its output.
//!   `--external-deprovisioning-cmds` gets it back in `$IPADDR` at teardown, and
//!   `--external-serial-console-cmd` (also with `$IPADDR`) streams the console.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bogie_harness::ssh::{SshKey, SshSession};
use bogie_harness::{
    Arch, Cluster, ClusterSpec, ImageInfo, Machine, MachineSpec, Platform, PlatformError,
};
use bogie_platform_common::ignition::{ssh_keys, write_console};
use bogie_platform_common::redact;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Login user, when given.
    pub user: Option<String>,
    /// Host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
}

impl FromStr for HostSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, rest) = match s.rsplit_once('@') {
            Some(("", _)) => return Err(format!("{s:?}: empty user name before @")),
            Some((u, r)) => (Some(u.to_string()), r),
            None => (None, s),
        };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, tail) = r
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed [ in an IPv6 address"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
                None if tail.is_empty() => 22,
                None => return Err(format!("{s:?}: unexpected {tail:?} after ]")),
            };
            (h.to_string(), port)
        } else if rest.matches(':').count() > 1 {
            (rest.to_string(), 22) // a bare IPv6 address
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?,
                ),
                None => (rest.to_string(), 22),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(HostSpec { user, host, port })
    }
}

impl std::fmt::Display for HostSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What the user chose (kola's `--external-*` flags).
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// The hosts under test, or the management host when provisioning commands are given.
    pub hosts: Vec<HostSpec>,
    /// Login user for hosts that name none (`--external-user`; default `core`).
    pub user: Option<String>,
    /// Private key to log in with (`--external-key`).
    pub key: Option<PathBuf>,
    /// `--external-provisioning-cmds`.
    pub provisioning_cmds: Option<String>,
    /// `--external-deprovisioning-cmds`.
    pub deprovisioning_cmds: Option<String>,
    /// `--external-serial-console-cmd`.
    pub serial_console_cmd: Option<String>,
    /// SSH port of provisioned machines when their address names none.
    pub ssh_port: u16,
    /// The architecture of the machines (`--board`).
    pub arch: Arch,
    /// What bogie knows about the image.
    pub image: ImageInfo,
    /// Timeout of one SSH connect to a host or the management host.
    pub connect_timeout: Duration,
    /// How long one provisioning run may take.
    pub provision_timeout: Duration,
    /// How often provisioning is tried (kola: 3).
    pub provision_attempts: u32,
}

impl ExternalOptions {
    /// Defaults for an image.
    pub fn new(arch: Arch, image: ImageInfo) -> ExternalOptions {
        ExternalOptions {
            hosts: Vec::new(),
            user: None,
            key: None,
            provisioning_cmds: None,
            deprovisioning_cmds: None,
            serial_console_cmd: None,
            ssh_port: 22,
            arch,
            image,
            connect_timeout: Duration::from_secs(30),
            provision_timeout: Duration::from_secs(3600),
            provision_attempts: 3,
        }
    }
}

/// Single-quotes a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r#"'"'"'"#))
}

/// Where commands run: locally or on the management host.
enum Runner {
    Local,
    Remote {
        host: HostSpec,
        user: String,
        key: SshKey,
        timeout: Duration,
    },
}

/// What a command printed.
#[derive(Debug, Clone)]
struct Output {
    ok: bool,
    status: String,
    stdout: String,
    stderr: String,
}

async fn resolve(host: &HostSpec) -> Result<SocketAddr, PlatformError> {
    let mut addrs = tokio::net::lookup_host((host.host.as_str(), host.port))
        .await
        .map_err(|e| PlatformError::io(format!("resolving {host}"), e))?;
    addrs
        .next()
        .ok_or_else(|| PlatformError::Machine(format!("{host} has no address")))
}

async fn connect(
    host: &HostSpec,
    user: &str,
    key: &SshKey,
    timeout: Duration,
) -> Result<SshSession, PlatformError> {
    let addr = resolve(host).await?;
    SshSession::connect(addr, user, key, timeout)
        .await
        .map_err(|e| PlatformError::Machine(format!("logging into {user}@{host}: {e}")))
}

impl Runner {
    /// Runs `script` with the variables set (as shell assignments remotely, as environment
    /// variables locally).
    async fn run(
        &self,
        script: &str,
        vars: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Output, PlatformError> {
        match self {
            Runner::Local => {
                let mut cmd = tokio::process::Command::new("bash");
                cmd.arg("-c")
                    .arg(script)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                for (k, v) in vars {
                    cmd.env(k, v);
                }
                let out = tokio::time::timeout(timeout, cmd.output())
                    .await
                    .map_err(|_| {
                        PlatformError::Machine(format!(
                            "command timed out after {}s",
                            timeout.as_secs()
                        ))
                    })?
                    .map_err(|e| PlatformError::io("running bash", e))?;
                Ok(Output {
                    ok: out.status.success(),
                    status: out.status.to_string(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
            Runner::Remote {
                host,
                user,
                key,
                timeout: ct,
            } => {
                let s = connect(host, user, key, *ct).await?;
                let mut full = String::new();
                for (k, v) in vars {
                    full.push_str(&format!("{k}={}; export {k}; ", shell_quote(v)));
                }
                full.push_str(script);
                let r = tokio::time::timeout(timeout, s.exec(&full))
                    .await
                    .map_err(|_| {
                        PlatformError::Machine(format!(
                            "command on {host} timed out after {}s",
                            timeout.as_secs()
                        ))
                    })?
                    .map_err(|e| {
                        PlatformError::Machine(format!("running a command on {host}: {e}"))
                    });
                s.close().await;
                let o = r?;
                Ok(Output {
                    ok: o.success(),
                    status: match (&o.status, &o.signal) {
                        (Some(c), _) => format!("exit status {c}"),
                        (None, Some(sig)) => format!("signal {sig}"),
                        _ => "no exit status".into(),
                    },
                    stdout: o.stdout_str(),
                    stderr: o.stderr_str(),
                })
            }
        }
    }
}

/// Parses the last non-empty line of a provisioning script's output: `IP`, `IP:PORT`,
/// `[IPv6]:PORT` or `host:port`.
pub fn parse_address(output: &str, default_port: u16) -> Result<HostSpec, String> {
    let line = output
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or("the provisioning commands printed no address")?;
    if let Ok(ip) = line.parse::<IpAddr>() {
        return Ok(HostSpec {
            user: None,
            host: ip.to_string(),
            port: default_port,
        });
    }
    if let Ok(sa) = line.parse::<SocketAddr>() {
        return Ok(HostSpec {
            user: None,
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    let h: HostSpec = line.parse()?;
    if h.user.is_some() || h.host.contains(char::is_whitespace) {
        return Err(format!("the last output line {line:?} is not an address"));
    }
    Ok(h)
}

enum Mode {
    Hosts {
        free: Mutex<Vec<HostSpec>>,
        released: Notify,
        total: usize,
        key: SshKey,
    },
    Provision {
        runner: Runner,
    },
}

struct Inner {
    opts: ExternalOptions,
    mode: Mode,
    run: String,
}

/// The external platform.
#[derive(Clone)]
pub struct ExternalPlatform {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExternalPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPlatform")
            .field("hosts", &self.inner.opts.hosts)
            .finish_non_exhaustive()
    }
}

fn input(m: impl Into<String>) -> PlatformError {
    PlatformError::Input(m.into())
}

fn load_key(p: &Path) -> Result<SshKey, PlatformError> {
    SshKey::load(p).map_err(|e| input(format!("--external-key {}: {e}", p.display())))
}

impl ExternalPlatform {
    /// Checks the options (hosts or provisioning commands, a key for remote hosts).
    pub fn new(opts: ExternalOptions) -> Result<ExternalPlatform, PlatformError> {
        let run = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let mode = if let Some(_cmds) = &opts.provisioning_cmds {
            let runner = match opts.hosts.as_slice() {
                [] => Runner::Local,
                [h] => {
                    let key = opts
                        .key
                        .as_deref()
                        .ok_or_else(|| input("the management host needs --external-key (a private key that logs into it)"))?;
                    Runner::Remote {
                        user: h.user.clone().or(opts.user.clone()).unwrap_or_else(|| "core".into()),
                        host: h.clone(),
                        key: load_key(key)?,
                        timeout: opts.connect_timeout,
                    }
                }
                _ => return Err(input("with --external-provisioning-cmds give at most one --external-host (the management host)")),
            };
            Mode::Provision { runner }
        } else {
            if opts.hosts.is_empty() {
                return Err(input("-p external needs --external-host (repeatable) or --external-provisioning-cmds"));
            }
            if opts.deprovisioning_cmds.is_some() {
                tracing::warn!(
                    "--external-deprovisioning-cmds is only used with --external-provisioning-cmds"
                );
            }
            let key = opts.key.as_deref().ok_or_else(|| {
                input(
                    "--external-host needs --external-key (a private key that logs into the hosts)",
                )
            })?;
            let mut free = opts.hosts.clone();
            free.reverse();
            Mode::Hosts {
                total: free.len(),
                free: Mutex::new(free),
                released: Notify::new(),
                key: load_key(key)?,
            }
        };
        Ok(ExternalPlatform {
            inner: Arc::new(Inner { opts, mode, run }),
        })
    }
}

#[async_trait]
impl Platform for ExternalPlatform {
    fn name(&self) -> &str {
        "external"
    }

    fn arch(&self) -> Arch {
        self.inner.opts.arch
    }

    fn image(&self) -> &ImageInfo {
        &self.inner.opts.image
    }

    fn capabilities(&self) -> BTreeSet<String> {
        ["bare-metal", "external"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        Ok(Box::new(ExternalCluster {
            inner: self.inner.clone(),
            spec,
            machines: Mutex::new(Vec::new()),
            requested: std::sync::atomic::AtomicUsize::new(0),
        }))
    }
}

/// The machines of one test attempt.
pub struct ExternalCluster {
    inner: Arc<Inner>,
    spec: ClusterSpec,
    machines: Mutex<Vec<Arc<ExternalMachine>>>,
    /// Hosts asked for so far (machines boot in parallel).
    requested: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for ExternalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCluster")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// Warns when a config asks for more than SSH keys (an existing host cannot apply it).
fn warn_unapplied(ignition: &str, host: &HostSpec) {
    let Ok(v) = serde_json::from_str::<Value>(ignition) else {
        return;
    };
    let extra: Vec<&str> = ["storage", "systemd", "kernelArguments"]
        .into_iter()
        .filter(|k| {
            v.get(*k)
                .is_some_and(|x| x.as_object().is_some_and(|o| !o.is_empty()))
        })
        .collect();
    if !extra.is_empty() {
        tracing::warn!(
            host = %host,
            "the machine's Ignition config has {} sections an existing host cannot apply; only its SSH keys are installed",
            extra.join(", ")
        );
    }
}

impl ExternalCluster {
    async fn take_host(&self) -> Result<HostSpec, PlatformError> {
        let Mode::Hosts {
            free,
            released,
            total,
            ..
        } = &self.inner.mode
        else {
            unreachable!("take_host in provisioning mode")
        };
        let wanted = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        if wanted > *total {
            return Err(input(format!(
                "this test needs more machines than the {total} --external-host given"
            )));
        }
        loop {
            let notified = released.notified();
            if let Some(h) = free.lock().expect("poisoned").pop() {
                return Ok(h);
            }
            tracing::info!("waiting for a free external host");
            notified.await;
        }
    }

    async fn attach_host(&self, spec: &MachineSpec) -> Result<Arc<ExternalMachine>, PlatformError> {
        let Mode::Hosts { key, .. } = &self.inner.mode else {
            unreachable!()
        };
        let host = self.take_host().await?;
        let guard = HostGuard {
            inner: Some(self.inner.clone()),
            host: host.clone(),
        };
        let login = host
            .user
            .clone()
            .or(self.inner.opts.user.clone())
            .unwrap_or_else(|| "core".into());
        warn_unapplied(&spec.ignition, &host);
        let marker = format!("bogie-{}-{}", self.inner.run, spec.id);
        let session = connect(&host, &login, key, self.inner.opts.connect_timeout).await?;
        for (user, k) in ssh_keys(&spec.ignition) {
            let script = authorize_script(&user, &k, &marker);
            let o = session.exec(&script).await.map_err(|e| {
                PlatformError::Machine(format!("{host}: installing the run's key: {e}"))
            })?;
            if !o.success() {
                session.close().await;
                return Err(PlatformError::Machine(format!(
                    "{host}: installing the run's key for {user} failed: {}",
                    redact(o.stderr_str().trim())
                )));
            }
        }
        session.close().await;
        let addr = resolve(&host).await?;
        guard.disarm();
        Ok(Arc::new(ExternalMachine {
            inner: self.inner.clone(),
            id: spec.id.clone(),
            dir: spec.dir.clone(),
            addr,
            target: Target::Host {
                host,
                login,
                marker,
                users: ssh_keys(&spec.ignition)
                    .into_iter()
                    .map(|(u, _)| u)
                    .collect(),
            },
            console: Mutex::new(String::new()),
            state: AtomicU8::new(RUNNING),
        }))
    }

    async fn provision(&self, spec: &MachineSpec) -> Result<Arc<ExternalMachine>, PlatformError> {
        let Mode::Provision { runner } = &self.inner.mode else {
            unreachable!()
        };
        let opts = &self.inner.opts;
        let script = opts.provisioning_cmds.as_deref().unwrap_or_default();
        let dir = spec.dir.display().to_string();
        let vars = [
            ("USERDATA", spec.ignition.as_str()),
            ("BOGIE_MACHINE_ID", spec.id.as_str()),
            ("BOGIE_MACHINE_DIR", dir.as_str()),
        ];
        let mut last = String::new();
        for attempt in 1..=opts.provision_attempts.max(1) {
            if attempt > 1 {
                tracing::warn!(machine = %spec.id, "retrying provisioning after: {last}");
            }
            let o = match runner.run(script, &vars, opts.provision_timeout).await {
                Ok(o) => o,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            if !o.ok {
                last = format!(
                    "the provisioning commands failed ({}): {}",
                    o.status,
                    redact(tail(&o.stderr, 800).trim())
                );
                continue;
            }
            let host = match parse_address(&o.stdout, opts.ssh_port) {
                Ok(h) => h,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let ipaddr = host.host.clone();
            let addr = match resolve(&host).await {
                Ok(a) => a,
                Err(e) => {
                    last = format!(
                        "the provisioning commands printed {host}, which is not an address ({e})"
                    );
                    continue;
                }
            };
            let m = Arc::new(ExternalMachine {
                inner: self.inner.clone(),
                id: spec.id.clone(),
                dir: spec.dir.clone(),
                addr,
                target: Target::Provisioned {
                    ipaddr,
                    console: Mutex::new(None),
                },
                console: Mutex::new(String::new()),
                state: AtomicU8::new(RUNNING),
            });
            m.start_console().await;
            tracing::info!(machine = %spec.id, address = %addr, "provisioned");
            return Ok(m);
        }
        Err(PlatformError::Machine(last))
    }
}

fn tail(s: &str, max: usize) -> &str {
    let mut from = s.len().saturating_sub(max);
    while !s.is_char_boundary(from) {
        from += 1;
    }
    &s[from..]
}

/// Returns a host to the pool if attaching fails or is cancelled.
struct HostGuard {
    inner: Option<Arc<Inner>>,
    host: HostSpec,
}

impl HostGuard {
    fn disarm(mut self) {
        self.inner = None;
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            release(&inner, self.host.clone());
        }
    }
}

fn release(inner: &Inner, host: HostSpec) {
    if let Mode::Hosts { free, released, .. } = &inner.mode {
        free.lock().expect("poisoned").push(host);
        released.notify_waiters();
        released.notify_one();
    }
}

/// The script that adds a key for `user`, marked so it can be removed again.
fn authorize_script(user: &str, key: &str, marker: &str) -> String {
    format!(
        r#"set -e
u={u}; line={line}
if [ "$(id -un)" = "$u" ]; then S=""; h="$HOME"; else S="sudo -n"; h=$(getent passwd "$u" | cut -d: -f6); fi
[ -n "$h" ] || {{ echo "no user $u on this host" >&2; exit 1; }}
$S mkdir -p "$h/.ssh"
printf '%s\n' "$line" | $S tee -a "$h/.ssh/authorized_keys" >/dev/null
$S chmod 700 "$h/.ssh"; $S chmod 600 "$h/.ssh/authorized_keys"
if [ -n "$S" ]; then $S chown "$u" "$h/.ssh" "$h/.ssh/authorized_keys"; fi
"#,
        u = shell_quote(user),
        line = shell_quote(&format!("{key} {marker}")),
    )
}

/// The script that removes the marked keys of `user`.
fn revoke_script(user: &str, marker: &str) -> String {
    format!(
        r#"u={u}; m={m}
if [ "$(id -un)" = "$u" ]; then S=""; h="$HOME"; else S="sudo -n"; h=$(getent passwd "$u" | cut -d: -f6); fi
f="$h/.ssh/authorized_keys"
[ -f "$f" ] || exit 0
$S sed -i "/ $m\$/d" "$f"
"#,
        u = shell_quote(user),
        m = shell_quote(marker),
    )
}

#[async_trait]
impl Cluster for ExternalCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        let m = match &self.inner.mode {
            Mode::Hosts { .. } => self.attach_host(&spec).await?,
            Mode::Provision { .. } => self.provision(&spec).await?,
        };
        self.machines.lock().expect("poisoned").push(m.clone());
        Ok(m)
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        let ms: Vec<Arc<ExternalMachine>> = self.machines.lock().expect("poisoned").clone();
        let mut errors = Vec::new();
        for m in ms {
            if let Err(e) = m.destroy().await {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlatformError::Machine(errors.join("; ")))
        }
    }
}

const RUNNING: u8 = 0;
const KEPT: u8 = 1;
const DESTROYED: u8 = 2;

enum Target {
    Host {
        host: HostSpec,
        login: String,
        marker: String,
        users: Vec<String>,
    },
    Provisioned {
        ipaddr: String,
        /// The serial console: a local child writing console.txt, or a remote pid.
        console: Mutex<Option<ConsoleProc>>,
    },
}

enum ConsoleProc {
    Local(tokio::process::Child),
    Remote { pid: String, log: String },
}

/// A machine of the external platform.
pub struct ExternalMachine {
    inner: Arc<Inner>,
    id: String,
    dir: PathBuf,
    addr: SocketAddr,
    target: Target,
    console: Mutex<String>,
    state: AtomicU8,
}

impl std::fmt::Debug for ExternalMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalMachine")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ExternalMachine {
    async fn start_console(&self) {
        let (Target::Provisioned { ipaddr, console }, Some(cmd)) =
            (&self.target, self.inner.opts.serial_console_cmd.as_deref())
        else {
            return;
        };
        let Mode::Provision { runner } = &self.inner.mode else {
            return;
        };
        match runner {
            Runner::Local => {
                let file = match std::fs::File::create(self.dir.join("console.txt")) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "creating console.txt");
                        return;
                    }
                };
                let child = tokio::process::Command::new("bash")
                    .arg("-c")
                    .arg(cmd)
                    .env("IPADDR", ipaddr)
                    .stdin(std::process::Stdio::null())
                    .stdout(file)
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn();
                match child {
                    Ok(c) => *console.lock().expect("poisoned") = Some(ConsoleProc::Local(c)),
                    Err(e) => tracing::warn!(error = %e, "starting the serial console command"),
                }
            }
            Runner::Remote { .. } => {
                let log = format!("/tmp/bogie-console-{}-{}.log", self.inner.run, self.id);
                let script = format!(
                    "nohup bash -c {} > {} 2>&1 < /dev/null & echo $!",
                    shell_quote(cmd),
                    shell_quote(&log)
                );
                match runner
                    .run(&script, &[("IPADDR", ipaddr)], Duration::from_secs(60))
                    .await
                {
                    Ok(o) if o.ok => {
                        *console.lock().expect("poisoned") = Some(ConsoleProc::Remote {
                            pid: o.stdout.trim().to_string(),
                            log,
                        })
                    }
                    Ok(o) => tracing::warn!(
                        "starting the serial console command failed: {}",
                        o.stderr.trim()
                    ),
                    Err(e) => tracing::warn!(error = %e, "starting the serial console command"),
                }
            }
        }
    }

    async fn read_console(&self) -> String {
        match &self.target {
            Target::Host { host, .. } => format!(
                "external host {host}: no serial console (use --external-provisioning-cmds with --external-serial-console-cmd)\n"
            ),
            Target::Provisioned { console, .. } => {
                let remote = match &*console.lock().expect("poisoned") {
                    Some(ConsoleProc::Local(_)) => None,
                    Some(ConsoleProc::Remote { log, .. }) => Some(log.clone()),
                    None => return "no serial console (pass --external-serial-console-cmd)\n".into(),
                };
                match remote {
                    None => std::fs::read_to_string(self.dir.join("console.txt")).unwrap_or_default(),
                    Some(log) => {
                        let Mode::Provision { runner } = &self.inner.mode else { return String::new() };
                        runner
                            .run(&format!("cat {}", shell_quote(&log)), &[], Duration::from_secs(60))
                            .await
                            .map(|o| o.stdout)
                            .unwrap_or_default()
                    }
                }
            }
        }
    }

    async fn stop_console(&self) {
        let Target::Provisioned { console, .. } = &self.target else {
            return;
        };
        let proc_ = console.lock().expect("poisoned").take();
        match proc_ {
            Some(ConsoleProc::Local(mut c)) => {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
            Some(ConsoleProc::Remote { pid, log }) => {
                let Mode::Provision { runner } = &self.inner.mode else {
                    return;
                };
                let _ = runner
                    .run(
                        &format!(
                            "kill {} 2>/dev/null; rm -f {}",
                            shell_quote(&pid),
                            shell_quote(&log)
                        ),
                        &[],
                        Duration::from_secs(60),
                    )
                    .await;
            }
            None => {}
        }
    }
}

#[async_trait]
impl Machine for ExternalMachine {
    fn id(&self) -> &str {
        &self.id
    }

    fn ssh_addr(&self) -> SocketAddr {
        self.addr
    }

    fn private_ip(&self) -> Option<IpAddr> {
        Some(self.addr.ip())
    }

    async fn console_output(&self) -> Result<String, PlatformError> {
        if self.state.load(Ordering::SeqCst) == RUNNING {
            let c = self.read_console().await;
            *self.console.lock().expect("poisoned") = c;
        }
        let c = self.console.lock().expect("poisoned").clone();
        let local_stream = matches!(&self.target, Target::Provisioned { console, .. }
            if matches!(&*console.lock().expect("poisoned"), Some(ConsoleProc::Local(_))));
        if !local_stream {
            write_console(&self.dir, &c);
        }
        Ok(c)
    }

    async fn is_running(&self) -> bool {
        self.state.load(Ordering::SeqCst) != DESTROYED
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, DESTROYED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(());
        }
        let c = self.read_console().await;
        *self.console.lock().expect("poisoned") = c.clone();
        self.stop_console().await;
        match &self.target {
            Target::Host {
                host,
                login,
                marker,
                users,
            } => {
                let Mode::Hosts { key, .. } = &self.inner.mode else {
                    unreachable!()
                };
                write_console(&self.dir, &c);
                let r = async {
                    let s = connect(host, login, key, self.inner.opts.connect_timeout).await?;
                    let mut err = None;
                    for u in users {
                        match s.exec(&revoke_script(u, marker)).await {
                            Ok(o) if o.success() => {}
                            Ok(o) => {
                                err = Some(format!(
                                    "{host}: removing the run's key: {}",
                                    o.stderr_str().trim()
                                ))
                            }
                            Err(e) => err = Some(format!("{host}: removing the run's key: {e}")),
                        }
                    }
                    s.close().await;
                    match err {
                        Some(e) => Err(PlatformError::Machine(e)),
                        None => Ok(()),
                    }
                }
                .await;
                release(&self.inner, host.clone());
                r
            }
            Target::Provisioned { ipaddr, .. } => {
                let Some(cmds) = &self.inner.opts.deprovisioning_cmds else {
                    return Ok(());
                };
                let Mode::Provision { runner } = &self.inner.mode else {
                    unreachable!()
                };
                let o = runner
                    .run(
                        cmds,
                        &[("IPADDR", ipaddr.as_str())],
                        self.inner.opts.provision_timeout,
                    )
                    .await?;
                if o.ok {
                    Ok(())
                } else {
                    Err(PlatformError::Machine(format!(
                        "the deprovisioning commands for {ipaddr} failed ({}): {}",
                        o.status,
                        redact(tail(&o.stderr, 800).trim())
                    )))
                }
            }
        }
    }

    async fn keep(&self) -> Result<Value, PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, KEPT, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(PlatformError::Machine(format!(
                "machine {} is already torn down",
                self.id
            )));
        }
        self.stop_console().await;
        Ok(match &self.target {
            Target::Host { host, marker, .. } => json!({
                "platform": "external",
                "host": host.to_string(),
                "ssh": self.addr.to_string(),
                "down": format!("remove the lines ending in {marker} from ~/.ssh/authorized_keys"),
            }),
            Target::Provisioned { ipaddr, .. } => json!({
                "platform": "external",
                "ipaddr": ipaddr,
                "ssh": self.addr.to_string(),
                "down": self.inner.opts.deprovisioning_cmds.as_ref().map(|c| format!("IPADDR={ipaddr} {c}")),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs_parse() {
        let h: HostSpec = "core@10.0.0.5:2222".parse().unwrap();
        assert_eq!(
            (h.user.as_deref(), h.host.as_str(), h.port),
            (Some("core"), "10.0.0.5", 2222)
        );
        let h: HostSpec = "board.lab".parse().unwrap();
        assert_eq!((h.user, h.host.as_str(), h.port), (None, "board.lab", 22));
        let h: HostSpec = "root@[fd00::5]:22".parse().unwrap();
        assert_eq!(h.host, "fd00::5");
        assert_eq!(h.to_string(), "root@[fd00::5]:22");
        let h: HostSpec = "fd00::7".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("fd00::7", 22));
        assert!("host:notaport".parse::<HostSpec>().is_err());
        assert!("@".parse::<HostSpec>().is_err());
    }

    #[test]
    fn addresses_come_from_the_last_line() {
        assert_eq!(
            parse_address("booting...\n10.0.0.9\n\n", 22).unwrap().host,
            "10.0.0.9"
        );
        let h = parse_address("x\n127.0.0.1:2201", 22).unwrap();
        assert_eq!((h.host.as_str(), h.port), ("127.0.0.1", 2201));
        assert!(parse_address("", 22).is_err());
        assert!(parse_address("done: see log", 22).is_err());
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), r#"'it'"'"'s'"#);
    }

    #[tokio::test]
    async fn local_runner_passes_variables() {
        let o = Runner::Local
            .run(
                "printf '%s' \"$USERDATA\"",
                &[("USERDATA", "{\"a\": 'b'}")],
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert!(o.ok);
        assert_eq!(o.stdout, "{\"a\": 'b'}");
    }
}
