//! kola's `reports/report.json`, with bogie's extras in fields kola's readers ignore.
//!
//! ```json
//! {"tests":[{"name":"cl.basic","subtests":[],"result":"PASS","duration":93500000000,
//!   "output":"...","bogie":{"status":"pass","platform":"qemu","arch":"amd64","attempts":[...]}}],
//!  "result":"PASS","platform":"qemu","version":"4799.0.0","bogie_run":{...}}
//! ```
//!
//! As kola does, every subtest also gets its own entry (`parent/sub`) just before its parent;
//! `subtests` lists their names (coreos-assembler's field). `duration` is nanoseconds.
//! Flaky counts as `PASS` and warn as `FAIL` in `result`, as [`Status::kola`] says; the
//! top-level `result` is `FAIL` only when a test failed for real (or never reported: `not-run`
//! is a `FAIL` too). `bogie_end` says how the run ended.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::*;
use crate::tap::{attempt_error, failure_from_error};

/// The file name under `<out>/reports/`.
pub const REPORT_JSON: &str = "report.json";

#[derive(Debug, Serialize, Deserialize)]
struct KolaReport {
    #[serde(default)]
    tests: Vec<KolaTest>,
    #[serde(default)]
    result: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bogie_run: Option<RunInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bogie_end: Option<RunEnd>,
}

#[derive(Debug, Serialize, Deserialize)]
struct KolaTest {
    name: String,
    #[serde(default)]
    subtests: Option<Vec<String>>,
    #[serde(default)]
    result: String,
    #[serde(default)]
    duration: i64,
    #[serde(default)]
    output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bogie: Option<Extras>,
}

/// bogie's lossless copy of a test, beside kola's fields.
#[derive(Debug, Serialize, Deserialize)]
struct Extras {
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skip_reason: Option<String>,
    platform: String,
    arch: String,
    #[serde(default)]
    attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn kola_output(t: &TestResult) -> String {
    if matches!(t.status, Status::Skip | Status::NotRun) {
        return t.skip_reason.clone().unwrap_or_default();
    }
    let Some(last) = t.attempts.last() else {
        return String::new();
    };
    let mut out = last.output.clone();
    if !last.passed {
        let err = attempt_error(last);
        let first = err.lines().next().unwrap_or("");
        if !out.contains(first) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&err);
        }
    }
    out
}

/// Renders the run as kola's `report.json` (with bogie's extras).
pub fn to_report_json(report: &RunReport) -> Result<String> {
    let mut tests = Vec::new();
    for t in &report.tests {
        let subs: Vec<&SubtestResult> = t
            .attempts
            .last()
            .map(|a| a.subtests.iter().collect())
            .unwrap_or_default();
        let mut sub_names = Vec::new();
        for s in subs {
            let name = if s.name.contains('/') {
                s.name.clone()
            } else {
                format!("{}/{}", t.name, s.name)
            };
            sub_names.push(name.clone());
            tests.push(KolaTest {
                name,
                subtests: None,
                result: s.status.kola().to_string(),
                duration: nanos(s.duration),
                output: s.message.clone(),
                bogie: None,
            });
        }
        tests.push(KolaTest {
            name: t.name.clone(),
            subtests: Some(sub_names),
            result: t.status.kola().to_string(),
            duration: nanos(t.duration()),
            output: kola_output(t),
            bogie: Some(Extras {
                status: t.status,
                skip_reason: t.skip_reason.clone(),
                platform: t.platform.clone(),
                arch: t.arch.clone(),
                attempts: t.attempts.clone(),
                tags: t.tags.clone(),
            }),
        });
    }
    let doc = KolaReport {
        tests,
        result: report.overall().kola().to_string(),
        platform: report.info.platform.clone(),
        version: report.info.version.clone(),
        bogie_run: Some(report.info.clone()),
        bogie_end: Some(report.end),
    };
    let mut s = serde_json::to_string(&doc).map_err(ReportError::JsonSerialize)?;
    s.push('\n');
    Ok(s)
}

/// Writes the run as kola's `report.json` to `path` (atomically).
pub fn write_report_json(report: &RunReport, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, to_report_json(report)?)
}

/// Reads a `report.json`: bogie's losslessly (from its extras), kola's (Flatcar or
/// coreos-assembler) best effort: PASS/FAIL/SKIP, durations, the output triaged into a
/// failure, `parent/sub` entries as subtests. For kola's files the run's arch, distro and
/// command line come from `properties.json` in the run directory when it is there, and the
/// start time is the file's modification time.
pub fn read_report_json(path: impl AsRef<Path>) -> Result<RunReport> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let doc: KolaReport = serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        line: None,
        source,
    })?;
    let info = match doc.bogie_run.clone() {
        Some(info) => info,
        None => {
            let started: DateTime<Utc> = fs::metadata(path)
                .and_then(|m| m.modified())
                .map(DateTime::<Utc>::from)
                .unwrap_or_default();
            let mut info = RunInfo {
                platform: doc.platform.clone(),
                version: doc.version.clone(),
                started,
                ..RunInfo::default()
            };
            // <run>/reports/report.json → <run>/properties.json
            if let Some(run_dir) = path.parent().and_then(Path::parent) {
                apply_kola_properties(&mut info, run_dir);
            }
            info
        }
    };
    Ok(RunReport {
        tests: convert(doc.tests, &info),
        info,
        end: doc.bogie_end.unwrap_or_default(),
    })
}

fn convert(entries: Vec<KolaTest>, info: &RunInfo) -> Vec<TestResult> {
    let names: HashSet<String> = entries.iter().map(|e| e.name.clone()).collect();
    let parent_of = |name: &str| -> Option<String> {
        let mut cut = name.len();
        while let Some(i) = name[..cut].rfind('/') {
            if names.contains(&name[..i]) {
                return Some(name[..i].to_string());
            }
            cut = i;
        }
        None
    };
    let mut tests: Vec<TestResult> = Vec::new();
    let mut subs: Vec<(String, SubtestResult)> = Vec::new();
    for e in entries {
        if let Some(x) = e.bogie {
            tests.push(TestResult {
                name: e.name,
                status: x.status,
                skip_reason: x.skip_reason,
                platform: x.platform,
                arch: x.arch,
                attempts: x.attempts,
                tags: x.tags,
            });
            continue;
        }
        let duration = Duration::from_nanos(e.duration.max(0) as u64);
        let status = match e.result.as_str() {
            "PASS" => Status::Pass,
            "SKIP" => Status::Skip,
            _ => Status::Fail,
        };
        if let Some(parent) = parent_of(&e.name) {
            subs.push((
                parent,
                SubtestResult {
                    name: e.name,
                    status,
                    duration,
                    message: e.output.trim().to_string(),
                },
            ));
            continue;
        }
        let mut t = TestResult {
            name: e.name,
            status,
            skip_reason: None,
            platform: info.platform.clone(),
            arch: info.arch.clone(),
            attempts: Vec::new(),
            tags: Vec::new(),
        };
        match status {
            Status::Skip => {
                t.skip_reason = Some(e.output.trim().to_string());
            }
            _ => {
                let failure = (status == Status::Fail).then(|| {
                    let text = if e.output.trim().is_empty() {
                        "failed"
                    } else {
                        e.output.as_str()
                    };
                    failure_from_error(text).0
                });
                t.attempts.push(Attempt {
                    number: 1,
                    passed: status == Status::Pass,
                    started: info.started,
                    duration,
                    failure,
                    output: e.output,
                    machines: Vec::new(),
                    subtests: Vec::new(),
                });
            }
        }
        // Names listed by coreos-assembler without entries of their own.
        for s in e.subtests.unwrap_or_default() {
            if !names.contains(&s) && status == Status::Pass {
                if let Some(a) = t.attempts.last_mut() {
                    a.subtests.push(SubtestResult {
                        name: s,
                        status: Status::Pass,
                        duration: Duration::ZERO,
                        message: String::new(),
                    });
                }
            }
        }
        tests.push(t);
    }
    for (parent, sub) in subs {
        // bogie's own tests already carry their subtests in their attempts.
        if let Some(t) = tests.iter_mut().find(|t| t.name == parent) {
            let from_bogie = t
                .attempts
                .last()
                .is_some_and(|a| a.subtests.iter().any(|s| s.name == sub.name));
            if !from_bogie {
                if let Some(a) = t.attempts.last_mut() {
                    a.subtests.push(sub);
                }
            }
        }
    }
    tests
}

/// Fills the arch, distro and command line of `info` from kola's `<run_dir>/properties.json`
/// (`board` `amd64-usr` → arch `amd64`), when the file is there and the fields are empty.
pub fn apply_kola_properties(info: &mut RunInfo, run_dir: &Path) {
    let Ok(text) = fs::read_to_string(run_dir.join("properties.json")) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    if info.arch.is_empty() {
        let board = get("board");
        let arch = board.strip_suffix("-usr").unwrap_or(&board);
        info.arch = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        }
        .to_string();
    }
    if info.platform.is_empty() {
        info.platform = get("platform");
    }
    if info.distro.is_empty() {
        info.distro = get("distro");
    }
    if info.cmdline.is_empty() {
        if let Some(args) = v.get("cmdline").and_then(|c| c.as_array()) {
            info.cmdline = args
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn kola_fields_are_kolas() {
        let report = sample_report();
        let v: serde_json::Value = serde_json::from_str(&to_report_json(&report).unwrap()).unwrap();
        assert_eq!(v["result"], "FAIL");
        assert_eq!(v["platform"], "qemu");
        assert_eq!(v["version"], "4799.0.0");
        assert_eq!(v["bogie_run"]["id"], "run-a");
        let tests = v["tests"].as_array().unwrap();
        // 7 tests + 4 subtest entries
        assert_eq!(tests.len(), 11);
        let get = |n: &str| tests.iter().find(|t| t["name"] == n).unwrap();
        let basic = get("cl.basic");
        assert_eq!(basic["result"], "PASS");
        assert_eq!(basic["duration"], 93_500_000_000i64);
        assert_eq!(basic["subtests"], serde_json::json!([]));
        assert_eq!(get("coreos.ignition.once")["result"], "PASS");
        assert_eq!(get("coreos.ignition.once")["bogie"]["status"], "flaky");
        assert_eq!(
            get("coreos.ignition.once")["bogie"]["attempts"][0]["failure"]["class"],
            "harness"
        );
        assert_eq!(get("coreos.selinux.enforce")["result"], "FAIL");
        assert_eq!(get("cl.cloudinit.basic")["result"], "SKIP");
        assert_eq!(
            get("cl.cloudinit.basic")["output"],
            "not supported on qemu-unpriv"
        );
        assert_eq!(
            get("cl.cloudinit.basic")["bogie"]["skip_reason"],
            "not supported on qemu-unpriv"
        );
        let docker = get("docker.base");
        assert_eq!(
            docker["subtests"],
            serde_json::json!(["docker.base/docker-info", "docker.base/pull"])
        );
        assert!(docker["output"]
            .as_str()
            .unwrap()
            .contains("pull access denied"));
        assert_eq!(get("docker.base/pull")["result"], "FAIL");
        assert_eq!(get("cl.filesystem/suid")["result"], "SKIP");
        // Subtest entries come before their parent, as kola's do.
        let pos = |n: &str| tests.iter().position(|t| t["name"] == n).unwrap();
        assert!(pos("docker.base/pull") < pos("docker.base"));
    }

    #[test]
    fn bogie_files_read_back_losslessly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports/report.json");
        let report = sample_report();
        write_report_json(&report, &path).unwrap();
        assert_eq!(read_report_json(&path).unwrap(), report);
    }

    #[test]
    fn reads_flatcar_kola_report() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("reports")).unwrap();
        fs::write(
            dir.path().join("properties.json"),
            r#"{"cmdline":["kola","run","--board=arm64-usr"],"platform":"qemu","distro":"cl","board":"arm64-usr"}"#,
        )
        .unwrap();
        let kola = r#"{"tests":[
            {"name":"cl.filesystem/deadlinks","result":"FAIL","duration":1860000000,"output":"        files.go:90: Dead symbolic links found"},
            {"name":"cl.filesystem/suid","result":"PASS","duration":1000000,"output":""},
            {"name":"cl.filesystem","result":"FAIL","duration":20000000000,"output":"    --- FAIL: cl.filesystem/deadlinks (1.86s)\n            files.go:90: Dead symbolic links found\n"},
            {"name":"cl.basic","result":"PASS","duration":93000000000,"output":""},
            {"name":"cl.cloudinit.basic","result":"SKIP","duration":0,"output":"    harness.go:1: unsupported"},
            {"name":"coreos.ignition.once","result":"FAIL","duration":5000000000,"output":"    cluster.go:125: ssh: handshake failed: EOF"}
        ],"result":"FAIL","platform":"qemu","version":"4799.0.0"}"#;
        let path = dir.path().join("reports/report.json");
        fs::write(&path, kola).unwrap();
        let r = read_report_json(&path).unwrap();
        assert_eq!(r.info.platform, "qemu");
        assert_eq!(r.info.arch, "arm64");
        assert_eq!(r.info.version, "4799.0.0");
        assert_eq!(r.info.cmdline[0], "kola");
        assert_eq!(r.tests.len(), 4);
        let fs_test = &r.tests[0];
        assert_eq!(fs_test.name, "cl.filesystem");
        assert_eq!(fs_test.status, Status::Fail);
        assert_eq!(fs_test.arch, "arm64");
        assert_eq!(fs_test.duration(), Duration::from_secs(20));
        let subs = &fs_test.attempts[0].subtests;
        assert_eq!(subs.len(), 2);
        assert_eq!(
            (subs[0].name.as_str(), subs[0].status),
            ("cl.filesystem/deadlinks", Status::Fail)
        );
        assert_eq!(subs[1].status, Status::Pass);
        assert_eq!(
            fs_test.last_failure().unwrap().message,
            "files.go:90: Dead symbolic links found"
        );
        assert_eq!(r.tests[2].status, Status::Skip);
        assert_eq!(
            r.tests[2].skip_reason.as_deref(),
            Some("harness.go:1: unsupported")
        );
        let ign = r.tests[3].last_failure().unwrap();
        assert_eq!(ign.class, FailureClass::Harness);
        assert_eq!(ign.signature, "cluster.go:<N>: ssh: handshake failed: EOF");
    }

    #[test]
    fn cosa_subtest_names_without_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(
            &path,
            r#"{"tests":[{"name":"ext.config.x","subtests":["ext.config.x/a"],"result":"PASS","duration":5,"output":""}],"result":"PASS","platform":"qemu","version":"41"}"#,
        )
        .unwrap();
        let r = read_report_json(&path).unwrap();
        assert_eq!(r.tests[0].attempts[0].subtests[0].name, "ext.config.x/a");
    }

    #[test]
    fn invalid_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        fs::write(&path, "{\"tests\": [").unwrap();
        let err = read_report_json(&path).unwrap_err();
        assert!(
            err.to_string().contains("report.json: invalid JSON"),
            "{err}"
        );
    }
}
