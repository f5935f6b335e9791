//! Loading description documents (JSON or YAML) and resolving `$ref`s across files.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::StubError;

/// How `$ref`s are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefStyle {
    /// JSON Reference: `file.json#/json/pointer`, relative to the referring file.
    JsonPointer,
    /// Google Discovery: a bare schema name in the document's `schemas`.
    DiscoveryName,
}

/// A schema (or any node) and the file it lives in, for resolving its `$ref`s.
#[derive(Debug, Clone)]
pub struct Node {
    /// The file the node comes from.
    pub doc: Arc<PathBuf>,
    /// The node.
    pub value: Value,
}

/// A cache of loaded documents.
#[derive(Debug)]
pub struct Docs {
    style: RefStyle,
    cache: Mutex<HashMap<PathBuf, Arc<Value>>>,
}

/// Removes `.` and `..` components without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Follows a JSON pointer (`/a/b~1c/0`).
pub fn pointer<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    if ptr.is_empty() || ptr == "/" {
        return Some(v);
    }
    let decoded: String = ptr
        .split('/')
        .map(|s| {
            urlencoding::decode(s)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        })
        .collect::<Vec<_>>()
        .join("/");
    v.pointer(&decoded)
}

impl Docs {
    /// An empty cache.
    pub fn new(style: RefStyle) -> Docs {
        Docs {
            style,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Loads (once) a JSON or YAML file.
    pub fn load(&self, path: &Path) -> Result<Arc<Value>, StubError> {
        let path = normalize(path);
        if let Some(v) = self.cache.lock().expect("poisoned").get(&path) {
            return Ok(v.clone());
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StubError::Load(format!("{}: {e}", path.display())))?;
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let mut v: Value = if is_yaml {
            serde_saphyr::from_str(&text)
                .map_err(|e| StubError::Load(format!("{}: {e}", path.display())))?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| StubError::Load(format!("{}: {e}", path.display())))?
        };
        // Examples are documentation, and their files are not part of the set.
        strip_examples(&mut v);
        let v = Arc::new(v);
        self.cache.lock().expect("poisoned").insert(path, v.clone());
        Ok(v)
    }

    /// The node a `$ref` points to, seen from `doc`.
    pub fn follow(&self, doc: &Arc<PathBuf>, reference: &str) -> Result<Node, StubError> {
        match self.style {
            RefStyle::DiscoveryName => {
                let root = self.load(doc)?;
                let v = root
                    .get("schemas")
                    .and_then(|s| s.get(reference))
                    .ok_or_else(|| StubError::Load(format!("unresolved $ref {reference}")))?;
                Ok(Node {
                    doc: doc.clone(),
                    value: v.clone(),
                })
            }
            RefStyle::JsonPointer => {
                let (file, ptr) = match reference.split_once('#') {
                    Some((f, p)) => (f, p),
                    None => (reference, ""),
                };
                let target = if file.is_empty() {
                    doc.clone()
                } else {
                    let base = doc.parent().unwrap_or(Path::new("."));
                    Arc::new(normalize(&base.join(file)))
                };
                let root = self.load(&target)?;
                let v = pointer(&root, ptr).ok_or_else(|| {
                    StubError::Load(format!(
                        "unresolved $ref {reference} (from {})",
                        doc.display()
                    ))
                })?;
                Ok(Node {
                    doc: target,
                    value: v.clone(),
                })
            }
        }
    }

    /// Follows `$ref`s until the node has none.
    pub fn resolve(&self, node: &Node) -> Result<Node, StubError> {
        let mut cur = node.clone();
        for _ in 0..64 {
            let Some(r) = cur.value.get("$ref").and_then(Value::as_str) else {
                return Ok(cur);
            };
            let r = r.to_string();
            cur = self.follow(&cur.doc, &r)?;
        }
        Err(StubError::Load("$ref chain too deep".into()))
    }
}

fn strip_examples(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("x-ms-examples");
            for (_, c) in m.iter_mut() {
                strip_examples(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_examples),
        _ => {}
    }
}
