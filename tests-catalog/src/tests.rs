//! The catalog's own tests: names, kola coverage, Ignition validity.

use std::path::PathBuf;
use std::process::Command;

use super::*;

#[test]
fn names_are_unique_and_kola_shaped() {
    let r = registry();
    assert!(!r.is_empty());
    for t in r.tests() {
        assert!(
            t.name.contains('.') || t.name == "packages",
            "{} is not family.name",
            t.name
        );
        assert!(!t.description.is_empty(), "{} has no description", t.name);
    }
}

fn kola_names() -> Option<Vec<String>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/research/kola-flatcar-tests.txt");
    let text = std::fs::read_to_string(&p).ok()?;
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    )
}

#[test]
fn registers_at_least_140_of_kolas_150_flatcar_tests() {
    let Some(names) = kola_names() else {
        eprintln!("skipped: research/kola-flatcar-tests.txt not found");
        return;
    };
    let r = registry();
    let missing: Vec<&String> = names.iter().filter(|n| r.get(n).is_none()).collect();
    let have = names.len() - missing.len();
    assert!(
        have >= 140,
        "only {have} of {} kola names registered; missing: {missing:?}",
        names.len()
    );
}

/// Every spec-3 config the catalog writes (tests' own and the ones bodies boot with).
fn v3_configs() -> Vec<(String, Config)> {
    let mut v: Vec<(String, Config)> = all()
        .into_iter()
        .filter_map(|t| t.config.clone().map(|c| (t.name.clone(), c)))
        .collect();
    v.extend(body_configs().into_iter().map(|(n, c)| (n.to_string(), c)));
    v.into_iter().filter(|(_, c)| c.is_v3()).collect()
}

#[test]
fn every_spec_3_config_passes_ignition_validate() {
    let bin = [
        "/usr/bin/ignition-validate",
        "/usr/local/bin/ignition-validate",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        eprintln!("skipped: ignition-validate is not installed (apt-get install ignition)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let configs = v3_configs();
    assert!(configs.len() > 30, "only {} spec-3 configs", configs.len());
    for (i, (name, cfg)) in configs.iter().enumerate() {
        // As the harness renders it: with an SSH key for core.
        let mut cfg = cfg.clone();
        cfg.add_ssh_key(
            "core",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0 test",
        );
        let p = dir.path().join(format!("{i}.ign"));
        std::fs::write(&p, cfg.render_pretty()).unwrap();
        let out = Command::new(bin).arg(&p).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || text.contains("error") {
            failures.push(format!("{name}: {}", text.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid configs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn legacy_configs_need_flatcar() {
    for t in all() {
        if let Some(c) = &t.config {
            if !c.is_v3() {
                assert!(
                    t.requires.iter().any(|r| r == "flatcar"),
                    "{} has a spec-{} config but does not require flatcar",
                    t.name,
                    c.version()
                );
            }
        }
    }
}
