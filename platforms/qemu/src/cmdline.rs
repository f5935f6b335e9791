//! Building QEMU command lines. Pure: no I/O, so every shape is unit-tested.
//!
//! A [`MachinePlan`] is everything one QEMU invocation needs; [`MachinePlan::args`] turns it
//! into argv. Later boot modes (restoring a snapshot with `-loadvm`, or `-incoming` from a
//! saved memory file) become one more field here and a few lines in `args`.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use bogie_harness::platform::{DiskInterface, DiskSpec, SectorSize};
use bogie_harness::{Arch, PlatformError};

/// The accelerator a machine runs under, after `auto` was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// Hardware virtualisation through `/dev/kvm` (`-cpu host`).
    Kvm,
    /// QEMU's software emulator (`-cpu max`).
    Tcg,
}

impl ResolvedAccel {
    /// `kvm` / `tcg`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

/// How the machine's firmware is set up (firmware boot only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Firmware {
    /// QEMU's built-in default (SeaBIOS on amd64).
    Default,
    /// `-bios FILE`.
    Bios(PathBuf),
    /// UEFI in two pflash devices: the shared read-only code and this machine's own vars copy.
    /// With `secure_boot` (amd64) the machine has SMM and its pflash is accessible to SMM
    /// only, so an SMM build of OVMF keeps the guest from writing its Secure Boot variables.
    Pflash {
        code: PathBuf,
        vars: PathBuf,
        secure_boot: bool,
    },
}

impl Boot {
    /// Whether the firmware enforces Secure Boot.
    pub(crate) fn secure_boot(&self) -> bool {
        matches!(
            self,
            Boot::Firmware(Firmware::Pflash {
                secure_boot: true,
                ..
            })
        )
    }
}

/// How the machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Boot {
    /// `-kernel/-initrd/-append`.
    DirectKernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        append: String,
    },
    /// Through firmware from the primary disk (`bootindex=1`).
    Firmware(Firmware),
}

/// The second NIC on the cluster's private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrivateNic {
    /// The cluster's multicast group and port.
    pub mcast: SocketAddrV4,
    /// This machine's fixed MAC address.
    pub mac: String,
}

/// An extra disk as QEMU attaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtraDisk {
    /// Its qcow2 file.
    pub file: PathBuf,
    /// What the test asked for (interface, sectors, multipath).
    pub spec: DiskSpec,
    /// The serial the guest sees (the spec's, or `extra-disk-N`).
    pub serial: String,
}

/// The default serial of extra disk `n` (from 1): `/dev/disk/by-id/virtio-extra-disk-N`.
pub(crate) fn default_serial(n: usize) -> String {
    format!("extra-disk-{n}")
}

/// The user-mode network of extra NIC `index` (from 0): `10.0.3.0/24`, `10.0.4.0/24`, ...
/// Apart from the first NIC's `10.0.2.0/24`, so a guest that configures every NIC by DHCP
/// still answers SSH (which arrives from `10.0.2.2`) through the first one.
pub(crate) fn extra_nic_net(index: usize) -> String {
    format!("10.0.{}.0/24", index + 3)
}

/// The name of the virtio-serial port a guest says it is ready on (the guest's
/// `/dev/virtio-ports/org.bogie.ready`).
pub(crate) const READY_PORT: &str = "org.bogie.ready";

/// Everything one QEMU invocation needs.
#[derive(Debug, Clone)]
pub(crate) struct MachinePlan {
    pub name: String,
    pub arch: Arch,
    pub accel: ResolvedAccel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub boot: Boot,
    /// The machine's qcow2 overlay.
    pub disk: PathBuf,
    /// Additional empty disks.
    pub extra_disks: Vec<ExtraDisk>,
    /// The MACs of the additional user-mode NICs, in order.
    pub extra_nics: Vec<String>,
    /// The Ignition config file, when there is one.
    pub ignition: Option<PathBuf>,
    /// The fw_cfg names the config is passed under.
    pub fw_cfg_names: Vec<String>,
    /// Host port forwarded to the guest's port 22.
    pub ssh_port: u16,
    /// Serial console log file.
    pub console: PathBuf,
    /// Where the guest's readiness line goes: the virtio-serial port `org.bogie.ready`,
    /// which the test images write to once sshd is up and the boot has settled
    /// ([`READY_PORT`]).
    pub ready: Option<PathBuf>,
    /// QMP socket path (relative to QEMU's working directory, the machine dir, to stay short).
    pub qmp_socket: PathBuf,
    pub private_nic: Option<PrivateNic>,
    /// The swtpm control socket of this machine's TPM 2.0 (relative to the machine dir).
    pub tpm_socket: Option<PathBuf>,
    /// `--qemu-options`, appended last.
    pub extra_args: Vec<String>,
    /// `-incoming URI`: the machine starts paused and loads its state (a template's memory)
    /// instead of booting.
    pub incoming: Option<String>,
    /// `-no-reboot`: a guest reboot ends QEMU (the first boot of a machine with first-boot
    /// kernel arguments, relaunched with the normal ones).
    pub no_reboot: bool,
    /// Append to the console file instead of truncating it (a relaunched machine).
    pub console_append: bool,
}

/// A path as a command-line string; QEMU takes paths as bytes, but we build `key=value`
/// option strings, so non-UTF-8 paths are refused rather than mangled.
pub(crate) fn path_str(p: &Path) -> Result<&str, PlatformError> {
    p.to_str()
        .ok_or_else(|| PlatformError::Input(format!("path is not UTF-8: {}", p.display())))
}

/// Escapes a value for a QEMU `key=value,...` option: commas are doubled.
pub(crate) fn qemu_escape(v: &str) -> String {
    v.replace(',', ",,")
}

fn opt_path(p: &Path) -> Result<String, PlatformError> {
    Ok(qemu_escape(path_str(p)?))
}

/// `qcow2` when the file name says so, else `raw` (how kola picks pflash formats).
pub(crate) fn format_by_suffix(p: &Path) -> &'static str {
    if p.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// The `-machine` and `-cpu` values for an arch under an accelerator.
pub(crate) fn machine_and_cpu(arch: Arch, accel: ResolvedAccel) -> (&'static str, &'static str) {
    match (arch, accel) {
        (Arch::Amd64, ResolvedAccel::Kvm) => ("q35", "host"),
        (Arch::Amd64, ResolvedAccel::Tcg) => ("q35", "max"),
        // Under KVM take whatever GIC the host offers.
        (Arch::Arm64, ResolvedAccel::Kvm) => ("virt,gic-version=max", "host"),
        // TCG emulates GICv3. Emulating the architected pointer-authentication hash is very
        // slow; the implementation-defined one is functionally the same for a guest.
        (Arch::Arm64, ResolvedAccel::Tcg) => ("virt,gic-version=3", "max,pauth-impdef=on"),
    }
}

/// `-drive`/`-blockdev` and `-device` arguments of extra disk `n` (from 1).
fn disk_args(n: usize, d: &ExtraDisk, push: &mut impl FnMut(&[&str])) -> Result<(), PlatformError> {
    let file = opt_path(&d.file)?;
    let sectors = match d.spec.sectors {
        SectorSize::Sectors512 => String::new(),
        s => format!(
            ",logical_block_size={},physical_block_size={}",
            s.logical(),
            s.physical()
        ),
    };
    let serial = qemu_escape(&d.serial);
    // A SCSI disk gets a WWN only when the test names one: udev then names it by the WWN
    // (`scsi-3<wwn>`, `wwn-0x<wwn>`) instead of by its serial
    // (`scsi-0QEMU_QEMU_HARDDISK_<serial>`).
    let wwn = d
        .spec
        .wwn
        .map(|w| format!(",wwn={w:#x}"))
        .unwrap_or_default();
    if d.spec.multipath {
        // One backing node, two SCSI disks on two controllers, both sharing write access:
        // two paths to one disk. The vendor/product pair is what multipath-tools expects of
        // such a disk (as coreos-assembler presents it).
        push(&[
            "-blockdev",
            &format!(
                "driver=qcow2,node-name=disk{n},discard=unmap,cache.direct=off,cache.no-flush=on,file.driver=file,file.filename={file}"
            ),
        ]);
        for path in ["a", "b"] {
            push(&["-device", &format!("virtio-scsi-pci,id=scsi{n}{path}")]);
            push(&[
                "-device",
                &format!(
                    "scsi-hd,bus=scsi{n}{path}.0,drive=disk{n},share-rw=on,serial={serial}{wwn},vendor=NVME,product=VirtualMultipath{sectors}"
                ),
            ]);
        }
        return Ok(());
    }
    push(&[
        "-drive",
        &format!("if=none,id=disk{n},format=qcow2,cache=unsafe,discard=unmap,file={file}"),
    ]);
    match d.spec.interface {
        DiskInterface::Virtio => push(&[
            "-device",
            &format!("virtio-blk-pci,drive=disk{n},serial={serial}{sectors}"),
        ]),
        DiskInterface::Nvme => push(&[
            "-device",
            &format!("nvme,drive=disk{n},serial={serial}{sectors}"),
        ]),
        DiskInterface::Scsi => {
            push(&["-device", &format!("virtio-scsi-pci,id=scsi{n}")]);
            push(&[
                "-device",
                &format!("scsi-hd,bus=scsi{n}.0,drive=disk{n},serial={serial}{wwn}{sectors}"),
            ]);
        }
    }
    Ok(())
}

impl MachinePlan {
    /// The QEMU argv (without the binary).
    pub(crate) fn args(&self) -> Result<Vec<String>, PlatformError> {
        let mut a: Vec<String> = Vec::with_capacity(64);
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));

        push(&["-name", &format!("guest={}", qemu_escape(&self.name))]);
        let (machine, cpu) = machine_and_cpu(self.arch, self.accel);
        let secure_boot = self.boot.secure_boot();
        if secure_boot && self.arch != Arch::Amd64 {
            return Err(PlatformError::Input(format!(
                "Secure Boot is supported on amd64 only, not {}",
                self.arch
            )));
        }
        // Secure Boot: the SMM build of OVMF keeps its variables in flash that only SMM
        // code may write (q35 with SMM).
        let machine = if secure_boot {
            format!("{machine},smm=on")
        } else {
            machine.to_string()
        };
        push(&["-machine", &machine, "-accel", self.accel.as_str()]);
        push(&["-cpu", cpu]);
        push(&[
            "-smp",
            &self.cpus.max(1).to_string(),
            "-m",
            &self.memory_mb.to_string(),
        ]);
        push(&["-nodefaults", "-display", "none"]);

        let firmware_boot = match &self.boot {
            Boot::DirectKernel {
                kernel,
                initrd,
                append,
            } => {
                push(&["-kernel", path_str(kernel)?]);
                if let Some(initrd) = initrd {
                    push(&["-initrd", path_str(initrd)?]);
                }
                push(&["-append", append]);
                false
            }
            Boot::Firmware(fw) => {
                match fw {
                    Firmware::Default => {}
                    Firmware::Bios(f) => push(&["-bios", path_str(f)?]),
                    Firmware::Pflash {
                        code,
                        vars,
                        secure_boot,
                    } => {
                        push(&[
                            "-drive",
                            &format!(
                                "if=pflash,unit=0,format={},readonly=on,file={}",
                                format_by_suffix(code),
                                opt_path(code)?
                            ),
                        ]);
                        push(&[
                            "-drive",
                            &format!(
                                "if=pflash,unit=1,format={},file={}",
                                format_by_suffix(vars),
                                opt_path(vars)?
                            ),
                        ]);
                        if *secure_boot {
                            // Only SMM code may write the flash; S3 off, as kola runs
                            // Secure Boot machines.
                            push(&[
                                "-global",
                                "driver=cfi.pflash01,property=secure,value=on",
                                "-global",
                                "ICH9-LPC.disable_s3=1",
                            ]);
                        }
                    }
                }
                true
            }
        };

        push(&[
            "-drive",
            &format!(
                "if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file={}",
                opt_path(&self.disk)?
            ),
        ]);
        let bootindex = if firmware_boot { ",bootindex=1" } else { "" };
        push(&[
            "-device",
            &format!("virtio-blk-pci,drive=disk0,serial=primary-disk{bootindex}"),
        ]);
        for (i, d) in self.extra_disks.iter().enumerate() {
            disk_args(i + 1, d, &mut push)?;
        }

        push(&[
            "-netdev",
            &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{}-:22", self.ssh_port),
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
        ]);
        if let Some(nic) = &self.private_nic {
            push(&[
                "-netdev",
                &format!("socket,id=net1,mcast={},localaddr=127.0.0.1", nic.mcast),
                "-device",
                &format!("virtio-net-pci,netdev=net1,mac={},romfile=", nic.mac),
            ]);
        }
        for (i, mac) in self.extra_nics.iter().enumerate() {
            let id = i + 2;
            push(&[
                "-netdev",
                &format!("user,id=net{id},net={}", extra_nic_net(i)),
                "-device",
                &format!("virtio-net-pci,netdev=net{id},mac={mac},romfile="),
            ]);
        }
        push(&[
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
        ]);
        if let Some(sock) = &self.tpm_socket {
            // A TPM 2.0 in swtpm: TIS on the PC, its sysbus variant on arm64's `virt`.
            let model = match self.arch {
                Arch::Amd64 => "tpm-tis",
                Arch::Arm64 => "tpm-tis-device",
            };
            push(&[
                "-chardev",
                &format!("socket,id=chrtpm,path={}", opt_path(sock)?),
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                &format!("{model},tpmdev=tpm0"),
            ]);
        }
        let append = if self.console_append {
            ",append=on"
        } else {
            ""
        };
        push(&[
            "-chardev",
            &format!("file,id=console0,path={}{append}", opt_path(&self.console)?),
            "-serial",
            "chardev:console0",
        ]);
        if let Some(ready) = &self.ready {
            push(&[
                "-device",
                "virtio-serial-pci,id=vser0",
                "-chardev",
                &format!("file,id=ready0,path={}{append}", opt_path(ready)?),
                "-device",
                &format!("virtserialport,bus=vser0.0,chardev=ready0,name={READY_PORT}"),
            ]);
        }
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", opt_path(&self.qmp_socket)?),
        ]);
        if let Some(ign) = &self.ignition {
            let file = opt_path(ign)?;
            for name in &self.fw_cfg_names {
                push(&[
                    "-fw_cfg",
                    &format!("name={},file={file}", qemu_escape(name)),
                ]);
            }
        }
        if let Some(uri) = &self.incoming {
            a.push("-incoming".to_string());
            a.push(uri.clone());
        }
        a.extend(self.extra_args.iter().cloned());
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(arch: Arch, boot: Boot) -> MachinePlan {
        MachinePlan {
            name: "t-m0".into(),
            arch,
            accel: ResolvedAccel::Tcg,
            memory_mb: 1024,
            cpus: 2,
            boot,
            disk: "/out/t/m0/disk.qcow2".into(),
            extra_disks: vec![],
            extra_nics: vec![],
            ignition: Some("/out/t/m0/ignition.json".into()),
            fw_cfg_names: vec![
                "opt/org.flatcar-linux/config".into(),
                "opt/com.coreos/config".into(),
            ],
            ssh_port: 40022,
            console: "/out/t/m0/console.txt".into(),
            ready: None,
            qmp_socket: "qmp.sock".into(),
            private_nic: Some(PrivateNic {
                mcast: "230.77.1.2:45000".parse().unwrap(),
                mac: "52:54:00:77:05:0a".into(),
            }),
            tpm_socket: None,
            extra_args: vec![],
            incoming: None,
            no_reboot: false,
            console_append: false,
        }
    }

    fn disk(n: usize, spec: DiskSpec) -> ExtraDisk {
        ExtraDisk {
            file: format!("/out/t/m0/extra-disk-{n}.qcow2").into(),
            serial: spec.serial.clone().unwrap_or_else(|| default_serial(n)),
            spec,
        }
    }

    /// The `-device` values of `args`.
    fn devices(args: &[String]) -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].as_str())
            .collect()
    }

    fn joined(p: &MachinePlan) -> String {
        p.args().unwrap().join(" ")
    }

    #[test]
    fn amd64_direct_kernel() {
        let p = plan(
            Arch::Amd64,
            Boot::DirectKernel {
                kernel: "/img/vmlinuz".into(),
                initrd: Some("/img/initrd.img".into()),
                append: "root=/dev/vda rw console=ttyS0 net.ifnames=0".into(),
            },
        );
        let args = p.args().unwrap();
        let expected = [
            "-name",
            "guest=t-m0",
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1024",
            "-nodefaults",
            "-display",
            "none",
            "-kernel",
            "/img/vmlinuz",
            "-initrd",
            "/img/initrd.img",
            "-append",
            "root=/dev/vda rw console=ttyS0 net.ifnames=0",
            "-drive",
            "if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file=/out/t/m0/disk.qcow2",
            "-device",
            "virtio-blk-pci,drive=disk0,serial=primary-disk",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
            "-netdev",
            "socket,id=net1,mcast=230.77.1.2:45000,localaddr=127.0.0.1",
            "-device",
            "virtio-net-pci,netdev=net1,mac=52:54:00:77:05:0a,romfile=",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
            "-chardev",
            "file,id=console0,path=/out/t/m0/console.txt",
            "-serial",
            "chardev:console0",
            "-qmp",
            "unix:qmp.sock,server=on,wait=off",
            "-fw_cfg",
            "name=opt/org.flatcar-linux/config,file=/out/t/m0/ignition.json",
            "-fw_cfg",
            "name=opt/com.coreos/config,file=/out/t/m0/ignition.json",
        ];
        assert_eq!(args, expected);
        assert!(
            !args.iter().any(|a| a == "-no-reboot"),
            "tests reboot machines"
        );
    }

    #[test]
    fn incoming_comes_before_extra_args() {
        let mut p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        assert!(!joined(&p).contains("-incoming"));
        p.incoming = Some("exec:cat '/t/memory'".into());
        p.extra_args = vec!["-S".into()];
        let args = p.args().unwrap();
        let n = args.len();
        assert_eq!(args[n - 3..], ["-incoming", "exec:cat '/t/memory'", "-S"]);
    }

    #[test]
    fn both_fw_cfg_names_are_passed() {
        let p = plan(Arch::Arm64, Boot::Firmware(Firmware::Default));
        let s = joined(&p);
        assert!(
            s.contains("-fw_cfg name=opt/org.flatcar-linux/config,file=/out/t/m0/ignition.json")
        );
        assert!(s.contains("-fw_cfg name=opt/com.coreos/config,file=/out/t/m0/ignition.json"));
        let mut none = p.clone();
        none.ignition = None;
        assert!(!joined(&none).contains("-fw_cfg"));
    }

    #[test]
    fn amd64_firmware_disk_uses_seabios_and_bootindex() {
        let p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        let s = joined(&p);
        assert!(s.contains("-machine q35 -accel tcg -cpu max"));
        assert!(!s.contains("-bios") && !s.contains("pflash") && !s.contains("-kernel"));
        assert!(s.contains("virtio-blk-pci,drive=disk0,serial=primary-disk,bootindex=1"));

        let bios = plan(
            Arch::Amd64,
            Boot::Firmware(Firmware::Bios("/fw/bios-256k.bin".into())),
        );
        assert!(joined(&bios).contains("-bios /fw/bios-256k.bin"));

        let mut kvm = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        kvm.accel = ResolvedAccel::Kvm;
        assert!(joined(&kvm).contains("-machine q35 -accel kvm -cpu host"));
    }

    #[test]
    fn arm64_uefi_disk_uses_pflash_with_the_machine_vars_copy() {
        let p = plan(
            Arch::Arm64,
            Boot::Firmware(Firmware::Pflash {
                code: "/usr/share/AAVMF/AAVMF_CODE.fd".into(),
                vars: "/out/t/m0/efivars.fd".into(),
                secure_boot: false,
            }),
        );
        let s = joined(&p);
        assert!(s.contains("-machine virt,gic-version=3 -accel tcg -cpu max,pauth-impdef=on"));
        assert!(s.contains(
            "-drive if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"
        ));
        assert!(s.contains("-drive if=pflash,unit=1,format=raw,file=/out/t/m0/efivars.fd"));
        assert!(s.contains("bootindex=1"));

        let q = plan(
            Arch::Arm64,
            Boot::Firmware(Firmware::Pflash {
                code: "/fw/flatcar_efi_code.qcow2".into(),
                vars: "/out/t/m0/efivars.qcow2".into(),
                secure_boot: false,
            }),
        );
        let s = joined(&q);
        assert!(s.contains("if=pflash,unit=0,format=qcow2,readonly=on"));
        assert!(s.contains("if=pflash,unit=1,format=qcow2,file=/out/t/m0/efivars.qcow2"));
        assert!(!s.contains("smm") && !s.contains("-global"));
    }

    fn secure(code: &str, vars: &str) -> Boot {
        Boot::Firmware(Firmware::Pflash {
            code: code.into(),
            vars: vars.into(),
            secure_boot: true,
        })
    }

    #[test]
    fn amd64_secure_boot_has_smm_a_secure_pflash_and_no_s3() {
        let p = plan(
            Arch::Amd64,
            secure(
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/out/t/m0/efivars.fd",
            ),
        );
        let args = p.args().unwrap();
        let expected_head = [
            "-name",
            "guest=t-m0",
            "-machine",
            "q35,smm=on",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1024",
            "-nodefaults",
            "-display",
            "none",
            "-drive",
            "if=pflash,unit=0,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
            "-drive",
            "if=pflash,unit=1,format=raw,file=/out/t/m0/efivars.fd",
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-global",
            "ICH9-LPC.disable_s3=1",
            "-drive",
            "if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap,file=/out/t/m0/disk.qcow2",
            "-device",
            "virtio-blk-pci,drive=disk0,serial=primary-disk,bootindex=1",
        ];
        assert_eq!(args[..expected_head.len()], expected_head);
        assert_eq!(args.iter().filter(|a| *a == "-global").count(), 2);
        assert!(!args.iter().any(|a| a == "-kernel" || a == "-bios"));

        // Flatcar's secure code and vars are qcow2 files; under KVM the CPU is the host's.
        let mut q = plan(
            Arch::Amd64,
            secure(
                "/w/flatcar_production_qemu_uefi_secure_efi_code.qcow2",
                "/out/t/m0/efivars.qcow2",
            ),
        );
        q.accel = ResolvedAccel::Kvm;
        let s = joined(&q);
        assert!(s.contains("-machine q35,smm=on -accel kvm -cpu host"));
        assert!(s.contains("if=pflash,unit=0,format=qcow2,readonly=on,file=/w/flatcar_production_qemu_uefi_secure_efi_code.qcow2"));
        assert!(s.contains("if=pflash,unit=1,format=qcow2,file=/out/t/m0/efivars.qcow2"));
        assert!(s.contains("-global driver=cfi.pflash01,property=secure,value=on"));

        // Not on arm64's `virt` (no SMM there): refused rather than half set up.
        let a = plan(Arch::Arm64, secure("/c.fd", "/v.fd"));
        assert!(a.args().is_err());
    }

    #[test]
    fn commas_in_paths_are_escaped_and_extra_disks_and_args_are_added() {
        let mut p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        p.console = "/out/a,b/console.txt".into();
        p.extra_disks = vec![disk(1, DiskSpec::new(1))];
        p.extra_args = vec!["-device".into(), "virtio-balloon-pci".into()];
        p.private_nic = None;
        let args = p.args().unwrap();
        assert!(args.contains(&"file,id=console0,path=/out/a,,b/console.txt".to_string()));
        assert!(args.contains(&"virtio-blk-pci,drive=disk1,serial=extra-disk-1".to_string()));
        assert_eq!(args[args.len() - 2..], ["-device", "virtio-balloon-pci"]);
        assert!(!args.iter().any(|a| a.contains("net1")));
    }

    #[test]
    fn extra_disks_get_their_interface_sectors_and_serial() {
        let mut p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        p.extra_disks = vec![
            disk(
                1,
                DiskSpec::new(2)
                    .sectors(SectorSize::Native4k)
                    .serial("four-k"),
            ),
            disk(
                2,
                DiskSpec::new(3)
                    .interface(DiskInterface::Nvme)
                    .serial("fast"),
            ),
            disk(
                3,
                DiskSpec::new(1)
                    .interface(DiskInterface::Scsi)
                    .sectors(SectorSize::Emulated512),
            ),
            disk(4, DiskSpec::new(1)),
        ];
        let args = p.args().unwrap();
        let s = args.join(" ");
        for n in 1..=4 {
            assert!(s.contains(&format!(
                "-drive if=none,id=disk{n},format=qcow2,cache=unsafe,discard=unmap,file=/out/t/m0/extra-disk-{n}.qcow2"
            )));
        }
        let devs = devices(&args);
        assert!(devs.contains(
            &"virtio-blk-pci,drive=disk1,serial=four-k,logical_block_size=4096,physical_block_size=4096"
        ));
        assert!(devs.contains(&"nvme,drive=disk2,serial=fast"));
        assert!(devs.contains(&"virtio-scsi-pci,id=scsi3"));
        assert!(devs.contains(
            &"scsi-hd,bus=scsi3.0,drive=disk3,serial=extra-disk-3,logical_block_size=512,physical_block_size=4096"
        ));
        assert!(devs.contains(&"virtio-blk-pci,drive=disk4,serial=extra-disk-4"));
        // The primary disk is unchanged.
        assert!(devs.contains(&"virtio-blk-pci,drive=disk0,serial=primary-disk,bootindex=1"));
    }

    #[test]
    fn a_multipath_disk_is_one_node_behind_two_scsi_controllers() {
        let mut p = plan(Arch::Arm64, Boot::Firmware(Firmware::Default));
        let mut spec = DiskSpec::new(5).multipath().serial("mp");
        spec.wwn = Some(0x5000_c500_155a_3456);
        p.extra_disks = vec![disk(1, spec)];
        let args = p.args().unwrap();
        let blockdevs: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-blockdev")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            blockdevs,
            ["driver=qcow2,node-name=disk1,discard=unmap,cache.direct=off,cache.no-flush=on,file.driver=file,file.filename=/out/t/m0/extra-disk-1.qcow2"]
        );
        assert!(
            !args.iter().any(|a| a.contains("id=disk1,")),
            "no -drive for it"
        );
        let devs = devices(&args);
        for path in ["a", "b"] {
            assert!(devs.contains(&format!("virtio-scsi-pci,id=scsi1{path}").as_str()));
            assert!(devs.contains(
                &format!("scsi-hd,bus=scsi1{path}.0,drive=disk1,share-rw=on,serial=mp,wwn=0x5000c500155a3456,vendor=NVME,product=VirtualMultipath").as_str()
            ));
        }
    }

    #[test]
    fn extra_nics_are_user_networks_of_their_own_with_the_given_macs() {
        let mut p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        p.extra_nics = vec!["52:55:00:d1:56:00".into(), "52:55:00:d1:56:01".into()];
        let s = joined(&p);
        // The first NIC and the private network stay as they are.
        assert!(s.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22 -device virtio-net-pci,netdev=net0,romfile="));
        assert!(s.contains("-netdev socket,id=net1,mcast=230.77.1.2:45000,localaddr=127.0.0.1"));
        assert!(s.contains("-netdev user,id=net2,net=10.0.3.0/24 -device virtio-net-pci,netdev=net2,mac=52:55:00:d1:56:00,romfile="));
        assert!(s.contains("-netdev user,id=net3,net=10.0.4.0/24 -device virtio-net-pci,netdev=net3,mac=52:55:00:d1:56:01,romfile="));
        assert!(!joined(&plan(Arch::Amd64, Boot::Firmware(Firmware::Default))).contains("net2"));
    }

    #[test]
    fn the_guests_readiness_port_is_a_virtio_serial_port_into_a_file() {
        for arch in [Arch::Amd64, Arch::Arm64] {
            let mut p = plan(arch, Boot::Firmware(Firmware::Default));
            assert!(!joined(&p).contains("virtserialport"), "none unless asked");
            p.ready = Some("/out/t/m0/ready.txt".into());
            assert!(joined(&p).contains(
                "-device virtio-serial-pci,id=vser0 -chardev file,id=ready0,path=/out/t/m0/ready.txt -device virtserialport,bus=vser0.0,chardev=ready0,name=org.bogie.ready"
            ));
            p.console_append = true;
            assert!(joined(&p).contains("file,id=ready0,path=/out/t/m0/ready.txt,append=on"));
        }
    }

    #[test]
    fn a_first_boot_run_ends_on_reboot_and_a_relaunch_appends_to_the_console() {
        let mut p = plan(Arch::Amd64, Boot::Firmware(Firmware::Default));
        p.no_reboot = true;
        let args = p.args().unwrap();
        assert_eq!(args.iter().filter(|a| *a == "-no-reboot").count(), 1);
        assert!(args.contains(&"file,id=console0,path=/out/t/m0/console.txt".to_string()));
        p.no_reboot = false;
        p.console_append = true;
        let args = p.args().unwrap();
        assert!(!args.iter().any(|a| a == "-no-reboot"));
        assert!(args.contains(&"file,id=console0,path=/out/t/m0/console.txt,append=on".to_string()));
    }
}
