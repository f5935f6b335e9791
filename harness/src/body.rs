//! The body, the second phase of a test's life: bring-up and the test's own function under
//! the test's timeout and the run's cancellation, and the verdict on what it returned (a
//! skip, or a classed failure).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bogie_reports::Failure;
use tokio_util::sync::CancellationToken;

use crate::bootwatch::BootFailure;
use crate::bringup::{boot_machine, boot_machine_with, ClusterState, Phase};
use crate::cluster::{Skip, TestCluster};
use crate::failure::{classify, make_failure, HarnessError, TimedOut};
use crate::prepare::SharedUse;
use crate::snapshot::Templates;
use crate::test::Test;

/// What the body came to: a failure, or a skip the test raised itself (its reason).
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The failure, classed.
    pub(crate) failure: Option<Failure>,
    /// The reason the test skipped itself.
    pub(crate) skipped: Option<String>,
}

/// Brings the machines up and runs the test's body (failed subtests fail it) within
/// `timeout`; the run's Ctrl-C (`run_cancel`) ends it as interrupted.
pub(crate) async fn run(
    tc: &TestCluster,
    state: &Arc<ClusterState>,
    test: &Test,
    templates: Option<&Arc<Templates>>,
    shared: &SharedUse,
    (timeout, run_cancel): (Duration, &CancellationToken),
) -> Verdict {
    let body = async {
        bring_up(state, test, templates, shared).await?;
        (state.phase)(Phase::Running);
        (test.body)(tc.clone()).await?;
        let failed = tc.failed_subtests();
        if !failed.is_empty() {
            bail!("failed subtests: {}", failed.join(", "));
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, body) => match r {
            Ok(r) => r,
            Err(_) => Err(anyhow!(TimedOut(timeout))),
        },
        _ = run_cancel.cancelled() => Err(anyhow!(HarnessError("interrupted".into()))),
    };
    let result = match result {
        // A body that failed because the run was interrupted (its subtests or commands
        // cancelled) was interrupted, whatever error it returned.
        Err(_) if run_cancel.is_cancelled() => Err(anyhow!(HarnessError("interrupted".into()))),
        Err(e) if e.downcast_ref::<Skip>().is_none() => Err(name_stopped_machine(tc, e).await),
        r => r,
    };
    match result {
        Ok(()) => Verdict::default(),
        Err(e) => match e.downcast_ref::<Skip>() {
            Some(s) => Verdict {
                failure: None,
                skipped: Some(s.0.clone()),
            },
            None => Verdict {
                failure: Some(make_failure(classify(&e), &format!("{e:#}"), "")),
                skipped: None,
            },
        },
    }
}

/// A test whose machine's emulator died under it (killed QEMU, crashed instance) failed
/// because of that, not because of the SSH error it saw: says so, as a `harness` failure.
async fn name_stopped_machine(tc: &TestCluster, e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<BootFailure>().is_some() {
        return e;
    }
    for m in tc.machines() {
        let pm = m.platform_machine();
        if pm.is_running().await {
            continue;
        }
        let log = pm.platform_log().await;
        let last = log.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let why = last.map(|l| format!(": {l}")).unwrap_or_default();
        return anyhow!(HarnessError(format!(
            "machine {} stopped running during the test (its emulator exited{why}); the test saw: {e:#}",
            m.id()
        )));
    }
    e
}

/// Brings the test's machines up, inside the test's time: none for a machine taken over;
/// the one machine through the run's templates or as the unit's shared machine; else
/// `cluster_size` machines booted in parallel.
async fn bring_up(
    state: &Arc<ClusterState>,
    test: &Test,
    templates: Option<&Arc<Templates>>,
    shared: &SharedUse,
) -> anyhow::Result<()> {
    if shared.adopted() {
        return Ok(());
    }
    if test.cluster_size == 1 && (templates.is_some() || shared.root.is_some()) {
        boot_machine_with(
            state,
            test.config.clone(),
            templates,
            shared.root.as_deref(),
        )
        .await?;
    } else if test.cluster_size > 0 {
        let futs = (0..test.cluster_size).map(|_| boot_machine(state, test.config.clone()));
        futures::future::try_join_all(futs).await?;
    }
    Ok(())
}
