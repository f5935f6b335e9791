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
    /// Selected, but the run ended (or was killed) before the test reported a result;
    /// `TestResult::skip_reason` says why. Fails the gate: nothing says the test passes.
    #[serde(rename = "not-run")]
    NotRun,
}

impl Status {
    /// kola's spelling in `report.json`: `PASS`, `FAIL`, `SKIP` (flaky counts as PASS,
    /// warn as FAIL, as kola reports them; a test that never reported is a FAIL, so no kola
    /// reader takes it for a pass).
    pub fn kola(self) -> &'static str {
        match self {
            Status::Pass | Status::Flaky => "PASS",
            Status::Fail | Status::Warn | Status::NotRun => "FAIL",
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
            Status::NotRun => "not-run",
        }
    }

    /// Every status, in display order.
    pub const ALL: [Status; 6] = [
        Status::Pass,
        Status::Fail,
        Status::Flaky,
        Status::Skip,
        Status::Warn,
        Status::NotRun,
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

impl Failure {
    /// Appends `text` (more quoted lines) to the excerpt on lines of their own: a newline
    /// goes first when the excerpt does not end with one, so the message and the first
    /// quoted line never run together.
    pub fn push_excerpt(&mut self, text: &str) {
        if !self.excerpt.is_empty() && !self.excerpt.ends_with('\n') {
            self.excerpt.push('\n');
        }
        self.excerpt.push_str(text);
    }
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
    /// How the machine came to this test: `cold` (booted), `snapshot` (restored from a
    /// template) or `shared` (handed on by the test before it on the same machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// For a `shared` machine, the test that handed it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_from: Option<String>,
    /// Seconds from the emulator's start (or the restore's) to the first SSH login; none for a
    /// machine handed on by another test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_secs: Option<f64>,
    /// What told the harness the machine was ready: `signal` (the guest's readiness line on
    /// its virtio-serial port) or `ssh` (SSH attempts alone, for images that send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_by: Option<String>,
}

impl MachineArtifacts {
    /// A machine's entry with only its id.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            console: None,
            journal: None,
            ignition: None,
            kept_ssh: None,
            start: None,
            handed_from: None,
            ready_secs: None,
            ready_by: None,
        }
    }

    /// One line for people and JUnit: `m1-ab12 cold, ready in 21.4 s`,
    /// `m1-ab12 shared after cl.basic`.
    pub fn start_line(&self) -> Option<String> {
        let start = self.start.as_deref()?;
        let mut s = format!("{} {start}", self.id);
        if let Some(t) = &self.handed_from {
            s.push_str(&format!(" after {t}"));
        }
        if let Some(r) = self.ready_secs {
            s.push_str(&format!(", ready in {r:.1} s"));
            if let Some(by) = &self.ready_by {
                s.push_str(&format!(" ({by})"));
            }
        }
        Some(s)
    }
}

/// The outcome of one test in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// kola's test name (`cl.basic`).
    pub name: String,
    /// Final status.
    pub status: Status,
    /// Why it was skipped (denylist tracker, missing requirement, arch, ...), or, for a test
    /// not run, why it has no result.
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
    /// A selected test that has no result (the run did not get to report it), with why.
    pub fn not_run(name: &str, platform: &str, arch: &str, reason: impl Into<String>) -> Self {
        TestResult {
            status: Status::NotRun,
            ..TestResult::skipped(name, platform, arch, reason)
        }
    }

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

/// How a run ended, as far as its result files tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunEnd {
    /// It ran to its end. Report files written only at the end of a run (JUnit, TAP,
    /// `report.json`) say no more than this.
    #[default]
    Completed,
    /// It was interrupted (Ctrl-C, SIGTERM) and ended early, reporting what it had.
    Interrupted,
    /// It never ended: `results.jsonl` names the selected tests but has no end record
    /// (bogie was killed or crashed, or is still running).
    NotEnded,
    /// Unknown: a `results.jsonl` of an older bogie, without the selection header and the
    /// end record. Taken as completed, with a warning.
    Unknown,
}

impl RunEnd {
    /// Whether a run that ended this way can pass the gate (if its tests did).
    pub fn passes_gate(self) -> bool {
        matches!(self, RunEnd::Completed | RunEnd::Unknown)
    }

    /// Lower-case name: `completed`, `interrupted`, `not-ended`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunEnd::Completed => "completed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::NotEnded => "not-ended",
            RunEnd::Unknown => "unknown",
        }
    }

    /// The ending named `s` (as [`RunEnd::as_str`] spells it), if any.
    pub fn parse(s: &str) -> Option<RunEnd> {
        [
            RunEnd::Completed,
            RunEnd::Interrupted,
            RunEnd::NotEnded,
            RunEnd::Unknown,
        ]
        .into_iter()
        .find(|e| e.as_str() == s.trim())
    }

    /// Why a run that ended this way fails the gate, for messages; None when it does not.
    pub fn problem(self) -> Option<&'static str> {
        match self {
            RunEnd::Interrupted => Some("was interrupted"),
            RunEnd::NotEnded => Some("did not end (killed or crashed, or still running)"),
            RunEnd::Completed | RunEnd::Unknown => None,
        }
    }

    /// The worse of two endings (for a merge of shards): not ended, then interrupted, then
    /// unknown, then completed.
    pub fn worst(self, other: RunEnd) -> RunEnd {
        let rank = |e: RunEnd| match e {
            RunEnd::Completed => 0,
            RunEnd::Unknown => 1,
            RunEnd::Interrupted => 2,
            RunEnd::NotEnded => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// A whole run: its facts and every test result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Run facts.
    pub info: RunInfo,
    /// Test results, in the order they finished (writers sort as they need).
    pub tests: Vec<TestResult>,
    /// How the run ended.
    #[serde(default)]
    pub end: RunEnd,
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
    /// Selected tests without a result.
    #[serde(default)]
    pub not_run: usize,
}

impl RunReport {
    /// A completed run's report.
    pub fn new(info: RunInfo, tests: Vec<TestResult>) -> Self {
        RunReport {
            info,
            tests,
            end: RunEnd::Completed,
        }
    }

    /// The tests that were selected but never reported a result.
    pub fn not_run(&self) -> Vec<&TestResult> {
        self.tests
            .iter()
            .filter(|t| t.status == Status::NotRun)
            .collect()
    }

    /// Why this run cannot pass the gate whatever its tests did (it did not end, or was
    /// interrupted, or tests have no result), for messages; None when nothing is missing.
    pub fn incomplete(&self) -> Option<String> {
        let missing = self.not_run();
        let names: Vec<&str> = missing.iter().map(|t| t.name.as_str()).collect();
        match (self.end.problem(), names.is_empty()) {
            (None, true) => None,
            (None, false) => Some(format!(
                "{} test(s) not run: {}",
                names.len(),
                names.join(", ")
            )),
            (Some(p), true) => Some(format!("the run {p}")),
            (Some(p), false) => Some(format!(
                "the run {p}; {} test(s) not run: {}",
                names.len(),
                names.join(", ")
            )),
        }
    }

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
                Status::NotRun => s.not_run += 1,
            }
        }
        s
    }

    /// The overall result the way kola reports it: FAIL if any test failed (or never
    /// reported), else PASS.
    pub fn overall(&self) -> Status {
        if self
            .tests
            .iter()
            .any(|t| matches!(t.status, Status::Fail | Status::NotRun))
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_keep_the_message_and_the_quoted_lines_apart() {
        let mut f = crate::triage::failure("ssh: timed out", "ssh: timed out");
        f.push_excerpt("m1 console:38: Kernel panic - not syncing\n");
        f.push_excerpt("--- console tail of m1:\n");
        assert_eq!(
            f.excerpt,
            "ssh: timed out\nm1 console:38: Kernel panic - not syncing\n--- console tail of m1:\n"
        );
        let mut empty = crate::triage::failure("x", "");
        empty.push_excerpt("line\n");
        assert_eq!(empty.excerpt, "line\n");
    }

    #[test]
    fn endings_order_and_gate() {
        use RunEnd::*;
        for e in [Completed, Interrupted, NotEnded, Unknown] {
            assert_eq!(RunEnd::parse(e.as_str()), Some(e));
            assert_eq!(e.passes_gate(), e.problem().is_none(), "{e:?}");
        }
        assert_eq!(RunEnd::parse("ended"), None);
        assert_eq!(Completed.worst(Unknown), Unknown);
        assert_eq!(Interrupted.worst(Unknown), Interrupted);
        assert_eq!(Interrupted.worst(NotEnded), NotEnded);
        assert_eq!(NotEnded.worst(Completed), NotEnded);
        assert!(Unknown.passes_gate() && !Interrupted.passes_gate() && !NotEnded.passes_gate());
    }

    #[test]
    fn not_run_is_its_own_status_and_fails_kola() {
        assert_eq!(Status::parse("not-run"), Some(Status::NotRun));
        assert_eq!(Status::NotRun.kola(), "FAIL");
        assert!(
            !Status::NotRun.is_failure(),
            "it did not run, so it did not fail"
        );
        let t = TestResult::not_run("cl.x", "qemu", "amd64", "why");
        assert_eq!(serde_json::to_value(&t).unwrap()["status"], "not-run");
        let r = RunReport::new(RunInfo::default(), vec![t]);
        assert_eq!(r.summary().not_run, 1);
        assert_eq!(r.overall(), Status::Fail);
        assert_eq!(r.incomplete().as_deref(), Some("1 test(s) not run: cl.x"));
        assert_eq!(
            RunReport::new(RunInfo::default(), vec![]).incomplete(),
            None
        );
    }
}
