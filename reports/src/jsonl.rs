//! `reports/results.jsonl`: one JSON object per line, appended as each test finishes, so a run
//! that is killed still leaves valid results for every test that finished.
//!
//! ```text
//! {"run": {...RunInfo}}                        the run's facts
//! {"selected": {"tests": ["cl.basic", ...]}}   every test the run selected (run or skipped)
//! {"test": {...TestResult}}                    one line per test, as it finishes
//! {"end": {"status": "completed"}}             the run ended ("completed" or "interrupted")
//! ```
//!
//! A file with the selection but no end record is a run that did not end (bogie was killed
//! or crashed): the selected tests without a line are read back as [`Status::NotRun`](crate::model::Status::NotRun), and
//! the report says [`RunEnd::NotEnded`], so such a run cannot pass the gate. A file without
//! the selection line (an older bogie's) is still read, with a warning, as
//! [`RunEnd::Unknown`]. A shard selects only its own tests, so merged shards stay exact.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::{RunEnd, RunInfo, RunReport, TestResult};

/// The file name under `<out>/reports/`.
pub const RESULTS_JSONL: &str = "results.jsonl";

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Line {
    #[serde(rename = "run")]
    Run(Box<RunInfo>),
    #[serde(rename = "selected")]
    Selected(Selection),
    #[serde(rename = "test")]
    Test(Box<TestResult>),
    #[serde(rename = "end")]
    End(EndRecord),
}

/// The header after the run line: the names of every selected test.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Selection {
    tests: Vec<String>,
}

/// How the run ended; only `completed` and `interrupted` are ever written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EndStatus {
    Completed,
    Interrupted,
}

/// The last line of a run that ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EndRecord {
    status: EndStatus,
    /// When the run ended (absent in files rewritten by a merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<DateTime<Utc>>,
}

impl EndRecord {
    fn new(interrupted: bool, at: Option<DateTime<Utc>>) -> Self {
        let status = if interrupted {
            EndStatus::Interrupted
        } else {
            EndStatus::Completed
        };
        EndRecord { status, at }
    }
}

fn encode(line: &Line) -> Result<String> {
    let mut s = serde_json::to_string(line).map_err(ReportError::JsonSerialize)?;
    s.push('\n');
    Ok(s)
}

/// Appends test results to `results.jsonl` as they finish. Each line is written whole with a
/// single `write` and flushed, so a killed bogie loses nothing it recorded; fsyncs (against
/// a host crash) are grouped: at most one per [`SYNC_INTERVAL`], and one when the sink is
/// dropped. Shareable between tasks (`&self` methods).
#[derive(Debug)]
pub struct ResultsSink {
    path: PathBuf,
    file: Mutex<(File, Option<Instant>)>,
}

/// The longest a recorded line waits for its fsync while more lines follow (10,000 tests
/// that each waited for their own fsync would spend tens of seconds on them).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

impl ResultsSink {
    /// Starts `<out_dir>/reports/results.jsonl` afresh (an old file is truncated) with the run
    /// line and the names of the `selected` tests (run or skipped: every test the run will
    /// report). Call [`ResultsSink::finish`] when the run ends.
    pub fn create(out_dir: impl AsRef<Path>, info: &RunInfo, selected: &[String]) -> Result<Self> {
        let path = out_dir.as_ref().join("reports").join(RESULTS_JSONL);
        Self::create_at(path, info, selected)
    }

    /// Like [`ResultsSink::create`], at an explicit file path.
    pub fn create_at(
        path: impl Into<PathBuf>,
        info: &RunInfo,
        selected: &[String],
    ) -> Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| ReportError::io(dir, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| ReportError::io(&path, e))?;
        drop(file);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| ReportError::io(&path, e))?;
        let sink = ResultsSink {
            path,
            file: Mutex::new((file, None)),
        };
        sink.write_line(&Line::Run(Box::new(info.clone())))?;
        sink.write_line(&Line::Selected(Selection {
            tests: selected.to_vec(),
        }))?;
        sink.sync()?;
        Ok(sink)
    }

    /// Opens an existing file to append more results (a resumed run). A torn last line left by
    /// a killed writer is cut off first, so the file stays one valid object per line.
    pub fn open_append(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| ReportError::io(&path, e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| ReportError::io(&path, e))?;
        if !data.is_empty() && !data.ends_with(b"\n") {
            let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64)
                .map_err(|e| ReportError::io(&path, e))?;
            file.sync_all().map_err(|e| ReportError::io(&path, e))?;
        }
        drop(file);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| ReportError::io(&path, e))?;
        file.seek(SeekFrom::End(0))
            .map_err(|e| ReportError::io(&path, e))?;
        Ok(ResultsSink {
            path,
            file: Mutex::new((file, None)),
        })
    }

    /// Appends one finished test.
    pub fn record(&self, result: &TestResult) -> Result<()> {
        self.write_line(&Line::Test(Box::new(result.clone())))
    }

    /// Records that the run ended, `interrupted` (Ctrl-C, SIGTERM) or not, and fsyncs. A
    /// file without this line is read as a run that did not end.
    pub fn finish(&self, interrupted: bool) -> Result<()> {
        self.write_line(&Line::End(EndRecord::new(interrupted, Some(Utc::now()))))?;
        self.sync()
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fsyncs what was recorded so far.
    pub fn sync(&self) -> Result<()> {
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        g.0.sync_data()
            .map_err(|e| ReportError::io(&self.path, e))?;
        g.1 = Some(Instant::now());
        Ok(())
    }

    fn write_line(&self, line: &Line) -> Result<()> {
        let text = encode(line)?;
        // A poisoned lock only means another writer panicked; the file is still fine.
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let (f, last_sync) = &mut *g;
        f.write_all(text.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| ReportError::io(&self.path, e))?;
        if last_sync.is_none_or(|t| t.elapsed() >= SYNC_INTERVAL) {
            f.sync_data().map_err(|e| ReportError::io(&self.path, e))?;
            *last_sync = Some(Instant::now());
        }
        Ok(())
    }
}

impl Drop for ResultsSink {
    fn drop(&mut self) {
        let g = self.file.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = g.0.sync_data();
    }
}

/// Renders a whole report as JSON lines: the run line, the selection (every test of the
/// report), the tests in order, and the end record when the report's run ended. A report
/// of [`RunEnd::Unknown`] is written as an older bogie wrote it (no selection, no end), and
/// one of [`RunEnd::NotEnded`] without an end, so reading the text back gives the same
/// report.
pub fn to_jsonl(report: &RunReport) -> Result<String> {
    let mut out = encode(&Line::Run(Box::new(report.info.clone())))?;
    if report.end != RunEnd::Unknown {
        let mut seen = HashSet::new();
        let names: Vec<String> = report
            .tests
            .iter()
            .filter(|t| seen.insert(t.name.as_str()))
            .map(|t| t.name.clone())
            .collect();
        out.push_str(&encode(&Line::Selected(Selection { tests: names }))?);
    }
    for t in &report.tests {
        out.push_str(&encode(&Line::Test(Box::new(t.clone())))?);
    }
    match report.end {
        RunEnd::Completed => out.push_str(&encode(&Line::End(EndRecord::new(false, None)))?),
        RunEnd::Interrupted => out.push_str(&encode(&Line::End(EndRecord::new(true, None)))?),
        RunEnd::NotEnded | RunEnd::Unknown => {}
    }
    Ok(out)
}

/// Writes a whole report as `results.jsonl`, atomically (used after a merge or a rerun).
pub fn write_results_jsonl(report: &RunReport, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, to_jsonl(report)?)
}

/// Reads `results.jsonl`. A truncated or garbled *last* line (a killed writer) is ignored with
/// a warning; a bad line elsewhere is an error. When a test appears twice for the same
/// platform and arch, the later line wins (it keeps the first one's position). Selected
/// tests without a line come back as [`Status::NotRun`](crate::model::Status::NotRun) (after the others, in selection
/// order), and [`RunReport::end`] says how the run ended (see the module's docs).
pub fn read_results_jsonl(path: impl AsRef<Path>) -> Result<RunReport> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    parse_results_jsonl(&text, path)
}

/// Parses JSON-lines text; `path` is only used in errors.
pub fn parse_results_jsonl(text: &str, path: &Path) -> Result<RunReport> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut info: Option<RunInfo> = None;
    let mut selected: Option<Vec<String>> = None;
    let mut ended: Option<EndStatus> = None;
    let mut tests: Vec<TestResult> = Vec::new();
    for (idx, &(lineno, line)) in lines.iter().enumerate() {
        let parsed: Line = match serde_json::from_str(line) {
            Ok(l) => l,
            Err(e) if idx + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), line = lineno, error = %e,
                    "ignoring truncated last line of results file");
                break;
            }
            Err(source) => {
                return Err(ReportError::Json {
                    path: path.to_path_buf(),
                    line: Some(lineno),
                    source,
                })
            }
        };
        match parsed {
            Line::Run(r) => {
                if info.is_none() {
                    info = Some(*r);
                }
            }
            Line::Selected(s) => selected.get_or_insert_with(Vec::new).extend(s.tests),
            Line::End(e) => ended = Some(e.status),
            Line::Test(t) => {
                let t = *t;
                if let Some(prev) = tests
                    .iter_mut()
                    .find(|p| p.name == t.name && p.platform == t.platform && p.arch == t.arch)
                {
                    *prev = t;
                } else {
                    tests.push(t);
                }
            }
        }
    }
    let info = info.ok_or_else(|| ReportError::format(path, "no {\"run\": ...} line"))?;
    let end = match (ended, &selected) {
        (Some(EndStatus::Completed), _) => RunEnd::Completed,
        (Some(EndStatus::Interrupted), _) => RunEnd::Interrupted,
        (None, Some(_)) => RunEnd::NotEnded,
        (None, None) => {
            tracing::warn!(path = %path.display(),
                "results file of an older bogie: it does not say which tests were selected \
                 or whether the run ended; a killed run's missing tests cannot be told");
            RunEnd::Unknown
        }
    };
    let reason = match end {
        RunEnd::Interrupted => "no result: the run was interrupted before this test reported",
        RunEnd::NotEnded => {
            "no result: the run did not end (bogie was killed or crashed) before this test reported"
        }
        RunEnd::Completed | RunEnd::Unknown => "no result: the run ended without reporting it",
    };
    let mut reported: HashSet<String> = tests.iter().map(|t| t.name.clone()).collect();
    for name in selected.unwrap_or_default() {
        if reported.insert(name.clone()) {
            tests.push(TestResult::not_run(
                &name,
                &info.platform,
                &info.arch,
                reason,
            ));
        }
    }
    Ok(RunReport { info, tests, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::testutil::*;
    use std::sync::Arc;

    fn names(r: &RunReport) -> Vec<String> {
        r.tests.iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn lines_are_appended_as_tests_finish() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        let sink = ResultsSink::create(dir.path(), &report.info, &names(&report)).unwrap();
        assert_eq!(sink.path(), dir.path().join("reports/results.jsonl"));
        let text = fs::read_to_string(sink.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("{\"run\":{\"id\":\"run-a\""), "{text}");
        assert_eq!(
            lines[1],
            "{\"selected\":{\"tests\":[\"cl.basic\",\"cl.etcd-member.discovery\",\
             \"coreos.ignition.once\",\"cl.filesystem\",\"cl.cloudinit.basic\",\
             \"coreos.selinux.enforce\",\"docker.base\"]}}"
        );
        for (i, t) in report.tests.iter().enumerate() {
            sink.record(t).unwrap();
            // Every prefix of the run is a readable file: what finished, then the rest as
            // not run, in a run that has not ended.
            let partial = read_results_jsonl(sink.path()).unwrap();
            assert_eq!(partial.end, RunEnd::NotEnded);
            assert_eq!(partial.tests[..=i], report.tests[..=i]);
            assert_eq!(partial.tests.len(), report.tests.len());
            for (got, want) in partial.tests[i + 1..].iter().zip(&report.tests[i + 1..]) {
                assert_eq!(
                    (got.name.as_str(), got.status),
                    (want.name.as_str(), Status::NotRun)
                );
            }
        }
        sink.finish(false).unwrap();
        let text = fs::read_to_string(sink.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3 + report.tests.len());
        assert!(lines[2..lines.len() - 1]
            .iter()
            .all(|l| l.starts_with("{\"test\":{")));
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(last["end"]["status"], "completed", "{text}");
        assert!(last["end"]["at"].is_string(), "{text}");
        assert_eq!(read_results_jsonl(sink.path()).unwrap(), report);
    }

    /// A sink for a run of cl.basic and docker.base in `dir`, cl.basic recorded.
    fn one_of_two_recorded(dir: &Path) -> (ResultsSink, RunReport) {
        let report = sample_report();
        let selected = vec!["cl.basic".to_string(), "docker.base".to_string()];
        let sink = ResultsSink::create(dir, &report.info, &selected).unwrap();
        sink.record(&report.tests[0]).unwrap();
        (sink, report)
    }

    #[test]
    fn a_killed_run_reads_as_not_ended_with_its_missing_tests_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, report) = one_of_two_recorded(dir.path());
        drop(sink);
        // The writer was killed in the middle of the second test's line.
        let mut text = fs::read_to_string(dir.path().join("reports/results.jsonl")).unwrap();
        text.push_str("{\"test\":{\"name\":\"docker.base\",\"sta");
        let back = parse_results_jsonl(&text, Path::new("results.jsonl")).unwrap();
        assert_eq!(back.end, RunEnd::NotEnded);
        assert_eq!(back.tests.len(), 2);
        assert_eq!(back.tests[0], report.tests[0]);
        let lost = &back.tests[1];
        assert_eq!(
            (lost.name.as_str(), lost.status),
            ("docker.base", Status::NotRun)
        );
        assert_eq!(
            (lost.platform.as_str(), lost.arch.as_str()),
            ("qemu", "amd64")
        );
        assert!(
            lost.skip_reason.as_deref().unwrap().contains("did not end"),
            "{lost:?}"
        );
        assert_eq!(back.summary().not_run, 1);
        assert_eq!(
            back.incomplete().as_deref(),
            Some(
                "the run did not end (killed or crashed, or still running); \
                 1 test(s) not run: docker.base"
            )
        );
        assert_eq!(back.overall(), Status::Fail);
    }

    #[test]
    fn an_interrupted_run_ends_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _) = one_of_two_recorded(dir.path());
        sink.finish(true).unwrap();
        let back = read_results_jsonl(sink.path()).unwrap();
        assert_eq!(back.end, RunEnd::Interrupted);
        assert_eq!(back.tests[1].status, Status::NotRun);
        assert!(back.tests[1]
            .skip_reason
            .as_deref()
            .unwrap()
            .contains("interrupted"));
        assert!(back
            .incomplete()
            .unwrap()
            .starts_with("the run was interrupted;"));
    }

    #[test]
    fn an_older_file_without_the_selection_is_read_as_unknown() {
        let report = sample_report();
        let mut text = encode(&Line::Run(Box::new(report.info.clone()))).unwrap();
        for t in &report.tests[..3] {
            text.push_str(&encode(&Line::Test(Box::new(t.clone()))).unwrap());
        }
        let back = parse_results_jsonl(&text, Path::new("old.jsonl")).unwrap();
        assert_eq!(back.end, RunEnd::Unknown);
        assert_eq!(back.tests, report.tests[..3]);
        assert_eq!(
            back.incomplete(),
            None,
            "an unknown ending passes, with a warning"
        );
    }

    #[test]
    fn whole_reports_round_trip_with_every_ending() {
        for end in [
            RunEnd::Completed,
            RunEnd::Interrupted,
            RunEnd::NotEnded,
            RunEnd::Unknown,
        ] {
            let mut report = sample_report();
            report.end = end;
            if end != RunEnd::Unknown {
                report.tests.push(not_run("cl.never"));
            }
            let text = to_jsonl(&report).unwrap();
            assert_eq!(
                text.lines().nth(1).unwrap().starts_with("{\"selected\":"),
                end != RunEnd::Unknown,
                "{end:?}"
            );
            let back = parse_results_jsonl(&text, Path::new("x")).unwrap();
            assert_eq!(back, report, "{end:?}");
        }
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        let sink = Arc::new(ResultsSink::create(dir.path(), &report.info, &[]).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let sink = sink.clone();
                let mut t = report.tests[0].clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        t.name = format!("cl.t{i}.{j}");
                        sink.record(&t).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let back = read_results_jsonl(sink.path()).unwrap();
        assert_eq!(back.tests.len(), 80);
    }

    #[test]
    fn truncated_last_line_is_tolerated_and_cut_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        let path = dir.path().join("results.jsonl");
        write_results_jsonl(&report, &path).unwrap();
        // Simulate a writer killed mid-line.
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("{\"test\":{\"name\":\"cl.half\",\"sta");
        fs::write(&path, &text).unwrap();
        let back = read_results_jsonl(&path).unwrap();
        assert_eq!(back.tests.len(), report.tests.len());

        let sink = ResultsSink::open_append(&path).unwrap();
        let mut extra = report.tests[0].clone();
        extra.name = "cl.resumed".into();
        sink.record(&extra).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("cl.half"));
        let back = read_results_jsonl(&path).unwrap();
        assert_eq!(back.tests.last().unwrap().name, "cl.resumed");
        assert_eq!(back.tests.len(), report.tests.len() + 1);
    }

    #[test]
    fn bad_middle_line_is_an_error_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let report = sample_report();
        let good = to_jsonl(&report).unwrap();
        let mut lines: Vec<&str> = good.lines().collect();
        lines.insert(2, "{garbage");
        fs::write(&path, lines.join("\n")).unwrap();
        let err = read_results_jsonl(&path).unwrap_err();
        assert!(
            matches!(err, ReportError::Json { line: Some(3), .. }),
            "{err}"
        );
        assert!(err.to_string().contains("results.jsonl:3"), "{err}");
    }

    #[test]
    fn later_line_for_the_same_test_wins() {
        let report = sample_report();
        let mut text = to_jsonl(&report).unwrap();
        let mut again = report.tests[0].clone();
        again.status = Status::Fail;
        text.push_str(&encode(&Line::Test(Box::new(again))).unwrap());
        let back = parse_results_jsonl(&text, Path::new("x")).unwrap();
        assert_eq!(back.tests.len(), report.tests.len());
        assert_eq!(back.tests[0].status, Status::Fail);
    }

    #[test]
    fn missing_run_line_is_an_error() {
        let err = parse_results_jsonl("", Path::new("empty.jsonl")).unwrap_err();
        assert!(err.to_string().contains("no {\"run\""), "{err}");
    }
}
