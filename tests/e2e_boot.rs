//! Broken guests are named early, on the real test image under QEMU: a kernel that cannot
//! start init fails as `kernel` within two minutes, a machine whose sshd never starts fails
//! as `harness` before the test's timeout with its console kept, a machine whose emulator
//! exits under a test is reported as such (not as an SSH error), and a guest whose vCPU
//! never runs (QEMU started paused, as on a host whose KVM accepts VMs it cannot run)
//! fails as `harness` for its empty console within three minutes under TCG. No QEMU is
//! left after any of them.
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`); `ci/test`
//! sets it.

mod common;

use std::path::Path;
use std::time::Duration;

use bogie_harness::{Registry, Test};
use bogie_reports::{FailureClass, RunReport, Status, TestResult};
use common::{dispatch, qemu_processes_mentioning, qemu_run_args, results, serial};

/// A test that would pass on any machine that comes up: only its bring-up can fail it.
fn reaches_ssh(name: &str, kernel_args: &[&str]) -> Test {
    Test::new(name, |c| async move {
        c.machine()?.must_ssh("true").await?;
        Ok(())
    })
    .distros(&[])
    .kernel_args(kernel_args)
}

fn fixtures() -> Registry {
    let mut r = Registry::new();
    for t in [
        reaches_ssh("boot.no-init", &["init=/nonexistent", "panic=-1"]),
        reaches_ssh("boot.no-sshd", &["systemd.mask=ssh.service"]),
        reaches_ssh("boot.silent", &[]),
        // The machine's emulator goes away under the test (here: the guest powers off).
        Test::new("boot.qemu-gone", |c| async move {
            let m = c.machine()?;
            let _ = m.ssh("sudo systemctl poweroff --force --force").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            m.must_ssh("true").await?;
            Ok(())
        })
        .distros(&[]),
    ] {
        r.register(t).unwrap();
    }
    r
}

fn run(out: &Path, extra: &[&str], pattern: &str) -> RunReport {
    let mut args = qemu_run_args(out);
    args.extend(extra.iter().chain([&pattern]).map(|s| s.to_string()));
    assert_eq!(
        dispatch(&args, fixtures()),
        1,
        "a broken machine fails the run"
    );
    assert!(
        qemu_processes_mentioning(out).is_empty(),
        "QEMU left behind"
    );
    results(out)
}

fn failed<'a>(report: &'a RunReport, name: &str) -> &'a TestResult {
    let t = report.tests.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t.status, Status::Fail, "{name}");
    t
}

#[test]
fn a_missing_init_a_missing_sshd_and_a_vanished_emulator_are_named() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // SSH bring-up: 9 attempts of 10 s (kola's flags), far below the 10-minute test timeout.
    let report = run(&out, &["--ssh-retries", "9"], "boot.[nq]*");

    let t = failed(&report, "boot.no-init");
    let f = t.last_failure().unwrap();
    assert_eq!(f.class, FailureClass::Kernel, "{}", f.message);
    assert!(f.message.contains("before SSH came up"), "{}", f.message);
    assert!(f.message.contains("/nonexistent"), "{}", f.message);
    let took = t.attempts.last().unwrap().duration;
    assert!(took < Duration::from_secs(120), "took {took:?}");

    let t = failed(&report, "boot.no-sshd");
    let f = t.last_failure().unwrap();
    assert_eq!(f.class, FailureClass::Harness, "{}", f.message);
    assert!(f.message.contains("ssh"), "{}", f.message);
    let took = t.attempts.last().unwrap().duration;
    assert!(took < Duration::from_secs(600), "took {took:?}");
    let console = t.attempts.last().unwrap().machines[0]
        .console
        .clone()
        .unwrap();
    let console = std::fs::read_to_string(out.join(console)).unwrap();
    assert!(
        console.contains("bogie-test-image: systemd started"),
        "the console was not kept: {console:?}"
    );
    assert!(!console.contains("sshd started"), "{console}");

    let f = failed(&report, "boot.qemu-gone").last_failure().unwrap();
    assert_eq!(f.class, FailureClass::Harness, "{}", f.message);
    assert!(
        f.message
            .contains("stopped running during the test (its emulator exited"),
        "{}",
        f.message
    );
}

#[test]
fn a_guest_that_never_runs_fails_for_its_empty_console() {
    // No `serial()`: a paused guest costs no CPU, so this waits beside the other test.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // `-S`: QEMU starts with its vCPUs stopped and nothing resumes them.
    let report = run(&out, &["--qemu-options", r#"["-S"]"#], "boot.silent");
    let t = failed(&report, "boot.silent");
    let f = t.last_failure().unwrap();
    assert_eq!(f.class, FailureClass::Harness, "{}", f.message);
    assert!(
        f.message.contains("the console stayed empty for 150s"),
        "{}",
        f.message
    );
    assert!(f.message.contains("--qemu-accel"), "{}", f.message);
    let took = t.attempts.last().unwrap().duration;
    assert!(took < Duration::from_secs(180), "took {took:?}");
}
