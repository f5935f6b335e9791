//! Flatcar CI's QEMU job with bogie in kola's place, on bogie's Flatcar-shaped test disk
//! (`flatcar-disk.qcow2` beside the amd64 manifest, docs/flatcar-disk.md) given as a plain
//! disk, booted through firmware: SeaBIOS as `ci-automation/vendor-testing/qemu.sh` runs
//! it, and OVMF code + vars as its `qemu_uefi.sh` variant does.
//!
//! The job's kola command line is reproduced flag for flag with the script's own shell
//! expansions (the quoted `"${ovmf_vars:+...}"` that is an empty argument on BIOS runs,
//! the unquoted optional flags), run by bash with `kola` standing for bogie. The test
//! asserts the TAP file and the results, and from the guests' own console logs that
//! Ignition read its config from fw_cfg `opt/org.flatcar-linux/config` and that `/usr`
//! was mounted read-only from USR-A.
//!
//! The arm64 variant boots the arm64 disk through AAVMF, as the job does on arm64.
//!
//! Needs `BOGIE_TEST_IMAGE` and `BOGIE_TEST_IMAGE_ARM64` (the manifests, whose
//! `flatcar_disk` names the disk); `ci/test` sets them.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    files_named, flatcar_disk, flatcar_disk_of, not_passed, qemu_processes_mentioning, serial,
};

/// The Flatcar CI job's kola invocation, as its script writes it (flags, quoting and
/// optional-flag expansions), `kola` being bogie. Positional arguments are the tests.
const QEMU_JOB: &str = r#"
set -euo pipefail
kola() { "$BOGIE" "$@"; }
declare -a devcontainer_opts
kola run \
    --board="${CIA_ARCH}-usr" \
    --parallel="${QEMU_PARALLEL}" \
    --platform=qemu \
    --qemu-firmware="${firmware}" \
    --qemu-image="${QEMU_IMAGE_NAME}" \
    --tapfile="${CIA_TAPFILE}" \
    "${ovmf_vars:+--qemu-ovmf-vars=${ovmf_vars}}" \
    ${QEMU_KOLA_SKIP_MANGLE:+--qemu-skip-mangle} \
    "${devcontainer_opts[@]}" \
    ${SECUREBOOT:+--enable-secureboot} \
    --image-version "${CIA_VERNUM}" \
    "${@}"
"#;

/// The version the job passes (`CIA_VERNUM`): a Flatcar release number, or a nightly's
/// (whose build suffix kola drops), and the version the report must then carry.
const VERNUM: (&str, &str) = ("4230.2.3", "4230.2.3");
/// A nightly's `CIA_VERNUM` (the arm64 job).
const NIGHTLY_VERNUM: (&str, &str) = ("4799.0.0+nightly-20261120-2100", "4799.0.0");

/// `cl.basic` and ten more, run under SeaBIOS (the direct-kernel image's catalog part in
/// tests/e2e_catalog.rs keeps only what this does not cover).
const BIOS_TESTS: &[&str] = &[
    "cl.basic",
    "cl.filesystem",
    "cl.users.shells",
    "coreos.auth.verify",
    "cl.network.listeners.legacy",
    "systemd.sysusers.gshadow",
    "coreos.ignition.sethostname",
    "coreos.ignition.groups",
    "cl.ignition.v2.users",
    "cl.ignition.symlink",
    "cl.ignition.instantiated.enable-unit",
];

/// `cl.basic` and an Ignition test, run under OVMF (two boots side by side: CI time).
const UEFI_TESTS: &[&str] = &["cl.basic", "coreos.ignition.sethostname"];

/// What differs between the job's variants.
struct Job<'a> {
    /// `CIA_ARCH`.
    arch: &'a str,
    /// The Flatcar-shaped disk of that arch.
    disk: std::path::PathBuf,
    /// `firmware` and `ovmf_vars` as the script sets them.
    firmware: &'a str,
    ovmf_vars: &'a str,
    /// `CIA_VERNUM` and the version the report must carry.
    vernum: (&'a str, &'a str),
}

/// Runs the job.
fn run_job(job: &Job, tests: &[&str], out: &Path) -> std::process::ExitStatus {
    let tap = out.join("results-run-1.tap");
    Command::new("bash")
        .arg("-c")
        .arg(QEMU_JOB)
        .arg("qemu.sh")
        .args(tests)
        .current_dir(out)
        .env("BOGIE", env!("CARGO_BIN_EXE_bogie"))
        .env("CIA_ARCH", job.arch)
        .env("QEMU_PARALLEL", "2")
        .env("firmware", job.firmware)
        .env("ovmf_vars", job.ovmf_vars)
        .env("QEMU_IMAGE_NAME", &job.disk)
        .env("CIA_TAPFILE", &tap)
        .env("CIA_VERNUM", job.vernum.0)
        .env_remove("QEMU_KOLA_SKIP_MANGLE")
        .env_remove("SECUREBOOT")
        .env("CI", "true")
        .status()
        .unwrap()
}

/// Every test passed in the results (in kola's default output dir, through its
/// `_kola_temp/qemu-latest` link) and the TAP file, with the job's version; no QEMU outlived
/// the run; the guests' consoles show the Flatcar boot path.
fn check(out: &Path, job: &Job, tests: &[&str], status: std::process::ExitStatus, variant: &str) {
    let run_dir = out.join("_kola_temp/qemu-latest");
    let report = bogie_reports::jsonl::read_results_jsonl(run_dir.join("reports/results.jsonl"))
        .unwrap_or_else(|e| {
            panic!(
                "{variant}: reading results through {}: {e}",
                run_dir.display()
            )
        });
    assert_eq!(
        report.info.version, job.vernum.1,
        "{variant}: the report's version"
    );
    assert_eq!(report.info.arch, job.arch, "{variant}: the report's arch");
    let bad = not_passed(&report, tests);
    assert!(bad.is_empty(), "{variant}: not passed: {bad:#?}");
    assert!(status.success(), "{variant}: the job exited {status}");

    let tap = std::fs::read_to_string(out.join("results-run-1.tap")).unwrap();
    for t in tests {
        assert!(
            tap.lines()
                .any(|l| l == format!("ok - {t}") || l.starts_with(&format!("ok - {t} "))),
            "{variant}: no `ok - {t}` in the TAP file:\n{tap}"
        );
    }
    assert!(!tap.contains("not ok"), "{variant}: {tap}");

    let consoles = consoles(&run_dir);
    assert!(!consoles.is_empty(), "{variant}: no console logs");
    let all = consoles.join("\n");
    assert!(
        all.contains("Ignition config from fw_cfg opt/org.flatcar-linux/config"),
        "{variant}: no guest read its config from fw_cfg opt/org.flatcar-linux/config"
    );
    assert!(
        all.contains(
            "initramfs mounted /usr (ro) from PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132"
        ),
        "{variant}: no guest mounted /usr read-only from USR-A"
    );
    assert!(
        qemu_processes_mentioning(out).is_empty(),
        "{variant}: QEMU processes outlived the run"
    );
}

/// Every `console.txt` under `dir`.
fn consoles(dir: &Path) -> Vec<String> {
    files_named(dir, "console.txt")
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect()
}

#[test]
fn flatcar_ci_qemu_job_passes_under_seabios() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let job = Job {
        arch: "amd64",
        disk: flatcar_disk(),
        firmware: "/usr/share/qemu/bios-256k.bin",
        ovmf_vars: "",
        vernum: VERNUM,
    };
    let status = run_job(&job, BIOS_TESTS, d.path());
    check(d.path(), &job, BIOS_TESTS, status, "qemu.sh (SeaBIOS)");
}

#[test]
fn flatcar_ci_qemu_uefi_job_passes_under_ovmf() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let job = Job {
        arch: "amd64",
        disk: flatcar_disk(),
        firmware: "/usr/share/OVMF/OVMF_CODE_4M.fd",
        ovmf_vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
        vernum: VERNUM,
    };
    let status = run_job(&job, UEFI_TESTS, d.path());
    check(d.path(), &job, UEFI_TESTS, status, "qemu_uefi.sh (OVMF)");
}

/// The arm64 job (`qemu_uefi.sh` on arm64): AAVMF code + vars, a nightly's version.
#[test]
fn flatcar_ci_qemu_uefi_job_passes_on_arm64_under_aavmf() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let job = Job {
        arch: "arm64",
        disk: flatcar_disk_of("BOGIE_TEST_IMAGE_ARM64"),
        firmware: "/usr/share/AAVMF/AAVMF_CODE.fd",
        ovmf_vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
        vernum: NIGHTLY_VERNUM,
    };
    let status = run_job(&job, UEFI_TESTS, d.path());
    check(
        d.path(),
        &job,
        UEFI_TESTS,
        status,
        "qemu_uefi.sh (arm64, AAVMF)",
    );
}

/// kola's console mangling of a raw disk: the Flatcar-shaped disk as a raw file boots from
/// a private copy whose OEM grub.cfg sets `console=ttyS0,115200` (the disk's own default
/// is `console=ttyS0,115200n8`), the file itself is not changed, and the copy is gone
/// when the run ends.
#[test]
fn a_raw_disk_boots_with_kolas_serial_console_from_a_copy_that_is_then_gone() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("flatcar_production_image.bin");
    let ok = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(flatcar_disk())
        .arg(&raw)
        .status()
        .unwrap();
    assert!(ok.success(), "qemu-img convert");
    let before = std::fs::metadata(&raw).unwrap().modified().unwrap();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = d.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_bogie"))
        .args(["run", "-p", "qemu", "--board", "amd64-usr", "--qemu-image"])
        .arg(&raw)
        .arg("--output-dir")
        .arg(&out)
        .arg("cl.basic")
        .env("TMPDIR", &tmp)
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let journals: Vec<String> = files_named(&out, "journal.txt")
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect();
    let cmdline = journals
        .iter()
        .flat_map(|j| j.lines())
        .find(|l| l.contains("Command line:"))
        .unwrap_or_else(|| panic!("no kernel command line in the journal"))
        .to_string();
    assert!(
        cmdline
            .split_whitespace()
            .any(|a| a == "console=ttyS0,115200"),
        "the OEM grub.cfg's console is not on the command line: {cmdline}"
    );
    assert_eq!(
        std::fs::metadata(&raw).unwrap().modified().unwrap(),
        before,
        "the raw disk itself was written"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    assert!(qemu_processes_mentioning(d.path()).is_empty());
}
