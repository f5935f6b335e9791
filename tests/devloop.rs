//! The developer's loop on the real test image: `bogie spawn` (detached, waiting for
//! Ctrl-C, with a shell), `--keep-failed` keeping exactly the failing test's machine,
//! `bogie down`, and the progress display on a terminal and under `CI`.
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`); `ci/test`
//! sets it. The input-error tests need no image.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::bail;
use bogie::cli::Cli;
use bogie_harness::{Registry, Test};
use bogie_reports::Status;
use clap::Parser;
use common::{bogie, qemu_processes_mentioning, serial, test_image};

/// Fixture tests that boot a machine.
fn machine_fixtures() -> Registry {
    let mut r = Registry::new();
    r.register(
        Test::new("fixture.pass", |c| async move {
            let m = c.machine()?;
            let out = m.must_ssh("echo hello from $(id -un)").await?;
            if out != "hello from core" {
                bail!("unexpected output {out:?}");
            }
            Ok(())
        })
        .distros(&[]),
    )
    .unwrap();
    r.register(
        Test::new("fixture.fail", |c| async move {
            let m = c.machine()?;
            m.must_ssh("test -e /etc/this-file-does-not-exist").await?;
            Ok(())
        })
        .distros(&[]),
    )
    .unwrap();
    r
}

/// Fixture tests without machines: they cost no boot.
fn bare_fixtures() -> Registry {
    let mut r = Registry::new();
    for (name, fail) in [("bare.one", false), ("bare.two", false), ("bare.bad", true)] {
        r.register(
            Test::new(name, move |_| async move {
                tokio::time::sleep(Duration::from_millis(700)).await;
                if fail {
                    bail!("bare.bad fails on purpose");
                }
                Ok(())
            })
            .cluster_size(0)
            .distros(&[]),
        )
        .unwrap();
    }
    r
}

/// Not a test by itself: the body of [`under_pty`], which runs this test binary again
/// under `script` so that stdout is a terminal. Does nothing when run directly.
#[test]
fn devloop_child() {
    let Ok(args) = std::env::var("BOGIE_DEVLOOP_CHILD") else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let registry = match std::env::var("BOGIE_DEVLOOP_FIXTURES").as_deref() {
        Ok("machines") => machine_fixtures(),
        _ => bare_fixtures(),
    };
    let mut argv = vec!["bogie".to_string()];
    argv.extend(args);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(bogie::commands::dispatch_with(cli, registry))
        .expect("run completes");
    println!("child exit code {code}");
}

/// Runs `bogie <args>` with a fixture registry on a pseudo-terminal (`script`); returns
/// everything the terminal showed.
fn under_pty(args: &[&str], fixtures: &str, ci: bool) -> String {
    let exe = std::env::current_exe().unwrap();
    let cmd = format!(
        "{} --exact devloop_child --nocapture --test-threads=1",
        exe.display()
    );
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .env("BOGIE_DEVLOOP_CHILD", serde_json::to_string(args).unwrap())
        .env("BOGIE_DEVLOOP_FIXTURES", fixtures)
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120")
        .stdin(Stdio::null());
    if ci {
        c.env("CI", "true");
    } else {
        c.env_remove("CI");
    }
    let out = c.output().expect("script (util-linux) runs");
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The ssh lines a command printed.
fn ssh_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ssh -i "))
        .map(str::to_string)
        .collect()
}

/// Runs a printed ssh line exactly as printed, non-interactively, with a remote command.
fn run_ssh_line(line: &str, remote: &str) -> (i32, String, String) {
    let line = line.replacen("ssh ", "ssh -o BatchMode=yes -o ConnectTimeout=20 ", 1);
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} {remote}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (so, se) = text(&o);
    (o.status.code().unwrap_or(-1), so, se)
}

fn down(out: &Path) -> (i32, String) {
    let o = bogie().arg("down").arg(out).output().unwrap();
    let (so, se) = text(&o);
    (o.status.code().unwrap_or(-1), format!("{so}{se}"))
}

fn assert_no_qemu(out: &Path) {
    for _ in 0..40 {
        if qemu_processes_mentioning(out).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("QEMU left behind: {:?}", qemu_processes_mentioning(out));
}

/// Kills QEMUs of `out` if a test failed half-way, so a failure never leaks machines.
struct Cleanup<'a>(&'a Path);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !qemu_processes_mentioning(self.0).is_empty() {
            let _ = bogie().arg("down").arg(self.0).output();
        }
    }
}

fn image_args(image: &Path, out: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        "qemu".into(),
        "--board".into(),
        "amd64-usr".into(),
        "--qemu-image".into(),
        image.display().to_string(),
        "--output-dir".into(),
        out.display().to_string(),
    ]
}

#[test]
fn spawn_detach_prints_a_working_ssh_line_and_down_removes_it() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let _c = Cleanup(&out);
    let o = bogie()
        .arg("spawn")
        .arg("-t")
        .args(image_args(&image, &out))
        .env("CI", "true")
        .output()
        .unwrap();
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{so}\nstderr:\n{se}");
    let lines = ssh_lines(&so);
    assert_eq!(lines.len(), 1, "one ssh line: {so}");
    assert!(so.contains(&format!("down {}", out.display())), "{so}");
    assert!(out.join("spawn").read_dir().unwrap().any(|e| e
        .unwrap()
        .path()
        .join("kept.json")
        .exists()));
    eprintln!("{se}{so}");

    // The machine outlives `bogie spawn -t`; the printed line logs in.
    assert_eq!(qemu_processes_mentioning(&out).len(), 1);
    let (code, so2, se2) = run_ssh_line(&lines[0], "systemctl is-system-running");
    assert_eq!(code, 0, "{so2}{se2}");
    assert_eq!(so2.trim(), "running");

    let (code, msg) = down(&out);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("stopped qemu machine"), "{msg}");
    assert_no_qemu(&out);
    let (code, msg) = down(&out);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("nothing to tear down"), "{msg}");
}

#[test]
fn keep_failed_keeps_only_the_failing_machine_with_live_progress() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let _c = Cleanup(&out);
    let mut args = vec!["run".to_string()];
    args.extend(image_args(&image, &out));
    args.extend(["-j", "2", "--keep-failed", "fixture.*"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shown = under_pty(&args, "machines", false);
    eprintln!("{shown}");
    assert!(shown.contains("child exit code 1"), "{shown}");

    // Live progress: redrawn lines (escape sequences), a phase per running test, totals.
    assert!(shown.contains("\x1b["), "no terminal drawing: {shown}");
    assert!(
        shown.contains("waiting for SSH") || shown.contains("booting"),
        "{shown}"
    );
    assert!(shown.contains("tests, "), "{shown}");
    assert!(
        !shown.contains("=== RUN"),
        "plain lines on a terminal: {shown}"
    );

    // The failing test's machine is kept, the passing one is gone.
    let report = bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl"))
        .expect("results.jsonl");
    let by = |n: &str| report.tests.iter().find(|t| t.name == n).unwrap();
    assert_eq!(by("fixture.pass").status, Status::Pass);
    assert_eq!(by("fixture.fail").status, Status::Fail);
    let procs = qemu_processes_mentioning(&out);
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert!(procs[0].contains("fixture.fail"), "{procs:?}");
    assert!(!procs[0].contains("fixture.pass"), "{procs:?}");

    // The summary says how to reach it, and that works.
    assert!(shown.contains("FAIL fixture.fail [assertion]"), "{shown}");
    assert!(shown.contains("    console: "), "{shown}");
    assert!(shown.contains("kept machines (key "), "{shown}");
    let lines = ssh_lines(&shown);
    assert_eq!(lines.len(), 1, "{shown}");
    let (code, so, se) = run_ssh_line(&lines[0], "hostname");
    assert_eq!(code, 0, "{so}{se}");
    assert!(
        shown.contains(&format!("down {}", out.display())),
        "{shown}"
    );

    let (code, msg) = down(&out);
    assert_eq!(code, 0, "{msg}");
    assert_eq!(msg.matches("stopped qemu machine").count(), 1, "{msg}");
    assert!(msg.contains("fixture.fail"), "{msg}");
    assert_no_qemu(&out);
}

#[test]
fn progress_is_plain_lines_under_ci_and_live_on_a_terminal() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    for (ci, name) in [(true, "ci"), (false, "tty")] {
        let out = d.path().join(name);
        let mut args = vec!["run".to_string()];
        args.extend(image_args(&image, &out));
        args.extend(["-j", "2", "bare.*"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let shown = under_pty(&args, "bare", ci);
        assert!(shown.contains("child exit code 1"), "{shown}");
        assert!(shown.contains("--- PASS: bare.one"), "{shown}");
        assert!(
            shown.contains("--- FAIL: bare.bad") && shown.contains("bare.bad fails on purpose"),
            "{shown}"
        );
        assert!(shown.contains("1 failed"), "{shown}");
        if ci {
            assert!(!shown.contains('\x1b'), "escape codes under CI: {shown}");
            assert!(shown.contains("=== RUN   bare.two (started)"), "{shown}");
            assert!(shown.contains("    bare.two: running ("), "{shown}");
            assert!(shown.contains("    [3/3 done in "), "{shown}");
        } else {
            assert!(shown.contains("\x1b["), "{shown}");
            assert!(!shown.contains("=== RUN"), "{shown}");
        }
    }
}

#[test]
fn spawn_waits_for_ctrl_c_with_userdata_then_tears_down() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let _c = Cleanup(&out);
    let cfg = d.path().join("config.ign");
    std::fs::write(
        &cfg,
        r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/bogie-userdata","mode":420,"contents":{"source":"data:,from%20userdata"}}]}}"#,
    )
    .unwrap();
    let mut child = bogie()
        .arg("spawn")
        .arg("-u")
        .arg(&cfg)
        .args(image_args(&image, &out))
        .env("CI", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let mut line = None;
    let mut stdout_text = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for l in lines.by_ref().map_while(Result::ok) {
        stdout_text.push_str(&l);
        stdout_text.push('\n');
        if l.trim().starts_with("ssh -i ") {
            line = Some(l.trim().to_string());
            break;
        }
    }
    let Some(line) = line else {
        let _ = child.kill();
        panic!("no ssh line: {stdout_text}{}", err_thread.join().unwrap());
    };
    let (code, so, se) = run_ssh_line(&line, "cat /etc/bogie-userdata");
    assert_eq!(code, 0, "{so}{se}");
    assert_eq!(so.trim(), "from userdata");
    // The machine dies with the spawn, not before: still there while bogie waits.
    assert_eq!(qemu_processes_mentioning(&out).len(), 1);
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let err = err_thread.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("Press Ctrl-C to tear the machines down"),
        "{err}"
    );
    assert!(err.contains("tearing the machines down"), "{err}");
    assert_no_qemu(&out);
}

#[test]
fn spawn_shell_runs_the_system_ssh_with_a_butane_config() {
    let _g = serial();
    let image = test_image();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let _c = Cleanup(&out);
    // A stand-in for butane: prints a fixed Ignition config whatever the input.
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("butane");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat <<'EOF'\n{\"ignition\":{\"version\":\"3.3.0\"},\"storage\":{\"files\":[{\"path\":\"/etc/bogie-butane\",\"mode\":420,\"contents\":{\"source\":\"data:,from%20butane\"}}]}}\nEOF\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bu = d.path().join("config.bu");
    std::fs::write(&bu, "variant: fcos\nversion: 1.4.0\n").unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = bogie()
        .arg("spawn")
        .arg("-s")
        .arg("-u")
        .arg(&bu)
        .args(image_args(&image, &out))
        .env("CI", "true")
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The shell reads its commands from stdin (not a terminal here).
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cat /etc/bogie-butane; echo\nsystemctl is-system-running\nexit\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{so}{se}");
    assert!(so.contains("\nfrom butane\n"), "{so}{se}");
    assert!(so.contains("\nrunning\n"), "{so}{se}");
    assert!(se.contains("tearing the machines down"), "{se}");
    assert_no_qemu(&out);
}

#[test]
fn bad_userdata_and_bad_run_dirs_are_input_errors() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.ign");
    std::fs::write(&bad, "{\"ignition\": {\"version\": \"3.3.0\"},,}").unwrap();
    let o = bogie()
        .args(["spawn", "-t", "-u"])
        .arg(&bad)
        .args(["--qemu-image", "/nonexistent/manifest.json"])
        .output()
        .unwrap();
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert_eq!(se.trim().lines().count(), 1, "{se}");
    assert!(se.contains("bad.ign") && se.contains("malformed"), "{se}");

    // A config Ignition would reject (relative path) is caught before booting.
    let rel = d.path().join("rel.ign");
    std::fs::write(
        &rel,
        r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"etc/x"}]}}"#,
    )
    .unwrap();
    let o = bogie()
        .args(["spawn", "-u"])
        .arg(&rel)
        .args(["--qemu-image", "/nonexistent/manifest.json"])
        .output()
        .unwrap();
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    if Path::new("/usr/bin/ignition-validate").exists() {
        assert!(se.contains("path not absolute"), "{se}");
    }

    // YAML without a butane binary says what is missing.
    let bu = d.path().join("config.bu");
    std::fs::write(&bu, "variant: flatcar\nversion: 1.0.0\n").unwrap();
    let o = bogie()
        .args(["spawn", "-u"])
        .arg(&bu)
        .env("PATH", d.path())
        .output()
        .unwrap();
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(se.contains("butane"), "{se}");

    let (code, msg) = down(&d.path().join("no-such-run"));
    assert_eq!(code, 2, "{msg}");
    assert!(msg.contains("no-such-run"), "{msg}");
    let (code, msg) = down(d.path());
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("nothing to tear down"), "{msg}");
}
