//! External tests, as coreos-assembler's `kola run -E DIR` runs them: executables kept in
//! the OS's own repository under `DIR/tests/kola/`, with their metadata and Ignition config
//! beside them, run on the machine as the systemd unit `kola-runext.service` without Rust
//! or a rebuild of bogie.
//!
//! - [`discover`]: which files are tests and their names (`ext.<DIR>.<dirs>.<file>`).
//! - [`meta`]: `kola.json` and the `# kola:` / `## kola:` headers.
//! - [`load`]: both together, as registered [`Test`]s.
//! - non-exclusive external tests get one merged config per bucket of tests that do not
//!   conflict, as every non-exclusive test does ([`crate::buckets`]), so that bogie's
//!   sharing ([`crate::sharing`]) runs them one after another on one machine, as kola does.
//! - the test body (module `guest`): uploads the test and its data, runs the unit, follows
//!   autopkgtest reboot requests.

pub mod discover;
mod error;
mod guest;
pub mod meta;
mod tar;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::ignition::Config;
use crate::test::Test;

pub use discover::{discover, Discovery, Found};
pub use error::ExternalError;
pub use guest::ExternalTest;
pub use meta::{Meta, MetaSource};

/// The tag every external test carries (as in kola).
pub const EXTERNAL_TAG: &str = "external";
/// The unit an exclusive test runs as (non-exclusive ones: `kola-runext-N.service`).
pub const UNIT: &str = "kola-runext.service";
/// Where an exclusive test's data is on the machine (non-exclusive ones: `…-N`).
pub const DATA_DEST: &str = "/var/opt/kola/extdata";

/// Loads the external tests of every `-E DIR` as registrable tests, in order. Warnings
/// (a script without its execute bit, a broken link) are logged.
pub fn load(dirs: &[PathBuf]) -> Result<Vec<Test>, ExternalError> {
    let today = chrono::Utc::now().date_naive();
    let mut out: Vec<(Test, PathBuf)> = Vec::new();
    let mut shared_n = 0;
    for dir in dirs {
        let d = discover(dir)?;
        for w in &d.warnings {
            tracing::warn!("external tests: {w}");
        }
        for f in &d.tests {
            let t = build(f, d.shared_data.as_deref(), today, &mut shared_n)?;
            if let Some((_, first)) = out.iter().find(|(o, _)| o.name == t.name) {
                return Err(ExternalError::Duplicate {
                    name: t.name,
                    first: first.clone(),
                    second: f.executable.clone(),
                });
            }
            out.push((t, f.executable.clone()));
        }
    }
    Ok(out.into_iter().map(|(t, _)| t).collect())
}

/// The metadata that applies to `f`: its header's, else its directory's `kola.json`, else
/// kola's defaults (the header replaces `kola.json` whole, it is not merged).
pub fn metadata(f: &Found) -> Result<(Meta, MetaSource), ExternalError> {
    let text = std::fs::read(&f.executable).map_err(|e| ExternalError::Io {
        path: f.executable.clone(),
        source: e,
    })?;
    if let Some(m) = meta::parse_header(&text, &f.executable)? {
        return Ok(m);
    }
    match &f.kola_json {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ExternalError::Io {
                path: p.clone(),
                source: e,
            })?;
            Ok((meta::parse_kola_json(&text, p)?, MetaSource::KolaJson))
        }
        None => Ok((Meta::default(), MetaSource::Defaults)),
    }
}

fn build(
    f: &Found,
    shared_data: Option<&Path>,
    today: chrono::NaiveDate,
    shared_n: &mut usize,
) -> Result<Test, ExternalError> {
    let (meta, source) = metadata(f)?;
    let meta_path = match source {
        MetaSource::KolaJson => f.kola_json.clone().unwrap_or_default(),
        _ => f.executable.clone(),
    };
    let bad_value = |reason: String| ExternalError::Malformed {
        path: meta_path.clone(),
        line: match source {
            MetaSource::JsonHeader(l) | MetaSource::YamlHeader(l) => l,
            _ => 1,
        },
        reason,
    };
    let mut unsupported = meta.unsupported(today).map_err(bad_value)?;
    let exclusive = meta.exclusive.unwrap_or(true);
    let (unit, data_dest) = if exclusive {
        (UNIT.to_string(), DATA_DEST.to_string())
    } else {
        *shared_n += 1;
        (
            format!("kola-runext-{shared_n}.service"),
            format!("{DATA_DEST}-{shared_n}"),
        )
    };
    let mut data: Vec<PathBuf> = shared_data.map(Path::to_path_buf).into_iter().collect();
    if let Some(own) = &f.data {
        if !data.contains(own) {
            data.push(own.clone());
        }
    }
    let spec = Arc::new(ExternalTest {
        name: f.name.clone(),
        executable: f.executable.clone(),
        data,
        unit,
        data_dest,
        reboots: exclusive,
    });
    let mut t = Test::new(&f.name, move |c| guest::run(c, spec.clone())).distros(&[]);
    t.tags.push(EXTERNAL_TAG.to_string());
    meta.apply(&mut t).map_err(bad_value)?;
    if t.description.is_empty() {
        t.description = format!("external test {}", f.executable.display());
    }
    if let Some(p) = &f.config_ign {
        t.config = Some(read_ignition(p)?);
    } else if let Some(p) = &f.config_bu {
        match which("butane") {
            Some(butane) => {
                let strict = meta.allow_config_warnings != Some(true);
                t.config = Some(from_butane(&butane, p, strict)?);
            }
            None => unsupported.push(format!(
                "{} (Butane needs the butane binary on the PATH)",
                p.display()
            )),
        }
    }
    if !unsupported.is_empty() {
        t.unsupported = Some(format!(
            "not supported by bogie yet: {} (from {})",
            unsupported.join(", "),
            meta_path.display()
        ));
    }
    Ok(t)
}

/// Reads a `config.ign` (any spec); errors name the file and line.
fn read_ignition(p: &Path) -> Result<Config, ExternalError> {
    let text = std::fs::read_to_string(p).map_err(|e| ExternalError::Io {
        path: p.to_path_buf(),
        source: e,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| ExternalError::Malformed {
        path: p.to_path_buf(),
        line: e.line().max(1),
        reason: format!("malformed Ignition config: {e}"),
    })?;
    Config::from_value(value).map_err(|e| ExternalError::Malformed {
        path: p.to_path_buf(),
        line: 1,
        reason: e.to_string(),
    })
}

/// Translates a `config.bu` with the `butane` binary (its directory is `--files-dir`).
fn from_butane(butane: &Path, p: &Path, strict: bool) -> Result<Config, ExternalError> {
    let mut cmd = std::process::Command::new(butane);
    if strict {
        cmd.arg("--strict");
    }
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        cmd.arg("--files-dir").arg(dir);
    }
    let invalid = |reason: String| ExternalError::Invalid {
        path: p.to_path_buf(),
        reason,
    };
    let out = cmd
        .arg(p)
        .output()
        .map_err(|e| invalid(format!("running butane: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(invalid(format!(
            "butane: {}",
            err.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Config::from_json(&text).map_err(|e| invalid(format!("butane's output: {e}")))
}

fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Writes `root/rel` with `mode`, making its directories (for the tests of this module).
#[cfg(test)]
pub(crate) fn write_test_file(root: &Path, rel: &str, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::write_test_file as write;

    #[test]
    fn loading_applies_metadata_configs_and_skips_what_bogie_cannot_honour() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("proj");
        let k = p.join("tests/kola");
        write(
            &k,
            "suite/kola.json",
            r#"{"exclusive": false, "tags": "smoke"}"#,
            0o644,
        );
        write(&k, "suite/a", "#!/bin/sh\n", 0o755);
        write(
            &k,
            "suite/b",
            "#!/bin/sh\n# kola: {\"tags\": \"own\"}\n",
            0o755,
        );
        write(
            &k,
            "cfg/config.ign",
            r#"{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"/etc/x"}]}}"#,
            0o644,
        );
        write(&k, "cfg/test.sh", "#!/bin/sh\n", 0o755);
        write(
            &k,
            "nics",
            "#!/bin/sh\n## kola:\n##   additionalNics: 2\n",
            0o755,
        );
        write(
            &k,
            "inject",
            "#!/bin/sh\n## kola:\n##   injectContainer: true\n",
            0o755,
        );
        let tests = load(std::slice::from_ref(&p)).unwrap();
        let by = |n: &str| tests.iter().find(|t| t.name == n).unwrap();
        let a = by("ext.proj.suite.a");
        assert!(a.non_exclusive && a.has_tag("smoke") && a.has_tag(EXTERNAL_TAG));
        assert!(
            a.distros.is_empty(),
            "external tests run on every distro by default"
        );
        let b = by("ext.proj.suite.b");
        assert!(!b.non_exclusive, "a header replaces kola.json whole");
        assert!(b.has_tag("own") && !b.has_tag("smoke"));
        assert_eq!(
            by("ext.proj.cfg").config.as_ref().unwrap().version(),
            "3.0.0"
        );
        let nics = by("ext.proj.nics");
        assert!(nics.unsupported.is_none(), "{:?}", nics.unsupported);
        assert_eq!(nics.extra_nics, 2);
        assert!(nics.requires.iter().any(|r| r == "extra-nic"));
        let inject = by("ext.proj.inject");
        let why = inject.unsupported.as_deref().unwrap();
        assert!(why.contains("injectContainer"), "{why}");
        assert!(a.unsupported.is_none());

        // The same basename twice.
        let other = tmp.path().join("again/proj");
        write(&other, "tests/kola/suite/a", "#!/bin/sh\n", 0o755);
        let e = load(&[p.clone(), other]).unwrap_err().to_string();
        assert!(
            e.starts_with("two external tests are named ext.proj.suite.a"),
            "{e}"
        );
        // A malformed config names its file and line.
        write(&k, "cfg/config.ign", "{\n  \"ignition\": \n}", 0o644);
        let e = load(&[p]).unwrap_err().to_string();
        assert!(
            e.contains("cfg/config.ign:3: malformed Ignition config"),
            "{e}"
        );
    }

    #[test]
    fn butane_configs_need_butane() {
        if which("butane").is_some() {
            eprintln!("skipped: butane is on the PATH here");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("proj");
        write(
            &p,
            "tests/kola/bu/config.bu",
            "variant: fcos\nversion: 1.4.0\n",
            0o644,
        );
        write(&p, "tests/kola/bu/test.sh", "#!/bin/sh\n", 0o755);
        let tests = load(&[p]).unwrap();
        let why = tests[0].unsupported.as_deref().unwrap();
        assert!(
            why.contains("config.bu (Butane needs the butane binary"),
            "{why}"
        );
    }
}
