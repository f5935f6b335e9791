//! `bogie report merge|matrix|diff`: work on finished runs' result files, on any host.
//!
//! A run that did not end (bogie killed: `results.jsonl` has no end record) or was interrupted,
//! and the selected tests it never reported (`not-run`), fail `merge` and `diff` (exit 1) and
//! are named by all three.
//!
//! Every input is a run output dir (`reports/results.jsonl`, else `reports/report.json`,
//! TAP, JUnit) or one of those files, as [`bogie_reports::matrix::load_run`] reads them.

use bogie_reports::diff::diff_runs;
use bogie_reports::matrix::{build_matrix, to_markdown, write_matrix};
use bogie_reports::merge::{merge_runs, write_all};

use super::gating::{gate, load};
use crate::cli::{ReportCommand, ReportDiffArgs, ReportMatrixArgs, ReportMergeArgs};
use crate::input_error;
use crate::options::{Output, ReportOptions};

/// Runs a `bogie report` subcommand; returns the exit code.
pub fn report(o: ReportOptions) -> anyhow::Result<u8> {
    match o.command {
        ReportCommand::Merge(a) => merge(&o.output, a),
        ReportCommand::Matrix(a) => matrix(a),
        ReportCommand::Diff(a) => diff(a),
    }
}

fn merge(out: &Output, a: ReportMergeArgs) -> anyhow::Result<u8> {
    let runs = a
        .dirs
        .iter()
        .map(|d| load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shards: Vec<String> = runs
        .iter()
        .map(|r| r.info.shard.clone().unwrap_or_else(|| "unsharded".into()))
        .collect();
    // A run that did not end (killed) or was interrupted fails the gate, even when another
    // run supplies the results it lacks.
    let unended: Vec<String> = a
        .dirs
        .iter()
        .zip(&runs)
        .filter_map(|(d, r)| Some(format!("{}: the run {}", d.display(), r.end.problem()?)))
        .collect();
    let mut merged = merge_runs(runs).map_err(|e| input_error(e.to_string()))?;
    merged.tests.sort_by(|x, y| x.name.cmp(&y.name));
    let reports = a.output.join("reports");
    std::fs::create_dir_all(&reports)
        .map_err(|e| input_error(format!("creating {}: {e}", reports.display())))?;
    let written = write_all(&merged, &a.output, out.tapfile.as_deref(), out.tap_format)?;
    write_matrix(std::slice::from_ref(&merged), &reports)?;
    let s = merged.summary();
    let not_run = if s.not_run > 0 {
        format!(", {} not run", s.not_run)
    } else {
        String::new()
    };
    println!(
        "merged {} run(s) ({}): {} tests: {} passed, {} failed, {} flaky, {} skipped, {} warned{not_run}",
        a.dirs.len(),
        shards.join(", "),
        merged.tests.len(),
        s.passed,
        s.failed,
        s.flaky,
        s.skipped,
        s.warned
    );
    for p in written {
        println!("  {}", p.display());
    }
    println!("  {}", reports.join("matrix.md").display());
    for line in &unended {
        eprintln!("error: {line}");
    }
    let missing: Vec<&str> = merged.not_run().iter().map(|t| t.name.as_str()).collect();
    if !missing.is_empty() {
        eprintln!(
            "error: {} test(s) not run (no result): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    Ok(gate(&merged, a.allow_flaky))
}

fn matrix(a: ReportMatrixArgs) -> anyhow::Result<u8> {
    let runs = a
        .runs
        .iter()
        .map(|d| load(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let m = match &a.output {
        Some(out) => {
            std::fs::create_dir_all(out)
                .map_err(|e| input_error(format!("creating {}: {e}", out.display())))?;
            let m = write_matrix(&runs, out)?;
            for f in ["matrix.md", "matrix.html", "matrix.json"] {
                println!("{}", out.join(f).display());
            }
            m
        }
        None => {
            let m = build_matrix(&runs);
            print!("{}", to_markdown(&m));
            m
        }
    };
    // The matrix is a report, not a gate: incomplete runs are named, the exit stays 0.
    for line in &m.incomplete {
        eprintln!("warning: {line}");
    }
    Ok(0)
}

fn diff(a: ReportDiffArgs) -> anyhow::Result<u8> {
    let old = load(&a.old)?;
    let new = load(&a.new)?;
    let d = diff_runs(&old, &new);
    if a.json {
        println!("{}", d.to_json()?);
    } else {
        print!("{}", d.render_text());
    }
    Ok(u8::from(d.fails_gate()))
}
