//! Baseline diff: what changed between two runs, keyed by (test, arch, platform).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};
use crate::junit::one_line;
use crate::model::*;

/// One (test, arch, platform) in a diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffEntry {
    /// The test's name.
    pub test: String,
    /// Its architecture.
    pub arch: String,
    /// Its platform.
    pub platform: String,
    /// Its status in the old run (None: not there).
    pub old: Option<Status>,
    /// Its status in the new run (None: not there).
    pub new: Option<Status>,
    /// The class of the new failure (or of the old one, for fixed tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// The signature of that failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The one-line message of that failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For tests still failing: the old signature, when the cause changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_signature: Option<String>,
}

/// The difference between two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDiff {
    /// The old (baseline) run's id.
    pub old_run: String,
    /// The new run's id.
    pub new_run: String,
    /// Failing now, not failing before — including new tests that fail.
    pub new_failures: Vec<DiffEntry>,
    /// Failing before, passing (or flaky) now.
    pub fixed: Vec<DiffEntry>,
    /// Failing in both.
    pub still_failing: Vec<DiffEntry>,
    /// Only in the new run.
    pub new_tests: Vec<DiffEntry>,
    /// Only in the old run.
    pub removed_tests: Vec<DiffEntry>,
    /// Selected by the new run, but without a result there (it did not end, or was
    /// interrupted): neither fixed nor removed, whatever they were before.
    #[serde(default)]
    pub not_run: Vec<DiffEntry>,
    /// How the new run ended.
    #[serde(default)]
    pub new_run_end: RunEnd,
}

type Key = (String, String, String);

fn index(r: &RunReport) -> BTreeMap<Key, &TestResult> {
    r.tests
        .iter()
        .map(|t| {
            let or = |own: &str, run: &str| {
                if own.is_empty() {
                    run.to_string()
                } else {
                    own.to_string()
                }
            };
            (
                (
                    t.name.clone(),
                    or(&t.arch, &r.info.arch),
                    or(&t.platform, &r.info.platform),
                ),
                t,
            )
        })
        .collect()
}

fn entry(key: &Key, old: Option<&TestResult>, new: Option<&TestResult>) -> DiffEntry {
    // The failure worth showing: the new one, else the old one.
    let f = new
        .and_then(|t| t.last_failure().filter(|_| t.status == Status::Fail))
        .or_else(|| old.and_then(|t| t.last_failure().filter(|_| t.status == Status::Fail)));
    DiffEntry {
        test: key.0.clone(),
        arch: key.1.clone(),
        platform: key.2.clone(),
        old: old.map(|t| t.status),
        new: new.map(|t| t.status),
        class: f.map(|f| f.class),
        signature: f.map(|f| f.signature.clone()),
        message: f.map(one_line),
        old_signature: None,
    }
}

/// Compares `new` against the baseline `old`. A test fails when its status is `fail`
/// (warn-only failures do not count); a test failing before that is skipped now is neither
/// fixed nor still failing; a test the new run selected but has no result for (`not-run`)
/// is only in [`RunDiff::not_run`].
pub fn diff_runs(old: &RunReport, new: &RunReport) -> RunDiff {
    let old_ix = index(old);
    let new_ix = index(new);
    let mut d = RunDiff {
        old_run: old.info.id.clone(),
        new_run: new.info.id.clone(),
        new_failures: Vec::new(),
        fixed: Vec::new(),
        still_failing: Vec::new(),
        new_tests: Vec::new(),
        removed_tests: Vec::new(),
        not_run: Vec::new(),
        new_run_end: new.end,
    };
    for (key, n) in &new_ix {
        let o = old_ix.get(key).copied();
        let mut e = entry(key, o, Some(n));
        if n.status == Status::NotRun {
            e.class = None;
            e.signature = None;
            e.message = n.skip_reason.clone();
            d.not_run.push(e);
            continue;
        }
        let new_fail = n.status == Status::Fail;
        match o {
            None => {
                if new_fail {
                    d.new_failures.push(e.clone());
                }
                d.new_tests.push(e);
            }
            Some(o) => {
                let old_fail = o.status == Status::Fail;
                match (old_fail, new_fail) {
                    (false, true) => d.new_failures.push(e),
                    (true, true) => {
                        let old_sig = o.last_failure().map(|f| f.signature.clone());
                        if old_sig != e.signature {
                            e.old_signature = old_sig;
                        }
                        d.still_failing.push(e);
                    }
                    (true, false) if matches!(n.status, Status::Pass | Status::Flaky) => {
                        d.fixed.push(entry(key, Some(o), Some(n)))
                    }
                    _ => {}
                }
            }
        }
    }
    for (key, o) in &old_ix {
        if !new_ix.contains_key(key) {
            d.removed_tests.push(entry(key, Some(o), None));
        }
    }
    d
}

fn status_str(s: Option<Status>) -> &'static str {
    s.map_or("-", Status::as_str)
}

impl RunDiff {
    /// Whether anything fails now that did not before.
    pub fn has_new_failures(&self) -> bool {
        !self.new_failures.is_empty()
    }

    /// Whether the new run fails the gate against the baseline: new failures, tests without
    /// a result, or a new run that did not end or was interrupted.
    pub fn fails_gate(&self) -> bool {
        self.has_new_failures() || !self.not_run.is_empty() || !self.new_run_end.passes_gate()
    }

    /// A plain-text rendering for the terminal.
    pub fn render_text(&self) -> String {
        let mut out = format!("bogie diff: {} -> {}\n", self.old_run, self.new_run);
        if let Some(p) = self.new_run_end.problem() {
            let _ = writeln!(out, "the new run {p}: it cannot pass the gate");
        }
        let sections: [(&str, &Vec<DiffEntry>); 6] = [
            ("New failures", &self.new_failures),
            ("Not run", &self.not_run),
            ("Fixed", &self.fixed),
            ("Still failing", &self.still_failing),
            ("New tests", &self.new_tests),
            ("Removed tests", &self.removed_tests),
        ];
        for (title, list) in sections {
            let _ = writeln!(out, "\n{title} ({}):", list.len());
            if list.is_empty() {
                out.push_str("  none\n");
            }
            for e in list {
                let _ = write!(
                    out,
                    "  {:<14} {}  [{} -> {}]",
                    format!("{}/{}", e.arch, e.platform),
                    e.test,
                    status_str(e.old),
                    status_str(e.new)
                );
                match (e.class, &e.message) {
                    (Some(c), Some(m)) => {
                        let _ = write!(out, "  {c}: {m}");
                    }
                    (None, Some(m)) if e.new == Some(Status::NotRun) => {
                        let _ = write!(out, "  {m}");
                    }
                    _ => {}
                }
                out.push('\n');
                if let Some(old) = &e.old_signature {
                    let _ = writeln!(out, "  {:<14} cause changed, was: {old}", "");
                }
            }
        }
        let _ = writeln!(
            out,
            "\n{} new failure(s), {} not run, {} fixed, {} still failing, {} new test(s), {} removed",
            self.new_failures.len(),
            self.not_run.len(),
            self.fixed.len(),
            self.still_failing.len(),
            self.new_tests.len(),
            self.removed_tests.len()
        );
        out
    }

    /// Pretty JSON of the whole diff.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(ReportError::JsonSerialize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn runs() -> (RunReport, RunReport) {
        let old = sample_report();
        let mut new = sample_report();
        new.info.id = "run-b".into();
        // cl.basic regresses; docker.base is fixed; etcd still fails, with a new cause.
        new.tests[0] = test(
            "cl.basic",
            Status::Fail,
            vec![failed(1, 3.0, "ssh: handshake failed", "")],
        );
        new.tests[6] = test("docker.base", Status::Pass, vec![passed(1, 3.0)]);
        new.tests[1].attempts[1] = failed(2, 1.0, "etcdserver: leader changed", "");
        // cl.filesystem removed; a new failing test and a new passing one.
        new.tests.retain(|t| t.name != "cl.filesystem");
        new.tests.push(test(
            "cl.new.fails",
            Status::Fail,
            vec![failed(1, 1.0, "expected 1 got 2", "")],
        ));
        new.tests
            .push(test("cl.new.passes", Status::Pass, vec![passed(1, 1.0)]));
        // Same name on another arch is another key.
        let mut arm = test("cl.basic", Status::Pass, vec![passed(1, 1.0)]);
        arm.arch = "arm64".into();
        new.tests.push(arm);
        (old, new)
    }

    #[test]
    fn sorts_changes_into_buckets() {
        let (old, new) = runs();
        let d = diff_runs(&old, &new);
        let names = |v: &Vec<DiffEntry>| {
            v.iter()
                .map(|e| format!("{}@{}", e.test, e.arch))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&d.new_failures),
            ["cl.basic@amd64", "cl.new.fails@amd64"]
        );
        assert_eq!(names(&d.fixed), ["docker.base@amd64"]);
        assert_eq!(names(&d.still_failing), ["cl.etcd-member.discovery@amd64"]);
        assert_eq!(
            names(&d.new_tests),
            [
                "cl.basic@arm64",
                "cl.new.fails@amd64",
                "cl.new.passes@amd64"
            ]
        );
        assert_eq!(names(&d.removed_tests), ["cl.filesystem@amd64"]);
        assert!(d.has_new_failures());

        let basic = &d.new_failures[0];
        assert_eq!(
            (basic.old, basic.new),
            (Some(Status::Pass), Some(Status::Fail))
        );
        assert_eq!(basic.class, Some(FailureClass::Harness));
        let fixed = &d.fixed[0];
        assert_eq!(
            fixed.class,
            Some(FailureClass::Docker),
            "fixed shows the old failure"
        );
        let still = &d.still_failing[0];
        assert_eq!(
            still.signature.as_deref(),
            Some("etcdserver: leader changed")
        );
        assert_eq!(
            still.old_signature.as_deref(),
            Some("etcdctl get failed: exit status <N>")
        );
    }

    #[test]
    fn a_lost_failing_test_of_a_killed_run_is_not_run_not_removed() {
        let old = sample_report();
        // Killed before docker.base (failing in the old run) reported.
        let mut new = killed_report("docker.base");
        new.info.id = "run-b".into();
        let d = diff_runs(&old, &new);
        assert!(!d.has_new_failures());
        assert!(d.fails_gate());
        assert!(d.removed_tests.is_empty() && d.fixed.is_empty());
        assert_eq!(d.not_run.len(), 1);
        let e = &d.not_run[0];
        assert_eq!(e.test, "docker.base");
        assert_eq!((e.old, e.new), (Some(Status::Fail), Some(Status::NotRun)));
        assert!(
            d.still_failing.iter().all(|e| e.test != "docker.base"),
            "{d:?}"
        );
        let text = d.render_text();
        assert!(
            text.contains("the new run did not end (killed or crashed, or still running)"),
            "{text}"
        );
        assert!(
            text.contains(
                "Not run (1):\n  amd64/qemu     docker.base  [fail -> not-run]  no result: the run did not end\n"
            ),
            "{text}"
        );
        assert!(text.contains("0 new failure(s), 1 not run,"), "{text}");

        // An interrupted run with every result still fails the gate; a completed one not.
        let mut interrupted = sample_report();
        interrupted.end = RunEnd::Interrupted;
        assert!(diff_runs(&old, &interrupted).fails_gate());
        assert!(!diff_runs(&old, &sample_report()).fails_gate());
    }

    #[test]
    fn identical_runs_differ_in_nothing() {
        let r = sample_report();
        let d = diff_runs(&r, &r);
        assert!(!d.has_new_failures());
        assert!(d.fixed.is_empty() && d.new_tests.is_empty() && d.removed_tests.is_empty());
        assert_eq!(d.still_failing.len(), 2);
        assert!(d.still_failing.iter().all(|e| e.old_signature.is_none()));
    }

    #[test]
    fn renders_text_and_json() {
        let (old, new) = runs();
        let d = diff_runs(&old, &new);
        let text = d.render_text();
        assert!(text.starts_with("bogie diff: run-a -> run-b\n"));
        assert!(text.contains("\nNew failures (2):\n  amd64/qemu     cl.basic  [pass -> fail]  harness: ssh: handshake failed\n"), "{text}");
        assert!(text.contains("cause changed, was: etcdctl get failed: exit status <N>"));
        assert!(
            text.contains("Removed tests (1):\n  amd64/qemu     cl.filesystem  [pass -> -]"),
            "{text}"
        );
        assert!(text.ends_with(
            "2 new failure(s), 0 not run, 1 fixed, 1 still failing, 3 new test(s), 1 removed\n"
        ));
        let back: RunDiff = serde_json::from_str(&d.to_json().unwrap()).unwrap();
        assert_eq!(back, d);
        let v: serde_json::Value = serde_json::from_str(&d.to_json().unwrap()).unwrap();
        assert_eq!(v["new_failures"][0]["new"], "fail");
    }
}
