//! coreos-assembler's test denylist (`src/config/kola-denylist.yaml`), read by `--denylist`.
//!
//! ```yaml
//! - pattern: cl.etcd-member.*          # kola-style glob over test names
//!   tracker: https://github.com/flatcar/Flatcar/issues/1234
//!   arches: [arm64]                    # optional: x86_64/amd64, aarch64/arm64, ...
//!   platforms: [qemu, azure]           # optional
//!   streams: [alpha, beta]             # optional: matched against --channel/--stream
//!   snooze: 2026-12-01                 # optional: denylisted until that day (UTC)
//!   warn: true                         # optional: run it, a failure only warns
//! ```
//!
//! The semantics are coreos-assembler's (`ParseDenyListYaml`):
//! - an entry applies when each of `arches`, `platforms` and `streams` is empty or names the
//!   run's; `streams` is ignored when the run's stream/channel is unknown, and so is
//!   `osversion`;
//! - without `snooze`: `warn: true` runs the test and turns its failure into a warning;
//!   otherwise the test is skipped with the tracker link;
//! - with `snooze`: before that day (UTC) the test is skipped; from that day on the entry no
//!   longer skips (it still warns when `warn: true`);
//! - the special pattern `skip-console-warnings` is not a test: it is reported in
//!   [`Resolved::skip_console_warnings`].
//!
//! Unknown keys are errors, so a typo (`snoze:`) is caught instead of silently ignored.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use globset::GlobMatcher;
use serde::Deserialize;

use crate::arch::Arch;
use crate::pattern::{glob, platform_matches};

/// coreos-assembler's special pattern that silences console warnings instead of naming tests.
pub const SKIP_CONSOLE_WARNINGS: &str = "skip-console-warnings";

/// One denylist entry, as written in the YAML file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// A kola-style glob over test names.
    pub pattern: String,
    /// Where the problem is tracked (an issue URL).
    #[serde(default)]
    pub tracker: Option<String>,
    /// Streams (Flatcar: channels) the entry applies to; empty: all.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Architectures the entry applies to (`x86_64`, `aarch64`, `amd64`, ...); empty: all.
    #[serde(default)]
    pub arches: Vec<String>,
    /// Platforms the entry applies to; empty: all.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// `YYYY-MM-DD`: the entry skips the test only before this day (UTC).
    #[serde(default)]
    pub snooze: Option<String>,
    /// OS versions (coreos-assembler's `osversion`); not known to bogie, so never restricts.
    #[serde(default)]
    pub osversion: Vec<String>,
    /// Run the test, but report its failure as a warning (exit code 77 if only such failed).
    #[serde(default)]
    pub warn: bool,
}

/// A denylist file that cannot be used. Its message is one line.
#[derive(Debug, thiserror::Error)]
#[error("denylist {}: {message}", path.display())]
pub struct DenylistError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (one line).
    pub message: String,
}

/// A parsed denylist.
#[derive(Debug, Clone, Default)]
pub struct Denylist {
    /// Entries in file order (several files are concatenated).
    pub entries: Vec<Entry>,
}

/// The run a denylist is applied to.
#[derive(Debug, Clone)]
pub struct DenyContext {
    /// The run's architecture.
    pub arch: Arch,
    /// The run's platform.
    pub platform: String,
    /// The run's stream or channel, when known.
    pub stream: Option<String>,
    /// Now (snooze dates are compared with it).
    pub now: DateTime<Utc>,
}

/// What the denylist does to one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Skip it, with this reason (it names the tracker).
    Skip(String),
    /// Run it; a failure is only a warning.
    Warn(Option<String>),
}

/// The entries that apply to one run, ready to match test names.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    skips: Vec<(String, GlobMatcher, String)>,
    warns: Vec<(String, GlobMatcher, Option<String>)>,
    /// Lines worth telling the user (snoozed and expired entries), in file order.
    pub notes: Vec<String>,
    /// The `skip-console-warnings` entry applies.
    pub skip_console_warnings: bool,
}

/// The first line of a YAML error (the rest is a source excerpt), without its `error: `.
fn one_line(s: &str) -> String {
    let first = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

impl Denylist {
    /// Reads and checks a denylist file.
    pub fn load(path: &Path) -> Result<Denylist, DenylistError> {
        let text = std::fs::read_to_string(path).map_err(|e| DenylistError {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Denylist::parse(&text, path)
    }

    /// Parses and checks denylist YAML; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Denylist, DenylistError> {
        let err = |message: String| DenylistError {
            path: path.to_path_buf(),
            message,
        };
        let is_blank = text
            .lines()
            .map(str::trim)
            .all(|l| l.is_empty() || l.starts_with('#') || l == "---");
        if is_blank {
            return Ok(Denylist::default());
        }
        let entries: Option<Vec<Entry>> =
            serde_saphyr::from_str(text).map_err(|e| err(one_line(&e.to_string())))?;
        let entries = entries.unwrap_or_default();
        for (i, e) in entries.iter().enumerate() {
            let at = format!("entry {} ({:?})", i + 1, e.pattern);
            if e.pattern.trim().is_empty() {
                return Err(err(format!("entry {} has an empty pattern", i + 1)));
            }
            if e.pattern != SKIP_CONSOLE_WARNINGS {
                glob(&e.pattern).map_err(|x| err(format!("{at}: {x}")))?;
            }
            if let Some(s) = &e.snooze {
                if parse_date(s).is_none() {
                    return Err(err(format!(
                        "{at}: snooze {s:?} is not a date (YYYY-MM-DD)"
                    )));
                }
            }
        }
        Ok(Denylist { entries })
    }

    /// A denylist of bare patterns (coreos-assembler's `--denylist-test`).
    pub fn from_patterns(patterns: &[String]) -> Result<Denylist, DenylistError> {
        let mut entries = Vec::new();
        for p in patterns {
            glob(p).map_err(|e| DenylistError {
                path: PathBuf::from("--denylist-test"),
                message: e.to_string(),
            })?;
            entries.push(Entry {
                pattern: p.clone(),
                tracker: Some("--denylist-test".to_string()),
                streams: Vec::new(),
                arches: Vec::new(),
                platforms: Vec::new(),
                snooze: None,
                osversion: Vec::new(),
                warn: false,
            });
        }
        Ok(Denylist { entries })
    }

    /// Appends another denylist's entries.
    pub fn extend(&mut self, other: Denylist) {
        self.entries.extend(other.entries);
    }

    /// The entries that apply to the run described by `cx`.
    pub fn resolve(&self, cx: &DenyContext) -> Resolved {
        let mut r = Resolved::default();
        let today = cx.now.date_naive();
        for e in &self.entries {
            if !e.arches.is_empty()
                && !e
                    .arches
                    .iter()
                    .any(|a| a.parse::<Arch>().is_ok_and(|a| a == cx.arch))
            {
                continue;
            }
            if !e.platforms.is_empty()
                && !e
                    .platforms
                    .iter()
                    .any(|p| platform_matches(p, &cx.platform))
            {
                continue;
            }
            if let Some(stream) = &cx.stream {
                if !e.streams.is_empty() && !e.streams.contains(stream) {
                    continue;
                }
            }
            if e.pattern == SKIP_CONSOLE_WARNINGS {
                r.skip_console_warnings = true;
                continue;
            }
            let Ok(m) = glob(&e.pattern) else { continue };
            let tracker = e.tracker.clone().filter(|t| !t.trim().is_empty());
            let snooze = e.snooze.as_deref().and_then(parse_date);
            match snooze {
                Some(day) if today < day => {
                    r.notes.push(format!(
                        "denylist: snoozing {} until {day}{}",
                        e.pattern,
                        tracker
                            .as_deref()
                            .map(|t| format!(" ({t})"))
                            .unwrap_or_default()
                    ));
                    let reason = match &tracker {
                        Some(t) => format!("denylisted until {day}: {t}"),
                        None => format!("denylisted until {day}"),
                    };
                    r.skips.push((e.pattern.clone(), m, reason));
                }
                Some(day) => {
                    r.notes.push(format!(
                        "denylist: snooze of {} expired on {day}; it runs",
                        e.pattern
                    ));
                    if e.warn {
                        r.warns.push((e.pattern.clone(), m, tracker));
                    }
                }
                None if e.warn => r.warns.push((e.pattern.clone(), m, tracker)),
                None => {
                    let reason = match &tracker {
                        Some(t) => format!("denylisted: {t}"),
                        None => format!("denylisted by pattern {}", e.pattern),
                    };
                    r.skips.push((e.pattern.clone(), m, reason));
                }
            }
        }
        r
    }
}

impl Resolved {
    /// What the denylist does to `test` (a skip wins over a warn), or None.
    pub fn verdict(&self, test: &str) -> Option<Verdict> {
        if let Some((_, _, reason)) = self.skips.iter().find(|(_, m, _)| m.is_match(test)) {
            return Some(Verdict::Skip(reason.clone()));
        }
        self.warns
            .iter()
            .find(|(_, m, _)| m.is_match(test))
            .map(|(_, _, t)| Verdict::Warn(t.clone()))
    }

    /// Whether no entry applies.
    pub fn is_empty(&self) -> bool {
        self.skips.is_empty() && self.warns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const YAML: &str = r#"
# Flatcar's denylist
- pattern: cl.etcd-member.*
  tracker: https://github.com/flatcar/Flatcar/issues/1
- pattern: docker.base
  tracker: https://github.com/flatcar/Flatcar/issues/2
  snooze: 2026-01-15
- pattern: docker.userns
  snooze: 2026-03-01
  tracker: https://github.com/flatcar/Flatcar/issues/3
- pattern: cl.basic
  warn: true
  tracker: https://github.com/flatcar/Flatcar/issues/4
- pattern: cl.arm.only
  arches: [aarch64]
- pattern: cl.azure.only
  platforms: [azure]
- pattern: cl.alpha.only
  streams: [alpha]
- pattern: skip-console-warnings
"#;

    fn cx(stream: Option<&str>) -> DenyContext {
        DenyContext {
            arch: Arch::Amd64,
            platform: "qemu".into(),
            stream: stream.map(str::to_string),
            now: Utc.with_ymd_and_hms(2026, 2, 1, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn coreos_assembler_semantics() {
        let d = Denylist::parse(YAML, Path::new("d.yaml")).unwrap();
        assert_eq!(d.entries.len(), 8);
        let r = d.resolve(&cx(Some("stable")));
        assert_eq!(
            r.verdict("cl.etcd-member.discovery"),
            Some(Verdict::Skip(
                "denylisted: https://github.com/flatcar/Flatcar/issues/1".into()
            ))
        );
        // Snooze date passed: runs.
        assert_eq!(r.verdict("docker.base"), None);
        // Snooze date ahead: skipped until then.
        assert_eq!(
            r.verdict("docker.userns"),
            Some(Verdict::Skip(
                "denylisted until 2026-03-01: https://github.com/flatcar/Flatcar/issues/3".into()
            ))
        );
        assert_eq!(
            r.verdict("cl.basic"),
            Some(Verdict::Warn(Some(
                "https://github.com/flatcar/Flatcar/issues/4".into()
            )))
        );
        assert_eq!(r.verdict("cl.arm.only"), None);
        assert_eq!(r.verdict("cl.azure.only"), None);
        assert_eq!(r.verdict("cl.alpha.only"), None);
        assert!(r.skip_console_warnings);
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        // Stream unknown: stream-restricted entries apply (as coreos-assembler does).
        let r = d.resolve(&cx(None));
        assert!(matches!(r.verdict("cl.alpha.only"), Some(Verdict::Skip(_))));
        let mut c = cx(Some("alpha"));
        c.arch = Arch::Arm64;
        c.platform = "azure".into();
        let r = d.resolve(&c);
        for t in ["cl.arm.only", "cl.azure.only", "cl.alpha.only"] {
            assert!(matches!(r.verdict(t), Some(Verdict::Skip(_))), "{t}");
        }
    }

    #[test]
    fn malformed_files_are_one_line_errors() {
        for (text, want) in [
            ("- pattern: x\n  snoze: 2026-01-01\n", "snoze"),
            ("- pattern: x\n  snooze: tomorrow\n", "not a date"),
            ("pattern: x\n", "expected sequence"),
            ("- pattern: 'cl.[basic'\n", "invalid test pattern"),
            ("- tracker: x\n", "missing field `pattern`"),
            (
                "- pattern: x\n  warn: maybe\n",
                "line 2 column 9: invalid boolean",
            ),
            ("- [unclosed\n", "unclosed bracket"),
        ] {
            let e = Denylist::parse(text, Path::new("/tmp/deny.yaml")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("denylist /tmp/deny.yaml: "), "{msg}");
            assert!(msg.contains(want), "{text:?}: {msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        assert!(Denylist::parse("# nothing yet\n", Path::new("x"))
            .unwrap()
            .entries
            .is_empty());
        assert!(Denylist::parse("[]\n", Path::new("x"))
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn denylist_test_flag_patterns() {
        let d = Denylist::from_patterns(&["docker.*".to_string()]).unwrap();
        let r = d.resolve(&cx(None));
        assert!(matches!(r.verdict("docker.base"), Some(Verdict::Skip(_))));
        assert!(Denylist::from_patterns(&["[".to_string()]).is_err());
    }
}
