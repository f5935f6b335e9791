//! JUnit XML (`reports/junit.xml`) with quick-junit, for Jenkins, GitLab and friends.
//!
//! One `<testsuite>` per (platform, arch), named `bogie.<platform>.<arch>`, with the run's
//! facts as properties; one `<testcase>` per test (classname = the test's family,
//! `cl` for `cl.basic`); subtests as extra testcases named `<test>/<sub>`.
//!
//! - fail: `<failure type="<class>" message="<one line>">excerpt</failure>`, earlier failed
//!   attempts as `<rerunFailure>`;
//! - flaky: a passing testcase with one `<flakyFailure>` per failed attempt;
//! - warn: a passing testcase with the failure in `<system-out>` and the property
//!   `bogie.warn=true`, so the gate stays green;
//! - skip: `<skipped message="<reason>"/>`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::*;
use crate::triage;

/// The file name under `<out>/reports/`.
pub const JUNIT_XML: &str = "junit.xml";

const WARN_HEADER: &str =
    "WARNING: this test failed, but it is denylisted as warn-only; it does not fail the run.";

/// The test's family, used as the JUnit classname: everything before the last `.` of the
/// test's name (`cl` for `cl.basic`, `coreos.ignition` for `coreos.ignition.once`); a name
/// without a dot is its own family. Subtests (`parent/sub`) belong to their parent's family.
pub fn family(name: &str) -> &str {
    let base = name.split('/').next().unwrap_or(name);
    match base.rfind('.') {
        Some(i) if i > 0 => &base[..i],
        _ => base,
    }
}

/// The one-line message of a failure: its message's first line, or else its signature.
pub(crate) fn one_line(f: &Failure) -> String {
    f.message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| f.signature.clone())
}

fn failed_rerun(a: &Attempt) -> TestRerun {
    let mut r = TestRerun::new(NonSuccessKind::Failure);
    r.set_timestamp(a.started.fixed_offset())
        .set_time(a.duration);
    if let Some(f) = &a.failure {
        r.set_type(f.class.as_str()).set_message(one_line(f));
        if !f.excerpt.is_empty() {
            r.set_description(f.excerpt.as_str());
        }
    }
    if !a.output.is_empty() {
        r.set_system_out(a.output.as_str());
    }
    r
}

fn subtest_name(parent: &str, sub: &str) -> String {
    if sub.contains('/') {
        sub.to_string()
    } else {
        format!("{parent}/{sub}")
    }
}

fn test_case(t: &TestResult) -> TestCase {
    let failed: Vec<&Attempt> = t.attempts.iter().filter(|a| !a.passed).collect();
    let last = t.attempts.last();
    let mut props: Vec<Property> = Vec::new();
    let mut system_out: Option<String> = None;
    let status = match t.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Flaky => {
            let mut s = TestCaseStatus::success();
            s.add_reruns(failed.iter().map(|a| failed_rerun(a)));
            s
        }
        Status::Skip => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(t.skip_reason.as_deref().unwrap_or("skipped"));
            s
        }
        Status::Fail => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let (main, earlier) = match failed.split_last() {
                Some((m, e)) => (Some(*m), e.to_vec()),
                None => (None, Vec::new()),
            };
            match main.and_then(|a| a.failure.as_ref()) {
                Some(f) => {
                    s.set_type(f.class.as_str()).set_message(one_line(f));
                    if !f.excerpt.is_empty() {
                        s.set_description(f.excerpt.as_str());
                    }
                    props.push(Property::new("bogie.signature", f.signature.as_str()));
                }
                None => {
                    s.set_message("failed");
                }
            }
            s.add_reruns(earlier.iter().map(|a| failed_rerun(a)));
            system_out = main.map(|a| a.output.clone()).filter(|o| !o.is_empty());
            s
        }
        Status::Warn => {
            props.push(Property::new("bogie.warn", "true"));
            let f = t.last_failure();
            let mut text = WARN_HEADER.to_string();
            if let Some(f) = f {
                props.push(Property::new("bogie.class", f.class.as_str()));
                props.push(Property::new("bogie.signature", f.signature.as_str()));
                text.push('\n');
                text.push_str(&one_line(f));
                if !f.excerpt.is_empty() {
                    text.push('\n');
                    text.push_str(&f.excerpt);
                }
            }
            system_out = Some(text);
            TestCaseStatus::success()
        }
    };
    let mut case = TestCase::new(t.name.as_str(), status);
    case.set_classname(family(&t.name)).set_time(t.duration());
    if let Some(first) = t.attempts.first() {
        case.set_timestamp(first.started.fixed_offset());
    }
    if system_out.is_none() && t.status == Status::Flaky {
        system_out = last.map(|a| a.output.clone()).filter(|o| !o.is_empty());
    }
    if let Some(out) = system_out {
        case.set_system_out(out);
    }
    case.add_properties(props);
    case
}

fn subtest_cases(t: &TestResult) -> Vec<TestCase> {
    let Some(last) = t.attempts.last() else {
        return Vec::new();
    };
    last.subtests
        .iter()
        .map(|sub| {
            let status = match sub.status {
                Status::Pass | Status::Flaky | Status::Warn => TestCaseStatus::success(),
                Status::Skip => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(if sub.message.is_empty() {
                        "skipped"
                    } else {
                        sub.message.as_str()
                    });
                    s
                }
                Status::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    let first = sub.message.lines().next().unwrap_or("").trim();
                    s.set_type(triage::classify(&sub.message).as_str())
                        .set_message(if first.is_empty() { "failed" } else { first });
                    if sub.message.contains('\n') {
                        s.set_description(sub.message.as_str());
                    }
                    s
                }
            };
            let mut case = TestCase::new(subtest_name(&t.name, &sub.name), status);
            case.set_classname(family(&t.name))
                .set_time(sub.duration)
                .add_property(Property::new("bogie.parent", t.name.as_str()));
            if sub.status == Status::Warn {
                case.set_system_out(format!("{WARN_HEADER}\n{}", sub.message));
                case.add_property(Property::new("bogie.warn", "true"));
            }
            case
        })
        .collect()
}

/// Builds the JUnit report of a run.
pub fn to_junit(report: &RunReport) -> Report {
    let mut groups: BTreeMap<(&str, &str), Vec<&TestResult>> = BTreeMap::new();
    for t in &report.tests {
        groups
            .entry((t.platform.as_str(), t.arch.as_str()))
            .or_default()
            .push(t);
    }
    let info = &report.info;
    let mut junit = Report::new("bogie");
    junit.set_timestamp(info.started.fixed_offset());
    let mut total = Duration::ZERO;
    for ((platform, arch), mut tests) in groups {
        tests.sort_by(|a, b| a.name.cmp(&b.name));
        let mut suite = TestSuite::new(format!("bogie.{platform}.{arch}"));
        suite.set_timestamp(info.started.fixed_offset());
        let mut props = vec![
            Property::new("platform", platform),
            Property::new("arch", arch),
            Property::new("version", info.version.as_str()),
            Property::new("run_id", info.id.as_str()),
            Property::new("distro", info.distro.as_str()),
        ];
        if !info.channel.is_empty() {
            props.push(Property::new("channel", info.channel.as_str()));
        }
        if !info.image.is_empty() {
            props.push(Property::new("image", info.image.as_str()));
        }
        if let Some(shard) = &info.shard {
            props.push(Property::new("shard", shard.as_str()));
        }
        suite.add_properties(props);
        let mut time = Duration::ZERO;
        for t in tests {
            time += t.duration();
            suite.add_test_case(test_case(t));
            suite.add_test_cases(subtest_cases(t));
        }
        suite.set_time(time);
        total += time;
        junit.add_test_suite(suite);
    }
    junit.set_time(total);
    junit
}

/// The JUnit XML text of a run.
pub fn junit_string(report: &RunReport) -> Result<String> {
    Ok(to_junit(report).to_string()?)
}

/// Writes the run as JUnit XML to `path` (atomically).
pub fn write_junit(report: &RunReport, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, junit_string(report)?)
}

/// Reads a JUnit file written by [`write_junit`] back into a report. Attempts, classes,
/// signatures, messages, excerpts and subtests come back; machine artifacts do not. Other
/// tools' JUnit files are read best-effort (platform and arch from the suite's properties,
/// else from a `bogie.<platform>.<arch>` suite name, else empty).
pub fn read_junit(path: impl AsRef<Path>) -> Result<RunReport> {
    let path = path.as_ref();
    let xml = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    parse_junit(&xml, path)
}

/// Parses JUnit XML text; `path` is only used in errors.
pub fn parse_junit(xml: &str, path: &Path) -> Result<RunReport> {
    let junit = Report::deserialize_from_str(xml).map_err(|source| ReportError::JunitRead {
        path: path.to_path_buf(),
        source,
    })?;
    let report_start = junit.timestamp.map(|t| t.with_timezone(&Utc));
    let mut info: Option<RunInfo> = None;
    let mut tests: Vec<TestResult> = Vec::new();
    for suite in &junit.test_suites {
        let props: HashMap<&str, &str> = suite
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        let (name_platform, name_arch) = suite
            .name
            .as_str()
            .strip_prefix("bogie.")
            .and_then(|rest| rest.rsplit_once('.'))
            .unwrap_or(("", ""));
        let platform = props.get("platform").copied().unwrap_or(name_platform);
        let arch = props.get("arch").copied().unwrap_or(name_arch);
        let started = suite
            .timestamp
            .map(|t| t.with_timezone(&Utc))
            .or(report_start)
            .unwrap_or_default();
        if info.is_none() {
            let get = |k: &str| props.get(k).copied().unwrap_or("").to_string();
            info = Some(RunInfo {
                id: get("run_id"),
                platform: platform.to_string(),
                arch: arch.to_string(),
                version: get("version"),
                distro: get("distro"),
                channel: get("channel"),
                image: get("image"),
                shard: props.get("shard").map(|s| s.to_string()),
                cmdline: Vec::new(),
                started,
            });
        }
        let first_new = tests.len();
        let mut subs: Vec<(String, SubtestResult)> = Vec::new();
        for case in &suite.test_cases {
            let cprops: HashMap<&str, &str> = case
                .properties
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str()))
                .collect();
            if let Some(parent) = cprops.get("bogie.parent") {
                subs.push((parent.to_string(), subtest_from_case(case, &cprops)));
            } else {
                tests.push(test_from_case(case, &cprops, platform, arch, started));
            }
        }
        for (parent, sub) in subs {
            let owner = tests[first_new..]
                .iter_mut()
                .find(|t| t.name == parent)
                .and_then(|t| t.attempts.last_mut());
            if let Some(attempt) = owner {
                attempt.subtests.push(sub);
            }
        }
    }
    let info = info.ok_or_else(|| ReportError::format(path, "no <testsuite> in JUnit file"))?;
    Ok(RunReport { info, tests })
}

fn text(s: &Option<quick_junit::XmlString>) -> String {
    s.as_ref()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default()
}

fn failure_of(ty: &Option<quick_junit::XmlString>, message: String, excerpt: String) -> Failure {
    let (guess, signature) = triage::triage(&message, &excerpt);
    let class = ty
        .as_ref()
        .and_then(|t| FailureClass::parse(t.as_str()))
        .unwrap_or(guess);
    Failure {
        class,
        signature,
        message,
        excerpt,
    }
}

fn attempt_from_rerun(number: u32, r: &TestRerun, fallback: DateTime<Utc>) -> Attempt {
    Attempt {
        number,
        passed: false,
        started: r
            .timestamp
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(fallback),
        duration: r.time.unwrap_or_default(),
        failure: Some(failure_of(&r.ty, text(&r.message), text(&r.description))),
        output: text(&r.system_out),
        machines: Vec::new(),
        subtests: Vec::new(),
    }
}

fn test_from_case(
    case: &TestCase,
    props: &HashMap<&str, &str>,
    platform: &str,
    arch: &str,
    run_started: DateTime<Utc>,
) -> TestResult {
    let started = case
        .timestamp
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(run_started);
    let total = case.time.unwrap_or_default();
    let output = text(&case.system_out);
    let mut result = TestResult {
        name: case.name.as_str().to_string(),
        status: Status::Pass,
        skip_reason: None,
        platform: platform.to_string(),
        arch: arch.to_string(),
        attempts: Vec::new(),
        tags: Vec::new(),
    };
    let last =
        |number: u32, passed: bool, used: Duration, failure: Option<Failure>, output| Attempt {
            number,
            passed,
            started,
            duration: total.saturating_sub(used),
            failure,
            output,
            machines: Vec::new(),
            subtests: Vec::new(),
        };
    match &case.status {
        TestCaseStatus::Success { flaky_runs } if props.get("bogie.warn") == Some(&"true") => {
            let _ = flaky_runs;
            result.status = Status::Warn;
            let body = output.strip_prefix(WARN_HEADER).unwrap_or(&output);
            let body = body.strip_prefix('\n').unwrap_or(body);
            let (message, excerpt) = body.split_once('\n').unwrap_or((body, ""));
            let mut f = failure_of(&None, message.to_string(), excerpt.to_string());
            if let Some(c) = props
                .get("bogie.class")
                .and_then(|c| FailureClass::parse(c))
            {
                f.class = c;
            }
            if let Some(s) = props.get("bogie.signature") {
                f.signature = s.to_string();
            }
            result
                .attempts
                .push(last(1, false, Duration::ZERO, Some(f), String::new()));
        }
        TestCaseStatus::Success { flaky_runs } => {
            let mut used = Duration::ZERO;
            for (i, r) in flaky_runs.iter().enumerate() {
                used += r.time.unwrap_or_default();
                result
                    .attempts
                    .push(attempt_from_rerun(i as u32 + 1, r, started));
            }
            result.status = if flaky_runs.is_empty() {
                Status::Pass
            } else {
                Status::Flaky
            };
            let n = result.attempts.len() as u32 + 1;
            result.attempts.push(last(n, true, used, None, output));
        }
        TestCaseStatus::NonSuccess {
            message,
            ty,
            description,
            reruns,
            ..
        } => {
            result.status = Status::Fail;
            let mut used = Duration::ZERO;
            for (i, r) in reruns.runs.iter().enumerate() {
                used += r.time.unwrap_or_default();
                result
                    .attempts
                    .push(attempt_from_rerun(i as u32 + 1, r, started));
            }
            let mut f = failure_of(ty, text(message), text(description));
            if let Some(s) = props.get("bogie.signature") {
                f.signature = s.to_string();
            }
            let n = result.attempts.len() as u32 + 1;
            result.attempts.push(last(n, false, used, Some(f), output));
        }
        TestCaseStatus::Skipped { message, .. } => {
            result.status = Status::Skip;
            result.skip_reason = Some(text(message));
        }
    }
    result
}

fn subtest_from_case(case: &TestCase, props: &HashMap<&str, &str>) -> SubtestResult {
    let (status, message) = match &case.status {
        TestCaseStatus::Success { .. } if props.get("bogie.warn") == Some(&"true") => {
            let out = text(&case.system_out);
            let msg = out
                .strip_prefix(WARN_HEADER)
                .map(|m| m.trim_start_matches('\n').to_string())
                .unwrap_or(out);
            (Status::Warn, msg)
        }
        TestCaseStatus::Success { .. } => (Status::Pass, String::new()),
        TestCaseStatus::Skipped { message, .. } => {
            let m = text(message);
            (Status::Skip, if m == "skipped" { String::new() } else { m })
        }
        TestCaseStatus::NonSuccess {
            message,
            description,
            ..
        } => {
            let d = text(description);
            (Status::Fail, if d.is_empty() { text(message) } else { d })
        }
    };
    SubtestResult {
        name: case.name.as_str().to_string(),
        status,
        duration: case.time.unwrap_or_default(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn count(hay: &str, needle: &str) -> usize {
        hay.matches(needle).count()
    }

    #[test]
    fn family_is_the_name_before_the_last_dot() {
        assert_eq!(family("cl.basic"), "cl");
        assert_eq!(family("coreos.ignition.once"), "coreos.ignition");
        assert_eq!(family("cl.etcd-member.discovery"), "cl.etcd-member");
        assert_eq!(family("cl.filesystem/deadlinks"), "cl");
        assert_eq!(family("packages"), "packages");
    }

    #[test]
    fn writes_the_expected_xml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports/junit.xml");
        let report = sample_report();
        write_junit(&report, &path).unwrap();
        let xml = fs::read_to_string(&path).unwrap();

        assert_eq!(count(&xml, "<testsuite "), 1);
        assert!(
            xml.contains(r#"<testsuite name="bogie.qemu.amd64" tests="11""#),
            "{xml}"
        );
        assert!(xml.contains(r#"<property name="platform" value="qemu"/>"#));
        assert!(xml.contains(r#"<property name="version" value="4799.0.0"/>"#));
        assert!(xml.contains(r#"<property name="run_id" value="run-a"/>"#));
        assert!(
            xml.contains(r#"<testcase name="cl.basic" classname="cl""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<testcase name="coreos.ignition.once" classname="coreos.ignition""#)
        );

        // flaky: one flakyFailure, no failure
        assert_eq!(count(&xml, "<flakyFailure"), 1);
        assert!(xml.contains(r#"<flakyFailure timestamp="#));
        assert!(xml.contains(r#"type="harness""#));
        // failed twice: the last attempt is the failure, the first a rerunFailure
        assert_eq!(count(&xml, "<rerunFailure"), 1);
        assert!(
            xml.contains(r#"<failure message="etcdctl get failed: exit status 1" type="etcd">"#),
            "{xml}"
        );
        assert!(xml.contains("etcdserver: request timed out"));
        // docker.base + its failed subtest
        assert_eq!(count(&xml, "<failure "), 3);
        assert!(xml.contains(r#"<testcase name="docker.base/pull" classname="docker""#));
        // skips: the test and one subtest
        assert!(xml.contains(r#"<skipped message="not supported on qemu-unpriv"/>"#));
        assert!(xml.contains(r#"<skipped message="not on this image"/>"#));
        assert!(xml.contains(r#"<testcase name="cl.filesystem/suid" classname="cl""#));
        // warn: no failure, a property and the warning on system-out
        let warn = &xml[xml
            .find(r#"<testcase name="coreos.selinux.enforce""#)
            .unwrap()..];
        let warn = &warn[..warn.find("</testcase>").unwrap()];
        assert!(
            warn.contains(r#"<property name="bogie.warn" value="true"/>"#),
            "{warn}"
        );
        assert!(
            warn.contains("<system-out>WARNING: this test failed"),
            "{warn}"
        );
        assert!(!warn.contains("<failure"));
        assert!(
            xml.contains(r#"failures="3""#),
            "warn is not counted as a failure: {xml}"
        );
    }

    #[test]
    fn one_suite_per_platform_and_arch() {
        let mut report = sample_report();
        let mut arm = report.tests[0].clone();
        arm.arch = "arm64".into();
        report.tests.push(arm);
        let xml = junit_string(&report).unwrap();
        assert!(xml.contains(r#"<testsuite name="bogie.qemu.amd64""#));
        assert!(xml.contains(r#"<testsuite name="bogie.qemu.arm64" tests="1""#));
        assert!(xml.contains(r#"<property name="arch" value="arm64"/>"#));
    }

    #[test]
    fn reads_back_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junit.xml");
        let report = sample_report();
        write_junit(&report, &path).unwrap();
        let back = read_junit(&path).unwrap();
        assert_eq!(back.info.id, "run-a");
        assert_eq!(back.info.version, "4799.0.0");
        assert_eq!(back.info.platform, "qemu");
        assert_eq!(back.info.arch, "amd64");
        assert_eq!(back.info.started, report.info.started);
        assert_eq!(back.tests.len(), report.tests.len());
        for orig in &report.tests {
            let got = back.tests.iter().find(|t| t.name == orig.name).unwrap();
            assert_eq!(got.status, orig.status, "{}", orig.name);
            assert_eq!(got.attempts.len(), orig.attempts.len(), "{}", orig.name);
            assert_eq!(got.skip_reason, orig.skip_reason);
            assert_eq!(got.platform, "qemu");
            assert_eq!(got.arch, "amd64");
            for (a, b) in got.attempts.iter().zip(&orig.attempts) {
                assert_eq!(a.passed, b.passed);
                assert_eq!(
                    a.failure
                        .as_ref()
                        .map(|f| (f.class, &f.signature, &f.excerpt)),
                    b.failure
                        .as_ref()
                        .map(|f| (f.class, &f.signature, &f.excerpt)),
                    "{}",
                    orig.name
                );
                assert_eq!(
                    a.duration.as_millis(),
                    b.duration.as_millis(),
                    "{}",
                    orig.name
                );
            }
            let subs = |t: &TestResult| {
                t.attempts.last().map(|a| {
                    a.subtests
                        .iter()
                        .map(|s| (s.name.clone(), s.status, s.message.clone()))
                        .collect::<Vec<_>>()
                })
            };
            assert_eq!(subs(got), subs(orig), "{}", orig.name);
        }
    }

    #[test]
    fn reads_foreign_junit() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="x" tests="2" failures="1" errors="0">
  <testsuite name="bogie.aws.arm64" tests="2" failures="1" errors="0">
    <testcase name="cl.basic" classname="cl" time="1.5"/>
    <testcase name="cl.internet" classname="cl" time="2">
      <failure message="Kernel panic - not syncing: Fatal exception">trace</failure>
    </testcase>
  </testsuite>
</testsuites>"#;
        let r = parse_junit(xml, Path::new("x.xml")).unwrap();
        assert_eq!(r.info.platform, "aws");
        assert_eq!(r.info.arch, "arm64");
        assert_eq!(r.tests[0].status, Status::Pass);
        assert_eq!(r.tests[0].duration(), Duration::from_millis(1500));
        assert_eq!(r.tests[1].status, Status::Fail);
        assert_eq!(
            r.tests[1].last_failure().unwrap().class,
            FailureClass::Kernel
        );
    }
}
