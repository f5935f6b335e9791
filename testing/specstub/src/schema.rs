//! Checking a JSON value against a schema of the description (the JSON-Schema subset that
//! Swagger 2, OpenAPI 3 and Discovery documents use).
//!
//! Stricter than JSON Schema on purpose, because the point is catching a client's shape
//! errors: objects are closed (a field the schema does not name is an error unless
//! `additionalProperties` allows it), `readOnly` fields may not be sent in requests, enums
//! are exact, `format: byte` must be base64 and `date-time` RFC 3339.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::Value;

use crate::docs::{Docs, Node};

/// Whether a request or a response is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A client's request body: `readOnly` fields are errors.
    Request,
    /// A server's response body: `readOnly` fields are expected.
    Response,
}

/// The flattened view of an object schema (its `allOf` parts merged).
#[derive(Default)]
struct Shape {
    props: BTreeMap<String, Node>,
    required: BTreeSet<String>,
    /// None: closed; Some(None): anything; Some(Some(s)): values must match `s`.
    additional: Option<Option<Node>>,
    /// Any object part at all (properties, allOf or type object).
    saw_object: bool,
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A schema checker over a document set.
pub struct Checker<'a> {
    docs: &'a Docs,
    mode: Mode,
}

impl<'a> Checker<'a> {
    /// A checker.
    pub fn new(docs: &'a Docs, mode: Mode) -> Self {
        Checker { docs, mode }
    }

    /// Checks `value` against `schema`; returns every problem found, each prefixed with the
    /// JSON path (`body.properties.osProfile`).
    pub fn check(&self, schema: &Node, value: &Value, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        self.walk(schema, value, path, &mut errs, 0);
        errs
    }

    fn collect(&self, schema: &Node, shape: &mut Shape, depth: usize) -> Result<(), String> {
        if depth > 64 {
            return Err("schema nesting too deep".into());
        }
        let s = self.docs.resolve(schema).map_err(|e| e.to_string())?;
        let v = &s.value;
        if let Some(all) = v.get("allOf").and_then(Value::as_array) {
            shape.saw_object = true;
            for part in all {
                self.collect(
                    &Node {
                        doc: s.doc.clone(),
                        value: part.clone(),
                    },
                    shape,
                    depth + 1,
                )?;
            }
        }
        if let Some(props) = v.get("properties").and_then(Value::as_object) {
            shape.saw_object = true;
            for (k, p) in props {
                shape.props.entry(k.clone()).or_insert_with(|| Node {
                    doc: s.doc.clone(),
                    value: p.clone(),
                });
            }
        }
        if v.get("type").and_then(Value::as_str) == Some("object") {
            shape.saw_object = true;
        }
        if let Some(req) = v.get("required").and_then(Value::as_array) {
            shape
                .required
                .extend(req.iter().filter_map(Value::as_str).map(str::to_string));
        }
        match v.get("additionalProperties") {
            Some(Value::Bool(true)) => shape.additional = Some(None),
            Some(Value::Object(m)) if m.is_empty() => shape.additional = Some(None),
            Some(a @ Value::Object(_)) if !matches!(shape.additional, Some(None)) => {
                shape.additional = Some(Some(Node {
                    doc: s.doc.clone(),
                    value: a.clone(),
                }));
            }
            _ => {}
        }
        Ok(())
    }

    fn walk(&self, schema: &Node, value: &Value, path: &str, errs: &mut Vec<String>, depth: usize) {
        if depth > 64 {
            errs.push(format!("{path}: schema nesting too deep"));
            return;
        }
        let s = match self.docs.resolve(schema) {
            Ok(s) => s,
            Err(e) => {
                errs.push(format!("{path}: {e}"));
                return;
            }
        };
        let v = &s.value;
        if value.is_null() {
            let nullable = v.get("nullable").and_then(Value::as_bool) == Some(true)
                || v.get("x-nullable").and_then(Value::as_bool) == Some(true);
            if !nullable {
                errs.push(format!("{path}: null is not allowed"));
            }
            return;
        }
        for (kw, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(alts) = v.get(kw).and_then(Value::as_array) {
                let mut ok = 0;
                let mut why = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    let mut e = Vec::new();
                    self.walk(
                        &Node {
                            doc: s.doc.clone(),
                            value: alt.clone(),
                        },
                        value,
                        path,
                        &mut e,
                        depth + 1,
                    );
                    if e.is_empty() {
                        ok += 1;
                    } else {
                        let name = alt
                            .get("$ref")
                            .and_then(Value::as_str)
                            .map(|r| r.rsplit('/').next().unwrap_or(r).to_string())
                            .unwrap_or_else(|| format!("#{i}"));
                        why.push(format!("{name}: {}", e.join("; ")));
                    }
                }
                if ok == 0 {
                    errs.push(format!(
                        "{path}: matches none of the {kw} alternatives ({})",
                        why.join(" | ")
                    ));
                    return;
                }
                if exactly_one && ok > 1 {
                    errs.push(format!("{path}: matches {ok} of the oneOf alternatives"));
                    return;
                }
                // The alternatives were checked; sibling keywords rarely matter here.
                if v.get("properties").is_none() && v.get("allOf").is_none() {
                    return;
                }
            }
        }
        // Azure's extensible enums (`x-ms-enum: {modelAsString: true}`) accept any string.
        let extensible = v
            .pointer("/x-ms-enum/modelAsString")
            .and_then(Value::as_bool)
            == Some(true);
        if let Some(en) = v
            .get("enum")
            .and_then(Value::as_array)
            .filter(|_| !extensible)
        {
            if !en.contains(value) {
                let shown: Vec<String> = en.iter().take(12).map(Value::to_string).collect();
                errs.push(format!(
                    "{path}: {value} is not one of the allowed values ({})",
                    shown.join(", ")
                ));
                return;
            }
        }
        let ty = v.get("type").and_then(Value::as_str);
        let is_object =
            ty == Some("object") || v.get("properties").is_some() || v.get("allOf").is_some();
        if is_object {
            self.object(&s, value, path, errs, depth);
            return;
        }
        match ty {
            Some("array") => {
                let Some(items) = value.as_array() else {
                    errs.push(format!("{path}: expected an array, got {}", type_of(value)));
                    return;
                };
                if let Some(item_schema) = v.get("items") {
                    let n = Node {
                        doc: s.doc.clone(),
                        value: item_schema.clone(),
                    };
                    for (i, it) in items.iter().enumerate() {
                        self.walk(&n, it, &format!("{path}[{i}]"), errs, depth + 1);
                    }
                }
            }
            Some("string") => {
                let Some(text) = value.as_str() else {
                    errs.push(format!("{path}: expected a string, got {}", type_of(value)));
                    return;
                };
                match v.get("format").and_then(Value::as_str) {
                    Some("byte") => {
                        let engines = [
                            base64::engine::general_purpose::STANDARD,
                            base64::engine::general_purpose::URL_SAFE,
                        ];
                        if !engines.iter().any(|e| e.decode(text).is_ok()) {
                            errs.push(format!("{path}: not base64 (format byte)"));
                        }
                    }
                    Some("date-time") if chrono::DateTime::parse_from_rfc3339(text).is_err() => {
                        errs.push(format!("{path}: {text:?} is not an RFC 3339 date-time"));
                    }
                    Some("int64" | "uint64") if text.parse::<i128>().is_err() => {
                        errs.push(format!("{path}: {text:?} is not an integer string"));
                    }
                    _ => {}
                }
            }
            Some("integer") => {
                if type_of(value) != "integer" {
                    errs.push(format!(
                        "{path}: expected an integer, got {}",
                        type_of(value)
                    ));
                }
            }
            Some("number") => {
                if !value.is_number() {
                    errs.push(format!("{path}: expected a number, got {}", type_of(value)));
                }
            }
            Some("boolean") => {
                if !value.is_boolean() {
                    errs.push(format!(
                        "{path}: expected a boolean, got {}",
                        type_of(value)
                    ));
                }
            }
            Some("any") | None => {}
            Some(other) => errs.push(format!("{path}: unknown schema type {other}")),
        }
    }

    fn object(&self, s: &Node, value: &Value, path: &str, errs: &mut Vec<String>, depth: usize) {
        let Some(obj) = value.as_object() else {
            errs.push(format!(
                "{path}: expected an object, got {}",
                type_of(value)
            ));
            return;
        };
        let mut shape = Shape::default();
        if let Err(e) = self.collect(s, &mut shape, depth) {
            errs.push(format!("{path}: {e}"));
            return;
        }
        // A bare `type: object` names no fields: a free-form object.
        let free_form = shape.props.is_empty() && shape.additional.is_none();
        for (k, val) in obj {
            let sub = format!("{path}.{k}");
            if let Some(p) = shape.props.get(k) {
                if self.mode == Mode::Request {
                    let resolved = self.docs.resolve(p).map(|n| n.value).unwrap_or_default();
                    let ro = p.value.get("readOnly").and_then(Value::as_bool) == Some(true)
                        || resolved.get("readOnly").and_then(Value::as_bool) == Some(true);
                    if ro {
                        errs.push(format!("{sub}: read-only field sent in a request"));
                        continue;
                    }
                }
                self.walk(p, val, &sub, errs, depth + 1);
            } else {
                match &shape.additional {
                    Some(Some(a)) => self.walk(a, val, &sub, errs, depth + 1),
                    Some(None) => {}
                    None if free_form => {}
                    None => {
                        let known: Vec<&str> =
                            shape.props.keys().map(String::as_str).take(40).collect();
                        errs.push(format!(
                            "{sub}: field not in the schema (known: {})",
                            known.join(", ")
                        ));
                    }
                }
            }
        }
        for r in &shape.required {
            if !obj.contains_key(r) {
                errs.push(format!("{path}: missing required field {r:?}"));
            }
        }
    }
}
