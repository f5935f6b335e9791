//! QEMU clusters and machines: booting, tracking, tearing down, keeping.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bogie_harness::platform::Template;
use bogie_harness::{Cluster, ClusterSpec, Machine, MachineSpec, PlatformError};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::cmdline::{self as cl, Boot, ExtraDisk, MachinePlan, PrivateNic};
use crate::ignition::{self, PRIVATE_NETWORK_FILE};
use crate::qmp::Qmp;
use crate::snapshot::{self, Restore};
use crate::spawn::{self, Lifetime};
use crate::{BootTemplate, PlatformInner};

use crate::parts::PRIVATE_NET_PREFIX_LEN;
use crate::parts::{machine_err, machine_firmware, private_identity, QMP_TIMEOUT};
const MAX_MACHINES: u32 = 240;

pub(crate) const QMP_SOCKET: &str = "qmp.sock";
pub(crate) const OVERLAY: &str = "disk.qcow2";
const QEMU_LOG: &str = "qemu.log";
/// The machine's swtpm control socket (relative to the machine dir, to stay short).
const SWTPM_SOCKET: &str = "swtpm.sock";
/// swtpm's state directory and log, in the machine dir.
const SWTPM_STATE: &str = "tpm";
const SWTPM_LOG: &str = "swtpm.log";
const CONSOLE: &str = "console.txt";
/// What the guest wrote to its readiness port ([`crate::cmdline::READY_PORT`]).
const READY: &str = "ready.txt";
const IGNITION: &str = "ignition.json";

/// How long QEMU may take to bring up its monitor.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a clean `quit` may take before SIGKILL.
const QUIT_GRACE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: u32 = 3;
/// How often a machine waiting for its first reboot is checked.
const FIRST_BOOT_POLL: Duration = Duration::from_millis(250);
/// What the kernel prints last when it reboots (also with `quiet`: it is an emergency
/// message).
const REBOOT_MESSAGE: &str = "reboot: Restarting system";
/// The prefix of the command line a relaunch writes to `qemu.log` (not QEMU's output).
const RELAUNCH_HEADER: &str = "# relaunched after the first boot: ";
/// At most this many extra disks and extra NICs per machine (PCI slots are finite).
const MAX_EXTRA_DISKS: usize = 8;
const MAX_EXTRA_NICS: u32 = 8;

const RUNNING: u8 = 0;
const KEPT: u8 = 1;
const DESTROYED: u8 = 2;

/// A free TCP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_port() -> Result<u16, PlatformError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| PlatformError::io("finding a free port on 127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| PlatformError::io("finding a free port on 127.0.0.1", e))
}

/// The last `max` bytes of a file, lossily decoded.
fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).trim().to_string()
}

/// Connects to a unix socket whose path may exceed `sun_path` (108 bytes) by going through
/// `/proc/self/fd/<dir fd>/<name>`.
async fn connect_qmp(
    dir: &Path,
    name: &str,
    timeout: Duration,
) -> Result<Qmp, crate::qmp::QmpError> {
    let full = dir.join(name);
    if full.as_os_str().len() < 100 {
        return Qmp::connect(&full, timeout).await;
    }
    let d = std::fs::File::open(dir)?;
    use std::os::fd::AsRawFd;
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    let r = Qmp::connect(&short, timeout).await;
    drop(d);
    r
}

/// Runs `qemu-img` with a timeout; errors carry its stderr.
pub(crate) async fn qemu_img(binary: &Path, args: &[&str]) -> Result<(), PlatformError> {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| machine_err(format!("qemu-img {} timed out", args.join(" "))))?
        .map_err(|e| PlatformError::io(format!("running {}", binary.display()), e))?;
    if !out.status.success() {
        return Err(machine_err(format!(
            "qemu-img {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The virtual size in bytes of a `qcow2` or `raw` disk: the qcow2 header's size field, or
/// the raw file's length.
pub(crate) fn disk_virtual_size(path: &Path, format: &str) -> Result<u64, PlatformError> {
    let err = |e| PlatformError::io(format!("reading the size of {}", path.display()), e);
    if format == "qcow2" {
        let head = crate::detect::read_head(path, 32).map_err(err)?;
        let size = head
            .get(24..32)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| machine_err(format!("{}: a truncated qcow2 header", path.display())))?;
        Ok(size)
    } else {
        std::fs::metadata(path).map(|m| m.len()).map_err(err)
    }
}

/// The primary disk's size when it must be bigger than the image's `base` bytes: `grow`
/// bytes more (`--qemu-grow-base-disk-by`), and at least `min_gib` GiB (the test's
/// minimum); None when the image's size will do.
pub(crate) fn primary_disk_size(base: u64, grow: u64, min_gib: Option<u32>) -> Option<u64> {
    let min = min_gib.map_or(0, |g| u64::from(g) << 30);
    let want = base.saturating_add(grow).max(min);
    (want > base).then_some(want)
}

/// The extra disks of `spec` as QEMU attaches them, with their files in `dir`; refuses
/// what no QEMU can attach.
fn plan_extra_disks(spec: &MachineSpec, dir: &Path) -> Result<Vec<ExtraDisk>, PlatformError> {
    if spec.extra_disks.len() > MAX_EXTRA_DISKS {
        return Err(PlatformError::Input(format!(
            "{}: {} extra disks asked, at most {MAX_EXTRA_DISKS}",
            spec.id,
            spec.extra_disks.len()
        )));
    }
    let mut serials = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, d) in spec.extra_disks.iter().enumerate() {
        let n = i + 1;
        d.validate()
            .map_err(|e| PlatformError::Input(format!("{}: extra disk {n} ({d}): {e}", spec.id)))?;
        let serial = d.serial.clone().unwrap_or_else(|| cl::default_serial(n));
        if serial == "primary-disk" || !serials.insert(serial.clone()) {
            return Err(PlatformError::Input(format!(
                "{}: extra disk {n} ({d}): serial {serial:?} is taken",
                spec.id
            )));
        }
        out.push(ExtraDisk {
            file: dir.join(format!("extra-disk-{n}.qcow2")),
            serial,
            spec: d.clone(),
        });
    }
    Ok(out)
}

/// Kills a half-started QEMU and removes its files if booting does not complete (an error,
/// or the caller's future being dropped on timeout/cancellation).
struct BootGuard {
    child: Option<Child>,
    files: Vec<PathBuf>,
}

impl BootGuard {
    fn disarm(mut self) -> (Option<Child>, Vec<PathBuf>) {
        (self.child.take(), std::mem::take(&mut self.files))
    }
}

impl Drop for BootGuard {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A QEMU cluster: machines that share a private network.
pub struct QemuCluster {
    platform: Arc<PlatformInner>,
    spec: ClusterSpec,
    mcast: SocketAddrV4,
    tag: u8,
    next_index: AtomicU32,
    machines: Mutex<Vec<Arc<QemuMachine>>>,
    destroyed: AtomicBool,
}

impl std::fmt::Debug for QemuCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuCluster")
            .field("name", &self.spec.name)
            .field("mcast", &self.mcast)
            .finish_non_exhaustive()
    }
}

impl QemuCluster {
    pub(crate) fn new(
        platform: Arc<PlatformInner>,
        spec: ClusterSpec,
    ) -> Result<Self, PlatformError> {
        // A random group and port per cluster keeps concurrent clusters (also of other bogie
        // runs on the host) apart; MACs carry a random per-cluster byte as well.
        let r: [u8; 3] = rand::random();
        let port = 20000 + (u16::from_le_bytes([r[0], r[1]]) % 40000);
        let tag: u8 = rand::random();
        Ok(QemuCluster {
            platform,
            mcast: SocketAddrV4::new(Ipv4Addr::new(230, 77, r[2], tag), port),
            tag,
            spec,
            next_index: AtomicU32::new(0),
            machines: Mutex::new(Vec::new()),
            destroyed: AtomicBool::new(false),
        })
    }

    /// The cluster's private-network multicast group and port.
    pub fn private_network(&self) -> SocketAddrV4 {
        self.mcast
    }

    /// Boots a machine and returns it with its concrete type.
    pub async fn boot(&self, spec: MachineSpec) -> Result<Arc<QemuMachine>, PlatformError> {
        self.start(spec, None).await
    }

    /// Starts a machine from a template ([`QemuMachine::make_template`]) and returns it with
    /// its concrete type: a new overlay on the template's frozen disk, the template's
    /// memory loaded with `-incoming`, then resumed.
    pub async fn restore(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<QemuMachine>, PlatformError> {
        let restore = snapshot::load(template, &self.platform, &spec)?;
        self.start(spec, Some(restore)).await
    }

    async fn start(
        &self,
        spec: MachineSpec,
        restore: Option<Restore>,
    ) -> Result<Arc<QemuMachine>, PlatformError> {
        if self.destroyed.load(Ordering::SeqCst) {
            return Err(machine_err(format!(
                "cluster {} was destroyed",
                self.spec.name
            )));
        }
        let index = self.next_index.fetch_add(1, Ordering::SeqCst);
        if index >= MAX_MACHINES {
            return Err(machine_err(format!(
                "cluster {}: at most {MAX_MACHINES} machines",
                self.spec.name
            )));
        }
        let started = Instant::now();
        let restored = restore.is_some();
        let m = Arc::new(
            boot_machine(&self.platform, spec, self.mcast, self.tag, index, restore).await?,
        );
        if m.relaunch_pending() {
            supervise_first_boot(&m, self.platform.clone());
        }
        tracing::info!(
            machine = %m.id,
            pid = m.pid(),
            ssh_port = m.ssh_port,
            "QEMU {} in {:.1}s",
            if restored { "restored" } else { "started" },
            started.elapsed().as_secs_f64()
        );
        let late = {
            let mut list = self.machines.lock().unwrap_or_else(|p| p.into_inner());
            let late = self.destroyed.load(Ordering::SeqCst);
            if !late {
                list.push(m.clone());
            }
            late
        };
        if late {
            let _ = m.destroy().await;
            return Err(machine_err(format!(
                "cluster {} was destroyed while {} booted",
                self.spec.name, m.id
            )));
        }
        Ok(m)
    }

    /// The machines booted so far.
    pub fn machines(&self) -> Vec<Arc<QemuMachine>> {
        self.machines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl Cluster for QemuCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        let m: Arc<dyn Machine> = self.boot(spec).await?;
        Ok(m)
    }

    async fn restore_machine(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<dyn Machine>, PlatformError> {
        let m: Arc<dyn Machine> = self.restore(spec, template).await?;
        Ok(m)
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        self.destroyed.store(true, Ordering::SeqCst);
        let machines = self.machines();
        let results = futures::future::join_all(
            machines
                .iter()
                .filter(|m| m.state.load(Ordering::SeqCst) != KEPT)
                .map(|m| m.destroy()),
        )
        .await;
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }
}

async fn boot_machine(
    p: &PlatformInner,
    spec: MachineSpec,
    mcast: SocketAddrV4,
    tag: u8,
    index: u32,
    restore: Option<Restore>,
) -> Result<QemuMachine, PlatformError> {
    let dir = std::fs::canonicalize(&spec.dir)
        .map_err(|e| PlatformError::io(format!("machine dir {}", spec.dir.display()), e))?;
    // A restored machine keeps the template's private-network identity: its guest has
    // already configured it.
    let (ip, mac) = match &restore {
        Some(r) => (r.info.private_ip, r.info.mac.clone()),
        None => private_identity(tag, index),
    };

    // Ignition: add the private NIC's static address, write what QEMU will pass.
    let ignition_path = dir.join(IGNITION);
    let (ignition, private_ip) = if spec.ignition.trim().is_empty() {
        (None, None)
    } else {
        let unit = ignition::private_network_unit(&mac, ip, PRIVATE_NET_PREFIX_LEN);
        let (text, private_ip) = match ignition::add_file(
            &spec.ignition,
            PRIVATE_NETWORK_FILE,
            &unit,
        ) {
            Ok(Some(with_net)) => (with_net, Some(ip)),
            Ok(None) => {
                tracing::warn!(machine = %spec.id, "config is not Ignition JSON: no private network address");
                (spec.ignition.clone(), None)
            }
            Err(e) => {
                return Err(machine_err(format!(
                    "{}: cannot add the private network to the Ignition config: {e}",
                    spec.id
                )))
            }
        };
        tokio::fs::write(&ignition_path, text)
            .await
            .map_err(|e| PlatformError::io(format!("writing {}", ignition_path.display()), e))?;
        (Some(ignition_path), private_ip)
    };

    let mut guard = BootGuard {
        child: None,
        files: Vec::new(),
    };
    let img = p.qemu_img.as_path();
    let path_arg = |path: &Path| crate::cmdline::path_str(path).map(str::to_string);

    // The overlay on the base disk (a restored machine's on the template's frozen disk),
    // never a copy; then extra disks.
    let overlay = dir.join(OVERLAY);
    let _ = std::fs::remove_file(&overlay);
    guard.files.push(overlay.clone());
    let (backing, backing_format) = match &restore {
        Some(r) => (r.disk.clone(), "qcow2"),
        None => (p.disk.clone(), p.disk_format.as_str()),
    };
    // A restored machine's overlay inherits the template's (already grown) size.
    let size = match &restore {
        Some(_) => None,
        None if p.opts.grow_base_disk_by > 0 || spec.primary_disk_gib.is_some() => {
            let base = disk_virtual_size(&p.disk, &p.disk_format)?;
            primary_disk_size(base, p.opts.grow_base_disk_by, spec.primary_disk_gib)
        }
        None => None,
    };
    let mut create = vec![
        "create".to_string(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        backing_format.into(),
        "-b".into(),
        path_arg(&backing)?,
        path_arg(&overlay)?,
    ];
    if let Some(bytes) = size {
        tracing::debug!(machine = %spec.id, bytes, "primary disk grown");
        create.push(bytes.to_string());
    }
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    qemu_img(img, &create).await?;
    let extra_disks = plan_extra_disks(&spec, &dir)?;
    for d in &extra_disks {
        let _ = std::fs::remove_file(&d.file);
        guard.files.push(d.file.clone());
        qemu_img(
            img,
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                &path_arg(&d.file)?,
                &format!("{}G", d.spec.size_gib),
            ],
        )
        .await?;
    }
    if spec.extra_nics > MAX_EXTRA_NICS {
        return Err(PlatformError::Input(format!(
            "{}: {} extra NICs asked, at most {MAX_EXTRA_NICS}",
            spec.id, spec.extra_nics
        )));
    }
    let extra_nics = (0..spec.extra_nics)
        .map(bogie_harness::platform::extra_nic_mac)
        .collect();

    // With first-boot kernel arguments, the first QEMU boots with them and `-no-reboot`;
    // the guest's first reboot ends it and the machine is relaunched with `later_boot`.
    let mut later_boot = None;
    let boot = match &p.boot {
        _ if restore.is_some() => {
            if !spec.first_boot_kernel_args.is_empty() {
                return Err(machine_err(format!(
                    "{}: a machine with first-boot kernel arguments cannot start from a template",
                    spec.id
                )));
            }
            let r = restore.as_ref().expect("checked");
            r.boot(&dir, &mut guard.files).await?
        }
        BootTemplate::DirectKernel {
            kernel,
            initrd,
            args,
        } => {
            let append = snapshot::join_args(args, &spec.kernel_args);
            let boot = |append: String| Boot::DirectKernel {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                append,
            };
            if spec.first_boot_kernel_args.is_empty() {
                boot(append)
            } else {
                let first = snapshot::join_args(&append, &spec.first_boot_kernel_args);
                later_boot = Some(boot(append));
                boot(first)
            }
        }
        BootTemplate::Firmware(fw) => {
            if !spec.kernel_args.is_empty() || !spec.first_boot_kernel_args.is_empty() {
                tracing::warn!(machine = %spec.id, "kernel arguments are ignored for firmware boot");
            }
            Boot::Firmware(machine_firmware(fw, &dir, &mut guard.files).await?)
        }
    };

    let (memory_mb, cpus) = match &restore {
        Some(r) => (r.info.memory_mb, r.info.cpus),
        None => (
            spec.memory_mb.unwrap_or(p.opts.memory_mb),
            spec.cpus.unwrap_or(p.opts.cpus).max(1),
        ),
    };
    let mut plan = MachinePlan {
        name: spec.id.clone(),
        arch: p.opts.arch,
        accel: p.accel,
        memory_mb,
        cpus,
        boot,
        disk: overlay,
        extra_disks,
        extra_nics,
        ignition,
        fw_cfg_names: p.fw_cfg_names.clone(),
        ssh_port: 0,
        console: dir.join(CONSOLE),
        ready: Some(dir.join(READY)),
        qmp_socket: PathBuf::from(QMP_SOCKET),
        private_nic: Some(PrivateNic {
            mcast,
            mac: mac.clone(),
        }),
        tpm_socket: None,
        extra_args: p.opts.qemu_options.clone(),
        incoming: restore.as_ref().map(Restore::incoming_uri),
        no_reboot: later_boot.is_some(),
        console_append: false,
    };
    let lifetime = if spec.may_outlive {
        Lifetime::Detached
    } else {
        Lifetime::TiedToBogie
    };
    // Killed if this start fails (swtpm ends by itself only after QEMU has connected).
    let mut swtpm = SwtpmGuard(match (spec.tpm, &p.swtpm) {
        (false, _) => None,
        (true, None) => {
            return Err(PlatformError::Input(format!(
                "{}: the test needs a TPM, and swtpm is not installed (Debian packages swtpm, swtpm-tools)",
                spec.id
            )))
        }
        (true, Some(bin)) => {
            let child = start_swtpm(bin, &dir, lifetime).await?;
            plan.tpm_socket = Some(PathBuf::from(SWTPM_SOCKET));
            Some(child)
        }
    });
    let log_path = dir.join(QEMU_LOG);

    for attempt in 1..=PORT_ATTEMPTS {
        plan.ssh_port = free_port()?;
        match launch(p, &plan, &dir, lifetime, &mut guard, None).await {
            Ok((mut qmp, pid)) => {
                if restore.is_some() {
                    // -incoming: load the template's memory, then resume (the template was
                    // paused when saved, so QEMU does not start it by itself).
                    if let Err(e) = snapshot::resume_incoming(&mut qmp).await {
                        return Err(machine_err(format!(
                            "{}: restoring from a template: {e}; see {}",
                            spec.id,
                            log_path.display()
                        )));
                    }
                }
                let relaunch = later_boot.take().map(|boot| MachinePlan {
                    boot,
                    no_reboot: false,
                    console_append: true,
                    ..plan.clone()
                });
                let (child, scratch) = guard.disarm();
                return Ok(QemuMachine {
                    id: spec.id,
                    dir,
                    pid: AtomicU32::new(pid),
                    ssh_port: plan.ssh_port,
                    private_ip,
                    may_outlive: spec.may_outlive,
                    scratch: Mutex::new(scratch),
                    overlay: Mutex::new(plan.disk.clone()),
                    plan,
                    child: tokio::sync::Mutex::new(child),
                    swtpm: Mutex::new(swtpm.0.take()),
                    swtpm_binary: p.swtpm.clone().filter(|_| spec.tpm),
                    qmp: tokio::sync::Mutex::new(Some(qmp)),
                    state: AtomicU8::new(RUNNING),
                    relaunch: Mutex::new(relaunch),
                    supervisor: Mutex::new(None),
                });
            }
            Err(Launch::Exited(status, log)) => {
                guard.child = None;
                if log.to_lowercase().contains("host forwarding") && attempt < PORT_ATTEMPTS {
                    tracing::info!(machine = %spec.id, port = plan.ssh_port, "SSH port was taken; retrying");
                    continue;
                }
                return Err(machine_err(format!(
                    "{}: QEMU exited at start ({status}): {}",
                    spec.id,
                    if log.is_empty() { "no output" } else { &log }
                )));
            }
            Err(Launch::Failed(why)) => {
                return Err(machine_err(format!(
                    "{}: QEMU did not start: {why}; see {}",
                    spec.id,
                    log_path.display()
                )));
            }
            Err(Launch::Platform(e)) => return Err(e),
        }
    }
    Err(machine_err(format!(
        "{}: no free SSH port after {PORT_ATTEMPTS} attempts",
        spec.id
    )))
}

/// Why [`launch`] did not give a running QEMU.
enum Launch {
    /// QEMU exited at start, with its output (the command line left out).
    Exited(ExitStatus, String),
    /// QEMU did not answer on QMP.
    Failed(String),
    /// Writing its log or starting it failed.
    Platform(PlatformError),
}

/// Starts QEMU for `plan` in `dir` (its child goes into `guard`) and waits until it answers
/// on QMP. The command line starts `qemu.log`; a relaunch (`relaunch_of` names the machine)
/// appends it, marked, to the log instead.
async fn launch(
    p: &PlatformInner,
    plan: &MachinePlan,
    dir: &Path,
    lifetime: Lifetime,
    guard: &mut BootGuard,
    relaunch_of: Option<&str>,
) -> Result<(Qmp, u32), Launch> {
    let log_path = dir.join(QEMU_LOG);
    let args = plan.args().map_err(Launch::Platform)?;
    let _ = std::fs::remove_file(dir.join(QMP_SOCKET));
    let mut header = format!("{}", p.binary.display());
    for a in &args {
        header.push(' ');
        header.push_str(a);
    }
    header.push('\n');
    tracing::debug!(machine = %plan.name, "{}", header.trim_end());
    let io = |e| {
        Launch::Platform(PlatformError::io(
            format!("writing {}", log_path.display()),
            e,
        ))
    };
    let log = match relaunch_of {
        None => {
            std::fs::write(&log_path, &header).map_err(io)?;
            std::fs::OpenOptions::new().append(true).open(&log_path)
        }
        Some(_) => std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(format!("{RELAUNCH_HEADER}{header}").as_bytes())?;
                Ok(f)
            }),
    }
    .map_err(io)?;
    let log2 = log.try_clone().map_err(io)?;
    let start_len = std::fs::metadata(&log_path).map_or(0, |m| m.len()) as usize;
    let mut cmd = Command::new(&p.binary);
    cmd.args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let child = spawn::spawn(cmd, lifetime).await.map_err(|e| {
        Launch::Platform(PlatformError::io(
            format!("starting {}", p.binary.display()),
            e,
        ))
    })?;
    let pid = child.id().unwrap_or(0);
    guard.child = Some(child);
    match wait_ready(guard, dir).await {
        Ok(qmp) => Ok((qmp, pid)),
        Err(Startup::Exited(status)) => {
            // QEMU's own output: what it wrote after the command line.
            let bytes = std::fs::read(&log_path).unwrap_or_default();
            let out = String::from_utf8_lossy(bytes.get(start_len..).unwrap_or_default());
            let out = out.trim();
            let from = out.len().saturating_sub(2000);
            let from = (from..=out.len())
                .find(|i| out.is_char_boundary(*i))
                .unwrap_or(out.len());
            Err(Launch::Exited(status, out[from..].trim().to_string()))
        }
        Err(Startup::Failed(why)) => Err(Launch::Failed(why)),
    }
}

/// Starts the machine's TPM 2.0 emulator with its state in `<dir>/tpm` and waits for its
/// control socket. It lives as QEMU does (`lifetime`) and ends itself once QEMU, its only
/// client, disconnects.
async fn start_swtpm(bin: &Path, dir: &Path, lifetime: Lifetime) -> Result<Child, PlatformError> {
    let state = dir.join(SWTPM_STATE);
    std::fs::create_dir_all(&state)
        .map_err(|e| PlatformError::io(format!("creating {}", state.display()), e))?;
    let log = dir.join(SWTPM_LOG);
    let sock = dir.join(SWTPM_SOCKET);
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(bin);
    cmd.args(["socket", "--tpm2", "--terminate", "--tpmstate"])
        .arg(format!("dir={}", crate::cmdline::path_str(&state)?))
        .args(["--ctrl", &format!("type=unixio,path={SWTPM_SOCKET}")])
        .args([
            "--log",
            &format!("file={},level=1", crate::cmdline::path_str(&log)?),
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn::spawn(cmd, lifetime)
        .await
        .map_err(|e| PlatformError::io(format!("starting {}", bin.display()), e))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(machine_err(format!(
                "swtpm exited at start ({status}): {}",
                tail(&log, 500)
            )));
        }
        if Instant::now() > deadline {
            return Err(machine_err(format!(
                "swtpm did not create its socket within 10s: {}",
                tail(&log, 500)
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(child)
}

/// A swtpm that is killed when dropped, until handed to its machine.
struct SwtpmGuard(Option<Child>);

impl Drop for SwtpmGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Stops a machine's swtpm (normally gone already: it ends with QEMU's connection).
fn stop_swtpm(swtpm: &Mutex<Option<Child>>) {
    if let Some(mut c) = swtpm.lock().unwrap_or_else(|p| p.into_inner()).take() {
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.start_kill();
        }
    }
}

/// Watches a machine that boots with first-boot kernel arguments: when its first QEMU ends
/// because the guest rebooted (`-no-reboot`), starts it again with the later boots'
/// arguments, as if the reboot had happened in place. A guest that powered off stays off.
/// Holds the machine only while it acts, so dropping the machine ends the watch.
fn supervise_first_boot(m: &Arc<QemuMachine>, platform: Arc<PlatformInner>) {
    let weak = Arc::downgrade(m);
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(FIRST_BOOT_POLL).await;
            let Some(m) = weak.upgrade() else { return };
            if m.state.load(Ordering::SeqCst) != RUNNING {
                return;
            }
            let mut child = m.child.lock().await;
            let status = match child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => continue,
                Some(Ok(Some(status))) => status,
                _ => return,
            };
            let plan = m.relaunch.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let Some(plan) = plan.filter(|_| status.success()) else {
                m.relaunch.lock().unwrap_or_else(|p| p.into_inner()).take();
                return;
            };
            if !m.ended_by_guest_reboot().await {
                tracing::info!(machine = %m.id, "the guest powered off during its first boot");
                m.relaunch.lock().unwrap_or_else(|p| p.into_inner()).take();
                return;
            }
            tracing::info!(machine = %m.id, "first boot over: starting QEMU again with the later boots' kernel arguments");
            let result = m.start_again(&platform, &plan).await;
            m.relaunch.lock().unwrap_or_else(|p| p.into_inner()).take();
            match result {
                Ok(new) => {
                    tracing::info!(machine = %m.id, pid = m.pid(), "QEMU relaunched");
                    *child = Some(new);
                }
                Err(e) => tracing::warn!(machine = %m.id, "{e}"),
            }
            return;
        }
    });
    *m.supervisor.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
}

enum Startup {
    Exited(ExitStatus),
    Failed(String),
}

/// Waits until QEMU answers on QMP (its devices are all set up then) or exits.
async fn wait_ready(guard: &mut BootGuard, dir: &Path) -> Result<Qmp, Startup> {
    let deadline = Instant::now() + START_TIMEOUT;
    let exited = |guard: &mut BootGuard| -> Result<Option<ExitStatus>, Startup> {
        match guard.child.as_mut().map(Child::try_wait) {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(Startup::Failed(format!("waiting for QEMU: {e}"))),
            None => Err(Startup::Failed("no QEMU process".into())),
        }
    };
    loop {
        if let Some(status) = exited(guard)? {
            return Err(Startup::Exited(status));
        }
        if dir.join(QMP_SOCKET).exists() {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let mut q = connect_qmp(dir, QMP_SOCKET, left.max(Duration::from_secs(1))).await?;
                let status = q.query_status(QMP_TIMEOUT).await?;
                Ok::<_, crate::qmp::QmpError>((q, status))
            };
            match attempt.await {
                Ok((q, status)) => {
                    tracing::debug!("QEMU run state: {status}");
                    return Ok(q);
                }
                Err(e) => {
                    // Most likely QEMU is exiting (e.g. a netdev failed): give it a moment.
                    for _ in 0..40 {
                        if let Some(status) = exited(guard)? {
                            return Err(Startup::Exited(status));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if Instant::now() >= deadline {
                        return Err(Startup::Failed(e.to_string()));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Startup::Failed(format!(
                "no QMP socket after {}s",
                START_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One QEMU machine.
pub struct QemuMachine {
    id: String,
    dir: PathBuf,
    /// QEMU's pid (a relaunch after the first boot changes it).
    pid: AtomicU32,
    ssh_port: u16,
    private_ip: Option<Ipv4Addr>,
    may_outlive: bool,
    /// Files removed on teardown: the overlay, extra disks, the UEFI vars copy.
    pub(crate) scratch: Mutex<Vec<PathBuf>>,
    /// The disk the machine writes to (changes when it is frozen into a template).
    pub(crate) overlay: Mutex<PathBuf>,
    /// How it was started (what a restore from it must repeat).
    pub(crate) plan: MachinePlan,
    child: tokio::sync::Mutex<Option<Child>>,
    /// The machine's TPM emulator, when it has one; it exits when QEMU lets go of its
    /// socket (`--terminate`) and is killed at teardown in any case.
    swtpm: Mutex<Option<Child>>,
    /// The swtpm a relaunch starts again on the same state (machines with a TPM).
    swtpm_binary: Option<PathBuf>,
    pub(crate) qmp: tokio::sync::Mutex<Option<Qmp>>,
    state: AtomicU8,
    /// A machine booted with first-boot kernel arguments, until its first reboot: how QEMU
    /// is started again then (the later boots' arguments, the same disk, SSH port and
    /// console).
    relaunch: Mutex<Option<MachinePlan>>,
    /// The task that watches for that first reboot.
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for QemuMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuMachine")
            .field("id", &self.id)
            .field("pid", &self.pid())
            .field("ssh_port", &self.ssh_port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl QemuMachine {
    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// The machine's artifact directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The QMP socket's path.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join(QMP_SOCKET)
    }

    /// The machine's qcow2 overlay disk (the one it writes to now).
    pub fn overlay(&self) -> PathBuf {
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Freezes the running machine into a template under `dir`: pauses it, moves its disk
    /// writes to a new overlay (the old one becomes the template's read-only disk), saves
    /// its memory with `migrate`, and resumes it. The pause lasts about as long as writing
    /// the memory file (a second or two for a 1 GiB guest).
    pub async fn make_template(&self, dir: &Path) -> Result<Template, PlatformError> {
        let live = snapshot::Live {
            id: &self.id,
            dir: &self.dir,
            private_ip: self.private_ip.map(IpAddr::V4),
            plan: &self.plan,
            overlay: &self.overlay,
            scratch: &self.scratch,
            qmp: &self.qmp,
        };
        snapshot::make_template(live, dir).await
    }

    /// Runs a QMP command on the machine's monitor connection (e.g. for snapshots).
    pub async fn qmp_execute(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, PlatformError> {
        let mut q = self.qmp.lock().await;
        let Some(q) = q.as_mut() else {
            return Err(machine_err(format!("{}: no QMP connection", self.id)));
        };
        q.execute(command, arguments, timeout)
            .await
            .map_err(|e| machine_err(format!("{}: {e}", self.id)))
    }

    /// Runs an HMP command through QMP (`savevm`, `info ...`) and returns its output.
    pub async fn human_monitor_command(
        &self,
        command_line: &str,
        timeout: Duration,
    ) -> Result<String, PlatformError> {
        let r = self
            .qmp_execute(
                "human-monitor-command",
                Some(json!({ "command-line": command_line })),
                timeout,
            )
            .await?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Whether the machine still runs its first boot, to be relaunched at its first reboot.
    fn relaunch_pending(&self) -> bool {
        self.relaunch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn stop_supervisor(&self) {
        if let Some(h) = self
            .supervisor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
    }

    /// Whether the QEMU that just ended did so because the guest rebooted (not powered
    /// off): its `SHUTDOWN` event says `guest-reset`, or, without one, the console ends
    /// with the kernel's reboot message.
    async fn ended_by_guest_reboot(&self) -> bool {
        let events = match self.qmp.lock().await.take() {
            Some(mut q) => q.events_until_closed(Duration::from_secs(2)).await,
            None => Vec::new(),
        };
        let reason = events
            .iter()
            .rev()
            .find(|e| e.get("event").and_then(Value::as_str) == Some("SHUTDOWN"))
            .and_then(|e| e.pointer("/data/reason"))
            .and_then(Value::as_str)
            .map(str::to_string);
        match reason {
            Some(r) => r == "guest-reset",
            None => tail(&self.dir.join(CONSOLE), 4096).contains(REBOOT_MESSAGE),
        }
    }

    /// Starts QEMU again after the first boot: `plan` (the later boots' kernel arguments,
    /// no `-no-reboot`, the console appended to) on the same disk and SSH port, with its
    /// swtpm started again on the TPM's state. Returns the new QEMU.
    async fn start_again(
        &self,
        p: &PlatformInner,
        plan: &MachinePlan,
    ) -> Result<Child, PlatformError> {
        let lifetime = if self.may_outlive {
            Lifetime::Detached
        } else {
            Lifetime::TiedToBogie
        };
        let mut swtpm = SwtpmGuard(match &self.swtpm_binary {
            Some(bin) => {
                stop_swtpm(&self.swtpm);
                Some(start_swtpm(bin, &self.dir, lifetime).await?)
            }
            None => None,
        });
        let mut guard = BootGuard {
            child: None,
            files: Vec::new(),
        };
        let log = self.dir.join(QEMU_LOG);
        match launch(p, plan, &self.dir, lifetime, &mut guard, Some(&self.id)).await {
            Ok((qmp, pid)) => {
                self.pid.store(pid, Ordering::SeqCst);
                *self.qmp.lock().await = Some(qmp);
                *self.swtpm.lock().unwrap_or_else(|p| p.into_inner()) = swtpm.0.take();
                let (child, _) = guard.disarm();
                child.ok_or_else(|| machine_err(format!("{}: no QEMU process", self.id)))
            }
            Err(Launch::Exited(status, out)) => Err(machine_err(format!(
                "{}: QEMU exited at its relaunch ({status}): {}",
                self.id,
                if out.is_empty() { "no output" } else { &out }
            ))),
            Err(Launch::Failed(why)) => Err(machine_err(format!(
                "{}: QEMU did not start again: {why}; see {}",
                self.id,
                log.display()
            ))),
            Err(Launch::Platform(e)) => Err(e),
        }
    }

    fn remove_scratch(&self) {
        let scratch = self
            .scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for f in scratch.iter().chain(std::iter::once(&self.qmp_socket())) {
            if let Err(e) = std::fs::remove_file(f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", f.display());
                }
            }
        }
    }
}

#[async_trait]
impl Machine for QemuMachine {
    fn id(&self) -> &str {
        &self.id
    }

    fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ssh_port))
    }

    fn private_ip(&self) -> Option<IpAddr> {
        self.private_ip.map(IpAddr::V4)
    }

    fn ready_file(&self) -> Option<PathBuf> {
        Some(self.dir.join(READY))
    }

    async fn console_output(&self) -> Result<String, PlatformError> {
        let path = self.dir.join(CONSOLE);
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(PlatformError::io(format!("reading {}", path.display()), e)),
        }
    }

    async fn platform_log(&self) -> String {
        // The file starts with the command line bogie ran; the rest is QEMU's own output.
        let text = tokio::fs::read(self.dir.join(QEMU_LOG))
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match text.split_once('\n') {
            Some((_, rest)) => rest
                .lines()
                .filter(|l| !l.starts_with(RELAUNCH_HEADER))
                .map(|l| format!("{l}\n"))
                .collect(),
            None => String::new(),
        }
    }

    async fn is_running(&self) -> bool {
        match self.child.lock().await.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            // The first boot's QEMU ended cleanly and its relaunch is about to start.
            Some(Ok(Some(status))) => status.success() && self.relaunch_pending(),
            _ => false,
        }
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        self.stop_supervisor();
        let mut guard = self.child.lock().await;
        let Some(mut child) = guard.take() else {
            return Ok(());
        };
        self.state.store(DESTROYED, Ordering::SeqCst);
        let mut result = Ok(());
        if matches!(child.try_wait(), Ok(None)) {
            let qmp = self.qmp.lock().await.take();
            let asked = match qmp {
                Some(mut q) => match q.quit(Duration::from_secs(3)).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(machine = %self.id, "QMP quit: {e}");
                        false
                    }
                },
                None => false,
            };
            if !asked {
                // SAFETY: plain kill(2); the pid is our unreaped child, so it cannot be reused.
                unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
            }
            if tokio::time::timeout(QUIT_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(machine = %self.id, pid = self.pid(), "QEMU ignored quit; killing it");
                let _ = child.start_kill();
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    result = Err(machine_err(format!(
                        "{}: QEMU (pid {}) did not die after SIGKILL",
                        self.id,
                        self.pid()
                    )));
                }
            }
        }
        *self.qmp.lock().await = None;
        stop_swtpm(&self.swtpm);
        self.remove_scratch();
        tracing::debug!(machine = %self.id, "destroyed");
        result
    }

    async fn make_template(&self, dir: &Path) -> Result<Template, PlatformError> {
        QemuMachine::make_template(self, dir).await
    }

    async fn keep(&self) -> Result<Value, PlatformError> {
        if !self.may_outlive {
            return Err(machine_err(format!(
                "{}: the machine was not started with may_outlive, so it dies with bogie and cannot be kept",
                self.id
            )));
        }
        let mut child = self.child.lock().await;
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => {}
            None => {
                return Err(machine_err(format!(
                    "{}: the machine was destroyed",
                    self.id
                )))
            }
            Some(_) => return Err(machine_err(format!("{}: QEMU is not running", self.id))),
        }
        self.state.store(KEPT, Ordering::SeqCst);
        self.stop_supervisor();
        if self.relaunch_pending() {
            // Nothing relaunches a kept machine: let its reboots reset it in place (it keeps
            // the first boot's kernel arguments then).
            let mut q = self.qmp.lock().await;
            if let Some(q) = q.as_mut() {
                if let Err(e) = q
                    .execute("set-action", Some(json!({"reboot": "reset"})), QMP_TIMEOUT)
                    .await
                {
                    tracing::warn!(machine = %self.id, "set-action reboot=reset: {e}");
                }
            }
            tracing::warn!(machine = %self.id, "kept before its first reboot: later boots keep the first-boot kernel arguments");
        }
        // The TPM stays with the kept QEMU (it ends when `bogie down` stops QEMU): not
        // killed when this handle is dropped.
        if let Some(c) = self.swtpm.lock().unwrap_or_else(|p| p.into_inner()).take() {
            std::mem::forget(c);
        }
        // Free the monitor for `bogie down` or a user.
        *self.qmp.lock().await = None;
        Ok(json!({
            "platform": "qemu",
            "id": self.id,
            "pid": self.pid(),
            "ssh_port": self.ssh_port,
            "private_ip": self.private_ip.map(|ip| ip.to_string()),
            "qmp": self.qmp_socket(),
            "dir": self.dir,
            "disks": self.scratch.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }))
    }
}

impl Drop for QemuMachine {
    fn drop(&mut self) {
        self.stop_supervisor();
        if self.state.load(Ordering::SeqCst) != RUNNING {
            return;
        }
        let pid = self.pid();
        if let Some(c) = self.child.get_mut().as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                tracing::warn!(machine = %self.id, pid, "machine dropped without destroy; killing QEMU");
                let _ = c.start_kill();
            }
        }
        stop_swtpm(&self.swtpm);
        self.remove_scratch();
    }
}

/// Tears down a machine kept by an earlier run, from the JSON [`Machine::keep`] returned.
///
/// The process is only signalled when `/proc/<pid>/cmdline` shows a QEMU started for that
/// machine directory, so a recycled pid is never killed. Returns `Ok(false)` when the
/// machine was already gone. Its scratch disks are removed either way.
pub fn down(kept: &Value) -> Result<bool, PlatformError> {
    let bad = |what: &str| PlatformError::Input(format!("kept machine description: {what}"));
    if kept.get("platform").and_then(Value::as_str) != Some("qemu") {
        return Err(bad("not a qemu machine"));
    }
    let pid = kept
        .get("pid")
        .and_then(Value::as_u64)
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 1)
        .ok_or_else(|| bad("missing or invalid pid"))?;
    let dir = kept
        .get("dir")
        .and_then(Value::as_str)
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| bad("missing or relative dir"))?;
    let cleanup = || {
        let disks = kept.get("disks").and_then(Value::as_array);
        for d in disks.into_iter().flatten().filter_map(Value::as_str) {
            // Only files inside the machine's directory.
            if Path::new(d).parent() == Some(Path::new(dir)) {
                let _ = std::fs::remove_file(d);
            }
        }
        let _ = std::fs::remove_file(Path::new(dir).join(QMP_SOCKET));
    };
    if !is_our_qemu(pid, dir) {
        cleanup();
        return Ok(false);
    }
    // SAFETY: plain kill(2) on a pid just verified to be this machine's QEMU.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if !wait_gone(pid, dir, Duration::from_secs(10)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if !wait_gone(pid, dir, Duration::from_secs(10)) {
            return Err(PlatformError::Machine(format!(
                "QEMU pid {pid} ({dir}) did not die after SIGKILL"
            )));
        }
    }
    cleanup();
    Ok(true)
}

/// Whether `pid` is a live (not zombie) QEMU whose command line names `dir`.
fn is_our_qemu(pid: i32, dir: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let Some(argv0) = args.next() else {
        return false;
    };
    let is_qemu = Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("qemu"));
    let needle = format!("{}/", dir.trim_end_matches('/'));
    is_qemu && args.any(|a| a.contains(&needle))
}

fn wait_gone(pid: i32, dir: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !is_our_qemu(pid, dir) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_our_qemu(pid, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bogie_harness::platform::DiskSpec;

    #[test]
    fn private_identities_are_fixed_per_index() {
        let (ip, mac) = private_identity(0xab, 0);
        assert_eq!(ip, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(mac, "52:54:00:77:ab:0a");
        let (ip, mac) = private_identity(0xab, 5);
        assert_eq!(ip, Ipv4Addr::new(10, 77, 0, 15));
        assert_eq!(mac, "52:54:00:77:ab:0f");
    }

    #[test]
    fn the_primary_disk_grows_by_the_flag_and_to_the_tests_minimum() {
        const G: u64 = 1 << 30;
        let base = 3 * G + 12345;
        assert_eq!(primary_disk_size(base, 0, None), None);
        assert_eq!(primary_disk_size(base, G, None), Some(base + G));
        assert_eq!(primary_disk_size(base, 0, Some(10)), Some(10 * G));
        // The bigger of the two wins; a minimum below the image's size changes nothing.
        assert_eq!(primary_disk_size(base, G, Some(10)), Some(10 * G));
        assert_eq!(primary_disk_size(base, 8 * G, Some(10)), Some(base + 8 * G));
        assert_eq!(primary_disk_size(base, 0, Some(2)), None);
    }

    #[test]
    fn virtual_sizes_come_from_the_qcow2_header_or_the_raw_length() {
        let d = tempfile::tempdir().unwrap();
        let q = d.path().join("d.qcow2");
        let mut head = b"QFI\xfb\0\0\0\x03".to_vec();
        head.resize(24, 0);
        head.extend_from_slice(&(5u64 << 30).to_be_bytes());
        head.resize(512, 0);
        std::fs::write(&q, &head).unwrap();
        assert_eq!(disk_virtual_size(&q, "qcow2").unwrap(), 5 << 30);
        assert_eq!(disk_virtual_size(&q, "raw").unwrap(), 512);
        std::fs::write(&q, b"QFI").unwrap();
        assert!(disk_virtual_size(&q, "qcow2").is_err());
    }

    #[test]
    fn extra_disks_get_default_serials_and_taken_serials_are_refused() {
        let spec = |disks: Vec<DiskSpec>| MachineSpec {
            id: "m1".into(),
            extra_disks: disks,
            ..MachineSpec::default()
        };
        let dir = Path::new("/out/m1");
        let disks = plan_extra_disks(
            &spec(vec![DiskSpec::new(1), DiskSpec::new(2).serial("data")]),
            dir,
        )
        .unwrap();
        assert_eq!(disks[0].serial, "extra-disk-1");
        assert_eq!(disks[0].file, dir.join("extra-disk-1.qcow2"));
        assert_eq!(disks[1].serial, "data");
        for bad in [
            vec![DiskSpec::new(1).serial("x"), DiskSpec::new(1).serial("x")],
            vec![DiskSpec::new(1).serial("primary-disk")],
            vec![DiskSpec::new(1), DiskSpec::new(1).serial("extra-disk-1")],
            vec![DiskSpec::new(0)],
            vec![DiskSpec::new(1); MAX_EXTRA_DISKS + 1],
        ] {
            let e = plan_extra_disks(&spec(bad), dir).unwrap_err();
            assert!(matches!(e, PlatformError::Input(_)), "{e}");
        }
    }

    #[test]
    fn down_refuses_bad_input_and_never_kills_a_stranger() {
        assert!(down(&json!({"platform": "aws", "pid": 5, "dir": "/x"})).is_err());
        assert!(down(&json!({"platform": "qemu", "dir": "/x"})).is_err());
        assert!(down(&json!({"platform": "qemu", "pid": 5, "dir": "x"})).is_err());
        // A live process that is not QEMU (this test) is left alone.
        let me = std::process::id();
        let r = down(&json!({"platform": "qemu", "pid": me, "dir": "/tmp"})).unwrap();
        assert!(!r);
        // A pid that does not exist.
        let r = down(&json!({"platform": "qemu", "pid": 0x3fff_fff0u32, "dir": "/tmp"})).unwrap();
        assert!(!r);
    }
}
