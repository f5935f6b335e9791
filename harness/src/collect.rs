//! Collection, the third phase of a test's life: each machine's journal (over SSH, while
//! it still answers), its console (a shared machine's: the part written during this
//! test), the console checks run over both, and the artifact paths for the report. A
//! failure of class `harness` or `timeout` gets each console's tail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bogie_reports::{Failure, FailureClass, MachineArtifacts};

use crate::checks::{scan, Hit, ScanOptions};
use crate::context::AttemptContext;
use crate::machine::TestMachine;
use crate::sharing::SliceFrom;
use crate::test::Test;
use crate::text::{shell_quote, strip_ansi};

/// What collection found: the artifacts of every machine and the console-check hits.
pub(crate) struct Collected {
    /// Per machine, in the cluster's order.
    pub(crate) artifacts: Vec<MachineArtifacts>,
    /// Every line a console check matched, console and journal.
    pub(crate) hits: Vec<Hit>,
}

/// Collects from every machine; `slice_from` applies to the first (a shared machine).
pub(crate) async fn collect(
    ctx: &AttemptContext,
    test: &Test,
    machines: &[TestMachine],
    slice_from: Option<&SliceFrom>,
) -> Collected {
    let mut out = Collected {
        artifacts: Vec::new(),
        hits: Vec::new(),
    };
    for (i, m) in machines.iter().enumerate() {
        let slice = slice_from.filter(|_| i == 0);
        let journal_path = m.dir().join("journal.txt");
        if let Some(journal) = journal(ctx, test, m, slice).await {
            let _ = std::fs::write(&journal_path, journal);
        }
        let mut console = m.console().await.unwrap_or_default();
        if let Some(s) = slice {
            console = tail_from(&console, s.console_offset).to_string();
            if let Err(e) = std::fs::write(m.dir().join("console.txt"), &console) {
                tracing::warn!(machine = m.id(), error = %e, "writing the console part");
            }
        }
        let opts = ScanOptions {
            flags: test.flags,
            no_avc_checks: ctx.no_avc_checks,
            journal: false,
        };
        let hit = |found, source| Hit {
            found,
            machine: m.id().to_string(),
            source,
        };
        out.hits
            .extend(scan(&console, opts).into_iter().map(|f| hit(f, "console")));
        if let Ok(j) = std::fs::read_to_string(&journal_path) {
            let opts = ScanOptions {
                journal: true,
                ..opts
            };
            out.hits
                .extend(scan(&j, opts).into_iter().map(|f| hit(f, "journal")));
        }
        let start = m.start.lock().expect("poisoned").clone();
        out.artifacts.push(MachineArtifacts {
            console: rel(&ctx.out_dir, &m.dir().join("console.txt")),
            journal: journal_path
                .exists()
                .then(|| rel(&ctx.out_dir, &journal_path))
                .flatten(),
            ignition: rel(&ctx.out_dir, &m.dir().join("ignition.json")),
            start: (!start.kind.is_empty()).then(|| start.kind.to_string()),
            handed_from: start.handed_from,
            ready_secs: start
                .ready_after
                .map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
            ready_by: start.ready_by.map(str::to_string),
            ..MachineArtifacts::new(m.id())
        });
    }
    out
}

/// The machine's journal of this boot (a shared machine's: after the slice's cursor), or
/// None on Ctrl-C (a machine may still be booting: tear down now), without the harness's
/// key on the machine, or when SSH fails or takes over a minute.
async fn journal(
    ctx: &AttemptContext,
    test: &Test,
    m: &TestMachine,
    slice: Option<&SliceFrom>,
) -> Option<Vec<u8>> {
    let cmd = match slice.and_then(|s| s.journal_cursor.as_deref()) {
        Some(c) => format!(
            "sudo journalctl --no-pager -o short-monotonic --after-cursor={}",
            shell_quote(c)
        ),
        None => "sudo journalctl --no-pager -o short-monotonic -b".to_string(),
    };
    let no_access = test.flags.no_ssh_key_in_user_data && m.session.lock().await.is_none();
    if ctx.cancel.is_cancelled() || no_access {
        return None;
    }
    match tokio::time::timeout(Duration::from_secs(60), m.ssh(&cmd)).await {
        Ok(Ok(out)) => Some(out.stdout),
        _ => None,
    }
}

/// Adds the console tail of every machine to a `harness` or `timeout` failure (why didn't
/// it boot?).
pub(crate) async fn add_console_tails(failure: Option<&mut Failure>, machines: &[TestMachine]) {
    let Some(f) = failure else { return };
    if f.class != FailureClass::Harness && f.class != FailureClass::Timeout {
        return;
    }
    for m in machines {
        if let Ok(c) = m.console().await {
            let tail: Vec<&str> = c.lines().rev().take(15).collect();
            if !tail.is_empty() {
                f.push_excerpt(&format!("--- console tail of {}:\n", m.id()));
                for l in tail.into_iter().rev() {
                    f.excerpt.push_str(&strip_ansi(l));
                    f.excerpt.push('\n');
                }
            }
        }
    }
}

/// `text` from byte `offset` on (at the next character boundary; all of it when the
/// offset is past the end, e.g. a console that was truncated).
pub(crate) fn tail_from(text: &str, offset: usize) -> &str {
    if offset > text.len() {
        return text;
    }
    let mut o = offset;
    while !text.is_char_boundary(o) {
        o += 1;
    }
    &text[o..]
}

fn rel(base: &Path, p: &Path) -> Option<PathBuf> {
    Some(p.strip_prefix(base).unwrap_or(p).to_path_buf())
}
