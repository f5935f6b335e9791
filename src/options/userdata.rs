//! `--userdata`: the config `bogie spawn` boots its machines with, read and checked
//! before anything boots.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use bogie_harness::Config;

use crate::host::which;
use crate::input_error;

/// Reads `--userdata`: Ignition JSON, or Butane YAML converted by the `butane` binary.
/// Malformed input is a one-line input error (exit 2).
pub fn load_userdata(path: &Path) -> anyhow::Result<Config> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
    let json = if text.trim_start().starts_with('{') {
        text
    } else {
        butane(path)?
    };
    let config =
        Config::from_json(&json).map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
    let version = config.version().to_string();
    let major = version.split('.').next().unwrap_or("");
    if major != "2" && major != "3" {
        return Err(input_error(format!(
            "--userdata {shown}: unsupported Ignition spec version {version:?} (expected 2.x or 3.x)"
        )));
    }
    // Debian's ignition-validate (Ignition 2.14) knows specs 3.0 to 3.3.
    if ["3.0.", "3.1.", "3.2.", "3.3."]
        .iter()
        .any(|p| version.starts_with(p))
    {
        if let Some(validator) = which("ignition-validate") {
            validate(&validator, &json)
                .map_err(|e| input_error(format!("--userdata {shown}: {e}")))?;
        }
    }
    Ok(config)
}

fn validate(validator: &Path, json: &str) -> Result<(), String> {
    let mut child = std::process::Command::new(validator)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", validator.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(json.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {}: {e}", validator.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(first_line(
        &out.stdout,
        &out.stderr,
        "invalid Ignition config",
    ))
}

fn first_line(stdout: &[u8], stderr: &[u8], default: &str) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stderr),
        String::from_utf8_lossy(stdout)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(default)
        .to_string()
}

/// Converts Butane YAML to Ignition JSON with the `butane` binary.
fn butane(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let Some(butane) = which("butane") else {
        return Err(input_error(format!(
            "--userdata {shown} is not Ignition JSON, and Butane YAML needs the butane binary on the PATH"
        )));
    };
    let mut cmd = std::process::Command::new(&butane);
    cmd.arg("--strict");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        cmd.arg("--files-dir").arg(dir);
    }
    let out = cmd
        .arg(path)
        .output()
        .map_err(|e| input_error(format!("--userdata {shown}: running butane: {e}")))?;
    if !out.status.success() {
        return Err(input_error(format!(
            "--userdata {shown}: butane: {}",
            first_line(&[], &out.stderr, "failed")
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| input_error(format!("--userdata {shown}: butane wrote invalid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userdata_json_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.ign");
        std::fs::write(
            &good,
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,hi"}}]}}"#,
        )
        .unwrap();
        let c = load_userdata(&good).unwrap();
        assert_eq!(c.version(), "3.3.0");

        let bad = d.path().join("bad.ign");
        std::fs::write(&bad, r#"{"ignition":{"version":"3.3.0"},"#).unwrap();
        let e = load_userdata(&bad).unwrap_err();
        assert!(e.downcast_ref::<crate::InputError>().is_some());
        assert!(e.to_string().contains("bad.ign"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);

        let nover = d.path().join("nover.ign");
        std::fs::write(&nover, r#"{"storage":{}}"#).unwrap();
        assert!(load_userdata(&nover)
            .unwrap_err()
            .to_string()
            .contains("ignition.version"));
    }
}
