//! The `Platform` → `Cluster` → `Machine` traits every platform implements.
//!
//! A platform boots machines and tears them down; it knows nothing of tests. The harness
//! renders each machine's Ignition config, waits for SSH and runs the test.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::arch::Arch;
use crate::image::ImageInfo;

/// Errors a platform reports. The harness classes all of them as harness failures.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The user's input is wrong (bad image, wrong arch, missing firmware, unknown flag):
    /// reported as one line with exit code 2, before any test runs.
    #[error("{0}")]
    Input(String),
    /// Starting or talking to a machine failed.
    #[error("{0}")]
    Machine(String),
    /// A cloud/provider API call failed.
    #[error("{service} API error: {message}")]
    Api {
        /// Which service (`ec2`, `arm`, ...).
        service: String,
        /// The error, with credentials removed.
        message: String,
    },
    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl PlatformError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PlatformError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What the harness asks of a new cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// A name unique in the run (the test name, plus the attempt for reruns).
    pub name: String,
    /// The directory for this cluster's artifacts (`<out>/<test>`).
    pub dir: PathBuf,
}

/// What the harness asks of a new machine.
#[derive(Debug, Clone, Default)]
pub struct MachineSpec {
    /// The machine's id (unique in the run; also its artifact directory name).
    pub id: String,
    /// The directory for this machine's artifacts (`<out>/<test>/<machine>`), already created.
    pub dir: PathBuf,
    /// The rendered Ignition config (JSON), already written to `dir/ignition.json`.
    pub ignition: String,
    /// Memory in MiB (platform default when None).
    pub memory_mb: Option<u32>,
    /// vCPUs (platform default when None).
    pub cpus: Option<u32>,
    /// Additional empty disks, in the order the platform attaches them.
    pub extra_disks: Vec<DiskSpec>,
    /// The primary disk's minimum size in GiB (coreos-assembler's `minDisk`): a smaller
    /// image disk is grown to it (platforms that provide `primary-disk-size`).
    pub primary_disk_gib: Option<u32>,
    /// Additional user-mode NICs beyond the machine's own two (platforms that provide
    /// `extra-nic`); NIC `n` (from 0) has the MAC [`extra_nic_mac`]`(n)`.
    pub extra_nics: u32,
    /// Extra kernel arguments for every boot (direct kernel boot only).
    pub kernel_args: Vec<String>,
    /// Extra kernel arguments for the first boot only, after [`MachineSpec::kernel_args`]
    /// (direct kernel boot only).
    pub first_boot_kernel_args: Vec<String>,
    /// A TPM 2.0 device (platforms that provide the `tpm` capability).
    pub tpm: bool,
    /// The machine may be kept after bogie exits (`--remove=false`, `--keep-failed`,
    /// `spawn --detach`): the platform must not tie its life to bogie's process.
    pub may_outlive: bool,
    /// Don't put the run's SSH key in the platform's instance metadata (kola's
    /// `NoSSHKeyInMetadata`): the machine is reached only through what its config installs.
    pub no_ssh_key_in_metadata: bool,
}

/// A frozen, ready machine further machines start from instead of booting (see
/// [`Platform::supports_snapshots`]). Made by [`Machine::make_template`], used by
/// [`Cluster::restore_machine`]; its files live in `dir`, which the harness removes at the
/// end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Unique in the run (also the last component of `dir`).
    pub id: String,
    /// The directory holding the template's files (platform-specific content).
    pub dir: PathBuf,
}

fn no_snapshots() -> PlatformError {
    PlatformError::Machine("this platform does not support snapshots".into())
}

/// A booted (or booting) machine.
#[async_trait]
pub trait Machine: Send + Sync {
    /// The machine's id.
    fn id(&self) -> &str;
    /// Where its sshd is reachable from the host.
    fn ssh_addr(&self) -> SocketAddr;
    /// Its address on the cluster's private network, when it has one.
    fn private_ip(&self) -> Option<IpAddr>;
    /// A file the platform fills with what the guest says on its readiness channel (QEMU:
    /// the virtio-serial port `org.bogie.ready`): a line starting `ready` once sshd is up and
    /// the boot has settled. None where the platform has no such channel; an image that never
    /// writes it is waited for by SSH attempts alone.
    fn ready_file(&self) -> Option<PathBuf> {
        None
    }
    /// The console log so far.
    async fn console_output(&self) -> Result<String, PlatformError>;
    /// Whether the machine is still running (e.g. the QEMU process is alive).
    async fn is_running(&self) -> bool;
    /// The platform's own log of the machine so far (QEMU's stderr), read while it boots
    /// for the emulator's errors. Empty where the platform has none.
    async fn platform_log(&self) -> String {
        String::new()
    }
    /// Tears the machine down. Idempotent.
    async fn destroy(&self) -> Result<(), PlatformError>;
    /// Keeps the machine beyond this run: disarms teardown and returns a JSON description
    /// (written to `<machine dir>/kept.json`) that `bogie down` reads to tear it down later.
    async fn keep(&self) -> Result<serde_json::Value, PlatformError>;
    /// Freezes this ready machine into a template under `dir` (created by the platform),
    /// from which [`Cluster::restore_machine`] starts copies. The machine itself keeps
    /// running afterwards, unchanged for its test. Platforms without snapshots refuse.
    async fn make_template(&self, dir: &Path) -> Result<Template, PlatformError> {
        let _ = dir;
        Err(no_snapshots())
    }
}

/// A group of machines that belong to one test attempt.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Boots one more machine in the cluster. It returns once the machine is started;
    /// the harness waits for SSH.
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError>;
    /// Starts a machine from `template` instead of booting it: its own disk (a copy-on-write
    /// layer over the template's), its own SSH port and console, the template's memory.
    /// `spec.ignition` must be the config the template booted with (it is recorded, not
    /// applied again). It returns once the machine runs; the harness waits for SSH.
    async fn restore_machine(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<dyn Machine>, PlatformError> {
        let _ = (spec, template);
        Err(no_snapshots())
    }
    /// Tears down every machine of the cluster (and any cluster-wide resources). Idempotent.
    async fn destroy(&self) -> Result<(), PlatformError>;
}

/// A place machines boot: QEMU, a cloud, bare metal.
#[async_trait]
pub trait Platform: Send + Sync {
    /// kola's platform name (`qemu`, `aws`, ...).
    fn name(&self) -> &str;
    /// The architecture machines boot as.
    fn arch(&self) -> Arch;
    /// The image under test.
    fn image(&self) -> &ImageInfo;
    /// Capabilities the platform itself offers to tests (e.g. `extra-disk`, `tpm`,
    /// `private-network`, `fw-cfg`), beyond what the image provides.
    fn capabilities(&self) -> BTreeSet<String>;
    /// Creates a cluster.
    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError>;
    /// Whether machines can be frozen into templates and restored from them
    /// ([`Machine::make_template`], [`Cluster::restore_machine`]).
    fn supports_snapshots(&self) -> bool {
        false
    }
    /// Whether machines' consoles are live while they boot, and how long they may stay
    /// silent (watched by the harness's boot watch); `None` (the default) where the console is not read
    /// while booting (clouds), so silence means nothing.
    fn boot_watch(&self) -> Option<WatchLimits> {
        None
    }
    /// Releases run-wide resources (keys, security groups, ...). Called once at the end.
    async fn shutdown(&self) -> Result<(), PlatformError> {
        Ok(())
    }
}

/// How long a console may stay silent while a machine boots, per accelerator speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// A console with no output at all for this long: the guest never ran (accelerator,
    /// firmware) or writes elsewhere (the kernel's `console=`).
    pub empty_console: Duration,
    /// A console that printed something and then nothing for this long, with SSH not up.
    pub stalled_console: Duration,
    /// How often the console and log are read.
    pub poll: Duration,
}

impl WatchLimits {
    /// Limits for a hardware-accelerated guest (KVM).
    pub const ACCELERATED: WatchLimits = WatchLimits {
        empty_console: Duration::from_secs(60),
        stalled_console: Duration::from_secs(150),
        poll: Duration::from_secs(1),
    };
    /// Limits for an emulated guest (TCG), several times slower.
    pub const EMULATED: WatchLimits = WatchLimits {
        empty_console: Duration::from_secs(150),
        stalled_console: Duration::from_secs(300),
        poll: Duration::from_secs(1),
    };
}

/// How an extra disk is attached to its machine (coreos-assembler's `channel=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DiskInterface {
    /// virtio-blk: `/dev/vdX`, `/dev/disk/by-id/virtio-<serial>`.
    #[default]
    Virtio,
    /// An NVMe controller with one namespace: `/dev/nvmeXn1`,
    /// `/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_<serial>`.
    Nvme,
    /// A SCSI disk on its own virtio-scsi controller: `/dev/sdX`,
    /// `/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_<serial>`, or with a WWN
    /// `/dev/disk/by-id/wwn-0x<wwn>` (udev then names it by the WWN, not the serial).
    Scsi,
}

impl DiskInterface {
    /// `virtio`, `nvme` or `scsi` (coreos-assembler's names).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskInterface::Virtio => "virtio",
            DiskInterface::Nvme => "nvme",
            DiskInterface::Scsi => "scsi",
        }
    }
}

impl std::str::FromStr for DiskInterface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "virtio" => Ok(DiskInterface::Virtio),
            "nvme" => Ok(DiskInterface::Nvme),
            "scsi" => Ok(DiskInterface::Scsi),
            other => Err(format!(
                "unknown disk channel {other:?} (expected virtio, nvme or scsi)"
            )),
        }
    }
}

/// A disk's logical and physical sector sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SectorSize {
    /// 512-byte sectors, logical and physical.
    #[default]
    Sectors512,
    /// 4K native (`4k`): 4096-byte logical and physical sectors.
    Native4k,
    /// 512 emulation (`512e`): 512-byte logical sectors on 4096-byte physical ones.
    Emulated512,
}

impl SectorSize {
    /// The logical block size in bytes (what `blockdev --getss` shows).
    pub fn logical(self) -> u32 {
        match self {
            SectorSize::Native4k => 4096,
            SectorSize::Sectors512 | SectorSize::Emulated512 => 512,
        }
    }

    /// The physical block size in bytes (what `blockdev --getpbsz` shows).
    pub fn physical(self) -> u32 {
        match self {
            SectorSize::Sectors512 => 512,
            SectorSize::Native4k | SectorSize::Emulated512 => 4096,
        }
    }
}

/// The longest disk serial: what virtio-blk and NVMe pass to the guest (20 bytes).
pub const MAX_DISK_SERIAL: usize = 20;

/// One extra disk: its size and how the guest sees it. Written and parsed in
/// coreos-assembler's `--add-disk`/`additionalDisks` syntax: `SIZE[:OPT,OPT,...]` with the
/// size in GiB (`5G`) and the options `channel=virtio|nvme|scsi`, `4k`, `512e`, `mpath`,
/// `serial=NAME` and `wwn=N`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskSpec {
    /// Size in GiB.
    pub size_gib: u32,
    /// How it is attached.
    pub interface: DiskInterface,
    /// Its sector sizes.
    pub sectors: SectorSize,
    /// The serial the guest sees (names its `/dev/disk/by-id` links); the platform picks
    /// `extra-disk-N` (N from 1) when None.
    pub serial: Option<String>,
    /// Two paths to the disk (two SCSI controllers on one backing node), as a multipath
    /// SAN disk looks: the guest sees two SCSI disks with one serial and WWN.
    pub multipath: bool,
    /// The SCSI world-wide name (SCSI and multipath disks); none when None, so the guest
    /// names the disk by its serial.
    pub wwn: Option<u64>,
}

impl DiskSpec {
    /// A plain virtio disk of `size_gib` GiB with 512-byte sectors.
    pub fn new(size_gib: u32) -> Self {
        DiskSpec {
            size_gib,
            interface: DiskInterface::Virtio,
            sectors: SectorSize::Sectors512,
            serial: None,
            multipath: false,
            wwn: None,
        }
    }

    /// Attached through `interface`.
    pub fn interface(mut self, interface: DiskInterface) -> Self {
        self.interface = interface;
        self
    }

    /// With these sector sizes.
    pub fn sectors(mut self, sectors: SectorSize) -> Self {
        self.sectors = sectors;
        self
    }

    /// With this serial (at most [`MAX_DISK_SERIAL`] characters of `A-Za-z0-9._-`; checked
    /// by [`DiskSpec::validate`]).
    pub fn serial(mut self, serial: &str) -> Self {
        self.serial = Some(serial.to_string());
        self
    }

    /// Presented through two paths (implies SCSI).
    pub fn multipath(mut self) -> Self {
        self.multipath = true;
        self.interface = DiskInterface::Scsi;
        self
    }

    /// Parses coreos-assembler's syntax (`5G`, `1G:4k`, `5G:mpath`,
    /// `2G:channel=nvme,serial=data`); the result is validated.
    pub fn parse(spec: &str) -> Result<DiskSpec, String> {
        let (size, opts) = split_disk_spec(spec)?;
        let size = size.ok_or_else(|| format!("disk {spec:?}: no size (such as \"5G\")"))?;
        let mut d = DiskSpec::new(size);
        let mut channel = None;
        for (key, value) in opts {
            let need_value = || {
                value
                    .clone()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("disk {spec:?}: {key} needs a value ({key}=...)"))
            };
            match key.as_str() {
                "channel" => channel = Some(need_value()?.parse::<DiskInterface>()?),
                "4k" => d.sectors = SectorSize::Native4k,
                "512e" => d.sectors = SectorSize::Emulated512,
                "mpath" => d.multipath = true,
                "serial" => d.serial = Some(need_value()?),
                "wwn" => {
                    let v = need_value()?;
                    d.wwn = Some(parse_wwn(&v).ok_or_else(|| {
                        format!("disk {spec:?}: wwn {v:?} is not a number")
                    })?)
                }
                other => {
                    return Err(format!(
                        "disk {spec:?}: unknown option {other:?} (expected channel=, 4k, 512e, mpath, serial=, wwn=)"
                    ))
                }
            }
            if !matches!(key.as_str(), "channel" | "serial" | "wwn") && value.is_some() {
                return Err(format!("disk {spec:?}: {key} takes no value"));
            }
        }
        if d.multipath {
            if channel.is_some_and(|c| c != DiskInterface::Scsi) {
                return Err(format!(
                    "disk {spec:?}: mpath disks are SCSI disks (channel=scsi or none)"
                ));
            }
            d.interface = DiskInterface::Scsi;
        } else if let Some(c) = channel {
            d.interface = c;
        }
        d.validate().map_err(|e| format!("disk {spec:?}: {e}"))?;
        Ok(d)
    }

    /// Checks what the platform cannot attach: a zero size, a serial too long for the guest
    /// or with characters outside `A-Za-z0-9._-`, a WWN on a non-SCSI disk.
    pub fn validate(&self) -> Result<(), String> {
        if self.size_gib == 0 {
            return Err("the size must be at least 1G".into());
        }
        if let Some(s) = &self.serial {
            if s.is_empty() || s.len() > MAX_DISK_SERIAL {
                return Err(format!(
                    "serial {s:?} must have 1 to {MAX_DISK_SERIAL} characters"
                ));
            }
            if !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(format!(
                    "serial {s:?} may only hold letters, digits, '.', '_' and '-'"
                ));
            }
        }
        if self.wwn.is_some() && self.interface != DiskInterface::Scsi {
            return Err("wwn= is for SCSI disks (channel=scsi or mpath)".into());
        }
        Ok(())
    }
}

impl std::str::FromStr for DiskSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskSpec::parse(s)
    }
}

impl std::fmt::Display for DiskSpec {
    /// coreos-assembler's syntax, which [`DiskSpec::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}G", self.size_gib)?;
        let mut opts = Vec::new();
        if self.multipath {
            opts.push("mpath".to_string());
        } else if self.interface != DiskInterface::Virtio {
            opts.push(format!("channel={}", self.interface.as_str()));
        }
        match self.sectors {
            SectorSize::Sectors512 => {}
            SectorSize::Native4k => opts.push("4k".into()),
            SectorSize::Emulated512 => opts.push("512e".into()),
        }
        if let Some(s) = &self.serial {
            opts.push(format!("serial={s}"));
        }
        if let Some(w) = self.wwn {
            opts.push(format!("wwn={w}"));
        }
        if !opts.is_empty() {
            write!(f, ":{}", opts.join(","))?;
        }
        Ok(())
    }
}

/// The primary disk as coreos-assembler's `primaryDisk` names it (`20G`, or options only):
/// its size in GiB when given, and the options, which bogie's primary disk (virtio, 512-byte
/// sectors, one path) cannot honour (the caller names them when it refuses the test).
pub fn parse_primary_disk(spec: &str) -> Result<(Option<u32>, Vec<String>), String> {
    let (size, opts) = split_disk_spec(spec)?;
    let opts = opts
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        })
        .collect();
    Ok((size, opts))
}

/// `SIZE[:k[=v],...]` split into the size in GiB (None when empty) and the options.
#[allow(clippy::type_complexity)]
fn split_disk_spec(spec: &str) -> Result<(Option<u32>, Vec<(String, Option<String>)>), String> {
    let spec_t = spec.trim();
    let (size, opts) = match spec_t.split_once(':') {
        Some((s, o)) => (s, Some(o)),
        None => (spec_t, None),
    };
    let size = if size.is_empty() {
        None
    } else {
        let n = size
            .strip_suffix('G')
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| {
                format!("disk {spec:?}: the size must be a whole number of GiB such as \"5G\"")
            })?;
        Some(n)
    };
    let mut out = Vec::new();
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        let o = o.trim();
        if o.is_empty() {
            return Err(format!("disk {spec:?}: an empty option"));
        }
        match o.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((o.to_string(), None)),
        }
    }
    Ok((size, out))
}

fn parse_wwn(v: &str) -> Option<u64> {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The MAC address of a machine's extra NIC `index` (from 0): coreos-assembler's scheme,
/// `52:55:00:d1:56:00`, `52:55:00:d1:56:01`, ..., so tests written for its kola find
/// theirs.
pub fn extra_nic_mac(index: u32) -> String {
    format!("52:55:00:d1:56:{:02x}", index & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs_parse_in_coreos_assembler_syntax_and_print_back() {
        assert_eq!(DiskSpec::parse("5G").unwrap(), DiskSpec::new(5));
        let d = DiskSpec::parse("1G:4k").unwrap();
        assert_eq!((d.size_gib, d.sectors), (1, SectorSize::Native4k));
        assert_eq!((d.sectors.logical(), d.sectors.physical()), (4096, 4096));
        let d = DiskSpec::parse("2G:512e,serial=data-1").unwrap();
        assert_eq!((d.sectors.logical(), d.sectors.physical()), (512, 4096));
        assert_eq!(d.serial.as_deref(), Some("data-1"));
        let d = DiskSpec::parse("5G:mpath").unwrap();
        assert!(d.multipath);
        assert_eq!(d.interface, DiskInterface::Scsi);
        let d = DiskSpec::parse("3G:channel=nvme,serial=fast").unwrap();
        assert_eq!(d.interface, DiskInterface::Nvme);
        let d = DiskSpec::parse("1G:channel=scsi,wwn=0x5000c500155a3456").unwrap();
        assert_eq!(d.wwn, Some(0x5000_c500_155a_3456));
        assert_eq!(
            DiskSpec::parse("1G:channel=scsi,wwn=12").unwrap().wwn,
            Some(12)
        );
        for text in [
            "5G",
            "1G:4k",
            "2G:512e,serial=data-1",
            "5G:mpath",
            "3G:channel=nvme,4k,serial=fast",
            "1G:channel=scsi,wwn=12",
        ] {
            let d = DiskSpec::parse(text).unwrap();
            assert_eq!(d.to_string(), text);
            assert_eq!(DiskSpec::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn bad_disk_specs_say_what_is_wrong() {
        let err = |s: &str| DiskSpec::parse(s).unwrap_err();
        assert!(err("5").contains("whole number of GiB"), "{}", err("5"));
        assert!(err("5M").contains("whole number of GiB"));
        assert!(err("0G").contains("at least 1G"));
        assert!(err(":4k").contains("no size"));
        assert!(err("1G:8k").contains("unknown option \"8k\""));
        assert!(err("1G:channel=ide").contains("unknown disk channel"));
        assert!(err("1G:serial=").contains("needs a value"));
        assert!(err("1G:4k=yes").contains("takes no value"));
        assert!(err("1G:mpath,channel=nvme").contains("SCSI"));
        assert!(err("1G:wwn=1").contains("SCSI"));
        assert!(err("1G:wwn=x,channel=scsi").contains("not a number"));
        assert!(err("1G:serial=a-serial-longer-than-20").contains("1 to 20"));
        assert!(err("1G:serial=a/b").contains("may only hold"));
        assert!(err("1G:4k,,mpath").contains("empty option"));
    }

    #[test]
    fn primary_disk_specs_give_size_and_options() {
        assert_eq!(parse_primary_disk("20G").unwrap(), (Some(20), vec![]));
        assert_eq!(
            parse_primary_disk("20G:mpath").unwrap(),
            (Some(20), vec!["mpath".to_string()])
        );
        assert_eq!(
            parse_primary_disk(":4k,channel=nvme").unwrap(),
            (None, vec!["4k".to_string(), "channel=nvme".to_string()])
        );
        assert!(parse_primary_disk("20").is_err());
    }

    #[test]
    fn extra_nic_macs_follow_coreos_assemblers_scheme() {
        assert_eq!(extra_nic_mac(0), "52:55:00:d1:56:00");
        assert_eq!(extra_nic_mac(1), "52:55:00:d1:56:01");
        assert_eq!(extra_nic_mac(15), "52:55:00:d1:56:0f");
    }
}
