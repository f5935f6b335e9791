//! The operations of an API description, and checking a request against them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

use crate::docs::{normalize, Docs, Node, RefStyle};
use crate::schema::{Checker, Mode};
use crate::StubError;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    /// A path segment.
    Path,
    /// The query string.
    Query,
    /// A header (not checked).
    Header,
}

/// A parameter of an operation.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Where it goes.
    pub location: In,
    /// Whether it must be present.
    pub required: bool,
    /// Its schema (type, enum, pattern), with the file it lives in.
    pub schema: Node,
    /// For Azure's `api-version`: the version of the document that declares the operation.
    pub doc_version: Option<String>,
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    /// `{name}`: one segment.
    Var(String),
    /// A segment mixing text and `{name}`s.
    Mixed(Regex, Vec<String>),
    /// `{+name}`: the rest of the path.
    Rest(String),
}

/// One operation of the description.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `operationId` (Discovery: the method id, `compute.instances.insert`).
    pub id: String,
    /// Upper-case HTTP method.
    pub method: String,
    /// The path template as written.
    pub template: String,
    segs: Vec<Seg>,
    /// The parameters.
    pub params: Vec<Param>,
    /// The request body schema and whether a body is required.
    pub body: Option<(Node, bool)>,
    /// Response schemas by status code (`200`, `default`).
    pub responses: BTreeMap<String, Node>,
}

/// Which description format a [`Spec`] was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Swagger 2.0 (Azure Resource Manager).
    Swagger2,
    /// OpenAPI 3 (Equinix Metal).
    OpenApi3,
    /// Google API Discovery (GCE).
    Discovery,
}

/// A loaded API description.
#[derive(Debug)]
pub struct Spec {
    /// The format.
    pub format: Format,
    /// The path prefix requests carry before the operations' paths (`/compute/v1`,
    /// `/metal/v1`, empty for ARM).
    pub base_path: String,
    /// The operations.
    pub operations: Vec<Operation>,
    /// The documents, for schema checks.
    pub docs: Docs,
    /// Query parameters every operation accepts (Discovery's global ones).
    pub global_query: Vec<Param>,
}

/// A request that the description allows, with what was matched.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The operation.
    pub operation: String,
    /// The path parameters.
    pub path_params: BTreeMap<String, String>,
}

fn compile_segs(template: &str) -> Result<Vec<Seg>, StubError> {
    let mut out = Vec::new();
    for seg in template.trim_start_matches('/').split('/') {
        if seg.is_empty() {
            continue;
        }
        if let Some(name) = seg.strip_prefix("{+").and_then(|s| s.strip_suffix('}')) {
            out.push(Seg::Rest(name.to_string()));
        } else if seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1 {
            out.push(Seg::Var(seg[1..seg.len() - 1].to_string()));
        } else if seg.contains('{') {
            let mut re = String::from("^");
            let mut names = Vec::new();
            let mut rest = seg;
            while let Some(open) = rest.find('{') {
                re.push_str(&regex::escape(&rest[..open]));
                let close = rest[open..]
                    .find('}')
                    .ok_or_else(|| StubError::Load(format!("bad path template {template}")))?
                    + open;
                names.push(rest[open + 1..close].to_string());
                re.push_str("([^/]+?)");
                rest = &rest[close + 1..];
            }
            re.push_str(&regex::escape(rest));
            re.push('$');
            let re = Regex::new(&re).map_err(|e| StubError::Load(e.to_string()))?;
            out.push(Seg::Mixed(re, names));
        } else {
            out.push(Seg::Lit(seg.to_string()));
        }
    }
    Ok(out)
}

/// Matches path segments; returns the parameters and how many literal segments matched.
fn match_segs(segs: &[Seg], parts: &[String]) -> Option<(BTreeMap<String, String>, usize)> {
    let mut params = BTreeMap::new();
    let mut lits = 0;
    let mut i = 0;
    for (k, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Rest(name) => {
                if i >= parts.len() || k != segs.len() - 1 {
                    return None;
                }
                params.insert(name.clone(), parts[i..].join("/"));
                return Some((params, lits));
            }
            _ if i >= parts.len() => return None,
            Seg::Lit(l) => {
                if *l != parts[i] {
                    return None;
                }
                lits += 1;
            }
            Seg::Var(name) => {
                if parts[i].is_empty() {
                    return None;
                }
                params.insert(name.clone(), parts[i].clone());
            }
            Seg::Mixed(re, names) => {
                let c = re.captures(&parts[i])?;
                for (j, n) in names.iter().enumerate() {
                    params.insert(n.clone(), c.get(j + 1)?.as_str().to_string());
                }
                lits += 1;
            }
        }
        i += 1;
    }
    (i == parts.len()).then_some((params, lits))
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

impl Spec {
    /// Loads Swagger 2.0 files (Azure ARM): every path of every file.
    pub fn swagger2(files: &[PathBuf]) -> Result<Spec, StubError> {
        let docs = Docs::new(RefStyle::JsonPointer);
        let mut operations = Vec::new();
        for f in files {
            let doc = Arc::new(normalize(f));
            let root = docs.load(&doc)?;
            let version = root
                .pointer("/info/version")
                .and_then(Value::as_str)
                .map(str::to_string);
            let Some(paths) = root.get("paths").and_then(Value::as_object) else {
                continue;
            };
            for (template, item) in paths {
                let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
                for m in METHODS {
                    let Some(op) = item.get(m) else { continue };
                    let mut params = Vec::new();
                    let mut body = None;
                    let all = shared.as_array().into_iter().flatten().chain(
                        op.get("parameters")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten(),
                    );
                    for p in all {
                        let p = docs.resolve(&Node {
                            doc: doc.clone(),
                            value: p.clone(),
                        })?;
                        let name = p
                            .value
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        let required =
                            p.value.get("required").and_then(Value::as_bool) == Some(true);
                        match p.value.get("in").and_then(Value::as_str) {
                            Some("body") => {
                                let schema = p.value.get("schema").cloned().unwrap_or(Value::Null);
                                body = Some((
                                    Node {
                                        doc: p.doc.clone(),
                                        value: schema,
                                    },
                                    required,
                                ));
                            }
                            Some(loc @ ("path" | "query" | "header")) => {
                                let location = match loc {
                                    "path" => In::Path,
                                    "query" => In::Query,
                                    _ => In::Header,
                                };
                                // Operation-level parameters override path-level ones.
                                params.retain(|x: &Param| {
                                    !(x.name == name && x.location == location)
                                });
                                params.push(Param {
                                    name,
                                    location,
                                    required: required || location == In::Path,
                                    schema: p.clone(),
                                    doc_version: version.clone(),
                                });
                            }
                            _ => {}
                        }
                    }
                    let mut responses = BTreeMap::new();
                    for (code, r) in op
                        .get("responses")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let r = docs.resolve(&Node {
                            doc: doc.clone(),
                            value: r.clone(),
                        })?;
                        if let Some(s) = r.value.get("schema") {
                            responses.insert(
                                code.clone(),
                                Node {
                                    doc: r.doc.clone(),
                                    value: s.clone(),
                                },
                            );
                        }
                    }
                    operations.push(Operation {
                        id: op
                            .get("operationId")
                            .and_then(Value::as_str)
                            .unwrap_or(template)
                            .to_string(),
                        method: m.to_uppercase(),
                        template: template.clone(),
                        segs: compile_segs(template)?,
                        params,
                        body,
                        responses,
                    });
                }
            }
        }
        Ok(Spec {
            format: Format::Swagger2,
            base_path: String::new(),
            operations,
            docs,
            global_query: Vec::new(),
        })
    }

    /// Loads an OpenAPI 3 document (Equinix Metal), following path items split into files.
    pub fn openapi3(root_file: &Path) -> Result<Spec, StubError> {
        let docs = Docs::new(RefStyle::JsonPointer);
        let root_doc = Arc::new(normalize(root_file));
        let root = docs.load(&root_doc)?;
        let base_path = root
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_default();
        let mut operations = Vec::new();
        for (template, item) in root
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let item = docs.resolve(&Node {
                doc: root_doc.clone(),
                value: item.clone(),
            })?;
            let shared = item.value.get("parameters").cloned().unwrap_or(Value::Null);
            for m in METHODS {
                let Some(op) = item.value.get(m) else {
                    continue;
                };
                let mut params: Vec<Param> = Vec::new();
                let all = shared.as_array().into_iter().flatten().chain(
                    op.get("parameters")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten(),
                );
                for p in all {
                    let p = docs.resolve(&Node {
                        doc: item.doc.clone(),
                        value: p.clone(),
                    })?;
                    let name = p
                        .value
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let location = match p.value.get("in").and_then(Value::as_str) {
                        Some("path") => In::Path,
                        Some("query") => In::Query,
                        _ => In::Header,
                    };
                    let schema = Node {
                        doc: p.doc.clone(),
                        value: p.value.get("schema").cloned().unwrap_or(Value::Null),
                    };
                    params.retain(|x| !(x.name == name && x.location == location));
                    params.push(Param {
                        required: p.value.get("required").and_then(Value::as_bool) == Some(true)
                            || location == In::Path,
                        name,
                        location,
                        schema,
                        doc_version: None,
                    });
                }
                let mut body = None;
                if let Some(rb) = op.get("requestBody") {
                    let rb = docs.resolve(&Node {
                        doc: item.doc.clone(),
                        value: rb.clone(),
                    })?;
                    if let Some(s) = rb.value.pointer("/content/application~1json/schema") {
                        body = Some((
                            Node {
                                doc: rb.doc.clone(),
                                value: s.clone(),
                            },
                            rb.value.get("required").and_then(Value::as_bool) == Some(true),
                        ));
                    }
                }
                let mut responses = BTreeMap::new();
                for (code, r) in op
                    .get("responses")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let r = docs.resolve(&Node {
                        doc: item.doc.clone(),
                        value: r.clone(),
                    })?;
                    if let Some(s) = r.value.pointer("/content/application~1json/schema") {
                        responses.insert(
                            code.clone(),
                            Node {
                                doc: r.doc.clone(),
                                value: s.clone(),
                            },
                        );
                    }
                }
                operations.push(Operation {
                    id: op
                        .get("operationId")
                        .and_then(Value::as_str)
                        .unwrap_or(template)
                        .to_string(),
                    method: m.to_uppercase(),
                    template: template.clone(),
                    segs: compile_segs(template)?,
                    params,
                    body,
                    responses,
                });
            }
        }
        Ok(Spec {
            format: Format::OpenApi3,
            base_path,
            operations,
            docs,
            global_query: Vec::new(),
        })
    }

    /// Loads a Google API Discovery document (GCE).
    pub fn discovery(file: &Path) -> Result<Spec, StubError> {
        let docs = Docs::new(RefStyle::DiscoveryName);
        let doc = Arc::new(normalize(file));
        let root = docs.load(&doc)?;
        let base_path = format!(
            "/{}",
            root.get("servicePath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_matches('/')
        );
        let to_param = |name: &str, p: &Value| {
            let location = match p.get("location").and_then(Value::as_str) {
                Some("path") => In::Path,
                _ => In::Query,
            };
            Param {
                name: name.to_string(),
                location,
                required: p.get("required").and_then(Value::as_bool) == Some(true)
                    || location == In::Path,
                schema: Node {
                    doc: doc.clone(),
                    value: p.clone(),
                },
                doc_version: None,
            }
        };
        let global_query = root
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(n, p)| to_param(n, p))
            .collect();
        let mut operations = Vec::new();
        let mut stack: Vec<&Value> = vec![&root];
        while let Some(node) = stack.pop() {
            for (_, res) in node
                .get("resources")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                stack.push(res);
                for (_, m) in res
                    .get("methods")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let template = m
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let params = m
                        .get("parameters")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(n, p)| to_param(n, p))
                        .collect();
                    let body = m.get("request").map(|r| {
                        (
                            Node {
                                doc: doc.clone(),
                                value: r.clone(),
                            },
                            true,
                        )
                    });
                    let mut responses = BTreeMap::new();
                    if let Some(r) = m.get("response") {
                        responses.insert(
                            "200".to_string(),
                            Node {
                                doc: doc.clone(),
                                value: r.clone(),
                            },
                        );
                    }
                    operations.push(Operation {
                        id: m
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        method: m
                            .get("httpMethod")
                            .and_then(Value::as_str)
                            .unwrap_or("GET")
                            .to_uppercase(),
                        segs: compile_segs(&template)?,
                        template,
                        params,
                        body,
                        responses,
                    });
                }
            }
        }
        Ok(Spec {
            format: Format::Discovery,
            base_path,
            operations,
            docs,
            global_query,
        })
    }

    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }

    /// Checks a request. `path` is the URL path as sent (percent-encoded), `query` the
    /// decoded query pairs, `body` the raw body. Returns the matched operation, or every
    /// reason the description does not allow the request.
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: &[u8],
    ) -> Result<Matched, Vec<String>> {
        let Some(rest) = path.strip_prefix(self.base_path.as_str()) else {
            return Err(vec![format!(
                "path {path} is outside the API's base path {}",
                self.base_path
            )]);
        };
        let parts: Vec<String> = rest
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                urlencoding::decode(s)
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| s.to_string())
            })
            .collect();
        let mut best: Option<(&Operation, BTreeMap<String, String>, usize)> = None;
        let mut path_known = false;
        for op in &self.operations {
            if let Some((params, lits)) = match_segs(&op.segs, &parts) {
                path_known = true;
                if op.method != method {
                    continue;
                }
                if best.as_ref().is_none_or(|(_, _, l)| lits > *l) {
                    best = Some((op, params, lits));
                }
            }
        }
        let Some((op, path_params, _)) = best else {
            return Err(vec![if path_known {
                format!("method {method} is not allowed on {path}")
            } else {
                format!("no operation has the path {path}")
            }]);
        };
        let mut errs = Vec::new();
        let checker = Checker::new(&self.docs, Mode::Request);
        // Path parameters.
        for (name, value) in &path_params {
            match op
                .params
                .iter()
                .find(|p| p.location == In::Path && p.name == *name)
            {
                Some(p) => self.check_scalar(p, value, &mut errs),
                None => errs.push(format!("path parameter {name} is not declared")),
            }
        }
        // Query parameters.
        let mut seen = HashSet::new();
        for (k, v) in query {
            seen.insert(k.as_str());
            let p = op
                .params
                .iter()
                .find(|p| p.location == In::Query && p.name == *k)
                .or_else(|| self.global_query.iter().find(|p| p.name == *k));
            match p {
                Some(p) => self.check_scalar(p, v, &mut errs),
                None => errs.push(format!("query parameter {k:?} is not allowed by {}", op.id)),
            }
        }
        for p in op
            .params
            .iter()
            .filter(|p| p.location == In::Query && p.required)
        {
            if !seen.contains(p.name.as_str()) {
                errs.push(format!("missing required query parameter {:?}", p.name));
            }
        }
        // Body.
        let body_text = std::str::from_utf8(body).unwrap_or("");
        let has_body = !body_text.trim().is_empty();
        match (&op.body, has_body) {
            (Some((_, true)), false) => errs.push(format!("{} requires a body", op.id)),
            (Some((schema, _)), true) => match serde_json::from_str::<Value>(body_text) {
                Ok(v) => errs.extend(checker.check(schema, &v, "body")),
                Err(e) => errs.push(format!("body is not JSON: {e}")),
            },
            (None, true) => errs.push(format!("{} takes no body", op.id)),
            _ => {}
        }
        if errs.is_empty() {
            Ok(Matched {
                operation: op.id.clone(),
                path_params,
            })
        } else {
            errs.insert(0, format!("{} {} ({}):", method, path, op.id));
            Err(errs)
        }
    }

    fn check_scalar(&self, p: &Param, value: &str, errs: &mut Vec<String>) {
        let s = match self.docs.resolve(&p.schema) {
            Ok(s) => s.value,
            Err(e) => {
                errs.push(e.to_string());
                return;
            }
        };
        // Swagger 2 puts type/enum/pattern on the parameter, OpenAPI 3 under `schema`.
        let s = s.get("schema").cloned().unwrap_or(s);
        let name = &p.name;
        if let (Some(expected), "api-version") = (&p.doc_version, name.as_str()) {
            if s.get("enum").is_none() && value != expected {
                errs.push(format!(
                    "api-version {value:?} is not the description's version {expected:?}"
                ));
            }
        }
        if let Some(en) = s.get("enum").and_then(Value::as_array) {
            let multi = s.get("type").and_then(Value::as_str) == Some("array");
            let ok = en.iter().any(|e| e.as_str() == Some(value));
            if !ok && !multi {
                errs.push(format!("parameter {name}={value:?} is not one of {en:?}"));
            }
        }
        if let Some(pat) = s.get("pattern").and_then(Value::as_str) {
            if let Ok(re) = Regex::new(&format!("^(?:{pat})$")) {
                if !re.is_match(value) {
                    errs.push(format!("parameter {name}={value:?} does not match {pat}"));
                }
            }
        }
        match s.get("type").and_then(Value::as_str) {
            Some("integer") if value.parse::<i64>().is_err() => {
                errs.push(format!("parameter {name}={value:?} is not an integer"))
            }
            Some("boolean") if value != "true" && value != "false" => {
                errs.push(format!("parameter {name}={value:?} is not a boolean"))
            }
            Some("string")
                if s.get("format").and_then(Value::as_str) == Some("int64")
                    && value.parse::<i64>().is_err() =>
            {
                errs.push(format!("parameter {name}={value:?} is not an int64"))
            }
            _ => {}
        }
        if s.get("format").and_then(Value::as_str) == Some("uuid") && !is_uuid(value) {
            errs.push(format!("parameter {name}={value:?} is not a UUID"));
        }
    }

    /// Checks a response body the stub is about to send against the operation's schema
    /// for that status (Discovery: the one response schema, for 2xx).
    pub fn check_response(&self, operation: &str, status: u16, body: &Value) -> Vec<String> {
        let Some(op) = self.operation(operation) else {
            return vec![format!("unknown operation {operation}")];
        };
        let code = status.to_string();
        let schema = op.responses.get(&code).or_else(|| {
            if self.format == Format::Discovery && (200..300).contains(&status) {
                op.responses.get("200")
            } else {
                None
            }
        });
        match schema {
            Some(s) => Checker::new(&self.docs, Mode::Response).check(s, body, "response"),
            None if (200..300).contains(&status) && !op.responses.is_empty() => {
                let declared: Vec<&String> = op.responses.keys().collect();
                vec![format!(
                    "{operation} does not declare status {status} (declares {declared:?})"
                )]
            }
            None => Vec::new(),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}
