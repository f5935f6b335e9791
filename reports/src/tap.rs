//! TAP version 13 in kola's shape, which Flatcar's CI ingests (`tapfile_helper_lib.sh`):
//!
//! ```text
//! TAP version 13
//! 1..3
//! ok - cl.basic
//! ok - cl.cloudinit.basic # SKIP not supported on qemu-unpriv
//! not ok - docker.base
//!   ---
//!   Error: "docker: Error response from daemon: pull access denied for busybx"
//!   ...
//! ```
//!
//! The version line makes TAP 13 parsers (tap.py, node's tap-parser) read the YAML blocks
//! as YAML; every block is a YAML mapping whose values are Go's `%q` quoting of the text (as
//! kola writes its `Error:`), which is also a valid YAML double-quoted string. bogie adds:
//! - the skip reason after `# SKIP`;
//! - flaky tests as `ok - name` with `Flaky: "failed N of M attempts"` and each failed
//!   attempt's error as `Attempt K: "..."` in the YAML block (not as a `#` marker after the
//!   name, which strict parsers take as part of the name);
//! - warn-only failures as `ok - name` with `Warn: "failed, denylisted as warn-only"` and
//!   the `Error:` in the block, so the gate stays green;
//! - a failed test's earlier attempts as `Attempt K:` lines before its `Error:`;
//! - selected tests without a result as `not ok - name` with `Not run: "<why>"`.
//!
//! Per-attempt errors go in the YAML block rather than in `#` comment lines because Flatcar's
//! ingest script reads every line outside a YAML block as a test result.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::atomic::write_atomic;
use crate::error::{ReportError, Result};
use crate::model::*;
use crate::triage;

/// kola's TAP file name in its output directory.
pub const TEST_TAP: &str = "test.tap";

/// Quotes `s` the way Go's `%q` (`strconv.Quote`) does: double quotes, `\"` `\\` `\n` `\t`
/// `\r` `\a` `\b` `\f` `\v`, other control characters as `\xHH`, non-printable non-ASCII
/// characters as `\uHHHH`/`\UHHHHHHHH`, printable Unicode as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` for non-ASCII characters: not a control,
/// not a space other than U+0020, not a format character.
fn go_printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let u = c as u32;
    !(c.is_control()
        || c.is_whitespace()
        || u == 0xad
        || (0x200b..=0x200f).contains(&u)
        || (0x202a..=0x202e).contains(&u)
        || (0x2060..=0x206f).contains(&u)
        || u == 0xfeff
        || (0xe000..=0xf8ff).contains(&u)
        || (0xfff9..=0xfffb).contains(&u))
}

/// Undoes [`go_quote`] (and any Go-quoted string: `\xHH` and octal `\NNN` are bytes, invalid
/// UTF-8 is replaced). Returns `None` when `s` is not a quoted string.
pub fn go_unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut bytes: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    let push = |bytes: &mut Vec<u8>, c: char| {
        let mut buf = [0u8; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    };
    while let Some(c) = chars.next() {
        if c != '\\' {
            push(&mut bytes, c);
            continue;
        }
        let e = chars.next()?;
        match e {
            'a' => bytes.push(0x07),
            'b' => bytes.push(0x08),
            'f' => bytes.push(0x0c),
            'n' => bytes.push(b'\n'),
            'r' => bytes.push(b'\r'),
            't' => bytes.push(b'\t'),
            'v' => bytes.push(0x0b),
            '\\' | '"' | '\'' => bytes.push(e as u8),
            'x' => {
                let h: String = (0..2).filter_map(|_| chars.next()).collect();
                bytes.push(u8::from_str_radix(&h, 16).ok()?);
            }
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let h: String = (0..n).filter_map(|_| chars.next()).collect();
                let c = char::from_u32(u32::from_str_radix(&h, 16).ok()?)
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                push(&mut bytes, c);
            }
            '0'..='7' => {
                let mut o = String::from(e);
                for _ in 0..2 {
                    o.push(chars.next()?);
                }
                bytes.push(u8::from_str_radix(&o, 8).ok()?);
            }
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The error text of a failed attempt as the TAP `Error:` holds it: the failure message, the
/// excerpt, then kola-style `--- FAIL: <sub> (1.86s)` lines for failed subtests.
pub fn attempt_error(a: &Attempt) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(f) = &a.failure {
        if !f.message.trim().is_empty() {
            parts.push(f.message.trim().to_string());
        }
        if !f.excerpt.trim().is_empty() && f.excerpt.trim() != f.message.trim() {
            parts.push(f.excerpt.trim_end().to_string());
        }
    }
    for sub in a.subtests.iter().filter(|s| s.status == Status::Fail) {
        let mut s = format!(
            "--- FAIL: {} ({:.2}s)",
            sub.name,
            sub.duration.as_secs_f64()
        );
        for line in sub.message.lines() {
            s.push_str("\n        ");
            s.push_str(line);
        }
        parts.push(s);
    }
    if parts.is_empty() {
        parts.push(if a.output.trim().is_empty() {
            "failed".to_string()
        } else {
            a.output.trim().to_string()
        });
    }
    parts.join("\n")
}

fn tap_name(name: &str) -> String {
    // kola drops '#' so a name cannot start a directive.
    name.replace('#', "")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The TAP version line, the file's first line.
pub const TAP_VERSION_LINE: &str = "TAP version 13";

/// The `Flaky:` value of a test that failed `failed` of `total` attempts.
fn flaky_note(failed: usize, total: usize) -> String {
    format!("failed {failed} of {total} attempts")
}

const WARN_NOTE: &str = "failed, denylisted as warn-only";

/// Renders the run as TAP version 13 in kola's shape, sorted by test name.
pub fn to_tap(report: &RunReport) -> String {
    let mut tests: Vec<&TestResult> = report.tests.iter().collect();
    tests.sort_by(|a, b| {
        (a.name.as_str(), a.arch.as_str(), a.platform.as_str()).cmp(&(
            b.name.as_str(),
            b.arch.as_str(),
            b.platform.as_str(),
        ))
    });
    let mut out = format!("{TAP_VERSION_LINE}\n1..{}\n", tests.len());
    let attempt_line = |out: &mut String, a: &Attempt| {
        out.push_str(&format!(
            "  Attempt {}: {}\n",
            a.number,
            go_quote(&attempt_error(a))
        ));
    };
    for t in tests {
        let name = tap_name(&t.name);
        let failed: Vec<&Attempt> = t.attempts.iter().filter(|a| !a.passed).collect();
        match t.status {
            Status::Pass => out.push_str(&format!("ok - {name}\n")),
            Status::Skip => {
                let reason = one_line(t.skip_reason.as_deref().unwrap_or(""));
                if reason.is_empty() {
                    out.push_str(&format!("ok - {name} # SKIP\n"));
                } else {
                    out.push_str(&format!("ok - {name} # SKIP {reason}\n"));
                }
            }
            Status::NotRun => {
                let reason = t.skip_reason.as_deref().unwrap_or("no result");
                out.push_str(&format!(
                    "not ok - {name}\n  ---\n  Not run: {}\n  ...\n",
                    go_quote(reason)
                ));
            }
            Status::Flaky => {
                out.push_str(&format!(
                    "ok - {name}\n  ---\n  Flaky: {}\n",
                    go_quote(&flaky_note(failed.len(), t.attempts.len()))
                ));
                for a in &failed {
                    attempt_line(&mut out, a);
                }
                out.push_str("  ...\n");
            }
            Status::Fail | Status::Warn => {
                if t.status == Status::Fail {
                    out.push_str(&format!("not ok - {name}\n  ---\n"));
                } else {
                    out.push_str(&format!(
                        "ok - {name}\n  ---\n  Warn: {}\n",
                        go_quote(WARN_NOTE)
                    ));
                }
                if let Some((last, earlier)) = failed.split_last() {
                    for a in earlier {
                        attempt_line(&mut out, a);
                    }
                    out.push_str(&format!("  Error: {}\n", go_quote(&attempt_error(last))));
                } else {
                    out.push_str("  Error: \"failed\"\n");
                }
                out.push_str("  ...\n");
            }
        }
    }
    out
}

/// Which TAP dialect a file is written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TapFormat {
    /// kola's: no version line, `1..N` first. Flatcar CI's `tapfile_helper_lib.sh` takes
    /// every line outside a YAML block but `1..N` for a test, so a `TAP version 13` line
    /// would become a failing test of that name (and be rerun by name).
    #[default]
    Kola,
    /// `TAP version 13` first, so TAP 13 consumers (tap.py, node's tap-parser) read the
    /// YAML blocks.
    V13,
}

impl std::str::FromStr for TapFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "kola" => Ok(TapFormat::Kola),
            "13" => Ok(TapFormat::V13),
            other => Err(format!(
                "unknown TAP version {other:?} (expected kola or 13)"
            )),
        }
    }
}

/// Renders the run as TAP in `format` (see [`to_tap`]).
pub fn to_tap_as(report: &RunReport, format: TapFormat) -> String {
    let text = to_tap(report);
    match format {
        TapFormat::V13 => text,
        TapFormat::Kola => match text.split_once('\n') {
            Some((first, rest)) if first == TAP_VERSION_LINE => rest.to_string(),
            _ => text,
        },
    }
}

/// Writes the run as TAP in `format` (see [`to_tap_as`]) to `path` (atomically).
pub fn write_tap(report: &RunReport, path: impl AsRef<Path>, format: TapFormat) -> Result<()> {
    write_atomic(path, to_tap_as(report, format))
}

/// Reads a TAP file: kola's, bogie's (also an older bogie's `# flaky:`/`# warn:` markers),
/// or Flatcar CI's merged report (whose first test line, `ok - Version: V, Architecture: A`,
/// fills the run's version and arch). Names and pass/fail/skip always come back; bogie's
/// flaky, warn and not-run tests come back as such, with the attempts' errors triaged. The run's platform and arch are empty unless the file says them;
/// its start is the file's modification time.
pub fn read_tap(path: impl AsRef<Path>) -> Result<RunReport> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let started: DateTime<Utc> = fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_default();
    parse_tap(&text, started, path)
}

/// One test line and its YAML block.
struct Entry {
    ok: bool,
    name: String,
    directive: String,
    error: Option<String>,
    attempts: BTreeMap<u32, String>,
    /// bogie's `Flaky:` value.
    flaky: Option<String>,
    /// bogie's `Warn:` key was there.
    warn: bool,
    /// bogie's `Not run:` value.
    not_run: Option<String>,
    yaml: Vec<String>,
}

/// Parses TAP text. `started` becomes the run's and attempts' start; `path` is only used in
/// errors.
pub fn parse_tap(text: &str, started: DateTime<Utc>, path: &Path) -> Result<RunReport> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut in_yaml = false;
    let mut saw_plan = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if in_yaml {
            if line == "..." {
                in_yaml = false;
                continue;
            }
            let Some(e) = entries.last_mut() else {
                continue;
            };
            let unquote = |q: &str| go_unquote(q).unwrap_or_else(|| q.trim().to_string());
            if let Some(q) = line.strip_prefix("Error:") {
                e.error = Some(unquote(q));
            } else if let Some(q) = line.strip_prefix("Flaky:") {
                e.flaky = Some(unquote(q));
            } else if line.starts_with("Warn:") {
                e.warn = true;
            } else if let Some(q) = line.strip_prefix("Not run:") {
                e.not_run = Some(unquote(q));
            } else if let Some((n, q)) = line
                .strip_prefix("Attempt ")
                .and_then(|r| r.split_once(':'))
                .and_then(|(n, q)| Some((n.trim().parse::<u32>().ok()?, q)))
            {
                e.attempts
                    .insert(n, go_unquote(q).unwrap_or_else(|| q.trim().to_string()));
            } else if !line.is_empty() {
                e.yaml.push(line.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with("TAP version ") {
            continue;
        }
        if line == "---" {
            in_yaml = true;
            continue;
        }
        if let Some(n) = line.strip_prefix("1..") {
            if n.trim().parse::<usize>().is_ok() {
                saw_plan = true;
                continue;
            }
        }
        let (ok, rest) = if let Some(r) = line.strip_prefix("not ok") {
            (false, r)
        } else if let Some(r) = line.strip_prefix("ok") {
            (true, r)
        } else {
            if line.starts_with("Bail out!") {
                break;
            }
            return Err(ReportError::format(
                path,
                format!("line {}: not a TAP line: {line:?}", i + 1),
            ));
        };
        // Optional test number, then " - ".
        let rest = rest.trim_start();
        let rest = rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest
            .strip_prefix("- ")
            .or_else(|| rest.strip_prefix('-'))
            .unwrap_or(rest);
        let (name, directive) = match rest.find(" # ") {
            Some(i) => (&rest[..i], rest[i + 3..].trim()),
            None => match rest.strip_suffix(" #") {
                Some(n) => (n, ""),
                None => (rest, ""),
            },
        };
        entries.push(Entry {
            ok,
            name: name.trim().to_string(),
            directive: directive.to_string(),
            error: None,
            attempts: BTreeMap::new(),
            flaky: None,
            warn: false,
            not_run: None,
            yaml: Vec::new(),
        });
    }
    if !saw_plan && entries.is_empty() {
        return Err(ReportError::format(path, "no TAP plan or test lines"));
    }

    let mut info = RunInfo {
        started,
        ..RunInfo::default()
    };
    let mut tests = Vec::new();
    for e in entries {
        // Flatcar CI's merged report starts with a pseudo-test holding version and arch.
        if let Some(v) = e.name.strip_prefix("Version: ") {
            if let Some((version, arch)) = v.split_once(", Architecture: ") {
                info.version = version.trim().to_string();
                info.arch = arch.trim().to_string();
                if let Some(p) = e
                    .yaml
                    .iter()
                    .find_map(|l| l.strip_prefix("Platforms tested:"))
                {
                    let platforms: Vec<&str> = p.split_whitespace().collect();
                    if platforms.len() == 1 {
                        info.platform = platforms[0].to_string();
                    }
                }
                continue;
            }
        }
        tests.push(entry_to_test(e, started));
    }
    for t in &mut tests {
        t.platform = info.platform.clone();
        t.arch = info.arch.clone();
    }
    Ok(RunReport::new(info, tests))
}

pub(crate) fn failure_from_error(error: &str) -> (Failure, Vec<SubtestResult>) {
    let mut rest: Vec<&str> = Vec::new();
    let mut subs: Vec<SubtestResult> = Vec::new();
    for line in error.lines() {
        let t = line.trim_start();
        if let Some(h) = t.strip_prefix("--- FAIL: ") {
            let (name, dur) = match h.rfind(" (") {
                Some(i) => (&h[..i], h[i + 2..].trim_end_matches(')')),
                None => (h, ""),
            };
            let secs = dur
                .trim_end_matches('s')
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(0.0);
            subs.push(SubtestResult {
                name: name.trim().to_string(),
                status: Status::Fail,
                duration: Duration::from_secs_f64(secs),
                message: String::new(),
            });
        } else if let Some(sub) = subs.last_mut() {
            if !sub.message.is_empty() {
                sub.message.push('\n');
            }
            sub.message.push_str(t);
        } else {
            rest.push(line);
        }
    }
    let own = rest.join("\n");
    let own = own.trim();
    let (message, excerpt) = if own.is_empty() {
        // kola: the failure is all in the subtests.
        let first = subs
            .iter()
            .find_map(|s| s.message.lines().next())
            .unwrap_or("failed");
        (first.trim().to_string(), error.trim().to_string())
    } else {
        match own.split_once('\n') {
            Some((m, x)) => (m.trim().to_string(), x.trim_end().to_string()),
            None => (own.to_string(), String::new()),
        }
    };
    let (class, signature) = triage::triage(&message, &excerpt);
    (
        Failure {
            class,
            signature,
            message,
            excerpt,
        },
        subs,
    )
}

fn entry_to_test(e: Entry, started: DateTime<Utc>) -> TestResult {
    let attempt = |number: u32, error: Option<&str>| {
        let (failure, subtests) = match error {
            Some(err) => {
                let (f, s) = failure_from_error(err);
                (Some(f), s)
            }
            None => (None, Vec::new()),
        };
        Attempt {
            number,
            passed: error.is_none(),
            started,
            duration: Duration::ZERO,
            failure,
            output: String::new(),
            machines: Vec::new(),
            subtests,
        }
    };
    let mut t = TestResult {
        name: e.name.clone(),
        status: Status::Pass,
        skip_reason: None,
        platform: String::new(),
        arch: String::new(),
        attempts: Vec::new(),
        tags: Vec::new(),
    };
    let directive = e.directive.as_str();
    let upper = directive.to_ascii_uppercase();
    let fallback_error = || {
        if e.yaml.is_empty() {
            "failed".to_string()
        } else {
            e.yaml.join("\n")
        }
    };
    // bogie's flaky note: `Flaky: "failed N of M attempts"` (an older bogie's
    // `# flaky: failed N of M attempts`).
    let flaky = e
        .flaky
        .as_deref()
        .or_else(|| directive.strip_prefix("flaky:"))
        .filter(|_| e.ok);
    if let Some(reason) = &e.not_run {
        t.status = Status::NotRun;
        t.skip_reason = Some(reason.clone());
    } else if e.ok && upper.starts_with("SKIP") {
        t.status = Status::Skip;
        t.skip_reason = Some(directive[4..].trim().to_string());
    } else if let Some(note) = flaky {
        t.status = Status::Flaky;
        let total = note
            .split_whitespace()
            .skip_while(|w| *w != "of")
            .nth(1)
            .and_then(|n| n.parse::<u32>().ok());
        for (n, err) in &e.attempts {
            t.attempts.push(attempt(*n, Some(err)));
        }
        let last = total.unwrap_or(t.attempts.len() as u32 + 1);
        t.attempts.push(attempt(last, None));
    } else if !e.ok || e.warn || directive.starts_with("warn:") || upper.starts_with("TODO") {
        t.status = if e.ok || upper.starts_with("TODO") {
            Status::Warn
        } else {
            Status::Fail
        };
        for (n, err) in &e.attempts {
            t.attempts.push(attempt(*n, Some(err)));
        }
        let err = e.error.clone().unwrap_or_else(fallback_error);
        let n = e.attempts.keys().max().map_or(1, |m| m + 1);
        t.attempts.push(attempt(n, Some(&err)));
    } else {
        t.attempts.push(attempt(1, None));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn go_quoting_matches_go() {
        // Values checked against Go's fmt.Sprintf("%q", ...).
        assert_eq!(go_quote("a\"b\\c\nd\te"), r#""a\"b\\c\nd\te""#);
        assert_eq!(go_quote("\x1b[0m\x00\x7f"), r#""\x1b[0m\x00\x7f""#);
        assert_eq!(go_quote("héllo → ✓"), "\"héllo → ✓\"");
        assert_eq!(go_quote("nb\u{a0}sp\u{feff}"), r#""nb\u00a0sp\ufeff""#);
        for s in [
            "",
            "plain",
            "a\"b\\c\nd\te\r\x07\x0b\x0c",
            "héllo\u{a0}\u{1F600}\x01",
        ] {
            assert_eq!(go_unquote(&go_quote(s)).as_deref(), Some(s));
        }
        assert_eq!(go_unquote(r#""\101\x42\u0043""#).as_deref(), Some("ABC"));
        assert_eq!(go_unquote("not quoted"), None);
    }

    #[test]
    fn kolas_dialect_has_no_version_line_and_reads_back_the_same() {
        let report = sample_report();
        let v13 = to_tap_as(&report, TapFormat::V13);
        let kola = to_tap_as(&report, TapFormat::Kola);
        assert_eq!(v13, to_tap(&report));
        assert_eq!(format!("{TAP_VERSION_LINE}\n{kola}"), v13);
        assert!(kola.starts_with("1.."), "{kola}");
        let t = chrono::Utc::now();
        let p = Path::new("x.tap");
        let names = |r: RunReport| {
            r.tests
                .into_iter()
                .map(|t| (t.name, t.status))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(parse_tap(&kola, t, p).unwrap()),
            names(parse_tap(&v13, t, p).unwrap())
        );
        assert_eq!("13".parse::<TapFormat>(), Ok(TapFormat::V13));
        assert_eq!("kola".parse::<TapFormat>(), Ok(TapFormat::Kola));
        assert!("12".parse::<TapFormat>().is_err());
    }

    #[test]
    fn tap13_in_kolas_shape() {
        let tap = to_tap(&sample_report());
        let lines: Vec<&str> = tap.lines().collect();
        assert_eq!(lines[0], "TAP version 13");
        assert_eq!(lines[1], "1..7");
        assert_eq!(lines[2], "ok - cl.basic");
        assert_eq!(
            lines[3],
            "ok - cl.cloudinit.basic # SKIP not supported on qemu-unpriv"
        );
        assert_eq!(lines[4], "not ok - cl.etcd-member.discovery");
        assert_eq!(lines[5], "  ---");
        assert!(lines[6].starts_with("  Attempt 1: \"etcdctl get failed: exit status 1\\nNov 21"));
        assert!(lines[7].starts_with("  Error: \"etcdctl get failed: exit status 1\\nNov 21 02:47:01 localhost etcd-member[812]: {\\\"level\\\":\\\"error\\\""), "{}", lines[7]);
        assert_eq!(lines[8], "  ...");
        assert_eq!(lines[9], "ok - cl.filesystem");
        // No marker after a flaky or warn-only test's name: it goes in the YAML block.
        assert_eq!(lines[10], "ok - coreos.ignition.once");
        assert_eq!(lines[11], "  ---");
        assert_eq!(lines[12], "  Flaky: \"failed 1 of 2 attempts\"");
        assert_eq!(lines[13], format!("  Attempt 1: {}", go_quote(SSH_MSG)));
        assert_eq!(lines[14], "  ...");
        assert_eq!(lines[15], "ok - coreos.selinux.enforce");
        assert_eq!(lines[16], "  ---");
        assert_eq!(lines[17], "  Warn: \"failed, denylisted as warn-only\"");
        assert!(lines[18].starts_with("  Error: \"found SELinux denials\\naudit: type=1400"));
        assert_eq!(lines[19], "  ...");
        assert_eq!(lines[20], "not ok - docker.base");
        assert_eq!(lines[21], "  ---");
        assert_eq!(
            lines[22],
            r#"  Error: "docker: Error response from daemon: pull access denied for busybx\n--- FAIL: docker.base/pull (3.00s)\n        docker: Error response from daemon: pull access denied for busybx""#
        );
        assert_eq!(lines[23], "  ...");
        assert_eq!(lines.len(), 24);
        // Only test lines and YAML blocks, so Flatcar's ingest sees no phantom tests.
        let mut in_yaml = false;
        for l in &lines[2..] {
            match l.trim() {
                "---" => in_yaml = true,
                "..." => in_yaml = false,
                t if !in_yaml => {
                    assert!(t.starts_with("ok - ") || t.starts_with("not ok - "), "{t}");
                    assert!(!t.contains(" # ") || t.contains(" # SKIP"), "{t}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn single_failure_is_kolas_lines() {
        let mut r = sample_report();
        r.tests
            .retain(|t| t.name == "cl.basic" || t.name == "docker.base");
        r.tests[1].attempts[0].subtests.clear();
        r.tests[1].name = "docker#base".into();
        assert_eq!(
            to_tap(&r),
            "TAP version 13\n1..2\nok - cl.basic\nnot ok - dockerbase\n  ---\n  Error: \"docker: Error response from daemon: pull access denied for busybx\"\n  ...\n"
        );
    }

    #[test]
    fn a_test_not_run_fails_and_reads_back_as_not_run() {
        let mut r = sample_report();
        r.tests = vec![not_run("cl.never")];
        let tap = to_tap(&r);
        assert_eq!(
            tap,
            "TAP version 13\n1..1\nnot ok - cl.never\n  ---\n  Not run: \"no result: the run did not end\"\n  ...\n"
        );
        let back = parse_tap(&tap, Utc::now(), Path::new("x.tap")).unwrap();
        assert_eq!(back.tests[0].status, Status::NotRun);
        assert_eq!(
            back.tests[0].skip_reason.as_deref(),
            Some("no result: the run did not end")
        );
        assert!(back.tests[0].attempts.is_empty());
    }

    #[test]
    fn reads_an_older_bogies_markers() {
        let old = "1..2\nok - coreos.ignition.once # flaky: failed 1 of 2 attempts\n  ---\n  Attempt 1: \"ssh: handshake failed\"\n  ...\nok - coreos.selinux.enforce # warn: failed, denylisted as warn-only\n  ---\n  Error: \"found SELinux denials\"\n  ...\n";
        let r = parse_tap(old, Utc::now(), Path::new("old.tap")).unwrap();
        assert_eq!(r.tests[0].name, "coreos.ignition.once");
        assert_eq!(r.tests[0].status, Status::Flaky);
        assert_eq!(r.tests[0].attempts.len(), 2);
        assert_eq!(r.tests[1].status, Status::Warn);
    }

    #[test]
    fn reads_back_bogie_tap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.tap");
        let report = sample_report();
        write_tap(&report, &path, TapFormat::V13).unwrap();
        let back = read_tap(&path).unwrap();
        assert_eq!(back.tests.len(), 7);
        for orig in &report.tests {
            let got = back.tests.iter().find(|t| t.name == orig.name).unwrap();
            assert_eq!(got.status, orig.status, "{}", orig.name);
            assert_eq!(got.skip_reason, orig.skip_reason);
            assert_eq!(got.attempts.len(), orig.attempts.len(), "{}", orig.name);
            if let (Some(a), Some(b)) = (got.last_failure(), orig.last_failure()) {
                assert_eq!(a.class, b.class, "{}", orig.name);
                assert_eq!(a.signature, b.signature, "{}", orig.name);
                assert_eq!(a.message, b.message);
            }
        }
        let docker = back.tests.iter().find(|t| t.name == "docker.base").unwrap();
        let subs = &docker.attempts[0].subtests;
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].name, "docker.base/pull");
        assert_eq!(subs[0].duration, Duration::from_secs(3));
        assert!(subs[0].message.starts_with("docker: Error response"));
    }

    #[test]
    fn reads_kola_tap() {
        let kola = "1..4\nok - coreos.auth.verify\nnot ok - cl.filesystem\n  ---\n  Error: \"--- FAIL: cl.filesystem/deadlinks (1.86s)\\n            files.go:90: Dead symbolic links found: [/var/lib/flatcar-oem-gce/usr/lib64/python3.9/site-packages/certifi-3021.3.16-py3.9.egg-info]\"\n  ...\nok - cl.cloudinit.script # SKIP\nok - kubeadm.v1.22.0.flannel.base\n";
        let r = parse_tap(kola, Utc::now(), Path::new("test.tap")).unwrap();
        let names: Vec<_> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status))
            .collect();
        assert_eq!(
            names,
            vec![
                ("coreos.auth.verify", Status::Pass),
                ("cl.filesystem", Status::Fail),
                ("cl.cloudinit.script", Status::Skip),
                ("kubeadm.v1.22.0.flannel.base", Status::Pass),
            ]
        );
        let f = r.tests[1].last_failure().unwrap();
        assert!(
            f.message
                .starts_with("files.go:90: Dead symbolic links found"),
            "{}",
            f.message
        );
        assert_eq!(f.class, FailureClass::Assertion);
        assert_eq!(
            r.tests[1].attempts[0].subtests[0].name,
            "cl.filesystem/deadlinks"
        );
        assert_eq!(r.tests[2].skip_reason.as_deref(), Some(""));
    }

    #[test]
    fn reads_flatcar_ci_merged_tap() {
        let merged = "1..3\nok - Version: 4799.0.0, Architecture: arm64\n   ---\n   Platforms tested: qemu_uefi\n   ...\nok - cl.basic\n   ---\n   Succeeded: qemu_uefi (1)\n   ...\nnot ok - cl.internet\n   ---\n   Failed: qemu_uefi (1, 2)\n   Error messages for qemu_uefi, run 1:\n      L1: \" ssh: handshake failed \"\n   ...\n";
        let r = parse_tap(merged, Utc::now(), Path::new("results-qemu.tap")).unwrap();
        assert_eq!(r.info.version, "4799.0.0");
        assert_eq!(r.info.arch, "arm64");
        assert_eq!(r.info.platform, "qemu_uefi");
        assert_eq!(r.tests.len(), 2);
        assert_eq!(r.tests[1].status, Status::Fail);
        assert_eq!(r.tests[1].arch, "arm64");
        assert_eq!(
            r.tests[1].last_failure().unwrap().class,
            FailureClass::Harness
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let err = parse_tap("hello\n", Utc::now(), Path::new("x.tap")).unwrap_err();
        assert!(err.to_string().contains("not a TAP line"), "{err}");
    }
}
