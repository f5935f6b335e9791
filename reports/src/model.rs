//! The result model: a run, its tests, their attempts, failure classes and signatures.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Facts about one run, shared by every test result in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// A unique id of the run (random, hex).
    pub id: String,
    /// The platform the run used (`qemu`, `aws`, ...).
    pub platform: String,
    /// The architecture in Debian/Go spelling: `amd64` or `arm64`.
    pub arch: String,
    /// The image version (`4799.0.0`, or the test image's version); empty when unknown.
    pub version: String,
    /// The distro (`cl`, `fcos`, ...).
    pub distro: String,
    /// The channel (`stable`, `alpha`, ...); empty when not given.
    #[serde(default)]
    pub channel: String,
    /// The image path or id the run booted.
    #[serde(default)]
    pub image: String,
    /// The shard this run was (`hash:1/3`), if sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The command line that started the run.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// When the run started.
    pub started: DateTime<Utc>,
}

/// The final outcome of one test in a run, after any reruns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed on its first attempt.
    Pass,
    /// Failed on every attempt.
    Fail,
    /// Failed, then passed on a rerun.
    Flaky,
    /// Not run; `TestResult::skip_reason` says why.
    Skip,
    /// Failed, but the test is denylisted with `warn`: reported, does not fail the gate.
    Warn,
}

impl Status {
    /// kola's spelling in `report.json`: `PASS`, `FAIL`, `SKIP` (flaky counts as PASS,
    /// warn as FAIL, as kola reports them).
    pub fn kola(self) -> &'static str {
        match self {
            Status::Pass | Status::Flaky => "PASS",
            Status::Fail | Status::Warn => "FAIL",
            Status::Skip => "SKIP",
        }
    }

    /// Lower-case name, as used in the matrix and JSON lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Flaky => "flaky",
            Status::Skip => "skip",
            Status::Warn => "warn",
        }
    }

    /// Every status, in display order.
    pub const ALL: [Status; 5] = [
        Status::Pass,
        Status::Fail,
        Status::Flaky,
        Status::Skip,
        Status::Warn,
    ];

    /// The status named `s` (as [`Status::as_str`] spells it, any case), if any.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the test ran and ended in a failure (`fail` or `warn`).
    pub fn is_failure(self) -> bool {
        matches!(self, Status::Fail | Status::Warn)
    }
}

/// What kind of problem made an attempt fail. Used by triage to group failures by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    /// The harness or platform failed: boot never reached SSH, platform error, SSH lost.
    Harness,
    /// The test ran out of time.
    Timeout,
    /// The kernel panicked, oopsed or warned.
    Kernel,
    /// An SELinux AVC denial.
    Selinux,
    /// A seccomp kill or denial.
    Seccomp,
    /// A systemd unit failed (the signature names it).
    Systemd,
    /// etcd misbehaved.
    Etcd,
    /// docker/containerd misbehaved.
    Docker,
    /// The test's own check failed.
    Assertion,
}

impl FailureClass {
    /// Every class, in display order.
    pub const ALL: [FailureClass; 9] = [
        FailureClass::Harness,
        FailureClass::Timeout,
        FailureClass::Kernel,
        FailureClass::Selinux,
        FailureClass::Seccomp,
        FailureClass::Systemd,
        FailureClass::Etcd,
        FailureClass::Docker,
        FailureClass::Assertion,
    ];

    /// Lower-case name (`harness`, `selinux`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Harness => "harness",
            FailureClass::Timeout => "timeout",
            FailureClass::Kernel => "kernel",
            FailureClass::Selinux => "selinux",
            FailureClass::Seccomp => "seccomp",
            FailureClass::Systemd => "systemd",
            FailureClass::Etcd => "etcd",
            FailureClass::Docker => "docker",
            FailureClass::Assertion => "assertion",
        }
    }

    /// The class named `s` (as [`FailureClass::as_str`] spells it, any case), if any.
    pub fn parse(s: &str) -> Option<FailureClass> {
        FailureClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The class of the cause.
    pub class: FailureClass,
    /// The first decisive line, with volatile parts (numbers, hex, paths, names) masked, so the
    /// same cause on two tests or two arches gives the same signature.
    pub signature: String,
    /// The one-line, human reason (unmasked).
    pub message: String,
    /// A longer excerpt: the error chain plus the relevant console/journal lines.
    #[serde(default)]
    pub excerpt: String,
}

/// One attempt of a test: the first run or a rerun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first run, 2 for the first rerun, ...
    pub number: u32,
    /// Whether this attempt passed.
    pub passed: bool,
    /// When the attempt started.
    pub started: DateTime<Utc>,
    /// How long it took, machine bring-up and teardown included.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// Why it failed (None when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The test's log output (subtest lines, commands that failed, ...).
    #[serde(default)]
    pub output: String,
    /// Machines this attempt used and where their artifacts are.
    #[serde(default)]
    pub machines: Vec<MachineArtifacts>,
    /// Subtests run in this attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtests: Vec<SubtestResult>,
}

/// A subtest (kola's `c.Run(name, f)`) inside a test attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubtestResult {
    /// Full name, `parent/sub`.
    pub name: String,
    /// Outcome: pass, fail or skip.
    pub status: Status,
    /// Duration.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// Error or skip message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Where one machine's artifacts are, relative to the run's output directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineArtifacts {
    /// The machine's id (as in its directory name).
    pub id: String,
    /// Console log path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<PathBuf>,
    /// Journal path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<PathBuf>,
    /// Rendered Ignition config path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition: Option<PathBuf>,
    /// An ssh command line to reach the machine, when it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_ssh: Option<String>,
}

/// The outcome of one test in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// kola's test name (`cl.basic`).
    pub name: String,
    /// Final status.
    pub status: Status,
    /// Why it was skipped (denylist tracker, missing requirement, arch, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Platform it ran on (copied from the run so a merged report keeps it).
    pub platform: String,
    /// Architecture it ran on.
    pub arch: String,
    /// Every attempt, in order. Empty for skipped tests.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// Tags of the test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl TestResult {
    /// A skipped test with its reason.
    pub fn skipped(name: &str, platform: &str, arch: &str, reason: impl Into<String>) -> Self {
        TestResult {
            name: name.to_string(),
            status: Status::Skip,
            skip_reason: Some(reason.into()),
            platform: platform.to_string(),
            arch: arch.to_string(),
            attempts: Vec::new(),
            tags: Vec::new(),
        }
    }

    /// Sum of the attempts' durations.
    pub fn duration(&self) -> Duration {
        self.attempts.iter().map(|a| a.duration).sum()
    }

    /// The failure of the last failed attempt, if any.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.attempts.iter().rev().find_map(|a| a.failure.as_ref())
    }
}

/// A whole run: its facts and every test result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run facts.
    pub info: RunInfo,
    /// Test results, in the order they finished (writers sort as they need).
    pub tests: Vec<TestResult>,
}

/// Counts of a run's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Tests passed on the first attempt.
    pub passed: usize,
    /// Tests failed on every attempt.
    pub failed: usize,
    /// Tests that failed then passed.
    pub flaky: usize,
    /// Tests skipped.
    pub skipped: usize,
    /// Warn-only failures.
    pub warned: usize,
}

impl RunReport {
    /// Counts by status.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for t in &self.tests {
            match t.status {
                Status::Pass => s.passed += 1,
                Status::Fail => s.failed += 1,
                Status::Flaky => s.flaky += 1,
                Status::Skip => s.skipped += 1,
                Status::Warn => s.warned += 1,
            }
        }
        s
    }

    /// The overall result the way kola reports it: FAIL if any test failed, else PASS.
    pub fn overall(&self) -> Status {
        if self.tests.iter().any(|t| t.status == Status::Fail) {
            Status::Fail
        } else {
            Status::Pass
        }
    }
}

/// Serde helper: a `Duration` as fractional seconds.
pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serialize as f64 seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Deserialize from f64 seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64(secs.max(0.0)))
    }
}
