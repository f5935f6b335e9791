//! Shared machines through the real scheduler and runner, on the instant platform: tests
//! that may share run one after another on one machine, each keeps its own result and
//! artifacts, a failure is reported against the test that failed and ends the machine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bogie_harness::cluster::BringUp;
use bogie_harness::instant::InstantPlatform;
use bogie_harness::runner::{AttemptContext, KeepPolicy};
use bogie_harness::schedule::{run_all, ScheduleOptions};
use bogie_harness::select::Selected;
use bogie_harness::snapshot::BootStats;
use bogie_harness::ssh::SshKey;
use bogie_harness::{Platform, Test, TestEnv, TestFlags};
use bogie_reports::{Status, TestResult};
use tokio_util::sync::CancellationToken;

fn ctx(p: &InstantPlatform, out: &std::path::Path, keep: KeepPolicy) -> AttemptContext {
    AttemptContext {
        platform: Arc::new(p.clone()),
        key: SshKey::generate(),
        key_path: out.join("ssh/id_ed25519"),
        out_dir: out.to_path_buf(),
        env: TestEnv {
            platform: "instant".into(),
            arch: p.arch(),
            image: Arc::new(p.image().clone()),
            version: None,
            provides: Default::default(),
            internet: false,
        },
        default_timeout: Duration::from_secs(30),
        bring_up: BringUp::default(),
        keep,
        no_avc_checks: false,
        memory_mb: None,
        cancel: CancellationToken::new(),
        extra_keys: Vec::new(),
        ignition_version: bogie_harness::setup::IgnitionVersion::V3,
    }
}

/// A test on an instant machine (no SSH): `fails` decides per call whether it fails.
fn test(name: &str, fails: impl Fn() -> bool + Send + Sync + 'static) -> Test {
    let fails = Arc::new(fails);
    Test::new(name, move |c| {
        let fails = fails.clone();
        async move {
            c.machine()?;
            if fails() {
                bail!("{} broke its machine", c.name());
            }
            Ok(())
        }
    })
    .distros(&[])
    .flags(TestFlags {
        no_ssh_key_in_user_data: true,
        ..TestFlags::default()
    })
}

async fn run(
    p: &InstantPlatform,
    out: &std::path::Path,
    tests: Vec<Test>,
    share: bool,
    retries: u32,
    keep: KeepPolicy,
) -> (HashMap<String, TestResult>, Arc<BootStats>) {
    let stats = Arc::new(BootStats::default());
    let opts = ScheduleOptions {
        parallel: 1,
        retries,
        share_machines: share,
        snapshots: true,
        stats: Some(stats.clone()),
        ..ScheduleOptions::default()
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let selected = tests.into_iter().map(Selected::Run).collect();
    let results = run_all(ctx(p, out, keep), selected, opts, tx).await;
    (
        results.into_iter().map(|r| (r.name.clone(), r)).collect(),
        stats,
    )
}

fn five(flaky_once: bool) -> Vec<Test> {
    let failed_once = Arc::new(AtomicBool::new(false));
    (1..=5)
        .map(|i| {
            let f = failed_once.clone();
            test(&format!("s{i}"), move || {
                i == 3 && (!flaky_once || !f.swap(true, Ordering::SeqCst))
            })
            .non_exclusive()
        })
        .collect()
}

#[tokio::test]
async fn compatible_tests_share_until_one_fails() {
    let d = tempfile::tempdir().unwrap();
    let p = InstantPlatform::new();
    let (r, stats) = run(&p, d.path(), five(false), true, 0, KeepPolicy::None).await;
    for i in [1, 2, 4, 5] {
        assert_eq!(r[&format!("s{i}")].status, Status::Pass, "s{i}");
    }
    let s3 = &r["s3"];
    assert_eq!(s3.status, Status::Fail);
    assert!(
        s3.last_failure().unwrap().message.contains("s3 broke"),
        "the failure is the failing test's own"
    );
    // s1 boots, s2 and s3 reuse; s3 failed, so s4 boots again and s5 reuses.
    let c = p.counts();
    assert_eq!(c.booted.load(Ordering::SeqCst), 2);
    assert_eq!(
        c.destroyed.load(Ordering::SeqCst),
        2,
        "every machine torn down"
    );
    let counts = stats.counts();
    assert_eq!((counts.cold, counts.reused), (2, 3));
    // Each test has its own artifacts; the machines' own files are under shared/.
    let m1 = &r["s1"].attempts[0].machines[0];
    let m2 = &r["s2"].attempts[0].machines[0];
    assert_eq!(m1.id, m2.id, "s2 ran on s1's machine");
    assert!(m2.console.as_ref().unwrap().starts_with("s2/"));
    assert!(d
        .path()
        .join("s2")
        .join(&m2.id)
        .join("ignition.json")
        .exists());
    assert!(d
        .path()
        .join("shared")
        .join(&m1.id)
        .join("ignition.json")
        .exists());
    let m4 = &r["s4"].attempts[0].machines[0];
    assert_ne!(m4.id, m1.id, "no reuse after a failure");
}

#[tokio::test]
async fn a_rerun_gets_a_fresh_machine_that_the_unit_then_keeps() {
    let d = tempfile::tempdir().unwrap();
    let p = InstantPlatform::new();
    let (r, _) = run(&p, d.path(), five(true), true, 1, KeepPolicy::None).await;
    assert_eq!(r["s3"].status, Status::Flaky);
    assert!(r.values().all(|t| t.status != Status::Fail));
    assert_eq!(p.counts().booted.load(Ordering::SeqCst), 2);
    assert_eq!(p.counts().destroyed.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_sharing_or_when_keeping_every_test_boots_its_own() {
    let d = tempfile::tempdir().unwrap();
    let p = InstantPlatform::new();
    let (r, _) = run(&p, d.path(), five(false), false, 0, KeepPolicy::None).await;
    assert_eq!(r["s3"].status, Status::Fail);
    assert_eq!(p.counts().booted.load(Ordering::SeqCst), 5);

    let d = tempfile::tempdir().unwrap();
    let p = InstantPlatform::new();
    run(&p, d.path(), five(false), true, 0, KeepPolicy::All).await;
    assert_eq!(p.counts().booted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn exclusive_and_conflicting_tests_get_their_own_machines() {
    let d = tempfile::tempdir().unwrap();
    let p = InstantPlatform::new();
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    let mut a = test("a", move || {
        c2.fetch_add(1, Ordering::SeqCst);
        false
    })
    .non_exclusive();
    a.conflicts = vec!["b".into()];
    let tests = vec![
        a,
        test("b", || false).non_exclusive(),
        test("c", || false).non_exclusive(),
        test("x", || false),
    ];
    let (r, stats) = run(&p, d.path(), tests, true, 0, KeepPolicy::None).await;
    assert!(r.values().all(|t| t.status == Status::Pass));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // {a, c} share; b (conflicts with a) and x (exclusive) boot their own.
    assert_eq!(p.counts().booted.load(Ordering::SeqCst), 3);
    assert_eq!(stats.counts().reused, 1);
    assert_eq!(
        r["a"].attempts[0].machines[0].id,
        r["c"].attempts[0].machines[0].id
    );
}
