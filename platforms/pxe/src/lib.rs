//! bogie's PXE platform: machines boot over the network through iPXE, from bogie's own
//! HTTP boot server.
//!
//! For each machine the boot server (on a loopback port) serves an iPXE script that loads
//! the image's kernel and initrd over HTTP and boots them with the image's kernel arguments,
//! and the machine's rendered Ignition config. How the guest gets that config is
//! [`IgnitionDelivery`]: as on bare metal, `ignition.config.url=` on the kernel command line
//! pointing at the config on the boot server (`ignition.platform.id=metal`); or, for images
//! whose Ignition runs with the `qemu` provider (the manifest names a `fw_cfg_name`, as
//! bogie's test image does), QEMU's fw_cfg.
//!
//! The machines here are QEMU guests standing in for bare metal: the guest firmware runs
//! QEMU's iPXE option ROM (`-boot n`, no `-kernel`), whose DHCP answer from user-mode
//! networking names the script (`bootfile=http://10.0.2.2:PORT/…`; the guest reaches host
//! loopback as 10.0.2.2). Where the root file system lives is [`PxeRoot`]: by default, for
//! an image that can mount its root from the network (manifest `contains` `nbd-root`), the
//! guest has no disk at all and its initramfs mounts an overlay of the image's disk that
//! bogie serves over NBD (`qemu-nbd` on a loopback port, one per machine); otherwise the
//! overlay is attached as a local disk. The boot server's access log is written to
//! `<machine>/pxe-http.log`, qemu-nbd's to `<machine>/qemu-nbd.log`.
//!
//! Only amd64 guests: an arm64 board in a lab is tested with `-p external`.

mod http;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bogie_harness::{
    Arch, Cluster, ClusterSpec, ImageInfo, Machine, MachineSpec, Platform, PlatformError,
};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

pub use http::{Access, BootServer, Content};

/// Where Debian's `ipxe-qemu` puts QEMU's iPXE option ROMs.
pub const IPXE_ROM_DIR: &str = "/usr/lib/ipxe/qemu";
/// The address of the host as QEMU user-mode networking shows it to the guest.
pub const HOST_FROM_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// How a network-booted guest gets its Ignition config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnitionDelivery {
    /// `ignition.config.url=` on the kernel command line, naming the config on bogie's boot
    /// server, with `ignition.platform.id=metal` (what bare metal does).
    Url,
    /// QEMU fw_cfg, for images whose Ignition runs with the `qemu` provider. The URL is then
    /// left off the command line, because Ignition prefers a URL there to fw_cfg.
    FwCfg,
}

impl IgnitionDelivery {
    /// What suits an image: fw_cfg when its manifest names a `fw_cfg_name`, else the URL.
    pub fn for_image(image: &ImageInfo) -> IgnitionDelivery {
        match image.manifest.as_ref().and_then(|m| m.fw_cfg_name.as_ref()) {
            Some(_) => IgnitionDelivery::FwCfg,
            None => IgnitionDelivery::Url,
        }
    }

    /// Parses `--pxe-ignition` (`auto`, `url`, `fw-cfg`); `auto` is [`Self::for_image`].
    pub fn parse(s: &str, image: &ImageInfo) -> Option<IgnitionDelivery> {
        match s {
            "auto" => Some(IgnitionDelivery::for_image(image)),
            "url" => Some(IgnitionDelivery::Url),
            "fw-cfg" | "fw_cfg" => Some(IgnitionDelivery::FwCfg),
            _ => None,
        }
    }
}

/// Where a network-booted guest's root file system lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PxeRoot {
    /// On the network: the guest has no disk; bogie serves an overlay of the image's disk
    /// over NBD (`qemu-nbd`, export `root`, on a loopback port) and the guest's initramfs
    /// mounts it (`root=/dev/nbd0 nbdroot=10.0.2.2:PORT/root ip=dhcp`, Debian's
    /// `nbd-client` initramfs support). Needs `nbd-root` in the manifest's `contains`.
    Nbd,
    /// The overlay of the image's disk attached as the guest's local disk (a diskful
    /// machine that boots its kernel over the network).
    Disk,
    /// Neither: the kernel and initrd alone (an initrd that carries its own root).
    None,
}

impl PxeRoot {
    /// What suits an image: NBD when its manifest contains `nbd-root` and names a disk,
    /// else the disk attached locally, else none.
    pub fn for_image(image: &ImageInfo) -> PxeRoot {
        let Some(m) = image.manifest.as_ref() else {
            return PxeRoot::None;
        };
        if !m.disk.is_file() {
            PxeRoot::None
        } else if m.contains.iter().any(|c| c == NBD_ROOT) {
            PxeRoot::Nbd
        } else {
            PxeRoot::Disk
        }
    }

    /// Parses `--pxe-root` (`auto`, `nbd`, `disk`, `none`); `auto` is [`Self::for_image`].
    pub fn parse(s: &str, image: &ImageInfo) -> Option<PxeRoot> {
        match s {
            "auto" => Some(PxeRoot::for_image(image)),
            "nbd" => Some(PxeRoot::Nbd),
            "disk" => Some(PxeRoot::Disk),
            "none" => Some(PxeRoot::None),
            _ => None,
        }
    }
}

/// The manifest capability of images whose initramfs mounts the root over NBD.
pub const NBD_ROOT: &str = "nbd-root";

/// The kernel arguments of a guest whose root is NBD export `root` at `host:port`: the
/// image's own arguments with `root=` replaced.
pub fn nbd_kernel_args(args: &str, host: Ipv4Addr, port: u16) -> String {
    let mut out: Vec<String> = args
        .split_whitespace()
        .filter(|a| !a.starts_with("root=") && !a.starts_with("nbdroot=") && !a.starts_with("ip="))
        .map(String::from)
        .collect();
    out.insert(0, "root=/dev/nbd0".into());
    out.push(format!("nbdroot={host}:{port}/root"));
    out.push("ip=dhcp".into());
    out.join(" ")
}

/// What the user chose for PXE (`--pxe-*`, plus `--qemu-*` for the guest).
#[derive(Debug, Clone)]
pub struct PxeOptions {
    /// The image: a bogie manifest naming a kernel and an initrd (`--qemu-image`).
    pub image: ImageInfo,
    /// The architecture (`--board`; amd64 only).
    pub arch: Arch,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// More kernel arguments (`--pxe-kernel-args`).
    pub kernel_args: Option<String>,
    /// The boot server's port (`--pxe-http-port`; default any free port).
    pub http_port: u16,
    /// The iPXE option ROM for virtio-net (`--pxe-rom`; default from `ipxe-qemu`).
    pub rom: Option<PathBuf>,
    /// Where the root file system lives (`--pxe-root`).
    pub root: PxeRoot,
    /// How the guest gets its Ignition config (`--pxe-ignition`).
    pub ignition: IgnitionDelivery,
    /// QEMU binary instead of `qemu-system-x86_64` from `PATH`.
    pub qemu_binary: Option<PathBuf>,
    /// Use KVM when it works (else TCG).
    pub kvm: bool,
}

impl PxeOptions {
    /// Defaults: 1024 MiB, 1 vCPU, the root and the Ignition delivery that suit the image
    /// ([`PxeRoot::for_image`], [`IgnitionDelivery::for_image`]), KVM when usable.
    pub fn new(image: ImageInfo, arch: Arch) -> PxeOptions {
        let ignition = IgnitionDelivery::for_image(&image);
        let root = PxeRoot::for_image(&image);
        PxeOptions {
            image,
            arch,
            memory_mb: 1024,
            cpus: 1,
            kernel_args: None,
            http_port: 0,
            rom: None,
            root,
            ignition,
            qemu_binary: None,
            kvm: true,
        }
    }
}

struct Inner {
    opts: PxeOptions,
    server: BootServer,
    kernel: PathBuf,
    initrd: PathBuf,
    kernel_args: String,
    /// The image's disk and format, unless the root is [`PxeRoot::None`].
    disk: Option<(PathBuf, String)>,
    rom: PathBuf,
    binary: PathBuf,
    /// `qemu-nbd`, exactly when the root is [`PxeRoot::Nbd`].
    nbd_binary: Option<PathBuf>,
    kvm: bool,
}

/// The PXE platform.
#[derive(Clone)]
pub struct PxePlatform {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PxePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PxePlatform")
            .field("port", &self.inner.server.port())
            .finish_non_exhaustive()
    }
}

fn input(m: impl Into<String>) -> PlatformError {
    PlatformError::Input(m.into())
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

impl PxePlatform {
    /// Checks the image and tools and starts the boot server.
    pub async fn new(opts: PxeOptions) -> Result<PxePlatform, PlatformError> {
        if opts.arch != Arch::Amd64 {
            return Err(input(
                "-p pxe boots amd64 guests only (test an arm64 board with -p external)",
            ));
        }
        let m = opts.image.manifest.as_ref().ok_or_else(|| {
            input(format!(
                "-p pxe needs a bogie image manifest naming a kernel and an initrd, not {}",
                opts.image.path.display()
            ))
        })?;
        if m.arch != opts.arch {
            return Err(input(format!(
                "image {} is {} but --board {} was given",
                opts.image.path.display(),
                m.arch,
                opts.arch.board()
            )));
        }
        let kernel = m
            .kernel
            .clone()
            .ok_or_else(|| input("the image manifest names no kernel to serve"))?;
        let initrd = m
            .initrd
            .clone()
            .ok_or_else(|| input("the image manifest names no initrd to serve"))?;
        for f in [&kernel, &initrd] {
            if !f.is_file() {
                return Err(input(format!("{} not found", f.display())));
            }
        }
        let rom = match &opts.rom {
            Some(r) => r.clone(),
            None => ["efi-virtio.rom", "pxe-virtio.rom"]
                .iter()
                .map(|n| Path::new(IPXE_ROM_DIR).join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    input(format!(
                        "no iPXE ROM for virtio-net in {IPXE_ROM_DIR}: install the Debian package ipxe-qemu or pass --pxe-rom"
                    ))
                })?,
        };
        if !rom.is_file() {
            return Err(input(format!("--pxe-rom {} not found", rom.display())));
        }
        let binary = match &opts.qemu_binary {
            Some(b) => b.clone(),
            None => find_in_path("qemu-system-x86_64").ok_or_else(|| {
                input("qemu-system-x86_64 not found in PATH: install the Debian package qemu-system-x86")
            })?,
        };
        let disk = match opts.root {
            PxeRoot::None => None,
            PxeRoot::Nbd | PxeRoot::Disk => {
                if !m.disk.is_file() {
                    return Err(input(format!(
                        "--pxe-root needs the image's disk, and {} was not found",
                        m.disk.display()
                    )));
                }
                Some((m.disk.clone(), m.disk_format.clone()))
            }
        };
        let nbd_binary = match opts.root {
            PxeRoot::Nbd => Some(find_in_path("qemu-nbd").ok_or_else(|| {
                input("qemu-nbd not found in PATH (root over NBD): install the Debian package qemu-utils")
            })?),
            _ => None,
        };
        // The device can work while QEMU still cannot run a vCPU (a nested hypervisor
        // refusing MSRs): try QEMU itself too.
        let kvm = opts.kvm
            && Arch::host() == Some(Arch::Amd64)
            && bogie_platform_qemu::kvm::probe()
                .and_then(|()| bogie_platform_qemu::kvm::probe_qemu(&binary, Arch::Amd64))
                .map_err(|why| tracing::info!("KVM is not usable ({why}): using TCG"))
                .is_ok();
        let mut kernel_args = m.kernel_args.clone();
        if let Some(extra) = &opts.kernel_args {
            kernel_args.push(' ');
            kernel_args.push_str(extra);
        }
        let server = BootServer::start(opts.http_port)
            .await
            .map_err(|e| PlatformError::io("starting the PXE boot server on 127.0.0.1", e))?;
        server.put("/kernel", Content::File(kernel.clone()));
        server.put("/initrd", Content::File(initrd.clone()));
        tracing::info!(port = server.port(), kvm, rom = %rom.display(), "PXE boot server ready");
        Ok(PxePlatform {
            inner: Arc::new(Inner {
                opts,
                server,
                kernel,
                initrd,
                kernel_args: kernel_args.trim().to_string(),
                disk,
                rom,
                binary,
                nbd_binary,
                kvm,
            }),
        })
    }

    /// The boot server's port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.inner.server.port()
    }

    /// The boot server's access log.
    pub fn access_log(&self) -> Vec<Access> {
        self.inner.server.log()
    }

    /// The iPXE script for a machine. With [`IgnitionDelivery::Url`] the kernel command line
    /// names the machine's config on the boot server.
    pub fn ipxe_script(&self, machine: &str) -> String {
        self.ipxe_script_with_args(machine, &self.inner.kernel_args)
    }

    /// The iPXE script for a machine booting with these kernel arguments.
    pub fn ipxe_script_with_args(&self, machine: &str, kernel_args: &str) -> String {
        let base = format!("http://{HOST_FROM_GUEST}:{}", self.inner.server.port());
        let ignition = match self.inner.opts.ignition {
            IgnitionDelivery::Url => format!(
                " ignition.platform.id=metal ignition.config.url={base}/m/{machine}/config.ign"
            ),
            IgnitionDelivery::FwCfg => String::new(),
        };
        format!(
            "#!ipxe\n\
             echo bogie: booting {machine} from {base}\n\
             kernel {base}/kernel initrd=initrd {args}{ignition}\n\
             initrd --name initrd {base}/initrd\n\
             boot\n",
            args = kernel_args,
        )
    }

    /// How guests get their Ignition config.
    pub fn ignition_delivery(&self) -> IgnitionDelivery {
        self.inner.opts.ignition
    }

    /// Where guests' root file systems live.
    pub fn root(&self) -> PxeRoot {
        self.inner.opts.root
    }

    /// Kernel and initrd served.
    pub fn boot_files(&self) -> (&Path, &Path) {
        (&self.inner.kernel, &self.inner.initrd)
    }
}

#[async_trait]
impl Platform for PxePlatform {
    fn name(&self) -> &str {
        "pxe"
    }

    fn arch(&self) -> Arch {
        self.inner.opts.arch
    }

    fn image(&self) -> &ImageInfo {
        &self.inner.opts.image
    }

    fn capabilities(&self) -> BTreeSet<String> {
        ["pxe", "bare-metal"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        Ok(Box::new(PxeCluster {
            platform: self.clone(),
            spec,
            machines: Mutex::new(Vec::new()),
        }))
    }
}

/// The machines of one test attempt.
pub struct PxeCluster {
    platform: PxePlatform,
    spec: ClusterSpec,
    machines: Mutex<Vec<Arc<PxeMachine>>>,
}

impl std::fmt::Debug for PxeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PxeCluster")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

fn free_port() -> Result<u16, PlatformError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| PlatformError::io("finding a free port on 127.0.0.1", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| PlatformError::io("finding a free port on 127.0.0.1", e))
}

/// Spawns QEMU tied to bogie: `PR_SET_PDEATHSIG` (SIGKILL) unless the machine may outlive
/// the run. The fork happens on a thread that lives as long as the process, because the
/// death signal follows the forking *thread*.
async fn spawn_qemu(mut cmd: Command, tied: bool) -> std::io::Result<Child> {
    cmd.kill_on_drop(tied);
    // SAFETY: only async-signal-safe calls (setpgid, setsid, prctl) between fork and exec.
    unsafe {
        cmd.as_std_mut().pre_exec(move || {
            if tied {
                if libc::setpgid(0, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawner()
        .send((cmd, handle, tx))
        .map_err(|_| std::io::Error::other("the QEMU spawner thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("the QEMU spawner thread is gone"))?
}

type SpawnRequest = (
    Command,
    tokio::runtime::Handle,
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

fn spawner() -> std::sync::mpsc::Sender<SpawnRequest> {
    static S: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("bogie-pxe-spawner".into())
            .spawn(move || {
                for (mut cmd, rt, reply) in rx {
                    let _g = rt.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the QEMU spawner thread");
        Mutex::new(tx)
    })
    .lock()
    .expect("poisoned")
    .clone()
}

impl PxeCluster {
    /// Boots a machine over the network and returns it with its concrete type.
    pub async fn boot(&self, spec: MachineSpec) -> Result<Arc<PxeMachine>, PlatformError> {
        let inner = &self.platform.inner;
        let dir = &spec.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| PlatformError::io(format!("creating {}", dir.display()), e))?;
        let ign = dir.join("ignition.json");
        std::fs::write(&ign, &spec.ignition)
            .map_err(|e| PlatformError::io("writing ignition.json", e))?;
        let server = &inner.server;
        let script_path = format!("/m/{}/boot.ipxe", spec.id);
        let config_path = format!("/m/{}/config.ign", spec.id);
        let overlay = dir.join("disk.qcow2");
        if let Some((base, fmt)) = &inner.disk {
            let out = Command::new("qemu-img")
                .args(["create", "-f", "qcow2", "-F", fmt, "-b"])
                .arg(base)
                .arg(&overlay)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| {
                    PlatformError::io("running qemu-img (Debian package qemu-utils)", e)
                })?;
            if !out.status.success() {
                return Err(PlatformError::Machine(format!(
                    "qemu-img create failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        // Root over NBD: this machine's overlay, served on its own loopback port.
        let nbd = match &inner.nbd_binary {
            Some(bin) => Some(start_nbd(bin, &overlay, dir, !spec.may_outlive).await?),
            None => None,
        };
        let kernel_args = match &nbd {
            Some((_, port)) => nbd_kernel_args(&inner.kernel_args, HOST_FROM_GUEST, *port),
            None => inner.kernel_args.clone(),
        };
        let mut nbd_child = nbd.map(|(c, _)| c);
        let script = self.platform.ipxe_script_with_args(&spec.id, &kernel_args);
        // Kept beside the console for whoever reads a failed boot.
        std::fs::write(dir.join("boot.ipxe"), &script)
            .map_err(|e| PlatformError::io("writing boot.ipxe", e))?;
        server.put(&script_path, Content::Bytes(Arc::new(script.into_bytes())));
        server.put(
            &config_path,
            Content::Bytes(Arc::new(spec.ignition.clone().into_bytes())),
        );

        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd = Command::new(&inner.binary);
            let accel = if inner.kvm { "kvm" } else { "tcg" };
            cmd.args(["-name", &format!("bogie-pxe-{}", spec.id)])
                .args(["-machine", &format!("q35,accel={accel}")])
                .args(["-cpu", if inner.kvm { "host" } else { "max" }])
                .args(["-m", &spec.memory_mb.unwrap_or(inner.opts.memory_mb).to_string()])
                .args(["-smp", &spec.cpus.unwrap_or(inner.opts.cpus).to_string()])
                .args(["-display", "none", "-no-user-config", "-nodefaults"])
                .args(["-serial", &format!("file:{}", dir.join("console.txt").display())])
                .args(["-boot", "n"])
                .args([
                    "-netdev",
                    &format!(
                        "user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22,bootfile=http://{HOST_FROM_GUEST}:{}{script_path}",
                        server.port()
                    ),
                ])
                // Debian's iPXE ROMs carry the modern virtio-net id (1af4:1041); SeaBIOS runs
                // a ROM only for a device with its id, so the NIC is modern-only.
                .args([
                    "-device",
                    &format!(
                        "virtio-net-pci,netdev=n0,disable-legacy=on,romfile={}",
                        inner.rom.display()
                    ),
                ])
                .args(["-object", "rng-random,filename=/dev/urandom,id=rng0"])
                .args(["-device", "virtio-rng-pci,rng=rng0"]);
            if inner.opts.root == PxeRoot::Disk {
                cmd.args([
                    "-drive",
                    &format!("if=none,id=d0,format=qcow2,file={}", overlay.display()),
                ])
                .args(["-device", "virtio-blk-pci,drive=d0"]);
            }
            if inner.opts.ignition == IgnitionDelivery::FwCfg {
                for name in bogie_platform_qemu::FW_CFG_NAMES {
                    cmd.args(["-fw_cfg", &format!("name={name},file={}", ign.display())]);
                }
            }
            // The command line, for whoever boots the machine by hand.
            let _ = std::fs::write(dir.join("qemu.cmdline"), format!("{:?}\n", cmd.as_std()));
            log_to(&mut cmd, &dir.join("qemu.log"))?;
            let mut child = spawn_qemu(cmd, !spec.may_outlive).await.map_err(|e| {
                PlatformError::io(format!("starting {}", inner.binary.display()), e)
            })?;
            // A port taken in between makes QEMU exit at once.
            tokio::time::sleep(Duration::from_millis(500)).await;
            match child.try_wait() {
                Ok(Some(status)) => {
                    last = exited_at_once("QEMU", status, &dir.join("qemu.log"));
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(PlatformError::io("checking QEMU", e)),
            }
            tracing::info!(machine = %spec.id, pid = child.id(), ssh_port = port, "PXE guest started");
            let m = Arc::new(PxeMachine {
                platform: self.platform.clone(),
                id: spec.id.clone(),
                dir: dir.clone(),
                port,
                child: tokio::sync::Mutex::new(Some(child)),
                nbd: tokio::sync::Mutex::new(nbd_child.take()),
                paths: vec![script_path.clone(), config_path.clone()],
                overlay: inner.disk.is_some().then(|| overlay.clone()),
                state: AtomicU8::new(RUNNING),
            });
            self.machines.lock().expect("poisoned").push(m.clone());
            return Ok(m);
        }
        if let Some(mut c) = nbd_child {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let _ = std::fs::remove_file(&overlay);
        Err(PlatformError::Machine(last))
    }
}

#[async_trait]
impl Cluster for PxeCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        Ok(self.boot(spec).await?)
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        let ms: Vec<Arc<PxeMachine>> = self.machines.lock().expect("poisoned").clone();
        for m in ms {
            m.destroy().await?;
        }
        Ok(())
    }
}

const RUNNING: u8 = 0;
const KEPT: u8 = 1;
const DESTROYED: u8 = 2;

/// A QEMU guest booted over the network.
pub struct PxeMachine {
    platform: PxePlatform,
    id: String,
    dir: PathBuf,
    port: u16,
    child: tokio::sync::Mutex<Option<Child>>,
    /// qemu-nbd serving the root (root over NBD).
    nbd: tokio::sync::Mutex<Option<Child>>,
    paths: Vec<String>,
    overlay: Option<PathBuf>,
    state: AtomicU8,
}

impl std::fmt::Debug for PxeMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PxeMachine")
            .field("id", &self.id)
            .field("ssh_port", &self.port)
            .finish_non_exhaustive()
    }
}

impl PxeMachine {
    /// Writes the boot server's requests (all machines') to `pxe-http.log`.
    fn write_access_log(&self) {
        let lines: String = self
            .platform
            .access_log()
            .iter()
            .map(|a| format!("{} {} {}\n", a.status, a.bytes, a.path))
            .collect();
        let _ = std::fs::write(self.dir.join("pxe-http.log"), lines);
    }
}

#[async_trait]
impl Machine for PxeMachine {
    fn id(&self) -> &str {
        &self.id
    }

    fn ssh_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn private_ip(&self) -> Option<IpAddr> {
        None
    }

    async fn console_output(&self) -> Result<String, PlatformError> {
        self.write_access_log();
        let bytes = std::fs::read(self.dir.join("console.txt")).unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn is_running(&self) -> bool {
        let mut c = self.child.lock().await;
        match c.as_mut() {
            Some(ch) => matches!(ch.try_wait(), Ok(None)),
            None => false,
        }
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, DESTROYED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(());
        }
        // The guest first, then its root's server.
        for m in [&self.child, &self.nbd] {
            if let Some(mut ch) = m.lock().await.take() {
                let _ = ch.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), ch.wait()).await;
            }
        }
        self.write_access_log();
        for p in &self.paths {
            self.platform.inner.server.remove(p);
        }
        if let Some(o) = &self.overlay {
            let _ = std::fs::remove_file(o);
        }
        Ok(())
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
        // Not killed on drop: spawned without kill_on_drop when they may outlive the run.
        let release = |c: Child| {
            let pid = c.id();
            std::mem::forget(c);
            pid
        };
        let pid = self.child.lock().await.take().and_then(release);
        let nbd_pid = self.nbd.lock().await.take().and_then(release);
        self.write_access_log();
        let pids: Vec<String> = pid
            .iter()
            .chain(nbd_pid.iter())
            .map(|p| p.to_string())
            .collect();
        Ok(json!({
            "platform": "pxe",
            "pid": pid,
            "nbd_pid": nbd_pid,
            "ssh": self.ssh_addr().to_string(),
            "down": (!pids.is_empty()).then(|| format!("kill {}", pids.join(" "))),
        }))
    }
}

impl Drop for PxeMachine {
    fn drop(&mut self) {
        if self.state.load(Ordering::SeqCst) == RUNNING {
            for m in [&self.child, &self.nbd] {
                if let Ok(mut g) = m.try_lock() {
                    if let Some(c) = g.as_mut() {
                        let _ = c.start_kill();
                    }
                }
            }
        }
    }
}

/// Sends a child's stdout and stderr to `log` (created anew), stdin from /dev/null.
fn log_to(cmd: &mut Command, log: &Path) -> Result<(), PlatformError> {
    let what = || log.display().to_string();
    let out = std::fs::File::create(log)
        .map_err(|e| PlatformError::io(format!("creating {}", what()), e))?;
    let err = out.try_clone().map_err(|e| PlatformError::io(what(), e))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

/// Why a child that exited right after its start did so: its status and its log.
fn exited_at_once(what: &str, status: std::process::ExitStatus, log: &Path) -> String {
    format!(
        "{what} exited at once ({status}): {}",
        std::fs::read_to_string(log).unwrap_or_default().trim()
    )
}

/// Starts `qemu-nbd` serving `overlay` as export `root` on a free loopback port and waits
/// until it accepts connections. Returns the child and the port.
async fn start_nbd(
    bin: &Path,
    overlay: &Path,
    dir: &Path,
    tied: bool,
) -> Result<(Child, u16), PlatformError> {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        // -t: keep serving across the guest's reconnects; writeback: the overlay is
        // throwaway, like the local disk's.
        cmd.args(["-f", "qcow2", "-x", "root", "-b", "127.0.0.1", "-t"])
            .args(["-p", &port.to_string(), "--cache=writeback"])
            .arg(overlay);
        log_to(&mut cmd, &dir.join("qemu-nbd.log"))?;
        let mut child = spawn_qemu(cmd, tied)
            .await
            .map_err(|e| PlatformError::io(format!("starting {}", bin.display()), e))?;
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = exited_at_once("qemu-nbd", status, &dir.join("qemu-nbd.log"));
                break;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                tracing::info!(port, pid = child.id(), "qemu-nbd serving the root");
                return Ok((child, port));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.start_kill();
                let _ = child.wait().await;
                last = "qemu-nbd did not listen within 30 s".into();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Err(PlatformError::Machine(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_kernel_args_replace_the_root() {
        assert_eq!(
            nbd_kernel_args(
                "root=/dev/vda rw console=ttyS0 quiet",
                HOST_FROM_GUEST,
                10809
            ),
            "root=/dev/nbd0 rw console=ttyS0 quiet nbdroot=10.0.2.2:10809/root ip=dhcp"
        );
        // No root= in the image's arguments: one is added; stale nbd arguments go.
        assert_eq!(
            nbd_kernel_args("nbdroot=x ip=off console=ttyS0", HOST_FROM_GUEST, 1),
            "root=/dev/nbd0 console=ttyS0 nbdroot=10.0.2.2:1/root ip=dhcp"
        );
    }

    fn image(dir: &Path, contains: &str) -> ImageInfo {
        std::fs::write(dir.join("disk.qcow2"), b"x").unwrap();
        std::fs::write(dir.join("k"), b"k").unwrap();
        std::fs::write(dir.join("i"), b"i").unwrap();
        std::fs::write(
            dir.join("manifest.json"),
            format!(
                r#"{{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","kernel":"k","initrd":"i","contains":[{contains}]}}"#
            ),
        )
        .unwrap();
        ImageInfo::load(&dir.join("manifest.json")).unwrap()
    }

    #[test]
    fn the_root_follows_the_image() {
        let d = tempfile::tempdir().unwrap();
        let nbd = image(d.path(), r#""nbd-root""#);
        assert_eq!(PxeRoot::for_image(&nbd), PxeRoot::Nbd);
        assert_eq!(PxeRoot::parse("auto", &nbd), Some(PxeRoot::Nbd));
        assert_eq!(PxeRoot::parse("disk", &nbd), Some(PxeRoot::Disk));
        assert_eq!(PxeRoot::parse("none", &nbd), Some(PxeRoot::None));
        assert_eq!(PxeRoot::parse("nfs", &nbd), None);
        let d2 = tempfile::tempdir().unwrap();
        assert_eq!(PxeRoot::for_image(&image(d2.path(), "")), PxeRoot::Disk);
        // A disk gone since the manifest was read: nothing to serve.
        let d3 = tempfile::tempdir().unwrap();
        let gone = image(d3.path(), r#""nbd-root""#);
        std::fs::remove_file(d3.path().join("disk.qcow2")).unwrap();
        assert_eq!(PxeRoot::for_image(&gone), PxeRoot::None);
    }
}
