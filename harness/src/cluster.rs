//! What a test body sees: [`TestCluster`] (its machines, subtests, logging, more machines,
//! booted through [`crate::bringup`]). A machine itself is a [`TestMachine`]
//! (`machine.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use bogie_reports::{Status, SubtestResult};
use tokio_util::sync::CancellationToken;

use crate::bringup::{boot_machine, machine_config, ClusterState};
use crate::ignition::Config;
// Where these types used to live; their homes are the modules named.
pub use crate::bringup::Phase;
pub use crate::env::TestEnv;
pub use crate::machine::{BringUp, TestMachine};
pub use crate::text::shell_quote;

/// Raised (through `anyhow`) by a test or subtest that decides at run time that it cannot
/// run here; the harness reports it as skipped with the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("skipped: {0}")]
pub struct Skip(pub String);

/// Returns a [`Skip`] error: `return skip("needs a TPM")`.
pub fn skip<T>(reason: impl Into<String>) -> anyhow::Result<T> {
    Err(anyhow::Error::new(Skip(reason.into())))
}

/// The cluster handed to a test body. Cheap to clone.
#[derive(Clone)]
pub struct TestCluster {
    pub(crate) state: Arc<ClusterState>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("test", &self.state.test_name)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// The machines the harness booted (and any the test added), in order.
    pub fn machines(&self) -> Vec<TestMachine> {
        self.state.machines.lock().expect("poisoned").clone()
    }

    /// The first machine (most tests have one).
    pub fn machine(&self) -> anyhow::Result<TestMachine> {
        self.machines()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the cluster has no machine"))
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.state.test_name
    }

    /// Facts about the run.
    pub fn env(&self) -> &TestEnv {
        &self.state.env
    }

    /// The run's public SSH key (for configs a test writes itself).
    pub fn ssh_public_key(&self) -> &str {
        self.state.key.public_openssh()
    }

    /// The test's artifact directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.state.dir
    }

    /// Cancelled when the test times out or the run is interrupted.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.state.cancel
    }

    /// Appends a line to the test's output (kept in every report).
    pub fn log(&self, line: impl AsRef<str>) {
        self.state.log(line);
    }

    /// Whether the image/platform provide a capability.
    pub fn has(&self, capability: &str) -> bool {
        self.state.env.provides.contains(capability)
    }

    /// Runs a subtest (kola's `c.Run`): its result is recorded; a failure fails the test at
    /// the end but the remaining subtests still run. Returns whether it passed.
    pub async fn run<F, Fut>(&self, name: &str, f: F) -> bool
    where
        F: FnOnce(TestCluster) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let full = format!("{}/{}", self.state.test_name, name);
        let start = Instant::now();
        let res = f(self.clone()).await;
        let (status, message) = match res {
            Ok(()) => (Status::Pass, String::new()),
            Err(e) => match e.downcast_ref::<Skip>() {
                Some(s) => (Status::Skip, s.0.clone()),
                None => (Status::Fail, format!("{e:#}")),
            },
        };
        let verb = match status {
            Status::Pass => "PASS",
            Status::Skip => "SKIP",
            _ => "FAIL",
        };
        if message.is_empty() {
            self.log(format!("--- {verb}: {full}"));
        } else {
            self.log(format!("--- {verb}: {full}: {message}"));
        }
        self.state
            .subtests
            .lock()
            .expect("poisoned")
            .push(SubtestResult {
                name: full,
                status,
                duration: start.elapsed(),
                message,
            });
        status != Status::Fail
    }

    /// Runs a subtest only when the image provides `capability`, else records it as skipped
    /// with the reason.
    pub async fn run_if<F, Fut>(&self, capability: &str, name: &str, f: F) -> bool
    where
        F: FnOnce(TestCluster) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        if self.has(capability) {
            self.run(name, f).await
        } else {
            let reason = format!("requires {capability:?}, which the image does not provide");
            self.run(name, |_| async move { skip(reason) }).await
        }
    }

    /// Names of failed subtests so far.
    pub fn failed_subtests(&self) -> Vec<String> {
        self.state
            .subtests
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|s| s.status == Status::Fail)
            .map(|s| s.name.clone())
            .collect()
    }

    /// Boots one more machine with `config` (the run's SSH key is added to it) and waits
    /// until it is up.
    pub async fn new_machine(&self, config: Option<Config>) -> anyhow::Result<TestMachine> {
        boot_machine(&self.state, config).await
    }

    /// Boots several machines with the same config in parallel.
    pub async fn new_machines(
        &self,
        n: usize,
        config: Option<Config>,
    ) -> anyhow::Result<Vec<TestMachine>> {
        let futs = (0..n).map(|_| boot_machine(&self.state, config.clone()));
        futures::future::try_join_all(futs).await
    }

    /// Renders a config the way the harness does for its machines (adds the SSH key), for
    /// tests that pass configs around themselves.
    pub fn render_config(&self, config: Option<Config>) -> Config {
        machine_config(&self.state, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_errors_downcast() {
        let e: anyhow::Error = skip::<()>("no tpm").unwrap_err();
        assert_eq!(e.downcast_ref::<Skip>().unwrap().0, "no tpm");
    }
}
