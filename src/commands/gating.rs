//! Release gating for `bogie run`: the inputs checked before anything boots (denylist,
//! sharding, durations, baseline, kola's firmware paths) and the verdict after.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::{Arc, Mutex};

use bogie_harness::denylist::{DenyContext, Denylist, Resolved, Verdict};
use bogie_harness::runner::{run_attempt, AttemptContext};
use bogie_harness::select::Selected;
use bogie_harness::shard::{Sharding, Strategy};
use bogie_harness::{Arch, Test, Version};
use bogie_reports::matrix::load_run;
use bogie_reports::{RunReport, Status};

use crate::cli::{QemuArgs, RunArgs};
use crate::input_error;

/// Everything `--denylist`, `--sharding`, `--durations` and `--baseline` give a run,
/// loaded and checked up front (bad input exits 2 before any machine boots).
#[derive(Debug, Default)]
pub struct GatingInputs {
    /// The denylist files and `--denylist-test` patterns together.
    pub denylist: Denylist,
    /// This run's shard.
    pub sharding: Option<Sharding>,
    /// Durations of a previous run, by test name.
    pub durations: HashMap<String, Duration>,
    /// The baseline run to diff against.
    pub baseline: Option<RunReport>,
}

impl GatingInputs {
    /// Loads and checks the gating flags of `args` for a run on `platform`.
    pub fn load(args: &RunArgs, platform: &str) -> anyhow::Result<GatingInputs> {
        let mut denylist = Denylist::default();
        for f in &args.denylist {
            denylist.extend(Denylist::load(f).map_err(|e| input_error(e.to_string()))?);
        }
        denylist.extend(
            Denylist::from_patterns(&args.denylist_test).map_err(|e| input_error(e.to_string()))?,
        );
        let sharding = args
            .sharding
            .as_deref()
            .map(|s| {
                s.parse::<Sharding>()
                    .map_err(|e| input_error(e.to_string()))
            })
            .transpose()?;
        let explicit = args.durations.as_ref().filter(|p| p.as_os_str() != "none");
        let durations = match (explicit, &args.durations) {
            (Some(p), _) => durations_of(&load(p)?),
            (None, Some(_)) => HashMap::new(),
            (None, None) => last_run_durations(Path::new("_kola_temp"), platform),
        };
        if let Some(s) = &sharding {
            if s.strategy == Strategy::Balanced && explicit.is_none() {
                return Err(input_error(format!(
                    "--sharding {s} needs --durations PREV_RUN (a previous run's output dir)"
                )));
            }
        }
        let baseline = args.baseline.as_deref().map(load).transpose()?;
        Ok(GatingInputs {
            denylist,
            sharding,
            durations,
            baseline,
        })
    }

    /// The denylist entries that apply to this run; notes (snoozes) go to stderr.
    pub fn resolve_denylist(&self, stream: Option<String>, arch: Arch, platform: &str) -> Resolved {
        let r = self.denylist.resolve(&DenyContext {
            arch,
            platform: platform.to_string(),
            stream,
            now: chrono::Utc::now(),
        });
        for n in &r.notes {
            eprintln!("{n}");
        }
        if r.skip_console_warnings {
            eprintln!(
                "denylist: skip-console-warnings is not supported by bogie; console checks stay on"
            );
        }
        r
    }
}

/// Reads one run's results; an unreadable run is an input error (exit 2).
pub fn load(path: &Path) -> anyhow::Result<RunReport> {
    load_run(path).map_err(|e| {
        let msg = e.to_string();
        if msg.contains(&path.display().to_string()) {
            input_error(msg)
        } else {
            input_error(format!("{}: {msg}", path.display()))
        }
    })
}

/// The durations of the last run on `platform` in `kola_temp` (kola's
/// `_kola_temp/<platform>-latest`), which order the tests longest first when `--durations`
/// is not given; one line on stderr says which run was used, or why none was. Empty when
/// there is no such run. (Balanced sharding never takes them: two CI jobs may have
/// different last runs, and their shards must agree.)
pub fn last_run_durations(kola_temp: &Path, platform: &str) -> HashMap<String, Duration> {
    let latest = kola_temp.join(format!("{platform}-latest"));
    if std::fs::symlink_metadata(&latest).is_err() {
        return HashMap::new();
    }
    match load_run(&latest) {
        Ok(r) => {
            let d = durations_of(&r);
            eprintln!(
                "durations: ordering tests longest first by the last run, {} ({} tests; --durations none keeps the declared order)",
                latest.display(),
                d.len()
            );
            d
        }
        Err(e) => {
            eprintln!(
                "durations: the last run {} has no readable results ({e}); tests keep the declared order",
                latest.display()
            );
            HashMap::new()
        }
    }
}

/// Per-test durations of a finished run (the last attempt's: what one more run costs).
pub fn durations_of(r: &RunReport) -> HashMap<String, Duration> {
    r.tests
        .iter()
        .filter_map(|t| t.attempts.last().map(|a| (t.name.clone(), a.duration)))
        .collect()
}

/// The planned tests whose failure only warns (denylist `warn`).
pub fn warn_only(selected: &[Selected], denylist: &Resolved) -> HashSet<String> {
    selected
        .iter()
        .filter_map(|s| match s {
            Selected::Run(t) => match denylist.verdict(&t.name) {
                Some(Verdict::Warn(_)) => Some(t.name.clone()),
                _ => None,
            },
            Selected::Skip(..) => None,
        })
        .collect()
}

/// QEMU's firmware directories, searched (as QEMU searches its data dir for `-bios`) when
/// a `--qemu-firmware` path does not exist: Flatcar's CI passes the SDK's
/// `/usr/share/qemu/bios-256k.bin`, which Debian ships as `/usr/share/seabios/bios-256k.bin`.
pub const FIRMWARE_DIRS: &[&str] = &[
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/share/ovmf",
    "/usr/share/OVMF",
    "/usr/share/AAVMF",
    "/usr/share/qemu-efi-aarch64",
];

/// Where a firmware file given as `given` is: the path itself, else a file of the same name
/// in one of `dirs`.
pub fn find_firmware(given: &Path, dirs: &[&str]) -> Option<PathBuf> {
    if given.is_file() {
        return Some(given.to_path_buf());
    }
    let name = given.file_name()?;
    dirs.iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Checks kola's file flags before anything boots and returns the flags with
/// `--qemu-firmware` resolved: a firmware path must exist, or its file name must be in one
/// of QEMU's firmware dirs ([`FIRMWARE_DIRS`]); `--qemu-ovmf-vars` must exist. (A
/// direct-kernel image then ignores the firmware.)
pub fn check_files(q: &QemuArgs) -> anyhow::Result<QemuArgs> {
    let mut q = q.clone();
    if let Some(fw) = &q.qemu_firmware {
        let found = find_firmware(fw, FIRMWARE_DIRS).ok_or_else(|| {
            input_error(format!(
                "--qemu-firmware {}: no such file (nor in {})",
                fw.display(),
                FIRMWARE_DIRS.join(", ")
            ))
        })?;
        if &found != fw {
            tracing::info!(
                "--qemu-firmware {} not found; using {}",
                fw.display(),
                found.display()
            );
        }
        q.qemu_firmware = Some(found);
    }
    if let Some(p) = &q.qemu_ovmf_vars {
        if !p.is_file() {
            return Err(input_error(format!(
                "--qemu-ovmf-vars {}: no such file",
                p.display()
            )));
        }
    }
    Ok(q)
}

/// The image version from `VERSION_ID` (else `VERSION`) of an os-release file's text.
pub fn os_release_version(text: &str) -> Option<Version> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    field("VERSION_ID")
        .as_deref()
        .and_then(Version::parse_lenient)
        .or_else(|| field("VERSION").as_deref().and_then(Version::parse_lenient))
}

/// kola's `get_cluster_semver`: boots one machine, reads `/etc/os-release` and tears the
/// machine down. Its artifacts land in `<out>/get_cluster_semver/`.
pub async fn probe_version(ctx: &AttemptContext) -> anyhow::Result<Version> {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let seen2 = seen.clone();
    let probe = Test::new("get_cluster_semver", move |c| {
        let seen = seen2.clone();
        async move {
            let text = c.machine()?.must_ssh("cat /etc/os-release").await?;
            *seen.lock().expect("poisoned") = Some(text);
            Ok(())
        }
    })
    .distros(&[]);
    let outcome = run_attempt(ctx, &probe, 1, Box::new(|_| {})).await;
    let text = seen.lock().expect("poisoned").take();
    match text {
        Some(t) => os_release_version(&t).ok_or_else(|| {
            anyhow::anyhow!(
                "no version in the booted image's /etc/os-release; pass --image-version"
            )
        }),
        None => Err(anyhow::anyhow!(
            "reading the image version from a booted machine failed ({}); pass --image-version",
            outcome
                .attempt
                .failure
                .map(|f| f.message)
                .unwrap_or_else(|| "no output".into())
        )),
    }
}

/// The gate's verdict on a run: 1 if a test failed, or never reported a result (`not-run`),
/// or the run did not end or was interrupted, or a test was flaky and flaky tests are not
/// allowed; else 77 if warn-only tests failed, else 0.
pub fn gate(report: &RunReport, allow_flaky: bool) -> u8 {
    let s = report.summary();
    if s.failed > 0 || s.not_run > 0 || !report.end.passes_gate() || (!allow_flaky && s.flaky > 0) {
        1
    } else if s.warned > 0 {
        77
    } else {
        0
    }
}

/// Tells about flaky tests after the summary: they pass the gate only with --allow-flaky.
pub fn print_flaky_note(report: &RunReport, allow_flaky: bool) {
    let flaky: Vec<&str> = report
        .tests
        .iter()
        .filter(|t| t.status == Status::Flaky)
        .map(|t| t.name.as_str())
        .collect();
    if flaky.is_empty() {
        return;
    }
    if allow_flaky {
        eprintln!(
            "warning: {} flaky test(s) passed the gate: {} (--allow-flaky=false fails the run on them)",
            flaky.len(),
            flaky.join(", ")
        );
    } else {
        eprintln!(
            "error: {} flaky test(s) fail the gate (--allow-flaky=false): {}",
            flaky.len(),
            flaky.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_os_release() {
        let flatcar = "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION=4799.0.0\nVERSION_ID=4799.0.0\nBUILD_ID=2026-08-01\n";
        assert_eq!(os_release_version(flatcar), Some(Version::new(4799, 0, 0)));
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n";
        assert_eq!(os_release_version(debian), Some(Version::new(12, 0, 0)));
        assert_eq!(os_release_version("ID=x\n"), None);
    }

    #[test]
    fn the_last_run_here_gives_the_durations() {
        use bogie_reports::{Attempt, RunInfo, RunReport, Status, TestResult};
        let d = tempfile::tempdir().unwrap();
        let kola_temp = d.path().join("_kola_temp");
        // No last run: nothing, silently (there is nothing to say).
        assert!(last_run_durations(&kola_temp, "qemu").is_empty());
        let run = kola_temp.join("qemu-2026-12-04-0300-1");
        std::fs::create_dir_all(run.join("reports")).unwrap();
        std::os::unix::fs::symlink("qemu-2026-12-04-0300-1", kola_temp.join("qemu-latest"))
            .unwrap();
        // A last run without results (killed before it wrote any): nothing, with a line.
        assert!(last_run_durations(&kola_temp, "qemu").is_empty());
        let started = chrono::Utc::now();
        let passed = |name: &str, secs: u64| {
            let mut t = TestResult::skipped(name, "qemu", "amd64", "");
            t.status = Status::Pass;
            t.skip_reason = None;
            t.attempts = vec![Attempt {
                number: 1,
                passed: true,
                started,
                duration: Duration::from_secs(secs),
                failure: None,
                output: String::new(),
                machines: Vec::new(),
                subtests: Vec::new(),
            }];
            t
        };
        let info = RunInfo {
            id: "r".into(),
            platform: "qemu".into(),
            arch: "amd64".into(),
            version: "4799.0.0".into(),
            distro: "cl".into(),
            channel: String::new(),
            image: "img".into(),
            shard: None,
            cmdline: Vec::new(),
            started,
        };
        let report = RunReport::new(info, vec![passed("cl.basic", 57), passed("cl.long", 600)]);
        bogie_reports::kola_json::write_report_json(&report, run.join("reports/report.json"))
            .unwrap();
        let got = last_run_durations(&kola_temp, "qemu");
        assert_eq!(got.get("cl.long"), Some(&Duration::from_secs(600)));
        assert_eq!(got.get("cl.basic"), Some(&Duration::from_secs(57)));
        // Another platform's last run is not this one's.
        assert!(last_run_durations(&kola_temp, "aws").is_empty());
    }

    #[test]
    fn firmware_is_found_in_qemus_dirs() {
        let d = tempfile::tempdir().unwrap();
        let fw = d.path().join("bios-256k.bin");
        std::fs::write(&fw, b"x").unwrap();
        let dirs = [d.path().to_str().unwrap()];
        assert_eq!(
            find_firmware(Path::new("/usr/share/nowhere/bios-256k.bin"), &dirs),
            Some(fw.clone())
        );
        assert_eq!(find_firmware(&fw, &[]), Some(fw));
        assert_eq!(find_firmware(Path::new("/nope/other.bin"), &dirs), None);
    }
}
