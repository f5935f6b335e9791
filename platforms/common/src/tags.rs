//! The tags (labels on GCE) that mark a cloud resource as bogie's, and the names built
//! from them.

use chrono::{DateTime, SecondsFormat, Utc};

/// Tag naming the run that created a resource (a random hex id).
pub const TAG_RUN: &str = "bogie:run";
/// Tag holding the creation time, RFC 3339 in UTC (`2026-11-21T10:00:00Z`).
pub const TAG_CREATED: &str = "bogie:created";
/// Tag holding `--basename` (default `bogie`), so `bogie gc --basename B` finds only B's.
pub const TAG_BASENAME: &str = "bogie:basename";

/// The identity of one run on a cloud: its id, creation time and basename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTags {
    /// Random id of the run (12 hex digits).
    pub run: String,
    /// When the run started.
    pub created: DateTime<Utc>,
    /// `--basename`.
    pub basename: String,
}

impl RunTags {
    /// A fresh identity for a run with this basename.
    pub fn new(basename: &str) -> RunTags {
        RunTags {
            run: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            created: Utc::now(),
            basename: basename.to_string(),
        }
    }

    /// The creation time as tagged: RFC 3339, seconds, `Z`.
    pub fn created_rfc3339(&self) -> String {
        self.created.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The three tags as (key, value) pairs.
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            (TAG_RUN.to_string(), self.run.clone()),
            (TAG_CREATED.to_string(), self.created_rfc3339()),
            (TAG_BASENAME.to_string(), self.basename.clone()),
        ]
    }

    /// A resource name `<basename>-<run>[-<part>...]`, restricted to `[a-z0-9-]` (lower
    /// case, other characters become `-`) and cut to `max` characters, as most clouds
    /// accept.
    pub fn name(&self, parts: &[&str], max: usize) -> String {
        let mut s = format!("{}-{}", self.basename, self.run);
        for p in parts {
            s.push('-');
            s.push_str(p);
        }
        sanitize_name(&s, max)
    }
}

/// Lower-cases and maps everything outside `[a-z0-9-]` to `-`, squeezes repeated dashes,
/// trims dashes at the ends, cuts to `max` and makes sure it starts with a letter.
pub fn sanitize_name(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let mut out = out.trim_matches('-').to_string();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "b-");
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

/// Parses a `bogie:created` value (RFC 3339) or a unix-seconds label value (GCE labels
/// cannot hold `:`).
pub fn parse_created(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_names() {
        let t = RunTags::new("Kola_CI");
        assert_eq!(t.run.len(), 12);
        let created = t.created_rfc3339();
        assert!(created.ends_with('Z'), "{created}");
        assert_eq!(
            parse_created(&created).unwrap().timestamp(),
            t.created.timestamp()
        );
        let n = t.name(&["cl.basic-1", "m1"], 63);
        assert!(n.starts_with("kola-ci-"), "{n}");
        assert!(n.ends_with("-cl-basic-1-m1"), "{n}");
        assert_eq!(sanitize_name("--9abc__", 63), "b-9abc");
        assert_eq!(sanitize_name("abcdef-ghi", 7), "abcdef");
        assert_eq!(
            parse_created("1700000000").unwrap().timestamp(),
            1_700_000_000
        );
        assert!(parse_created("yesterday").is_none());
    }
}
