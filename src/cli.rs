//! The command line: a superset of kola's, so release scripts switch by changing one word.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::parse::parse_duration;

/// bogie: boots container-OS images (Flatcar, Fedora CoreOS style) on QEMU, clouds and bare
/// metal, runs kola's tests over SSH and writes JUnit, TAP, kola JSON and failure matrices.
///
/// kola's command lines work unchanged but for the program's name:
/// `bogie run --board=amd64-usr --parallel=2 --platform=qemu --qemu-image=IMG --tapfile=F
/// --image-version V 'cl.*'`.
///
/// Summary: every run ends with one line per failed or warned test (class, reason,
/// artifacts) and the counts `N passed, N failed, N flaky, N skipped, N warned`; flaky
/// tests (failed, then passed on a rerun) are counted apart from passes.
///
/// Exit codes:
///   0   every test that ran passed (flaky counts as passed, with a warning, unless
///       --allow-flaky=false);
///   1   a test failed (or was flaky with --allow-flaky=false), or the run was interrupted;
///   2   bad input: unknown flag, test, platform or flag of a platform not built in, a
///       kola flag bogie does not support yet, missing, wrong-arch or non-disk image,
///       unwritable --output-dir or --tapfile, malformed denylist, Ignition or --sharding;
///   77  only tests denylisted with `warn: true` failed (coreos-assembler's code).
/// `bogie report merge` exits like the merged run; `bogie report diff` exits 1 when the new
/// run has failures the baseline did not have.
#[derive(Debug, Parser)]
#[command(
    name = "bogie",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every subcommand accepts (kola's persistent flags).
    #[command(flatten)]
    pub global: Global,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// kola's persistent flags.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Platform: qemu (alias qemu-unpriv), aws, azure, gce, equinix, external, pxe.
    #[arg(short = 'p', long, global = true, default_value = "qemu")]
    pub platform: String,
    /// Tests to run at once; `auto` = the CPU count, admitted by free memory.
    #[arg(short = 'j', long, global = true, default_value = "1")]
    pub parallel: String,
    /// Distro: cl (Flatcar), fcos, rhcos.
    #[arg(short = 'b', long, global = true, default_value = "cl")]
    pub distro: String,
    /// Channel: alpha, beta, stable, edge, lts.
    #[arg(long, global = true)]
    pub channel: Option<String>,
    /// Offering: basic, pro.
    #[arg(long, global = true)]
    pub offering: Option<String>,
    /// Board: amd64-usr or arm64-usr (kola's spelling).
    #[arg(long, global = true)]
    pub board: Option<String>,
    /// Architecture: amd64/x86_64 or arm64/aarch64 (coreos-assembler's spelling of --board).
    #[arg(long, global = true)]
    pub arch: Option<String>,
    /// Image version, VERSION[+BUILD]; read from the image manifest when not given.
    #[arg(long, global = true)]
    pub image_version: Option<String>,
    /// Output directory (default `_kola_temp/<platform>-<date>-<pid>`, with a `-latest` link).
    #[arg(long, global = true)]
    pub output_dir: Option<PathBuf>,
    /// Write a TAP report to this path (its directory must exist).
    #[arg(long, global = true)]
    pub tapfile: Option<PathBuf>,
    /// The TAP dialect of `--tapfile` (and a merge's `test.tap`): `kola` (kola's, no version
    /// line: what Flatcar CI's tapfile_helper_lib.sh ingests) or `13` (`TAP version 13`
    /// first, for TAP 13 parsers such as tap.py and node's tap-parser, which then read the
    /// YAML blocks).
    #[arg(long, global = true, default_value = "kola")]
    pub tap_version: bogie_reports::tap::TapFormat,
    /// Prefix of cloud resource names.
    #[arg(long, global = true, default_value = "bogie")]
    pub basename: String,
    /// SSH bring-up: connect attempts (kola: 60).
    #[arg(long, global = true, default_value_t = 60)]
    pub ssh_retries: u32,
    /// SSH bring-up: timeout of one connect attempt, e.g. `10s`.
    #[arg(long, global = true, default_value = "10s")]
    pub ssh_timeout: String,
    /// Ignition spec of the config machines get when their test gives none: v2 or v3.
    /// Default: v2 for Flatcar releases before 3185 (whose Ignition reads spec 1 and 2
    /// only), v3 otherwise. A test's own config is passed as it is written.
    #[arg(long, global = true)]
    pub ignition_version: Option<String>,
    /// Boot with UEFI Secure Boot enforced (qemu, amd64, a disk booted through firmware):
    /// the `--qemu-firmware`/`--qemu-ovmf-vars` pair, else Debian's OVMF with Secure Boot
    /// (`OVMF_CODE_4M.secboot.fd`, `OVMF_VARS_4M.ms.fd`), on `q35` with SMM.
    #[arg(long, global = true)]
    pub enable_secureboot: bool,
    /// Don't fail tests on SELinux AVC denials.
    #[arg(long, global = true)]
    pub disable_selinux_avc_checks: bool,
    /// More kola and coreos-assembler flags release pipelines pass.
    #[command(flatten)]
    pub compat: CompatArgs,
    /// More logging (-v info, -vv debug).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Debug logging.
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// Log level or tracing filter (`debug`, `bogie_harness=trace`).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// QEMU options.
    #[command(flatten)]
    pub qemu: QemuArgs,
    /// Cloud and bare-metal platform options (`--aws-*`, `--azure-*`, `--gce-*`,
    /// `--equinixmetal-*`, `--external-*`, `--pxe-*`).
    #[command(flatten)]
    pub cloud: crate::cli_cloud::CloudArgs,
}

/// QEMU flags (kola's spelling).
#[derive(Debug, Args, Clone, Default)]
pub struct QemuArgs {
    /// The image: a bogie image manifest (manifest.json from ci/build-test-image) or a plain
    /// disk image (a Flatcar .bin/.img/.qcow2, booted through firmware).
    #[arg(long, global = true)]
    pub qemu_image: Option<PathBuf>,
    /// Firmware file (amd64 default: QEMU's SeaBIOS; arm64: AAVMF code).
    #[arg(long, global = true, alias = "qemu-bios")]
    pub qemu_firmware: Option<PathBuf>,
    /// UEFI variables template, copied per machine.
    #[arg(long, global = true)]
    pub qemu_ovmf_vars: Option<PathBuf>,
    /// kola's "don't modify the image": boot a raw disk as it is. Without it a raw disk
    /// with an ext2/3/4 or FAT OEM partition boots from a private copy whose OEM grub.cfg
    /// sets the serial console, as kola does (a qcow2 always boots as it is).
    #[arg(long, global = true)]
    pub qemu_skip_mangle: bool,
    /// Grow each machine's primary disk by this much (kola's flag: bytes, or `5G`, `512M`;
    /// 1024-based): its qcow2 overlay is made bigger than the image's disk.
    #[arg(long, global = true)]
    pub qemu_grow_base_disk_by: Option<String>,
    /// Memory per machine in MiB (default 1024; at least 256).
    #[arg(long, global = true, value_name = "MiB", value_parser = parse_memory_mb)]
    pub qemu_memory: Option<u32>,
    /// vCPUs per machine (default: host cores ÷ parallel, at least 1).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub qemu_cpus: Option<u32>,
    /// Extra QEMU options (JSON array of strings, as kola's spawn takes).
    #[arg(long, global = true)]
    pub qemu_options: Option<String>,
    /// Accelerator: `auto` uses KVM only when a probe guest really runs under it (else TCG,
    /// with one warning line), `kvm` refuses to start when it cannot run guests, `tcg` is
    /// software emulation.
    #[arg(long, global = true, env = "BOGIE_QEMU_ACCEL", default_value = "auto")]
    pub qemu_accel: bogie_platform_qemu::Accel,
}

/// The least `--qemu-memory` taken, in MiB: less does not boot a container OS.
pub const MIN_QEMU_MEMORY_MB: u32 = 256;

/// Parses `--qemu-memory`: a whole number of MiB, at least [`MIN_QEMU_MEMORY_MB`].
pub fn parse_memory_mb(s: &str) -> Result<u32, String> {
    let mb: u32 = s
        .trim()
        .parse()
        .map_err(|_| "not a whole number of MiB".to_string())?;
    if mb < MIN_QEMU_MEMORY_MB {
        return Err(format!(
            "{mb} MiB is too little to boot (at least {MIN_QEMU_MEMORY_MB})"
        ));
    }
    Ok(mb)
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run tests (globs such as `cl.*`; default every test).
    Run(RunArgs),
    /// List tests with their platforms, arches, cluster size and requirements.
    List(ListArgs),
    /// Scan console logs for kernel panics, oopses, failed units, SELinux denials, ...
    CheckConsole(CheckConsoleArgs),
    /// Work on finished runs' result files (any host): merge shards, matrix, diff.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Boot machines from the image and log in to them (kola's spawn): prints a pasteable
    /// ssh line per machine; `-t` leaves them running, `-s` opens a shell on the first.
    #[command(after_help = SPAWN_EXAMPLES)]
    Spawn(SpawnArgs),
    /// Tear down the machines a run kept (`--keep-failed`, `--remove=false`, `spawn -t`).
    #[command(after_help = DOWN_EXAMPLES)]
    Down(DownArgs),
    /// Measure bogie against baselines taken in the same run and print the ratios:
    /// harness overhead, snapshot start vs cold boot, machine boots per test, parallel
    /// efficiency, scale. Slow (boots many machines); see docs/benchmarks.md.
    Bench(BenchArgs),
    /// Delete what crashed runs left on a cloud (`-p aws|azure|gce|equinix`): resources
    /// tagged with --basename and created longer ago than --older-than.
    Gc(crate::cli_cloud::GcArgs),
}

/// `bogie run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Test name globs.
    pub patterns: Vec<String>,
    /// Also run the external tests under DIR/tests/kola (coreos-assembler's `-E`): each
    /// executable is a test named `ext.<basename of DIR>.<dirs>.<file>`. Repeatable.
    #[arg(short = 'E', long = "exttest", value_name = "DIR")]
    pub exttest: Vec<PathBuf>,
    /// Tear machines down after each test; `--remove=false` keeps them all.
    #[arg(short = 'r', long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub remove: bool,
    /// Keep only the machines of failed tests (prints how to reach and remove them).
    #[arg(long)]
    pub keep_failed: bool,
    /// Also authorize this SSH public key on every machine (repeatable; kola's --key).
    /// A private key given here becomes the run's key instead of a fresh ephemeral one.
    #[arg(long)]
    pub key: Vec<PathBuf>,
    /// Default timeout per test, e.g. `10m`.
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Skip tests tagged needs-internet.
    #[arg(long)]
    pub no_net: bool,
    /// Only tests with this tag; `!T` excludes a tag. Repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Rerun failed tests up to N times on fresh machines; fail-then-pass is flaky.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// coreos-assembler's spelling: rerun failed tests once.
    #[arg(long)]
    pub rerun: bool,
    /// Whether a flaky test (failed, then passed on a rerun) passes the gate;
    /// `--allow-flaky=false` makes it fail the run (exit 1).
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_flaky: bool,
    /// Rerun a failure classed `harness` (boot never reached SSH, platform error, lost SSH)
    /// once more, even with --retries 0.
    #[arg(long)]
    pub retry_harness_failures: bool,
    /// coreos-assembler's denylist YAML (`pattern`, `tracker`, `arches`, `platforms`,
    /// `streams`, `snooze`, `warn`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub denylist: Vec<PathBuf>,
    /// Denylist tests by glob (coreos-assembler's --denylist-test); repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub denylist_test: Vec<String>,
    /// Accepted for coreos-assembler compatibility: bogie always exits 77 when only
    /// warn-listed tests failed.
    #[arg(long)]
    pub on_warn_failure_exit_77: bool,
    /// Run only one shard of the selection: `hash:K/N` (stable hash of the test name, as
    /// coreos-assembler) or `balanced:K/N` (by --durations). Other shards' tests are not
    /// reported at all, so `bogie report merge` joins the shards without conflicts.
    #[arg(long, value_name = "STRATEGY:K/N")]
    pub sharding: Option<String>,
    /// A previous run (output dir or report file): its durations order tests longest first
    /// and balance `--sharding balanced:K/N`. Without it the last run here
    /// (`_kola_temp/<platform>-latest`) orders them; `none` keeps the declared order.
    #[arg(long, value_name = "RUN")]
    pub durations: Option<PathBuf>,
    /// A previous run (output dir or report file) to compare with: the differences (new
    /// failures, fixed, still failing) are printed at the end.
    #[arg(long, value_name = "RUN")]
    pub baseline: Option<PathBuf>,
    /// Run tests tagged platform-independent on this platform too (otherwise qemu only).
    #[arg(long)]
    pub run_platform_independent: bool,
    /// Start machines of tests that share a first-boot config from a snapshot of one ready
    /// machine (QEMU) instead of cold boots; tests marked `needs_first_boot` still boot
    /// cold. On by default (the flag stays for scripts that pass it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::SetTrue)]
    pub snapshot: bool,
    /// Boot every machine cold (overrides --snapshot).
    #[arg(long)]
    pub no_snapshot: bool,
    /// Let non-exclusive tests with the same config run one after another on one machine,
    /// as kola does. On by default.
    #[arg(long, default_value_t = true, action = clap::ArgAction::SetTrue)]
    pub share: bool,
    /// Give every test its own machine (overrides --share).
    #[arg(long)]
    pub no_share: bool,
}

/// kola/coreos-assembler flags that Flatcar's CI scripts pass. Those bogie does not honour
/// yet parse, so the error can name them, and are then refused before anything boots
/// (exit 2): a release script must not believe it tested what they ask for.
#[derive(Debug, Args, Clone, Default)]
pub struct CompatArgs {
    /// coreos-assembler's stream (Flatcar: the channel); matched by denylist `streams`.
    #[arg(long, global = true)]
    pub stream: Option<String>,
    /// Torcx manifest for docker.torcx-manifest-pkgs (kola's; not supported by bogie yet:
    /// refused).
    #[arg(long, global = true, value_name = "FILE")]
    pub torcx_manifest: Option<PathBuf>,
    /// Dev container image URL for the devcontainer.* tests (kola's; not supported by bogie
    /// yet: refused).
    #[arg(long, global = true, value_name = "URL")]
    pub devcontainer_url: Option<String>,
    /// Dev container image file for the devcontainer.* tests (kola's; not supported by
    /// bogie yet: refused).
    #[arg(long, global = true, value_name = "FILE")]
    pub devcontainer_file: Option<PathBuf>,
    /// Binary package host for the devcontainer.* tests (kola's; not supported by bogie
    /// yet: refused).
    #[arg(long, global = true, value_name = "URL")]
    pub devcontainer_binhost_url: Option<String>,
    /// Update payload for the cl.update.payload* tests (kola's; not supported by bogie
    /// yet: refused).
    #[arg(long, global = true, value_name = "FILE")]
    pub update_payload: Option<PathBuf>,
    /// Use Flatcar's production update key (kola's; not supported by bogie yet: refused).
    #[arg(long, global = true)]
    pub force_flatcar_key: bool,
    /// Units to debug (kola's --debug-systemd-unit; kola itself ignores it: accepted).
    #[arg(long, global = true, value_name = "UNIT")]
    pub debug_systemd_unit: Vec<String>,
}

/// `bogie report`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge the output dirs of a run's shards into one run: reports/junit.xml,
    /// reports/report.json, reports/results.jsonl, test.tap (and --tapfile) and the
    /// matrix under --output. Exits like the merged run (0, 1 or 77).
    Merge(ReportMergeArgs),
    /// Per-arch failure matrix across runs: Markdown on stdout, or matrix.md, matrix.html
    /// and matrix.json under --output.
    Matrix(ReportMatrixArgs),
    /// What changed from OLD to NEW: new failures, fixed, still failing, added and removed
    /// tests. Exits 1 when NEW has failures OLD did not have.
    Diff(ReportDiffArgs),
}

/// `bogie report merge`.
#[derive(Debug, Args)]
pub struct ReportMergeArgs {
    /// Shard output dirs (or report files: results.jsonl, report.json, TAP, junit.xml).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the merged run's reports go.
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: PathBuf,
    /// Whether flaky tests pass the merged gate (as `run --allow-flaky`).
    #[arg(long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub allow_flaky: bool,
}

/// `bogie report matrix`.
#[derive(Debug, Args)]
pub struct ReportMatrixArgs {
    /// Run output dirs or report files, e.g. one amd64 and one arm64 run.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Write matrix.md, matrix.html and matrix.json here instead of printing Markdown.
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

/// `bogie report diff`.
#[derive(Debug, Args)]
pub struct ReportDiffArgs {
    /// The baseline run (output dir or report file).
    #[arg(value_name = "OLD")]
    pub old: PathBuf,
    /// The new run.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Platforms kola has that this bogie does not build; their flags are refused in one line.
pub const UNBUILT_PLATFORM_PREFIXES: &[&str] = &[
    "akamai",
    "brightbox",
    "do",
    "esx",
    "hetzner",
    "openstack",
    "oraclecloud",
    "scaleway",
    "stackit",
];

/// If `args` carry a flag of a kola platform this bogie does not build (`--esx-ova-path`,
/// `--do-region`, ...), the one-line error to print (exit 2).
pub fn unbuilt_platform_flag<S: AsRef<str>>(args: &[S]) -> Option<String> {
    for a in args.iter().map(AsRef::as_ref) {
        if a == "--" {
            break;
        }
        let Some(flag) = a.strip_prefix("--") else {
            continue;
        };
        let name = flag.split('=').next().unwrap_or(flag);
        if let Some(p) = UNBUILT_PLATFORM_PREFIXES
            .iter()
            .find(|p| name.starts_with(&format!("{p}-")))
        {
            return Some(format!(
                "--{name}: platform {p} is not built into this bogie yet"
            ));
        }
    }
    None
}

/// `bogie list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Test name globs.
    pub patterns: Vec<String>,
    /// Also list the external tests under DIR/tests/kola (as `run -E`). Repeatable.
    #[arg(short = 'E', long = "exttest", value_name = "DIR")]
    pub exttest: Vec<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Only tests that would run with --platform/--board/--distro and the image's version.
    #[arg(long)]
    pub filter: bool,
    /// First show what bogie knows of --qemu-image: where its capabilities come from (its
    /// manifest, read from a plain disk, or assumed to be Flatcar), its OS, arch, version,
    /// partitions, and each capability with its evidence.
    #[arg(long)]
    pub show_image: bool,
}

/// `bogie check-console`.
#[derive(Debug, Args)]
pub struct CheckConsoleArgs {
    /// Console log files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

const SPAWN_EXAMPLES: &str = "\
Examples:
  bogie spawn --qemu-image IMG -s              a shell on a fresh machine; gone when you exit
  bogie spawn --qemu-image IMG -t -c 2         two machines left running; prints ssh lines
  bogie spawn --qemu-image IMG -u config.ign   with your Ignition config (or Butane .bu)
  bogie down _kola_temp/qemu-latest            tear down what -t left running

Progress goes to stderr; ssh lines and the teardown command to stdout.";

const DOWN_EXAMPLES: &str = "\
Examples:
  bogie down _kola_temp/qemu-latest
  bogie down /tmp/out        # the --output-dir of a `run --keep-failed` or `spawn -t`

Exit codes: 0 nothing is left running (also when nothing was kept), 1 a machine could not be
torn down, 2 RUN_DIR does not exist.";

/// `bogie spawn`: machines without a test, for a developer to look around in.
///
/// Without `-t` or `-s` the machines run until Ctrl-C, then are torn down. The ssh lines
/// use the run's ephemeral key (`<output-dir>/ssh/id_ed25519`), never `~/.ssh`.
#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// Number of machines.
    #[arg(short = 'c', long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodecount: u16,
    /// Config for the machines: Ignition JSON, or Butane YAML when the `butane` binary is
    /// on the PATH. The run's SSH key is added to it.
    #[arg(short = 'u', long, value_name = "FILE")]
    pub userdata: Option<PathBuf>,
    /// Open an interactive ssh session on the first machine (the system `ssh` client);
    /// the machines are torn down when it ends, unless `-t` or `--remove=false`.
    #[arg(short = 's', long)]
    pub shell: bool,
    /// Leave the machines running and exit: prints their ssh lines and the command that
    /// tears them down (`bogie down <output-dir>`).
    #[arg(short = 't', long)]
    pub detach: bool,
    /// Tear the machines down at the end; `--remove=false` keeps them (as `-t` does).
    #[arg(short = 'r', long, num_args = 0..=1, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub remove: bool,
    /// Also authorize this SSH public key on every machine (repeatable; kola's --key).
    /// A private key given here becomes the run's key instead of a fresh ephemeral one.
    #[arg(long)]
    pub key: Vec<PathBuf>,
    /// Give each machine a TPM 2.0 (swtpm), as a test that requires `tpm` gets.
    #[arg(long)]
    pub tpm: bool,
    /// An extra disk in coreos-assembler's syntax: `5G`, `1G:4k`, `5G:mpath`,
    /// `2G:channel=nvme,serial=data` (options: channel=virtio|nvme|scsi, 4k, 512e, mpath,
    /// serial=NAME, wwn=N). Repeatable; found in the guest as /dev/disk/by-id/*<serial>.
    #[arg(long = "add-disk", alias = "disk", value_name = "SPEC", value_parser = parse_disk_spec)]
    pub add_disk: Vec<bogie_harness::platform::DiskSpec>,
    /// The primary disk's minimum size in GiB (`20G` or `20`), as coreos-assembler's
    /// `minDisk`.
    #[arg(long, value_name = "SIZE", value_parser = parse_gib)]
    pub primary_disk: Option<u32>,
    /// Additional user-mode NICs (MACs 52:55:00:d1:56:00, :01, ...), as
    /// coreos-assembler's `--additional-nics`.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=8))]
    pub additional_nics: u32,
    /// Kernel arguments for every boot (direct-kernel images), as one string.
    #[arg(long, alias = "kernel-args", value_name = "ARGS")]
    pub kargs: Option<String>,
    /// Kernel arguments for the first boot only (direct-kernel images), as one string.
    #[arg(long, alias = "first-boot-kernel-args", value_name = "ARGS")]
    pub firstbootkargs: Option<String>,
}

fn parse_disk_spec(s: &str) -> Result<bogie_harness::platform::DiskSpec, String> {
    bogie_harness::platform::DiskSpec::parse(s)
}

/// `20G` or `20`: whole GiB, at least 1.
fn parse_gib(s: &str) -> Result<u32, String> {
    let t = s.trim();
    t.strip_suffix('G')
        .unwrap_or(t)
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size in GiB such as 20G"))
}

/// `bogie down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The run's output directory (as printed by the run; `_kola_temp/qemu-latest` works).
    /// Every machine kept under it (`kept.json`) is torn down.
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
}

/// `bogie bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmarks to run (repeatable; default all but catalog): overhead, snapshot, boots,
    /// parallel, scale, catalog.
    #[arg(long = "only", value_name = "NAME")]
    pub only: Vec<String>,
    /// Tests of the scale benchmark.
    #[arg(long, default_value_t = 10_000)]
    pub scale_tests: usize,
    /// Tests of the parallel-efficiency benchmark.
    #[arg(long, default_value_t = 4)]
    pub parallel_tests: usize,
    /// Restores timed by the snapshot benchmark (their median counts).
    #[arg(long, default_value_t = 3)]
    pub restores: usize,
    /// Runs the `catalog` benchmark over these catalog tests (names or globs; the whole
    /// catalog when none are given): cold ÷ with sharing and snapshots, at `-j 2`.
    #[arg(long = "catalog", value_name = "TEST", num_args = 0..)]
    pub catalog: Option<Vec<String>>,
    /// Keep the runs' output here (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Internal: run the scale workload with N tests in this process and print JSON.
    #[arg(long, hide = true, value_name = "N")]
    pub scale_child: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kola_spellings_parse() {
        let c = Cli::try_parse_from([
            "bogie",
            "run",
            "--board=amd64-usr",
            "--parallel=2",
            "--platform=qemu",
            "--qemu-image=/x/manifest.json",
            "--tapfile=/tmp/t.tap",
            "--remove=false",
            "cl.basic",
        ])
        .unwrap();
        assert_eq!(c.global.parallel, "2");
        let Command::Run(r) = c.command else { panic!() };
        assert!(!r.remove);
        assert_eq!(r.patterns, vec!["cl.basic"]);
        let c = Cli::try_parse_from(["bogie", "--platform", "qemu", "run", "-r"]).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert!(r.remove);
    }

    #[test]
    fn flatcar_ci_flags_parse() {
        // qemu_uefi.sh with every optional flag, plus kola_run's common options.
        let c = Cli::try_parse_from([
            "bogie",
            "run",
            "--board=arm64-usr",
            "--parallel=20",
            "--platform=qemu",
            "--qemu-firmware=flatcar_production_qemu_uefi_efi_code.qcow2",
            "--qemu-image=flatcar_production_image.bin",
            "--tapfile=/w/results-run-1.tap",
            "--qemu-ovmf-vars=flatcar_production_qemu_uefi_efi_vars.qcow2",
            "--qemu-skip-mangle",
            "--devcontainer-url",
            "http://bincache/dev.bin",
            "--devcontainer-binhost-url",
            "http://bincache/pkgs",
            "--enable-secureboot",
            "--image-version",
            "4799.0.0+nightly-20261120-2100",
            "--torcx-manifest=/w/torcx_manifest.json",
            "--channel=alpha",
            "--basename=ci-4799-0-0-arm64",
            "--offering=basic",
            "--update-payload=tmp/flatcar_test_update.gz",
            "cl.basic",
            "cl.internet",
        ])
        .unwrap();
        assert_eq!(c.global.parallel, "20");
        assert!(c.global.qemu.qemu_skip_mangle && c.global.enable_secureboot);
        assert_eq!(
            c.global.compat.devcontainer_url.as_deref(),
            Some("http://bincache/dev.bin")
        );
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.patterns, vec!["cl.basic", "cl.internet"]);
        assert!(r.allow_flaky);
        // coreos-assembler's spellings.
        let c = Cli::try_parse_from([
            "bogie",
            "run",
            "--arch",
            "x86_64",
            "-j",
            "auto",
            "--rerun",
            "--tag",
            "!slow",
            "--no-net",
            "--denylist-test",
            "cl.etcd*",
            "--sharding",
            "hash:1/3",
            "--stream",
            "stable",
            "--on-warn-failure-exit-77",
            "--allow-flaky=false",
        ])
        .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert!(r.rerun && r.no_net && !r.allow_flaky);
        assert_eq!(r.sharding.as_deref(), Some("hash:1/3"));
    }

    #[test]
    fn flags_of_unbuilt_platforms_are_named() {
        let m = unbuilt_platform_flag(&["run", "--esx-ova-path=/x.ova", "cl.basic"]).unwrap();
        assert_eq!(
            m,
            "--esx-ova-path: platform esx is not built into this bogie yet"
        );
        assert!(unbuilt_platform_flag(&["run", "--do-region", "nyc3"]).is_some());
        assert!(unbuilt_platform_flag(&["run", "--aws-ami=ami-1", "--docker"]).is_none());
        assert!(unbuilt_platform_flag(&["run", "--", "--esx-x"]).is_none());
    }

    #[test]
    fn snapshots_and_sharing_are_on_by_default_and_the_no_flags_win() {
        let run = |extra: &[&str]| {
            let mut argv = vec!["bogie", "run"];
            argv.extend_from_slice(extra);
            argv.push("cl.basic");
            let Command::Run(r) = Cli::try_parse_from(argv).unwrap().command else {
                panic!()
            };
            (r.snapshot && !r.no_snapshot, r.share && !r.no_share)
        };
        assert_eq!(run(&[]), (true, true));
        assert_eq!(run(&["--snapshot", "--share"]), (true, true));
        assert_eq!(run(&["--no-snapshot"]), (false, true));
        assert_eq!(run(&["--no-share"]), (true, false));
        assert_eq!(run(&["--no-snapshot", "--no-share"]), (false, false));
        assert_eq!(
            run(&["--snapshot", "--share", "--no-snapshot"]),
            (false, true)
        );
        assert_eq!(run(&["--snapshot", "--share", "--no-share"]), (true, false));
    }

    #[test]
    fn qemu_memory_is_a_number_of_mib_a_container_os_boots_in() {
        assert_eq!(parse_memory_mb("2048"), Ok(2048));
        assert_eq!(parse_memory_mb("256"), Ok(256));
        assert_eq!(
            parse_memory_mb("0").unwrap_err(),
            "0 MiB is too little to boot (at least 256)"
        );
        assert_eq!(
            parse_memory_mb("2G").unwrap_err(),
            "not a whole number of MiB"
        );
        assert!(Cli::try_parse_from(["bogie", "--qemu-memory", "0", "list"]).is_err());
        assert!(Cli::try_parse_from(["bogie", "--qemu-cpus", "0", "list"]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap().as_secs(), 10);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert!(parse_duration("x").is_none());
    }
}
