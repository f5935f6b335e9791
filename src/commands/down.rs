//! `bogie down RUN_DIR`: tears down every machine a run kept (`kept.json` files written by
//! `run --keep-failed`, `run --remove=false` and `spawn -t`).

use std::path::{Path, PathBuf};

use crate::cli::DownArgs;
use crate::input_error;

/// Runs `bogie down`; returns 0 when every kept machine is gone (or none was left), 1 when
/// one could not be torn down.
pub fn down(args: DownArgs) -> anyhow::Result<u8> {
    let root = &args.run_dir;
    if !root.is_dir() {
        return Err(input_error(format!(
            "{} is not a run directory (no such directory)",
            root.display()
        )));
    }
    // Follow a `_kola_temp/qemu-latest` link once, then walk without following links.
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
    let mut found = Vec::new();
    find_kept(&root, &mut found, 0);
    found.sort();
    if found.is_empty() {
        println!(
            "nothing to tear down: no kept machines under {}",
            root.display()
        );
        return Ok(0);
    }
    let mut failed = 0;
    for path in &found {
        match tear_down(path) {
            Ok(line) => {
                if let Err(e) = std::fs::remove_file(path) {
                    eprintln!("warning: removing {}: {e}", path.display());
                }
                println!("{line}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", path.display());
            }
        }
    }
    Ok(u8::from(failed > 0))
}

/// Tears down one kept machine; returns what happened as a line for the user.
fn tear_down(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let desc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("not a kept-machine description: {e}"))?;
    let platform = desc
        .get("platform")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let id = desc
        .get("id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            path.parent()
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let where_ = path
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match platform {
        "qemu" => {
            let pid = desc.get("pid").and_then(serde_json::Value::as_u64);
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            if bogie_platform_qemu::down(&desc)? {
                Ok(format!("stopped qemu machine {id}{pid}: {where_}"))
            } else {
                Ok(format!(
                    "qemu machine {id}{pid} was already gone: {where_}"
                ))
            }
        }
        "" => anyhow::bail!("the description names no platform"),
        other => anyhow::bail!(
            "machines of platform {other:?} cannot be torn down by this bogie yet; remove {id} with the provider's tools"
        ),
    }
}

/// Collects `kept.json` files under `dir` (not following symlinks; bounded depth).
fn find_kept(dir: &Path, found: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        let p = e.path();
        if ft.is_dir() {
            find_kept(&p, found, depth + 1);
        } else if ft.is_file() && e.file_name() == "kept.json" {
            found.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nothing_and_says_so() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("cl.basic/m1-0000")).unwrap();
        let code = down(DownArgs {
            run_dir: d.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(code, 0);
    }

    #[test]
    fn a_dead_machine_is_cleaned_up_and_a_stranger_is_not_killed() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("spawn/m1-0000");
        std::fs::create_dir_all(&m).unwrap();
        // This test's own pid: alive, but not a QEMU for that directory.
        let kept = serde_json::json!({
            "platform": "qemu", "id": "m1-0000", "pid": std::process::id(),
            "dir": m, "disks": [],
        });
        std::fs::write(m.join("kept.json"), kept.to_string()).unwrap();
        let line = tear_down(&m.join("kept.json")).unwrap();
        assert!(line.contains("already gone"), "{line}");
        let code = down(DownArgs {
            run_dir: d.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(code, 0);
        assert!(!m.join("kept.json").exists());
    }

    #[test]
    fn other_platforms_are_refused_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("t/m1");
        std::fs::create_dir_all(&m).unwrap();
        std::fs::write(m.join("kept.json"), r#"{"platform":"aws","id":"i-123"}"#).unwrap();
        let code = down(DownArgs {
            run_dir: d.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(code, 1);
        assert!(m.join("kept.json").exists());
    }
}
