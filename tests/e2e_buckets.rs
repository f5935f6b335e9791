//! End to end on the real test image: non-exclusive tests with their own Ignition configs
//! share one machine booted with their merged config (a bucket), and a test that breaks its
//! shared machine (it leaves a failed unit) fails alone: the tests after it pass on a fresh
//! machine. The report says how each test's machine started (`cold`, `shared` after which
//! test), how long it took to answer SSH and that the guest's readiness line (not an SSH
//! attempt) said so; no QEMU is left behind.
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`).

mod common;

use anyhow::{ensure, Context};
use bogie_harness::{Config, Registry, Test, TestMachine};
use bogie_reports::{MachineArtifacts, RunReport, Status};
use common::{qemu_processes_mentioning, serial};

/// The file test `n`'s own config writes.
fn marker(n: u32) -> String {
    format!("/etc/bogie-bucket-{n}")
}

fn config(n: u32) -> Config {
    Config::new().file(&marker(n), &format!("test {n}\n"), 0o644)
}

/// Fails unless every file of `ns` is there (the bucket's merged config was applied).
async fn has_markers(m: &TestMachine, ns: &[u32]) -> anyhow::Result<()> {
    for n in ns {
        m.must_ssh(&format!("test -e {}", marker(*n)))
            .await
            .with_context(|| format!("{} is missing: no merged config", marker(*n)))?;
    }
    Ok(())
}

async fn running(m: &TestMachine) -> anyhow::Result<()> {
    let s = m.must_ssh("systemctl is-system-running").await?;
    ensure!(
        s == "running",
        "the machine is {s}: a broken machine was handed on"
    );
    Ok(())
}

fn fixtures() -> Registry {
    let mut r = Registry::new();
    let mut add = |t: Test| r.register(t.distros(&[]).non_exclusive()).unwrap();
    add(Test::new("bucket.1-first", |c| async move {
        let m = c.machine()?;
        has_markers(&m, &[1, 2, 3]).await
    })
    .config(config(1)));
    add(Test::new("bucket.2-breaks", |c| async move {
        // A unit that fails to start: systemd is `degraded` afterwards.
        let m = c.machine()?;
        m.ssh("sudo systemd-run --unit=bogie-broken -p Type=oneshot /bin/false")
            .await?;
        Ok(())
    })
    .config(config(2)));
    add(Test::new("bucket.3-after", |c| async move {
        let m = c.machine()?;
        running(&m).await?;
        has_markers(&m, &[1, 2, 3]).await
    })
    .config(config(3)));
    add(Test::new("bucket.4-after", |c| async move {
        let m = c.machine()?;
        running(&m).await?;
        has_markers(&m, &[1, 2, 3]).await
    }));
    r
}

fn machine<'a>(r: &'a RunReport, name: &str) -> &'a MachineArtifacts {
    let t = r.tests.iter().find(|t| t.name == name).unwrap();
    &t.attempts.last().unwrap().machines[0]
}

#[test]
fn a_test_that_breaks_its_shared_machine_fails_alone() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut args = common::qemu_run_args(&out);
    // One unit, so the four run one after another in their order.
    let j = args.iter().position(|a| a == "-j").unwrap();
    args[j + 1] = "1".into();
    args.extend(
        [
            "--share",
            "--no-snapshot",
            "--durations",
            "none",
            "bucket.*",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let code = common::dispatch(&args, fixtures());
    let r = common::results(&out);
    let status = |n: &str| r.tests.iter().find(|t| t.name == n).unwrap().status;
    let why = |n: &str| {
        r.tests
            .iter()
            .find(|t| t.name == n)
            .and_then(|t| t.last_failure())
            .map(|f| f.message.clone())
            .unwrap_or_default()
    };
    assert_eq!(code, 1, "one test fails");
    assert_eq!(
        status("bucket.1-first"),
        Status::Pass,
        "{}",
        why("bucket.1-first")
    );
    assert_eq!(
        status("bucket.2-breaks"),
        Status::Fail,
        "the breaking test fails"
    );
    assert!(
        why("bucket.2-breaks").contains("failed unit")
            || why("bucket.2-breaks").contains("bogie-broken"),
        "{}",
        why("bucket.2-breaks")
    );
    assert_eq!(
        status("bucket.3-after"),
        Status::Pass,
        "{}",
        why("bucket.3-after")
    );
    assert_eq!(
        status("bucket.4-after"),
        Status::Pass,
        "{}",
        why("bucket.4-after")
    );

    let (m1, m2, m3, m4) = (
        machine(&r, "bucket.1-first"),
        machine(&r, "bucket.2-breaks"),
        machine(&r, "bucket.3-after"),
        machine(&r, "bucket.4-after"),
    );
    assert_eq!(m1.start.as_deref(), Some("cold"), "{m1:?}");
    assert!(m1.ready_secs.is_some_and(|s| s > 0.0), "{m1:?}");
    // The test image says when it is ready (virtio-serial port org.bogie.ready).
    assert_eq!(m1.ready_by.as_deref(), Some("signal"), "{m1:?}");
    assert_eq!(m3.ready_by.as_deref(), Some("signal"), "{m3:?}");
    assert_eq!(m2.start.as_deref(), Some("shared"), "{m2:?}");
    assert_eq!(m2.handed_from.as_deref(), Some("bucket.1-first"));
    assert_eq!(m2.id, m1.id, "the bucket's first two tests share a machine");
    assert_eq!(
        m3.start.as_deref(),
        Some("cold"),
        "a fresh machine after the broken one"
    );
    assert_ne!(m3.id, m2.id);
    assert_eq!(m4.start.as_deref(), Some("shared"), "{m4:?}");
    assert_eq!(m4.id, m3.id);

    let junit = std::fs::read_to_string(out.join("reports/junit.xml")).unwrap();
    assert!(
        junit.contains(&format!(
            r#"name="bogie.machines:bucket.2-breaks" value="{} shared after bucket.1-first"#,
            m1.id
        )),
        "{junit}"
    );
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind: {:?}",
        qemu_processes_mentioning(&out)
    );
}
