//! The per-arch failure matrix: one row per test, one column per (arch, platform), across any
//! number of runs; counts per column; tests that fail only on arm64; failures grouped by
//! (class, signature). Written as `matrix.md`, a self-contained `matrix.html` and
//! `matrix.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::jsonl::{read_results_jsonl, RESULTS_JSONL};
use crate::junit::{one_line, read_junit, JUNIT_XML};
use crate::kola_json::{apply_kola_properties, read_report_json, REPORT_JSON};
use crate::model::*;
use crate::tap::{read_tap, TEST_TAP};

/// The most lines of a group's example excerpt.
pub const EXAMPLE_LINES: usize = 15;

/// One column of the matrix: an architecture on a platform. Sorted by arch, then platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Column {
    /// `amd64`, `arm64`.
    pub arch: String,
    /// `qemu`, `aws`, ...
    pub platform: String,
}

impl Column {
    /// `arch/platform`, as the matrix headers show it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.arch, self.platform)
    }

    fn is_arm64(&self) -> bool {
        matches!(self.arch.as_str(), "arm64" | "aarch64")
    }

    fn is_amd64(&self) -> bool {
        matches!(self.arch.as_str(), "amd64" | "x86_64")
    }
}

/// What a cell shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellStatus {
    /// Passed first time.
    Pass,
    /// Failed.
    Fail,
    /// Failed, then passed.
    Flaky,
    /// Skipped (the cell's reason says why).
    Skip,
    /// Failed, warn-only.
    Warn,
    /// No run had this test in this column.
    NotRun,
}

impl CellStatus {
    /// Every status, in legend order.
    pub const ALL: [CellStatus; 6] = [
        CellStatus::Pass,
        CellStatus::Flaky,
        CellStatus::Fail,
        CellStatus::Warn,
        CellStatus::Skip,
        CellStatus::NotRun,
    ];

    /// Lower-case name (`pass`, ..., `not-run`).
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Pass => "pass",
            CellStatus::Fail => "fail",
            CellStatus::Flaky => "flaky",
            CellStatus::Skip => "skip",
            CellStatus::Warn => "warn",
            CellStatus::NotRun => "not-run",
        }
    }

    /// A run that ran the test beats a skip, which beats nothing.
    fn rank(self) -> u8 {
        match self {
            CellStatus::NotRun => 0,
            CellStatus::Skip => 1,
            _ => 2,
        }
    }

    fn is_failure(self) -> bool {
        matches!(self, CellStatus::Fail | CellStatus::Warn)
    }

    fn ran(self) -> bool {
        self.rank() == 2
    }
}

impl From<Status> for CellStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pass => CellStatus::Pass,
            Status::Fail => CellStatus::Fail,
            Status::Flaky => CellStatus::Flaky,
            Status::Skip => CellStatus::Skip,
            Status::Warn => CellStatus::Warn,
            Status::NotRun => CellStatus::NotRun,
        }
    }
}

/// One (test, column) outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The outcome.
    pub status: CellStatus,
    /// The skip reason, or the one-line failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The failure's class (failed, warned and flaky cells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// The failure's signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The run the result came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Cell {
    fn not_run() -> Self {
        Cell {
            status: CellStatus::NotRun,
            reason: None,
            class: None,
            signature: None,
            run_id: None,
        }
    }
}

/// One test across every column (`cells[i]` belongs to `columns[i]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The test's name.
    pub test: String,
    /// One cell per column.
    pub cells: Vec<Cell>,
}

/// How many cells of a column have each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnCounts {
    /// The column's label.
    pub column: String,
    /// Passed.
    pub pass: usize,
    /// Failed.
    pub fail: usize,
    /// Flaky.
    pub flaky: usize,
    /// Skipped.
    pub skip: usize,
    /// Warn-only failures.
    pub warn: usize,
    /// Not run.
    pub not_run: usize,
}

/// A test that fails on arm64 but passes on amd64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm64Only {
    /// The test's name.
    pub test: String,
    /// The arm64 columns it failed in.
    pub failing: Vec<String>,
    /// The amd64 columns it passed (or was flaky) in.
    pub passing: Vec<String>,
    /// Class of the first arm64 failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
    /// Signature of the first arm64 failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One failing (test, column) in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// The test's name.
    pub test: String,
    /// The column's label.
    pub column: String,
    /// `fail` or `warn`.
    pub status: CellStatus,
}

/// Failures with the same class and signature: probably one cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureGroup {
    /// The class.
    pub class: FailureClass,
    /// The signature (may be empty when a reader could not tell).
    pub signature: String,
    /// The first member's message and excerpt, at most [`EXAMPLE_LINES`] lines.
    pub example: String,
    /// Every failing (test, column), sorted.
    pub members: Vec<GroupMember>,
}

/// The whole matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// The runs it was built from, oldest first.
    pub runs: Vec<RunInfo>,
    /// One line per run that cannot pass the gate: it did not end, was interrupted, or has
    /// tests without a result (their cells say `not-run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<String>,
    /// The columns, sorted by arch then platform.
    pub columns: Vec<Column>,
    /// One row per test, sorted by name.
    pub rows: Vec<Row>,
    /// Counts per column (same order as `columns`).
    pub counts: Vec<ColumnCounts>,
    /// Tests failing on arm64 but passing on every amd64 column where they ran.
    pub arm64_only: Vec<Arm64Only>,
    /// Failure groups, largest first (real failures before warn-only ones on ties).
    pub groups: Vec<FailureGroup>,
}

fn example_of(t: &TestResult) -> String {
    let Some(f) = t.last_failure() else {
        return String::new();
    };
    let mut text = one_line(f);
    let excerpt = f.excerpt.trim_end();
    if !excerpt.is_empty() && excerpt.trim() != text {
        text.push('\n');
        text.push_str(excerpt);
    }
    text.lines()
        .take(EXAMPLE_LINES)
        .collect::<Vec<_>>()
        .join("\n")
}

fn cell_of(t: &TestResult, run_id: &str) -> Cell {
    let status = CellStatus::from(t.status);
    let failure = match t.status {
        Status::Fail | Status::Warn | Status::Flaky => t.last_failure(),
        _ => None,
    };
    let reason = match t.status {
        Status::Skip | Status::NotRun => t.skip_reason.clone(),
        _ => failure.map(one_line),
    };
    Cell {
        status,
        reason,
        class: failure.map(|f| f.class),
        signature: failure.map(|f| f.signature.clone()),
        run_id: (!run_id.is_empty()).then(|| run_id.to_string()),
    }
}

/// Builds the matrix from any number of runs (shards, reruns, arches, platforms). When
/// several runs have the same (test, column), a run that ran the test beats a skip, and
/// among equals the later run (by start time, then by order given) wins.
pub fn build_matrix(reports: &[RunReport]) -> Matrix {
    let mut order: Vec<&RunReport> = reports.iter().collect();
    order.sort_by_key(|r| r.info.started); // stable: ties keep the order given
    let mut cells: BTreeMap<(String, Column), (Cell, String)> = BTreeMap::new();
    for r in &order {
        for t in &r.tests {
            let pick = |own: &str, run: &str| {
                if !own.is_empty() {
                    own.to_string()
                } else if !run.is_empty() {
                    run.to_string()
                } else {
                    "unknown".to_string()
                }
            };
            let col = Column {
                arch: pick(&t.arch, &r.info.arch),
                platform: pick(&t.platform, &r.info.platform),
            };
            let cell = cell_of(t, &r.info.id);
            let key = (t.name.clone(), col);
            let keep_old = cells
                .get(&key)
                .is_some_and(|(old, _)| old.status.rank() > cell.status.rank());
            if !keep_old {
                cells.insert(key, (cell, example_of(t)));
            }
        }
    }
    let columns: Vec<Column> = cells
        .keys()
        .map(|(_, c)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tests: BTreeSet<&String> = cells.keys().map(|(t, _)| t).collect();
    let rows: Vec<Row> = tests
        .iter()
        .map(|&test| Row {
            test: test.clone(),
            cells: columns
                .iter()
                .map(|c| {
                    cells
                        .get(&(test.clone(), c.clone()))
                        .map(|(cell, _)| cell.clone())
                        .unwrap_or_else(Cell::not_run)
                })
                .collect(),
        })
        .collect();

    let counts = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut n = ColumnCounts {
                column: c.label(),
                ..ColumnCounts::default()
            };
            for row in &rows {
                match row.cells[i].status {
                    CellStatus::Pass => n.pass += 1,
                    CellStatus::Fail => n.fail += 1,
                    CellStatus::Flaky => n.flaky += 1,
                    CellStatus::Skip => n.skip += 1,
                    CellStatus::Warn => n.warn += 1,
                    CellStatus::NotRun => n.not_run += 1,
                }
            }
            n
        })
        .collect();

    let mut arm64_only = Vec::new();
    for row in &rows {
        let mut failing = Vec::new();
        let mut passing = Vec::new();
        let mut amd_failed = false;
        let mut first: Option<&Cell> = None;
        for (c, cell) in columns.iter().zip(&row.cells) {
            if c.is_arm64() && cell.status.is_failure() {
                failing.push(c.label());
                first.get_or_insert(cell);
            } else if c.is_amd64() && cell.status.ran() {
                if cell.status.is_failure() {
                    amd_failed = true;
                } else {
                    passing.push(c.label());
                }
            }
        }
        if !failing.is_empty() && !passing.is_empty() && !amd_failed {
            arm64_only.push(Arm64Only {
                test: row.test.clone(),
                failing,
                passing,
                class: first.and_then(|c| c.class),
                signature: first.and_then(|c| c.signature.clone()),
            });
        }
    }

    let mut groups: BTreeMap<(FailureClass, String), FailureGroup> = BTreeMap::new();
    for ((test, col), (cell, example)) in &cells {
        if !cell.status.is_failure() {
            continue;
        }
        let class = cell.class.unwrap_or(FailureClass::Assertion);
        let signature = cell.signature.clone().unwrap_or_default();
        let g = groups
            .entry((class, signature.clone()))
            .or_insert_with(|| FailureGroup {
                class,
                signature,
                example: example.clone(),
                members: Vec::new(),
            });
        g.members.push(GroupMember {
            test: test.clone(),
            column: col.label(),
            status: cell.status,
        });
    }
    let mut groups: Vec<FailureGroup> = groups.into_values().collect();
    let fails = |g: &FailureGroup| {
        g.members
            .iter()
            .filter(|m| m.status == CellStatus::Fail)
            .count()
    };
    groups.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(fails(b).cmp(&fails(a)))
            .then(a.class.cmp(&b.class))
            .then(a.signature.cmp(&b.signature))
    });

    let incomplete = order
        .iter()
        .filter_map(|r| {
            let why = r.incomplete()?;
            let mut label = if r.info.id.is_empty() {
                "?".to_string()
            } else {
                r.info.id.clone()
            };
            if let Some(sh) = &r.info.shard {
                label.push_str(&format!(" (shard {sh})"));
            }
            Some(format!("run {label}: {why}"))
        })
        .collect();
    Matrix {
        runs: order.iter().map(|r| r.info.clone()).collect(),
        incomplete,
        columns,
        rows,
        counts,
        arm64_only,
        groups,
    }
}

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn cell_text(cell: &Cell) -> String {
    match cell.status {
        CellStatus::Fail => match cell.class {
            Some(c) => format!("**FAIL** ({c})"),
            None => "**FAIL**".to_string(),
        },
        CellStatus::Warn => match cell.class {
            Some(c) => format!("warn ({c})"),
            None => "warn".to_string(),
        },
        CellStatus::Skip => match cell.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("skip ({})", short(r, 60)),
            None => "skip".to_string(),
        },
        s => s.as_str().to_string(),
    }
}

fn runs_line(m: &Matrix) -> String {
    m.runs
        .iter()
        .map(|r| {
            let mut s = format!(
                "{} ({}/{}",
                if r.id.is_empty() { "?" } else { &r.id },
                r.arch,
                r.platform
            );
            if !r.version.is_empty() {
                s.push_str(&format!(", {}", r.version));
            }
            if let Some(sh) = &r.shard {
                s.push_str(&format!(", shard {sh}"));
            }
            s.push_str(&format!(", {})", r.started.format("%Y-%m-%d %H:%M UTC")));
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Renders the matrix as Markdown: the arm64-only failures, the table with counts, then the
/// failure groups with their example excerpts.
pub fn to_markdown(m: &Matrix) -> String {
    let mut out = String::from("# bogie test matrix\n\n");
    let _ = writeln!(out, "Runs: {}\n", md_cell(&runs_line(m)));
    for line in &m.incomplete {
        let _ = writeln!(out, "**Incomplete:** {}\n", md_cell(line));
    }

    out.push_str("## arm64-only failures\n\n");
    if m.arm64_only.is_empty() {
        out.push_str("None.\n\n");
    } else {
        out.push_str(
            "| test | fails on | passes on | class | signature |\n|---|---|---|---|---|\n",
        );
        for a in &m.arm64_only {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | `{}` |",
                md_cell(&a.test),
                a.failing.join(", "),
                a.passing.join(", "),
                a.class.map_or("", |c| c.as_str()),
                md_cell(a.signature.as_deref().unwrap_or("")).replace('`', "'")
            );
        }
        out.push('\n');
    }

    out.push_str("## Results\n\n| test |");
    for c in &m.columns {
        let _ = write!(out, " {} |", md_cell(&c.label()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(m.columns.len()));
    out.push('\n');
    for row in &m.rows {
        let _ = write!(out, "| {} |", md_cell(&row.test));
        for cell in &row.cells {
            let _ = write!(out, " {} |", md_cell(&cell_text(cell)));
        }
        out.push('\n');
    }
    out.push_str("| **counts** |");
    for n in &m.counts {
        let _ = write!(
            out,
            " {} pass, {} fail, {} flaky, {} warn, {} skip, {} not run |",
            n.pass, n.fail, n.flaky, n.warn, n.skip, n.not_run
        );
    }
    out.push_str("\n\n## Failure groups\n\n");
    if m.groups.is_empty() {
        out.push_str("None.\n");
    }
    for (i, g) in m.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "### {}. {} — `{}` ({} failure{})\n",
            i + 1,
            g.class,
            md_cell(&g.signature).replace('`', "'"),
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" }
        );
        for mem in &g.members {
            let warn = if mem.status == CellStatus::Warn {
                " (warn)"
            } else {
                ""
            };
            let _ = writeln!(out, "- {} on {}{}", mem.test, mem.column, warn);
        }
        if !g.example.is_empty() {
            let fence = if g.example.contains("```") {
                "~~~~"
            } else {
                "```"
            };
            let _ = writeln!(out, "\n{fence}text\n{}\n{fence}", g.example);
        }
        out.push('\n');
    }
    out
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
td.test{font-family:ui-monospace,monospace;white-space:nowrap}
.pass{background:#c8f0c8}.fail{background:#f4a6a6;font-weight:bold}.flaky{background:#ffd59a}
.warn{background:#fff3a0}.skip{background:#e4e4e4;color:#555}.not-run{background:#fff;color:#aaa}
.incomplete{color:#b00020;font-weight:bold}
.legend span{display:inline-block;padding:.15em .6em;margin-right:.4em;border:1px solid #ccc}
tfoot td{background:#f7f7f7;font-size:.85em}
details{margin:.5em 0;border:1px solid #ddd;padding:.4em .6em}
summary{cursor:pointer}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
code{font-family:ui-monospace,monospace}
.cls{display:inline-block;min-width:6em;font-weight:bold}
";

fn html_cell(cell: &Cell) -> String {
    let label = match cell.status {
        CellStatus::Fail | CellStatus::Warn => match cell.class {
            Some(c) => format!("{} ({c})", cell.status.as_str()),
            None => cell.status.as_str().to_string(),
        },
        CellStatus::Skip => match cell.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("skip ({})", short(r, 40)),
            None => "skip".to_string(),
        },
        s => s.as_str().to_string(),
    };
    let mut title = String::new();
    if let Some(r) = &cell.reason {
        title.push_str(r);
    }
    if let Some(s) = &cell.signature {
        if !title.is_empty() {
            title.push('\n');
        }
        title.push_str(s);
    }
    if let Some(id) = &cell.run_id {
        if !title.is_empty() {
            title.push('\n');
        }
        title.push_str("run ");
        title.push_str(id);
    }
    format!(
        "<td class=\"{}\" title=\"{}\">{}</td>",
        cell.status.as_str(),
        html_escape(&title),
        html_escape(&label)
    )
}

/// Renders the matrix as one self-contained HTML page (inline CSS, no scripts, no external
/// resources): a legend, the arm64-only failures first, the colored table with counts, then
/// the failure groups with their excerpts in `<details>`.
pub fn to_html(m: &Matrix) -> String {
    let e = html_escape;
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<title>bogie test matrix</title>\n<style>");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n<h1>bogie test matrix</h1>\n");
    let _ = writeln!(out, "<p>Runs: {}</p>", e(&runs_line(m)));
    for line in &m.incomplete {
        let _ = writeln!(out, "<p class=\"incomplete\">Incomplete: {}</p>", e(line));
    }
    out.push_str("<p class=\"legend\">");
    for s in CellStatus::ALL {
        let _ = write!(out, "<span class=\"{0}\">{0}</span>", s.as_str());
    }
    out.push_str("</p>\n");

    out.push_str("<h2>arm64-only failures</h2>\n");
    if m.arm64_only.is_empty() {
        out.push_str("<p>None.</p>\n");
    } else {
        out.push_str("<table class=\"arm64-only\">\n<thead><tr><th>test</th><th>fails on</th><th>passes on</th><th>class</th><th>signature</th></tr></thead>\n<tbody>\n");
        for a in &m.arm64_only {
            let _ = writeln!(
                out,
                "<tr><td class=\"test\">{}</td><td class=\"fail\">{}</td><td class=\"pass\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                e(&a.test),
                e(&a.failing.join(", ")),
                e(&a.passing.join(", ")),
                a.class.map_or("", |c| c.as_str()),
                e(a.signature.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    out.push_str("<h2>Results</h2>\n<table class=\"matrix\">\n<thead><tr><th>test</th>");
    for c in &m.columns {
        let _ = write!(out, "<th>{}</th>", e(&c.label()));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &m.rows {
        let _ = write!(out, "<tr><td class=\"test\">{}</td>", e(&row.test));
        for cell in &row.cells {
            out.push_str(&html_cell(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n<tfoot><tr><td>counts</td>");
    for n in &m.counts {
        let _ = write!(
            out,
            "<td>{} pass<br>{} fail<br>{} flaky<br>{} warn<br>{} skip<br>{} not run</td>",
            n.pass, n.fail, n.flaky, n.warn, n.skip, n.not_run
        );
    }
    out.push_str("</tr></tfoot>\n</table>\n");

    out.push_str("<h2>Failure groups</h2>\n");
    if m.groups.is_empty() {
        out.push_str("<p>None.</p>\n");
    }
    for g in &m.groups {
        let _ = write!(
            out,
            "<details>\n<summary><span class=\"cls\">{}</span> <code>{}</code> — {} failure{}</summary>\n<ul>\n",
            g.class,
            e(&g.signature),
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" }
        );
        for mem in &g.members {
            let _ = writeln!(
                out,
                "<li class=\"{}\"><code>{}</code> on {}</li>",
                mem.status.as_str(),
                e(&mem.test),
                e(&mem.column)
            );
        }
        out.push_str("</ul>\n");
        if !g.example.is_empty() {
            let _ = writeln!(out, "<pre>{}</pre>", e(&g.example));
        }
        out.push_str("</details>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Builds the matrix of `reports` and writes `matrix.md`, `matrix.html` and `matrix.json`
/// into `out_dir` (atomically). Returns the matrix.
pub fn write_matrix(reports: &[RunReport], out_dir: impl AsRef<Path>) -> Result<Matrix> {
    let out_dir = out_dir.as_ref();
    let m = build_matrix(reports);
    write_atomic(out_dir.join("matrix.md"), to_markdown(&m))?;
    write_atomic(out_dir.join("matrix.html"), to_html(&m))?;
    let json = serde_json::to_string_pretty(&m).map_err(ReportError::JsonSerialize)?;
    write_atomic(out_dir.join("matrix.json"), json + "\n")?;
    Ok(m)
}

/// Reads one run's results from a run output directory — `reports/results.jsonl`, else
/// `reports/report.json`, else a TAP file (`test.tap` or the first `*.tap`), else
/// `reports/junit.xml` — or from a path to any of those files directly (the format is told by
/// extension, else by content). For kola directories, `properties.json` supplies the arch.
pub fn load_run(path: impl AsRef<Path>) -> Result<RunReport> {
    let path = path.as_ref();
    let meta = fs::metadata(path).map_err(|e| ReportError::io(path, e))?;
    if !meta.is_dir() {
        let mut r = load_file(path)?;
        if let Some(dir) = path.parent() {
            fill_from_properties(&mut r, dir);
            if let Some(up) = dir.parent().filter(|_| dir.ends_with("reports")) {
                fill_from_properties(&mut r, up);
            }
        }
        return Ok(r);
    }
    let reports = path.join("reports");
    let mut candidates: Vec<PathBuf> = vec![
        reports.join(RESULTS_JSONL),
        reports.join(REPORT_JSON),
        path.join(RESULTS_JSONL),
        path.join(REPORT_JSON),
        path.join(TEST_TAP),
    ];
    let mut taps: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|e| ReportError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tap") && p.is_file())
        .collect();
    taps.sort();
    candidates.extend(taps);
    candidates.push(reports.join(JUNIT_XML));
    candidates.push(path.join(JUNIT_XML));
    let found = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ReportError::NoResults(format!(
                "{} has no reports/results.jsonl, reports/report.json, TAP or JUnit file",
                path.display()
            ))
        })?;
    let mut r = load_file(&found)?;
    fill_from_properties(&mut r, path);
    Ok(r)
}

fn fill_from_properties(r: &mut RunReport, dir: &Path) {
    if r.info.arch.is_empty() || r.info.platform.is_empty() {
        apply_kola_properties(&mut r.info, dir);
    }
    for t in &mut r.tests {
        if t.arch.is_empty() {
            t.arch = r.info.arch.clone();
        }
        if t.platform.is_empty() {
            t.platform = r.info.platform.clone();
        }
    }
}

fn load_file(path: &Path) -> Result<RunReport> {
    let ext = path
        .extension()
        .map(|x| x.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jsonl" => return read_results_jsonl(path),
        "json" => return read_report_json(path),
        "xml" => return read_junit(path),
        "tap" => return read_tap(path),
        _ => {}
    }
    let text = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let head = text.trim_start();
    if head.starts_with("{\"run\"") {
        read_results_jsonl(path)
    } else if head.starts_with('{') {
        read_report_json(path)
    } else if head.starts_with('<') {
        read_junit(path)
    } else {
        read_tap(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonl::write_results_jsonl;
    use crate::kola_json::write_report_json;
    use crate::tap::write_tap;
    use crate::testutil::*;
    use chrono::Duration as ChronoDuration;

    /// amd64/qemu (sample), arm64/qemu where cl.basic fails with a panic and docker.base
    /// passes, amd64/aws with only cl.basic passing.
    fn three_runs() -> Vec<RunReport> {
        let amd = sample_report();
        let mut arm = sample_report();
        arm.info = info("run-arm", "qemu", "arm64");
        for t in &mut arm.tests {
            t.arch = "arm64".into();
        }
        arm.tests[0] = test(
            "cl.basic",
            Status::Fail,
            vec![failed(
                1,
                10.0,
                "console check failed",
                "[    5.123456] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
            )],
        );
        arm.tests[0].arch = "arm64".into();
        arm.tests[6] = test("docker.base", Status::Pass, vec![passed(1, 9.0)]);
        arm.tests[6].arch = "arm64".into();
        let mut aws = RunReport {
            end: RunEnd::Completed,
            info: info("run-aws", "aws", "amd64"),
            tests: vec![test("cl.basic", Status::Pass, vec![passed(1, 50.0)])],
        };
        aws.tests[0].platform = "aws".into();
        vec![amd, arm, aws]
    }

    #[test]
    fn rows_columns_counts() {
        let m = build_matrix(&three_runs());
        let labels: Vec<String> = m.columns.iter().map(Column::label).collect();
        assert_eq!(labels, ["amd64/aws", "amd64/qemu", "arm64/qemu"]);
        assert_eq!(m.rows.len(), 7);
        assert_eq!(m.rows[0].test, "cl.basic");
        let st = |test: &str| -> Vec<CellStatus> {
            m.rows
                .iter()
                .find(|r| r.test == test)
                .unwrap()
                .cells
                .iter()
                .map(|c| c.status)
                .collect()
        };
        use CellStatus::*;
        assert_eq!(st("cl.basic"), [Pass, Pass, Fail]);
        assert_eq!(st("docker.base"), [NotRun, Fail, Pass]);
        assert_eq!(st("coreos.ignition.once"), [NotRun, Flaky, Flaky]);
        assert_eq!(st("cl.cloudinit.basic"), [NotRun, Skip, Skip]);
        assert_eq!(st("coreos.selinux.enforce"), [NotRun, Warn, Warn]);
        assert_eq!(
            m.counts[0],
            ColumnCounts {
                column: "amd64/aws".into(),
                pass: 1,
                not_run: 6,
                ..Default::default()
            }
        );
        assert_eq!(
            m.counts[1],
            ColumnCounts {
                column: "amd64/qemu".into(),
                pass: 2,
                fail: 2,
                flaky: 1,
                skip: 1,
                warn: 1,
                not_run: 0
            }
        );
        assert_eq!(m.counts[2].fail, 2);
        let skip = &m
            .rows
            .iter()
            .find(|r| r.test == "cl.cloudinit.basic")
            .unwrap()
            .cells[1];
        assert_eq!(skip.reason.as_deref(), Some("not supported on qemu-unpriv"));
    }

    #[test]
    fn arm64_only_and_groups() {
        let m = build_matrix(&three_runs());
        assert_eq!(m.arm64_only.len(), 1);
        let a = &m.arm64_only[0];
        assert_eq!(a.test, "cl.basic");
        assert_eq!(a.failing, ["arm64/qemu"]);
        assert_eq!(a.passing, ["amd64/aws", "amd64/qemu"]);
        assert_eq!(a.class, Some(FailureClass::Kernel));
        // docker.base fails on amd64 only: not arm64-only. etcd fails on both: not either.

        // etcd fails on both arches with one signature: one group of 2, listed first.
        let g = &m.groups[0];
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.class, FailureClass::Etcd);
        assert_eq!(
            g.members
                .iter()
                .map(|m| m.column.as_str())
                .collect::<Vec<_>>(),
            ["amd64/qemu", "arm64/qemu"]
        );
        assert!(g
            .example
            .starts_with("etcdctl get failed: exit status 1\nNov 21"));
        let sizes: Vec<usize> = m.groups.iter().map(|g| g.members.len()).collect();
        assert_eq!(sizes, [2, 2, 1, 1]); // etcd x2, selinux warn x2, docker, kernel
        assert!(m.groups.iter().any(|g| g.class == FailureClass::Kernel
            && g.signature.starts_with("Kernel panic - not syncing")));
    }

    #[test]
    fn group_example_is_capped() {
        let long: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let r = RunReport {
            end: RunEnd::Completed,
            info: info("r", "qemu", "amd64"),
            tests: vec![test(
                "cl.x",
                Status::Fail,
                vec![failed(1, 1.0, "boom", &long)],
            )],
        };
        let m = build_matrix(&[r]);
        assert_eq!(m.groups[0].example.lines().count(), EXAMPLE_LINES);
        assert!(m.groups[0].example.starts_with("boom\nline 0"));
    }

    #[test]
    fn merging_runs_of_one_column() {
        let mut first = RunReport {
            end: RunEnd::Completed,
            info: info("shard-1", "qemu", "amd64"),
            tests: vec![
                test("cl.a", Status::Fail, vec![failed(1, 1.0, "boom", "")]),
                test("cl.b", Status::Pass, vec![passed(1, 1.0)]),
            ],
        };
        let mut rerun = RunReport {
            end: RunEnd::Completed,
            info: info("rerun", "qemu", "amd64"),
            tests: vec![
                test("cl.a", Status::Pass, vec![passed(1, 1.0)]),
                TestResult::skipped("cl.b", "qemu", "amd64", "not selected"),
            ],
        };
        rerun.info.started = first.info.started + ChronoDuration::hours(1);
        // Given newest first: order is by start time, not by argument order.
        let m = build_matrix(&[rerun.clone(), first.clone()]);
        assert_eq!(
            m.rows[0].cells[0].status,
            CellStatus::Pass,
            "later run wins"
        );
        assert_eq!(m.rows[0].cells[0].run_id.as_deref(), Some("rerun"));
        assert_eq!(
            m.rows[1].cells[0].status,
            CellStatus::Pass,
            "a result beats a skip"
        );
        assert_eq!(m.runs[0].id, "shard-1");
        // Same start: the order given decides.
        first.info.started = rerun.info.started;
        let m = build_matrix(&[rerun, first]);
        assert_eq!(m.rows[0].cells[0].status, CellStatus::Fail);
    }

    #[test]
    fn writes_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = three_runs();
        runs[0].tests[1].attempts[1]
            .failure
            .as_mut()
            .unwrap()
            .excerpt = "<script>alert('x')</script> & | pipes".into();
        let m = write_matrix(&runs, dir.path()).unwrap();

        let md = fs::read_to_string(dir.path().join("matrix.md")).unwrap();
        let arm_pos = md.find("## arm64-only failures").unwrap();
        let table_pos = md.find("## Results").unwrap();
        let groups_pos = md.find("## Failure groups").unwrap();
        assert!(arm_pos < table_pos && table_pos < groups_pos);
        assert!(md.contains("| test | amd64/aws | amd64/qemu | arm64/qemu |"));
        assert!(
            md.contains("| cl.basic | pass | pass | **FAIL** (kernel) |"),
            "{md}"
        );
        assert!(md.contains("| cl.cloudinit.basic | not-run | skip (not supported on qemu-unpriv) | skip (not supported on qemu-unpriv) |"));
        assert!(md.contains("| cl.basic | arm64/qemu | amd64/aws, amd64/qemu | kernel |"));
        assert!(md.contains("- cl.etcd-member.discovery on amd64/qemu"));
        assert!(md.contains("```text\n"));

        let html = fs::read_to_string(dir.path().join("matrix.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "excerpt is escaped");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; | pipes"));
        assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"));
        assert!(html.find("arm64-only").unwrap() < html.find("class=\"matrix\"").unwrap());
        assert!(html.contains("<td class=\"fail\" title="));
        assert!(html.contains("<span class=\"not-run\">not-run</span>"));
        assert_eq!(html.matches("<details>").count(), m.groups.len());

        let json: Matrix =
            serde_json::from_str(&fs::read_to_string(dir.path().join("matrix.json")).unwrap())
                .unwrap();
        assert_eq!(json, m);
    }

    #[test]
    fn a_killed_run_is_named_and_its_missing_tests_are_not_run() {
        let killed = killed_report("docker.base");
        let m = build_matrix(std::slice::from_ref(&killed));
        let row = m.rows.iter().find(|r| r.test == "docker.base").unwrap();
        assert_eq!(row.cells[0].status, CellStatus::NotRun);
        assert_eq!(
            row.cells[0].reason.as_deref(),
            Some("no result: the run did not end")
        );
        assert_eq!(m.counts[0].not_run, 1);
        assert_eq!(
            m.incomplete,
            [
                "run run-a: the run did not end (killed or crashed, or still running); \
              1 test(s) not run: docker.base"
            ]
        );
        let md = to_markdown(&m);
        assert!(
            md.contains("**Incomplete:** run run-a: the run did not end"),
            "{md}"
        );
        assert!(to_html(&m).contains("<p class=\"incomplete\">Incomplete: run run-a:"));

        // A later run with the result fills the cell; the killed run is still named.
        let mut rerun = sample_report();
        rerun.info.id = "rerun".into();
        rerun.info.started = killed.info.started + ChronoDuration::hours(1);
        let m = build_matrix(&[killed, rerun]);
        let row = m.rows.iter().find(|r| r.test == "docker.base").unwrap();
        assert_eq!(row.cells[0].status, CellStatus::Fail);
        assert_eq!(m.incomplete.len(), 1);
        assert!(build_matrix(&[sample_report()]).incomplete.is_empty());
    }

    #[test]
    fn html_escape_escapes() {
        assert_eq!(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
    }

    #[test]
    fn load_run_prefers_jsonl_then_report_json_then_tap() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let report = sample_report();
        assert!(matches!(load_run(run), Err(ReportError::NoResults(_))));

        // TAP only (kola's test.tap), with kola's properties.json for the arch.
        write_tap(&report, run.join("test.tap"), crate::tap::TapFormat::V13).unwrap();
        fs::write(
            run.join("properties.json"),
            r#"{"platform":"qemu","board":"arm64-usr"}"#,
        )
        .unwrap();
        let r = load_run(run).unwrap();
        assert_eq!(r.tests.len(), 7);
        assert_eq!(r.info.arch, "arm64");
        assert_eq!(r.tests[0].arch, "arm64");
        assert_eq!(r.tests[0].platform, "qemu");

        write_report_json(&report, run.join("reports/report.json")).unwrap();
        assert_eq!(load_run(run).unwrap(), report);

        let mut newer = report.clone();
        newer.info.id = "from-jsonl".into();
        write_results_jsonl(&newer, run.join("reports/results.jsonl")).unwrap();
        assert_eq!(load_run(run).unwrap().info.id, "from-jsonl");

        // A file directly, whatever its name.
        fs::copy(run.join("reports/results.jsonl"), run.join("results.txt")).unwrap();
        assert_eq!(
            load_run(run.join("results.txt")).unwrap().info.id,
            "from-jsonl"
        );
        assert_eq!(load_run(run.join("test.tap")).unwrap().tests.len(), 7);
        crate::junit::write_junit(&report, run.join("x.xml")).unwrap();
        assert_eq!(load_run(run.join("x.xml")).unwrap().info.id, "run-a");
    }
}
