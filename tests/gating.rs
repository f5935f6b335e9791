//! Release gating: flaky reruns, harness-failure reruns, the denylist, tags and filters,
//! version gating, sharding with `bogie report merge`, `-j auto`, exit codes. (Flatcar's
//! qemu.sh command line itself runs in tests/e2e_flatcar.rs, on the Flatcar-shaped disk.)
//!
//! Fixture tests here have `cluster_size(0)` and instant bodies, so they run on the real
//! QEMU platform (the image must exist) without booting. Needs `BOGIE_TEST_IMAGE`; the
//! tests that boot nothing and read no image run without it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::bail;
use bogie::cli::Cli;
use bogie_harness::runner::HarnessError;
use bogie_harness::select::{select, Filter, Selected};
use bogie_harness::shard::{apply, Sharding};
use bogie_harness::{Arch, Registry, Test, Version};
use bogie_reports::{FailureClass, RunReport, Status};
use clap::Parser;
use common::{bogie, test_image};

/// An instant fixture that boots nothing.
fn instant(name: &str) -> Test {
    Test::new(name, |_c| async { Ok(()) })
        .cluster_size(0)
        .distros(&[])
}

fn failing(name: &str) -> Test {
    Test::new(name, |_c| async { bail!("this fixture always fails") })
        .cluster_size(0)
        .distros(&[])
}

/// Fails on its first attempt, passes on the next (a fresh counter per registry).
fn flaky(name: &str) -> Test {
    let n = Arc::new(AtomicU32::new(0));
    Test::new(name, move |_c| {
        let n = n.clone();
        async move {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                bail!("simulated flake: the first attempt fails");
            }
            Ok(())
        }
    })
    .cluster_size(0)
    .distros(&[])
}

/// Fails with a harness-class error on its first attempt, passes on the next.
fn harness_flake(name: &str) -> Test {
    let n = Arc::new(AtomicU32::new(0));
    Test::new(name, move |_c| {
        let n = n.clone();
        async move {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                bail!(HarnessError(
                    "simulated: the machine never reached SSH".into()
                ));
            }
            Ok(())
        }
    })
    .cluster_size(0)
    .distros(&[])
}

fn registry(tests: Vec<Test>) -> Registry {
    let mut r = Registry::new();
    for t in tests {
        r.register(t).unwrap();
    }
    r
}

fn run_lib(args: &[&str], registry: Registry) -> u8 {
    let mut argv = vec!["bogie"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, registry))
        .expect("run completes")
}

/// `run -p qemu --qemu-image IMAGE --output-dir OUT` + `extra`.
fn run_fixtures(out: &Path, extra: &[&str], reg: Registry) -> u8 {
    let image = test_image();
    let mut args = vec![
        "run",
        "-p",
        "qemu",
        "--qemu-image",
        image.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_lib(&args, reg)
}

fn load(out: &Path) -> RunReport {
    bogie_reports::matrix::load_run(out).unwrap()
}

fn by<'a>(r: &'a RunReport, name: &str) -> &'a bogie_reports::TestResult {
    r.tests
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} not in the report"))
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

fn output(cmd: &mut std::process::Command) -> (i32, String, String) {
    let o = cmd.output().expect("runs bogie");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_test_that_fails_once_is_flaky_in_every_format() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let tap = d.path().join("run.tap");
    let reg = registry(vec![flaky("gate.flaky"), instant("gate.pass")]);
    let code = run_fixtures(
        &out,
        &[
            "--retries",
            "2",
            "--tapfile",
            tap.to_str().unwrap(),
            "gate.*",
        ],
        reg,
    );
    assert_eq!(code, 0, "flaky passes the gate by default");
    let r = load(&out);
    let f = by(&r, "gate.flaky");
    assert_eq!(f.status, Status::Flaky);
    assert_eq!(f.attempts.len(), 2, "stops at the first pass");
    assert!(!f.attempts[0].passed && f.attempts[1].passed);
    assert!(f.attempts[0]
        .failure
        .as_ref()
        .unwrap()
        .message
        .contains("simulated flake"));
    assert_eq!(by(&r, "gate.pass").attempts.len(), 1);
    let s = r.summary();
    assert_eq!((s.passed, s.flaky, s.failed), (1, 1, 0), "counted apart");

    let junit = read(out.join("reports/junit.xml"));
    assert!(
        junit.contains(r#"<property name="bogie.status:gate.flaky" value="flaky"/>"#),
        "{junit}"
    );
    assert_eq!(
        junit.matches("--- attempt 1 of 2 failed").count(),
        1,
        "{junit}"
    );
    assert!(junit.contains("simulated flake"), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    let t = read(&tap);
    assert!(
        t.contains("ok - gate.flaky\n  ---\n  Flaky: \"failed 1 of 2 attempts\"\n"),
        "{t}"
    );
    assert!(t.contains("Attempt 1: \"simulated flake"), "{t}");
    let kola: serde_json::Value =
        serde_json::from_str(&read(out.join("reports/report.json"))).unwrap();
    let entry = kola["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "gate.flaky")
        .unwrap();
    assert_eq!(entry["result"], "PASS");
    assert_eq!(entry["bogie"]["status"], "flaky");
    assert_eq!(entry["bogie"]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(kola["result"], "PASS");

    // --allow-flaky=false: the same run fails the gate.
    let out2 = d.path().join("strict");
    let reg = registry(vec![flaky("gate.flaky"), instant("gate.pass")]);
    let code = run_fixtures(&out2, &["--rerun", "--allow-flaky=false", "gate.*"], reg);
    assert_eq!(code, 1);
    assert_eq!(by(&load(&out2), "gate.flaky").status, Status::Flaky);

    // Without reruns, the flake is a failure.
    let out3 = d.path().join("noretry");
    let code = run_fixtures(&out3, &["gate.flaky"], registry(vec![flaky("gate.flaky")]));
    assert_eq!(code, 1);
    assert_eq!(by(&load(&out3), "gate.flaky").status, Status::Fail);
}

#[test]
fn harness_failures_are_rerun_once_with_the_flag() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("with");
    let code = run_fixtures(
        &out,
        &["--retry-harness-failures", "--retries", "0", "gate.*"],
        registry(vec![harness_flake("gate.harness"), failing("gate.fail")]),
    );
    assert_eq!(code, 1, "gate.fail still fails");
    let r = load(&out);
    let h = by(&r, "gate.harness");
    assert_eq!(h.status, Status::Flaky);
    assert_eq!(
        h.attempts[0].failure.as_ref().unwrap().class,
        FailureClass::Harness
    );
    // An assertion failure gets no extra rerun from the flag.
    assert_eq!(by(&r, "gate.fail").attempts.len(), 1);

    let out = d.path().join("without");
    let code = run_fixtures(
        &out,
        &["gate.harness"],
        registry(vec![harness_flake("gate.harness")]),
    );
    assert_eq!(code, 1);
    let r = load(&out);
    assert_eq!(by(&r, "gate.harness").status, Status::Fail);
    assert_eq!(by(&r, "gate.harness").attempts.len(), 1);
}

const DENYLIST: &str = r#"# coreos-assembler's kola-denylist.yaml format
- pattern: gate.deny.skipped
  tracker: https://github.com/flatcar/Flatcar/issues/101
- pattern: gate.deny.snoozed-past
  tracker: https://github.com/flatcar/Flatcar/issues/102
  snooze: 2020-01-01
- pattern: gate.deny.snoozed-future
  tracker: https://github.com/flatcar/Flatcar/issues/103
  snooze: 2999-01-01
- pattern: gate.deny.warn*
  tracker: https://github.com/flatcar/Flatcar/issues/104
  warn: true
- pattern: gate.deny.other-arch
  arches: [aarch64]
- pattern: gate.deny.other-platform
  platforms: [aws, azure]
- pattern: gate.deny.stream
  streams: [alpha]
"#;

fn deny_fixtures() -> Registry {
    registry(vec![
        instant("gate.deny.skipped"),
        instant("gate.deny.snoozed-past"),
        instant("gate.deny.snoozed-future"),
        failing("gate.deny.warn"),
        instant("gate.deny.other-arch"),
        instant("gate.deny.other-platform"),
        instant("gate.deny.stream"),
    ])
}

#[test]
fn denylist_skips_with_the_tracker_snoozes_and_warns() {
    let d = tempfile::tempdir().unwrap();
    let deny = d.path().join("kola-denylist.yaml");
    std::fs::write(&deny, DENYLIST).unwrap();
    let out = d.path().join("out");
    let tap = d.path().join("run.tap");
    let code = run_fixtures(
        &out,
        &[
            "--denylist",
            deny.to_str().unwrap(),
            "--channel",
            "stable",
            "--retries",
            "3",
            "--tapfile",
            tap.to_str().unwrap(),
            "gate.deny.*",
        ],
        deny_fixtures(),
    );
    assert_eq!(code, 77, "only a warn-listed test failed");
    let r = load(&out);
    let skipped = by(&r, "gate.deny.skipped");
    assert_eq!(skipped.status, Status::Skip);
    assert_eq!(
        skipped.skip_reason.as_deref(),
        Some("denylisted: https://github.com/flatcar/Flatcar/issues/101")
    );
    assert_eq!(by(&r, "gate.deny.snoozed-past").status, Status::Pass);
    let fut = by(&r, "gate.deny.snoozed-future");
    assert_eq!(fut.status, Status::Skip);
    assert_eq!(
        fut.skip_reason.as_deref(),
        Some("denylisted until 2999-01-01: https://github.com/flatcar/Flatcar/issues/103")
    );
    let warn = by(&r, "gate.deny.warn");
    assert_eq!(warn.status, Status::Warn);
    assert_eq!(warn.attempts.len(), 1, "warn-listed tests are not rerun");
    for t in [
        "gate.deny.other-arch",
        "gate.deny.other-platform",
        "gate.deny.stream",
    ] {
        assert_eq!(by(&r, t).status, Status::Pass, "{t}: entry does not apply");
    }
    let t = read(&tap);
    assert!(
        t.contains("ok - gate.deny.skipped # SKIP denylisted: https://github.com/flatcar/Flatcar/issues/101"),
        "{t}"
    );
    assert!(
        t.contains("ok - gate.deny.warn\n  ---\n  Warn: \"failed, denylisted as warn-only\""),
        "{t}"
    );

    // A real failure beside the warning: exit 1.
    let out = d.path().join("mixed");
    let mut reg = deny_fixtures();
    reg.register(failing("gate.deny.real-failure")).unwrap();
    let code = run_fixtures(
        &out,
        &["--denylist", deny.to_str().unwrap(), "gate.deny.*"],
        reg,
    );
    assert_eq!(code, 1);

    // --denylist-test (coreos-assembler) skips by glob.
    let out = d.path().join("flag");
    let code = run_fixtures(
        &out,
        &["--denylist-test", "gate.deny.warn*", "gate.deny.warn"],
        deny_fixtures(),
    );
    assert_eq!(code, 0);
    assert_eq!(by(&load(&out), "gate.deny.warn").status, Status::Skip);
}

#[test]
fn bad_gating_input_is_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let deny = d.path().join("deny.yaml");
    std::fs::write(&deny, "- pattern: cl.basic\n  snoze: 2026-01-01\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "run".into(),
                "--denylist".into(),
                deny.display().to_string(),
                "cl.basic".into(),
            ],
            "snoze",
        ),
        (
            vec![
                "run".into(),
                "--denylist".into(),
                "/nonexistent/deny.yaml".into(),
            ],
            "/nonexistent/deny.yaml",
        ),
        (
            vec!["run".into(), "--sharding".into(), "hash:4/3".into()],
            "hash:4/3",
        ),
        (
            vec!["run".into(), "--sharding".into(), "balanced:1/2".into()],
            "--durations",
        ),
        (
            vec![
                "run".into(),
                "--esx-ova-path=/x.ova".into(),
                "cl.basic".into(),
            ],
            "platform esx is not built",
        ),
        (
            vec![
                "run".into(),
                "--qemu-firmware=/nonexistent/not-a-firmware.bin".into(),
                "cl.basic".into(),
            ],
            "not-a-firmware.bin: no such file",
        ),
        (
            vec!["run".into(), "--baseline".into(), "/nonexistent/run".into()],
            "/nonexistent/run",
        ),
        (
            vec![
                "report".into(),
                "merge".into(),
                "/nonexistent/shard".into(),
                "--output".into(),
                d.path().join("m").display().to_string(),
            ],
            "/nonexistent/shard",
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = output(bogie().current_dir(d.path()).args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn exit_codes_and_summary_are_in_help() {
    let (code, out, _) = output(bogie().arg("--help"));
    assert_eq!(code, 0);
    for want in [
        "Exit codes",
        "  0 ",
        "  1 ",
        "  2 ",
        "  77 ",
        "flaky",
        "--allow-flaky=false",
    ] {
        assert!(out.contains(want), "{want:?} missing from --help:\n{out}");
    }
    let (_, out, _) = output(bogie().args(["run", "--help"]));
    for want in [
        "--sharding",
        "--denylist",
        "--retry-harness-failures",
        "--durations",
        "--baseline",
    ] {
        assert!(out.contains(want), "{want:?} missing from run --help");
    }
}

fn select_fixtures() -> Registry {
    registry(vec![
        instant("gate.sel.smoke").tags(&["smoke"]),
        instant("gate.sel.smoke-slow").tags(&["smoke", "slow"]),
        instant("gate.sel.untagged"),
        instant("gate.sel.net").tags(&["smoke", "needs-internet"]),
        instant("gate.sel.alpha")
            .tags(&["smoke"])
            .channels(&["alpha"]),
        instant("gate.sel.pro").tags(&["smoke"]).offerings(&["pro"]),
        instant("gate.sel.fcos").tags(&["smoke"]).distros(&["fcos"]),
        instant("gate.sel.new")
            .tags(&["smoke"])
            .min_version(Version::new(4000, 0, 0)),
        instant("gate.sel.old")
            .tags(&["smoke"])
            .end_version(Version::new(3760, 0, 0)),
    ])
}

fn statuses(r: &RunReport) -> BTreeMap<String, (Status, Option<String>)> {
    r.tests
        .iter()
        .map(|t| (t.name.clone(), (t.status, t.skip_reason.clone())))
        .collect()
}

#[test]
fn tags_filters_and_version_gating() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let code = run_fixtures(
        &out,
        &[
            "--tag",
            "smoke",
            "--tag",
            "!slow",
            "--no-net",
            "--distro",
            "cl",
            "--channel",
            "stable",
            "--offering",
            "basic",
            "gate.sel.*",
        ],
        select_fixtures(),
    );
    assert_eq!(code, 0);
    let s = statuses(&load(&out));
    let reason = |n: &str| s[n].1.clone().unwrap_or_default();
    assert_eq!(s["gate.sel.smoke"].0, Status::Pass);
    assert_eq!(
        reason("gate.sel.smoke-slow"),
        "tag slow is excluded by --tag '!slow'"
    );
    assert!(reason("gate.sel.untagged").contains("none of the tags smoke"));
    assert_eq!(reason("gate.sel.net"), "needs-internet: --no-net was given");
    assert_eq!(
        reason("gate.sel.alpha"),
        "channel stable not in the test's channels"
    );
    assert_eq!(
        reason("gate.sel.pro"),
        "offering basic not in the test's offerings"
    );
    assert!(reason("gate.sel.fcos").contains("distro cl not in"));
    // The test image is Debian (`os_id` debian, version 12.x): its version says nothing
    // about Flatcar's, so it is unknown and neither end of the range gates.
    assert_eq!(
        s["gate.sel.new"].0,
        Status::Pass,
        "{}",
        reason("gate.sel.new")
    );
    assert_eq!(s["gate.sel.old"].0, Status::Pass);

    // A version older than a test's minimum skips it with both versions named.
    let out = d.path().join("old");
    run_fixtures(
        &out,
        &["--image-version", "3000.0.0", "gate.sel.*"],
        select_fixtures(),
    );
    let s = statuses(&load(&out));
    let why = s["gate.sel.new"].1.clone().unwrap_or_default();
    assert!(
        why.contains("image version 3000.0.0 is older than the test's minimum 4000.0.0"),
        "{why}"
    );

    // --image-version wins over the manifest.
    let out = d.path().join("v");
    let code = run_fixtures(
        &out,
        &[
            "--image-version",
            "4799.0.0",
            "--distro",
            "fcos",
            "gate.sel.*",
        ],
        select_fixtures(),
    );
    assert_eq!(code, 0);
    let s = statuses(&load(&out));
    assert_eq!(s["gate.sel.new"].0, Status::Pass);
    assert!(s["gate.sel.old"]
        .1
        .as_deref()
        .unwrap()
        .contains("past the test's end version"));
    assert_eq!(s["gate.sel.fcos"].0, Status::Pass);
    // An exact name ignores the version range, as in kola.
    let out = d.path().join("exact");
    run_fixtures(&out, &["gate.sel.new"], select_fixtures());
    assert_eq!(by(&load(&out), "gate.sel.new").status, Status::Pass);
}

#[test]
fn hash_sharding_partitions_the_real_catalog_exactly() {
    let catalog = bogie_tests_catalog::registry();
    let f = Filter {
        patterns: vec![],
        platform: "qemu".into(),
        arch: Arch::Amd64,
        distro: "cl".into(),
        channel: None,
        offering: None,
        version: None,
        provides: Default::default(),
        no_net: false,
        tags: vec![],
        exclude_tags: vec![],
        run_platform_independent: false,
        denylist: Default::default(),
    };
    let all = select(catalog.tests(), &f).unwrap();
    assert_eq!(all.len(), catalog.len(), "every test is planned or skipped");
    for n in 1..=7u32 {
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        for k in 1..=n {
            let s: Sharding = format!("hash:{k}/{n}").parse().unwrap();
            for x in apply(all.clone(), &s, &Default::default()) {
                assert!(
                    seen.insert(x.test().name.clone(), k).is_none(),
                    "{} in two shards of {n}",
                    x.test().name
                );
            }
        }
        let names: Vec<&String> = seen.keys().collect();
        let want: Vec<String> = {
            let mut v: Vec<String> = all.iter().map(|x| x.test().name.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(names, want.iter().collect::<Vec<_>>(), "{n} shards");
    }
    // Stable: the same name always lands in the same shard.
    assert_eq!(
        bogie_harness::shard::hash_shard("cl.basic", 3),
        bogie_harness::shard::hash_shard("cl.basic", 3)
    );
    let _ = all.iter().filter(|s| matches!(s, Selected::Run(_))).count();
}

fn shard_fixtures() -> Registry {
    let mut v = Vec::new();
    for i in 0..6 {
        v.push(instant(&format!("gate.shard.pass{i}")));
    }
    v.push(failing("gate.shard.fail0"));
    v.push(failing("gate.shard.fail1"));
    v.push(flaky("gate.shard.flaky"));
    v.push(instant("gate.shard.needs-tpm").requires(&["tpm"]));
    v.push(instant("gate.shard.azure-only").platforms(&["azure"]));
    v.push(instant("gate.shard.arm64-only").architectures(&[Arch::Arm64]));
    registry(v)
}

#[test]
fn three_shards_merged_equal_the_unsharded_run() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("unsharded");
    let args = ["-j", "auto", "--retries", "1", "gate.shard.*"];
    assert_eq!(run_fixtures(&base, &args, shard_fixtures()), 1);
    let want = statuses(&load(&base));
    assert_eq!(want.len(), 12);
    assert_eq!(want["gate.shard.flaky"].0, Status::Flaky);

    for strategy in ["hash", "balanced"] {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut seen = 0;
        for k in 1..=3 {
            let out = d.path().join(format!("{strategy}-{k}"));
            let sharding = format!("{strategy}:{k}/3");
            let mut a = vec!["--sharding", sharding.as_str()];
            if strategy == "balanced" {
                a.extend(["--durations", base.to_str().unwrap()]);
            }
            a.extend(args);
            run_fixtures(&out, &a, shard_fixtures());
            let r = load(&out);
            assert_eq!(r.info.shard.as_deref(), Some(sharding.as_str()));
            seen += r.tests.len();
            dirs.push(out);
        }
        assert_eq!(
            seen,
            want.len(),
            "{strategy}: every test in exactly one shard"
        );

        let merged = d.path().join(format!("{strategy}-merged"));
        let tap = d.path().join(format!("{strategy}-merged.tap"));
        let (code, stdout, stderr) = output(
            bogie()
                .args(["report", "merge"])
                .args(&dirs)
                .arg("--output")
                .arg(&merged)
                .arg("--tapfile")
                .arg(&tap),
        );
        assert_eq!(code, 1, "the merged run has failures: {stdout}{stderr}");
        let m = load(&merged);
        assert_eq!(m.info.shard, None);
        assert_eq!(
            statuses(&m),
            want,
            "{strategy}: merged shards == unsharded run"
        );
        for f in [
            "reports/junit.xml",
            "reports/report.json",
            "test.tap",
            "reports/matrix.md",
        ] {
            assert!(merged.join(f).is_file(), "{f}");
        }
        let t = read(&tap);
        assert!(t.starts_with("1..12\n"), "{t}");

        // Nothing changed between the unsharded run and the merged shards.
        let (code, stdout, _) = output(bogie().args(["report", "diff"]).arg(&base).arg(&merged));
        assert_eq!(code, 0, "{stdout}");
        assert!(stdout.contains("0 new failure(s)"), "{stdout}");
    }

    // Balanced sharding spreads the work by the previous durations: no shard is empty.
    for k in 1..=3 {
        assert!(!load(&d.path().join(format!("balanced-{k}")))
            .tests
            .is_empty());
    }

    // The matrix over two runs, and a diff that finds a regression.
    let (code, stdout, _) = output(
        bogie()
            .args(["report", "matrix"])
            .arg(&base)
            .arg("--output")
            .arg(d.path().join("matrix")),
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(d.path().join("matrix/matrix.html").is_file());
    let fixed = d.path().join("fixed");
    let reg = registry(vec![
        instant("gate.shard.fail0"),
        failing("gate.shard.pass0"),
    ]);
    run_fixtures(&fixed, &["gate.shard.fail0", "gate.shard.pass0"], reg);
    let (code, stdout, _) = output(
        bogie()
            .args(["report", "diff", "--json"])
            .arg(&base)
            .arg(&fixed),
    );
    assert_eq!(code, 1, "gate.shard.pass0 regressed");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["new_failures"][0]["test"], "gate.shard.pass0");
    assert_eq!(v["fixed"][0]["test"], "gate.shard.fail0");
}

#[test]
fn baseline_diff_is_printed_at_the_end_of_a_run() {
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old");
    run_fixtures(&old, &["gate.x"], registry(vec![failing("gate.x")]));
    // Every real catalog test denylisted: nothing boots, the diff is still printed.
    let (code, stdout, stderr) = output(
        bogie()
            .current_dir(d.path())
            .args(["run", "--qemu-image"])
            .arg(&image)
            .args(["--denylist-test", "*", "--baseline"])
            .arg(&old)
            .arg("--output-dir")
            .arg(d.path().join("new"))
            .arg("cl.basic"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("bogie diff:"), "{stdout}");
    assert!(stdout.contains("Removed tests (1):"), "{stdout}");
    assert!(stdout.contains("gate.x"), "{stdout}");
}
