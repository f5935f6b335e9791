//! bogie's QEMU platform: unprivileged local machines for amd64 and arm64.
//!
//! Each machine is one `qemu-system-*` process with a qcow2 overlay on the image's disk,
//! user-mode networking with `hostfwd` to a free loopback port for SSH, a second NIC on the
//! cluster's private network (a multicast socket netdev, static `10.77.0.N/24` addresses
//! configured through Ignition), the serial console in `console.txt` and a QMP socket.
//! KVM is used when `/dev/kvm` works and the guest arch is the host's; TCG otherwise.
//!
//! Nothing leaks: QEMU dies with bogie (`PR_SET_PDEATHSIG`) unless the machine may outlive
//! the run, destroy is idempotent, and dropping a machine kills its QEMU.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use bogie_harness::{Arch, Cluster, ClusterSpec, ImageInfo, Platform, PlatformError};

mod cmdline;
pub mod detect;
pub mod ignition;
pub mod kvm;
mod machine;
pub mod mangle;
mod parts;
pub mod qmp;
mod snapshot;
mod spawn;

pub use cmdline::ResolvedAccel;
pub use machine::{down, QemuCluster, QemuMachine};

use cmdline::format_by_suffix;
use detect::{find_program, is_executable, qemu_system_binary, qemu_system_package};

/// Debian's (`qemu-efi-aarch64`) UEFI code for arm64 `virt` machines.
pub const DEFAULT_AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
/// Debian's UEFI variable store template matching [`DEFAULT_AAVMF_CODE`].
pub const DEFAULT_AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// Debian's (`ovmf`) Secure Boot capable UEFI code for amd64 `q35` machines: built with
/// SMM, so the guest cannot write the variable store past the firmware.
pub const DEFAULT_OVMF_SECBOOT_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// Debian's UEFI variable store with Microsoft's KEK and db enrolled and Secure Boot on,
/// matching [`DEFAULT_OVMF_SECBOOT_CODE`]: shim signed by Microsoft boots, nothing unsigned.
pub const DEFAULT_OVMF_SECBOOT_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// fw_cfg names every Ignition config is passed under: Flatcar's and upstream Ignition's.
pub const FW_CFG_NAMES: [&str; 2] = ["opt/org.flatcar-linux/config", "opt/com.coreos/config"];

/// Which accelerator to use (`--qemu-accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when `/dev/kvm` works and the guest arch is the host's, else TCG.
    #[default]
    Auto,
    /// KVM or fail.
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

impl FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?} (expected auto, kvm or tcg)"
            )),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the user chose for the QEMU platform (kola's `--qemu-*` flags and more).
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The image under test (`--qemu-image`).
    pub image: ImageInfo,
    /// The architecture machines boot as (`--board`).
    pub arch: Arch,
    /// Firmware code file (`--qemu-firmware`); with `ovmf_vars` it is UEFI pflash code,
    /// without it a `-bios` file.
    pub firmware: Option<PathBuf>,
    /// UEFI variable store template (`--qemu-ovmf-vars`), copied per machine.
    pub ovmf_vars: Option<PathBuf>,
    /// Guest memory in MiB (default 1024).
    pub memory_mb: u32,
    /// vCPUs per machine; the caller passes host cores ÷ parallel (at least 1).
    pub cpus: u32,
    /// The QEMU system emulator to run instead of `qemu-system-<arch>` from `PATH`.
    pub qemu_binary: Option<PathBuf>,
    /// The `qemu-img` to run instead of the one in `PATH`.
    pub qemu_img: Option<PathBuf>,
    /// Accelerator choice.
    pub accel: Accel,
    /// Extra arguments appended to every QEMU command line (`--qemu-options`).
    pub qemu_options: Vec<String>,
    /// `--qemu-skip-mangle`: boot a raw plain disk as it is. Without it bogie boots a
    /// private copy whose OEM `grub.cfg` sets the serial console, as kola does
    /// ([`mangle`]).
    pub skip_mangle: bool,
    /// `--qemu-grow-base-disk-by`: bytes added to every machine's primary disk (its qcow2
    /// overlay is made this much bigger than the image's disk); 0 keeps the image's size.
    pub grow_base_disk_by: u64,
    /// `--enable-secureboot`: UEFI with Secure Boot enforced (amd64, firmware boot only):
    /// `q35,smm=on`, the pflash secure, the code and vars of `firmware`/`ovmf_vars` or
    /// [`DEFAULT_OVMF_SECBOOT_CODE`]/[`DEFAULT_OVMF_SECBOOT_VARS`].
    pub secure_boot: bool,
}

impl QemuOptions {
    /// Defaults for an image and board: 1024 MiB, one vCPU per host core, `auto` accel.
    pub fn new(image: ImageInfo, arch: Arch) -> Self {
        QemuOptions {
            image,
            arch,
            firmware: None,
            ovmf_vars: None,
            memory_mb: 1024,
            cpus: default_cpus(1),
            qemu_binary: None,
            qemu_img: None,
            accel: Accel::Auto,
            qemu_options: Vec::new(),
            skip_mangle: false,
            grow_base_disk_by: 0,
            secure_boot: false,
        }
    }
}

/// Parses a size the way kola's `--qemu-grow-base-disk-by` takes it: a number of bytes with
/// an optional 1024-based suffix `k`/`K`, `M`, `G` or `T` (a trailing `b`/`B`, as in `5GB`
/// or `5GiB`, is ignored).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .unwrap_or(t);
    let t = t.strip_suffix(['b', 'B']).unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'M')) => (&t[..i], 20),
        Some((i, 'G')) => (&t[..i], 30),
        Some((i, 'T')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| {
            format!("{s:?} is not a size (bytes, or a number with K, M, G or T, e.g. 5G)")
        })
}

/// vCPUs per machine when `parallel` machines run at once: host cores ÷ parallel, at least 1.
pub fn default_cpus(parallel: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (cores / parallel.max(1)).max(1)
}

/// The image's firmware setup (firmware boot), before it is specialised per machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirmwareTemplate {
    /// QEMU's default (SeaBIOS on amd64).
    Default,
    /// `-bios FILE`.
    Bios(PathBuf),
    /// UEFI pflash: shared code, vars copied into each machine's dir; with `secure_boot`,
    /// the machine is set up for the firmware to enforce Secure Boot (SMM, secure pflash).
    Uefi {
        code: PathBuf,
        vars: PathBuf,
        secure_boot: bool,
    },
}

/// How the image boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootTemplate {
    DirectKernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        args: String,
    },
    Firmware(FirmwareTemplate),
}

/// Everything resolved once per run.
#[derive(Debug)]
pub(crate) struct PlatformInner {
    pub opts: QemuOptions,
    pub binary: PathBuf,
    pub qemu_img: PathBuf,
    pub accel: ResolvedAccel,
    pub disk: PathBuf,
    pub disk_format: String,
    pub boot: BootTemplate,
    pub fw_cfg_names: Vec<String>,
    /// `swtpm` from `PATH`, when installed: machines that ask for a TPM get one.
    pub swtpm: Option<PathBuf>,
    /// The mangled private copy `disk` names (kept open: it is already unlinked).
    pub _mangled: Option<mangle::MangledDisk>,
}

/// The QEMU platform. Create it with [`QemuPlatform::new`], which validates everything
/// before any machine boots.
#[derive(Debug, Clone)]
pub struct QemuPlatform {
    inner: Arc<PlatformInner>,
}

fn input(msg: impl Into<String>) -> PlatformError {
    PlatformError::Input(msg.into())
}

impl QemuPlatform {
    /// Validates the options (QEMU and qemu-img present, image present and of the `--board`
    /// arch, firmware present) and picks the accelerator. Errors are one-line
    /// [`PlatformError::Input`]s.
    pub fn new(opts: QemuOptions) -> Result<Self, PlatformError> {
        let path_var = std::env::var_os("PATH");
        Self::validate(opts, path_var.as_deref(), |qemu, arch| {
            kvm::probe().and_then(|()| kvm::probe_qemu(qemu, arch))
        })
    }

    pub(crate) fn validate(
        opts: QemuOptions,
        path_var: Option<&std::ffi::OsStr>,
        kvm_probe: impl FnOnce(&Path, Arch) -> Result<(), String>,
    ) -> Result<Self, PlatformError> {
        let arch = opts.arch;
        if opts.secure_boot && arch == Arch::Arm64 {
            return Err(secure_boot_arm64());
        }
        let binary = match &opts.qemu_binary {
            Some(b) if is_executable(b) => b.clone(),
            Some(b) => {
                return Err(input(format!(
                    "QEMU binary {} does not exist or is not executable",
                    b.display()
                )))
            }
            None => find_program(qemu_system_binary(arch), path_var).ok_or_else(|| {
                input(format!(
                    "{} not found in PATH: install the Debian package {}",
                    qemu_system_binary(arch),
                    qemu_system_package(arch)
                ))
            })?,
        };
        let qemu_img = match &opts.qemu_img {
            Some(b) if is_executable(b) => b.clone(),
            Some(b) => {
                return Err(input(format!(
                    "qemu-img {} does not exist or is not executable",
                    b.display()
                )))
            }
            None => find_program("qemu-img", path_var).ok_or_else(|| {
                input("qemu-img not found in PATH: install the Debian package qemu-utils")
            })?,
        };

        let image = &opts.image;
        let shown = image.path.display();
        if !image.path.exists() {
            return Err(input(format!("image not found: {shown}")));
        }
        let mismatch = |found: Arch| {
            input(format!(
                "image {shown} is {found} but --board {} was given",
                arch.board()
            ))
        };
        let mut fw_cfg_names: Vec<String> = FW_CFG_NAMES.iter().map(|s| s.to_string()).collect();
        let mut mangled = None;
        let (disk, disk_format, boot) = match &image.manifest {
            Some(m) => {
                if !m.disk.exists() {
                    return Err(input(format!(
                        "image {shown} names a missing disk {}",
                        m.disk.display()
                    )));
                }
                if m.arch != arch {
                    return Err(mismatch(m.arch));
                }
                if let Some(name) = &m.fw_cfg_name {
                    if !fw_cfg_names.contains(name) {
                        fw_cfg_names.push(name.clone());
                    }
                }
                let boot = match m.boot.as_str() {
                    "direct-kernel" if opts.secure_boot => {
                        return Err(input(format!(
                            "--enable-secureboot: image {shown} boots its kernel directly, without firmware: pass a disk that boots through UEFI (e.g. the manifest's flatcar-disk.qcow2) as --qemu-image"
                        )))
                    }
                    "direct-kernel" => {
                        let kernel = m.kernel.clone().ok_or_else(|| {
                            input(format!("image {shown} boots direct-kernel but names no kernel"))
                        })?;
                        let head = detect::read_head(&kernel, 4096)
                            .map_err(|e| input(format!("cannot read kernel {}: {e}", kernel.display())))?;
                        if let Some(k) = detect::kernel_arch(&head) {
                            if k != arch {
                                return Err(mismatch(k));
                            }
                        }
                        if let Some(i) = &m.initrd {
                            if !i.exists() {
                                return Err(input(format!("initrd not found: {}", i.display())));
                            }
                        }
                        BootTemplate::DirectKernel {
                            kernel,
                            initrd: m.initrd.clone(),
                            args: m.kernel_args.clone(),
                        }
                    }
                    "firmware" => BootTemplate::Firmware(firmware_template(&opts)?),
                    other => {
                        return Err(input(format!(
                            "image {shown} has unknown boot mode {other:?} (expected direct-kernel or firmware)"
                        )))
                    }
                };
                (m.disk.clone(), m.disk_format.clone(), boot)
            }
            None => {
                let format = detect::disk_format(&image.path)
                    .map_err(|e| input(format!("cannot read image {shown}: {e}")))?;
                if let Some(found) = image.arch {
                    if found != arch {
                        return Err(mismatch(found));
                    }
                }
                let head = detect::read_head(&image.path, 4096)
                    .map_err(|e| input(format!("cannot read image {shown}: {e}")))?;
                if let Some(k) = detect::kernel_arch(&head) {
                    if k != arch {
                        return Err(mismatch(k));
                    }
                    return Err(input(format!(
                        "image {shown} is a Linux kernel, not a disk image (pass a bogie image manifest for direct kernel boot)"
                    )));
                }
                // diskinfo read the arch from the disk's own files (ImageInfo::arch, checked
                // above); only a disk it could not read is probed through qemu-img.
                if image.arch.is_none() {
                    match detect::disk_arch(&image.path, format, &qemu_img) {
                        Some(found) if found != arch => return Err(mismatch(found)),
                        Some(_) => {}
                        None => tracing::debug!(
                            "could not tell the architecture of {shown}; trusting --board {}",
                            arch.board()
                        ),
                    }
                }
                let disk = std::fs::canonicalize(&image.path)
                    .map_err(|e| PlatformError::io(format!("resolving {shown}"), e))?;
                let boot = BootTemplate::Firmware(firmware_template(&opts)?);
                if opts.skip_mangle {
                    tracing::info!("--qemu-skip-mangle: booting {shown} as it is");
                } else {
                    match mangle::mangle(&disk, format, &mangle::copy_dir())? {
                        mangle::Mangle::Mangled(m) => {
                            tracing::info!(
                                "booting a private copy of {shown} whose OEM grub.cfg sets the serial console, as kola does (--qemu-skip-mangle boots it as it is)"
                            );
                            mangled = Some(m);
                        }
                        mangle::Mangle::Skipped { why, warn: true } => {
                            tracing::warn!("not adding the serial console to {shown}: {why}")
                        }
                        mangle::Mangle::Skipped { why, warn: false } => {
                            tracing::info!("not adding the serial console to {shown}: {why}")
                        }
                    }
                }
                let disk = mangled.as_ref().map_or(disk, |m| m.path().to_path_buf());
                (disk, format.to_string(), boot)
            }
        };
        if !matches!(disk_format.as_str(), "qcow2" | "raw") {
            return Err(input(format!(
                "image {shown} has disk format {disk_format:?} (expected qcow2 or raw)"
            )));
        }
        if matches!(boot, BootTemplate::DirectKernel { .. })
            && (opts.firmware.is_some() || opts.ovmf_vars.is_some())
        {
            tracing::warn!("image {shown} boots a kernel directly: --qemu-firmware/--qemu-ovmf-vars are ignored");
        }

        let accel = resolve_accel(opts.accel, arch, Arch::host(), || kvm_probe(&binary, arch))?;
        tracing::info!(
            binary = %binary.display(),
            accel = accel.as_str(),
            "QEMU platform ready for {}",
            arch.board()
        );
        Ok(QemuPlatform {
            inner: Arc::new(PlatformInner {
                opts,
                binary,
                qemu_img,
                accel,
                disk,
                disk_format,
                boot,
                fw_cfg_names,
                swtpm: find_program("swtpm", path_var),
                _mangled: mangled,
            }),
        })
    }

    /// The accelerator machines run under.
    pub fn accel(&self) -> ResolvedAccel {
        self.inner.accel
    }

    /// The QEMU binary machines run.
    pub fn binary(&self) -> &Path {
        &self.inner.binary
    }

    /// Creates a cluster with its concrete type (the [`Platform`] method boxes it).
    pub fn cluster(&self, spec: ClusterSpec) -> Result<QemuCluster, PlatformError> {
        QemuCluster::new(self.inner.clone(), spec)
    }
}

fn firmware_exists(p: &Path, hint: &str) -> Result<(), PlatformError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(input(format!(
            "firmware file not found: {}{hint}",
            p.display()
        )))
    }
}

/// `--enable-secureboot` on arm64, refused.
fn secure_boot_arm64() -> PlatformError {
    input("--enable-secureboot is supported on amd64 only (arm64 with AAVMF's Secure Boot variables is not verified by bogie yet)")
}

/// The firmware of `--enable-secureboot` (amd64 UEFI only): the given code and vars (as
/// Flatcar CI's `qemu_uefi_secure.sh` passes them), else Debian's Secure Boot OVMF with
/// Microsoft's keys. SeaBIOS (`--qemu-firmware` alone) has no Secure Boot.
fn secure_firmware_template(opts: &QemuOptions) -> Result<FirmwareTemplate, PlatformError> {
    let (code, vars) = match (opts.arch, &opts.firmware, &opts.ovmf_vars) {
        (Arch::Arm64, _, _) => return Err(secure_boot_arm64()),
        (Arch::Amd64, None, None) => {
            let hint = " (install the Debian package ovmf or pass --qemu-firmware and --qemu-ovmf-vars)";
            let (code, vars) = (
                PathBuf::from(DEFAULT_OVMF_SECBOOT_CODE),
                PathBuf::from(DEFAULT_OVMF_SECBOOT_VARS),
            );
            firmware_exists(&code, hint)?;
            firmware_exists(&vars, hint)?;
            (code, vars)
        }
        (Arch::Amd64, Some(fw), None) => {
            return Err(input(format!(
                "--enable-secureboot needs UEFI: --qemu-firmware {} without --qemu-ovmf-vars is BIOS firmware, which has no Secure Boot (pass both, or neither for Debian's OVMF with Secure Boot)",
                fw.display()
            )))
        }
        (Arch::Amd64, None, Some(_)) => {
            return Err(input(
                "--qemu-ovmf-vars needs --qemu-firmware (the matching UEFI code file) on amd64",
            ))
        }
        (Arch::Amd64, Some(fw), Some(vars)) => {
            firmware_exists(fw, "")?;
            firmware_exists(vars, "")?;
            (fw.clone(), vars.clone())
        }
    };
    Ok(FirmwareTemplate::Uefi {
        code,
        vars,
        secure_boot: true,
    })
}

fn firmware_template(opts: &QemuOptions) -> Result<FirmwareTemplate, PlatformError> {
    if opts.secure_boot {
        return secure_firmware_template(opts);
    }
    let exists = firmware_exists;
    let t = match (opts.arch, &opts.firmware, &opts.ovmf_vars) {
        (Arch::Arm64, None, None) => {
            let hint = " (install the Debian package qemu-efi-aarch64 or pass --qemu-firmware and --qemu-ovmf-vars)";
            let (code, vars) = (
                PathBuf::from(DEFAULT_AAVMF_CODE),
                PathBuf::from(DEFAULT_AAVMF_VARS),
            );
            exists(&code, hint)?;
            exists(&vars, hint)?;
            FirmwareTemplate::Uefi {
                code,
                vars,
                secure_boot: false,
            }
        }
        (Arch::Arm64, None, Some(vars)) => {
            let code = PathBuf::from(DEFAULT_AAVMF_CODE);
            exists(
                &code,
                " (install the Debian package qemu-efi-aarch64 or pass --qemu-firmware)",
            )?;
            exists(vars, "")?;
            FirmwareTemplate::Uefi {
                code,
                vars: vars.clone(),
                secure_boot: false,
            }
        }
        (Arch::Amd64, None, None) => FirmwareTemplate::Default,
        (Arch::Amd64, None, Some(_)) => {
            return Err(input(
                "--qemu-ovmf-vars needs --qemu-firmware (the matching UEFI code file) on amd64",
            ))
        }
        (_, Some(fw), None) => {
            exists(fw, "")?;
            FirmwareTemplate::Bios(fw.clone())
        }
        (_, Some(fw), Some(vars)) => {
            exists(fw, "")?;
            exists(vars, "")?;
            FirmwareTemplate::Uefi {
                code: fw.clone(),
                vars: vars.clone(),
                secure_boot: false,
            }
        }
    };
    Ok(t)
}

/// Resolves `auto`: KVM only when the guest arch is the host's and KVM works.
pub(crate) fn resolve_accel(
    requested: Accel,
    guest: Arch,
    host: Option<Arch>,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<ResolvedAccel, PlatformError> {
    match requested {
        Accel::Tcg => Ok(ResolvedAccel::Tcg),
        Accel::Kvm => {
            if host != Some(guest) {
                return Err(input(format!(
                    "--qemu-accel kvm: a {guest} guest cannot use KVM on this {} host",
                    host.map_or("unknown", Arch::as_str)
                )));
            }
            probe().map_err(|why| input(format!("--qemu-accel kvm: KVM is not usable: {why}")))?;
            Ok(ResolvedAccel::Kvm)
        }
        Accel::Auto => {
            if host != Some(guest) {
                tracing::info!("{guest} guest on a non-{guest} host: using TCG");
                return Ok(ResolvedAccel::Tcg);
            }
            match probe() {
                Ok(()) => Ok(ResolvedAccel::Kvm),
                Err(why) => {
                    tracing::warn!(
                        "KVM is not usable ({why}): using TCG, which is slower (--qemu-accel tcg or BOGIE_QEMU_ACCEL=tcg skips this check)"
                    );
                    Ok(ResolvedAccel::Tcg)
                }
            }
        }
    }
}

#[async_trait]
impl Platform for QemuPlatform {
    fn name(&self) -> &str {
        "qemu"
    }

    fn arch(&self) -> Arch {
        self.inner.opts.arch
    }

    fn image(&self) -> &ImageInfo {
        &self.inner.opts.image
    }

    fn capabilities(&self) -> BTreeSet<String> {
        let mut c: BTreeSet<String> = [
            "extra-disk",
            "extra-nic",
            "fw-cfg",
            // The harness's Omaha server (`bogie_harness::serve`) on the host, which QEMU's
            // user network shows every guest at 10.0.2.2.
            "host-omaha",
            "multipath",
            "primary-disk-size",
            "private-network",
            "qmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if matches!(self.inner.boot, BootTemplate::DirectKernel { .. }) {
            c.insert("kernel-args".into());
        }
        if self.inner.accel == ResolvedAccel::Kvm {
            c.insert("kvm".into());
        }
        if self.inner.swtpm.is_some() {
            c.insert("tpm".into());
            // The firmware measures the boot into an event log the kernel shows at
            // /sys/kernel/security/tpm0/binary_bios_measurements: SeaBIOS (also behind a
            // direct kernel boot) and OVMF do on the PC. arm64's direct kernel boot runs no
            // firmware, and AAVMF's TPM measurement is not verified here.
            if self.inner.opts.arch == Arch::Amd64 {
                c.insert("tpm-event-log".into());
            }
        }
        if matches!(
            self.inner.boot,
            BootTemplate::Firmware(FirmwareTemplate::Uefi {
                secure_boot: true,
                ..
            })
        ) {
            c.insert("secure-boot".into());
        }
        c
    }

    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        Ok(Box::new(self.cluster(spec)?))
    }

    fn supports_snapshots(&self) -> bool {
        true
    }

    fn boot_watch(&self) -> Option<bogie_harness::bootwatch::WatchLimits> {
        Some(match self.inner.accel {
            ResolvedAccel::Kvm => bogie_harness::bootwatch::WatchLimits::ACCELERATED,
            ResolvedAccel::Tcg => bogie_harness::bootwatch::WatchLimits::EMULATED,
        })
    }
}

/// The pflash format of a UEFI file, by its name (`.qcow2` or raw).
pub fn firmware_format(p: &Path) -> &'static str {
    format_by_suffix(p)
}

#[cfg(test)]
mod tests;
