//! End to end on the real test image under QEMU: a passing test, a failing test, a timed-out
//! test, cl.basic through the real binary, and Ctrl-C leaving no QEMU behind.
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`); `ci/test`
//! sets it.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use bogie::cli::Cli;
use bogie_harness::{Registry, Test};
use bogie_reports::{FailureClass, Status};
use clap::Parser;
use common::{bogie, qemu_processes_mentioning, serial, test_image};

fn fixtures() -> Registry {
    let mut r = Registry::new();
    r.register(
        Test::new("fixture.pass", |c| async move {
            let m = c.machine()?;
            let out = m.must_ssh("echo hello from $(id -un)").await?;
            if out != "hello from core" {
                bail!("unexpected output {out:?}");
            }
            // The image boots `quiet` with no serial getty, so a clean boot may print
            // nothing: write a line to the console to prove it is captured.
            m.must_ssh("echo bogie-console-marker | sudo tee /dev/console >/dev/null")
                .await?;
            Ok(())
        })
        .distros(&[]),
    )
    .unwrap();
    r.register(
        Test::new("fixture.fail", |c| async move {
            let m = c.machine()?;
            m.must_ssh("test -e /etc/this-file-does-not-exist").await?;
            Ok(())
        })
        .distros(&[]),
    )
    .unwrap();
    r.register(
        Test::new("fixture.timeout", |c| async move {
            let m = c.machine()?;
            m.must_ssh("sleep 600").await?;
            Ok(())
        })
        .distros(&[])
        .timeout(Duration::from_secs(15)),
    )
    .unwrap();
    r
}

fn run_lib(args: &[&str], registry: Registry) -> u8 {
    let mut argv = vec!["bogie"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, registry))
        .expect("run completes")
}

fn load(out: &Path) -> bogie_reports::RunReport {
    bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl")).unwrap()
}

#[test]
fn pass_fail_and_timeout_are_reported_apart() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let tap = d.path().join("run.tap");
    let code = run_lib(
        &[
            "run",
            "-p",
            "qemu",
            "--board",
            "amd64-usr",
            "--qemu-image",
            image.to_str().unwrap(),
            "-j",
            "2",
            "--output-dir",
            out.to_str().unwrap(),
            "--tapfile",
            tap.to_str().unwrap(),
            "fixture.*",
        ],
        fixtures(),
    );
    assert_eq!(code, 1, "a failed test makes the run fail");
    let report = load(&out);
    let by = |n: &str| report.tests.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(by("fixture.pass").status, Status::Pass);
    let fail = by("fixture.fail");
    assert_eq!(fail.status, Status::Fail);
    let f = fail.last_failure().unwrap();
    assert_eq!(f.class, FailureClass::Assertion);
    assert!(
        f.message.contains("this-file-does-not-exist"),
        "{}",
        f.message
    );
    let to = by("fixture.timeout");
    assert_eq!(to.status, Status::Fail);
    assert_eq!(to.last_failure().unwrap().class, FailureClass::Timeout);

    // Artifacts of every machine, and every report format.
    let m = &by("fixture.pass").attempts[0].machines[0];
    for p in [&m.console, &m.journal, &m.ignition] {
        let p = out.join(p.as_ref().unwrap());
        assert!(p.metadata().unwrap().len() > 0, "{} is empty", p.display());
    }
    let console = std::fs::read_to_string(out.join(m.console.as_ref().unwrap())).unwrap();
    assert!(
        console.contains("bogie-console-marker"),
        "the console file misses what the guest wrote to /dev/console: {console:?}"
    );
    let junit = std::fs::read_to_string(out.join("reports/junit.xml")).unwrap();
    assert!(junit.contains("name=\"fixture.pass\""));
    assert!(junit.contains("type=\"timeout\""), "{junit}");
    let kola: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reports/report.json")).unwrap())
            .unwrap();
    assert_eq!(kola["result"], "FAIL");
    let tap = std::fs::read_to_string(&tap).unwrap();
    assert!(tap.starts_with("1..3\n"), "{tap}");
    assert!(tap.contains("not ok - fixture.fail"));
    assert!(tap.contains("ok - fixture.pass"));
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind"
    );
}

#[test]
fn cl_basic_passes_through_the_binary() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let status = bogie()
        .args(["run", "-p", "qemu", "--board", "amd64-usr", "--qemu-image"])
        .arg(&image)
        .arg("--output-dir")
        .arg(&out)
        .arg("cl.basic")
        .env("CI", "true")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let junit = std::fs::read_to_string(out.join("reports/junit.xml")).unwrap();
    assert!(junit.contains("name=\"cl.basic\""), "{junit}");
    let report = load(&out);
    let t = report.tests.iter().find(|t| t.name == "cl.basic").unwrap();
    assert_eq!(t.status, Status::Pass);
    let subs = &t.attempts[0].subtests;
    let sub = |n: &str| {
        subs.iter()
            .find(|s| s.name == format!("cl.basic/{n}"))
            .unwrap()
    };
    assert_eq!(sub("Useradd").status, Status::Pass);
    assert_eq!(sub("MachineID").status, Status::Pass);
    // Flatcar-only checks are skipped with the reason on the test image.
    let ro = sub("ReadOnly");
    assert_eq!(ro.status, Status::Skip);
    assert!(ro.message.contains("flatcar"), "{}", ro.message);
    assert!(qemu_processes_mentioning(&out).is_empty());
}

#[test]
fn ctrl_c_tears_every_machine_down() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut child = bogie()
        .args(["run", "-p", "qemu", "-j", "2", "--qemu-image"])
        .arg(&image)
        .arg("--output-dir")
        .arg(&out)
        .args(["cl.basic", "coreos.ignition.sethostname"])
        .env("CI", "true")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until machines are running.
    let mut seen = false;
    for _ in 0..120 {
        if qemu_processes_mentioning(&out).len() >= 2 {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(seen, "machines never started");
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0), "an interrupted run does not pass");
    for _ in 0..20 {
        if qemu_processes_mentioning(&out).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind: {:?}",
        qemu_processes_mentioning(&out)
    );
    // Results of the interrupted run are still valid JSON lines.
    let report = load(&out);
    assert_eq!(report.info.platform, "qemu");
}
