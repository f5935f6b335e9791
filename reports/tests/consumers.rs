//! bogie's reports as their consumers read them: the JUnit file validates against the
//! Jenkins xunit plugin's `junit-10.xsd` (both versions in use, checked with `xmllint`), and
//! tap.py (PyPI `tap.py`, module `tap`) reads every YAML block of the TAP file and takes no
//! bogie marker for part of a test's name.
//!
//! The tools come from `ci/install-deps` (`libxml2-utils`; tap.py in the venv at
//! `$BOGIE_MOTO_VENV`, default `~/.cache/bogie/moto-venv`). Without them a test says it
//! skipped and why; under CI (`CI` set) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bogie_reports::triage;
use bogie_reports::{Attempt, RunEnd, RunInfo, RunReport, Status, SubtestResult, TestResult};
use chrono::{TimeZone, Utc};

/// Fails under CI, else prints why the test did not run; returns whether to go on.
fn tool_available(what: &str, found: bool, how: &str) -> bool {
    if found {
        return true;
    }
    let msg = format!("{what} is not available ({how}; ci/install-deps installs it)");
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn attempt(number: u32, secs: f64, failure: Option<(&str, &str)>) -> Attempt {
    Attempt {
        number,
        passed: failure.is_none(),
        started: Utc.with_ymd_and_hms(2026, 11, 21, 2, 47, 1).unwrap(),
        duration: Duration::from_secs_f64(secs),
        failure: failure.map(|(m, x)| triage::failure(m, x)),
        output: format!("attempt {number} output\nwith \"quotes\" & <angles>"),
        machines: Vec::new(),
        subtests: Vec::new(),
    }
}

fn sub(name: &str, status: Status, secs: f64, message: &str) -> SubtestResult {
    SubtestResult {
        name: name.into(),
        status,
        duration: Duration::from_secs_f64(secs),
        message: message.into(),
    }
}

fn test(name: &str, status: Status, attempts: Vec<Attempt>) -> TestResult {
    TestResult {
        name: name.to_string(),
        status,
        skip_reason: None,
        platform: "qemu".into(),
        arch: "amd64".into(),
        attempts,
        tags: Vec::new(),
    }
}

/// A run with a pass, a fail (failed twice, with a failed subtest), a skip, a flaky test, a
/// warn-only failure, a test with subtests and one that never reported; the texts have what
/// XML and YAML must escape (quotes, `<`, `&`, an ANSI colour escape, a tab).
fn run() -> RunReport {
    let console =
        "m1 console:38: \x1b[0;1;31m[FAILED]\x1b[0m Failed to start etcd-member.service\tetcd";
    let mut docker = attempt(
        2,
        30.0,
        Some(("docker: pull \"busybx\" failed: <denied> & more", console)),
    );
    docker.subtests = vec![
        sub("docker.base/info", Status::Pass, 2.0, ""),
        sub(
            "docker.base/pull",
            Status::Fail,
            3.0,
            "pull access denied\nsecond line: \"x\"",
        ),
    ];
    let mut fs = attempt(1, 20.25, None);
    fs.subtests = vec![
        sub("cl.filesystem/deadlinks", Status::Pass, 1.5, ""),
        sub("cl.filesystem/suid", Status::Skip, 0.0, "not on this image"),
    ];
    RunReport {
        info: RunInfo {
            id: "consumers".into(),
            platform: "qemu".into(),
            arch: "amd64".into(),
            version: "4799.0.0".into(),
            distro: "cl".into(),
            started: Utc.with_ymd_and_hms(2026, 11, 21, 2, 47, 1).unwrap(),
            ..RunInfo::default()
        },
        tests: vec![
            test("cl.basic", Status::Pass, vec![attempt(1, 93.5, None)]),
            test(
                "docker.base",
                Status::Fail,
                vec![
                    attempt(1, 31.0, Some(("docker: pull failed", "first try"))),
                    docker,
                ],
            ),
            TestResult::skipped("cl.cloudinit.basic", "qemu", "amd64", "not on qemu"),
            test(
                "coreos.ignition.once",
                Status::Flaky,
                vec![
                    attempt(1, 300.0, Some(("ssh: handshake failed: EOF", ""))),
                    attempt(2, 40.0, None),
                ],
            ),
            test(
                "coreos.selinux.enforce",
                Status::Warn,
                vec![attempt(
                    1,
                    12.0,
                    Some(("found SELinux denials", "avc: denied { read }")),
                )],
            ),
            test("cl.filesystem", Status::Pass, vec![fs]),
            TestResult::not_run(
                "cl.never",
                "qemu",
                "amd64",
                "no result: the run did not end (bogie was killed or crashed)",
            ),
        ],
        end: RunEnd::NotEnded,
    }
}

fn schemas() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xunit-plugin");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("junit-10.xsd")))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// [`run`] written by `write` into a file `name` of a fresh directory: the directory, the
/// file, the run and the text.
fn written(
    name: &str,
    write: fn(&RunReport, &Path) -> bogie_reports::Result<()>,
) -> (tempfile::TempDir, PathBuf, RunReport, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let report = run();
    write(&report, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    (dir, path, report, text)
}

#[test]
fn junit_validates_against_both_junit_10_xsds_with_the_summarys_counts() {
    let (_dir, path, report, xml) =
        written("junit.xml", |r, p| bogie_reports::junit::write_junit(r, p));

    // The counts are the summary line's: 7 tests, 1 failed, 1 skipped, 1 not run (an error).
    let s = report.summary();
    assert_eq!(
        (s.passed, s.failed, s.flaky, s.skipped, s.warned, s.not_run),
        (2, 1, 1, 1, 1, 1)
    );
    assert!(
        xml.contains(r#"<testsuites name="bogie" tests="7" failures="1" errors="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="bogie.qemu.amd64" tests="7" failures="1" errors="1" skipped="1""#
        ),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 7);

    let found = Command::new("xmllint").arg("--version").output().is_ok();
    if !tool_available("xmllint", found, "Debian package libxml2-utils") {
        return;
    }
    let xsds = schemas();
    assert_eq!(xsds.len(), 2, "both vendored schema versions: {xsds:?}");
    for xsd in xsds {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&xsd)
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "junit.xml does not validate against {}:\n{stderr}\n{xml}",
            xsd.display()
        );
        assert!(stderr.contains("validates"), "{stderr}");
    }

    // And bogie reads its extras back.
    let back = bogie_reports::junit::read_junit(&path).unwrap();
    assert_eq!(back.end, RunEnd::NotEnded);
    for t in &report.tests {
        let got = back.tests.iter().find(|b| b.name == t.name).unwrap();
        assert_eq!(got.status, t.status, "{}", t.name);
        assert_eq!(got.attempts.len(), t.attempts.len(), "{}", t.name);
    }
}

/// `$BOGIE_MOTO_VENV`, else `${XDG_CACHE_HOME:-~/.cache}/bogie/moto-venv`, as
/// `ci/install-deps` makes it.
fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("BOGIE_MOTO_VENV") {
        return PathBuf::from(v);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_default()
        .join("bogie/moto-venv")
}

/// Prints one JSON line per line tap.py parsed.
const TAP_PY_DUMP: &str = r#"
import json, sys
from tap.parser import Parser
for line in Parser().parse_file(sys.argv[1]):
    item = {"category": line.category}
    if line.category == "version":
        item["version"] = line.version
    if line.category == "test":
        item.update(ok=line.ok, description=line.description,
                    directive=line.directive.text, skip=line.skip, todo=line.todo,
                    yaml=line.yaml_block)
    if line.category == "unknown":
        item["text"] = str(line)
    print(json.dumps(item))
"#;

#[test]
fn tap_py_reads_every_yaml_block_and_every_name_whole() {
    let (_dir, path, _, tap) = written("run.tap", |r, p| {
        bogie_reports::tap::write_tap(r, p, bogie_reports::tap::TapFormat::V13)
    });
    assert!(tap.starts_with("TAP version 13\n1..7\n"), "{tap}");

    let python = venv().join("bin/python");
    let found = Command::new(&python)
        .args(["-c", "import tap, yaml, more_itertools"])
        .output()
        .is_ok_and(|o| o.status.success());
    let how = format!("tap.py[yaml] in {}", venv().display());
    if !tool_available("tap.py", found, &how) {
        return;
    }
    let out = Command::new(&python)
        .args(["-c", TAP_PY_DUMP])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tap.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unknown: Vec<&serde_json::Value> = items
        .iter()
        .filter(|i| i["category"] == "unknown")
        .collect();
    assert!(
        unknown.is_empty(),
        "lines tap.py did not understand: {unknown:?}\n{tap}"
    );
    assert_eq!(items[0]["category"], "version");
    assert_eq!(items[0]["version"], 13);
    let tests: Vec<&serde_json::Value> = items.iter().filter(|i| i["category"] == "test").collect();
    assert_eq!(tests.len(), 7);
    let by = |name: &str| {
        *tests
            .iter()
            .find(|t| t["description"] == format!("- {name}"))
            .unwrap_or_else(|| panic!("tap.py names no test `{name}`: {tests:?}"))
    };
    // Every test line followed by a YAML block in the file has that block parsed.
    let with_blocks = tap.matches("\n  ---\n").count();
    let parsed = tests.iter().filter(|t| t["yaml"].is_object()).count();
    assert_eq!(parsed, with_blocks, "{tests:?}\n{tap}");
    assert_eq!(with_blocks, 4, "{tap}");

    let flaky = by("coreos.ignition.once");
    assert_eq!(flaky["ok"], true);
    assert_eq!(flaky["directive"], "", "no marker after the name: {flaky}");
    assert_eq!(flaky["yaml"]["Flaky"], "failed 1 of 2 attempts");
    assert_eq!(flaky["yaml"]["Attempt 1"], "ssh: handshake failed: EOF");

    let failed = by("docker.base");
    assert_eq!(failed["ok"], false);
    let error = failed["yaml"]["Error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "docker: pull \"busybx\" failed: <denied> & more\nm1 console:38: \x1b[0;1;31m[FAILED]"
        ),
        "{error:?}"
    );
    assert!(
        error.contains("--- FAIL: docker.base/pull (3.00s)"),
        "{error:?}"
    );
    assert!(failed["yaml"]["Attempt 1"]
        .as_str()
        .unwrap()
        .starts_with("docker: pull failed"));

    let warn = by("coreos.selinux.enforce");
    assert_eq!(
        (warn["ok"].clone(), warn["directive"].clone()),
        (true.into(), "".into())
    );
    assert_eq!(warn["yaml"]["Warn"], "failed, denylisted as warn-only");

    let never = by("cl.never");
    assert_eq!(never["ok"], false);
    assert_eq!(
        never["yaml"]["Not run"],
        "no result: the run did not end (bogie was killed or crashed)"
    );

    let skip = by("cl.cloudinit.basic");
    assert_eq!(
        (skip["skip"].clone(), skip["directive"].clone()),
        (true.into(), "SKIP not on qemu".into())
    );
    assert_eq!(by("cl.basic")["ok"], true);
    assert_eq!(by("cl.filesystem")["yaml"], serde_json::Value::Null);
}
