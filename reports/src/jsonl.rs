//! `reports/results.jsonl`: one JSON object per line, appended as each test finishes, so a run
//! that is killed still leaves valid results for every test that finished.
//!
//! The first line is the run, `{"run": {...RunInfo}}`; every further line is one test,
//! `{"test": {...TestResult}}`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::{RunInfo, RunReport, TestResult};

/// The file name under `<out>/reports/`.
pub const RESULTS_JSONL: &str = "results.jsonl";

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Line {
    #[serde(rename = "run")]
    Run(Box<RunInfo>),
    #[serde(rename = "test")]
    Test(Box<TestResult>),
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
    /// line.
    pub fn create(out_dir: impl AsRef<Path>, info: &RunInfo) -> Result<Self> {
        let path = out_dir.as_ref().join("reports").join(RESULTS_JSONL);
        Self::create_at(path, info)
    }

    /// Like [`ResultsSink::create`], at an explicit file path.
    pub fn create_at(path: impl Into<PathBuf>, info: &RunInfo) -> Result<Self> {
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

/// Renders a whole report as JSON lines (run line first, then the tests in order).
pub fn to_jsonl(report: &RunReport) -> Result<String> {
    let mut out = encode(&Line::Run(Box::new(report.info.clone())))?;
    for t in &report.tests {
        out.push_str(&encode(&Line::Test(Box::new(t.clone())))?);
    }
    Ok(out)
}

/// Writes a whole report as `results.jsonl`, atomically (used after a merge or a rerun).
pub fn write_results_jsonl(report: &RunReport, path: impl AsRef<Path>) -> Result<()> {
    write_atomic(path, to_jsonl(report)?)
}

/// Reads `results.jsonl`. A truncated or garbled *last* line (a killed writer) is ignored with
/// a warning; a bad line elsewhere is an error. When a test appears twice for the same
/// platform and arch, the later line wins (it keeps the first one's position).
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
    Ok(RunReport { info, tests })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    use crate::testutil::*;
    use std::sync::Arc;

    #[test]
    fn lines_are_appended_as_tests_finish() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        let sink = ResultsSink::create(dir.path(), &report.info).unwrap();
        assert_eq!(sink.path(), dir.path().join("reports/results.jsonl"));
        let text = fs::read_to_string(sink.path()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("{\"run\":{\"id\":\"run-a\""), "{text}");
        for t in &report.tests {
            sink.record(t).unwrap();
            // Every prefix of the run is a readable file.
            let partial = read_results_jsonl(sink.path()).unwrap();
            assert_eq!(partial.tests.last(), Some(t));
        }
        let text = fs::read_to_string(sink.path()).unwrap();
        assert_eq!(text.lines().count(), 1 + report.tests.len());
        assert!(text.lines().skip(1).all(|l| l.starts_with("{\"test\":{")));
        assert_eq!(read_results_jsonl(sink.path()).unwrap(), report);
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let report = sample_report();
        let sink = Arc::new(ResultsSink::create(dir.path(), &report.info).unwrap());
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
