//! The progress display: live lines per running test on a terminal (indicatif), plain lines
//! when stdout is not a terminal or `CI` is set; and the final summary.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use bogie_harness::schedule::Event;
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
                ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} {msg}")
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
        Progress {
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
        }
    }

    fn totals(&self) -> String {
        let eta = if self.done_run > 0 && self.planned > self.done_run {
            let avg: Duration = self.durations.iter().sum::<Duration>() / self.done_run as u32;
            let left = avg * (self.planned - self.done_run) as u32;
            format!(", ~{}s left", left.as_secs())
        } else {
            String::new()
        };
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
                match &mut self.live {
                    Some(l) => {
                        let pb = l.multi.insert_before(&l.main, ProgressBar::new_spinner());
                        pb.set_style(
                            ProgressStyle::with_template(
                                "  {spinner} {prefix:<40} {msg} {elapsed}",
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
                }
                None => println!("    {name}: {}", phase.as_str()),
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
            Status::Fail | Status::Warn => self.failed += 1,
            Status::Flaky => self.flaky += 1,
            Status::Skip => self.skipped += 1,
        }
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
        let _ = self.start;
    }
}

fn result_line(r: &TestResult) -> String {
    let secs = r.duration().as_secs_f64();
    match r.status {
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
    }
}

/// Prints the final summary: counts, each failure with its class, reason and artifacts,
/// kept machines and where the reports are.
pub fn print_summary(report: &RunReport, out: &Path, key_path: &Path) {
    let s = report.summary();
    println!();
    for t in report
        .tests
        .iter()
        .filter(|t| t.status == Status::Fail || t.status == Status::Warn)
    {
        if let Some(f) = t.last_failure() {
            println!("FAIL {} [{}] {}", t.name, f.class, f.message);
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
    let kept: Vec<String> = report
        .tests
        .iter()
        .flat_map(|t| t.attempts.iter().flat_map(|a| a.machines.iter()))
        .filter_map(|m| m.kept_ssh.clone())
        .collect();
    if !kept.is_empty() {
        println!("kept machines (key {}):", key_path.display());
        for k in &kept {
            println!("    {k}");
        }
        println!("tear them down with: bogie down {}", out.display());
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
