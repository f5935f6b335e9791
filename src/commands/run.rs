//! `bogie run`: set up the image and platform, select, prepare the output directory and
//! keys, schedule the tests, write the reports and give the verdict. Each step is one
//! function below, in that order.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bogie_harness::runner::AttemptContext;
use bogie_harness::schedule::{run_all, Event, ScheduleOptions};
use bogie_harness::select::{select, Filter, Selected};
use bogie_harness::setup::IgnitionVersion;
use bogie_harness::snapshot::BootStats;
use bogie_harness::ssh::SshKey;
use bogie_harness::{Arch, ImageInfo, Platform, Registry, TestEnv, Version};
use bogie_reports::{RunInfo, RunReport, TestResult};
use tokio_util::sync::CancellationToken;

use super::gating;
use crate::input_error;
use crate::options::RunOptions;
use crate::progress::Progress;
use crate::setup::{keys, make_platform, prepare_output_dir, rand_id, target_image, write_key};

/// What the run boots: the image, its architecture and version, the platform, and the
/// capabilities of both.
struct Booted {
    image: ImageInfo,
    arch: Arch,
    version: Option<Version>,
    platform: Arc<dyn Platform>,
    provides: std::collections::BTreeSet<String>,
}

/// `bogie run`, counting machine starts in `stats` (for `bogie bench`); returns the exit
/// code.
pub async fn run(o: &RunOptions, registry: &Registry, stats: Arc<BootStats>) -> anyhow::Result<u8> {
    let booted = set_up(o)?;
    // Validate the selection before booting anything.
    let mut filter = o.selection.filter(
        &o.target.platform,
        booted.arch,
        booted.version,
        booted.provides.clone(),
    );
    filter.run_platform_independent = o.run_platform_independent;
    // The denylist's stream is `--stream`, else `--channel`.
    let stream = o.selection.stream.clone().or(o.selection.channel.clone());
    filter.denylist = o
        .gating
        .resolve_denylist(stream, booted.arch, &o.target.platform);
    let mut selected = choose(registry, &filter)?;

    let (key, extra_keys) = keys(&o.keys)?;
    let out = prepare_output_dir(&o.output, &o.target.platform)?;
    let key_path = write_key(&key, &out)?;
    let mut info = run_info(o, &booted);
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let mut ctx = attempt_context(o, &booted, key, &key_path, &out, &cancel, extra_keys);
    // kola: with no version from the flags or the manifest, read it from a booted machine,
    // when a test's version range would matter (not for a non-Flatcar test image: its
    // version is unknown, not older than every Flatcar release).
    if booted.version.is_none() && booted.image.has_flatcar_versions() && ranges_matter(&selected) {
        let v = gating::probe_version(&ctx).await?;
        eprintln!("image version {v} (from /etc/os-release of a booted machine)");
        ctx.env.version = Some(v);
        info.version = v.to_string();
        filter.version = Some(v);
        selected = choose(registry, &filter)?;
    }
    if let Some(s) = &o.gating.sharding {
        selected = bogie_harness::shard::apply(selected, s, &o.gating.durations);
    }
    if o.share {
        for b in bogie_harness::buckets::merge_buckets(&mut selected, o.target.qemu.qemu_memory) {
            tracing::info!(tests = %b.join(" "), "one merged config for a bucket of non-exclusive tests");
        }
    }
    let platform = booted.platform.clone();
    let (results, mut progress) = execute(o, ctx, selected, &filter, &out, &info, &stats).await?;
    let interrupted = cancel.is_cancelled();
    let _ = platform.shutdown().await;
    progress.finish();
    let end = End {
        interrupted,
        cancel: &cancel,
        out: &out,
        key_path: &key_path,
    };
    conclude(o, info, results, end, &stats)
}

/// The image, architecture, version and platform, checked before anything boots.
fn set_up(o: &RunOptions) -> anyhow::Result<Booted> {
    // Clouds boot their own image (an AMI, ...): --qemu-image only describes it, if given.
    let image = target_image(&o.target)?;
    let arch = o.target.arch_for(Some(&image));
    let version = o.target.version_for(Some(&image))?;
    let platform = make_platform(&o.target, &image, arch, o.parallel)?;
    let mut provides = image.provides.clone();
    provides.extend(platform.capabilities());
    Ok(Booted {
        image,
        arch,
        version,
        platform,
        provides,
    })
}

fn choose(registry: &Registry, filter: &Filter) -> anyhow::Result<Vec<Selected>> {
    select(registry.tests(), filter).map_err(|e| input_error(e.to_string()))
}

/// Whether a planned test has a version range (then the image's version matters).
fn ranges_matter(selected: &[Selected]) -> bool {
    selected.iter().any(
        |s| matches!(s, Selected::Run(t) if t.min_version.is_some() || t.end_version.is_some()),
    )
}

fn run_info(o: &RunOptions, b: &Booted) -> RunInfo {
    RunInfo {
        id: format!("{:016x}", rand_id()),
        platform: o.target.platform.clone(),
        arch: b.arch.as_str().to_string(),
        version: b.version.map(|v| v.to_string()).unwrap_or_else(|| {
            b.image
                .manifest
                .as_ref()
                .map(|m| m.version.clone())
                .unwrap_or_default()
        }),
        distro: o.selection.distro.clone(),
        channel: o.selection.channel.clone().unwrap_or_default(),
        image: b.image.path.display().to_string(),
        shard: o.gating.sharding.map(|s| s.to_string()),
        cmdline: std::env::args()
            .map(|a| bogie_platform_common::redact(&a))
            .collect(),
        started: chrono::Utc::now(),
    }
}

fn attempt_context(
    o: &RunOptions,
    b: &Booted,
    key: SshKey,
    key_path: &Path,
    out: &Path,
    cancel: &CancellationToken,
    extra_keys: Vec<String>,
) -> AttemptContext {
    AttemptContext {
        platform: b.platform.clone(),
        key,
        key_path: key_path.to_path_buf(),
        out_dir: out.to_path_buf(),
        env: TestEnv {
            platform: o.target.platform.clone(),
            arch: b.arch,
            image: Arc::new(b.image.clone()),
            version: b.version,
            provides: b.provides.clone(),
            internet: !o.selection.no_net,
        },
        default_timeout: o.timeout,
        bring_up: o.bring_up,
        keep: o.keep,
        no_avc_checks: o.no_avc_checks,
        memory_mb: o.target.qemu.qemu_memory,
        cancel: cancel.clone(),
        extra_keys,
        ignition_version: o.ignition_version.unwrap_or_else(|| {
            IgnitionVersion::default_for(b.provides.contains("flatcar"), b.version.as_ref())
        }),
    }
}

/// Schedules the selection; every result goes into `results.jsonl` as it arrives and to
/// the progress display. The selection goes first and the end record last, so a killed
/// run's results say which tests never reported, and such a run cannot pass
/// `bogie report merge`.
async fn execute(
    o: &RunOptions,
    ctx: AttemptContext,
    selected: Vec<Selected>,
    filter: &Filter,
    out: &Path,
    info: &RunInfo,
    stats: &Arc<BootStats>,
) -> anyhow::Result<(Vec<TestResult>, Progress)> {
    let cancel = ctx.cancel.clone();
    let names: Vec<String> = selected.iter().map(|s| s.test().name.clone()).collect();
    let sink = bogie_reports::jsonl::ResultsSink::create(out, info, &names)
        .context("creating results.jsonl")?;
    let opts = ScheduleOptions {
        parallel: o.parallel,
        retries: o.retries,
        retry_harness_failures: o.retry_harness_failures,
        warn_only: gating::warn_only(&selected, &filter.denylist),
        durations: o.gating.durations.clone(),
        admission: (o.parallel_auto && o.target.platform == "qemu")
            .then(bogie_harness::admission::Admission::from_proc_meminfo),
        default_memory_mb: 1024,
        snapshots: o.snapshots,
        share_machines: o.share,
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
    if let Err(e) = sink.finish(cancel.is_cancelled()) {
        tracing::error!(error = %e, "writing results.jsonl");
    }
    Ok((results, progress))
}

/// How the run ended, and where its files are.
struct End<'a> {
    interrupted: bool,
    cancel: &'a CancellationToken,
    out: &'a Path,
    key_path: &'a Path,
}

/// Writes the reports, prints the summary (machines, flaky note, baseline diff) and gives
/// the exit code.
fn conclude(
    o: &RunOptions,
    info: RunInfo,
    results: Vec<TestResult>,
    end: End<'_>,
    stats: &BootStats,
) -> anyhow::Result<u8> {
    let (out, key_path) = (end.out, end.key_path);
    let mut report = RunReport::new(info, results);
    if end.interrupted {
        report.end = bogie_reports::RunEnd::Interrupted;
    }
    report.tests.sort_by(|a, b| a.name.cmp(&b.name));
    write_reports(
        &report,
        out,
        o.output.tapfile.as_deref(),
        o.output.tap_format,
    )?;
    crate::progress::print_summary(&report, out, key_path);
    let c = stats.counts();
    if c.restored + c.reused > 0 {
        println!(
            "machines: {} booted, {} started from snapshots, {} tests on shared machines",
            c.cold, c.restored, c.reused
        );
    }
    gating::print_flaky_note(&report, o.allow_flaky);
    if let Some(old) = &o.gating.baseline {
        println!();
        print!(
            "{}",
            bogie_reports::diff::diff_runs(old, &report).render_text()
        );
    }
    if end.cancel.is_cancelled() {
        eprintln!(
            "interrupted: results of finished tests are in {}",
            out.display()
        );
        return Ok(1);
    }
    Ok(gating::gate(&report, o.allow_flaky))
}

/// Writes `reports/junit.xml`, `reports/report.json` and the `--tapfile`, each atomically.
pub fn write_reports(
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
