//! What every phase of an attempt reads from the run: [`AttemptContext`] and the
//! [`KeepPolicy`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::env::TestEnv;
use crate::machine::BringUp;
use crate::platform::Platform;
use crate::setup::IgnitionVersion;
use crate::ssh::SshKey;

/// Which machines outlive their test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepPolicy {
    /// Tear every machine down (`--remove`, the default).
    #[default]
    None,
    /// Keep machines of failed tests (`--keep-failed`).
    Failed,
    /// Keep every machine (`--remove=false`).
    All,
}

/// Everything an attempt needs from the run.
#[derive(Clone)]
pub struct AttemptContext {
    /// The platform.
    pub platform: Arc<dyn Platform>,
    /// The run's key.
    pub key: SshKey,
    /// Where the key is written (for ssh lines of kept machines).
    pub key_path: PathBuf,
    /// The run's output directory.
    pub out_dir: PathBuf,
    /// Facts for tests.
    pub env: TestEnv,
    /// Default timeout per test.
    pub default_timeout: Duration,
    /// Bring-up timeouts.
    pub bring_up: BringUp,
    /// Keep policy.
    pub keep: KeepPolicy,
    /// `--disable-selinux-avc-checks`.
    pub no_avc_checks: bool,
    /// Memory per machine (platform default when None).
    pub memory_mb: Option<u32>,
    /// The run's cancellation (Ctrl-C).
    pub cancel: CancellationToken,
    /// More public keys to authorize on every machine (`--key`), so people can log in
    /// with their own keys.
    pub extra_keys: Vec<String>,
    /// The spec of the configs machines without a test config get (`--ignition-version`,
    /// or its default for the image).
    pub ignition_version: IgnitionVersion,
}
