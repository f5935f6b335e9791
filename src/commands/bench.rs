//! `bogie bench`: measurements of bogie against baselines taken in the same run, printed as
//! ratios (a ratio of two walls measured minutes apart on the same host means something
//! even when the host is busy; an absolute time does not).
//!
//! - `overhead`: `bogie run` of one SSH test ÷ a plain QEMU boot of the same image to SSH
//!   plus the same commands through the system `ssh` (goal ≤ 1.05);
//! - `snapshot`: start from a snapshot ÷ cold boot, each to a working SSH login (≤ 0.1);
//! - `boots`: machine boots per test over a catalog selection with sharing and snapshots
//!   ÷ without (≤ 0.5), and the results must agree test for test;
//! - `parallel`: N tests at `-j 2` ÷ (sum of their single-run walls ÷ 2) (≤ 1.1);
//! - `scale`: 10,000 tests on the in-process instant platform, scheduling and every report
//!   (< 2 s, < 100 MB peak RSS), beside a baseline of the same process with no tests;
//! - `catalog` (`--catalog [TEST]...`, not in the default set): the whole catalog, or the
//!   named tests, at `-j 2` with sharing, merged-config buckets and snapshots ÷ the same
//!   with `--no-snapshot --no-share`: machines booted cold, restored, tests on shared
//!   machines, boots per test, both walls and their ratio (≤ 0.5, and ≤ 0.5 boots per
//!   test), the results asserted identical test for test.
//!
//! The QEMU benchmarks need the test image (`--qemu-image`, or `BOGIE_TEST_IMAGE`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bogie_harness::cluster::BringUp;
use bogie_harness::instant::InstantPlatform;
use bogie_harness::runner::{AttemptContext, KeepPolicy};
use bogie_harness::schedule::{run_all, Event, ScheduleOptions};
use bogie_harness::select::Selected;
use bogie_harness::snapshot::BootStats;
use bogie_harness::ssh::{SshKey, SshSession};
use bogie_harness::{
    ClusterSpec, Config, ImageInfo, Machine, MachineSpec, Platform, Registry, Test, TestEnv,
    TestFlags,
};
use bogie_reports::{RunInfo, RunReport, Status};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{BenchArgs, Cli, Command};
use crate::options::{BenchOptions, RunOptions};

/// The commands the overhead benchmark runs, in bogie's test and over the system `ssh`.
const OVERHEAD_COMMANDS: [&str; 3] = [
    "systemctl is-system-running --wait",
    "uname -r",
    "cat /etc/os-release",
];

/// The catalog selection of the `boots` benchmark: every default-config one-machine test
/// that runs on the test image, plus two with their own configs.
const CATALOG: &[&str] = &[
    "cl.basic",
    "coreos.auth.verify",
    "cl.users.shells",
    "cl.filesystem",
    "systemd.sysusers.gshadow",
    "cl.network.listeners.legacy",
    "coreos.ignition.sethostname",
    "cl.ignition.symlink",
];

const ALL: [&str; 5] = ["overhead", "snapshot", "boots", "parallel", "scale"];
/// Benchmarks `--only` takes besides [`ALL`] (not run by default: each takes an hour).
const EXTRA: [&str; 1] = ["catalog"];

/// One measured ratio.
struct Figure {
    name: &'static str,
    ratio: f64,
    goal: &'static str,
    met: bool,
    detail: String,
}

/// Runs the benchmarks; returns 0 (the figures are information, not a gate).
pub async fn bench(g: &BenchOptions) -> anyhow::Result<u8> {
    let args = &g.args;
    if let Some(n) = args.scale_child {
        let r = scale_workload(n).await?;
        println!("{}", r.to_json());
        return Ok(0);
    }
    let want = chosen(args)?;
    let needs_qemu = want.iter().any(|w| *w != "scale");
    let image = test_image(g, needs_qemu)?;
    let tmp;
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = TempDir::new("bogie-bench-")?;
            tmp.path().to_path_buf()
        }
    };
    // The accelerator the runs really use (an openable /dev/kvm is not enough: QEMU's own
    // KVM probe decides, see the QEMU platform).
    let accel = match &image {
        Some(i) => qemu_platform(g, i, 1)
            .map(|p| p.accel().as_str().to_uppercase())
            .unwrap_or_else(|_| "?".into()),
        None => "no QEMU".into(),
    };
    println!("{}", host_line(&accel));
    let mut figures = Vec::new();
    for w in want {
        let load = load_average();
        println!("\n== {w} (load average {load})");
        let started = Instant::now();
        let f = match w {
            "overhead" => overhead(g, image.as_deref().expect("checked"), &work).await,
            "snapshot" => snapshot(g, image.as_deref().expect("checked"), &work, args).await,
            "boots" => boots(g, image.as_deref().expect("checked"), &work).await,
            "parallel" => parallel(g, image.as_deref().expect("checked"), &work, args).await,
            "scale" => scale(args).await,
            "catalog" => catalog(g, image.as_deref().expect("checked"), &work, args).await,
            _ => unreachable!("checked"),
        };
        match f {
            Ok(mut f) => {
                f.detail
                    .push_str(&format!("; load average {load} → {}", load_average()));
                println!(
                    "{}: {:.3} (goal {}{}) in {:.0}s — {}",
                    f.name,
                    f.ratio,
                    f.goal,
                    if f.met { ", met" } else { ", NOT met" },
                    started.elapsed().as_secs_f64(),
                    f.detail
                );
                figures.push(f);
            }
            Err(e) => println!("{w}: failed: {e:#}"),
        }
    }
    println!("\n{}\n", host_line(&accel));
    print_table(&figures);
    Ok(0)
}

/// The benchmarks `--only` names (all of [`ALL`] by default), and `catalog` when
/// `--catalog` is given; an unknown name is an input error.
fn chosen(args: &BenchArgs) -> anyhow::Result<Vec<&str>> {
    let mut want: Vec<&str> = if args.only.is_empty() && args.catalog.is_some() {
        Vec::new()
    } else if args.only.is_empty() {
        ALL.to_vec()
    } else {
        for o in &args.only {
            if !ALL.contains(&o.as_str()) && !EXTRA.contains(&o.as_str()) {
                return Err(crate::input_error(format!(
                    "--only {o:?}: expected one of {}, {}",
                    ALL.join(", "),
                    EXTRA.join(", ")
                )));
            }
        }
        args.only.iter().map(String::as_str).collect()
    };
    if args.catalog.is_some() && !want.contains(&"catalog") {
        want.push("catalog");
    }
    Ok(want)
}

/// The test image: `--qemu-image`, else `BOGIE_TEST_IMAGE`; an input error when a chosen
/// benchmark boots QEMU and there is none.
fn test_image(g: &BenchOptions, needs_qemu: bool) -> anyhow::Result<Option<PathBuf>> {
    match (&g.image, std::env::var_os("BOGIE_TEST_IMAGE")) {
        (Some(p), _) => Ok(Some(p.clone())),
        (None, Some(p)) => Ok(Some(PathBuf::from(p))),
        (None, None) if needs_qemu => Err(crate::input_error(
            "bogie bench needs the test image: pass --qemu-image (or set BOGIE_TEST_IMAGE)",
        )),
        (None, None) => Ok(None),
    }
}

/// The figures as the Markdown table `docs/benchmarks.md` keeps.
fn print_table(figures: &[Figure]) {
    println!("| benchmark | ratio | goal | measured |");
    println!("|---|---|---|---|");
    for f in figures {
        println!(
            "| {} | **{:.3}** | {}{} | {} |",
            f.name,
            f.ratio,
            f.goal,
            if f.met { "" } else { " (not met)" },
            f.detail
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine the figures were measured on; `accel` is what QEMU runs with.
fn host_line(accel: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1048576.0))
        .unwrap_or_else(|| "?".into());
    format!(
        "host: {cores} cores (nproc; {cpu}), {mem} RAM, QEMU accelerator {accel}, load average {}",
        load_average()
    )
}

/// Parses a `bogie` command line (the bench's own runs).
fn parse(g: &BenchOptions, image: &Path, out: &Path, j: &str, run: &[&str]) -> anyhow::Result<Cli> {
    let mut argv: Vec<String> = vec!["bogie".into(), "-p".into(), "qemu".into()];
    argv.extend(["--qemu-image".into(), image.display().to_string()]);
    argv.extend(["--output-dir".into(), out.display().to_string()]);
    argv.extend(["-j".into(), j.into()]);
    if let Some(b) = &g.board {
        argv.extend(["--board".into(), b.clone()]);
    }
    if let Some(m) = g.memory_mb {
        argv.extend(["--qemu-memory".into(), m.to_string()]);
    }
    argv.extend(["--qemu-accel".into(), g.accel.to_string()]);
    argv.push("run".into());
    argv.extend(run.iter().map(|s| s.to_string()));
    Cli::try_parse_from(argv).context("building a bench command line")
}

/// Runs `bogie run` in this process; returns its wall time, report and machine counts.
async fn bogie_run(
    g: &BenchOptions,
    image: &Path,
    out: &Path,
    j: &str,
    run: &[&str],
    registry: &Registry,
) -> anyhow::Result<(Duration, RunReport, bogie_harness::snapshot::BootCounts)> {
    let _ = std::fs::remove_dir_all(out);
    let cli = parse(g, image, out, j, run)?;
    let Command::Run(args) = cli.command else {
        bail!("not a run command")
    };
    let stats = Arc::new(BootStats::default());
    let t = Instant::now();
    let opts = RunOptions::from_flags(&cli.global, args)?;
    super::run::run(&opts, registry, stats.clone()).await?;
    let wall = t.elapsed();
    let report = bogie_reports::jsonl::read_results_jsonl(out.join("reports/results.jsonl"))?;
    if report.end == bogie_reports::RunEnd::Interrupted {
        bail!("interrupted");
    }
    Ok((wall, report, stats.counts()))
}

fn statuses(r: &RunReport) -> BTreeMap<String, Status> {
    r.tests.iter().map(|t| (t.name.clone(), t.status)).collect()
}

/// The bench's own tests (never part of the shipped catalog).
fn bench_registry(parallel_tests: usize) -> anyhow::Result<Registry> {
    let mut r = Registry::new();
    r.register(
        Test::new("bench.ssh", |c| async move {
            let m = c.machine()?;
            for cmd in OVERHEAD_COMMANDS {
                m.must_ssh(cmd).await?;
            }
            Ok(())
        })
        .distros(&[]),
    )?;
    for i in 1..=parallel_tests {
        r.register(
            Test::new(&format!("bench.par.{i}"), |c| async move {
                let m = c.machine()?;
                m.must_ssh("systemctl is-system-running --wait && uname -r")
                    .await?;
                Ok(())
            })
            .distros(&[]),
        )?;
    }
    Ok(r)
}

fn qemu_platform(
    g: &BenchOptions,
    image: &Path,
    parallel: usize,
) -> anyhow::Result<bogie_platform_qemu::QemuPlatform> {
    let info = ImageInfo::load(image).map_err(|e| crate::input_error(e.to_string()))?;
    let arch = g.arch_for(&info);
    let mut o = bogie_platform_qemu::QemuOptions::new(info, arch);
    o.accel = g.accel;
    if let Some(m) = g.memory_mb {
        o.memory_mb = m;
    }
    o.cpus = bogie_platform_qemu::default_cpus(parallel as u32);
    Ok(bogie_platform_qemu::QemuPlatform::new(o)?)
}

/// The first free TCP port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn system_ssh(key: &Path, port: u16, command: &str) -> std::process::Command {
    let mut c = std::process::Command::new("ssh");
    c.args(["-i"])
        .arg(key)
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "core@127.0.0.1",
            command,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A plain QEMU boot of the image to SSH plus [`OVERHEAD_COMMANDS`] over the system `ssh`:
/// the command line a person would write (the devices bogie uses, minus its monitor and
/// private network), timed from creating the overlay to QEMU's exit.
///
/// Long on purpose: it is the benchmark's baseline, the whole hand-written QEMU and `ssh`
/// session in one place, so a reader can check it is the command a person would run.
async fn plain_qemu(
    p: &bogie_platform_qemu::QemuPlatform,
    image: &Path,
    dir: &Path,
) -> anyhow::Result<Duration> {
    std::fs::create_dir_all(dir)?;
    let info = ImageInfo::load(image)?;
    let m = info
        .manifest
        .as_ref()
        .context("the overhead benchmark needs a bogie image manifest")?;
    let key = SshKey::generate();
    let key_path = dir.join("id_ed25519");
    key.write(&key_path)?;
    let ign = dir.join("ignition.json");
    std::fs::write(
        &ign,
        Config::new().ssh_key("core", key.public_openssh()).render(),
    )?;
    let overlay = dir.join("disk.qcow2");
    let port = free_port()?;
    let accel = p.accel().as_str();
    let machine = match m.arch {
        bogie_harness::Arch::Amd64 => "q35",
        bogie_harness::Arch::Arm64 => "virt",
    };
    let cpu = if accel == "kvm" { "host" } else { "max" };
    let cpus = bogie_platform_qemu::default_cpus(1).to_string();
    let fw_name = m
        .fw_cfg_name
        .clone()
        .unwrap_or_else(|| "opt/com.coreos/config".into());
    let t = Instant::now();
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", &m.disk_format, "-b"])
        .arg(&m.disk)
        .arg(&overlay)
        .status()?;
    if !st.success() {
        bail!("qemu-img create failed");
    }
    let mut cmd = tokio::process::Command::new(p.binary());
    cmd.args(["-machine", machine, "-accel", accel, "-cpu", cpu])
        .args([
            "-smp",
            &cpus,
            "-m",
            "1024",
            "-nodefaults",
            "-display",
            "none",
        ])
        .arg("-kernel")
        .arg(m.kernel.as_ref().context("no kernel in the manifest")?);
    if let Some(i) = &m.initrd {
        cmd.arg("-initrd").arg(i);
    }
    cmd.args(["-append", &m.kernel_args])
        .args([
            "-drive",
            &format!(
                "if=virtio,format=qcow2,cache=unsafe,file={}",
                overlay.display()
            ),
        ])
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"),
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
            "-serial",
            &format!("file:{}", dir.join("console.txt").display()),
            "-fw_cfg",
            &format!("name={fw_name},file={}", ign.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting QEMU")?;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let ok = tokio::task::spawn_blocking({
            let mut c = system_ssh(&key_path, port, "true");
            move || c.status().map(|s| s.success()).unwrap_or(false)
        })
        .await?;
        if ok {
            break;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill().await;
            bail!("the plain QEMU machine never answered on SSH");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let joined = OVERHEAD_COMMANDS.join(" && ");
    let ok = tokio::task::spawn_blocking({
        let mut c = system_ssh(&key_path, port, &joined);
        move || c.status().map(|s| s.success()).unwrap_or(false)
    })
    .await?;
    let _ = child.kill().await;
    let _ = child.wait().await;
    let wall = t.elapsed();
    let _ = std::fs::remove_file(&overlay);
    if !ok {
        bail!("the commands failed on the plain QEMU machine");
    }
    Ok(wall)
}

async fn overhead(g: &BenchOptions, image: &Path, work: &Path) -> anyhow::Result<Figure> {
    let p = qemu_platform(g, image, 1)?;
    let plain = plain_qemu(&p, image, &work.join("overhead-plain")).await?;
    println!("plain QEMU + ssh: {:.1}s", plain.as_secs_f64());
    let reg = bench_registry(0)?;
    let (wall, report, _) = bogie_run(
        g,
        image,
        &work.join("overhead-bogie"),
        "1",
        &["--no-snapshot", "bench.ssh"],
        &reg,
    )
    .await?;
    if report.tests.iter().any(|t| t.status != Status::Pass) {
        bail!("bench.ssh did not pass under bogie");
    }
    println!("bogie run: {:.1}s", wall.as_secs_f64());
    let ratio = wall.as_secs_f64() / plain.as_secs_f64();
    Ok(Figure {
        name: "harness overhead (bogie run ÷ plain QEMU + ssh)",
        ratio,
        goal: "≤ 1.05",
        met: ratio <= 1.05,
        detail: format!(
            "bogie {:.1}s, plain {:.1}s",
            wall.as_secs_f64(),
            plain.as_secs_f64()
        ),
    })
}

/// Machine `id`'s spec with the run key in its config.
fn spec(dir: &Path, id: &str, key: &SshKey) -> anyhow::Result<MachineSpec> {
    let d = dir.join(id);
    std::fs::create_dir_all(&d)?;
    let ignition = Config::new()
        .ssh_key("core", key.public_openssh())
        .render_pretty();
    std::fs::write(d.join("ignition.json"), &ignition)?;
    Ok(MachineSpec {
        id: id.to_string(),
        dir: d,
        ignition,
        memory_mb: None,
        cpus: None,
        extra_disks: Vec::new(),
        kernel_args: Vec::new(),
        primary_disk_gib: None,
        extra_nics: 0,
        first_boot_kernel_args: Vec::new(),
        tpm: false,
        may_outlive: false,
        no_ssh_key_in_metadata: false,
    })
}

async fn login(m: &dyn Machine, key: &SshKey) -> anyhow::Result<SshSession> {
    let cancel = CancellationToken::new();
    Ok(SshSession::wait_ready(
        m.ssh_addr(),
        "core",
        key,
        Duration::from_secs(900),
        Duration::from_secs(20),
        &cancel,
        || async { true },
    )
    .await?)
}

async fn snapshot(
    g: &BenchOptions,
    image: &Path,
    work: &Path,
    args: &BenchArgs,
) -> anyhow::Result<Figure> {
    let p = qemu_platform(g, image, 1)?;
    let dir = work.join("snapshot");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = SshKey::generate();
    let cluster = p.cluster(ClusterSpec {
        name: "bench-cold".into(),
        dir: dir.clone(),
    })?;
    let t = Instant::now();
    let m = cluster.boot(spec(&dir, "cold", &key)?).await?;
    let s = login(m.as_ref(), &key).await?;
    let cold = t.elapsed();
    println!("cold boot to SSH login: {:.1}s", cold.as_secs_f64());
    let settle = Instant::now();
    loop {
        let state = s.exec("systemctl is-system-running").await?.stdout_str();
        if state == "running" {
            break;
        }
        if settle.elapsed() > Duration::from_secs(600) {
            bail!("the machine did not settle ({state})");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    s.close().await;
    let t = Instant::now();
    let template = m.make_template(&dir.join("template")).await?;
    let freeze = t.elapsed();
    println!("frozen into a template in {:.1}s", freeze.as_secs_f64());
    bogie_harness::Cluster::destroy(&cluster).await?;
    let mut restores = Vec::new();
    for i in 0..args.restores.max(1) {
        let c = p.cluster(ClusterSpec {
            name: format!("bench-restore-{i}"),
            dir: dir.clone(),
        })?;
        let t = Instant::now();
        let r = c
            .restore(spec(&dir, &format!("r{i}"), &key)?, &template)
            .await?;
        let s = login(r.as_ref(), &key).await?;
        let took = t.elapsed();
        let up = s.exec("systemctl is-system-running").await?.stdout_str();
        s.close().await;
        bogie_harness::Cluster::destroy(&c).await?;
        println!(
            "restore {} to SSH login: {:.2}s (then {up})",
            i + 1,
            took.as_secs_f64()
        );
        restores.push(took);
    }
    let _ = std::fs::remove_dir_all(&template.dir);
    restores.sort();
    let median = restores[restores.len() / 2];
    let ratio = median.as_secs_f64() / cold.as_secs_f64();
    Ok(Figure {
        name: "snapshot start ÷ cold boot (to SSH login)",
        ratio,
        goal: "≤ 0.1",
        met: ratio <= 0.1,
        detail: format!(
            "restore median {:.2}s of {}, cold {:.1}s, freezing {:.1}s",
            median.as_secs_f64(),
            restores.len(),
            cold.as_secs_f64(),
            freeze.as_secs_f64()
        ),
    })
}

async fn boots(g: &BenchOptions, image: &Path, work: &Path) -> anyhow::Result<Figure> {
    let pats: Vec<&str> = CATALOG.to_vec();
    let reg = bogie_tests_catalog::registry();
    let mut plain_args = vec!["--no-snapshot", "--no-share", "--no-net"];
    plain_args.extend(&pats);
    let (w0, r0, c0) =
        bogie_run(g, image, &work.join("boots-plain"), "2", &plain_args, &reg).await?;
    let mut fast_args = vec!["--snapshot", "--share", "--no-net"];
    fast_args.extend(&pats);
    let (w1, r1, c1) = bogie_run(g, image, &work.join("boots-fast"), "2", &fast_args, &reg).await?;
    let (n0, n1) = (ran(&r0).max(1) as f64, ran(&r1).max(1) as f64);
    let same = statuses(&r0) == statuses(&r1);
    if !same {
        println!(
            "results differ: without {:?}, with {:?}",
            statuses(&r0),
            statuses(&r1)
        );
    }
    let per0 = c0.cold as f64 / n0;
    let per1 = c1.cold as f64 / n1;
    let ratio = per1 / per0.max(f64::MIN_POSITIVE);
    Ok(Figure {
        name: "machine boots per test, sharing+snapshots ÷ neither",
        ratio,
        goal: "≤ 0.5",
        met: ratio <= 0.5 && same,
        detail: format!(
            "{} tests: {} boots without, {} boots + {} snapshot starts + {} tests on shared machines with; wall {:.0}s → {:.0}s ({:.2}×); results {}",
            n1,
            c0.cold,
            c1.cold,
            c1.restored,
            c1.reused,
            w0.as_secs_f64(),
            w1.as_secs_f64(),
            w0.as_secs_f64() / w1.as_secs_f64(),
            if same { "identical" } else { "DIFFER" }
        ),
    })
}

/// The `catalog` benchmark: the tests of `--catalog` (the whole catalog when none) run cold
/// (`--no-snapshot --no-share`) and then with sharing, buckets and snapshots, both at `-j 2`
/// and ordered the same way (no durations from earlier runs).
async fn catalog(
    g: &BenchOptions,
    image: &Path,
    work: &Path,
    args: &BenchArgs,
) -> anyhow::Result<Figure> {
    let named = args.catalog.clone().unwrap_or_default();
    let pats: Vec<&str> = if named.is_empty() {
        vec!["*"]
    } else {
        named.iter().map(String::as_str).collect()
    };
    let reg = bogie_tests_catalog::registry();
    let mut cold_args = vec![
        "--no-snapshot",
        "--no-share",
        "--no-net",
        "--durations",
        "none",
    ];
    cold_args.extend(&pats);
    println!(
        "cold run (--no-snapshot --no-share) of {} ...",
        pats.join(" ")
    );
    let (w0, r0, c0) =
        bogie_run(g, image, &work.join("catalog-cold"), "2", &cold_args, &reg).await?;
    let mut fast_args = vec!["--snapshot", "--share", "--no-net", "--durations", "none"];
    fast_args.extend(&pats);
    println!("fast run (--snapshot --share) ...");
    let (w1, r1, c1) =
        bogie_run(g, image, &work.join("catalog-fast"), "2", &fast_args, &reg).await?;
    let differ = differences(&r0, &r1);
    for d in &differ {
        println!("  results differ: {d}");
    }
    let (n0, n1) = (ran(&r0), ran(&r1));
    let per = |c: &bogie_harness::snapshot::BootCounts, n: usize| c.cold as f64 / n.max(1) as f64;
    let (per0, per1) = (per(&c0, n0), per(&c1, n1));
    let ratio = w1.as_secs_f64() / w0.as_secs_f64().max(f64::MIN_POSITIVE);
    let passed = |r: &RunReport| r.tests.iter().filter(|t| t.status == Status::Pass).count();
    println!(
        "  cold: {n0} tests ran ({} passed), {} machines booted, {per0:.2} boots per test, wall {:.0}s",
        passed(&r0),
        c0.cold,
        w0.as_secs_f64()
    );
    println!(
        "  fast: {n1} tests ran ({} passed), {} machines booted cold, {} from snapshots, {} tests on shared machines, {per1:.2} boots per test, wall {:.0}s",
        passed(&r1),
        c1.cold,
        c1.restored,
        c1.reused,
        w1.as_secs_f64()
    );
    Ok(Figure {
        name: "catalog: wall with sharing+buckets+snapshots ÷ cold run",
        ratio,
        goal: "≤ 0.5, ≤ 0.5 boots per test",
        met: ratio <= 0.5 && per1 <= 0.5 && differ.is_empty(),
        detail: format!(
            "{n1} tests ran ({} passed): cold {} boots ({per0:.2}/test) in {:.0}s; fast {} boots ({per1:.2}/test) + {} snapshot starts + {} tests on shared machines in {:.0}s; results {}",
            passed(&r1),
            c0.cold,
            w0.as_secs_f64(),
            c1.cold,
            c1.restored,
            c1.reused,
            w1.as_secs_f64(),
            if differ.is_empty() {
                "identical test for test".to_string()
            } else {
                format!("DIFFER for {}", differ.len())
            }
        ),
    })
}

/// The tests whose status differs between two runs, one line each.
fn differences(cold: &RunReport, fast: &RunReport) -> Vec<String> {
    let (s0, s1) = (statuses(cold), statuses(fast));
    s0.iter()
        .filter(|(name, st)| s1.get(*name) != Some(st))
        .map(|(name, st)| format!("{name}: {st:?} cold, {:?} fast", s1.get(name)))
        .collect()
}

/// How many tests of a report ran (not skipped).
fn ran(r: &RunReport) -> usize {
    r.tests.iter().filter(|t| t.status != Status::Skip).count()
}

async fn parallel(
    g: &BenchOptions,
    image: &Path,
    work: &Path,
    args: &BenchArgs,
) -> anyhow::Result<Figure> {
    let n = args.parallel_tests.max(2);
    let reg = bench_registry(n)?;
    let mut singles = Duration::ZERO;
    for i in 1..=n {
        let name = format!("bench.par.{i}");
        let (w, r, _) = bogie_run(
            g,
            image,
            &work.join(format!("par-single-{i}")),
            "1",
            // One vCPU per guest both ways: left to the default, a guest alone gets every
            // core (2 here) and guests at -j 2 one each, which compares different machines.
            &["--no-snapshot", "--qemu-cpus", "1", &name],
            &reg,
        )
        .await?;
        if r.tests.iter().any(|t| t.status != Status::Pass) {
            bail!("{name} failed alone");
        }
        println!("{name} alone: {:.1}s", w.as_secs_f64());
        singles += w;
    }
    let (w, r, _) = bogie_run(
        g,
        image,
        &work.join("par-all"),
        "2",
        &["--no-snapshot", "--qemu-cpus", "1", "bench.par.*"],
        &reg,
    )
    .await?;
    if r.tests.iter().any(|t| t.status != Status::Pass) {
        bail!("a bench.par test failed at -j 2");
    }
    println!("{n} tests at -j 2: {:.1}s", w.as_secs_f64());
    let ratio = w.as_secs_f64() / (singles.as_secs_f64() / 2.0);
    Ok(Figure {
        name: "parallel efficiency (-j 2 wall ÷ (Σ single walls ÷ 2))",
        ratio,
        goal: "≤ 1.1",
        met: ratio <= 1.1,
        detail: format!(
            "{n} tests, cold boots, 1 vCPU each: -j 2 {:.0}s, singles Σ {:.0}s",
            w.as_secs_f64(),
            singles.as_secs_f64()
        ),
    })
}

/// What one scale workload took.
#[derive(Debug)]
struct ScaleResult {
    tests: usize,
    wall_ms: f64,
    peak_rss_kib: u64,
    passed: usize,
    failed: usize,
}

impl ScaleResult {
    fn to_json(&self) -> String {
        serde_json::json!({
            "tests": self.tests,
            "wall_ms": self.wall_ms,
            "peak_rss_kib": self.peak_rss_kib,
            "passed": self.passed,
            "failed": self.failed,
        })
        .to_string()
    }

    fn from_json(line: &str) -> anyhow::Result<ScaleResult> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let n = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {line:?}"));
        Ok(ScaleResult {
            tests: n("tests")? as usize,
            wall_ms: n("wall_ms")?,
            peak_rss_kib: n("peak_rss_kib")? as u64,
            passed: n("passed")? as usize,
            failed: n("failed")? as usize,
        })
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let d =
            std::env::temp_dir().join(format!("{prefix}{}-{:08x}", std::process::id(), rand_u32()));
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u32() -> u32 {
    crate::setup::rand_id() as u32
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` tests on the instant platform: every fifth shares machines, one in a hundred
/// fails; then every report is written. Times the scheduling and the reports.
///
/// Long on purpose: the workload is built, scheduled and reported in one body so that the
/// timed span is visibly everything a run of that size does, and nothing else.
async fn scale_workload(n: usize) -> anyhow::Result<ScaleResult> {
    let out = TempDir::new("bogie-scale-")?;
    let platform = Arc::new(InstantPlatform::new().with_snapshots());
    let flags = TestFlags {
        no_ssh_key_in_user_data: true,
        ..TestFlags::default()
    };
    let selected: Vec<Selected> = (0..n)
        .map(|i| {
            let fail = i % 100 == 99;
            let mut t = Test::new(&format!("scale.t{i:05}"), move |c| async move {
                if fail {
                    bail!("scale test {} fails on purpose", c.name());
                }
                Ok(())
            })
            .flags(flags)
            .distros(&[]);
            if i % 5 == 0 {
                t = t.non_exclusive();
            }
            Selected::Run(t)
        })
        .collect();
    let t0 = Instant::now();
    let key = SshKey::generate();
    let ctx = AttemptContext {
        platform: platform.clone(),
        key,
        key_path: out.path().join("ssh/id_ed25519"),
        out_dir: out.path().to_path_buf(),
        env: TestEnv {
            platform: "instant".into(),
            arch: platform.arch(),
            image: Arc::new(platform.image().clone()),
            version: None,
            provides: Default::default(),
            internet: false,
        },
        default_timeout: Duration::from_secs(60),
        bring_up: BringUp::default(),
        keep: KeepPolicy::None,
        no_avc_checks: false,
        memory_mb: None,
        cancel: CancellationToken::new(),
        extra_keys: Vec::new(),
        ignition_version: bogie_harness::setup::IgnitionVersion::V3,
    };
    let info = RunInfo {
        id: "scale".into(),
        platform: "instant".into(),
        arch: "amd64".into(),
        distro: "cl".into(),
        started: chrono::Utc::now(),
        ..RunInfo::default()
    };
    std::fs::create_dir_all(out.path().join("reports"))?;
    let names: Vec<String> = selected.iter().map(|s| s.test().name.clone()).collect();
    let sink = bogie_reports::jsonl::ResultsSink::create(out.path(), &info, &names)?;
    let opts = ScheduleOptions {
        parallel: 2,
        snapshots: true,
        share_machines: true,
        ..ScheduleOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let runner = tokio::spawn(run_all(ctx, selected, opts, tx));
    while let Some(ev) = rx.recv().await {
        if let Event::Finished(r) = &ev {
            sink.record(r)?;
        }
    }
    let results = runner.await?;
    sink.finish(false)?;
    let mut report = RunReport::new(info, results);
    report.tests.sort_by(|a, b| a.name.cmp(&b.name));
    super::run::write_reports(
        &report,
        out.path(),
        Some(&out.path().join("run.tap")),
        bogie_reports::tap::TapFormat::Kola,
    )?;
    let wall = t0.elapsed();
    let passed = report
        .tests
        .iter()
        .filter(|t| t.status == Status::Pass)
        .count();
    let failed = report
        .tests
        .iter()
        .filter(|t| t.status == Status::Fail)
        .count();
    if passed + failed != n {
        bail!("{n} tests planned, {passed} passed and {failed} failed");
    }
    Ok(ScaleResult {
        tests: n,
        wall_ms: wall.as_secs_f64() * 1000.0,
        peak_rss_kib: peak_rss_kib(),
        passed,
        failed,
    })
}

/// Runs the scale workload in a child process (its peak RSS is its own); with `tmp`, the
/// run's output directory is made there instead of the system's temporary directory.
async fn scale_child(n: usize, tmp: Option<&Path>) -> anyhow::Result<ScaleResult> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["bench", "--scale-child", &n.to_string()])
        .env("RUST_LOG", "error")
        .stderr(Stdio::inherit());
    if let Some(t) = tmp {
        cmd.env("TMPDIR", t);
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        bail!("the scale workload with {n} tests failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    ScaleResult::from_json(line).with_context(|| format!("scale workload output {line:?}"))
}

async fn scale(args: &BenchArgs) -> anyhow::Result<Figure> {
    let base = scale_child(0, None).await?;
    let full = scale_child(args.scale_tests, None).await?;
    // The same workload with its output in memory: what the harness itself costs, apart
    // from the disk's metadata operations (a directory and an Ignition file per test).
    let shm = Path::new("/dev/shm");
    let in_memory = if shm.is_dir() {
        Some(scale_child(args.scale_tests, Some(shm)).await?)
    } else {
        None
    };
    let secs = full.wall_ms / 1000.0;
    let mib = full.peak_rss_kib as f64 / 1024.0;
    let base_mib = base.peak_rss_kib as f64 / 1024.0;
    println!(
        "{} tests: {:.2}s, peak RSS {:.1} MiB ({} passed, {} failed); no tests: {:.3}s, {:.1} MiB",
        full.tests,
        secs,
        mib,
        full.passed,
        full.failed,
        base.wall_ms / 1000.0,
        base_mib
    );
    let mem_note = match &in_memory {
        Some(m) => {
            println!(
                "{} tests with the output on tmpfs (/dev/shm): {:.2}s, peak RSS {:.1} MiB",
                m.tests,
                m.wall_ms / 1000.0,
                m.peak_rss_kib as f64 / 1024.0
            );
            format!(
                "; output on tmpfs {:.2}s, {:.1} MiB",
                m.wall_ms / 1000.0,
                m.peak_rss_kib as f64 / 1024.0
            )
        }
        None => String::new(),
    };
    // The ratio against the 2 s budget, output on the temporary directory's disk (as a
    // real run writes it); memory is checked against its own budget.
    let ratio = secs / 2.0;
    Ok(Figure {
        name: "scale (10,000 tests' wall ÷ 2 s budget)",
        ratio,
        goal: "< 1 and < 100 MB",
        met: secs < 2.0 && mib < 100.0,
        detail: format!(
            "{} tests {:.2}s, peak RSS {:.1} MiB; same process without tests {:.3}s, {:.1} MiB{mem_note}",
            full.tests,
            secs,
            mib,
            base.wall_ms / 1000.0,
            base_mib
        ),
    })
}
