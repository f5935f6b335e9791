//! Preparing an attempt, before its time starts: the cluster state from the run's context
//! and the test, and the machine shared with the other tests of its unit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::bringup::{ClusterState, Phase};
use crate::context::{AttemptContext, KeepPolicy};
use crate::platform::Cluster;
use crate::setup::MachineSetup;
use crate::sharing::{Lease, SliceFrom, SHARED_DIR};
use crate::snapshot::BootStats;
use crate::test::Test;

/// The state of one attempt of `test` in `cluster`, its artifacts under `dir`.
pub(crate) fn cluster_state(
    ctx: &AttemptContext,
    test: &Test,
    cluster: Arc<dyn Cluster>,
    dir: PathBuf,
    cancel: CancellationToken,
    phase: Box<dyn Fn(Phase) + Send + Sync>,
) -> ClusterState {
    let user = test.default_user.clone().unwrap_or_else(|| {
        ctx.env
            .image
            .manifest
            .as_ref()
            .map(|m| m.default_user.clone())
            .unwrap_or_else(|| "core".into())
    });
    ClusterState {
        cluster,
        machines: Mutex::new(Vec::new()),
        key: ctx.key.clone(),
        user,
        dir,
        test_name: test.name.clone(),
        log: Mutex::new(String::new()),
        subtests: Mutex::new(Vec::new()),
        cancel,
        bring_up: ctx.bring_up.for_attempt(
            ctx.platform.as_ref(),
            test.timeout.unwrap_or(ctx.default_timeout),
        ),
        env: ctx.env.clone(),
        may_outlive: ctx.keep != KeepPolicy::None,
        machine_seq: Mutex::new(0),
        phase,
        default_memory_mb: test.min_memory_mb.or(ctx.memory_mb),
        extra_disks: test.extra_disks.clone(),
        primary_disk_gib: test.primary_disk_gib,
        extra_nics: test.extra_nics,
        kernel_args: test.kernel_args.clone(),
        first_boot_kernel_args: test.first_boot_kernel_args.clone(),
        tpm: crate::plan::needs_tpm(test),
        no_ssh_key: test.flags.no_ssh_key_in_user_data,
        no_ssh_key_in_metadata: test.flags.no_ssh_key_in_metadata,
        extra_keys: ctx.extra_keys.clone(),
        setup: MachineSetup::for_test(
            test.flags.no_disable_updates,
            test.flags.no_enable_selinux,
            ctx.ignition_version,
            &ctx.env.provides,
        ),
    }
}

/// How an attempt uses a machine shared by the tests of its unit.
#[derive(Default)]
pub(crate) struct SharedUse {
    /// This test boots the unit's machine: the machine's own files go under this root.
    pub(crate) root: Option<PathBuf>,
    /// Where this test's part of the machine's console and journal begins.
    pub(crate) slice_from: Option<SliceFrom>,
    /// The shared machine's own directory, for a machine taken over.
    pub(crate) machine_dir: Option<PathBuf>,
    /// The config the shared machine booted with, for a machine taken over.
    pub(crate) ignition: Option<String>,
}

impl SharedUse {
    /// The test runs on a machine the previous test of its unit handed over, ready.
    pub(crate) fn adopted(&self) -> bool {
        self.slice_from.is_some() && self.root.is_none()
    }
}

/// Takes over the machine `lease` hands on (registered as the test's machine, its
/// artifacts under the test's directory `dir`), or, for the first test of a unit
/// (`reuse` without a lease), places the shared machine's own files apart from its tests'
/// artifacts. Each test's console and journal are then the part written while it ran.
pub(crate) fn share(
    ctx: &AttemptContext,
    state: &ClusterState,
    lease: Option<Lease>,
    reuse: bool,
    stats: Option<&Arc<BootStats>>,
) -> SharedUse {
    let Some(l) = lease else {
        if !reuse {
            return SharedUse::default();
        }
        return SharedUse {
            root: Some(ctx.out_dir.join(SHARED_DIR)),
            slice_from: Some(SliceFrom {
                console_offset: 0,
                journal_cursor: None,
            }),
            ..SharedUse::default()
        };
    };
    let mut m = l.machine.clone();
    m.dir = state.dir.join(m.id());
    m.cancel = state.cancel.clone();
    let copied = std::fs::create_dir_all(&m.dir)
        .and_then(|()| std::fs::write(m.dir.join("ignition.json"), &l.ignition));
    if let Err(e) = copied {
        tracing::warn!(machine = m.id(), error = %e, "writing the shared machine's artifacts");
    }
    state.machines.lock().expect("poisoned").push(m);
    if let Some(s) = stats {
        s.add_reused();
    }
    state.log(format!(
        "running on shared machine {} (its files are in {})",
        l.machine.id(),
        l.machine_dir.display()
    ));
    SharedUse {
        root: None,
        slice_from: Some(SliceFrom {
            console_offset: l.console_offset,
            journal_cursor: l.journal_cursor.clone(),
        }),
        machine_dir: Some(l.machine_dir.clone()),
        ignition: Some(l.ignition.clone()),
    }
}
