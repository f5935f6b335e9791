//! The scheduler: runs the planned tests on tokio, at most `parallel` at once (and, with
//! memory admission, only while the host has the memory their machines need), longest
//! first when durations are known; reruns failures, and streams every result as it
//! finishes.
//!
//! Reruns: a failed test is rerun on fresh machines up to `retries` times; one that fails
//! and then passes is `flaky`. A failure classed `harness` gets one extra rerun with
//! `retry_harness_failures`, even with `retries` 0. Warn-only tests (denylist `warn`) are
//! not rerun, as in coreos-assembler: their failure is already expected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bogie_reports::{Status, TestResult};
use tokio::sync::{mpsc, Semaphore};

use crate::admission::Admission;
use crate::bringup::Phase;
use crate::runner::{run_attempt_with, AttemptContext, AttemptExtras};
use crate::select::Selected;
use crate::sharing::{plan_units, Lease};
use crate::snapshot::{BootStats, Templates};
use crate::test::Test;

/// What the scheduler reports while it works (for progress displays).
#[derive(Debug, Clone)]
pub enum Event {
    /// A test started an attempt.
    Started {
        /// Test name.
        name: String,
        /// Attempt number.
        attempt: u32,
    },
    /// A test entered a phase.
    Phase {
        /// Test name.
        name: String,
        /// The phase.
        phase: Phase,
    },
    /// An attempt failed and the test will be rerun.
    Retrying {
        /// Test name.
        name: String,
        /// The failed attempt's one-line reason.
        reason: String,
    },
    /// A test finished (or was skipped): its final result.
    Finished(Box<TestResult>),
}

/// Scheduling options.
#[derive(Debug, Clone, Default)]
pub struct ScheduleOptions {
    /// Tests at once (at least 1).
    pub parallel: usize,
    /// Reruns of a failed test (0: none).
    pub retries: u32,
    /// Rerun failures classed `harness` once even when `retries` is 0.
    pub retry_harness_failures: bool,
    /// Tests whose failures only warn (denylist `warn`).
    pub warn_only: HashSet<String>,
    /// Known durations from a previous run: longest first.
    pub durations: HashMap<String, Duration>,
    /// Memory admission (`-j auto` on QEMU); None: `parallel` alone limits.
    pub admission: Option<Arc<Admission>>,
    /// Memory of one machine in MiB when neither the test nor the run says (admission).
    pub default_memory_mb: u32,
    /// Start machines from snapshot templates when several tests' machines share a
    /// first-boot config (on platforms that support it; see [`crate::snapshot`]).
    pub snapshots: bool,
    /// Run compatible non-exclusive tests one after another on one machine (see
    /// [`crate::sharing`]).
    pub share_machines: bool,
    /// Counts of machines started, restored and reused, when the caller wants them.
    pub stats: Option<Arc<BootStats>>,
}

/// Memory a test's machines need (MiB), for admission: its cluster size (at least one
/// machine, also for tests that boot their own) times its memory per machine.
pub fn memory_need_mib(t: &Test, run_memory_mb: Option<u32>, default_mb: u32) -> u64 {
    let per = t
        .min_memory_mb
        .or(run_memory_mb)
        .unwrap_or(if default_mb == 0 { 1024 } else { default_mb });
    t.cluster_size.max(1) as u64 * u64::from(per)
}

/// Orders runnable tests: longest known duration first, then multi-machine tests, then by
/// name (stable).
pub fn order(tests: &mut [Test], durations: &HashMap<String, Duration>) {
    tests.sort_by(|a, b| {
        let da = durations.get(&a.name).copied().unwrap_or_default();
        let db = durations.get(&b.name).copied().unwrap_or_default();
        db.cmp(&da)
            .then(b.cluster_size.cmp(&a.cluster_size))
            .then(a.name.cmp(&b.name))
    });
}

/// Runs every selected test; skipped ones are reported at once. Each final result is sent
/// on `events` as [`Event::Finished`] as soon as it is known; all results are returned.
pub async fn run_all(
    ctx: AttemptContext,
    selected: Vec<Selected>,
    opts: ScheduleOptions,
    events: mpsc::UnboundedSender<Event>,
) -> Vec<TestResult> {
    let names = Names {
        platform: ctx.platform.name().to_string(),
        arch: ctx.env.arch.as_str().to_string(),
    };
    let (mut results, mut runnable) = report_skips(selected, &names, &events);
    order(&mut runnable, &opts.durations);
    let mut units = plan_units(
        runnable,
        opts.parallel,
        &opts.durations,
        opts.share_machines,
        ctx.memory_mb,
    );
    let (templates, worth) = plan_templates(&ctx, &units, &opts);
    if templates.is_some() {
        crate::plan::cold_boots_first(&mut units, &worth, &opts.durations, ctx.memory_mb);
    }
    let sem = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let ctx = Arc::new(ctx);
    let opts = Arc::new(opts);
    let names = Arc::new(names);
    let mut set = tokio::task::JoinSet::new();
    // Units are admitted one by one in order, so longest-first holds under any limit.
    for unit in units {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closes");
        let reservation = match &opts.admission {
            Some(gate) if !ctx.cancel.is_cancelled() => {
                let need = memory_need_mib(&unit[0], ctx.memory_mb, opts.default_memory_mb);
                gate.admit(need, &ctx.cancel).await
            }
            _ => None,
        };
        if ctx.cancel.is_cancelled() {
            for t in &unit {
                let r = interrupted(t, &names.platform, &names.arch);
                let _ = events.send(Event::Finished(Box::new(r.clone())));
                results.push(r);
            }
            continue;
        }
        let shared = UnitShared {
            ctx: ctx.clone(),
            opts: opts.clone(),
            events: events.clone(),
            names: names.clone(),
            templates: templates.clone(),
            worth: worth.clone(),
        };
        set.spawn(async move {
            let _permit = permit;
            let _reservation = reservation;
            run_unit(shared, unit).await
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => results.extend(r),
            Err(e) => tracing::error!(error = %e, "a test task panicked"),
        }
    }
    if let Some(t) = templates {
        t.cleanup();
    }
    results
}

/// The platform and architecture names results carry.
struct Names {
    platform: String,
    arch: String,
}

/// What every unit's task shares with the others.
struct UnitShared {
    ctx: Arc<AttemptContext>,
    opts: Arc<ScheduleOptions>,
    events: mpsc::UnboundedSender<Event>,
    names: Arc<Names>,
    templates: Option<Arc<Templates>>,
    worth: Arc<HashSet<String>>,
}

/// Reports the skipped tests at once; returns their results and the tests to run.
fn report_skips(
    selected: Vec<Selected>,
    names: &Names,
    events: &mpsc::UnboundedSender<Event>,
) -> (Vec<TestResult>, Vec<Test>) {
    let mut results = Vec::new();
    let mut runnable = Vec::new();
    for s in selected {
        match s {
            Selected::Skip(t, reason) => {
                let mut r = TestResult::skipped(&t.name, &names.platform, &names.arch, reason);
                r.tags = t.tags.clone();
                let _ = events.send(Event::Finished(Box::new(r.clone())));
                results.push(r);
            }
            Selected::Run(t) => runnable.push(t),
        }
    }
    (results, runnable)
}

/// The run's snapshot templates, when they pay off: for configs that more than one unit
/// boots (those configs are returned too), on a platform that supports snapshots.
fn plan_templates(
    ctx: &AttemptContext,
    units: &[Vec<Test>],
    opts: &ScheduleOptions,
) -> (Option<Arc<Templates>>, Arc<HashSet<String>>) {
    let mut per_config: HashMap<String, usize> = HashMap::new();
    for u in units {
        if let Some(k) = crate::plan::test_template_key(&u[0], ctx.memory_mb) {
            *per_config.entry(k).or_default() += 1;
        }
    }
    let templates = (opts.snapshots
        && ctx.platform.supports_snapshots()
        && per_config.values().any(|n| *n > 1))
    .then(|| {
        Templates::new(
            ctx.platform.clone(),
            ctx.out_dir.join(crate::snapshot::TEMPLATES_DIR),
            opts.stats.clone(),
        )
    });
    let worth = per_config
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect();
    (templates, Arc::new(worth))
}

/// Runs one unit's tests in order, handing a shared machine from one to the next; the
/// last lease is released.
async fn run_unit(s: UnitShared, unit: Vec<Test>) -> Vec<TestResult> {
    let (ctx, names) = (&s.ctx, &s.names);
    let mut lease: Option<Lease> = None;
    let mut out = Vec::with_capacity(unit.len());
    for (i, t) in unit.iter().enumerate() {
        let r = if ctx.cancel.is_cancelled() {
            interrupted(t, &names.platform, &names.arch)
        } else {
            let templates = s.templates.clone().filter(|_| {
                crate::plan::test_template_key(t, ctx.memory_mb)
                    .is_some_and(|k| s.worth.contains(&k))
            });
            let reuse = i + 1 < unit.len();
            let extras = (templates, &mut lease, reuse);
            run_test(
                ctx,
                t,
                &s.opts,
                &s.events,
                &names.platform,
                &names.arch,
                extras,
            )
            .await
        };
        let _ = s.events.send(Event::Finished(Box::new(r.clone())));
        out.push(r);
    }
    if let Some(l) = lease.take() {
        l.release().await;
    }
    out
}

fn interrupted(t: &Test, platform: &str, arch: &str) -> TestResult {
    let mut r = TestResult::skipped(
        &t.name,
        platform,
        arch,
        "run interrupted before the test started",
    );
    r.tags = t.tags.clone();
    r
}

/// A test's share of its unit: the run's templates (when its config has one), the machine
/// the previous test handed over (in and out), and whether a next test wants it.
type UnitExtras<'a> = (Option<Arc<Templates>>, &'a mut Option<Lease>, bool);

async fn run_test(
    ctx: &AttemptContext,
    t: &Test,
    opts: &ScheduleOptions,
    events: &mpsc::UnboundedSender<Event>,
    platform: &str,
    arch: &str,
    (templates, lease, reuse): UnitExtras<'_>,
) -> TestResult {
    let mut attempts = Vec::new();
    let mut number = 1;
    let mut harness_retry_used = false;
    loop {
        let _ = events.send(Event::Started {
            name: t.name.clone(),
            attempt: number,
        });
        let name = t.name.clone();
        let ev = events.clone();
        let phase = Box::new(move |p: Phase| {
            let _ = ev.send(Event::Phase {
                name: name.clone(),
                phase: p,
            });
        });
        let extras = AttemptExtras {
            templates: templates.clone(),
            lease: lease.take(),
            reuse,
            stats: opts.stats.clone(),
        };
        let (outcome, handed_over) = attempt_in_task(ctx, t, number, phase, extras).await;
        *lease = handed_over;
        if let Some(reason) = outcome.skipped {
            let mut r = TestResult::skipped(&t.name, platform, arch, reason);
            r.attempts = vec![outcome.attempt];
            r.tags = t.tags.clone();
            return r;
        }
        let passed = outcome.attempt.passed;
        let class = outcome.attempt.failure.as_ref().map(|f| f.class);
        let reason = outcome
            .attempt
            .failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default();
        attempts.push(outcome.attempt);
        if passed || ctx.cancel.is_cancelled() || opts.warn_only.contains(&t.name) {
            break;
        }
        let retries_left = number <= opts.retries;
        let harness_retry = opts.retry_harness_failures
            && !harness_retry_used
            && class == Some(bogie_reports::FailureClass::Harness);
        if !retries_left && !harness_retry {
            break;
        }
        if !retries_left {
            harness_retry_used = true;
        }
        let _ = events.send(Event::Retrying {
            name: t.name.clone(),
            reason,
        });
        number += 1;
    }
    let status = final_status(&attempts, opts.warn_only.contains(&t.name));
    TestResult {
        name: t.name.clone(),
        status,
        skip_reason: None,
        platform: platform.to_string(),
        arch: arch.to_string(),
        attempts,
        tags: t.tags.clone(),
    }
}

/// Runs one attempt in its own task, so that a panic in a test body loses no other
/// results: a panic is that attempt's (assertion) failure.
async fn attempt_in_task(
    ctx: &AttemptContext,
    t: &Test,
    number: u32,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
    extras: AttemptExtras,
) -> (crate::runner::AttemptOutcome, Option<Lease>) {
    let ctx = ctx.clone();
    let t = t.clone();
    let joined =
        tokio::spawn(async move { run_attempt_with(&ctx, &t, number, phase, extras).await }).await;
    match joined {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("the test panicked: {e}");
            let outcome = crate::runner::AttemptOutcome {
                attempt: bogie_reports::Attempt {
                    number,
                    passed: false,
                    started: chrono::Utc::now(),
                    duration: Duration::ZERO,
                    failure: Some(crate::failure::make_failure(
                        bogie_reports::FailureClass::Assertion,
                        &msg,
                        "",
                    )),
                    output: String::new(),
                    machines: Vec::new(),
                    subtests: Vec::new(),
                },
                skipped: None,
                kept: 0,
            };
            (outcome, None)
        }
    }
}

/// A test's status from its attempts: passed first time, flaky (passed on a rerun), a
/// denylist `warn`, or failed.
fn final_status(attempts: &[bogie_reports::Attempt], warn_only: bool) -> Status {
    let last_passed = attempts.last().is_some_and(|a| a.passed);
    if last_passed {
        if attempts.len() == 1 {
            Status::Pass
        } else {
            Status::Flaky
        }
    } else if warn_only {
        Status::Warn
    } else {
        Status::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_known_first() {
        let mut ts = vec![
            Test::new("a", |_c| async { Ok(()) }),
            Test::new("b", |_c| async { Ok(()) }).cluster_size(3),
            Test::new("c", |_c| async { Ok(()) }),
        ];
        let mut d = HashMap::new();
        d.insert("c".to_string(), Duration::from_secs(100));
        order(&mut ts, &d);
        let names: Vec<&str> = ts.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["c", "b", "a"]);
    }
}

#[cfg(test)]
mod run_order_tests {
    //! Longest-first through [`run_all`] itself, on the instant platform: the order tests
    //! start in follows a previous run's durations, with and without snapshots and sharing.

    use super::*;
    use crate::instant::InstantPlatform;
    use crate::machine::BringUp;
    use crate::runner::KeepPolicy;
    use crate::ssh::SshKey;
    use crate::{Platform, TestEnv, TestFlags};
    use tokio_util::sync::CancellationToken;

    fn ctx(p: &InstantPlatform, out: &std::path::Path) -> AttemptContext {
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
            keep: KeepPolicy::None,
            no_avc_checks: false,
            memory_mb: None,
            cancel: CancellationToken::new(),
            extra_keys: Vec::new(),
            ignition_version: crate::setup::IgnitionVersion::V3,
        }
    }

    fn test(name: &str) -> Test {
        Test::new(name, |c| async move {
            c.machine()?;
            Ok(())
        })
        .distros(&[])
        .flags(TestFlags {
            no_ssh_key_in_user_data: true,
            ..TestFlags::default()
        })
    }

    /// The names in the order their first attempts started.
    async fn started(snapshots: bool, share: bool, tests: Vec<Test>) -> Vec<String> {
        let d = tempfile::tempdir().unwrap();
        let p = InstantPlatform::new().with_snapshots();
        let durations: HashMap<String, Duration> = [("a", 1), ("b", 30), ("d", 10), ("s2", 40)]
            .into_iter()
            .map(|(n, s)| (n.to_string(), Duration::from_secs(s)))
            .collect();
        let opts = ScheduleOptions {
            parallel: 1,
            durations,
            snapshots,
            share_machines: share,
            ..ScheduleOptions::default()
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let selected = tests.into_iter().map(Selected::Run).collect();
        let results = run_all(ctx(&p, d.path()), selected, opts, tx).await;
        assert!(results.iter().all(|r| r.status == Status::Pass));
        let mut names = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let Event::Started { name, attempt: 1 } = ev {
                names.push(name);
            }
        }
        names
    }

    #[tokio::test]
    async fn tests_start_longest_known_first() {
        for (snapshots, share) in [(false, false), (true, false), (true, true)] {
            let names = started(
                snapshots,
                share,
                ["a", "c", "b", "d"].into_iter().map(test).collect(),
            )
            .await;
            assert_eq!(
                names,
                ["b", "d", "a", "c"],
                "snapshots {snapshots}, share {share}"
            );
        }
    }

    #[tokio::test]
    async fn a_shared_machine_counts_its_tests_durations() {
        // s1 (unknown) and s2 (40 s) share a machine: that unit (40 s) goes before b (30 s).
        let tests = vec![
            test("a"),
            test("b"),
            test("s1").non_exclusive(),
            test("s2").non_exclusive(),
        ];
        let names = started(true, true, tests).await;
        assert_eq!(names.len(), 4);
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("s2") < pos("b"), "{names:?}");
        assert!(pos("s1") < pos("b"), "{names:?}");
        assert!(pos("b") < pos("a"), "{names:?}");
    }
}
