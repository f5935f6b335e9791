//! One attempt of one test, as the phases of its life in order: bring-up and the body
//! under the test's timeout ([`crate::body`], booting through [`crate::bringup`]),
//! collection ([`crate::collect`]), the console checks ([`crate::checks::judge`]) and
//! teardown ([`crate::teardown`]). This module only sequences them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bogie_reports::{Attempt, FailureClass};
use chrono::{DateTime, Utc};

use crate::bringup::Phase;
use crate::cluster::TestCluster;
pub use crate::context::{AttemptContext, KeepPolicy};
use crate::platform::{Cluster, ClusterSpec, PlatformError};
use crate::prepare::{cluster_state, share};
use crate::sharing::Lease;
use crate::snapshot::{BootStats, CountingCluster, Templates};
use crate::teardown::Ending;
use crate::test::Test;
// Where these used to live; their homes are the modules named.
pub use crate::failure::{make_failure, HarnessError, TimedOut, UnitFailure};
pub use crate::plan::{can_use_template, needs_tpm};

/// How an attempt ended, before it becomes a report [`Attempt`].
#[derive(Debug)]
pub struct AttemptOutcome {
    /// The report record.
    pub attempt: Attempt,
    /// The test skipped itself at run time (reason).
    pub skipped: Option<String>,
    /// Machines kept alive (their ssh lines are in the attempt's artifacts).
    pub kept: usize,
}

/// Makes a test name safe as a directory name.
pub fn dir_name(test: &str) -> String {
    test.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs one attempt of `test`. Never panics outward; every machine is torn down (or kept
/// per policy) before it returns.
pub async fn run_attempt(
    ctx: &AttemptContext,
    test: &Test,
    number: u32,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
) -> AttemptOutcome {
    run_attempt_with(ctx, test, number, phase, AttemptExtras::default())
        .await
        .0
}

/// What an attempt may use beyond the test itself: the run's snapshot templates and a
/// machine shared with the other tests of its unit (see [`crate::snapshot`] and
/// [`crate::sharing`]).
#[derive(Debug, Default)]
pub struct AttemptExtras {
    /// The run's templates: the test's one machine starts from its config's template (or
    /// becomes it). Ignored for tests that cannot use one.
    pub templates: Option<Arc<Templates>>,
    /// A ready machine the previous test of the unit handed over: the test runs on it
    /// instead of booting one.
    pub lease: Option<Lease>,
    /// More tests of the unit follow: when this attempt passes (or skips) and its machine
    /// is still healthy, the machine is handed over instead of torn down.
    pub reuse: bool,
    /// Counts of machines started and reused.
    pub stats: Option<Arc<BootStats>>,
}

/// Runs one attempt of `test` with [`AttemptExtras`]; returns the outcome and, when the
/// machine is handed over, the lease for the next test of the unit.
pub async fn run_attempt_with(
    ctx: &AttemptContext,
    test: &Test,
    number: u32,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
    extras: AttemptExtras,
) -> (AttemptOutcome, Option<Lease>) {
    let AttemptExtras {
        templates,
        lease,
        reuse,
        stats,
    } = extras;
    let reuse = reuse && ctx.keep != KeepPolicy::All && test.cluster_size == 1;
    let templates =
        templates.filter(|_| can_use_template(test) && ctx.platform.supports_snapshots());
    let started = Utc::now();
    let t0 = Instant::now();
    let dir = attempt_dir(&ctx.out_dir, test, number);
    let cancel = ctx.cancel.child_token();
    let cluster = match open_cluster(ctx, test, number, &dir, lease.as_ref(), stats.as_ref()).await
    {
        Ok(c) => c,
        Err(e) => return (platform_failure(number, started, t0, &e), None),
    };
    let state = cluster_state(ctx, test, cluster.clone(), dir, cancel.clone(), phase);
    let state = Arc::new(state);
    let tc = TestCluster {
        state: state.clone(),
    };
    let shared = share(ctx, &state, lease, reuse, stats.as_ref());
    let timeout = test.timeout.unwrap_or(ctx.default_timeout);
    let limits = (timeout, &ctx.cancel);
    let body = crate::body::run(&tc, &state, test, templates.as_ref(), &shared, limits);
    let verdict = body.await;
    let (mut failure, skipped) = (verdict.failure, verdict.skipped);

    (state.phase)(Phase::Collecting);
    let machines = tc.machines();
    let mut collected =
        crate::collect::collect(ctx, test, &machines, shared.slice_from.as_ref()).await;
    crate::checks::judge(&mut failure, &collected.hits, skipped.is_some());
    crate::collect::add_console_tails(failure.as_mut(), &machines).await;

    let passed = failure.is_none();
    let lease_out =
        crate::teardown::hand_on(ctx, test, &cluster, &machines, shared, reuse, passed).await;
    cancel.cancel();
    let mut kept = 0;
    if lease_out.is_none() {
        let end = Ending {
            passed,
            skipped: skipped.is_some(),
            phase: state.phase.as_ref(),
        };
        let artifacts = &mut collected.artifacts;
        kept =
            crate::teardown::keep_or_destroy(ctx, test, &cluster, &machines, artifacts, end).await;
    }
    let attempt = Attempt {
        number,
        passed,
        started,
        duration: t0.elapsed(),
        failure,
        output: state.log.lock().expect("poisoned").clone(),
        machines: collected.artifacts,
        subtests: state.subtests.lock().expect("poisoned").clone(),
    };
    let outcome = AttemptOutcome {
        attempt,
        skipped,
        kept,
    };
    (outcome, lease_out)
}

/// `<out>/<dir_name(test)>/`, with `attempt-N/` below it for reruns.
fn attempt_dir(out_dir: &Path, test: &Test, number: u32) -> PathBuf {
    let dir = out_dir.join(dir_name(&test.name));
    if number > 1 {
        dir.join(format!("attempt-{number}"))
    } else {
        dir
    }
}

/// The attempt's directory and cluster: the lease's, or a new one from the platform
/// (counted when the run counts boots).
async fn open_cluster(
    ctx: &AttemptContext,
    test: &Test,
    number: u32,
    dir: &Path,
    lease: Option<&Lease>,
    stats: Option<&Arc<BootStats>>,
) -> Result<Arc<dyn Cluster>, PlatformError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| PlatformError::io(format!("creating {}", dir.display()), e))?;
    if let Some(l) = lease {
        return Ok(l.cluster.clone());
    }
    let spec = ClusterSpec {
        name: format!("{}-{number}", dir_name(&test.name)),
        dir: dir.to_path_buf(),
    };
    let c: Arc<dyn Cluster> = Arc::from(ctx.platform.new_cluster(spec).await?);
    Ok(match stats {
        Some(s) => Arc::new(CountingCluster {
            inner: c,
            stats: s.clone(),
        }),
        None => c,
    })
}

/// The outcome of an attempt whose cluster could not be made (class `harness`).
fn platform_failure(
    number: u32,
    started: DateTime<Utc>,
    t0: Instant,
    e: &PlatformError,
) -> AttemptOutcome {
    let msg = format!("platform error: {e}");
    AttemptOutcome {
        attempt: Attempt {
            number,
            passed: false,
            started,
            duration: t0.elapsed(),
            failure: Some(make_failure(FailureClass::Harness, &msg, "")),
            output: String::new(),
            machines: Vec::new(),
            subtests: Vec::new(),
        },
        skipped: None,
        kept: 0,
    }
}
