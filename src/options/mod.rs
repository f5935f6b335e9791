//! Flags into options, once. clap parses the command line into `cli.rs`'s structs; each
//! command's options are made here from them, checked (bad input is one line, exit 2),
//! and handed to the command, which never sees [`Global`]. Follow a flag from `cli.rs` to
//! the field it fills here, then to the one place that field is read.

pub mod input;
pub mod userdata;

use std::path::PathBuf;
use std::time::Duration;

use bogie_harness::machine::BringUp;
use bogie_harness::runner::KeepPolicy;
use bogie_harness::select::Filter;
use bogie_harness::{Arch, Config, ImageInfo, Version};
use bogie_platform_qemu::Accel;
use bogie_reports::tap::TapFormat;

use crate::cli::{
    BenchArgs, CheckConsoleArgs, Global, ListArgs, QemuArgs, ReportCommand, RunArgs, SpawnArgs,
};
use crate::cli_cloud::{CloudArgs, GcArgs};
use crate::commands::gating::{self, GatingInputs};
use crate::input_error;
use crate::parse::parse_duration;

/// What to boot, and on which platform: `-p`, `--board`/`--arch`, `--qemu-image`,
/// `--image-version`, the QEMU and cloud flags, `--basename`.
#[derive(Debug, Clone)]
pub struct Target {
    /// The platform, normalised (`qemu-unpriv` is `qemu`, `gcp` is `gce`, ...).
    pub platform: String,
    /// The architecture `--board`/`--arch` name.
    pub arch: Option<Arch>,
    /// `--image-version`, checked once the image is known.
    pub image_version: Option<String>,
    /// The QEMU flags (`--qemu-image` among them; firmware paths resolved on qemu).
    pub qemu: QemuArgs,
    /// The cloud flags.
    pub cloud: CloudArgs,
    /// `--basename`: the prefix of cloud resource names and tags.
    pub basename: String,
    /// `--enable-secureboot` (checked to be on qemu by `run` and `spawn`).
    pub secure_boot: bool,
}

impl Target {
    /// The architecture: from the flags, else the image, else the host.
    pub fn arch_for(&self, image: Option<&ImageInfo>) -> Arch {
        self.arch
            .or_else(|| image.and_then(|i| i.arch))
            .or_else(Arch::host)
            .unwrap_or(Arch::Amd64)
    }

    /// The image version: `--image-version`, else the image's own.
    pub fn version_for(&self, image: Option<&ImageInfo>) -> anyhow::Result<Option<Version>> {
        match &self.image_version {
            Some(v) => Version::parse(v).map(Some).ok_or_else(|| {
                input_error(format!("--image-version {v:?} is not VERSION[+BUILD]"))
            }),
            None => Ok(image.and_then(|i| i.version)),
        }
    }
}

/// Which tests a run plans: kola's distro, channel, offering and stream flags, with the
/// run's patterns and tags.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `--distro`.
    pub distro: String,
    /// `--channel`.
    pub channel: Option<String>,
    /// `--offering`.
    pub offering: Option<String>,
    /// `--stream` (the denylist's stream; `--channel` when absent).
    pub stream: Option<String>,
    /// The test patterns, empty ones dropped.
    pub patterns: Vec<String>,
    /// `--tag` values to require.
    pub tags: Vec<String>,
    /// `--tag '!T'` values to exclude (without the `!`).
    pub exclude_tags: Vec<String>,
    /// `--no-net`.
    pub no_net: bool,
}

impl Selection {
    fn from_flags(g: &Global) -> Selection {
        Selection {
            distro: g.distro.clone(),
            channel: g.channel.clone(),
            offering: g.offering.clone(),
            stream: g.compat.stream.clone(),
            ..Selection::default()
        }
    }

    /// The selection filter on `platform` (denylist and platform-independent are set by
    /// the caller).
    pub fn filter(
        &self,
        platform: &str,
        arch: Arch,
        version: Option<Version>,
        provides: std::collections::BTreeSet<String>,
    ) -> Filter {
        Filter {
            patterns: self.patterns.clone(),
            platform: platform.to_string(),
            arch,
            distro: self.distro.clone(),
            channel: self.channel.clone(),
            offering: self.offering.clone(),
            version,
            provides,
            no_net: self.no_net,
            tags: self.tags.clone(),
            exclude_tags: self.exclude_tags.clone(),
            run_platform_independent: false,
            denylist: Default::default(),
        }
    }
}

/// Where a run writes: `--output-dir`, `--tapfile`, `--tap-version`.
#[derive(Debug, Clone)]
pub struct Output {
    /// `--output-dir` (a fresh `_kola_temp/...` when None).
    pub dir: Option<PathBuf>,
    /// `--tapfile`.
    pub tapfile: Option<PathBuf>,
    /// `--tap-version`.
    pub tap_format: TapFormat,
}

impl Output {
    fn from_flags(g: &Global) -> Output {
        Output {
            dir: g.output_dir.clone(),
            tapfile: g.tapfile.clone(),
            tap_format: g.tap_version,
        }
    }
}

/// `bogie run`'s options.
#[derive(Debug)]
pub struct RunOptions {
    /// What to boot.
    pub target: Target,
    /// Which tests.
    pub selection: Selection,
    /// `--run-platform-independent`.
    pub run_platform_independent: bool,
    /// Where results go.
    pub output: Output,
    /// `-j`: tests at once.
    pub parallel: usize,
    /// `-j auto`: memory-aware admission on qemu.
    pub parallel_auto: bool,
    /// `--timeout`, per test.
    pub timeout: Duration,
    /// `--ssh-timeout` and `--ssh-retries`.
    pub bring_up: BringUp,
    /// `--key` files.
    pub keys: Vec<PathBuf>,
    /// `--remove`, `--keep-failed`.
    pub keep: KeepPolicy,
    /// `--disable-selinux-avc-checks`.
    pub no_avc_checks: bool,
    /// `--ignition-version` (None: the image's default).
    pub ignition_version: Option<bogie_harness::setup::IgnitionVersion>,
    /// `--retries`, at least one with `--rerun`.
    pub retries: u32,
    /// `--retry-harness-failures`.
    pub retry_harness_failures: bool,
    /// `--allow-flaky`.
    pub allow_flaky: bool,
    /// `--snapshot` unless `--no-snapshot`.
    pub snapshots: bool,
    /// `--share` unless `--no-share`.
    pub share: bool,
    /// `--denylist`, `--denylist-test`, `--sharding`, `--durations`, `--baseline`.
    pub gating: GatingInputs,
}

impl RunOptions {
    /// Checks the flags in the order a user meets them, before any image is read.
    pub fn from_flags(g: &Global, args: RunArgs) -> anyhow::Result<RunOptions> {
        let platform = platform_name(g)?;
        input::secure_boot(g, &platform)?;
        let parallel = parallel(g)?;
        let timeout = parse_duration(&args.timeout).ok_or_else(|| {
            input_error(format!("--timeout {:?} is not a duration", args.timeout))
        })?;
        let bring_up = bring_up(g)?;
        let arch = arch_flag(g)?; // flag errors first, before looking at the image
        input::check_output_dir(g)?;
        input::check_tapfile(g)?;
        let gating = GatingInputs::load(&args, &platform)?;
        let qemu = if platform == "qemu" {
            gating::check_files(&g.qemu)?
        } else {
            g.qemu.clone()
        };
        let (exclude_tags, tags): (Vec<String>, Vec<String>) =
            args.tags.iter().cloned().partition(|t| t.starts_with('!'));
        let selection = Selection {
            patterns: input::patterns(&args.patterns),
            tags,
            exclude_tags: exclude_tags
                .into_iter()
                .map(|t| t.trim_start_matches('!').to_string())
                .collect(),
            no_net: args.no_net,
            ..Selection::from_flags(g)
        };
        let keep = if !args.remove {
            KeepPolicy::All
        } else if args.keep_failed {
            KeepPolicy::Failed
        } else {
            KeepPolicy::None
        };
        Ok(RunOptions {
            target: target(g, platform, arch, qemu),
            selection,
            run_platform_independent: args.run_platform_independent,
            output: Output::from_flags(g),
            parallel,
            parallel_auto: g.parallel == "auto",
            timeout,
            bring_up,
            keys: args.key,
            keep,
            no_avc_checks: g.disable_selinux_avc_checks,
            ignition_version: input::ignition_version(g)?,
            retries: args.retries.max(u32::from(args.rerun)),
            retry_harness_failures: args.retry_harness_failures,
            allow_flaky: args.allow_flaky,
            snapshots: args.snapshot && !args.no_snapshot,
            share: args.share && !args.no_share,
            gating,
        })
    }
}

/// `bogie list`'s options.
#[derive(Debug)]
pub struct ListOptions {
    /// The patterns, empty ones dropped.
    pub patterns: Vec<String>,
    /// `--json`.
    pub json: bool,
    /// With `--filter`: what to select for (platform, board, image).
    pub filter: Option<(Target, Selection)>,
    /// `--show-image`: the `--qemu-image` to describe first.
    pub show_image: Option<PathBuf>,
}

impl ListOptions {
    /// The list's options; the target's flags are checked only with `--filter`.
    pub fn from_flags(g: &Global, args: &ListArgs) -> anyhow::Result<ListOptions> {
        let filter = if args.filter {
            let platform = platform_name(g)?;
            let arch = arch_flag(g)?;
            Some((
                target(g, platform, arch, g.qemu.clone()),
                Selection::from_flags(g),
            ))
        } else {
            None
        };
        let show_image = match (&g.qemu.qemu_image, args.show_image) {
            (_, false) => None,
            (Some(p), true) => Some(p.clone()),
            (None, true) => {
                return Err(input_error(
                    "--show-image needs --qemu-image (a manifest.json or a disk image)",
                ))
            }
        };
        Ok(ListOptions {
            patterns: input::patterns(&args.patterns),
            json: args.json,
            filter,
            show_image,
        })
    }
}

/// `bogie spawn`'s options.
#[derive(Debug)]
pub struct SpawnRequest {
    /// What to boot.
    pub target: Target,
    /// `--output-dir`.
    pub output: Output,
    /// `--ssh-timeout` and `--ssh-retries`.
    pub bring_up: BringUp,
    /// `--userdata`, read and checked.
    pub config: Option<Config>,
    /// The subcommand's own flags.
    pub args: SpawnArgs,
}

impl SpawnRequest {
    /// Checks the flags and reads the config, in the order a user meets them, before any
    /// image is read: nothing boots on a bad flag or a malformed config.
    pub fn from_flags(g: &Global, args: SpawnArgs) -> anyhow::Result<SpawnRequest> {
        let platform = platform_name(g)?;
        input::secure_boot(g, &platform)?;
        let config = match &args.userdata {
            Some(f) => Some(userdata::load_userdata(f)?),
            None => None,
        };
        let bring_up = bring_up(g)?;
        let arch = arch_flag(g)?;
        input::check_output_dir(g)?;
        Ok(SpawnRequest {
            target: target(g, platform, arch, g.qemu.clone()),
            output: Output::from_flags(g),
            bring_up,
            config,
            args,
        })
    }
}

/// `bogie bench`'s options: the host and image its own runs use.
#[derive(Debug)]
pub struct BenchOptions {
    /// `--qemu-image` (else `BOGIE_TEST_IMAGE`).
    pub image: Option<PathBuf>,
    /// `--board`, passed on to the bench's runs.
    pub board: Option<String>,
    /// `--qemu-memory`.
    pub memory_mb: Option<u32>,
    /// `--qemu-accel`.
    pub accel: Accel,
    /// The architecture `--board`/`--arch` name.
    pub arch: Option<Arch>,
    /// The subcommand's own flags.
    pub args: BenchArgs,
}

impl BenchOptions {
    /// The bench's options.
    pub fn from_flags(g: &Global, args: BenchArgs) -> anyhow::Result<BenchOptions> {
        if g.enable_secureboot {
            return Err(input_error(
                "--enable-secureboot is not supported by bogie bench (its runs boot the test image's kernel directly)",
            ));
        }
        Ok(BenchOptions {
            image: g.qemu.qemu_image.clone(),
            board: g.board.clone(),
            memory_mb: g.qemu.qemu_memory,
            accel: g.qemu.qemu_accel,
            arch: arch_flag(g)?,
            args,
        })
    }

    /// The architecture for `image`: from the flags, else the image, else the host.
    pub fn arch_for(&self, image: &ImageInfo) -> Arch {
        self.arch
            .or(image.arch)
            .or_else(Arch::host)
            .unwrap_or(Arch::Amd64)
    }
}

/// `bogie gc`'s options.
#[derive(Debug)]
pub struct GcRequest {
    /// The platform and cloud flags.
    pub target: Target,
    /// The subcommand's own flags.
    pub args: GcArgs,
}

impl GcRequest {
    /// The gc's options.
    pub fn from_flags(g: &Global, args: GcArgs) -> anyhow::Result<GcRequest> {
        let platform = platform_name(g)?;
        Ok(GcRequest {
            target: target(g, platform, None, g.qemu.clone()),
            args,
        })
    }
}

/// `bogie check-console`'s options.
#[derive(Debug)]
pub struct CheckConsoleOptions {
    /// `--disable-selinux-avc-checks`.
    pub no_avc_checks: bool,
    /// The files.
    pub args: CheckConsoleArgs,
}

/// `bogie report`'s options.
#[derive(Debug)]
pub struct ReportOptions {
    /// `--tapfile` and `--tap-version` (for `merge`).
    pub output: Output,
    /// The report subcommand.
    pub command: ReportCommand,
}

impl ReportOptions {
    /// The report's options; `merge` writes the `--tapfile`, which is checked first.
    pub fn from_flags(g: &Global, command: ReportCommand) -> anyhow::Result<ReportOptions> {
        if matches!(command, ReportCommand::Merge(_)) {
            input::check_tapfile(g)?;
        }
        Ok(ReportOptions {
            output: Output::from_flags(g),
            command,
        })
    }
}

fn target(g: &Global, platform: String, arch: Option<Arch>, qemu: QemuArgs) -> Target {
    Target {
        platform,
        arch,
        image_version: g.image_version.clone(),
        qemu,
        cloud: g.cloud.clone(),
        basename: g.basename.clone(),
        secure_boot: g.enable_secureboot,
    }
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
pub fn platform_name(g: &Global) -> anyhow::Result<String> {
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

/// The architecture `--board`/`--arch` name (they must agree when both are given).
pub fn arch_flag(g: &Global) -> anyhow::Result<Option<Arch>> {
    let board = |b: &String| -> anyhow::Result<Arch> {
        b.parse().map_err(|e| input_error(format!("--board: {e}")))
    };
    let arch = |a: &String| -> anyhow::Result<Arch> {
        a.parse().map_err(|e| input_error(format!("--arch: {e}")))
    };
    Ok(match (&g.board, &g.arch) {
        (Some(b), Some(a)) => {
            let (b, a) = (board(b)?, arch(a)?);
            if a != b {
                return Err(input_error(format!(
                    "--board {} and --arch {} disagree",
                    b.board(),
                    a
                )));
            }
            Some(a)
        }
        (Some(b), None) => Some(board(b)?),
        (None, Some(a)) => Some(arch(a)?),
        (None, None) => None,
    })
}

/// `-j`: a positive number, or `auto` (the host's cores).
pub fn parallel(g: &Global) -> anyhow::Result<usize> {
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

/// The bring-up timeouts from `--ssh-timeout` (each connect) and `--ssh-retries`.
fn bring_up(g: &Global) -> anyhow::Result<BringUp> {
    let ssh_attempt = parse_duration(&g.ssh_timeout).ok_or_else(|| {
        input_error(format!(
            "--ssh-timeout {:?} is not a duration",
            g.ssh_timeout
        ))
    })?;
    Ok(BringUp {
        ssh_timeout: ssh_attempt
            .saturating_mul(g.ssh_retries.max(1))
            .max(Duration::from_secs(60)),
        ssh_attempt_timeout: ssh_attempt.max(Duration::from_secs(10)),
        ..BringUp::default()
    })
}
