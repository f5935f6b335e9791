//! `bogie spawn`: boots machines from the image with the run's key and prints a pasteable
//! `ssh` line for each. `-t` leaves them running (torn down later by `bogie down`), `-s`
//! opens a shell on the first one, and otherwise they live until Ctrl-C.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bogie_harness::cluster::BringUp;
use bogie_harness::spawn::{spawn_machines, KeptMachine, SpawnOptions};
use bogie_harness::{Config, Phase, TestEnv, TestMachine};
use tokio_util::sync::CancellationToken;

use super::{
    image_version, keys, load_image, make_platform, platform_name, prepare_output_dir, resolve_arch,
};
use crate::cli::{self, Global, SpawnArgs};
use crate::input_error;

/// Runs `bogie spawn`; returns the exit code (0 unless a machine did not come up).
pub async fn spawn(g: &Global, args: SpawnArgs) -> anyhow::Result<u8> {
    // Input first: nothing boots on a bad flag or a malformed config.
    let platform_name = platform_name(g)?;
    let config = match &args.userdata {
        Some(f) => Some(load_userdata(f)?),
        None => None,
    };
    let ssh_attempt = cli::parse_duration(&g.ssh_timeout).ok_or_else(|| {
        input_error(format!(
            "--ssh-timeout {:?} is not a duration",
            g.ssh_timeout
        ))
    })?;
    resolve_arch(g, None)?;
    super::input::check_output_dir(g)?;
    let image = load_image(g)?;
    let arch = resolve_arch(g, Some(&image))?;
    let version = image_version(g, Some(&image))?;
    let count = usize::from(args.nodecount);
    let platform = make_platform(g, &platform_name, &image, arch, count)?;
    let (key, extra_keys) = keys(&args.key)?;
    let out = prepare_output_dir(g, &platform_name)?;
    let key_path = out.join("ssh").join("id_ed25519");
    std::fs::create_dir_all(out.join("ssh"))?;
    key.write(&key_path)?;

    // --detach implies --remove=false, as in kola.
    let keep = args.detach || !args.remove;
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let mut provides = image.provides.clone();
    provides.extend(platform.capabilities());
    let opts = SpawnOptions {
        platform: platform.clone(),
        key,
        extra_keys,
        out_dir: out.clone(),
        env: TestEnv {
            platform: platform_name.clone(),
            arch,
            image: Arc::new(image.clone()),
            version,
            provides,
            internet: true,
        },
        count,
        config,
        bring_up: BringUp {
            ssh_timeout: ssh_attempt
                .saturating_mul(g.ssh_retries.max(1))
                .max(Duration::from_secs(60)),
            ssh_attempt_timeout: ssh_attempt.max(Duration::from_secs(10)),
            ..BringUp::default()
        },
        memory_mb: g.qemu.qemu_memory,
        may_outlive: keep,
        cancel: cancel.clone(),
    };
    let plural = if count == 1 { "" } else { "s" };
    eprintln!(
        "bogie spawn: booting {count} machine{plural} from {} in {}",
        image.path.display(),
        out.display()
    );
    eprintln!(
        "bogie spawn: consoles: {}/{}/<machine>/console.txt",
        out.display(),
        bogie_harness::spawn::SPAWN_DIR
    );
    let started = Instant::now();
    let seen = Mutex::new(Vec::<Phase>::new());
    let spawned = spawn_machines(opts, move |p| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&p) {
            seen.push(p);
            eprintln!(
                "bogie spawn: {} ({}s)",
                p.as_str(),
                started.elapsed().as_secs()
            );
        }
    })
    .await?;

    if !spawned.failures.is_empty() || cancel.is_cancelled() {
        for f in &spawned.failures {
            eprintln!("error: {f}");
        }
        for m in spawned.machines() {
            eprintln!("    console: {}", m.dir().join("console.txt").display());
        }
        if keep && !cancel.is_cancelled() && !spawned.machines().is_empty() {
            // The user asked to keep them: a machine without SSH still has a console.
            let (kept, errors) = spawned.keep(&key_path).await;
            print_kept(&kept, &errors, &key_path, &out);
        } else {
            eprintln!("bogie spawn: tearing the machines down");
            spawned.destroy().await?;
        }
        let _ = platform.shutdown().await;
        return Ok(1);
    }
    for w in &spawned.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "bogie spawn: {count} machine{plural} up in {}s",
        started.elapsed().as_secs()
    );

    let code = if keep {
        // Keep first: kept.json is on disk before anything else can go wrong.
        let (kept, errors) = spawned.keep(&key_path).await;
        print_kept(&kept, &errors, &key_path, &out);
        if args.shell {
            if let Some(m) = spawned.machines().first() {
                shell(m, &key_path).await?;
            }
        } else if !args.detach {
            eprintln!("Press Ctrl-C to exit; the machines keep running.");
            cancel.cancelled().await;
        }
        u8::from(!errors.is_empty())
    } else {
        let machines = spawned.machines();
        print_machines(&machines, &key_path);
        let result = if args.shell {
            match machines.first() {
                Some(m) => shell(m, &key_path).await.map(|_| ()),
                None => Ok(()),
            }
        } else {
            eprintln!("Press Ctrl-C to tear the machines down.");
            cancel.cancelled().await;
            Ok(())
        };
        eprintln!("bogie spawn: tearing the machines down");
        let destroyed = spawned.destroy().await;
        result?;
        destroyed?;
        0
    };
    let _ = platform.shutdown().await;
    Ok(code)
}

/// Prints each running machine's ssh line (they work while bogie runs).
fn print_machines(machines: &[TestMachine], key_path: &Path) {
    let mut out = std::io::stdout().lock();
    for m in machines {
        let _ = writeln!(out, "{}:", describe(m));
        let _ = writeln!(out, "    {}", m.ssh_command_line(key_path));
    }
    let _ = out.flush();
}

fn describe(m: &TestMachine) -> String {
    match m.private_ip() {
        Some(ip) => format!("machine {} (private IP {ip})", m.id()),
        None => format!("machine {}", m.id()),
    }
}

/// Prints kept machines, their ssh lines and the teardown command.
fn print_kept(kept: &[KeptMachine], errors: &[String], key_path: &Path, out_dir: &Path) {
    let mut out = std::io::stdout().lock();
    for e in errors {
        eprintln!("error: could not keep {e}");
    }
    if kept.is_empty() {
        return;
    }
    let _ = writeln!(out, "kept machines (key {}):", key_path.display());
    for k in kept {
        let _ = writeln!(out, "machine {}:", k.id);
        let _ = writeln!(out, "    {}", k.ssh);
    }
    let _ = writeln!(out, "tear them down with: {}", teardown_command(out_dir));
    let _ = out.flush();
}

/// The command line that tears down the machines kept under `out_dir`: `bogie down DIR`,
/// naming this binary by its path when it is not the `bogie` found on the PATH.
pub fn teardown_command(out_dir: &Path) -> String {
    let dir = bogie_harness::cluster::shell_quote(&out_dir.display().to_string());
    let exe = std::env::current_exe().ok();
    let on_path = exe.as_ref().is_some_and(|e| {
        e.file_name().is_some_and(|n| n == "bogie")
            && which("bogie").is_some_and(|p| same_file(&p, e))
    });
    match exe {
        Some(e) if !on_path && e.file_name().is_some_and(|n| n == "bogie") => format!(
            "{} down {dir}",
            bogie_harness::cluster::shell_quote(&e.display().to_string())
        ),
        _ => format!("bogie down {dir}"),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A program on the PATH.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Opens an interactive `ssh` session on `m` with the system client; returns its status.
async fn shell(m: &TestMachine, key_path: &Path) -> anyhow::Result<Option<i32>> {
    let addr = m.platform_machine().ssh_addr();
    eprintln!(
        "bogie spawn: ssh to {} ({}@{}:{}); exit the shell to continue",
        m.id(),
        m.user(),
        addr.ip(),
        addr.port()
    );
    let status = tokio::process::Command::new("ssh")
        .arg("-i")
        .arg(key_path)
        .args(["-p", &addr.port().to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{}@{}", m.user(), addr.ip()))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|e| {
            anyhow::anyhow!("running ssh: {e} (install the Debian package openssh-client)")
        })?;
    Ok(status.code())
}

/// Ctrl-C/SIGTERM end the wait (machines are then torn down or left, as asked). Later
/// ones are ignored so that teardown is never cut short: spawned machines may outlive
/// bogie, and an exit half-way would leak them.
fn watch_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            if cancel.is_cancelled() {
                eprintln!("\nbogie spawn: still tearing down; please wait");
            } else {
                eprintln!();
                cancel.cancel();
            }
        }
    });
}

/// Reads `--userdata`: Ignition JSON, or Butane YAML converted by the `butane` binary.
/// Malformed input is a one-line input error (exit 2).
pub(crate) fn load_userdata(path: &Path) -> anyhow::Result<Config> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
    let json = if text.trim_start().starts_with('{') {
        text
    } else {
        butane(path)?
    };
    let config =
        Config::from_json(&json).map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
    let version = config.version().to_string();
    let major = version.split('.').next().unwrap_or("");
    if major != "2" && major != "3" {
        return Err(input_error(format!(
            "--userdata {shown}: unsupported Ignition spec version {version:?} (expected 2.x or 3.x)"
        )));
    }
    // Debian's ignition-validate (Ignition 2.14) knows specs 3.0 to 3.3.
    if ["3.0.", "3.1.", "3.2.", "3.3."]
        .iter()
        .any(|p| version.starts_with(p))
    {
        if let Some(validator) = which("ignition-validate") {
            validate(&validator, &json)
                .map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
        }
    }
    Ok(config)
}

fn validate(validator: &Path, json: &str) -> Result<(), String> {
    let mut child = std::process::Command::new(validator)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", validator.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {}: {e}", validator.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(first_line(
        &out.stdout,
        &out.stderr,
        "invalid Ignition config",
    ))
}

fn first_line(stdout: &[u8], stderr: &[u8], default: &str) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stderr),
        String::from_utf8_lossy(stdout)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// Converts Butane YAML to Ignition JSON with the `butane` binary.
fn butane(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let Some(butane) = which("butane") else {
        return Err(input_error(format!(
            "--userdata {shown} is not Ignition JSON, and Butane YAML needs the butane binary on the PATH"
        )));
    };
    let mut cmd = std::process::Command::new(&butane);
    cmd.arg("--strict");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        cmd.arg("--files-dir").arg(dir);
    }
    let out = cmd
        .arg(path)
        .output()
        .map_err(|e| input_error(format!("--userdata {shown}: running butane: {e}")))?;
    if !out.status.success() {
        return Err(input_error(format!(
            "--userdata {shown}: butane: {}",
            first_line(&[], &out.stderr, "failed")
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| input_error(format!("--userdata {shown}: butane wrote invalid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userdata_json_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.ign");
        std::fs::write(
            &good,
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,hi"}}]}}"#,
        )
        .unwrap();
        let c = load_userdata(&good).unwrap();
        assert_eq!(c.version(), "3.3.0");

        let bad = d.path().join("bad.ign");
        std::fs::write(&bad, r#"{"ignition":{"version":"3.3.0"},"#).unwrap();
        let e = load_userdata(&bad).unwrap_err();
        assert!(e.downcast_ref::<crate::InputError>().is_some());
        assert!(e.to_string().contains("bad.ign"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);

        let nover = d.path().join("nover.ign");
        std::fs::write(&nover, r#"{"storage":{}}"#).unwrap();
        assert!(load_userdata(&nover)
            .unwrap_err()
            .to_string()
            .contains("ignition.version"));
    }

    #[test]
    fn teardown_names_bogie_down() {
        let t = teardown_command(Path::new("/tmp/run dir"));
        assert!(t.ends_with(" down '/tmp/run dir'"), "{t}");
    }
}
