//! Checks of flags that need neither an image nor a platform, run before anything boots:
//! kola flags bogie does not honour yet, `--ignition-version`, the test patterns, and where
//! `--output-dir` and `--tapfile` write. Each failure is one line naming the flag (exit 2).

use std::path::Path;

use crate::cli::Global;
use crate::input_error;
use bogie_harness::setup::IgnitionVersion;

/// Refuses kola flags that bogie parses but does not honour yet: a release script passing
/// `--update-payload` or `--torcx-manifest` must not believe it tested what they ask for. (`--debug-systemd-unit` stays accepted: kola itself
/// ignores it.) `--ignition-version` takes
/// kola's values, `v2` and `v3`.
pub fn refuse_unsupported(g: &Global) -> anyhow::Result<()> {
    let c = &g.compat;
    let given = [
        ("--update-payload", c.update_payload.is_some()),
        ("--torcx-manifest", c.torcx_manifest.is_some()),
        ("--devcontainer-url", c.devcontainer_url.is_some()),
        ("--devcontainer-file", c.devcontainer_file.is_some()),
        (
            "--devcontainer-binhost-url",
            c.devcontainer_binhost_url.is_some(),
        ),
        ("--force-flatcar-key", c.force_flatcar_key),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
        return Err(input_error(format!("{flag} is not supported by bogie yet")));
    }
    grow_base_disk_by(g)?;
    ignition_version(g)?;
    Ok(())
}

/// `--ignition-version` as kola takes it (`v2`, `v3`); None when not given (the image
/// decides: [`IgnitionVersion::default_for`]).
pub fn ignition_version(g: &Global) -> anyhow::Result<Option<IgnitionVersion>> {
    g.ignition_version
        .as_deref()
        .map(|v| {
            IgnitionVersion::parse(v).ok_or_else(|| {
                input_error(format!(
                    "--ignition-version {v:?}: kola's values are v2 and v3"
                ))
            })
        })
        .transpose()
}

/// `--enable-secureboot` on `platform`: honoured on qemu (UEFI with Secure Boot enforced;
/// the QEMU platform refuses what cannot boot that way: arm64, a kernel booted directly,
/// BIOS firmware), refused on every other platform, where bogie sets no Secure Boot up.
pub fn secure_boot(g: &Global, platform: &str) -> anyhow::Result<bool> {
    if g.enable_secureboot && platform != "qemu" {
        return Err(input_error(format!(
            "--enable-secureboot works on --platform qemu only, not {platform}"
        )));
    }
    Ok(g.enable_secureboot)
}

/// `--qemu-grow-base-disk-by` in bytes (0 when not given): a number of bytes with an
/// optional 1024-based suffix (`5G`, `512M`), as kola takes it.
pub fn grow_base_disk_by(g: &Global) -> anyhow::Result<u64> {
    match &g.qemu.qemu_grow_base_disk_by {
        None => Ok(0),
        Some(s) => bogie_platform_qemu::parse_size(s)
            .map_err(|e| input_error(format!("--qemu-grow-base-disk-by {e}"))),
    }
}

/// The test patterns with empty ones dropped, as kola does: Flatcar's `qemu.sh` passes
/// `"${ovmf_vars:+--qemu-ovmf-vars=...}"`, an empty argument on BIOS runs. No pattern
/// left means every test, as when none is given.
pub fn patterns(given: &[String]) -> Vec<String> {
    given.iter().filter(|p| !p.is_empty()).cloned().collect()
}

/// Checks `--output-dir` before anything boots: it is a directory bogie can write in, or
/// it does not exist yet and its nearest existing parent is one (bogie creates it, as kola
/// does).
pub fn check_output_dir(g: &Global) -> anyhow::Result<()> {
    let Some(d) = g.output_dir.as_deref() else {
        return Ok(());
    };
    let mut existing = d;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let named = if existing == d {
        "it".to_string()
    } else {
        existing.display().to_string()
    };
    match unwritable(existing, &named) {
        Some(why) => Err(input_error(format!("--output-dir {}: {why}", d.display()))),
        None => Ok(()),
    }
}

/// Checks `--tapfile` before anything boots: not a directory, and its directory exists
/// (bogie does not create it, nor does kola) and is writable.
pub fn check_tapfile(g: &Global) -> anyhow::Result<()> {
    let Some(t) = g.tapfile.as_deref() else {
        return Ok(());
    };
    let dir = match t.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let why = if t.is_dir() || t.to_string_lossy().ends_with('/') {
        Some("it is a directory, not a file".to_string())
    } else if !dir.exists() {
        Some(format!(
            "directory {} does not exist (bogie does not create it)",
            dir.display()
        ))
    } else {
        unwritable(dir, &dir.display().to_string())
    };
    match why {
        Some(why) => Err(input_error(format!("--tapfile {}: {why}", t.display()))),
        None => Ok(()),
    }
}

/// Why no file can be created in `dir` (called `named` in the reason), if none can.
fn unwritable(dir: &Path, named: &str) -> Option<String> {
    if !dir.is_dir() {
        Some(format!("{named} is not a directory"))
    } else if !can_create_in(dir) {
        Some(format!("{named} is not writable"))
    } else {
        None
    }
}

/// Whether a file can be created in `dir`: tried, since permission bits do not tell what
/// root or a read-only mount may do. The probe file is removed at once.
fn can_create_in(dir: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".bogie-write-probe")
        .tempfile_in(dir)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> Global {
        let mut argv = vec!["bogie"];
        argv.extend_from_slice(args);
        argv.push("list");
        crate::cli::Cli::try_parse_from(argv).unwrap().global
    }

    fn refusal(args: &[&str]) -> String {
        refuse_unsupported(&global(args)).unwrap_err().to_string()
    }

    #[test]
    fn unhonoured_kola_flags_are_refused_by_name() {
        assert!(refuse_unsupported(&global(&[])).is_ok());
        assert!(refuse_unsupported(&global(&["--qemu-skip-mangle", "--basename=b"])).is_ok());
        // Honoured now: a size, checked before anything boots.
        let g = global(&["--qemu-grow-base-disk-by=5G"]);
        assert!(refuse_unsupported(&g).is_ok());
        assert_eq!(grow_base_disk_by(&g).unwrap(), 5 << 30);
        assert_eq!(grow_base_disk_by(&global(&[])).unwrap(), 0);
        assert!(refusal(&["--qemu-grow-base-disk-by=lots"])
            .starts_with("--qemu-grow-base-disk-by \"lots\" is not a size"));
        // Honoured now (on qemu: see secure_boot).
        assert!(refuse_unsupported(&global(&["--enable-secureboot"])).is_ok());
        for (args, flag) in [
            (&["--update-payload=u.gz"][..], "--update-payload"),
            (&["--torcx-manifest=t.json"], "--torcx-manifest"),
            (&["--devcontainer-url=http://x"], "--devcontainer-url"),
            (&["--devcontainer-file=d.bin"], "--devcontainer-file"),
            (
                &["--devcontainer-binhost-url=http://x"],
                "--devcontainer-binhost-url",
            ),
            (&["--force-flatcar-key"], "--force-flatcar-key"),
        ] {
            assert_eq!(
                refusal(args),
                format!("{flag} is not supported by bogie yet")
            );
        }
        assert!(refuse_unsupported(&global(&["--ignition-version=v3"])).is_ok());
        assert!(refuse_unsupported(&global(&["--ignition-version=v2"])).is_ok());
        assert_eq!(
            ignition_version(&global(&["--ignition-version=v2"])).unwrap(),
            Some(IgnitionVersion::V2)
        );
        assert_eq!(ignition_version(&global(&[])).unwrap(), None);
        assert_eq!(
            refusal(&["--ignition-version=v9"]),
            "--ignition-version \"v9\": kola's values are v2 and v3"
        );
    }

    #[test]
    fn secure_boot_is_a_qemu_flag() {
        assert!(!secure_boot(&global(&[]), "aws").unwrap());
        assert!(secure_boot(&global(&["--enable-secureboot"]), "qemu").unwrap());
        assert_eq!(
            secure_boot(&global(&["--enable-secureboot"]), "aws")
                .unwrap_err()
                .to_string(),
            "--enable-secureboot works on --platform qemu only, not aws"
        );
    }

    #[test]
    fn empty_patterns_are_dropped() {
        let p = |v: &[&str]| patterns(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["", "cl.*", ""]), vec!["cl.*"]);
        assert!(p(&[""]).is_empty());
    }

    #[test]
    fn output_dir_and_tapfile_must_be_writable_places() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let out = |p: &str| check_output_dir(&global(&["--output-dir", p]));
        assert!(out(&s(d.path())).is_ok());
        assert!(out(&s(&d.path().join("new/deeper"))).is_ok());
        assert_eq!(
            out(&s(&file)).unwrap_err().to_string(),
            format!("--output-dir {}: it is not a directory", file.display())
        );
        assert_eq!(
            out(&s(&file.join("sub"))).unwrap_err().to_string(),
            format!(
                "--output-dir {}: {} is not a directory",
                file.join("sub").display(),
                file.display()
            )
        );

        let tap = |p: &str| check_tapfile(&global(&["--tapfile", p]));
        assert!(tap(&s(&d.path().join("r.tap"))).is_ok());
        assert!(tap(&s(&file)).is_ok(), "an existing file is replaced");
        assert!(tap("relative.tap").is_ok());
        assert_eq!(
            tap(&s(d.path())).unwrap_err().to_string(),
            format!(
                "--tapfile {}: it is a directory, not a file",
                d.path().display()
            )
        );
        let missing = d.path().join("missing/r.tap");
        assert_eq!(
            tap(&s(&missing)).unwrap_err().to_string(),
            format!(
                "--tapfile {}: directory {} does not exist (bogie does not create it)",
                missing.display(),
                d.path().join("missing").display()
            )
        );
        assert_eq!(
            tap(&s(&file.join("r.tap"))).unwrap_err().to_string(),
            format!(
                "--tapfile {}: {} is not a directory",
                file.join("r.tap").display(),
                file.display()
            )
        );
        // clap refuses an empty path itself.
        assert!(crate::cli::Cli::try_parse_from(["bogie", "--tapfile", "", "list"]).is_err());
        assert!(!d.path().join("missing").exists(), "nothing was created");
    }
}
