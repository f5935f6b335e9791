//! The command line: a superset of kola's, so release scripts switch by changing one word.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// bogie: boots container-OS images (Flatcar, Fedora CoreOS style) on QEMU, clouds and bare
/// metal, runs kola's tests over SSH and writes JUnit, TAP, kola JSON and failure matrices.
///
/// Exit codes: 0 every test that ran passed (flaky counts as passed unless
/// --allow-flaky=false); 1 a test failed; 2 bad input (missing or wrong-arch image,
/// malformed Ignition or denylist, unknown test or platform); 77 only warn-listed tests
/// failed (denylist `warn`), as coreos-assembler does.
#[derive(Debug, Parser)]
#[command(name = "bogie", version, about, long_about, max_term_width = 100)]
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
    /// Write a TAP report (kola's format) to this path.
    #[arg(long, global = true)]
    pub tapfile: Option<PathBuf>,
    /// Prefix of cloud resource names.
    #[arg(long, global = true, default_value = "bogie")]
    pub basename: String,
    /// SSH bring-up: connect attempts (kola: 60).
    #[arg(long, global = true, default_value_t = 60)]
    pub ssh_retries: u32,
    /// SSH bring-up: timeout of one connect attempt, e.g. `10s`.
    #[arg(long, global = true, default_value = "10s")]
    pub ssh_timeout: String,
    /// Ignition spec the default configs render to (v3; v2 is accepted and means v3 here).
    #[arg(long, global = true, default_value = "v3")]
    pub ignition_version: String,
    /// Boot with secure boot (firmware platforms).
    #[arg(long, global = true)]
    pub enable_secureboot: bool,
    /// Don't fail tests on SELinux AVC denials.
    #[arg(long, global = true)]
    pub disable_selinux_avc_checks: bool,
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
    /// Accepted for kola compatibility: bogie never modifies the image.
    #[arg(long, global = true)]
    pub qemu_skip_mangle: bool,
    /// Grow each machine's disk by this much (e.g. `5G`).
    #[arg(long, global = true)]
    pub qemu_grow_base_disk_by: Option<String>,
    /// Memory per machine in MiB (default 1024).
    #[arg(long, global = true)]
    pub qemu_memory: Option<u32>,
    /// vCPUs per machine (default: host cores ÷ parallel, at least 1).
    #[arg(long, global = true)]
    pub qemu_cpus: Option<u32>,
    /// Extra QEMU options (JSON array of strings, as kola's spawn takes).
    #[arg(long, global = true)]
    pub qemu_options: Option<String>,
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
}

/// `bogie run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Test name globs.
    pub patterns: Vec<String>,
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
}

/// `bogie list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Test name globs.
    pub patterns: Vec<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Only tests that would run with --platform/--board/--distro and the image's version.
    #[arg(long)]
    pub filter: bool,
}

/// `bogie check-console`.
#[derive(Debug, Args)]
pub struct CheckConsoleArgs {
    /// Console log files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Parses `10s`, `5m`, `2h`, `90` (seconds).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v >= 0.0).then(|| std::time::Duration::from_secs_f64(v * mult))
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
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap().as_secs(), 10);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert!(parse_duration("x").is_none());
    }
}
