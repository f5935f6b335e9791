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
//! Needs `BOGIE_TEST_IMAGE` (the amd64 manifest, whose `flatcar_disk` names the disk);
//! `ci/test` sets it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{files_named, flatcar_disk, not_passed, qemu_processes_mentioning, serial};

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

/// The version the job passes (`CIA_VERNUM`): a current Flatcar release number.
const VERNUM: &str = "4230.2.3";

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

/// Runs the job: `firmware` and `ovmf_vars` as the script sets them per variant.
fn run_job(
    firmware: &str,
    ovmf_vars: &str,
    tests: &[&str],
    out: &Path,
) -> std::process::ExitStatus {
    let tap = out.join("results-run-1.tap");
    Command::new("bash")
        .arg("-c")
        .arg(QEMU_JOB)
        .arg("qemu.sh")
        .args(tests)
        .current_dir(out)
        .env("BOGIE", env!("CARGO_BIN_EXE_bogie"))
        .env("CIA_ARCH", "amd64")
        .env("QEMU_PARALLEL", "2")
        .env("firmware", firmware)
        .env("ovmf_vars", ovmf_vars)
        .env("QEMU_IMAGE_NAME", flatcar_disk())
        .env("CIA_TAPFILE", &tap)
        .env("CIA_VERNUM", VERNUM)
        .env_remove("QEMU_KOLA_SKIP_MANGLE")
        .env_remove("SECUREBOOT")
        .env("CI", "true")
        .status()
        .unwrap()
}

/// Every test passed in the results and the TAP file; no QEMU outlived the run; the
/// guests' consoles show the Flatcar boot path.
fn check(out: &Path, tests: &[&str], status: std::process::ExitStatus, variant: &str) {
    let kola_temp = out.join("_kola_temp");
    let run_dir = std::fs::read_dir(&kola_temp)
        .unwrap_or_else(|e| panic!("{variant}: no _kola_temp in {}: {e}", out.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.is_symlink())
        .unwrap_or_else(|| panic!("{variant}: no run directory under _kola_temp"));
    let report = bogie_reports::jsonl::read_results_jsonl(run_dir.join("reports/results.jsonl"))
        .unwrap_or_else(|e| panic!("{variant}: reading results: {e}"));
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
    let status = run_job("/usr/share/qemu/bios-256k.bin", "", BIOS_TESTS, d.path());
    check(d.path(), BIOS_TESTS, status, "qemu.sh (SeaBIOS)");
}

#[test]
fn flatcar_ci_qemu_uefi_job_passes_under_ovmf() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let status = run_job(
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        UEFI_TESTS,
        d.path(),
    );
    check(d.path(), UEFI_TESTS, status, "qemu_uefi.sh (OVMF)");
}
