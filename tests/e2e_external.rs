//! External tests (`bogie run -E DIR`) end to end: the demo tree in `tests/external/demo`
//! run on the test image in one `bogie run -j 2`, each outcome checked from
//! `results.jsonl` and `junit.xml` (passing tests, `kola.json` and both inline headers,
//! `config.ign`, `KOLA_EXT_DATA`, two reboots with two marks, non-exclusive tests sharing a
//! machine, a failure naming its file and line with its machine kept, a lost reboot as
//! class `harness`, a skip for a key bogie cannot honour), then `bogie down`.
//!
//! Also, without a machine: `bogie list -E` names the tests, a malformed header is an
//! input error naming its file and line, and docs/external-tests.md quotes the worked
//! example exactly as the files in `tests/external/demo` are.
//!
//! Needs `BOGIE_TEST_IMAGE` for the run (`ci/test` sets it); without it the run is
//! skipped with a message, and fails under `CI`.

mod common;

use std::path::{Path, PathBuf};

use bogie_reports::{FailureClass, Status, TestResult};
use common::{bogie, qemu_processes_mentioning, qemu_run_args, serial};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> PathBuf {
    repo().join("tests/external/demo")
}

/// Every test of the demo tree, by name.
const DEMO_TESTS: &[&str] = &[
    "ext.demo.basic.json-header",
    "ext.demo.basic.pass",
    "ext.demo.basic.yaml-header",
    "ext.demo.config",
    "ext.demo.fail",
    "ext.demo.files",
    "ext.demo.greeting",
    "ext.demo.reboot-lost",
    "ext.demo.unsupported",
];

/// The non-exclusive ones (they share machines).
const SHARED: &[&str] = &[
    "ext.demo.basic.json-header",
    "ext.demo.basic.pass",
    "ext.demo.basic.yaml-header",
    "ext.demo.config",
    "ext.demo.files",
];

#[test]
fn list_names_the_demo_tests_and_their_needs() {
    let out = bogie()
        .args(["list", "--json", "-E"])
        .arg(demo())
        .arg("ext.*")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, DEMO_TESTS);
    let by = |n: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == n)
            .unwrap()
    };
    assert_eq!(by("ext.demo.basic.pass")["non_exclusive"], true);
    assert_eq!(by("ext.demo.fail")["non_exclusive"], false);
    assert_eq!(by("ext.demo.greeting")["has_config"], true);
    assert_eq!(by("ext.demo.greeting")["timeout_secs"], 900);
    assert!(by("ext.demo.unsupported")["unsupported"]
        .as_str()
        .unwrap()
        .contains("injectContainer"));
    // The table shows the same needs; a glob selects like for native tests.
    let out = bogie()
        .args(["list", "--exttest"])
        .arg(demo())
        .arg("ext.demo.basic.*")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ext.demo.")).count(),
        3,
        "{text}"
    );
    assert!(text.contains("#external #smoke"), "{text}");
}

#[test]
fn a_malformed_header_is_an_input_error_naming_file_and_line() {
    let dir = repo().join("tests/external/malformed");
    for cmd in ["list", "run"] {
        let out = bogie()
            .args([cmd, "-E"])
            .arg(&dir)
            .args(["--qemu-image", "/nonexistent/manifest.json"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(
                "tests/external/malformed/tests/kola/broken:5: malformed kola YAML header"
            ) && err.contains("timeoutMinutes"),
            "{cmd}: {err}"
        );
    }
}

/// The files the docs quote, as (path under the project, text in the docs).
fn quoted_files(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(l) = lines.next() {
        let Some(path) = l
            .strip_prefix("`")
            .and_then(|r| r.strip_suffix("`:"))
            .filter(|p| p.starts_with("tests/kola/"))
        else {
            continue;
        };
        let open = lines.next().unwrap_or_default();
        assert!(
            open.starts_with("```"),
            "{path}: no code block after its name"
        );
        let mut text = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push((path.to_string(), text));
    }
    out
}

#[test]
fn the_docs_quote_the_worked_example_as_it_is() {
    let doc = std::fs::read_to_string(repo().join("docs/external-tests.md")).unwrap();
    let quoted = quoted_files(&doc);
    let example = demo().join("tests/kola/greeting");
    let mut files = Vec::new();
    for e in walk(&example) {
        let rel = e.strip_prefix(demo()).unwrap().display().to_string();
        files.push(rel);
    }
    files.sort();
    let mut named: Vec<String> = quoted
        .iter()
        .filter(|(p, _)| p.starts_with("tests/kola/greeting/"))
        .map(|(p, _)| p.clone())
        .collect();
    named.sort();
    assert_eq!(
        named, files,
        "the docs quote every file of the example, once"
    );
    for (path, text) in &quoted {
        let on_disk = std::fs::read_to_string(demo().join(path)).unwrap_or_else(|e| {
            panic!("docs quote {path}, which is not in tests/external/demo: {e}")
        });
        assert_eq!(&on_disk, text, "docs/external-tests.md and {path} differ");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn image() -> Option<PathBuf> {
    match std::env::var_os("BOGIE_TEST_IMAGE") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "BOGIE_TEST_IMAGE is not set under CI: ci/test sets it to the test image manifest"
            );
            eprintln!(
                "SKIPPED: BOGIE_TEST_IMAGE is not set (ci/test sets it to the test image manifest)"
            );
            None
        }
    }
}

fn failure(r: &TestResult) -> &bogie_reports::Failure {
    r.attempts
        .last()
        .and_then(|a| a.failure.as_ref())
        .unwrap_or_else(|| panic!("{} has no failure", r.name))
}

#[test]
fn the_demo_tree_runs_on_the_test_image() {
    if image().is_none() {
        return;
    }
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // As a previous run would say: the test with two reboots takes longest, so it starts
    // first and the others run beside it.
    let prev = d.path().join("previous-junit.xml");
    std::fs::write(
        &prev,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="bogie" tests="1" failures="0" errors="0">
  <testsuite name="ext" tests="1" failures="0" errors="0">
    <testcase name="ext.demo.greeting" classname="ext" time="330"/>
  </testsuite>
</testsuites>
"#,
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let run = bogie()
        .args(qemu_run_args(&out))
        .args(["--no-net", "--keep-failed", "--durations"])
        .arg(&prev)
        .arg("-E")
        .arg(demo())
        .arg("ext.demo.*")
        .env("CI", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    eprintln!(
        "bogie run took {:?}\n{stdout}{}",
        t0.elapsed(),
        String::from_utf8_lossy(&run.stderr)
    );
    // Tear down what --keep-failed kept, whatever the assertions say.
    let down = bogie().arg("down").arg(&out).output().unwrap();
    assert!(
        down.status.success(),
        "bogie down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU processes outlived the run"
    );

    let report =
        bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl")).unwrap();
    let by = |n: &str| {
        report
            .tests
            .iter()
            .find(|t| t.name == n)
            .unwrap_or_else(|| panic!("{n} is not in the report"))
    };
    let mut bad = Vec::new();
    for n in SHARED.iter().chain(["ext.demo.greeting"].iter()) {
        let r = by(n);
        if r.status != Status::Pass {
            bad.push(format!(
                "{n}: {:?} {:?}",
                r.status,
                r.attempts.last().map(|a| (&a.failure, &a.output))
            ));
        }
    }
    assert!(bad.is_empty(), "not passed: {bad:#?}");
    assert_eq!(
        run.status.code(),
        Some(1),
        "a test failed, so the run exits 1"
    );

    // Two reboots with two marks, each boot with its mark.
    let greeting = &by("ext.demo.greeting").attempts[0].output;
    for line in [
        "reboot requested with mark rebooted-once",
        "boot 2, starting kola-runext.service with AUTOPKGTEST_REBOOT_MARK=rebooted-once",
        "reboot requested with mark rebooted-twice",
        "boot 3, starting kola-runext.service with AUTOPKGTEST_REBOOT_MARK=rebooted-twice",
        "ok: three boots, one greeting",
    ] {
        assert!(greeting.contains(line), "{line:?} not in\n{greeting}");
    }
    assert!(by("ext.demo.files").attempts[0]
        .output
        .contains("ok: read /var/opt/kola/extdata-"));

    // Non-exclusive tests share machines: some machine ran two of them.
    let mut ids: Vec<String> = SHARED
        .iter()
        .flat_map(|n| by(n).attempts[0].machines.iter().map(|m| m.id.clone()))
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert!(
        ids.len() < all,
        "no two non-exclusive tests shared a machine: {ids:?}"
    );

    // The failure names the file and its last line of output; its machine was kept.
    let fail = by("ext.demo.fail");
    assert_eq!(fail.status, Status::Fail);
    let f = failure(fail);
    assert_eq!(f.class, FailureClass::Assertion, "{f:?}");
    assert!(
        f.message
            .contains("tests/external/demo/tests/kola/fail exited with status 1 at line")
            && f.message
                .ends_with("of its output: + test -e /etc/bogie-demo-no-such-file"),
        "{}",
        f.message
    );
    assert!(
        f.excerpt.contains("looking for a file that is not there"),
        "{}",
        f.excerpt
    );
    let ssh = fail.attempts[0].machines[0]
        .kept_ssh
        .as_deref()
        .expect("the failed machine was kept");
    assert!(
        stdout.contains(ssh),
        "the summary prints {ssh:?}:\n{stdout}"
    );
    let junit = std::fs::read_to_string(out.join("reports/junit.xml")).unwrap();
    assert!(
        junit.contains("+ test -e /etc/bogie-demo-no-such-file"),
        "JUnit carries the output"
    );

    // A reboot that never comes back is the harness's problem.
    let lost = failure(by("ext.demo.reboot-lost"));
    assert_eq!(lost.class, FailureClass::Harness, "{lost:?}");
    assert!(
        lost.message
            .contains("did not come back from the reboot with mark lost"),
        "{}",
        lost.message
    );

    let skipped = by("ext.demo.unsupported");
    assert_eq!(skipped.status, Status::Skip);
    assert!(
        skipped
            .skip_reason
            .as_deref()
            .unwrap_or("")
            .contains("injectContainer"),
        "{:?}",
        skipped.skip_reason
    );
}
