//! arm64 end to end: the same tests on the arm64 test image (TCG, `-M virt`), then the
//! per-arch failure matrix over an amd64 run and an arm64 run.
//!
//! Needs `BOGIE_TEST_IMAGE_ARM64` (from `ci/build-test-image --arch arm64`) and
//! `BOGIE_TEST_IMAGE` (amd64); `ci/test` sets both.

mod common;

use std::path::PathBuf;

use bogie_reports::Status;
use common::{bogie, qemu_processes_mentioning, serial, test_image};

const TESTS: &[&str] = &[
    "cl.basic",
    "coreos.ignition.sethostname",
    "cl.users.shells",
    "coreos.auth.verify",
];

fn arm64_image() -> PathBuf {
    PathBuf::from(std::env::var_os("BOGIE_TEST_IMAGE_ARM64").expect(
        "BOGIE_TEST_IMAGE_ARM64 is not set: run the tests through ci/test, which builds the arm64 test image",
    ))
}

fn run(board: &str, image: &PathBuf, out: &PathBuf) -> i32 {
    bogie()
        .args([
            "run",
            "-p",
            "qemu",
            "-j",
            "2",
            "--board",
            board,
            "--qemu-image",
        ])
        .arg(image)
        .arg("--output-dir")
        .arg(out)
        .args(TESTS)
        .env("CI", "true")
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn arm64_runs_and_the_matrix_compares_arches() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let arm = d.path().join("arm64");
    assert_eq!(
        run("arm64-usr", &arm64_image(), &arm),
        0,
        "arm64 run failed"
    );
    let report =
        bogie_reports::jsonl::read_results_jsonl(arm.join("reports/results.jsonl")).unwrap();
    assert_eq!(report.info.arch, "arm64");
    for t in TESTS {
        let r = report.tests.iter().find(|r| r.name == *t).unwrap();
        assert_eq!(r.status, Status::Pass, "{t} on arm64");
    }
    assert!(qemu_processes_mentioning(&arm).is_empty());

    let amd = d.path().join("amd64");
    assert_eq!(run("amd64-usr", &test_image(), &amd), 0, "amd64 run failed");

    // The matrix over both runs: one column per arch, every test passing in both.
    let m = bogie_reports::matrix::build_matrix(&[
        bogie_reports::matrix::load_run(&amd).unwrap(),
        bogie_reports::matrix::load_run(&arm).unwrap(),
    ]);
    let cols: Vec<String> = m.columns.iter().map(|c| c.label()).collect();
    assert_eq!(cols.len(), 2, "{cols:?}");
    assert!(cols.iter().any(|c| c.contains("arm64")) && cols.iter().any(|c| c.contains("amd64")));
}
