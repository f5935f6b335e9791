//! Teardown, the last phase of a test's life: a passing test whose unit goes on hands its
//! still-healthy machine to the next test (a [`Lease`]); machines the keep policy keeps
//! are kept (`kept.json`, an ssh line in the report); the rest are destroyed with their
//! cluster.

use std::sync::Arc;

use bogie_reports::MachineArtifacts;

use crate::bringup::Phase;
use crate::context::{AttemptContext, KeepPolicy};
use crate::machine::TestMachine;
use crate::platform::Cluster;
use crate::prepare::SharedUse;
use crate::sharing::{Lease, SliceFrom};
use crate::test::Test;

/// When more tests of the unit follow (`reuse`) and this one passed, hands its machine on
/// if it can serve the next test.
pub(crate) async fn hand_on(
    ctx: &AttemptContext,
    test: &Test,
    cluster: &Arc<dyn Cluster>,
    machines: &[TestMachine],
    shared: SharedUse,
    reuse: bool,
    passed: bool,
) -> Option<Lease> {
    if !reuse || !passed || ctx.cancel.is_cancelled() || machines.len() != 1 {
        return None;
    }
    let m = &machines[0];
    let next = hand_over(m, test).await?;
    *m.start.lock().expect("poisoned") = crate::machine::MachineStart {
        kind: "shared",
        handed_from: Some(test.name.clone()),
        ready_after: None,
        ready_by: None,
    };
    let ignition = match shared.ignition {
        Some(i) => i,
        None => std::fs::read_to_string(m.dir().join("ignition.json")).unwrap_or_default(),
    };
    let machine_dir = shared
        .machine_dir
        .or_else(|| shared.root.as_ref().map(|r| r.join(m.id())))
        .unwrap_or_else(|| m.dir().to_path_buf());
    Some(Lease {
        cluster: cluster.clone(),
        machine: m.clone(),
        ignition,
        journal_cursor: next.journal_cursor,
        console_offset: next.console_offset,
        machine_dir,
    })
}

/// Checks that a machine can serve the next test (QEMU alive; with SSH access, systemd
/// `running`) and notes where the next test's console and journal begin.
async fn hand_over(m: &TestMachine, test: &Test) -> Option<SliceFrom> {
    if !m.platform_machine().is_running().await {
        return None;
    }
    let mut journal_cursor = None;
    if !test.flags.no_ssh_key_in_user_data {
        let out = m
            .ssh("systemctl is-system-running; sudo journalctl -q --no-pager -n 1 -o cat --show-cursor")
            .await
            .ok()?
            .stdout_str();
        let mut lines = out.lines();
        let state = lines.next().unwrap_or("").trim();
        if state != "running" {
            tracing::info!(machine = m.id(), state, "not handing the machine over");
            return None;
        }
        journal_cursor = lines
            .rev()
            .find_map(|l| l.strip_prefix("-- cursor: "))
            .map(str::to_string);
    }
    let console_offset = m.console().await.map(|c| c.len()).unwrap_or(0);
    Some(SliceFrom {
        console_offset,
        journal_cursor,
    })
}

/// What happens to the machines of an attempt that hands none on.
pub(crate) struct Ending<'a> {
    /// The attempt passed.
    pub(crate) passed: bool,
    /// The test skipped itself.
    pub(crate) skipped: bool,
    /// The progress display's phase callback.
    pub(crate) phase: &'a (dyn Fn(Phase) + Send + Sync),
}

/// Keeps the machines the policy keeps (their ssh lines go into `artifacts`) or closes
/// their sessions and destroys the cluster. Returns how many machines were kept.
pub(crate) async fn keep_or_destroy(
    ctx: &AttemptContext,
    test: &Test,
    cluster: &Arc<dyn Cluster>,
    machines: &[TestMachine],
    artifacts: &mut [MachineArtifacts],
    end: Ending<'_>,
) -> usize {
    let keep = match ctx.keep {
        KeepPolicy::All => true,
        KeepPolicy::Failed => !end.passed && !end.skipped,
        KeepPolicy::None => false,
    };
    if !keep {
        (end.phase)(Phase::Destroying);
        for m in machines {
            if let Some(s) = m.session.lock().await.take() {
                s.close().await;
            }
        }
        if let Err(e) = cluster.destroy().await {
            tracing::warn!(test = %test.name, error = %e, "cluster teardown failed");
        }
        return 0;
    }
    let mut kept = 0;
    for (m, a) in machines.iter().zip(artifacts.iter_mut()) {
        match m.platform_machine().keep().await {
            Ok(desc) => {
                let _ = std::fs::write(
                    m.dir().join("kept.json"),
                    serde_json::to_vec_pretty(&desc).unwrap_or_default(),
                );
                a.kept_ssh = Some(m.ssh_command_line(&ctx.key_path));
                kept += 1;
            }
            Err(e) => tracing::warn!(machine = m.id(), error = %e, "could not keep machine"),
        }
    }
    kept
}
