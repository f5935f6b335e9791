//! End to end on the real test image: the same selection of twelve default-config fixture
//! tests with snapshots and shared machines (`--snapshot --share`) and without either gives
//! the same results test for test; restored machines have the right clock and are their own
//! copies; a `needs_first_boot` test boots cold; no QEMU and no template is left behind.
//!
//! Prints both wall times (the speed-up is a benchmark figure, `bogie bench`, not asserted
//! here). Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure};
use bogie::cli::Cli;
use bogie_harness::{Registry, Test};
use bogie_reports::{RunReport, Status};
use clap::Parser;
use common::{qemu_processes_mentioning, serial, test_image};

const MARKER: &str = "/etc/bogie-lasting-change";

fn fixtures() -> Registry {
    let mut r = Registry::new();
    let mut add = |t: Test| r.register(t.distros(&[])).unwrap();
    add(Test::new("snap.echo", |c| async move {
        let out = c.machine()?.must_ssh("echo hello").await?;
        ensure!(out == "hello", "got {out:?}");
        Ok(())
    }));
    add(Test::new("snap.clock", |c| async move {
        let guest: i64 = c.machine()?.must_ssh("date +%s").await?.parse()?;
        let host = chrono::Utc::now().timestamp();
        ensure!(
            (guest - host).abs() < 60,
            "guest clock {guest} is {}s off the host's",
            guest - host
        );
        Ok(())
    }));
    add(Test::new("snap.lasting-change", |c| async move {
        let m = c.machine()?;
        m.write_file(MARKER, b"written by a test\n", 0o644).await?;
        m.must_ssh("sync").await?;
        Ok(())
    }));
    add(Test::new("snap.isolated", |c| async move {
        let out = c.machine()?.ssh(&format!("test -e {MARKER}")).await?;
        ensure!(
            !out.success(),
            "{MARKER} leaked in from another test's machine"
        );
        Ok(())
    }));
    add(Test::new("snap.ignition-ran", |c| async move {
        c.machine()?
            .must_ssh("test -s ~/.ssh/authorized_keys || ls ~/.ssh/authorized_keys.d/ | grep -q .")
            .await?;
        Ok(())
    }));
    add(Test::new("snap.running", |c| async move {
        let s = c.machine()?.must_ssh("systemctl is-system-running").await?;
        ensure!(s == "running", "{s}");
        Ok(())
    }));
    add(Test::new("snap.machine-id", |c| async move {
        let id = c.machine()?.must_ssh("cat /etc/machine-id").await?;
        ensure!(
            id.len() == 32 && id.chars().all(|x| x.is_ascii_hexdigit()),
            "{id:?}"
        );
        Ok(())
    }));
    add(Test::new("snap.fails", |c| async move {
        c.machine()?.must_ssh("test -e /no/such/file").await?;
        Ok(())
    }));
    for n in ["a", "b", "c"] {
        add(Test::new(&format!("snap.shared.{n}"), |c| async move {
            let m = c.machine()?;
            m.must_ssh("uname -r && id -un && hostname").await?;
            if m.ssh(&format!("test -e {MARKER}")).await?.success() {
                bail!("a shared machine carries another test's change");
            }
            Ok(())
        })
        .non_exclusive());
    }
    add(Test::new("snap.first-boot", |c| async move {
        c.machine()?.must_ssh("systemctl is-system-running").await?;
        Ok(())
    })
    .needs_first_boot());
    r
}

fn run(out: &Path, extra: &[&str]) -> (u8, RunReport, f64) {
    let image = test_image();
    let mut argv = vec![
        "bogie",
        "run",
        "-p",
        "qemu",
        "--qemu-image",
        image.to_str().unwrap(),
        "-j",
        "2",
        "--output-dir",
        out.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    argv.push("snap.*");
    let cli = Cli::try_parse_from(argv).unwrap();
    let t = Instant::now();
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, fixtures()))
        .expect("run completes");
    let wall = t.elapsed().as_secs_f64();
    let report =
        bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl")).unwrap();
    (code, report, wall)
}

fn statuses(r: &RunReport) -> BTreeMap<String, Status> {
    r.tests.iter().map(|t| (t.name.clone(), t.status)).collect()
}

fn output_of<'a>(r: &'a RunReport, name: &str) -> &'a str {
    let t = r.tests.iter().find(|t| t.name == name).unwrap();
    &t.attempts.last().unwrap().output
}

#[test]
fn snapshots_and_sharing_change_nothing_but_the_time() {
    let _g = serial();
    let d = tempfile::tempdir().unwrap();
    let cold_out = d.path().join("cold");
    let fast_out = d.path().join("fast");

    let (code_cold, cold, wall_cold) = run(&cold_out, &["--no-snapshot", "--no-share"]);
    let (code_fast, fast, wall_fast) = run(&fast_out, &["--snapshot", "--share"]);
    println!(
        "12 default-config tests at -j 2: {wall_cold:.1}s cold, {wall_fast:.1}s with snapshots and sharing ({:.2}×)",
        wall_cold / wall_fast
    );

    assert_eq!(code_cold, 1, "snap.fails fails");
    assert_eq!(code_fast, 1);
    let expected: BTreeMap<String, Status> = fixtures()
        .tests()
        .iter()
        .map(|t| {
            let s = if t.name == "snap.fails" {
                Status::Fail
            } else {
                Status::Pass
            };
            (t.name.clone(), s)
        })
        .collect();
    assert_eq!(statuses(&cold), expected, "without snapshots");
    assert_eq!(
        statuses(&fast),
        expected,
        "with snapshots: the same results"
    );

    // The fast run did use snapshots and shared machines; the first-boot test booted cold.
    let restored = fast
        .tests
        .iter()
        .filter(|t| t.attempts[0].output.contains("started from a snapshot"))
        .count();
    assert!(
        restored >= 5,
        "only {restored} tests started from a snapshot"
    );
    assert!(!output_of(&fast, "snap.first-boot").contains("snapshot"));
    let shared = fast
        .tests
        .iter()
        .filter(|t| t.attempts[0].output.contains("running on shared machine"))
        .count();
    assert!(shared >= 1, "no test ran on a shared machine");
    assert!(cold
        .tests
        .iter()
        .all(|t| !t.attempts[0].output.contains("snapshot")));

    // Every test has its own console and journal, also on restored and shared machines.
    for t in &fast.tests {
        let m = &t.attempts[0].machines[0];
        let console = fast_out.join(m.console.as_ref().unwrap());
        assert!(console.exists(), "{}: {}", t.name, console.display());
        let journal = fast_out.join(m.journal.as_ref().expect("journal"));
        assert!(
            journal.metadata().unwrap().len() > 0,
            "{}: empty journal",
            t.name
        );
    }

    for out in [&cold_out, &fast_out] {
        assert!(!out.join(".templates").exists(), "templates left behind");
        assert!(
            qemu_processes_mentioning(out).is_empty(),
            "QEMU left behind: {:?}",
            qemu_processes_mentioning(out)
        );
    }
}

#[test]
fn ctrl_c_with_a_template_leaves_nothing_behind() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Three units of the default config (two share a machine): one makes the template.
    let mut child = common::bogie()
        .args([
            "run",
            "-p",
            "qemu",
            "-j",
            "2",
            "--snapshot",
            "--share",
            "--qemu-image",
        ])
        .arg(&image)
        .arg("--output-dir")
        .arg(&out)
        .args([
            "cl.basic",
            "coreos.auth.verify",
            "cl.users.shells",
            "systemd.sysusers.gshadow",
        ])
        .env("CI", "true")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let templates = out.join(".templates");
    let mut seen = false;
    for _ in 0..1200 {
        let made = std::fs::read_dir(&templates)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.path().join("template.json").exists())
            })
            .unwrap_or(false);
        if made {
            seen = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(seen, "no template was made");
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0), "an interrupted run does not pass");
    assert!(!templates.exists(), "templates left behind after Ctrl-C");
    for _ in 0..20 {
        if qemu_processes_mentioning(&out).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind: {:?}",
        qemu_processes_mentioning(&out)
    );
}
