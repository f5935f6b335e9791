//! Subcommand implementations, one module per subcommand; shared helpers here.

pub mod bench;
pub mod check_console;
pub mod down;
pub mod gating;
pub mod gc;
pub mod input;
pub mod list;
pub mod report;
pub mod spawn;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bogie_harness::cluster::BringUp;
use bogie_harness::runner::{AttemptContext, KeepPolicy};
use bogie_harness::schedule::{run_all, Event, ScheduleOptions};
use bogie_harness::select::{select, Filter, Selected};
use bogie_harness::ssh::SshKey;
use bogie_harness::{Arch, ImageInfo, Platform, PlatformError, Registry, TestEnv, Version};
use bogie_reports::{RunInfo, RunReport};
use tokio_util::sync::CancellationToken;

use crate::cli::{self, Cli, Command, Global, RunArgs};
use crate::input_error;
use crate::progress::Progress;

/// Runs the chosen subcommand with the shipped catalog; returns the exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    dispatch_with(cli, bogie_tests_catalog::registry()).await
}

/// Runs the chosen subcommand with `registry` as the test catalog.
pub async fn dispatch_with(cli: Cli, registry: Registry) -> anyhow::Result<u8> {
    if matches!(
        cli.command,
        Command::Run(_) | Command::Spawn(_) | Command::Bench(_)
    ) {
        input::refuse_unsupported(&cli.global)?;
    }
    match cli.command {
        Command::Run(args) => {
            let registry = with_external(registry, &args.exttest)?;
            run(&cli.global, args, &registry).await
        }
        Command::List(args) => {
            let registry = with_external(registry, &args.exttest)?;
            list::list(&cli.global, args, &registry)
        }
        Command::CheckConsole(args) => check_console::check_console(&cli.global, args),
        Command::Spawn(args) => spawn::spawn(&cli.global, args).await,
        Command::Down(args) => down::down(&cli.global, args),
        Command::Report(cmd) => report::report(&cli.global, cmd),
        Command::Gc(args) => gc::gc(&cli.global, args).await,
        Command::Bench(args) => bench::bench(&cli.global, args).await,
    }
}

/// `registry` plus the external tests of every `-E DIR` (bad ones are input errors).
fn with_external(mut registry: Registry, dirs: &[PathBuf]) -> anyhow::Result<Registry> {
    let tests = bogie_harness::external::load(dirs).map_err(|e| input_error(e.to_string()))?;
    for t in tests {
        registry
            .register(t)
            .map_err(|e| input_error(format!("-E: {e}")))?;
    }
    Ok(registry)
}

const KNOWN_PLATFORMS: &[&str] = &[
    "qemu",
    "qemu-unpriv",
    "aws",
    "azure",
    "gce",
    "gcp",
    "equinix",
    "equinixmetal",
    "packet",
    "external",
    "pxe",
    "do",
    "esx",
    "openstack",
    "hetzner",
    "akamai",
    "brightbox",
    "scaleway",
    "stackit",
    "oraclecloud",
];

/// Normalises and checks `--platform`.
pub(crate) fn platform_name(g: &Global) -> anyhow::Result<String> {
    let p = g.platform.as_str();
    if !KNOWN_PLATFORMS.contains(&p) {
        return Err(input_error(format!(
            "unknown platform {p:?} (known: qemu, aws, azure, gce, equinix, external, pxe)"
        )));
    }
    Ok(match p {
        "qemu-unpriv" => "qemu".to_string(),
        "gcp" => "gce".to_string(),
        "equinixmetal" | "packet" => "equinix".to_string(),
        other => other.to_string(),
    })
}

/// The architecture from --board/--arch, else the image, else the host.
pub(crate) fn resolve_arch(g: &Global, image: Option<&ImageInfo>) -> anyhow::Result<Arch> {
    let given = match (&g.board, &g.arch) {
        (Some(b), Some(a)) => {
            let (b, a): (Arch, Arch) = (
                b.parse()
                    .map_err(|e| input_error(format!("--board: {e}")))?,
                a.parse().map_err(|e| input_error(format!("--arch: {e}")))?,
            );
            if a != b {
                return Err(input_error(format!(
                    "--board {} and --arch {} disagree",
                    b.board(),
                    a
                )));
            }
            Some(a)
        }
        (Some(x), None) => Some(
            x.parse()
                .map_err(|e| input_error(format!("--board: {e}")))?,
        ),
        (None, Some(x)) => Some(x.parse().map_err(|e| input_error(format!("--arch: {e}")))?),
        (None, None) => None,
    };
    Ok(given
        .or_else(|| image.and_then(|i| i.arch))
        .or_else(Arch::host)
        .unwrap_or(Arch::Amd64))
}

pub(crate) fn parallel(g: &Global) -> anyhow::Result<usize> {
    if g.parallel == "auto" {
        return Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1));
    }
    match g.parallel.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(input_error(format!(
            "--parallel takes a positive number or `auto`, not {:?}",
            g.parallel
        ))),
    }
}

pub(crate) fn load_image(g: &Global) -> anyhow::Result<ImageInfo> {
    let Some(path) = &g.qemu.qemu_image else {
        return Err(input_error(
            "no image given: pass --qemu-image (a manifest.json from ci/build-test-image, or a disk image)",
        ));
    };
    let image = ImageInfo::load(path).map_err(|e| input_error(e.to_string()))?;
    if image.manifest.is_none() {
        let problem = bogie_platform_qemu::detect::not_a_disk_image(path)
            .map_err(|e| input_error(format!("--qemu-image {}: {e}", path.display())))?;
        if let Some(why) = problem {
            return Err(input_error(format!(
                "--qemu-image {}: not a bogie manifest.json, a qcow2 or a raw disk image: {why}",
                path.display()
            )));
        }
    }
    Ok(image)
}

pub(crate) fn image_version(
    g: &Global,
    image: Option<&ImageInfo>,
) -> anyhow::Result<Option<Version>> {
    match &g.image_version {
        Some(v) => Version::parse(v)
            .map(Some)
            .ok_or_else(|| input_error(format!("--image-version {v:?} is not VERSION[+BUILD]"))),
        None => Ok(image.and_then(|i| i.version)),
    }
}

pub(crate) fn make_platform(
    g: &Global,
    name: &str,
    image: &ImageInfo,
    arch: Arch,
    parallel: usize,
) -> anyhow::Result<Arc<dyn Platform>> {
    match name {
        "qemu" => {
            let mut o = bogie_platform_qemu::QemuOptions::new(image.clone(), arch);
            o.firmware = g.qemu.qemu_firmware.clone();
            o.ovmf_vars = g.qemu.qemu_ovmf_vars.clone();
            o.skip_mangle = g.qemu.qemu_skip_mangle;
            o.accel = g.qemu.qemu_accel;
            if let Some(m) = g.qemu.qemu_memory {
                o.memory_mb = m;
            }
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            o.cpus = g
                .qemu
                .qemu_cpus
                .unwrap_or_else(|| (cores / parallel.max(1)).max(1) as u32);
            if let Some(opts) = &g.qemu.qemu_options {
                o.qemu_options = serde_json::from_str(opts).map_err(|e| {
                    input_error(format!(
                        "--qemu-options must be a JSON array of strings: {e}"
                    ))
                })?;
            }
            let p = bogie_platform_qemu::QemuPlatform::new(o).map_err(platform_input)?;
            Ok(Arc::new(p))
        }
        cloud if crate::cli_cloud::handles(cloud) => {
            crate::cli_cloud::make_platform(g, cloud, image, arch, parallel)
        }
        other => Err(input_error(format!(
            "platform {other:?} is not built into this bogie yet"
        ))),
    }
}

fn platform_input(e: PlatformError) -> anyhow::Error {
    match e {
        PlatformError::Input(m) => input_error(m),
        other => anyhow::Error::new(other),
    }
}

fn default_output_dir(platform: &str) -> PathBuf {
    let stamp = chrono::Local::now().format("%Y-%m-%d-%H%M");
    PathBuf::from("_kola_temp").join(format!("{platform}-{stamp}-{}", std::process::id()))
}

pub(crate) fn prepare_output_dir(g: &Global, platform: &str) -> anyhow::Result<PathBuf> {
    let out = match &g.output_dir {
        Some(d) => d.clone(),
        None => {
            let d = default_output_dir(platform);
            std::fs::create_dir_all(&d)?;
            let link = PathBuf::from("_kola_temp").join(format!("{platform}-latest"));
            let _ = std::fs::remove_file(&link);
            if let Some(name) = d.file_name() {
                let _ = std::os::unix::fs::symlink(name, &link);
            }
            d
        }
    };
    let named = |e: std::io::Error| {
        let flag = if g.output_dir.is_some() {
            "--output-dir"
        } else {
            "output directory"
        };
        input_error(format!("{flag} {}: {e}", out.display()))
    };
    std::fs::create_dir_all(out.join("reports")).map_err(named)?;
    std::fs::write(out.join(".harness_temp"), b"").map_err(named)?;
    Ok(std::fs::canonicalize(&out).unwrap_or(out))
}

/// The selection filter from kola's flags (denylist and platform-independent are set by
/// the caller).
#[allow(clippy::too_many_arguments)]
pub(crate) fn filter_for(
    g: &Global,
    platform: &str,
    arch: Arch,
    version: Option<Version>,
    provides: BTreeSet<String>,
    patterns: Vec<String>,
    tags: &[String],
    no_net: bool,
) -> Filter {
    let (exclude_tags, tags): (Vec<String>, Vec<String>) =
        tags.iter().cloned().partition(|t| t.starts_with('!'));
    Filter {
        patterns,
        platform: platform.to_string(),
        arch,
        distro: g.distro.clone(),
        channel: g.channel.clone(),
        offering: g.offering.clone(),
        version,
        provides,
        no_net,
        tags,
        exclude_tags: exclude_tags
            .into_iter()
            .map(|t| t.trim_start_matches('!').to_string())
            .collect(),
        run_platform_independent: false,
        denylist: Default::default(),
    }
}

async fn run(g: &Global, args: RunArgs, registry: &Registry) -> anyhow::Result<u8> {
    let stats = Arc::new(bogie_harness::snapshot::BootStats::default());
    run_counted(g, args, registry, stats).await
}

/// `bogie run`, counting machine starts in `stats` (for `bogie bench`).
pub(crate) async fn run_counted(
    g: &Global,
    args: RunArgs,
    registry: &Registry,
    stats: Arc<bogie_harness::snapshot::BootStats>,
) -> anyhow::Result<u8> {
    let platform_name = platform_name(g)?;
    let par = parallel(g)?;
    let timeout = cli::parse_duration(&args.timeout)
        .ok_or_else(|| input_error(format!("--timeout {:?} is not a duration", args.timeout)))?;
    let ssh_attempt = cli::parse_duration(&g.ssh_timeout).ok_or_else(|| {
        input_error(format!(
            "--ssh-timeout {:?} is not a duration",
            g.ssh_timeout
        ))
    })?;
    resolve_arch(g, None)?; // flag errors first, before looking at the image
    input::check_output_dir(g)?;
    input::check_tapfile(g)?;
    let gating = gating::GatingInputs::load(&args)?;
    let g = &if platform_name == "qemu" {
        gating::check_files(g)?
    } else {
        g.clone()
    };
    // Clouds boot their own image (an AMI, ...): --qemu-image only describes it, if given.
    let image = if crate::cli_cloud::needs_local_image(&platform_name) {
        load_image(g)?
    } else {
        crate::cli_cloud::remote_image(g, &platform_name)?
    };
    let arch = resolve_arch(g, Some(&image))?;
    let version = image_version(g, Some(&image))?;
    // Validate the selection before booting anything.
    let platform = make_platform(g, &platform_name, &image, arch, par)?;
    let mut provides = image.provides.clone();
    provides.extend(platform.capabilities());
    let mut filter = filter_for(
        g,
        &platform_name,
        arch,
        version,
        provides.clone(),
        input::patterns(&args.patterns),
        &args.tags,
        args.no_net,
    );
    filter.run_platform_independent = args.run_platform_independent;
    filter.denylist = gating.resolve_denylist(g, arch, &platform_name);
    let mut selected = select(registry.tests(), &filter).map_err(|e| input_error(e.to_string()))?;

    let (key, extra_keys) = keys(&args.key)?;
    let out = prepare_output_dir(g, &platform_name)?;
    let key_path = out.join("ssh").join("id_ed25519");
    std::fs::create_dir_all(out.join("ssh"))?;
    key.write(&key_path)?;

    let mut info = RunInfo {
        id: format!("{:016x}", rand_id()),
        platform: platform_name.clone(),
        arch: arch.as_str().to_string(),
        version: version.map(|v| v.to_string()).unwrap_or_else(|| {
            image
                .manifest
                .as_ref()
                .map(|m| m.version.clone())
                .unwrap_or_default()
        }),
        distro: g.distro.clone(),
        channel: g.channel.clone().unwrap_or_default(),
        image: image.path.display().to_string(),
        shard: gating.sharding.map(|s| s.to_string()),
        cmdline: std::env::args()
            .map(|a| bogie_platform_common::redact(&a))
            .collect(),
        started: chrono::Utc::now(),
    };

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let keep = if !args.remove {
        KeepPolicy::All
    } else if args.keep_failed {
        KeepPolicy::Failed
    } else {
        KeepPolicy::None
    };
    let mut ctx = AttemptContext {
        platform: platform.clone(),
        key: key.clone(),
        key_path: key_path.clone(),
        out_dir: out.clone(),
        env: TestEnv {
            platform: platform_name.clone(),
            arch,
            image: Arc::new(image.clone()),
            version,
            provides,
            internet: !args.no_net,
        },
        default_timeout: timeout,
        bring_up: BringUp {
            ssh_timeout: ssh_attempt
                .saturating_mul(g.ssh_retries.max(1))
                .max(Duration::from_secs(60)),
            ssh_attempt_timeout: ssh_attempt.max(Duration::from_secs(10)),
            ..BringUp::default()
        },
        keep,
        no_avc_checks: g.disable_selinux_avc_checks,
        memory_mb: g.qemu.qemu_memory,
        cancel: cancel.clone(),
        extra_keys,
    };
    // kola: with no version from the flags or the manifest, read it from a booted machine,
    // when a test's version range would matter (not for a non-Flatcar test image: its
    // version is unknown, not older than every Flatcar release).
    if version.is_none()
        && image.has_flatcar_versions()
        && selected.iter().any(
            |s| matches!(s, Selected::Run(t) if t.min_version.is_some() || t.end_version.is_some()),
        )
    {
        let v = gating::probe_version(&ctx).await?;
        eprintln!("image version {v} (from /etc/os-release of a booted machine)");
        ctx.env.version = Some(v);
        info.version = v.to_string();
        filter.version = Some(v);
        selected = select(registry.tests(), &filter).map_err(|e| input_error(e.to_string()))?;
    }
    if let Some(s) = &gating.sharding {
        selected = bogie_harness::shard::apply(selected, s, &gating.durations);
    }
    if args.share && !args.no_share {
        bogie_harness::external::merge_shared_configs(&mut selected);
    }
    // The selection goes first and the end record last, so a killed run's results say which
    // tests never reported, and such a run cannot pass `bogie report merge`.
    let names: Vec<String> = selected.iter().map(|s| s.test().name.clone()).collect();
    let sink = bogie_reports::jsonl::ResultsSink::create(&out, &info, &names)
        .context("creating results.jsonl")?;
    let opts = ScheduleOptions {
        parallel: par,
        retries: args.retries.max(u32::from(args.rerun)),
        retry_harness_failures: args.retry_harness_failures,
        warn_only: gating::warn_only(&selected, &filter.denylist),
        durations: gating.durations.clone(),
        admission: (g.parallel == "auto" && platform_name == "qemu")
            .then(bogie_harness::admission::Admission::from_proc_meminfo),
        default_memory_mb: 1024,
        snapshots: args.snapshot && !args.no_snapshot,
        share_machines: args.share && !args.no_share,
        stats: Some(stats.clone()),
    };
    let planned = selected
        .iter()
        .filter(|s| matches!(s, Selected::Run(_)))
        .count();
    let mut progress = Progress::new(selected.len(), planned);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let runner = tokio::spawn(run_all(ctx, selected, opts, tx));
    while let Some(ev) = rx.recv().await {
        if let Event::Finished(r) = &ev {
            if let Err(e) = sink.record(r) {
                tracing::error!(error = %e, "writing results.jsonl");
            }
        }
        progress.event(&ev);
    }
    let results = runner.await.context("the scheduler panicked")?;
    let interrupted = cancel.is_cancelled();
    if let Err(e) = sink.finish(interrupted) {
        tracing::error!(error = %e, "writing results.jsonl");
    }
    let _ = platform.shutdown().await;
    progress.finish();

    let mut report = RunReport::new(info, results);
    if interrupted {
        report.end = bogie_reports::RunEnd::Interrupted;
    }
    report.tests.sort_by(|a, b| a.name.cmp(&b.name));
    write_reports(&report, &out, g.tapfile.as_deref(), g.tap_version)?;
    crate::progress::print_summary(&report, &out, &key_path);
    let c = stats.counts();
    if c.restored + c.reused > 0 {
        println!(
            "machines: {} booted, {} started from snapshots, {} tests on shared machines",
            c.cold, c.restored, c.reused
        );
    }
    gating::print_flaky_note(&report, args.allow_flaky);
    if let Some(old) = &gating.baseline {
        println!();
        print!(
            "{}",
            bogie_reports::diff::diff_runs(old, &report).render_text()
        );
    }
    if cancel.is_cancelled() {
        eprintln!(
            "interrupted: results of finished tests are in {}",
            out.display()
        );
        return Ok(1);
    }
    Ok(gate(&report, args.allow_flaky))
}

/// The run's key pair and extra public keys from `--key` files: public keys are added to
/// machines, a private key replaces the ephemeral run key. The user's ~/.ssh is never read.
pub(crate) fn keys(files: &[PathBuf]) -> anyhow::Result<(SshKey, Vec<String>)> {
    let mut run_key = None;
    let mut extra = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| input_error(format!("--key {}: {e}", f.display())))?;
        if text.contains("PRIVATE KEY") {
            run_key = Some(
                SshKey::load(f).map_err(|e| input_error(format!("--key {}: {e}", f.display())))?,
            );
        } else {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if !line.starts_with("ssh-") && !line.starts_with("ecdsa-") {
                    return Err(input_error(format!(
                        "--key {}: not an OpenSSH public or private key",
                        f.display()
                    )));
                }
                extra.push(line.to_string());
            }
        }
    }
    Ok((run_key.unwrap_or_else(SshKey::generate), extra))
}

pub use gating::gate;

/// The exit code of a finished run with flaky tests allowed: 0, 1 or 77 (see [`gate`]).
pub fn exit_code(report: &RunReport) -> u8 {
    gate(report, true)
}

pub(crate) fn write_reports(
    report: &RunReport,
    out: &Path,
    tap: Option<&Path>,
    tap_format: bogie_reports::tap::TapFormat,
) -> anyhow::Result<()> {
    let dir = out.join("reports");
    bogie_reports::junit::write_junit(report, dir.join("junit.xml"))?;
    bogie_reports::kola_json::write_report_json(report, dir.join("report.json"))?;
    if let Some(t) = tap {
        bogie_reports::tap::write_tap(report, t, tap_format)?;
    }
    Ok(())
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Ctrl-C/SIGTERM cancel the run (machines are torn down); a second one exits at once
/// (QEMU dies with its parent through PDEATHSIG).
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            count += 1;
            if count == 1 {
                eprintln!("\ninterrupted: tearing down machines (again to exit at once)");
                cancel.cancel();
            } else {
                bogie_harness::snapshot::remove_all_templates_now();
                std::process::exit(130);
            }
        }
    });
}
