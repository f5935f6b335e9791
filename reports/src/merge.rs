//! Merging the shards of one run, and writing every report file of a run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{MergeConflict, ReportError, Result};
use crate::jsonl::{write_results_jsonl, RESULTS_JSONL};
use crate::junit::{write_junit, JUNIT_XML};
use crate::kola_json::{write_report_json, REPORT_JSON};
use crate::model::*;
use crate::tap::{write_tap, TEST_TAP};

fn run_label(info: &RunInfo) -> String {
    match &info.shard {
        Some(s) => format!("{} (shard {s})", info.id),
        None => info.id.clone(),
    }
}

/// Merges the shards of one run into one report: the union of their tests, in shard order.
/// A test (same name, platform and arch) in two shards is an error unless both results are
/// identical. The run facts are the first shard's, with no shard and the earliest start.
pub fn merge_runs(runs: Vec<RunReport>) -> Result<RunReport> {
    let mut runs = runs.into_iter();
    let first = runs
        .next()
        .ok_or_else(|| ReportError::NoResults("no runs to merge".to_string()))?;
    let mut info = first.info.clone();
    info.shard = None;
    let mut tests: Vec<TestResult> = Vec::new();
    let mut seen: HashMap<(String, String, String), (usize, String)> = HashMap::new();
    for run in std::iter::once(first).chain(runs) {
        if run.info.started < info.started {
            info.started = run.info.started;
        }
        let label = run_label(&run.info);
        for t in run.tests {
            let key = (t.name.clone(), t.platform.clone(), t.arch.clone());
            if let Some((i, other)) = seen.get(&key) {
                if tests[*i] != t {
                    return Err(ReportError::MergeConflict(Box::new(MergeConflict {
                        test: t.name,
                        arch: t.arch,
                        platform: t.platform,
                        first_run: other.clone(),
                        second_run: label,
                        first_status: tests[*i].status.as_str(),
                        second_status: t.status.as_str(),
                    })));
                }
                continue;
            }
            seen.insert(key, (tests.len(), label.clone()));
            tests.push(t);
        }
    }
    Ok(RunReport { info, tests })
}

/// Writes every report of a run: `<out>/reports/junit.xml`, `<out>/reports/report.json`,
/// `<out>/reports/results.jsonl` (rewritten whole) and the TAP at `<out>/test.tap` (kola's
/// place) and, when given, at `tapfile` too. Every file is replaced atomically. Returns the
/// paths written.
pub fn write_all(
    report: &RunReport,
    out_dir: impl AsRef<Path>,
    tapfile: Option<&Path>,
) -> Result<Vec<PathBuf>> {
    let out = out_dir.as_ref();
    let reports = out.join("reports");
    let mut written = Vec::new();
    let junit = reports.join(JUNIT_XML);
    write_junit(report, &junit)?;
    written.push(junit);
    let json = reports.join(REPORT_JSON);
    write_report_json(report, &json)?;
    written.push(json);
    let jsonl = reports.join(RESULTS_JSONL);
    write_results_jsonl(report, &jsonl)?;
    written.push(jsonl);
    let tap = out.join(TEST_TAP);
    write_tap(report, &tap)?;
    written.push(tap);
    if let Some(t) = tapfile {
        write_tap(report, t)?;
        written.push(t.to_path_buf());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::load_run;
    use crate::testutil::*;
    use chrono::Duration as ChronoDuration;

    fn shards() -> (RunReport, RunReport) {
        let full = sample_report();
        let mut a = full.clone();
        let mut b = full.clone();
        a.info.shard = Some("hash:1/2".into());
        b.info.shard = Some("hash:2/2".into());
        b.info.started = full.info.started - ChronoDuration::minutes(5);
        a.tests.truncate(4);
        b.tests.drain(..4);
        (a, b)
    }

    #[test]
    fn union_of_shards() {
        let (a, b) = shards();
        let early = b.info.started;
        let merged = merge_runs(vec![a, b]).unwrap();
        let full = sample_report();
        assert_eq!(merged.tests, full.tests);
        assert_eq!(merged.info.shard, None);
        assert_eq!(merged.info.id, "run-a");
        assert_eq!(merged.info.started, early);
    }

    #[test]
    fn identical_duplicates_are_fine_different_ones_are_not() {
        let (a, mut b) = shards();
        b.tests.push(a.tests[0].clone());
        assert_eq!(
            merge_runs(vec![a.clone(), b.clone()]).unwrap().tests.len(),
            7
        );

        let mut changed = a.tests[0].clone();
        changed.status = Status::Fail;
        b.tests.push(changed);
        let err = merge_runs(vec![a, b]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cl.basic (amd64/qemu)"), "{msg}");
        assert!(msg.contains("run-a (shard hash:1/2)"), "{msg}");
        assert!(msg.contains("run-a (shard hash:2/2)"), "{msg}");
        assert!(msg.contains("(pass vs fail)"), "{msg}");
    }

    #[test]
    fn nothing_to_merge() {
        assert!(matches!(merge_runs(vec![]), Err(ReportError::NoResults(_))));
    }

    #[test]
    fn write_all_writes_every_file_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let tapfile = dir.path().join("elsewhere/results-run-1.tap");
        let report = sample_report();
        let written = write_all(&report, dir.path(), Some(&tapfile)).unwrap();
        assert_eq!(written.len(), 5);
        for p in &written {
            assert!(p.is_file(), "{}", p.display());
        }
        assert!(dir.path().join("reports/junit.xml").is_file());
        assert_eq!(
            std::fs::read_to_string(&tapfile).unwrap(),
            std::fs::read_to_string(dir.path().join("test.tap")).unwrap()
        );
        assert_eq!(load_run(dir.path()).unwrap(), report);
        // Rewriting replaces, never appends.
        write_all(&report, dir.path(), None).unwrap();
        assert_eq!(load_run(dir.path()).unwrap(), report);
    }
}
