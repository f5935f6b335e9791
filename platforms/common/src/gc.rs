//! `bogie gc`: which resources are old enough to delete, and the report of what was done.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::tags::parse_created;

/// What `bogie gc` deletes.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only resources created longer ago than this (`--older-than`).
    pub older_than: Duration,
    /// Only resources tagged with this basename (`--basename`).
    pub basename: String,
    /// List what would be deleted without deleting it.
    pub dry_run: bool,
}

impl GcOptions {
    /// The creation time before which a resource counts as a leftover.
    pub fn cutoff(&self) -> DateTime<Utc> {
        let age = chrono::Duration::from_std(self.older_than).unwrap_or(chrono::Duration::MAX);
        Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether a resource with these tag values is one of ours and old enough: its
    /// basename tag equals [`GcOptions::basename`] and its created tag parses and lies
    /// before the cut-off. A resource without a parseable creation time is never deleted.
    pub fn is_leftover(&self, basename: Option<&str>, created: Option<&str>) -> bool {
        if basename != Some(self.basename.as_str()) {
            return false;
        }
        match created.and_then(parse_created) {
            Some(t) => t < self.cutoff(),
            None => false,
        }
    }
}

/// One resource gc looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcItem {
    /// Kind (`instance`, `key-pair`, `security-group`, `resource-group`, `device`, ...).
    pub kind: String,
    /// Its id or name.
    pub id: String,
    /// Its `bogie:created` time, as tagged.
    pub created: Option<String>,
}

impl GcItem {
    /// A new item.
    pub fn new(kind: &str, id: impl Into<String>, created: Option<String>) -> GcItem {
        GcItem {
            kind: kind.to_string(),
            id: id.into(),
            created,
        }
    }
}

impl fmt::Display for GcItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)?;
        if let Some(c) = &self.created {
            write!(f, " (created {c})")?;
        }
        Ok(())
    }
}

/// What a gc pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Deleted (or, on a dry run, would be deleted).
    pub deleted: Vec<GcItem>,
    /// Leftovers that could not be deleted, with the reason.
    pub failed: Vec<(GcItem, String)>,
    /// How many resources of the basename were too young to delete.
    pub young: usize,
}

impl GcReport {
    /// Whether every leftover was deleted.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_old_and_ours() {
        let o = GcOptions {
            older_than: Duration::from_secs(6 * 3600),
            basename: "bogie".into(),
            dry_run: false,
        };
        let old = (Utc::now() - chrono::Duration::hours(7)).to_rfc3339();
        let young = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        assert!(o.is_leftover(Some("bogie"), Some(&old)));
        assert!(!o.is_leftover(Some("bogie"), Some(&young)));
        assert!(!o.is_leftover(Some("other"), Some(&old)));
        assert!(!o.is_leftover(None, Some(&old)));
        assert!(!o.is_leftover(Some("bogie"), None));
        assert!(!o.is_leftover(Some("bogie"), Some("garbage")));
        let huge = GcOptions {
            older_than: Duration::from_secs(u64::MAX / 2),
            ..o
        };
        assert!(!huge.is_leftover(Some("bogie"), Some(&old)));
    }
}
