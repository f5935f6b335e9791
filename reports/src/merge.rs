//! Merging the shards of one run, and writing every report file of a run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{MergeConflict, ReportError, Result};
use crate::jsonl::{write_results_jsonl, RESULTS_JSONL};
use crate::junit::{write_junit, JUNIT_XML};
use crate::kola_json::{write_report_json, REPORT_JSON};
use crate::model::*;
use crate::tap::{write_tap, TapFormat, TEST_TAP};

fn run_label(info: &RunInfo) -> String {
    match &info.shard {
        Some(s) => format!("{} (shard {s})", info.id),
        None => info.id.clone(),
    }
}

/// Merges the shards of one run into one report: the union of their tests, in shard order.
/// A test (same name, platform and arch) in two shards is an error unless both results are
/// identical, or one of them is [`Status::NotRun`] (the other one, a result, wins). The run
/// facts are the first shard's, with no shard and the earliest start; the merged run ended
/// as the worst of the shards did ([`RunEnd::worst`]), so one killed shard keeps the merge
/// from passing the gate.
pub fn merge_runs(runs: Vec<RunReport>) -> Result<RunReport> {
    let mut runs = runs.into_iter();
    let first = runs
        .next()
        .ok_or_else(|| ReportError::NoResults("no runs to merge".to_string()))?;
    let mut info = first.info.clone();
    info.shard = None;
    let mut end = first.end;
    let mut tests: Vec<TestResult> = Vec::new();
    let mut seen: HashMap<(String, String, String), (usize, String)> = HashMap::new();
    for run in std::iter::once(first).chain(runs) {
        if run.info.started < info.started {
            info.started = run.info.started;
        }
        end = end.worst(run.end);
        let label = run_label(&run.info);
        for t in run.tests {
            let key = (t.name.clone(), t.platform.clone(), t.arch.clone());
            if let Some((i, other)) = seen.get(&key) {
                if t.status == Status::NotRun {
                    continue;
                }
                if tests[*i].status == Status::NotRun {
                    tests[*i] = t;
                    continue;
                }
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
    Ok(RunReport { info, tests, end })
}

/// Writes every report of a run: `<out>/reports/junit.xml`, `<out>/reports/report.json`,
/// `<out>/reports/results.jsonl` (rewritten whole) and the TAP at `<out>/test.tap` (kola's
/// place) and, when given, at `tapfile` too. Every file is replaced atomically. Returns the
/// paths written.
pub fn write_all(
    report: &RunReport,
    out_dir: impl AsRef<Path>,
    tapfile: Option<&Path>,
    tap_format: TapFormat,
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
    write_tap(report, &tap, tap_format)?;
    written.push(tap);
    if let Some(t) = tapfile {
        write_tap(report, t, tap_format)?;
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
    fn a_killed_shard_keeps_its_missing_tests_not_run_and_the_merge_not_ended() {
        let (a, mut b) = shards();
        let lost = b.tests.pop().unwrap();
        b.tests.push(not_run(&lost.name));
        b.end = RunEnd::NotEnded;
        let merged = merge_runs(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(merged.end, RunEnd::NotEnded);
        assert_eq!(merged.summary().not_run, 1);
        assert_eq!(merged.not_run()[0].name, "docker.base");
        assert!(merged
            .incomplete()
            .unwrap()
            .ends_with("not run: docker.base"));

        // A result from another run fills in a test that was not run, whatever the order.
        let mut rerun = b.clone();
        rerun.tests = vec![lost.clone()];
        rerun.end = RunEnd::Completed;
        for runs in [vec![b.clone(), rerun.clone()], vec![rerun, b]] {
            let m = merge_runs(runs).unwrap();
            let t = m.tests.iter().find(|t| t.name == "docker.base").unwrap();
            assert_eq!(t, &lost);
            assert_eq!(
                m.end,
                RunEnd::NotEnded,
                "the killed shard still did not end"
            );
        }

        let mut interrupted = a;
        interrupted.end = RunEnd::Interrupted;
        let mut done = sample_report();
        done.tests.clear();
        let m = merge_runs(vec![done, interrupted]).unwrap();
        assert_eq!(m.end, RunEnd::Interrupted);
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
        let written = write_all(&report, dir.path(), Some(&tapfile), TapFormat::Kola).unwrap();
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
        write_all(&report, dir.path(), None, TapFormat::V13).unwrap();
        assert_eq!(load_run(dir.path()).unwrap(), report);
    }
}
