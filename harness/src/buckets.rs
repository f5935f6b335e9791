//! Merged-config buckets, as coreos-assembler's kola makes them for its non-exclusive tests:
//! non-exclusive one-machine tests that ask for the same machine shape
//! ([`crate::sharing::shape_key`]) and whose Ignition configs merge are put in one bucket,
//! and every test of a bucket gets the bucket's merged config, so that sharing
//! ([`crate::sharing`]) runs them one after another on one machine (and snapshot templates
//! serve the bucket's other units).
//!
//! Two configs merge when both are spec 3, hold nothing but files, directories, links,
//! units, users and groups, and define no path, unit, user or group differently (an entry
//! both define identically is kept once). A test without a config joins any bucket of its
//! shape. Tests that name each other in `conflicts` never share a bucket. A bucket ends at
//! a test that breaks its machine: the sharing hands a machine on only after a passing test
//! that left systemd `running` (no failed unit), so the tests after it get a fresh machine
//! booted with the same merged config.

use serde_json::Value;

use crate::ignition::Config;
use crate::select::Selected;
use crate::sharing::{conflict, shape_key};

/// The sections of a config that merge, and each entry's identity field.
const ENTRIES: &[(&str, &str, &str, &str)] = &[
    ("storage", "files", "path", "node"),
    ("storage", "directories", "path", "node"),
    ("storage", "links", "path", "node"),
    ("systemd", "units", "name", "unit"),
    ("passwd", "users", "name", "user"),
    ("passwd", "groups", "name", "group"),
];

/// One bucket: the indices of its tests in the selection and their merged config.
#[derive(Debug)]
struct Bucket {
    shape: String,
    members: Vec<usize>,
    merged: Option<Config>,
}

/// Gives the non-exclusive tests of a selection their bucket's merged config (see the
/// module's docs). Returns the buckets of more than one test, as lists of test names.
pub fn merge_buckets(selected: &mut [Selected], run_memory_mb: Option<u32>) -> Vec<Vec<String>> {
    let mut buckets: Vec<Bucket> = Vec::new();
    for i in 0..selected.len() {
        let Selected::Run(t) = &selected[i] else {
            continue;
        };
        let Some(shape) = shape_key(t, run_memory_mb) else {
            continue;
        };
        let fits = |b: &Bucket| {
            b.shape == shape
                && b.members.iter().all(|&j| !conflict(selected[j].test(), t))
                && match (&b.merged, &t.config) {
                    (Some(a), Some(c)) => mergeable(a, c),
                    (Some(a), None) => mergeable(a, &Config::new()),
                    (None, Some(c)) => mergeable(&Config::new(), c),
                    (None, None) => true,
                }
        };
        match buckets.iter().position(fits) {
            Some(b) => {
                let b = &mut buckets[b];
                b.members.push(i);
                if let Some(c) = &t.config {
                    b.merged = Some(match b.merged.take() {
                        Some(m) => merge(m, c),
                        None => c.clone(),
                    });
                }
            }
            None => buckets.push(Bucket {
                shape,
                members: vec![i],
                merged: t.config.clone(),
            }),
        }
    }
    let mut shared = Vec::new();
    for b in buckets {
        if b.members.len() > 1 {
            shared.push(
                b.members
                    .iter()
                    .map(|&i| selected[i].test().name.clone())
                    .collect(),
            );
        }
        let Some(merged) = b.merged else {
            continue;
        };
        for i in b.members {
            if let Selected::Run(t) = &mut selected[i] {
                t.config = Some(merged.clone());
            }
        }
    }
    shared
}

fn spec_parts(c: &Config) -> Vec<u32> {
    c.version()
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Whether a config holds only what merges: `ignition.version`, and the sections of
/// [`ENTRIES`].
fn only_mergeable_sections(c: &Config) -> bool {
    let Some(top) = c.as_value().as_object() else {
        return false;
    };
    top.iter().all(|(k, v)| match k.as_str() {
        "ignition" => v
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "version")),
        sec @ ("storage" | "systemd" | "passwd") => v.as_object().is_some_and(|o| {
            o.iter().all(|(key, val)| {
                ENTRIES.iter().any(|(s, k, _, _)| *s == sec && k == key)
                    || val.as_array().is_some_and(Vec::is_empty)
            })
        }),
        _ => false,
    })
}

/// The entries of `c` as (identity, entry), e.g. `("node/etc/x", {...})`.
fn entries(c: &Config) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (sec, key, field, kind) in ENTRIES {
        let Some(items) = c.as_value().pointer(&format!("/{sec}/{key}")) else {
            continue;
        };
        for item in items.as_array().into_iter().flatten() {
            if let Some(v) = item.get(*field).and_then(Value::as_str) {
                let v = if *kind == "node" {
                    v.trim_end_matches('/')
                } else {
                    v
                };
                out.push((format!("{kind}/{v}"), item));
            }
        }
    }
    out
}

/// Whether two configs merge into one Ignition accepts and that means what each means
/// alone: both spec 3, only mergeable sections, nothing defined twice differently.
pub fn mergeable(a: &Config, b: &Config) -> bool {
    if !a.is_v3() || !b.is_v3() || !only_mergeable_sections(a) || !only_mergeable_sections(b) {
        return false;
    }
    let ea = entries(a);
    entries(b)
        .iter()
        .all(|(id, v)| ea.iter().all(|(ida, va)| ida != id || va == v))
}

/// `a` and `b` in one config: arrays joined (an entry both hold identically once), the
/// newer spec version.
pub fn merge(a: Config, b: &Config) -> Config {
    let version = if spec_parts(b) > spec_parts(&a) {
        b.version().to_string()
    } else {
        a.version().to_string()
    };
    let have = entries(&a)
        .into_iter()
        .map(|(id, v)| (id, v.clone()))
        .collect::<Vec<_>>();
    let mut b = b.as_value().clone();
    for (sec, key, _, _) in ENTRIES {
        if let Some(items) = b
            .get_mut(*sec)
            .and_then(|s| s.get_mut(*key))
            .and_then(Value::as_array_mut)
        {
            items.retain(|item| !have.iter().any(|(_, v)| v == item));
        }
    }
    a.merge(b)
        .merge(serde_json::json!({ "ignition": { "version": version } }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::Test;

    fn t(name: &str, config: Option<Config>) -> Test {
        let mut t = Test::new(name, |_c| async { Ok(()) }).non_exclusive();
        t.config = config;
        t
    }

    fn file(path: &str, text: &str) -> Config {
        Config::new().file(path, text, 0o644)
    }

    fn paths(s: &Selected) -> Vec<String> {
        s.test()
            .config
            .as_ref()
            .and_then(|c| c.as_value().pointer("/storage/files"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| f["path"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn non_exclusive_tests_get_their_buckets_merged_config() {
        let mut c = t("c", None);
        c.conflicts = vec!["a".into()];
        let mut selected = vec![
            Selected::Run(t("a", Some(file("/etc/a", "x")))),
            Selected::Run(t("b", Some(file("/etc/b", "x")))),
            Selected::Run(c),
            Selected::Run(t("same-path", Some(file("/etc/a", "other")))),
            Selected::Run(t("same-entry", Some(file("/etc/b", "x")))),
            Selected::Run(t("none", None)),
            Selected::Run(Test::new("exclusive", |_c| async { Ok(()) })),
            Selected::Run(t("bigger", Some(file("/etc/z", "x"))).min_memory_mb(4096)),
        ];
        let shared = merge_buckets(&mut selected, None);
        assert_eq!(paths(&selected[0]), vec!["/etc/a", "/etc/b"]);
        assert_eq!(paths(&selected[1]), vec!["/etc/a", "/etc/b"]);
        assert_eq!(
            paths(&selected[4]),
            vec!["/etc/a", "/etc/b"],
            "an identical entry is kept once"
        );
        assert_eq!(
            paths(&selected[5]),
            vec!["/etc/a", "/etc/b"],
            "no config: the bucket's"
        );
        // c conflicts with a; same-path defines /etc/a differently: both in a second bucket.
        assert_eq!(paths(&selected[2]), vec!["/etc/a"]);
        assert_eq!(paths(&selected[3]), vec!["/etc/a"]);
        assert!(selected[6].test().config.is_none(), "exclusive: left alone");
        assert_eq!(paths(&selected[7]), vec!["/etc/z"], "another shape: alone");
        assert_eq!(
            shared,
            vec![vec!["a", "b", "same-entry", "none"], vec!["c", "same-path"]]
        );
    }

    #[test]
    fn only_plain_spec3_configs_merge() {
        let v30 = Config::from_json(r#"{"ignition":{"version":"3.0.0"}}"#).unwrap();
        assert_eq!(merge(v30.clone(), &Config::new()).version(), "3.3.0");
        let v2 = Config::from_json(r#"{"ignition":{"version":"2.3.0"}}"#).unwrap();
        assert!(!mergeable(&v2, &Config::new()));
        let kargs = Config::from_json(
            r#"{"ignition":{"version":"3.3.0"},"kernelArguments":{"shouldExist":["x"]}}"#,
        )
        .unwrap();
        assert!(!mergeable(&kargs, &Config::new()));
        let disks = Config::from_json(
            r#"{"ignition":{"version":"3.3.0"},"storage":{"disks":[{"device":"/dev/vdb"}]}}"#,
        )
        .unwrap();
        assert!(!mergeable(&Config::new(), &disks));
        let remote = Config::from_json(
            r#"{"ignition":{"version":"3.3.0","config":{"merge":[{"source":"http://x"}]}}}"#,
        )
        .unwrap();
        assert!(!mergeable(&Config::new(), &remote));
        let unit = |text: &str| {
            Config::from_json(&format!(
                r#"{{"ignition":{{"version":"3.3.0"}},"systemd":{{"units":[{{"name":"x.service","contents":"{text}"}}]}}}}"#
            ))
            .unwrap()
        };
        assert!(mergeable(&unit("a"), &unit("a")));
        assert!(!mergeable(&unit("a"), &unit("b")), "one unit, two contents");
        assert!(mergeable(&v30, &unit("a")));
    }
}
