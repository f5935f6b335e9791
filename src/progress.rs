//! The progress display: live lines per running test on a terminal (indicatif), plain lines
//! when stdout is not a terminal or `CI` is set; and the final summary.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use bogie_harness::schedule::Event;

use crate::host::{same_file, which};
use bogie_reports::{RunReport, Status, TestResult};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows the run's progress.
pub struct Progress {
    live: Option<Live>,
    start: Instant,
    total: usize,
    planned: usize,
    done_run: usize,
    passed: usize,
    failed: usize,
    flaky: usize,
    skipped: usize,
    durations: Vec<Duration>,
    /// Start of each running test's current attempt.
    running: HashMap<String, Instant>,
    /// The most tests seen running at once (the run's effective parallelism).
    max_running: usize,
}

struct Live {
    multi: MultiProgress,
    main: ProgressBar,
    tests: HashMap<String, ProgressBar>,
}

/// Whether to draw live progress: a terminal on stdout and no `CI` variable.
pub fn interactive() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("CI").is_none()
}

impl Progress {
    /// A display for `total` selected tests of which `planned` will run.
    pub fn new(total: usize, planned: usize) -> Progress {
        let live = interactive().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let main = multi.add(ProgressBar::new(planned as u64));
            main.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {pos}/{len} tests, {elapsed} elapsed: {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            main.set_prefix("bogie");
            main.enable_steady_tick(Duration::from_millis(500));
            Live {
                multi,
                main,
                tests: HashMap::new(),
            }
        });
        if live.is_none() {
            println!("bogie: {planned} of {total} selected tests to run");
        }
        let p = Progress {
            live,
            start: Instant::now(),
            total,
            planned,
            done_run: 0,
            passed: 0,
            failed: 0,
            flaky: 0,
            skipped: 0,
            durations: Vec::new(),
            running: HashMap::new(),
            max_running: 1,
        };
        if let Some(l) = &p.live {
            l.main.set_message(p.totals());
        }
        p
    }

    fn totals(&self) -> String {
        let eta = estimate(
            &self.durations,
            self.planned.saturating_sub(self.done_run),
            &self
                .running
                .values()
                .map(Instant::elapsed)
                .collect::<Vec<_>>(),
            self.max_running,
        )
        .map(|left| format!(", ~{} left", fmt_duration(left)))
        .unwrap_or_default();
        format!(
            "{} passed, {} failed, {} flaky, {} skipped{eta}",
            self.passed, self.failed, self.flaky, self.skipped
        )
    }

    /// Takes one scheduler event.
    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Started { name, attempt } => {
                let what = if *attempt > 1 {
                    format!("rerun {attempt}")
                } else {
                    "started".to_string()
                };
                self.running.insert(name.clone(), Instant::now());
                self.max_running = self.max_running.max(self.running.len());
                match &mut self.live {
                    Some(l) => {
                        let pb = l.multi.insert_before(&l.main, ProgressBar::new_spinner());
                        pb.set_style(
                            ProgressStyle::with_template(
                                "  {spinner} {prefix:<40} {msg:<16} {elapsed:>4}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        pb.set_prefix(name.clone());
                        pb.set_message(what);
                        pb.enable_steady_tick(Duration::from_millis(250));
                        if let Some(old) = l.tests.insert(name.clone(), pb) {
                            old.finish_and_clear();
                        }
                    }
                    None => println!("=== RUN   {name} ({what})"),
                }
            }
            Event::Phase { name, phase } => match &self.live {
                Some(l) => {
                    if let Some(pb) = l.tests.get(name) {
                        pb.set_message(phase.as_str());
                    }
                    l.main.set_message(self.totals());
                }
                None => {
                    let secs = self
                        .running
                        .get(name)
                        .map(|t| t.elapsed().as_secs())
                        .unwrap_or(0);
                    println!("    {name}: {} ({secs}s)", phase.as_str());
                }
            },
            Event::Retrying { name, reason } => {
                let line = format!("--- RETRY {name}: {reason}");
                match &self.live {
                    Some(l) => l.multi.println(line).unwrap_or(()),
                    None => println!("{line}"),
                }
            }
            Event::Finished(r) => self.finished(r),
        }
    }

    fn finished(&mut self, r: &TestResult) {
        match r.status {
            Status::Pass => self.passed += 1,
            Status::Fail | Status::Warn | Status::NotRun => self.failed += 1,
            Status::Flaky => self.flaky += 1,
            Status::Skip => self.skipped += 1,
        }
        self.running.remove(&r.name);
        let ran = !r.attempts.is_empty();
        if ran {
            self.done_run += 1;
            self.durations.push(r.duration());
        }
        let line = result_line(r);
        let totals = self.totals();
        match &mut self.live {
            Some(l) => {
                if let Some(pb) = l.tests.remove(&r.name) {
                    pb.finish_and_clear();
                }
                if ran {
                    l.main.inc(1);
                }
                l.main.set_message(totals);
                if ran || r.status != Status::Skip {
                    let _ = l.multi.println(line);
                }
            }
            None => {
                if ran {
                    println!("{line}");
                    println!(
                        "    [{}/{} done in {}: {totals}]",
                        self.done_run,
                        self.planned,
                        fmt_duration(self.start.elapsed())
                    );
                }
            }
        }
    }

    /// Clears the live display.
    pub fn finish(&mut self) {
        if let Some(l) = self.live.take() {
            for (_, pb) in l.tests {
                pb.finish_and_clear();
            }
            l.main.finish_and_clear();
        }
        let _ = self.total;
    }
}

/// How long the rest of the run takes: the tests left (`left`, including the running ones)
/// at the mean duration of finished ones, `parallel` at a time, minus what the running ones
/// have already spent. None before a test finished.
pub fn estimate(
    finished: &[Duration],
    left: usize,
    running: &[Duration],
    parallel: usize,
) -> Option<Duration> {
    if finished.is_empty() || left == 0 {
        return None;
    }
    let mean = finished.iter().sum::<Duration>() / finished.len() as u32;
    let spent: Duration = running.iter().map(|d| (*d).min(mean)).sum();
    let work = (mean * left as u32).saturating_sub(spent);
    Some(work / parallel.clamp(1, left) as u32)
}

/// `42s`, `3m05s`, `1h02m`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// `text` as it may be printed: on a terminal as it is, else without ANSI escapes (a
/// guest's coloured console line in a failure message stays colourless in a log file).
pub fn shown(text: &str) -> String {
    if std::io::stdout().is_terminal() {
        text.to_string()
    } else {
        bogie_harness::checks::strip_ansi(text)
    }
}

fn result_line(r: &TestResult) -> String {
    let secs = r.duration().as_secs_f64();
    let line = match r.status {
        Status::Pass => format!("--- PASS: {} ({secs:.1}s)", r.name),
        Status::Flaky => format!(
            "--- FLAKY: {} ({secs:.1}s, passed on attempt {})",
            r.name,
            r.attempts.len()
        ),
        Status::Skip => format!(
            "--- SKIP: {}: {}",
            r.name,
            r.skip_reason.as_deref().unwrap_or("")
        ),
        Status::NotRun => format!(
            "--- NOT RUN: {}: {}",
            r.name,
            r.skip_reason.as_deref().unwrap_or("")
        ),
        Status::Fail | Status::Warn => {
            let word = if r.status == Status::Warn {
                "WARN"
            } else {
                "FAIL"
            };
            match r.last_failure() {
                Some(f) => format!(
                    "--- {word}: {} ({secs:.1}s) [{}] {}",
                    r.name, f.class, f.message
                ),
                None => format!("--- {word}: {} ({secs:.1}s)", r.name),
            }
        }
    };
    shown(&line)
}

/// Prints the final summary: counts, each failure with its class, reason and artifacts,
/// kept machines with their ssh lines and the teardown command, and where the reports are.
pub fn print_summary(report: &RunReport, out: &Path, key_path: &Path) {
    let s = report.summary();
    println!();
    for t in report
        .tests
        .iter()
        .filter(|t| t.status == Status::Fail || t.status == Status::Warn)
    {
        let word = if t.status == Status::Warn {
            "WARN"
        } else {
            "FAIL"
        };
        match t.last_failure() {
            Some(f) => println!("{word} {} [{}] {}", t.name, f.class, shown(&f.message)),
            None => println!("{word} {}", t.name),
        }
        if let Some(a) = t.attempts.last() {
            for m in &a.machines {
                for (what, p) in [
                    ("console", &m.console),
                    ("journal", &m.journal),
                    ("ignition", &m.ignition),
                ] {
                    if let Some(p) = p {
                        println!("    {what}: {}", out.join(p).display());
                    }
                }
            }
        }
    }
    let kept: Vec<(&str, &str, &str)> = report
        .tests
        .iter()
        .flat_map(|t| {
            t.attempts.iter().flat_map(move |a| {
                a.machines.iter().filter_map(move |m| {
                    Some((t.name.as_str(), m.id.as_str(), m.kept_ssh.as_deref()?))
                })
            })
        })
        .collect();
    if !kept.is_empty() {
        println!("kept machines (key {}):", key_path.display());
        for (test, id, ssh) in &kept {
            println!("  {test} {id}:");
            println!("    {ssh}");
        }
        println!("tear them down with: {}", teardown_command(out));
    }
    println!(
        "{} passed, {} failed, {} flaky, {} skipped, {} warned",
        s.passed, s.failed, s.flaky, s.skipped, s.warned
    );
    println!(
        "reports: {}",
        out.join("reports").join("junit.xml").display()
    );
}

/// The command line that tears down the machines kept under `out_dir`: `bogie down DIR`,
/// naming this binary by its path when it is not the `bogie` found on the PATH.
pub fn teardown_command(out_dir: &Path) -> String {
    let dir = bogie_harness::text::shell_quote(&out_dir.display().to_string());
    let exe = std::env::current_exe().ok();
    let on_path = exe.as_ref().is_some_and(|e| {
        e.file_name().is_some_and(|n| n == "bogie")
            && which("bogie").is_some_and(|p| same_file(&p, e))
    });
    match exe {
        Some(e) if !on_path && e.file_name().is_some_and(|n| n == "bogie") => format!(
            "{} down {dir}",
            bogie_harness::text::shell_quote(&e.display().to_string())
        ),
        _ => format!("bogie down {dir}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_account_for_parallelism_and_running_tests() {
        let m = Duration::from_secs;
        assert_eq!(estimate(&[], 3, &[], 1), None);
        assert_eq!(estimate(&[m(60)], 0, &[], 1), None);
        // 4 tests left at 60s, 2 at a time.
        assert_eq!(estimate(&[m(40), m(80)], 4, &[], 2), Some(m(120)));
        // One left, already 45s into it.
        assert_eq!(estimate(&[m(60)], 1, &[m(45)], 4), Some(m(15)));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_secs(42)), "42s");
        assert_eq!(fmt_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(fmt_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn teardown_names_bogie_down() {
        let t = teardown_command(Path::new("/tmp/run dir"));
        assert!(t.ends_with(" down '/tmp/run dir'"), "{t}");
    }
}
