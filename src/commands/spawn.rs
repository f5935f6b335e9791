//! `bogie spawn`: boots machines from the image with the run's key and prints a pasteable
//! `ssh` line for each. `-t` leaves them running (torn down later by `bogie down`), `-s`
//! opens a shell on the first one, and otherwise they live until Ctrl-C.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bogie_harness::spawn::{spawn_machines, KeptMachine, SpawnOptions, Spawned};
use bogie_harness::{Phase, TestEnv, TestMachine};
use tokio_util::sync::CancellationToken;

use crate::cli::SpawnArgs;
use crate::options::SpawnRequest;
use crate::progress::teardown_command;
use crate::setup::{keys, load_image, make_platform, prepare_output_dir, write_key};

/// The machines' shape from `--tpm`, `--add-disk`, `--primary-disk`, `--additional-nics`,
/// `--kargs` and `--firstbootkargs`.
fn machine_shape(args: &crate::cli::SpawnArgs) -> bogie_harness::spawn::MachineShape {
    let words = |s: &Option<String>| {
        s.iter()
            .flat_map(|s| s.split_whitespace())
            .map(String::from)
            .collect::<Vec<_>>()
    };
    bogie_harness::spawn::MachineShape {
        extra_disks: args.add_disk.clone(),
        primary_disk_gib: args.primary_disk,
        extra_nics: args.additional_nics,
        kernel_args: words(&args.kargs),
        first_boot_kernel_args: words(&args.firstbootkargs),
        tpm: args.tpm,
    }
}

/// Runs `bogie spawn`; returns the exit code (0 unless a machine did not come up).
pub async fn spawn(req: SpawnRequest) -> anyhow::Result<u8> {
    let SpawnRequest {
        target,
        output,
        bring_up,
        config,
        args,
    } = req;
    let image = load_image(&target)?;
    let arch = target.arch_for(Some(&image));
    let version = target.version_for(Some(&image))?;
    let count = usize::from(args.nodecount);
    let platform = make_platform(&target, &image, arch, count)?;
    let (key, extra_keys) = keys(&args.key)?;
    let out = prepare_output_dir(&output, &target.platform)?;
    let key_path = write_key(&key, &out)?;
    let platform_name = target.platform.clone();

    // --detach implies --remove=false, as in kola.
    let keep = args.detach || !args.remove;
    let cancel = CancellationToken::new();
    watch_signals(cancel.clone());
    let mut provides = image.provides.clone();
    provides.extend(platform.capabilities());
    let shape = machine_shape(&args);
    check_shape(&shape, &provides, &platform_name)?;
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
        bring_up,
        memory_mb: target.qemu.qemu_memory,
        shape,
        may_outlive: keep,
        cancel: cancel.clone(),
    };
    let plural = if count == 1 { "" } else { "s" };
    announce(count, &image.path, &out);
    let started = Instant::now();
    let spawned = spawn_machines(opts, phase_printer(started)).await?;
    let place = Place {
        key_path: &key_path,
        out: &out,
    };
    if !spawned.failures.is_empty() || cancel.is_cancelled() {
        not_up(&spawned, keep, &cancel, &place).await?;
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
        keep_them(&spawned, &args, &cancel, &place).await?
    } else {
        use_then_destroy(&spawned, &args, &cancel, &place).await?
    };
    let _ = platform.shutdown().await;
    Ok(code)
}

/// Refuses a machine shape the platform and image cannot give (an input error).
fn check_shape(
    shape: &bogie_harness::spawn::MachineShape,
    provides: &std::collections::BTreeSet<String>,
    platform_name: &str,
) -> anyhow::Result<()> {
    match shape.requires().into_iter().find(|r| !provides.contains(*r)) {
        Some(missing) => Err(crate::input_error(format!(
            "spawn: the machines need {missing:?}, which {platform_name} with this image does not provide"
        ))),
        None => Ok(()),
    }
}

/// Says what boots where, and where the consoles are.
fn announce(count: usize, image: &Path, out: &Path) {
    let plural = if count == 1 { "" } else { "s" };
    eprintln!(
        "bogie spawn: booting {count} machine{plural} from {} in {}",
        image.display(),
        out.display()
    );
    eprintln!(
        "bogie spawn: consoles: {}/{}/<machine>/console.txt",
        out.display(),
        bogie_harness::spawn::SPAWN_DIR
    );
}

/// Where spawned machines' key and files are.
struct Place<'a> {
    key_path: &'a Path,
    out: &'a Path,
}

/// Prints each bring-up phase once, with the seconds since `started`.
fn phase_printer(started: Instant) -> impl Fn(Phase) + Send + Sync + 'static {
    let seen = Mutex::new(Vec::<Phase>::new());
    move |p| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(&p) {
            seen.push(p);
            eprintln!(
                "bogie spawn: {} ({}s)",
                p.as_str(),
                started.elapsed().as_secs()
            );
        }
    }
}

/// Machines that did not all come up (or Ctrl-C): the errors and consoles are printed;
/// the machines are kept when the user asked to keep them (a machine without SSH still
/// has a console), else torn down.
async fn not_up(
    spawned: &Spawned,
    keep: bool,
    cancel: &CancellationToken,
    place: &Place<'_>,
) -> anyhow::Result<()> {
    for f in &spawned.failures {
        eprintln!("error: {f}");
    }
    for m in spawned.machines() {
        eprintln!("    console: {}", m.dir().join("console.txt").display());
    }
    if keep && !cancel.is_cancelled() && !spawned.machines().is_empty() {
        let (kept, errors) = spawned.keep(place.key_path).await;
        print_kept(&kept, &errors, place.key_path, place.out);
    } else {
        eprintln!("bogie spawn: tearing the machines down");
        spawned.destroy().await?;
    }
    Ok(())
}

/// `-t`/`--remove=false`: keeps the machines first (kept.json is on disk before anything
/// else can go wrong), then opens the shell or waits for Ctrl-C unless detached.
async fn keep_them(
    spawned: &Spawned,
    args: &SpawnArgs,
    cancel: &CancellationToken,
    place: &Place<'_>,
) -> anyhow::Result<u8> {
    let (kept, errors) = spawned.keep(place.key_path).await;
    print_kept(&kept, &errors, place.key_path, place.out);
    if args.shell {
        if let Some(m) = spawned.machines().first() {
            shell(m, place.key_path).await?;
        }
    } else if !args.detach {
        eprintln!("Press Ctrl-C to exit; the machines keep running.");
        cancel.cancelled().await;
    }
    Ok(u8::from(!errors.is_empty()))
}

/// The machines live while bogie runs: their ssh lines, then the shell or Ctrl-C, then
/// teardown.
async fn use_then_destroy(
    spawned: &Spawned,
    args: &SpawnArgs,
    cancel: &CancellationToken,
    place: &Place<'_>,
) -> anyhow::Result<u8> {
    let machines = spawned.machines();
    print_machines(&machines, place.key_path);
    let result = if args.shell {
        match machines.first() {
            Some(m) => shell(m, place.key_path).await.map(|_| ()),
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
    Ok(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bogie_harness::platform::{DiskInterface, DiskSpec, SectorSize};
    use clap::Parser;

    fn spawn_args(flags: &[&str]) -> Result<crate::cli::SpawnArgs, clap::Error> {
        let argv = ["bogie", "spawn"].iter().chain(flags).copied();
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::cli::Command::Spawn(a) => Ok(a),
            _ => unreachable!("spawn parses as spawn"),
        }
    }

    #[test]
    fn spawn_takes_a_tests_machine_shape() {
        let a = spawn_args(&[
            "--tpm",
            "--add-disk",
            "2G:4k,serial=fourk",
            "--disk=3G:channel=nvme",
            "--primary-disk",
            "20G",
            "--additional-nics",
            "2",
            "--kargs",
            "quiet  bogie.x=1",
            "--firstbootkargs=ip=dhcp",
        ])
        .unwrap();
        let shape = machine_shape(&a);
        assert_eq!(
            shape.extra_disks,
            vec![
                DiskSpec::new(2)
                    .sectors(SectorSize::Native4k)
                    .serial("fourk"),
                DiskSpec::new(3).interface(DiskInterface::Nvme),
            ]
        );
        assert_eq!(shape.primary_disk_gib, Some(20));
        assert_eq!(shape.extra_nics, 2);
        assert_eq!(shape.kernel_args, vec!["quiet", "bogie.x=1"]);
        assert_eq!(shape.first_boot_kernel_args, vec!["ip=dhcp"]);
        assert!(shape.tpm);
        assert_eq!(
            shape.requires(),
            vec![
                "extra-disk",
                "primary-disk-size",
                "extra-nic",
                "kernel-args",
                "tpm"
            ]
        );
        // Without flags, a plain machine.
        let plain = machine_shape(&spawn_args(&[]).unwrap());
        assert_eq!(plain, bogie_harness::spawn::MachineShape::default());
        assert!(plain.requires().is_empty());
    }

    #[test]
    fn bad_shape_flags_are_refused_by_clap() {
        for bad in [
            &["--add-disk", "1G:8k"][..],
            &["--add-disk", "5M"],
            &["--primary-disk", "0"],
            &["--primary-disk", "big"],
            &["--additional-nics", "9"],
        ] {
            assert!(spawn_args(bad).is_err(), "{bad:?}");
        }
    }
}
