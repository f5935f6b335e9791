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

/// kola's Flatcar test names (`shared/research/kola-flatcar-tests.txt`); `None` after
/// [`bogie_specstub::skip_or_fail`] when the shared folder is absent.
fn kola_names() -> Option<Vec<String>> {
    let p = bogie_specstub::shared_path("research/kola-flatcar-tests.txt")?;
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
    )
}

#[test]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
fn registers_at_least_140_of_kolas_150_flatcar_tests() {
    let Some(names) = kola_names() else {
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

/// Every config the catalog writes (tests' own and the ones bodies boot with).
fn catalog_configs() -> Vec<(String, Config)> {
    let mut v: Vec<(String, Config)> = all()
        .into_iter()
        .filter_map(|t| t.config.clone().map(|c| (t.name.clone(), c)))
        .collect();
    v.extend(body_configs().into_iter().map(|(n, c)| (n.to_string(), c)));
    v.extend(bucket_configs());
    v
}

/// The merged configs of the whole catalog's buckets of non-exclusive tests, as `bogie run
/// '*'` with sharing makes them (named `bucket:<tests>`).
fn bucket_configs() -> Vec<(String, Config)> {
    let mut selected: Vec<_> = all()
        .into_iter()
        .map(bogie_harness::select::Selected::Run)
        .collect();
    let buckets = bogie_harness::buckets::merge_buckets(&mut selected, None);
    buckets
        .iter()
        .filter_map(|names| {
            let t = selected.iter().find(|s| s.test().name == names[0])?.test();
            Some((format!("bucket:{}", names.join(",")), t.config.clone()?))
        })
        .collect()
}

#[test]
fn the_non_exclusive_tests_of_the_test_image_share_merged_buckets() {
    let buckets = bogie_harness::buckets::merge_buckets(
        &mut all()
            .into_iter()
            .map(bogie_harness::select::Selected::Run)
            .collect::<Vec<_>>(),
        None,
    );
    let bucket_of = |name: &str| buckets.iter().position(|b| b.iter().any(|n| n == name));
    // Tests with configs of their own share one bucket with config-less ones...
    let first = bucket_of("cl.basic").expect("cl.basic is in a bucket");
    for t in [
        "coreos.auth.verify",
        "cl.users.shells",
        "coreos.ignition.sethostname",
        "coreos.ignition.systemd.enable-service",
        "cl.ignition.instantiated.enable-unit",
    ] {
        assert_eq!(bucket_of(t), Some(first), "{t}: {buckets:?}");
    }
    // ...and never one with a test they name in `conflicts`.
    for (a, b) in [
        ("cl.ignition.symlink", "cl.filesystem"),
        ("coreos.ignition.groups", "cl.filesystem"),
    ] {
        assert!(bucket_of(a).is_some(), "{a} shares: {buckets:?}");
        assert_ne!(bucket_of(a), bucket_of(b), "{a} and {b}: {buckets:?}");
    }
    assert!(
        bucket_of("docker.base").is_none(),
        "exclusive tests stay alone"
    );
}

/// Every spec-3 config the catalog writes.
fn v3_configs() -> Vec<(String, Config)> {
    catalog_configs()
        .into_iter()
        .filter(|(_, c)| c.is_v3())
        .collect()
}

/// A config as the harness renders it: with an SSH key for core.
fn as_rendered(cfg: &Config) -> Config {
    let mut cfg = cfg.clone();
    cfg.add_ssh_key(
        "core",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0 test",
    );
    cfg
}

/// Runs `ignition-validate` on a file: what it printed when it refused the config.
fn validate(bin: &str, path: &std::path::Path) -> Result<(), String> {
    let out = Command::new(bin).arg(path).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || text.contains("error") {
        return Err(text.trim().to_string());
    }
    Ok(())
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
        let cfg = as_rendered(cfg);
        let p = dir.path().join(format!("{i}.ign"));
        std::fs::write(&p, cfg.render_pretty()).unwrap();
        if let Err(e) = validate(bin, &p) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "invalid configs:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tests_kept_off_qemu_unpriv_name_their_privileged_needs() {
    let known: Vec<&str> = bogie_harness::select::PRIVILEGED_QEMU_NEEDS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut kept_off = 0;
    for t in all() {
        if !t.exclude_platforms.iter().any(|p| p == "qemu-unpriv") {
            assert!(
                t.privileged_qemu_needs.is_none(),
                "{}: privileged needs without excluding qemu-unpriv",
                t.name
            );
            continue;
        }
        kept_off += 1;
        let needs = t.privileged_qemu_needs.as_ref().unwrap_or_else(|| {
            panic!(
                "{} excludes qemu-unpriv without naming what it needs from kola's qemu",
                t.name
            )
        });
        for n in needs {
            assert!(known.contains(&n.as_str()), "{}: unknown need {n}", t.name);
        }
    }
    // cl.verity, linux.ntp, cl.omaha.ping, two cl.cloudinit.* and the kubeadm family.
    assert!(kept_off >= 6, "only {kept_off} tests exclude qemu-unpriv");
}

#[test]
fn configs_with_disks_filesystems_raid_or_luks_require_the_disks_stage() {
    let mut found = 0;
    for t in all() {
        let Some(c) = &t.config else { continue };
        let v: serde_json::Value = serde_json::from_str(&c.render()).unwrap();
        let s = &v["storage"];
        let has = |k: &str| s[k].as_array().is_some_and(|a| !a.is_empty());
        if ["disks", "raid", "luks", "filesystems"]
            .iter()
            .any(|k| has(k))
        {
            found += 1;
            assert!(
                t.requires.iter().any(|r| r == "ignition-disks" || r == "flatcar"),
                "{} asks Ignition's disks stage for storage but requires neither ignition-disks nor flatcar",
                t.name
            );
        }
    }
    assert!(found >= 2, "only {found} configs with disks-stage entries");
}

#[test]
fn verity_takes_the_root_hash_from_the_command_line() {
    let h = "a".repeat(64);
    let line = format!("root=LABEL=ROOT verity.usrhash={h} console=ttyS0");
    assert_eq!(misc::usrhash(&line), Some(h.as_str()));
    assert_eq!(misc::usrhash("root=LABEL=ROOT verity.usrhash=xyz"), None);
    assert_eq!(misc::usrhash("root=LABEL=ROOT"), None);
}

#[test]
fn legacy_configs_need_flatcar_or_the_translation() {
    for t in all() {
        if let Some(c) = &t.config {
            if !c.is_v3() {
                let spec = if c.version() == "1" {
                    "ignition-spec1"
                } else {
                    "ignition-spec2"
                };
                assert!(
                    t.requires.iter().any(|r| r == "flatcar" || r == spec),
                    "{} has a spec-{} config but requires neither flatcar nor {spec}",
                    t.name,
                    c.version()
                );
            }
        }
    }
}

/// Every spec-1/2 config the catalog writes (tests' own and the ones bodies boot with) for
/// tests that run on images other than Flatcar (those without a `flatcar` requirement).
fn legacy_configs() -> Vec<(String, Config)> {
    let r = registry();
    catalog_configs()
        .into_iter()
        .filter(|(_, c)| !c.is_v3())
        .filter(|(n, _)| {
            let test = n.split(" (").next().unwrap_or(n);
            r.get(test)
                .is_some_and(|t| !t.requires.iter().any(|q| q == "flatcar"))
        })
        .collect()
}

/// The test image reads spec-1/2 configs through `ci/image/ignition-translate.jq` (what
/// Flatcar's Ignition does in Go): every legacy config the catalog writes, rendered with the
/// harness's SSH key, translates into a spec-3 config that Debian's `ignition-validate`
/// accepts.
#[test]
fn every_legacy_config_translates_to_a_valid_spec_3_config() {
    const VALIDATE: &str = "/usr/bin/ignition-validate";
    let jq_ok = Command::new("jq").arg("--version").output().is_ok();
    if !std::path::Path::new(VALIDATE).exists() || !jq_ok {
        bogie_specstub::skip_or_fail(
            "needs jq and ignition-validate (ci/install-deps installs them)",
        );
        return;
    }
    let program =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ci/image/ignition-translate.jq");
    let dir = tempfile::tempdir().unwrap();
    let configs = legacy_configs();
    assert!(configs.len() >= 6, "only {} legacy configs", configs.len());
    let mut failures = Vec::new();
    for (i, (name, cfg)) in configs.iter().enumerate() {
        let cfg = as_rendered(cfg);
        let src = dir.path().join(format!("{i}.legacy.ign"));
        std::fs::write(&src, cfg.render_pretty()).unwrap();
        let out = Command::new("jq")
            .arg("-f")
            .arg(&program)
            .arg(&src)
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{name}: translation failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ignition"]["version"], "3.0.0", "{name}");
        // The key survives the translation.
        assert!(
            v["passwd"]["users"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|u| u["name"] == "core" && u["sshAuthorizedKeys"][0].is_string()),
            "{name}: the SSH key was lost: {v}"
        );
        let dst = dir.path().join(format!("{i}.ign"));
        std::fs::write(&dst, &out.stdout).unwrap();
        if let Err(e) = validate(VALIDATE, &dst) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "legacy configs that do not translate:\n{}",
        failures.join("\n")
    );
}
