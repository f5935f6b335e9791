//! JUnit XML (`reports/junit.xml`) for Jenkins, GitLab and friends. The document is valid
//! under the Jenkins xunit plugin's `junit-10.xsd` (both versions in use: with and without
//! the rerun elements), and its counts are bogie's summary line's: one `<testcase>` per test.
//!
//! One `<testsuite>` per (platform, arch), named `bogie.<platform>.<arch>`, with the run's
//! facts as properties; one `<testcase>` per test (classname = the test's family, `cl` for
//! `cl.basic`). `tests`, `failures`, `skipped` and `errors` count tests as the summary line
//! does (failed, skipped, not run); `<testsuites>` sums them.
//!
//! - fail: `<failure type="<class>" message="<one line>">excerpt</failure>`;
//! - flaky: a passing testcase;
//! - warn: a passing testcase with the failure in `<system-out>`, so the gate stays green;
//! - skip: `<skipped message="<reason>"/>`;
//! - not run: `<error type="not-run" message="<why>"/>`.
//!
//! A failed or flaky test's last attempt's output is the testcase's `<system-out>`. bogie's extras fit the schema
//! as text and suite properties, so every consumer reads them and bogie reads them back:
//! - `<system-err>` lists the earlier failed attempts and the subtests, one line each
//!   (`--- attempt 1 of 2 failed after 61.000s [etcd]: <message>`,
//!   `--- subtest cl.filesystem/suid skip after 0.000s`), each followed by its excerpt or
//!   message indented by four spaces;
//! - suite properties `bogie.status:<test>` (flaky, warn, not-run),
//!   `bogie.signature:<test>` and `bogie.class:<test>` (the last failure's), `bogie.end`
//!   (how the run ended), and `bogie.machines:<test>`: the last attempt's machines and how
//!   each started (`m3-1a2b shared after cl.basic; ...`: which tests shared a machine),
//!   for people only (not read back).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::*;
use crate::triage;

/// The file name under `<out>/reports/`.
pub const JUNIT_XML: &str = "junit.xml";

const WARN_HEADER: &str =
    "WARNING: this test failed, but it is denylisted as warn-only; it does not fail the run.";

/// The `type` of the `<error>` of a test not run.
const NOT_RUN_TYPE: &str = "not-run";

/// The start of a `<system-err>` line about an earlier attempt.
const ATTEMPT_MARK: &str = "--- attempt ";
/// The start of a `<system-err>` line about a subtest.
const SUBTEST_MARK: &str = "--- subtest ";
/// The indent of the text under such a line.
const DETAIL_INDENT: &str = "    ";

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

fn subtest_name(parent: &str, sub: &str) -> String {
    if sub.contains('/') {
        sub.to_string()
    } else {
        format!("{parent}/{sub}")
    }
}

/// Text XML 1.0 can hold: control characters other than tab, newline and carriage return
/// (an ANSI escape on a console line, say) cannot be in a document even as character
/// references, so they are written as `\xHH`. In attributes, line breaks and tabs become
/// spaces (as XML's attribute-value normalisation would make them anyway).
fn xml_chars(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' | '\t' | '\r' if attr => out.push(' '),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Seconds with millisecond precision, as the schema's `SUREFIRE_TIME` allows.
fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// An XML element being written: `<name attr="v"...` then children or `/>`.
struct Element<'a> {
    out: &'a mut String,
    name: &'static str,
    indent: usize,
    open: bool,
}

impl<'a> Element<'a> {
    fn start(out: &'a mut String, indent: usize, name: &'static str) -> Self {
        let _ = write!(out, "{:indent$}<{name}", "");
        Element {
            out,
            name,
            indent,
            open: false,
        }
    }

    fn attr(self, name: &str, value: &str) -> Self {
        let _ = write!(self.out, " {name}=\"{}\"", xml_chars(value, true));
        self
    }

    /// Ends the start tag (once) so children can follow.
    fn body(&mut self) -> &mut String {
        if !self.open {
            self.out.push_str(">\n");
            self.open = true;
        }
        self.out
    }

    /// Ends the element with text content and no child elements.
    fn text(self, text: &str) {
        let _ = writeln!(self.out, ">{}</{}>", xml_chars(text, false), self.name);
    }

    fn end(self) {
        if self.open {
            let _ = writeln!(
                self.out,
                "{:indent$}</{}>",
                "",
                self.name,
                indent = self.indent
            );
        } else {
            self.out.push_str("/>\n");
        }
    }
}

/// Counts of one suite, as the summary line counts.
#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
    time: Duration,
}

impl Counts {
    fn add(&mut self, t: &TestResult) {
        self.tests += 1;
        self.time += t.duration();
        match t.status {
            Status::Fail => self.failures += 1,
            Status::NotRun => self.errors += 1,
            Status::Skip => self.skipped += 1,
            Status::Pass | Status::Flaky | Status::Warn => {}
        }
    }
}

/// The `<system-err>` text of a test: its earlier failed attempts and its subtests.
fn extras_text(t: &TestResult) -> String {
    let mut out = String::new();
    let failed: Vec<&Attempt> = t.attempts.iter().filter(|a| !a.passed).collect();
    if t.status == Status::Flaky {
        let _ = writeln!(
            out,
            "flaky: failed {} of {} attempts, then passed",
            failed.len(),
            t.attempts.len()
        );
    }
    // The last failed attempt of a failed (or warned) test is the testcase's own failure.
    let earlier = match t.status {
        Status::Fail | Status::Warn => failed.split_last().map_or(&[][..], |(_, e)| e),
        _ => &failed[..],
    };
    let total = t.attempts.len();
    for a in earlier {
        let _ = write!(
            out,
            "{ATTEMPT_MARK}{} of {total} failed after {}s",
            a.number,
            secs(a.duration)
        );
        match &a.failure {
            Some(f) => {
                let _ = writeln!(out, " [{}]: {}", f.class, one_line(f));
                push_detail(&mut out, &f.excerpt);
            }
            None => out.push('\n'),
        }
    }
    if let Some(last) = t.attempts.last() {
        for sub in &last.subtests {
            let _ = writeln!(
                out,
                "{SUBTEST_MARK}{} {} after {}s",
                subtest_name(&t.name, &sub.name),
                sub.status.as_str(),
                secs(sub.duration)
            );
            push_detail(&mut out, &sub.message);
        }
    }
    out
}

fn push_detail(out: &mut String, text: &str) {
    for line in text.trim_end().lines() {
        out.push_str(DETAIL_INDENT);
        out.push_str(line);
        out.push('\n');
    }
}

fn write_case(out: &mut String, t: &TestResult) {
    let mut case = Element::start(out, 4, "testcase")
        .attr("name", &t.name)
        .attr("classname", family(&t.name))
        .attr("time", &secs(t.duration()));
    // A failed or flaky test's last attempt's output (a passing one's is not kept).
    let mut system_out = match t.status {
        Status::Fail | Status::Flaky => t.attempts.last().map(|a| a.output.clone()),
        _ => None,
    }
    .unwrap_or_default();
    match t.status {
        Status::Pass | Status::Flaky => {}
        Status::Skip => {
            Element::start(case.body(), 6, "skipped")
                .attr("message", t.skip_reason.as_deref().unwrap_or("skipped"))
                .end();
        }
        Status::NotRun => {
            Element::start(case.body(), 6, "error")
                .attr("type", NOT_RUN_TYPE)
                .attr("message", t.skip_reason.as_deref().unwrap_or("not run"))
                .end();
        }
        Status::Fail => {
            let failure = Element::start(case.body(), 6, "failure");
            match t.last_failure() {
                Some(f) => {
                    let failure = failure
                        .attr("type", f.class.as_str())
                        .attr("message", &one_line(f));
                    if f.excerpt.is_empty() {
                        failure.end();
                    } else {
                        failure.text(&f.excerpt);
                    }
                }
                None => failure.attr("message", "failed").end(),
            }
        }
        Status::Warn => {
            let mut text = WARN_HEADER.to_string();
            if let Some(f) = t.last_failure() {
                text.push('\n');
                text.push_str(&one_line(f));
                if !f.excerpt.is_empty() {
                    text.push('\n');
                    text.push_str(&f.excerpt);
                }
            }
            system_out = text;
        }
    }
    if !system_out.is_empty() {
        Element::start(case.body(), 6, "system-out").text(&system_out);
    }
    let extras = extras_text(t);
    if !extras.is_empty() {
        Element::start(case.body(), 6, "system-err").text(&extras);
    }
    case.end();
}

/// The per-test suite properties of `t` (see the module's docs).
fn test_properties(t: &TestResult) -> Vec<(String, String)> {
    let mut props = Vec::new();
    if matches!(t.status, Status::Flaky | Status::Warn | Status::NotRun) {
        props.push((format!("bogie.status:{}", t.name), t.status.as_str().into()));
    }
    // The machines of the last attempt and how each started (which tests shared one).
    let machines: Vec<String> = t
        .attempts
        .last()
        .map(|a| a.machines.iter().filter_map(|m| m.start_line()).collect())
        .unwrap_or_default();
    if !machines.is_empty() {
        props.push((format!("bogie.machines:{}", t.name), machines.join("; ")));
    }
    if matches!(t.status, Status::Fail | Status::Warn) {
        if let Some(f) = t.last_failure() {
            props.push((format!("bogie.signature:{}", t.name), f.signature.clone()));
            props.push((format!("bogie.class:{}", t.name), f.class.as_str().into()));
        }
    }
    props
}

/// The JUnit XML text of a run (see the module's docs).
pub fn junit_string(report: &RunReport) -> Result<String> {
    let mut groups: BTreeMap<(&str, &str), Vec<&TestResult>> = BTreeMap::new();
    for t in &report.tests {
        groups
            .entry((t.platform.as_str(), t.arch.as_str()))
            .or_default()
            .push(t);
    }
    let info = &report.info;
    let timestamp = info.started.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
    let mut suites = String::new();
    let mut total = Counts::default();
    for ((platform, arch), mut tests) in groups {
        tests.sort_by(|a, b| a.name.cmp(&b.name));
        let mut counts = Counts::default();
        for t in &tests {
            counts.add(t);
        }
        let mut props: Vec<(String, String)> = vec![
            ("platform".into(), platform.into()),
            ("arch".into(), arch.into()),
            ("version".into(), info.version.clone()),
            ("run_id".into(), info.id.clone()),
            ("distro".into(), info.distro.clone()),
        ];
        for (k, v) in [("channel", &info.channel), ("image", &info.image)] {
            if !v.is_empty() {
                props.push((k.into(), v.clone()));
            }
        }
        if let Some(shard) = &info.shard {
            props.push(("shard".into(), shard.clone()));
        }
        props.push(("bogie.end".into(), report.end.as_str().into()));
        props.extend(tests.iter().flat_map(|t| test_properties(t)));

        let mut suite = Element::start(&mut suites, 2, "testsuite")
            .attr("name", &format!("bogie.{platform}.{arch}"))
            .attr("tests", &counts.tests.to_string())
            .attr("failures", &counts.failures.to_string())
            .attr("errors", &counts.errors.to_string())
            .attr("skipped", &counts.skipped.to_string())
            .attr("time", &secs(counts.time))
            .attr("timestamp", &timestamp);
        let mut properties = Element::start(suite.body(), 4, "properties");
        for (k, v) in &props {
            Element::start(properties.body(), 6, "property")
                .attr("name", k)
                .attr("value", v)
                .end();
        }
        properties.end();
        for t in tests {
            write_case(suite.body(), t);
        }
        suite.end();
        total.tests += counts.tests;
        total.failures += counts.failures;
        total.errors += counts.errors;
        total.time += counts.time;
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut root = Element::start(&mut out, 0, "testsuites")
        .attr("name", "bogie")
        .attr("tests", &total.tests.to_string())
        .attr("failures", &total.failures.to_string())
        .attr("errors", &total.errors.to_string())
        .attr("time", &secs(total.time));
    root.body().push_str(&suites);
    root.end();
    Ok(out)
}

/// Writes the run as JUnit XML to `path` (atomically).
pub fn write_junit(report: &RunReport, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, junit_string(report)?)
}

/// Reads a JUnit file written by [`write_junit`] back into a report. Statuses, attempts,
/// classes, signatures, messages, excerpts, subtests and how the run ended come back; machine
/// artifacts and the start of each attempt do not. Files of an older bogie (per-testcase
/// properties, subtests as testcases, rerun elements) and other tools' JUnit files are read
/// best-effort (platform and arch from the suite's properties, else from a
/// `bogie.<platform>.<arch>` suite name, else empty).
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
    let mut end = RunEnd::Completed;
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
        if let Some(e) = props.get("bogie.end").and_then(|e| RunEnd::parse(e)) {
            end = end.worst(e);
        }
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
            let name = case.name.as_str();
            // An older bogie's per-testcase properties, then this one's suite properties.
            let mut cprops: HashMap<String, &str> = case
                .properties
                .iter()
                .map(|p| (p.name.as_str().to_string(), p.value.as_str()))
                .collect();
            for key in ["status", "signature", "class"] {
                if let Some(v) = props.get(format!("bogie.{key}:{name}").as_str()) {
                    cprops.insert(format!("bogie.{key}"), v);
                }
            }
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
    Ok(RunReport { info, tests, end })
}

fn text(s: &Option<quick_junit::XmlString>) -> String {
    s.as_ref()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default()
}

fn failure_of(ty: Option<&str>, message: String, excerpt: String) -> Failure {
    let (guess, signature) = triage::triage(&message, &excerpt);
    let class = ty.and_then(FailureClass::parse).unwrap_or(guess);
    Failure {
        class,
        signature,
        message,
        excerpt,
    }
}

/// Another tool's (or an older bogie's) `<flakyFailure>`/`<rerunFailure>`.
fn attempt_from_rerun(number: u32, r: &TestRerun, fallback: DateTime<Utc>) -> Attempt {
    Attempt {
        number,
        passed: false,
        started: r
            .timestamp
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(fallback),
        duration: r.time.unwrap_or_default(),
        failure: Some(failure_of(
            r.ty.as_ref().map(|t| t.as_str()),
            text(&r.message),
            text(&r.description),
        )),
        output: text(&r.system_out),
        machines: Vec::new(),
        subtests: Vec::new(),
    }
}

/// What a `<system-err>` written by [`write_junit`] lists.
#[derive(Default)]
struct Extras {
    attempts: Vec<Attempt>,
    subtests: Vec<SubtestResult>,
}

/// `61.000s` → 61 s.
fn parse_secs(s: &str) -> Duration {
    s.trim()
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}

/// Parses the attempt and subtest lines of [`extras_text`]; anything else is ignored.
fn parse_extras(text: &str, started: DateTime<Utc>) -> Extras {
    enum Last {
        None,
        Attempt,
        Subtest,
    }
    let mut x = Extras::default();
    let mut last = Last::None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(ATTEMPT_MARK) {
            // `1 of 2 failed after 61.000s [etcd]: message`
            let (head, message) = rest.split_once("]: ").unwrap_or((rest, ""));
            let (head, class) = head.split_once(" [").unwrap_or((head, ""));
            let words: Vec<&str> = head.split_whitespace().collect();
            let number = words.first().and_then(|n| n.parse().ok()).unwrap_or(1);
            let duration = words
                .iter()
                .position(|w| *w == "after")
                .and_then(|i| words.get(i + 1))
                .map_or(Duration::ZERO, |s| parse_secs(s));
            x.attempts.push(Attempt {
                number,
                passed: false,
                started,
                duration,
                failure: Some(failure_of(Some(class), message.to_string(), String::new())),
                output: String::new(),
                machines: Vec::new(),
                subtests: Vec::new(),
            });
            last = Last::Attempt;
        } else if let Some(rest) = line.strip_prefix(SUBTEST_MARK) {
            // `cl.filesystem/suid skip after 0.000s`
            let words: Vec<&str> = rest.rsplitn(4, ' ').collect();
            let (name, status, duration) = match words.as_slice() {
                [d, "after", st, name] => (*name, Status::parse(st), parse_secs(d)),
                _ => (rest, None, Duration::ZERO),
            };
            x.subtests.push(SubtestResult {
                name: name.to_string(),
                status: status.unwrap_or(Status::Pass),
                duration,
                message: String::new(),
            });
            last = Last::Subtest;
        } else if let Some(detail) = line.strip_prefix(DETAIL_INDENT) {
            let target = match last {
                Last::Attempt => x
                    .attempts
                    .last_mut()
                    .and_then(|a| a.failure.as_mut())
                    .map(|f| &mut f.excerpt),
                Last::Subtest => x.subtests.last_mut().map(|s| &mut s.message),
                Last::None => None,
            };
            if let Some(t) = target {
                if !t.is_empty() {
                    t.push('\n');
                }
                t.push_str(detail);
            }
        }
    }
    // The signature comes from the message and the excerpt together.
    for f in x.attempts.iter_mut().filter_map(|a| a.failure.as_mut()) {
        let class = f.class;
        *f = failure_of(
            Some(class.as_str()),
            std::mem::take(&mut f.message),
            std::mem::take(&mut f.excerpt),
        );
    }
    x
}

fn test_from_case(
    case: &TestCase,
    props: &HashMap<String, &str>,
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
    let extras = parse_extras(&text(&case.system_err), started);
    let prop = |k: &str| props.get(k).copied();
    let status_prop = prop("bogie.status")
        .and_then(Status::parse)
        .or_else(|| (prop("bogie.warn") == Some("true")).then_some(Status::Warn));
    let mut result = TestResult {
        name: case.name.as_str().to_string(),
        status: Status::Pass,
        skip_reason: None,
        platform: platform.to_string(),
        arch: arch.to_string(),
        attempts: extras.attempts,
        tags: Vec::new(),
    };
    let with_props = |mut f: Failure| {
        if let Some(c) = prop("bogie.class").and_then(FailureClass::parse) {
            f.class = c;
        }
        if let Some(s) = prop("bogie.signature") {
            f.signature = s.to_string();
        }
        f
    };
    // The last attempt: what the testcase itself says, in the time the others left.
    let last = |attempts: &[Attempt], passed: bool, failure: Option<Failure>, output| {
        let used: Duration = attempts.iter().map(|a| a.duration).sum();
        Attempt {
            number: attempts.last().map_or(1, |a| a.number + 1),
            passed,
            started,
            duration: total.saturating_sub(used),
            failure,
            output,
            machines: Vec::new(),
            subtests: extras.subtests.clone(),
        }
    };
    match &case.status {
        TestCaseStatus::Success { .. } if status_prop == Some(Status::Warn) => {
            result.status = Status::Warn;
            let body = output.strip_prefix(WARN_HEADER).unwrap_or(&output);
            let body = body.strip_prefix('\n').unwrap_or(body);
            let (message, excerpt) = body.split_once('\n').unwrap_or((body, ""));
            let f = with_props(failure_of(None, message.to_string(), excerpt.to_string()));
            let a = last(&result.attempts, false, Some(f), String::new());
            result.attempts.push(a);
        }
        TestCaseStatus::Success { flaky_runs } => {
            for r in flaky_runs {
                let n = result.attempts.len() as u32 + 1;
                result.attempts.push(attempt_from_rerun(n, r, started));
            }
            result.status = if result.attempts.is_empty() && status_prop != Some(Status::Flaky) {
                Status::Pass
            } else {
                Status::Flaky
            };
            let a = last(&result.attempts, true, None, output);
            result.attempts.push(a);
        }
        TestCaseStatus::NonSuccess {
            kind, message, ty, ..
        } if *kind == NonSuccessKind::Error
            && (status_prop == Some(Status::NotRun)
                || ty.as_ref().is_some_and(|t| t.as_str() == NOT_RUN_TYPE)) =>
        {
            result.status = Status::NotRun;
            result.skip_reason = Some(text(message));
            result.attempts.clear();
        }
        TestCaseStatus::NonSuccess {
            message,
            ty,
            description,
            reruns,
            ..
        } => {
            result.status = Status::Fail;
            for r in &reruns.runs {
                let n = result.attempts.len() as u32 + 1;
                result.attempts.push(attempt_from_rerun(n, r, started));
            }
            let f = with_props(failure_of(
                ty.as_ref().map(|t| t.as_str()),
                text(message),
                text(description),
            ));
            let a = last(&result.attempts, false, Some(f), output);
            result.attempts.push(a);
        }
        TestCaseStatus::Skipped { message, .. } => {
            result.status = Status::Skip;
            result.skip_reason = Some(text(message));
            result.attempts.clear();
        }
    }
    result
}

/// An older bogie's subtest testcase (property `bogie.parent`).
fn subtest_from_case(case: &TestCase, props: &HashMap<String, &str>) -> SubtestResult {
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

    /// The text of the testcase named `name`.
    fn case<'a>(xml: &'a str, name: &str) -> &'a str {
        let start = xml
            .find(&format!("<testcase name=\"{name}\""))
            .unwrap_or_else(|| panic!("no testcase {name}: {xml}"));
        let rest = &xml[start..];
        let first_line = &rest[..rest.find('\n').unwrap()];
        if first_line.ends_with("/>") {
            first_line
        } else {
            &rest[..rest.find("</testcase>").unwrap() + "</testcase>".len()]
        }
    }

    #[test]
    fn writes_the_expected_xml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports/junit.xml");
        let report = sample_report();
        write_junit(&report, &path).unwrap();
        let xml = fs::read_to_string(&path).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"bogie\" tests=\"7\" failures=\"2\" errors=\"0\" time=\""), "{xml}");

        // One testcase per test: the counts are the summary line's (7 tests, 2 failed, 1
        // skipped); subtests are not counted as tests.
        assert_eq!(count(&xml, "<testsuite "), 1);
        assert_eq!(count(&xml, "<testcase "), 7, "{xml}");
        assert!(
            xml.contains(r#"<testsuite name="bogie.qemu.amd64" tests="7" failures="2" errors="0" skipped="1" time=""#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"timestamp="2026-11-21T02:47:01.000+00:00">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<property name="platform" value="qemu"/>"#));
        assert!(xml.contains(r#"<property name="version" value="4799.0.0"/>"#));
        assert!(xml.contains(r#"<property name="run_id" value="run-a"/>"#));
        assert!(xml.contains(r#"<property name="bogie.end" value="completed"/>"#));
        assert!(xml.contains(r#"<testcase name="cl.basic" classname="cl" time="93.500"/>"#));

        // None of what junit-10.xsd refuses.
        for bad in [
            "<flakyFailure",
            "<rerunFailure",
            "<testcase name=\"cl.filesystem/",
        ] {
            assert!(!xml.contains(bad), "{bad}: {xml}");
        }
        let root = &xml[..xml.find("<testsuite ").unwrap()];
        assert!(
            !root.contains("skipped=") && !root.contains("timestamp="),
            "{root}"
        );
        for name in report.tests.iter().map(|t| t.name.as_str()) {
            let c = case(&xml, name);
            let tag = &c[..c.find('>').unwrap()];
            assert!(!tag.contains("timestamp="), "{tag}");
            assert!(!c.contains("<properties>"), "{c}");
        }

        // flaky: a passing testcase, its failed attempt on system-err, its status a property.
        let flaky = case(&xml, "coreos.ignition.once");
        assert!(!flaky.contains("<failure"), "{flaky}");
        assert!(
            flaky.contains("<system-err>flaky: failed 1 of 2 attempts, then passed\n--- attempt 1 of 2 failed after 300.000s [harness]: ssh: waiting for 127.0.0.1:34567"),
            "{flaky}"
        );
        assert!(
            xml.contains(r#"<property name="bogie.status:coreos.ignition.once" value="flaky"/>"#)
        );

        // failed twice: the last attempt is the failure, the first one on system-err.
        let etcd = case(&xml, "cl.etcd-member.discovery");
        assert!(
            etcd.contains(r#"<failure type="etcd" message="etcdctl get failed: exit status 1">Nov 21 02:47:01 localhost etcd-member[812]: {"level":"error","msg":"etcdserver: request timed out"}"#),
            "{etcd}"
        );
        assert!(
            etcd.contains(
                "<system-out>harness.go:88: etcdctl get failed: exit status 1</system-out>"
            ),
            "{etcd}"
        );
        assert!(
            etcd.contains("<system-err>--- attempt 1 of 2 failed after 61.000s [etcd]: etcdctl get failed: exit status 1\n    Nov 21 02:47:01 localhost etcd-member[812]"),
            "{etcd}"
        );
        assert!(xml.contains(r#"<property name="bogie.signature:cl.etcd-member.discovery" value="etcdctl get failed: exit status &lt;N&gt;"/>"#), "{xml}");

        // subtests: lines of their parent's system-err.
        let fs_case = case(&xml, "cl.filesystem");
        assert!(
            fs_case.contains("<system-err>--- subtest cl.filesystem/deadlinks pass after 1.500s\n--- subtest cl.filesystem/suid skip after 0.000s\n    not on this image\n</system-err>"),
            "{fs_case}"
        );
        let docker = case(&xml, "docker.base");
        assert!(docker.contains("--- subtest docker.base/pull fail after 3.000s\n    docker: Error response from daemon"), "{docker}");

        // skip, and warn: no failure, the warning on system-out, the status a property.
        assert!(xml.contains(r#"<skipped message="not supported on qemu-unpriv"/>"#));
        let warn = case(&xml, "coreos.selinux.enforce");
        assert!(
            warn.contains("<system-out>WARNING: this test failed"),
            "{warn}"
        );
        assert!(!warn.contains("<failure"));
        assert!(
            xml.contains(r#"<property name="bogie.status:coreos.selinux.enforce" value="warn"/>"#)
        );
        assert!(xml
            .contains(r#"<property name="bogie.class:coreos.selinux.enforce" value="selinux"/>"#));
    }

    #[test]
    fn a_test_not_run_is_an_error_and_the_end_a_property() {
        let report = killed_report("cl.never");
        let xml = junit_string(&report).unwrap();
        assert!(
            xml.contains(r#"<testsuites name="bogie" tests="8" failures="2" errors="1""#),
            "{xml}"
        );
        assert!(
            case(&xml, "cl.never")
                .contains(r#"<error type="not-run" message="no result: the run did not end"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<property name="bogie.end" value="not-ended"/>"#));
        let back = parse_junit(&xml, Path::new("j.xml")).unwrap();
        assert_eq!(back.end, RunEnd::NotEnded);
        let never = back.tests.iter().find(|t| t.name == "cl.never").unwrap();
        assert_eq!(never.status, Status::NotRun);
        assert_eq!(
            never.skip_reason.as_deref(),
            Some("no result: the run did not end")
        );
        assert!(never.attempts.is_empty());
    }

    #[test]
    fn text_xml_cannot_hold_is_escaped() {
        let mut report = sample_report();
        report.tests.truncate(1);
        report.tests[0].status = Status::Fail;
        report.tests[0].attempts[0] = failed(
            1,
            1.0,
            "a \"quoted\" <tag> & more\nsecond line",
            "\x1b[0;1;31m[FAILED]\x1b[0m unit\tx\r\n",
        );
        let xml = junit_string(&report).unwrap();
        assert!(!xml.contains('\x1b'), "{xml}");
        assert!(
            xml.contains(r#"message="a &quot;quoted&quot; &lt;tag&gt; &amp; more""#),
            "{xml}"
        );
        assert!(
            xml.contains("\\x1b[0;1;31m[FAILED]\\x1b[0m unit\tx\r\n"),
            "{xml}"
        );
        let back = parse_junit(&xml, Path::new("j.xml")).unwrap();
        let f = back.tests[0].last_failure().unwrap();
        assert_eq!(f.message, "a \"quoted\" <tag> & more");
        // (quick-junit's reader drops some whitespace of text nodes.)
        assert!(
            f.excerpt.starts_with("\\x1b[0;1;31m[FAILED]\\x1b[0m unit"),
            "{:?}",
            f.excerpt
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
        assert!(
            xml.contains(r#"<testsuites name="bogie" tests="8""#),
            "{xml}"
        );
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
