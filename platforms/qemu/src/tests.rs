//! Validation, accelerator choice, firmware and start-failure tests (no real guest boots).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bogie_harness::platform::DiskSpec;
use bogie_harness::{Arch, Cluster, ClusterSpec, ImageInfo, MachineSpec, Platform, PlatformError};

use super::*;
use crate::cmdline::Firmware;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn exe(&self, name: &str, script: &str) -> PathBuf {
        let p = self.write(name, script.as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A bin dir with fake `qemu-system-*` and `qemu-img`.
    fn bin_dir(&self) -> PathBuf {
        let d = self.path("bin");
        std::fs::create_dir_all(&d).unwrap();
        for n in ["qemu-system-x86_64", "qemu-system-aarch64", "qemu-img"] {
            let p = d.join(n);
            std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        d
    }

    fn kernel(&self, arch: Arch) -> PathBuf {
        let mut k = vec![0u8; 4096];
        match arch {
            Arch::Amd64 => k[0x202..0x206].copy_from_slice(b"HdrS"),
            Arch::Arm64 => k[56..60].copy_from_slice(b"ARM\x64"),
        }
        self.write(&format!("vmlinuz-{arch}"), &k)
    }

    /// A manifest (direct-kernel unless `boot` says otherwise) loaded as the harness does.
    fn manifest(&self, arch: Arch, kernel_arch: Arch, boot: &str) -> ImageInfo {
        self.write("disk.qcow2", b"QFI\xfb");
        self.write("initrd.img", b"initrd");
        let k = self.kernel(kernel_arch);
        let m = self.write(
            "manifest.json",
            format!(
                r#"{{"format":"bogie-image/1","arch":"{arch}","boot":"{boot}","disk":"disk.qcow2",
                "kernel":"{}","initrd":"initrd.img","kernel_args":"root=/dev/vda console=ttyS0"}}"#,
                k.file_name().unwrap().to_str().unwrap()
            )
            .as_bytes(),
        );
        ImageInfo::load(&m).unwrap()
    }
}

fn validate(opts: QemuOptions, path: &Path) -> Result<QemuPlatform, PlatformError> {
    QemuPlatform::validate(opts, Some(path.as_os_str()), |_, _| {
        Err("no kvm in tests".into())
    })
}

fn err(r: Result<QemuPlatform, PlatformError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert!(
                matches!(e, PlatformError::Input(_)),
                "not an input error: {e:?}"
            );
            e.to_string()
        }
    }
}

#[test]
fn a_manifest_of_another_arch_is_refused_before_any_boot() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Arm64, Arch::Arm64, "direct-kernel");
    let e = err(validate(QemuOptions::new(img, Arch::Amd64), &bin));
    assert_eq!(
        e,
        format!(
            "image {} is arm64 but --board amd64-usr was given",
            f.path("manifest.json").display()
        )
    );
}

#[test]
fn a_kernel_contradicting_the_manifest_is_refused() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Amd64, Arch::Arm64, "direct-kernel");
    let e = err(validate(QemuOptions::new(img, Arch::Amd64), &bin));
    assert!(
        e.ends_with("is arm64 but --board amd64-usr was given"),
        "{e}"
    );
}

#[test]
fn plain_disks_and_kernels_are_recognised_from_their_bytes() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let mut raw = vec![0u8; 1 << 20];
    raw[600_000..600_011].copy_from_slice(b"BOOTAA64EFI");
    let disk = f.write("flatcar_production_image.bin", &raw);
    let img = ImageInfo::load(&disk).unwrap();
    let e = err(validate(QemuOptions::new(img.clone(), Arch::Amd64), &bin));
    assert_eq!(
        e,
        format!(
            "image {} is arm64 but --board amd64-usr was given",
            disk.display()
        )
    );
    // The right board boots it through AAVMF (when installed) or names the package.
    match validate(QemuOptions::new(img, Arch::Arm64), &bin) {
        Ok(p) => assert_eq!(
            p.inner.boot,
            BootTemplate::Firmware(FirmwareTemplate::Uefi {
                code: DEFAULT_AAVMF_CODE.into(),
                vars: DEFAULT_AAVMF_VARS.into(),
                secure_boot: false,
            })
        ),
        Err(e) => assert!(e.to_string().contains("qemu-efi-aarch64"), "{e}"),
    }

    let k = f.kernel(Arch::Arm64);
    let e = err(validate(
        QemuOptions::new(ImageInfo::load(&k).unwrap(), Arch::Amd64),
        &bin,
    ));
    assert!(
        e.ends_with("is arm64 but --board amd64-usr was given"),
        "{e}"
    );
    let e = err(validate(
        QemuOptions::new(ImageInfo::load(&k).unwrap(), Arch::Arm64),
        &bin,
    ));
    assert!(e.contains("is a Linux kernel, not a disk image"), "{e}");
}

#[test]
fn missing_binaries_name_their_debian_package() {
    let f = Fixture::new();
    let img = f.manifest(Arch::Arm64, Arch::Arm64, "direct-kernel");
    let empty = f.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err(validate(QemuOptions::new(img.clone(), Arch::Arm64), &empty));
    assert_eq!(
        e,
        "qemu-system-aarch64 not found in PATH: install the Debian package qemu-system-arm"
    );
    let img64 = f.manifest(Arch::Amd64, Arch::Amd64, "direct-kernel");
    let e = err(validate(QemuOptions::new(img64, Arch::Amd64), &empty));
    assert_eq!(
        e,
        "qemu-system-x86_64 not found in PATH: install the Debian package qemu-system-x86"
    );
    // qemu-system present, qemu-img missing.
    let only = f.path("only");
    std::fs::create_dir_all(&only).unwrap();
    f.exe("only/qemu-system-aarch64", "#!/bin/sh\n");
    let e = err(validate(QemuOptions::new(img.clone(), Arch::Arm64), &only));
    assert_eq!(
        e,
        "qemu-img not found in PATH: install the Debian package qemu-utils"
    );
    // An explicit binary that does not exist.
    let mut o = QemuOptions::new(img, Arch::Arm64);
    o.qemu_binary = Some("/nonexistent/qemu".into());
    let e = err(validate(o, &only));
    assert!(e.contains("/nonexistent/qemu does not exist"), "{e}");
}

#[test]
fn firmware_is_chosen_per_arch_and_checked() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Amd64, Arch::Amd64, "firmware");
    // amd64: SeaBIOS by default, -bios with a firmware file, pflash with vars too.
    let p = validate(QemuOptions::new(img.clone(), Arch::Amd64), &bin).unwrap();
    assert_eq!(
        p.inner.boot,
        BootTemplate::Firmware(FirmwareTemplate::Default)
    );
    let code = f.write("OVMF_CODE.fd", b"code");
    let vars = f.write("OVMF_VARS.fd", b"vars");
    let mut o = QemuOptions::new(img.clone(), Arch::Amd64);
    o.firmware = Some(code.clone());
    let p = validate(o.clone(), &bin).unwrap();
    assert_eq!(
        p.inner.boot,
        BootTemplate::Firmware(FirmwareTemplate::Bios(code.clone()))
    );
    o.ovmf_vars = Some(vars.clone());
    let p = validate(o.clone(), &bin).unwrap();
    assert_eq!(
        p.inner.boot,
        BootTemplate::Firmware(FirmwareTemplate::Uefi {
            code: code.clone(),
            vars: vars.clone(),
            secure_boot: false,
        })
    );
    assert!(!p.capabilities().contains("secure-boot"));
    o.firmware = None;
    let e = err(validate(o.clone(), &bin));
    assert!(e.contains("--qemu-ovmf-vars needs --qemu-firmware"), "{e}");
    o.firmware = Some(f.path("missing.fd"));
    let e = err(validate(o, &bin));
    assert_eq!(
        e,
        format!(
            "firmware file not found: {}",
            f.path("missing.fd").display()
        )
    );
}

#[test]
fn secure_boot_is_uefi_on_amd64_firmware_boot_only() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Amd64, Arch::Amd64, "firmware");
    let code = f.write(
        "flatcar_production_qemu_uefi_secure_efi_code.qcow2",
        b"code",
    );
    let vars = f.write(
        "flatcar_production_qemu_uefi_secure_efi_vars.qcow2",
        b"vars",
    );
    let mut o = QemuOptions::new(img.clone(), Arch::Amd64);
    o.secure_boot = true;
    // The given code and vars, as Flatcar CI's qemu_uefi_secure.sh passes them.
    let mut given = o.clone();
    given.firmware = Some(code.clone());
    given.ovmf_vars = Some(vars.clone());
    let p = validate(given.clone(), &bin).unwrap();
    assert_eq!(
        p.inner.boot,
        BootTemplate::Firmware(FirmwareTemplate::Uefi {
            code: code.clone(),
            vars: vars.clone(),
            secure_boot: true,
        })
    );
    assert!(p.capabilities().contains("secure-boot"));
    // Neither: Debian's Secure Boot OVMF with Microsoft's keys (or the package named).
    match validate(o.clone(), &bin) {
        Ok(p) => assert_eq!(
            p.inner.boot,
            BootTemplate::Firmware(FirmwareTemplate::Uefi {
                code: DEFAULT_OVMF_SECBOOT_CODE.into(),
                vars: DEFAULT_OVMF_SECBOOT_VARS.into(),
                secure_boot: true,
            })
        ),
        Err(e) => assert_eq!(
            e.to_string(),
            format!("firmware file not found: {DEFAULT_OVMF_SECBOOT_CODE} (install the Debian package ovmf or pass --qemu-firmware and --qemu-ovmf-vars)")
        ),
    }
    // SeaBIOS-style firmware alone has no Secure Boot.
    let mut bios = o.clone();
    bios.firmware = Some(f.write("bios-256k.bin", b"bios"));
    let e = err(validate(bios, &bin));
    assert!(
        e.starts_with("--enable-secureboot needs UEFI: --qemu-firmware ")
            && e.contains("without --qemu-ovmf-vars is BIOS firmware, which has no Secure Boot"),
        "{e}"
    );
    let mut vars_only = o.clone();
    vars_only.ovmf_vars = Some(vars.clone());
    let e = err(validate(vars_only, &bin));
    assert!(e.contains("--qemu-ovmf-vars needs --qemu-firmware"), "{e}");
    let mut missing = given.clone();
    missing.ovmf_vars = Some(f.path("missing_vars.qcow2"));
    let e = err(validate(missing, &bin));
    assert_eq!(
        e,
        format!(
            "firmware file not found: {}",
            f.path("missing_vars.qcow2").display()
        )
    );
    // A kernel booted directly has no firmware to enforce anything.
    let direct = f.manifest(Arch::Amd64, Arch::Amd64, "direct-kernel");
    let mut d = QemuOptions::new(direct, Arch::Amd64);
    d.secure_boot = true;
    let e = err(validate(d, &bin));
    assert!(
        e.starts_with("--enable-secureboot: image ")
            && e.contains("boots its kernel directly, without firmware"),
        "{e}"
    );
    // arm64: refused, whatever the image or firmware.
    let arm = f.manifest(Arch::Arm64, Arch::Arm64, "firmware");
    let mut a = QemuOptions::new(arm, Arch::Arm64);
    a.secure_boot = true;
    a.firmware = Some(code);
    a.ovmf_vars = Some(vars);
    let e = err(validate(a, &bin));
    assert!(
        e.starts_with("--enable-secureboot is supported on amd64 only"),
        "{e}"
    );
}

#[tokio::test]
async fn secure_boot_machines_get_their_own_vars_copy_and_keep_secure_boot() {
    let f = Fixture::new();
    let vars = f.write("OVMF_VARS_4M.ms.fd", b"microsoft keys");
    let m0 = f.path("m0");
    std::fs::create_dir_all(&m0).unwrap();
    let mut files = Vec::new();
    let fw = crate::parts::machine_firmware(
        &FirmwareTemplate::Uefi {
            code: DEFAULT_OVMF_SECBOOT_CODE.into(),
            vars,
            secure_boot: true,
        },
        &m0,
        &mut files,
    )
    .await
    .unwrap();
    assert_eq!(
        fw,
        Firmware::Pflash {
            code: DEFAULT_OVMF_SECBOOT_CODE.into(),
            vars: m0.join("efivars.fd"),
            secure_boot: true,
        }
    );
    assert_eq!(
        std::fs::read(m0.join("efivars.fd")).unwrap(),
        b"microsoft keys"
    );
    assert_eq!(files, vec![m0.join("efivars.fd")]);
}

#[tokio::test]
async fn arm64_uefi_machines_get_their_own_vars_copy() {
    let f = Fixture::new();
    let vars = f.write("AAVMF_VARS.fd", b"pristine vars");
    let m0 = f.path("m0");
    std::fs::create_dir_all(&m0).unwrap();
    let mut files = Vec::new();
    let fw = crate::parts::machine_firmware(
        &FirmwareTemplate::Uefi {
            code: DEFAULT_AAVMF_CODE.into(),
            vars: vars.clone(),
            secure_boot: false,
        },
        &m0,
        &mut files,
    )
    .await
    .unwrap();
    assert_eq!(
        fw,
        Firmware::Pflash {
            code: DEFAULT_AAVMF_CODE.into(),
            vars: m0.join("efivars.fd"),
            secure_boot: false,
        }
    );
    assert_eq!(
        std::fs::read(m0.join("efivars.fd")).unwrap(),
        b"pristine vars"
    );
    assert_eq!(files, vec![m0.join("efivars.fd")]);
}

#[test]
fn accel_auto_uses_kvm_only_when_it_works_for_the_host_arch() {
    let ok = || Ok(());
    let broken = || Err("KVM_CREATE_VM failed".to_string());
    let never = || -> Result<(), String> { panic!("probe must not run for a foreign arch") };
    let host = Some(Arch::Amd64);
    assert_eq!(
        resolve_accel(Accel::Auto, Arch::Amd64, host, ok).unwrap(),
        ResolvedAccel::Kvm
    );
    assert_eq!(
        resolve_accel(Accel::Auto, Arch::Amd64, host, broken).unwrap(),
        ResolvedAccel::Tcg
    );
    assert_eq!(
        resolve_accel(Accel::Auto, Arch::Arm64, host, never).unwrap(),
        ResolvedAccel::Tcg
    );
    assert_eq!(
        resolve_accel(Accel::Tcg, Arch::Amd64, host, never).unwrap(),
        ResolvedAccel::Tcg
    );
    let e = resolve_accel(Accel::Kvm, Arch::Amd64, host, broken).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--qemu-accel kvm: KVM is not usable: KVM_CREATE_VM failed"
    );
    let e = resolve_accel(Accel::Kvm, Arch::Arm64, host, never).unwrap_err();
    assert!(e.to_string().contains("arm64 guest cannot use KVM"), "{e}");
    assert_eq!("tcg".parse::<Accel>().unwrap(), Accel::Tcg);
    assert!("xen".parse::<Accel>().is_err());
}

#[test]
fn sizes_parse_like_kolas_grow_flag() {
    assert_eq!(parse_size("1024").unwrap(), 1024);
    assert_eq!(parse_size("5G").unwrap(), 5 << 30);
    assert_eq!(parse_size("5GB").unwrap(), 5 << 30);
    assert_eq!(parse_size("5GiB").unwrap(), 5 << 30);
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("3k").unwrap(), 3 << 10);
    assert_eq!(parse_size("3K").unwrap(), 3 << 10);
    assert_eq!(parse_size("2T").unwrap(), 2 << 40);
    assert_eq!(parse_size("0").unwrap(), 0);
    for bad in ["", "G", "5X", "-1G", "1.5G", "99999999999T"] {
        let e = parse_size(bad).unwrap_err();
        assert!(e.contains("is not a size"), "{bad}: {e}");
    }
}

#[test]
fn capabilities_include_private_network_and_kernel_args_for_direct_boot() {
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Amd64, Arch::Amd64, "direct-kernel");
    let p = validate(QemuOptions::new(img, Arch::Amd64), &bin).unwrap();
    let c = p.capabilities();
    for k in [
        "private-network",
        "extra-disk",
        "extra-nic",
        "multipath",
        "primary-disk-size",
        "fw-cfg",
        "kernel-args",
        "host-omaha",
    ] {
        assert!(c.contains(k), "{k} missing from {c:?}");
    }
    assert_eq!(p.name(), "qemu");
    assert_eq!(p.accel(), ResolvedAccel::Tcg);
}

/// A fake QEMU that fails at start: `new_machine` returns its stderr, retries a taken SSH
/// port, and leaves no overlay behind. Needs the real `qemu-img`.
#[tokio::test]
async fn an_early_qemu_exit_is_reported_with_its_stderr() {
    let Some(qemu_img) = detect::find_program("qemu-img", std::env::var_os("PATH").as_deref())
    else {
        eprintln!("skipped: qemu-img not installed");
        return;
    };
    let f = Fixture::new();
    let bin = f.bin_dir();
    let img = f.manifest(Arch::Amd64, Arch::Amd64, "direct-kernel");
    // A real qcow2 base so the overlay can be created.
    let base = img.manifest.as_ref().unwrap().disk.clone();
    let st = std::process::Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());

    let counter = f.path("starts");
    let fake = f.exe(
        "fake-qemu",
        &format!(
            "#!/bin/sh\necho x >> {}\necho \"qemu-system-x86_64: -netdev user,id=net0: Could not set up host forwarding rule 'tcp:127.0.0.1:1-:22'\" >&2\nexit 1\n",
            counter.display()
        ),
    );
    let mut o = QemuOptions::new(img.clone(), Arch::Amd64);
    o.qemu_binary = Some(fake);
    o.qemu_img = Some(qemu_img.clone());
    let p = validate(o, &bin).unwrap();
    let cdir = f.path("out/t");
    let mdir = cdir.join("m0");
    std::fs::create_dir_all(&mdir).unwrap();
    let cluster = p
        .new_cluster(ClusterSpec {
            name: "t".into(),
            dir: cdir.clone(),
        })
        .await
        .unwrap();
    let spec = MachineSpec {
        id: "m0".into(),
        dir: mdir.clone(),
        ignition: r#"{"ignition":{"version":"3.3.0"}}"#.into(),
        memory_mb: None,
        cpus: None,
        extra_disks: vec![DiskSpec::new(1)],
        extra_nics: 1,
        kernel_args: vec!["quiet".into()],
        first_boot_kernel_args: vec!["ip=dhcp".into()],
        tpm: false,
        may_outlive: false,
        no_ssh_key_in_metadata: false,
        ..MachineSpec::default()
    };
    let e = match cluster.new_machine(spec.clone()).await {
        Ok(_) => panic!("the fake QEMU cannot boot"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("QEMU exited at start"), "{e}");
    assert!(e.contains("Could not set up host forwarding rule"), "{e}");
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        3,
        "3 port attempts"
    );
    assert!(!mdir.join("disk.qcow2").exists(), "overlay left behind");
    assert!(
        !mdir.join("extra-disk-1.qcow2").exists(),
        "extra disk left behind"
    );
    // The command line is kept in qemu.log, and the Ignition config got the private network.
    let log = std::fs::read_to_string(mdir.join("qemu.log")).unwrap();
    // The first boot's command line: every boot's arguments, then the first boot's, and
    // QEMU ends at the guest's first reboot.
    assert!(
        log.contains("-append root=/dev/vda console=ttyS0 quiet ip=dhcp -drive"),
        "{log}"
    );
    assert!(log.contains(" -no-reboot"), "{log}");
    assert!(
        log.contains("virtio-net-pci,netdev=net2,mac=52:55:00:d1:56:00,romfile="),
        "{log}"
    );
    assert!(log.contains("name=opt/com.coreos/config"), "{log}");
    let ign = std::fs::read_to_string(mdir.join("ignition.json")).unwrap();
    assert!(ign.contains("10-bogie-private.network"), "{ign}");

    // Any other start failure is not retried.
    std::fs::remove_file(&counter).unwrap();
    let fake2 = f.exe(
        "fake-qemu2",
        &format!(
            "#!/bin/sh\necho x >> {}\necho 'qemu: unsupported machine type' >&2\nexit 1\n",
            counter.display()
        ),
    );
    let mut o = QemuOptions::new(img, Arch::Amd64);
    o.qemu_binary = Some(fake2);
    o.qemu_img = Some(qemu_img);
    let p = validate(o, &bin).unwrap();
    let cluster = p
        .cluster(ClusterSpec {
            name: "t2".into(),
            dir: cdir,
        })
        .unwrap();
    let e = cluster.boot(spec).await.unwrap_err().to_string();
    assert!(
        e.ends_with("QEMU exited at start (exit status: 1): qemu: unsupported machine type"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        1
    );
    cluster.destroy().await.unwrap();
    cluster.destroy().await.unwrap();
}
