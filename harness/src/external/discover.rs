//! Finding external tests and naming them, by coreos-assembler's rules: every executable
//! (the others-execute bit set, symlinks followed) under `DIR/tests/kola/` is a test named
//! `ext.<basename of DIR>` + `.<subdirectory>` per level + `.<file>`; a directory whose only
//! executable is `test.sh` gives its own name alone. In each directory `data` (a directory
//! or a link to one) is the tests' data, not a level; `config.ign` / `config.bu` is their
//! Ignition config and `kola.json` their metadata; other files are ignored (with a warning
//! when they start with `#!`, the usual sign of a test that lost its execute bit).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ExternalError;

/// The directory under `-E DIR` that holds the tests.
pub const TESTS_DIR: &str = "tests/kola";
/// The name of a lone test whose directory names it.
pub const DEFAULT_TEST: &str = "test.sh";
/// The name of a test directory's data directory.
pub const DATA_DIR: &str = "data";

/// One executable found: a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The test's name (`ext.demo.basic.pass`).
    pub name: String,
    /// The executable, as `DIR/tests/kola/...` with `DIR` as given.
    pub executable: PathBuf,
    /// Its directory's `data` directory (links resolved), when there is one.
    pub data: Option<PathBuf>,
    /// Its directory's `config.ign`.
    pub config_ign: Option<PathBuf>,
    /// Its directory's `config.bu`.
    pub config_bu: Option<PathBuf>,
    /// Its directory's `kola.json`.
    pub kola_json: Option<PathBuf>,
}

/// What one `-E DIR` holds.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The tests, in the order of their paths.
    pub tests: Vec<Found>,
    /// `DIR/tests/kola/data` (links resolved), shared by every test of the tree.
    pub shared_data: Option<PathBuf>,
    /// Things a test writer should know (a non-executable file with `#!`, a broken link).
    pub warnings: Vec<String>,
}

/// The prefix of every test name under `dir`: `ext.<basename of dir>` (`-E .` names the
/// current directory).
pub fn prefix(dir: &Path) -> Result<String, ExternalError> {
    let canon = std::fs::canonicalize(dir).map_err(|e| ExternalError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let base = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base.is_empty() {
        return Err(ExternalError::Invalid {
            path: dir.to_path_buf(),
            reason: "an external test directory needs a name (its basename names the tests)".into(),
        });
    }
    Ok(format!("ext.{base}"))
}

/// Finds the tests under `dir/tests/kola`.
pub fn discover(dir: &Path) -> Result<Discovery, ExternalError> {
    let root = dir.join(TESTS_DIR);
    if !root.is_dir() {
        return Err(ExternalError::Invalid {
            path: dir.to_path_buf(),
            reason: format!("no {TESTS_DIR} directory: external tests live in DIR/{TESTS_DIR}/"),
        });
    }
    let mut d = Discovery::default();
    let mut stack = Vec::new();
    let shared = walk(&root, &prefix(dir)?, &mut d, &mut stack)?;
    d.shared_data = shared;
    Ok(d)
}

/// Walks one directory; returns its `data` directory.
///
/// Long on purpose: kola's naming rules (a `test.sh` names its directory, other
/// executables are named by their path, `data` and `config.*` are not tests, links and
/// missing execute bits are warned about) read best as the one traversal that applies them.
fn walk(
    dir: &Path,
    prefix: &str,
    d: &mut Discovery,
    stack: &mut Vec<PathBuf>,
) -> Result<Option<PathBuf>, ExternalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| ExternalError::Io { path, source: e }
    };
    let canon = std::fs::canonicalize(dir).map_err(io(dir))?;
    if stack.contains(&canon) {
        d.warnings.push(format!(
            "{}: a link back to a directory above it; not followed",
            dir.display()
        ));
        return Ok(None);
    }
    stack.push(canon);
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut executables = Vec::new();
    let mut data = None;
    let (mut ign, mut bu, mut kola_json) = (None, None, None);
    let mut subdirs = Vec::new();
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Follow links, as kola does.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                d.warnings.push(format!(
                    "{}: {err} (a broken link?); ignored",
                    path.display()
                ));
                continue;
            }
        };
        if meta.is_file() {
            if meta.permissions().mode() & 0o001 != 0 {
                executables.push((name, path));
            } else if name == "config.ign" {
                ign = Some(path);
            } else if name == "config.bu" {
                bu = Some(path);
            } else if name == "config.fcc" {
                return Err(ExternalError::Invalid {
                    path,
                    reason: "config.fcc is not supported any more: rename it to config.bu".into(),
                });
            } else if name == "kola.json" {
                kola_json = Some(path);
            } else if starts_with_shebang(&path) {
                d.warnings.push(format!(
                    "{}: starts with #! but is not executable by others, so it is not a test (chmod a+x)",
                    path.display()
                ));
            }
        } else if meta.is_dir() {
            if name == DATA_DIR {
                data = Some(std::fs::canonicalize(&path).map_err(io(&path))?);
            } else {
                subdirs.push((name, path));
            }
        }
    }
    if let (Some(i), Some(b)) = (&ign, &bu) {
        return Err(ExternalError::Invalid {
            path: b.clone(),
            reason: format!("both {} and config.bu: keep one", i.display()),
        });
    }
    let lone = executables.len() == 1 && executables[0].0 == DEFAULT_TEST;
    for (name, path) in executables {
        d.tests.push(Found {
            name: if lone {
                prefix.to_string()
            } else {
                format!("{prefix}.{name}")
            },
            executable: path,
            data: data.clone(),
            config_ign: ign.clone(),
            config_bu: bu.clone(),
            kola_json: kola_json.clone(),
        });
    }
    for (name, path) in subdirs {
        walk(&path, &format!("{prefix}.{name}"), d, stack)?;
    }
    stack.pop();
    Ok(data)
}

fn starts_with_shebang(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
        && &buf == b"#!"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::write_test_file as write;
    use std::os::unix::fs::symlink;

    /// Every case of kola's naming rules on one synthetic tree (long: one tree, every
    /// case, so the cases are seen side by side).
    #[test]
    fn names_follow_kolas_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("my-os");
        let k = proj.join(TESTS_DIR);
        let x = 0o755;
        // A lone test.sh: the directory's name alone.
        write(&k, "ignition/hostname/test.sh", "#!/bin/sh\n", x);
        write(&k, "ignition/hostname/config.ign", "{}", 0o644);
        // test.sh with a sibling executable: both by file name.
        write(&k, "pair/test.sh", "#!/bin/sh\n", x);
        write(&k, "pair/other", "#!/bin/sh\n", x);
        // Nested directories, one level per name part; top-level executables.
        write(&k, "a/b/c/deep", "#!/bin/sh\n", x);
        write(&k, "top", "#!/bin/sh\n", x);
        // Executable by owner and group only: not a test (kola checks the others bit);
        // a non-executable script: ignored with a warning; a plain file: ignored.
        write(&k, "perm/owner-only", "#!/bin/sh\n", 0o750);
        write(&k, "perm/README.md", "notes\n", 0o644);
        write(&k, "perm/ok", "#!/bin/sh\n", 0o701);
        // data directories (and a link named data) are not levels; what is in them is no test.
        write(&k, "files/test.sh", "#!/bin/sh\n", x);
        write(&k, "files/data/helper.sh", "#!/bin/sh\n", x);
        write(&k, "data/commonlib.sh", "#!/bin/sh\n", x);
        write(&k, "linked/test.sh", "#!/bin/sh\n", x);
        symlink("../data", k.join("linked/data")).unwrap();
        // kola.json beside a directory of tests: not a test; no name for its directory.
        write(&k, "suite/kola.json", "{\"exclusive\": false}", 0o644);
        write(&k, "suite/one/test.sh", "#!/bin/sh\n", x);
        write(&k, "suite/two", "#!/bin/sh\n", x);
        // Symlinks are followed: to an executable, to a directory of tests; broken: warned.
        symlink("../top", k.join("a/alias")).unwrap();
        std::fs::create_dir_all(tmp.path().join("elsewhere")).unwrap();
        write(tmp.path(), "elsewhere/test.sh", "#!/bin/sh\n", x);
        symlink(tmp.path().join("elsewhere"), k.join("outside")).unwrap();
        symlink("nowhere", k.join("broken")).unwrap();
        // A link back up the tree is not followed forever.
        symlink("..", k.join("a/b/up")).unwrap();

        let d = discover(&proj).unwrap();
        let names: Vec<&str> = d.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "ext.my-os.top",
                "ext.my-os.a.alias",
                "ext.my-os.a.b.c.deep",
                "ext.my-os.files",
                "ext.my-os.ignition.hostname",
                "ext.my-os.linked",
                "ext.my-os.outside",
                "ext.my-os.pair.other",
                "ext.my-os.pair.test.sh",
                "ext.my-os.perm.ok",
                "ext.my-os.suite.two",
                "ext.my-os.suite.one",
            ]
        );
        let by = |n: &str| d.tests.iter().find(|t| t.name == n).unwrap();
        let shared = std::fs::canonicalize(k.join("data")).unwrap();
        assert_eq!(d.shared_data.as_ref(), Some(&shared));
        assert_eq!(by("ext.my-os.linked").data.as_ref(), Some(&shared));
        assert_eq!(
            by("ext.my-os.files").data,
            Some(std::fs::canonicalize(k.join("files/data")).unwrap())
        );
        assert_eq!(by("ext.my-os.top").data.as_ref(), Some(&shared));
        assert!(by("ext.my-os.ignition.hostname").config_ign.is_some());
        assert!(by("ext.my-os.suite.two").kola_json.is_some());
        assert!(
            by("ext.my-os.suite.one").kola_json.is_none(),
            "kola.json is per directory"
        );
        assert_eq!(
            by("ext.my-os.pair.other").executable,
            proj.join("tests/kola/pair/other")
        );
        let warned = d.warnings.join("\n");
        assert!(
            warned.contains("perm/owner-only: starts with #!"),
            "{warned}"
        );
        assert!(!warned.contains("README"), "{warned}");
        assert!(warned.contains("broken"), "{warned}");
        assert!(warned.contains("a link back"), "{warned}");
    }

    #[test]
    fn dot_names_the_directory_and_missing_trees_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let proj = tmp.path().join("proj");
        write(&proj, "tests/kola/t", "#!/bin/sh\n", 0o755);
        assert_eq!(prefix(&proj.join("tests/..")).unwrap(), "ext.proj");
        let e = discover(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("no tests/kola directory"), "{e}");
        write(&proj, "tests/kola/x/config.fcc", "", 0o644);
        let e = discover(&proj).unwrap_err().to_string();
        assert!(e.contains("rename it to config.bu"), "{e}");
    }
}
