//! Shared helpers for bogie's end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// QEMU-heavy tests take turns: the host has few cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test image manifest (`ci/build-test-image --arch amd64 | tail -n1`), from
/// `BOGIE_TEST_IMAGE`. End-to-end tests need it: `ci/test` sets it.
pub fn test_image() -> PathBuf {
    let p = std::env::var_os("BOGIE_TEST_IMAGE").expect(
        "BOGIE_TEST_IMAGE is not set: run the tests through ci/test, which builds the test image",
    );
    PathBuf::from(p)
}

/// The Flatcar-shaped disk (`flatcar_disk` of the amd64 manifest, beside it:
/// docs/flatcar-disk.md).
pub fn flatcar_disk() -> PathBuf {
    flatcar_disk_of("BOGIE_TEST_IMAGE")
}

/// The Flatcar-shaped disk beside the manifest that `var` names.
pub fn flatcar_disk_of(var: &str) -> PathBuf {
    let manifest = PathBuf::from(
        std::env::var_os(var)
            .unwrap_or_else(|| panic!("{var} is not set: run the tests through ci/test")),
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = v["flatcar_disk"]
        .as_str()
        .expect("the manifest names flatcar_disk (ci/build-test-image writes it)");
    manifest.parent().unwrap().join(name)
}

/// Every one of `tests` passed in `report`; the failures otherwise, one line each.
pub fn not_passed(report: &bogie_reports::RunReport, tests: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for t in tests {
        match report.tests.iter().find(|r| r.name == *t) {
            Some(r) if r.status == bogie_reports::Status::Pass => {}
            Some(r) => bad.push(format!(
                "{t}: {:?} {:?} {:?}",
                r.status,
                r.skip_reason,
                r.attempts.last().and_then(|a| a.failure.as_ref())
            )),
            None => bad.push(format!("{t}: not in the report")),
        }
    }
    bad
}

/// Files under `dir` whose name starts with `prefix`.
pub fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p);
            }
        }
    }
    out
}

/// The bogie binary cargo built for these tests.
pub fn bogie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bogie"))
}

/// qemu-system processes whose command line mentions `needle`.
pub fn qemu_processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.chars().all(|c| c.is_ascii_digit()))
            else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains("qemu-system") && cmd.contains(&needle) {
                    out.push(format!("{pid}: {cmd}"));
                }
            }
        }
    }
    out
}

/// Runs `bogie ARGS` in this process with `registry`'s tests instead of the catalog;
/// returns the exit code.
pub fn dispatch(args: &[String], registry: bogie_harness::Registry) -> u8 {
    use clap::Parser;
    let argv = std::iter::once("bogie".to_string()).chain(args.iter().cloned());
    let cli = bogie::cli::Cli::try_parse_from(argv).expect("valid command line");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, registry))
        .expect("run completes")
}

/// `run` on the amd64 test image under TCG at `-j 2`, writing to `out`; append flags and
/// patterns.
pub fn qemu_run_args(out: &Path) -> Vec<String> {
    let image = test_image();
    [
        "run",
        "-p",
        "qemu",
        "--board",
        "amd64-usr",
        "--qemu-accel",
        "tcg",
        "--qemu-image",
        image.to_str().unwrap(),
        "-j",
        "2",
        "--output-dir",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The results a run left in `out`.
pub fn results(out: &Path) -> bogie_reports::RunReport {
    bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl")).unwrap()
}
