//! UEFI Secure Boot on the real Flatcar-shaped test disk (`flatcar-disk.qcow2` beside the
//! amd64 manifest, docs/flatcar-disk.md) under QEMU: `--enable-secureboot` with the secure
//! OVMF code and Microsoft-keyed vars that Flatcar CI's `qemu_uefi_secure.sh` passes
//! (Debian's here). The firmware verifies shim, shim verifies GRUB and GRUB the kernel; the
//! guest reports Secure Boot on in its `SecureBoot` EFI variable and its kernel locked
//! itself down. One machine, one boot; afterwards no QEMU runs, the machine's files (its
//! overlay and UEFI vars copy) are gone, and bogie left nothing in its temp dir.
//!
//! Needs `BOGIE_TEST_IMAGE` (the amd64 manifest, whose `flatcar_disk` names the disk) and
//! Debian's `ovmf` (`ci/install-deps` installs it; `ci/test` sets the variable).

mod common;

use std::path::Path;

use anyhow::bail;
use bogie_harness::{Registry, Test};
use bogie_reports::Status;
use common::{dispatch, files_named, flatcar_disk, qemu_processes_mentioning, results, serial};

/// The EFI global variable `SecureBoot`: 4 bytes of attributes, then 1 when enforced.
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

fn fixtures() -> Registry {
    let mut r = Registry::new();
    r.register(
        Test::new("secureboot.enforced", |c| async move {
            let m = c.machine()?;
            let var = m
                .must_ssh(&format!("od -An -tu1 {SECURE_BOOT_VAR}"))
                .await?;
            if var.split_whitespace().last() != Some("1") {
                bail!("SecureBoot EFI variable is {var:?}, expected its value 1");
            }
            let kernel = m
                .must_ssh("sudo dmesg | grep -o 'secureboot: Secure boot [a-z]*'")
                .await?;
            if kernel.trim() != "secureboot: Secure boot enabled" {
                bail!("the kernel says {kernel:?}");
            }
            let lockdown = m.must_ssh("cat /sys/kernel/security/lockdown").await?;
            if !lockdown.contains("[integrity]") {
                bail!("the kernel is not locked down: {lockdown:?}");
            }
            Ok(())
        })
        .distros(&[])
        .requires(&["secure-boot"]),
    )
    .unwrap();
    r
}

#[test]
fn a_secure_boot_machine_boots_the_signed_chain_and_leaves_nothing() {
    let _g = serial();
    for f in [OVMF_CODE, OVMF_VARS] {
        assert!(
            Path::new(f).is_file(),
            "{f} is missing: install the Debian package ovmf (ci/install-deps does)"
        );
    }
    let disk = flatcar_disk();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // bogie's own temp files go here: it must be empty after the run. (This test binary
    // runs this one test: nothing else reads the variable.)
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::env::set_var("TMPDIR", &tmp);
    let args: Vec<String> = [
        "run",
        "-p",
        "qemu",
        "--board",
        "amd64-usr",
        "--qemu-accel",
        "tcg",
        "--qemu-image",
        disk.to_str().unwrap(),
        "--qemu-firmware",
        OVMF_CODE,
        "--qemu-ovmf-vars",
        OVMF_VARS,
        "--enable-secureboot",
        "--output-dir",
        out.to_str().unwrap(),
        "secureboot.*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let code = dispatch(&args, fixtures());
    let report = results(&out);
    assert_eq!(report.tests.len(), 1);
    let t = &report.tests[0];
    assert_eq!(
        t.status,
        Status::Pass,
        "{}: {:?} {:?}",
        t.name,
        t.skip_reason,
        t.last_failure().map(|f| &f.message)
    );
    assert_eq!(code, 0);

    // The chain on the console: OVMF started the removable-media loader (shim), the GRUB
    // it verified read the disk's config, the kernel booted the Flatcar way.
    let m = &t.attempts[0].machines[0];
    let console = std::fs::read_to_string(out.join(m.console.as_ref().unwrap())).unwrap();
    for line in [
        "bogie-test-image: GRUB (efi) loading /flatcar/vmlinuz-a",
        "Ignition config from fw_cfg opt/org.flatcar-linux/config",
        "bogie-test-image: sshd started",
    ] {
        assert!(console.contains(line), "no {line:?} on the console");
    }

    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind: {:?}",
        qemu_processes_mentioning(&out)
    );
    let left = [
        files_named(&out, "efivars"),
        files_named(&out, "disk.qcow2"),
    ]
    .concat();
    assert!(left.is_empty(), "machine files left behind: {left:?}");
    let in_tmp: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(in_tmp.is_empty(), "left in TMPDIR: {in_tmp:?}");
}
