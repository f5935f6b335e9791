//! A run killed with `kill -9` cannot pass the gate: `results.jsonl` names the selected tests
//! first and records the end last, so `bogie report merge`, `diff` and `matrix` see the run
//! did not end and report the test it never finished as `not run`; a run interrupted with
//! Ctrl-C ends, as interrupted, and fails the gate too.
//!
//! The run is bogie's own `run` (the library's dispatch, as the binary runs it) in a child
//! process of this test binary, with two fixture tests that need no machine, on the
//! `external` platform (whose provisioning command is never called without machines), so
//! nothing boots and no image or QEMU is needed. The reports are read by the `bogie` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bogie::cli::Cli;
use bogie_harness::{Registry, Test};
use bogie_reports::{RunEnd, RunReport, Status, TestResult};
use clap::Parser;
use common::bogie;

/// `kill.fast` passes at once; `kill.slow` sleeps for ten minutes.
fn fixtures() -> Registry {
    let mut r = Registry::new();
    r.register(
        Test::new("kill.fast", |_c| async { Ok(()) })
            .cluster_size(0)
            .distros(&[]),
    )
    .unwrap();
    r.register(
        Test::new("kill.slow", |_c| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        })
        .cluster_size(0)
        .distros(&[]),
    )
    .unwrap();
    r
}

/// Not a test by itself: the child run of [`start_run`]. Does nothing when run directly.
#[test]
fn killed_run_child() {
    let Some(out) = std::env::var_os("BOGIE_KILLED_RUN_OUT") else {
        return;
    };
    let out = out.to_string_lossy().into_owned();
    let argv = [
        "bogie",
        "run",
        "-p",
        "external",
        "--external-provisioning-cmds",
        "true",
        "-j",
        "2",
        "--output-dir",
        &out,
        "kill.*",
    ];
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, fixtures()))
        .expect("run completes");
    println!("child exit code {code}");
}

/// Starts the two-test run writing into `out`; returns once `kill.fast`'s result is in
/// `results.jsonl` (and `kill.slow` is still running).
fn start_run(out: &Path) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "killed_run_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BOGIE_KILLED_RUN_OUT", out)
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Drain the child's output so it never blocks on a full pipe.
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    let jsonl = out.join("reports/results.jsonl");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.starts_with("{\"test\":") && l.contains("\"name\":\"kill.fast\""))
        {
            return child;
        }
        if start.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("kill.fast never reported in {}: {text}", jsonl.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().expect("runs bogie");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn merge(dir: &Path, out: &Path) -> (i32, String, String) {
    output(
        bogie()
            .args(["report", "merge"])
            .arg(dir)
            .arg("--output")
            .arg(out),
    )
}

#[test]
fn a_run_killed_after_one_of_two_tests_cannot_pass_the_gate() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let mut child = start_run(&run);
    child.kill().unwrap(); // SIGKILL: no handler, no end record
    child.wait().unwrap();

    let jsonl = run.join("reports/results.jsonl");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("{\"run\":"), "{text}");
    assert_eq!(
        lines[1], "{\"selected\":{\"tests\":[\"kill.fast\",\"kill.slow\"]}}",
        "{text}"
    );
    assert!(
        !text.contains("{\"end\":"),
        "a killed run has no end record: {text}"
    );

    // merge: exit 1, the test that never ran named, on stderr and in the merged reports.
    let merged = d.path().join("merged");
    let (code, stdout, stderr) = merge(&run, &merged);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("2 tests: 1 passed, 0 failed, 0 flaky, 0 skipped, 0 warned, 1 not run"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the run did not end (killed or crashed, or still running)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 1 test(s) not run (no result): kill.slow"),
        "{stderr}"
    );
    let m = bogie_reports::matrix::load_run(&merged).unwrap();
    assert_eq!(m.end, RunEnd::NotEnded);
    let slow = m.tests.iter().find(|t| t.name == "kill.slow").unwrap();
    assert_eq!(slow.status, Status::NotRun);
    let junit = std::fs::read_to_string(merged.join("reports/junit.xml")).unwrap();
    assert!(junit.contains(r#"<error type="not-run""#), "{junit}");
    let tap = std::fs::read_to_string(merged.join("test.tap")).unwrap();
    assert!(
        tap.contains("not ok - kill.slow\n  ---\n  Not run: "),
        "{tap}"
    );
    // Merging the merged run again still fails: the state survives the rewrite.
    let (code, _, stderr) = merge(&merged, &d.path().join("merged-again"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("kill.slow"), "{stderr}");

    // A writer killed in the middle of kill.slow's line: the torn line is dropped with a
    // warning, and kill.slow is still not run.
    let torn = d.path().join("torn");
    std::fs::create_dir_all(torn.join("reports")).unwrap();
    std::fs::write(
        torn.join("reports/results.jsonl"),
        format!("{text}{{\"test\":{{\"name\":\"kill.slow\",\"status\":\"pa"),
    )
    .unwrap();
    let (code, stdout, stderr) = merge(&torn, &d.path().join("torn-merged"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("truncated last line"), "{stderr}");
    assert!(
        stderr.contains("not run (no result): kill.slow"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a pipe: {stderr:?}"
    );

    // diff against a baseline where kill.slow failed: not fixed, not removed, exit 1.
    let killed = bogie_reports::jsonl::read_results_jsonl(&jsonl).unwrap();
    let base = d.path().join("base");
    write_baseline(&killed, &base);
    let (code, stdout, stderr) = output(bogie().args(["report", "diff"]).arg(&base).arg(&run));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("the new run did not end"), "{stdout}");
    assert!(stdout.contains("Not run (1):"), "{stdout}");
    assert!(stdout.contains("kill.slow  [fail -> not-run]"), "{stdout}");
    assert!(
        stdout.contains("Fixed (0):") && stdout.contains("Removed tests (0):"),
        "{stdout}"
    );

    // matrix: the run is named as incomplete, the test shows as not run.
    let (code, stdout, stderr) = output(bogie().args(["report", "matrix"]).arg(&run));
    assert_eq!(code, 0, "the matrix reports, it does not gate: {stderr}");
    assert!(
        stderr.contains("warning: run ") && stderr.contains("not run: kill.slow"),
        "{stderr}"
    );
    assert!(stdout.contains("**Incomplete:**"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| kill.slow |"))
        .unwrap();
    assert!(row.contains("not-run"), "{row}");
}

/// A baseline run dir with `killed`'s facts in which kill.fast passed and kill.slow failed.
fn write_baseline(killed: &RunReport, dir: &Path) {
    let fast = killed
        .tests
        .iter()
        .find(|t| t.name == "kill.fast")
        .unwrap()
        .clone();
    let mut slow = TestResult {
        name: "kill.slow".into(),
        ..fast.clone()
    };
    slow.status = Status::Fail;
    slow.attempts[0].passed = false;
    slow.attempts[0].failure = Some(bogie_reports::triage::failure("it broke", ""));
    let mut base = RunReport::new(killed.info.clone(), vec![fast, slow]);
    base.info.id = "baseline".into();
    bogie_reports::merge::write_all(&base, dir, None, bogie_reports::tap::TapFormat::Kola).unwrap();
}

#[test]
fn an_interrupted_run_ends_as_interrupted_and_fails_the_gate() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let mut child = start_run(&run);
    // Ctrl-C: the run tears down, records its end and exits.
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the interrupted run did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(run.join("reports/results.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["end"]["status"], "interrupted", "{text}");
    let report = bogie_reports::matrix::load_run(&run).unwrap();
    assert_eq!(report.end, RunEnd::Interrupted);
    assert_eq!(report.tests.len(), 2, "both tests reported: {text}");

    let (code, stdout, stderr) = merge(&run, &d.path().join("merged"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("the run was interrupted"), "{stderr}");
}

/// An older bogie's results.jsonl (no selection, no end) is still read: with a warning, and
/// as before (what it has decides the gate).
#[test]
fn an_older_results_file_is_read_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old");
    let mut report = RunReport::new(
        bogie_reports::RunInfo {
            id: "old".into(),
            platform: "qemu".into(),
            arch: "amd64".into(),
            ..Default::default()
        },
        vec![TestResult::skipped(
            "cl.basic",
            "qemu",
            "amd64",
            "denylisted",
        )],
    );
    report.end = RunEnd::Unknown;
    let path: PathBuf = old.join("reports/results.jsonl");
    bogie_reports::jsonl::write_results_jsonl(&report, &path).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains("selected"));
    let (code, stdout, stderr) = merge(&old, &d.path().join("merged"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("results file of an older bogie"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a pipe: {stderr:?}"
    );
}
