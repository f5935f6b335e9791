//! The tree keeps the shape `docs/architecture.md` describes: no two files of a crate
//! import each other, directly or round a longer loop, and no function of the harness or
//! the binary is over 80 lines unless the comment above it says why ("Long on purpose",
//! or a line that starts "(long:"). Both are read from the sources, so a change that
//! breaks them fails here with the files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source roots, relative to the workspace root.
const CRATES: &[&str] = &[
    "src",
    "harness/src",
    "diskinfo/src",
    "reports/src",
    "tests-catalog/src",
    "platforms/qemu/src",
    "platforms/common/src",
    "platforms/aws/src",
    "platforms/cloud/src",
    "platforms/external/src",
    "platforms/pxe/src",
    "testing/specstub/src",
];

/// Where functions are held to the length limit.
const LIMITED: &[&str] = &["src", "harness/src"];

const MAX_LINES: usize = 80;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's module path inside its crate (`lib.rs`/`main.rs` are the root, `a/mod.rs` is
/// `a`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The source without its test module and without comment lines.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b`, `super::a` and `child::x` paths in `text`, as module paths.
fn referenced(text: &str, module: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0
            || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if !starts_word || !(bytes[i].is_alphabetic() || bytes[i] == '_') {
            i += 1;
            continue;
        }
        // Read a path a::b::c, with `{x, y::z}` groups flattened one level.
        let mut j = i;
        let mut segs = Vec::new();
        loop {
            let s = j;
            while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_') {
                j += 1;
            }
            segs.push(bytes[s..j].iter().collect::<String>());
            if j + 2 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                j += 2;
                if bytes[j] == '{' {
                    let end = bytes[j..].iter().position(|c| *c == '}').map(|p| p + j);
                    if let Some(end) = end {
                        let inner: String = bytes[j + 1..end].iter().collect();
                        for item in inner.split(',') {
                            let mut p = segs.clone();
                            p.extend(item.trim().split("::").map(|s| s.trim().to_string()));
                            out.push(p);
                        }
                        j = end;
                    }
                    break;
                }
                if !(j < bytes.len() && (bytes[j].is_alphabetic() || bytes[j] == '_')) {
                    break;
                }
            } else {
                break;
            }
        }
        if segs.len() > 1 {
            out.push(segs);
        }
        i = j.max(i + 1);
    }
    out.into_iter()
        .map(|p| {
            let parent: Vec<String> = if is_mod_file || module.is_empty() {
                module.to_vec()
            } else {
                module[..module.len() - 1].to_vec()
            };
            match p[0].as_str() {
                "crate" => p[1..].to_vec(),
                "super" => {
                    let base = if is_mod_file {
                        module[..module.len().saturating_sub(1)].to_vec()
                    } else {
                        parent.clone()
                    };
                    base.into_iter().chain(p[1..].iter().cloned()).collect()
                }
                // A child module named without `self::`, from its parent's file.
                _ => module.iter().cloned().chain(p).collect(),
            }
        })
        .collect()
}

/// The import graph between the files of the crate under `src`.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut g = BTreeMap::new();
    for (m, f) in &modules {
        let text = code(&std::fs::read_to_string(f).unwrap());
        let is_mod_file = f.file_name().is_some_and(|n| n == "mod.rs");
        let mut deps = BTreeSet::new();
        for p in referenced(&text, m, is_mod_file) {
            // The longest prefix that is a file of this crate.
            if let Some(target) = (1..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|c| modules.contains_key(c))
            {
                if &target != m {
                    deps.insert(target);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// The loops of a graph (strongly connected parts of more than one file).
fn loops(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    let nodes: Vec<&Vec<String>> = g.keys().collect();
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for d in &g[&n] {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reachable[n].contains(*n) {
            continue;
        }
        let part: Vec<Vec<String>> = nodes
            .iter()
            .filter(|m| reachable[n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(part.iter().cloned());
        out.push(part);
    }
    out
}

#[test]
fn no_file_imports_another_that_imports_it_back() {
    let mut found = Vec::new();
    for c in CRATES {
        let src = root().join(c);
        assert!(src.is_dir(), "{c} is listed here but missing");
        for part in loops(&graph(&src)) {
            let names: Vec<String> = part
                .iter()
                .map(|m| {
                    if m.is_empty() {
                        "(root)".into()
                    } else {
                        m.join("/")
                    }
                })
                .collect();
            found.push(format!("{c}: {}", names.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// Functions longer than [`MAX_LINES`] in `text`, unless the comment above says why:
/// (name, first line, length).
fn long_functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        let t = t.strip_prefix("async ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i32;
        let mut started = false;
        let mut end = i;
        'outer: for (j, line) in lines.iter().enumerate().skip(i) {
            let line = line.split("//").next().unwrap_or("");
            let mut in_str = false;
            let mut prev = ' ';
            for ch in line.chars() {
                if ch == '"' && prev != '\\' {
                    in_str = !in_str;
                }
                if !in_str {
                    if ch == '{' {
                        depth += 1;
                        started = true;
                    } else if ch == '}' {
                        depth -= 1;
                    }
                }
                prev = ch;
            }
            if !started && line.trim_end().ends_with(';') {
                break 'outer;
            }
            if started && depth <= 0 {
                end = j;
                break 'outer;
            }
        }
        let len = end + 1 - i;
        if !started || len <= MAX_LINES {
            continue;
        }
        let reason = lines[..i]
            .iter()
            .rev()
            .take_while(|l| {
                let t = l.trim_start();
                t.starts_with("///") || t.starts_with("//") || t.starts_with("#[")
            })
            .any(|l| l.contains("Long on purpose") || l.contains("(long:"));
        if !reason {
            out.push((name, i + 1, len));
        }
    }
    out
}

#[test]
fn long_functions_say_why() {
    let mut found = Vec::new();
    for c in LIMITED {
        let mut files = Vec::new();
        rust_files(&root().join(c), &mut files);
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (name, line, len) in long_functions(&text) {
                let rel = f.strip_prefix(root()).unwrap().display().to_string();
                found.push(format!("{rel}:{line}: fn {name} is {len} lines"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_LINES} lines with no reason written above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_should() {
    // A two-file loop and a child named from its parent are found.
    let d = tempfile::tempdir().unwrap();
    let src = d.path();
    std::fs::create_dir_all(src.join("cmd")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod cmd;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(crate::a::A);\n").unwrap();
    std::fs::write(
        src.join("cmd/mod.rs"),
        "pub mod x;\npub fn run() { x::go() }\npub fn h() {}\n",
    )
    .unwrap();
    std::fs::write(src.join("cmd/x.rs"), "pub fn go() { super::h() }\n").unwrap();
    let l = loops(&graph(src));
    assert_eq!(l.len(), 2, "{l:?}");
    // A long function is found unless the comment above it gives the reason.
    let body = "    let x = 1;\n".repeat(MAX_LINES);
    let long = format!("fn f() {{\n{body}}}\n");
    assert_eq!(long_functions(&long).len(), 1);
    let why = format!("/// Long on purpose: a table.\n{long}");
    assert!(long_functions(&why).is_empty());
}
