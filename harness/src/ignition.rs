//! Ignition configs built as values and rendered to spec 3.3 JSON (Debian's Ignition 2.14
//! accepts 3.0–3.3; Flatcar's accepts 2.x and 3.x).
//!
//! A [`Config`] holds the JSON document; typed builder methods add users, files, units and
//! so on, and [`Config::merge`] deep-merges anything the builders don't cover.

use base64::Engine;
use serde_json::{json, Map, Value};

/// The spec version configs render to by default.
pub const DEFAULT_SPEC: &str = "3.3.0";

/// An Ignition config document.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    value: Value,
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// Errors from parsing a user-supplied config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or not an object.
    #[error("malformed Ignition config: {0}")]
    Malformed(String),
    /// No `ignition.version` (nor spec 1's `ignitionVersion: 1`).
    #[error("malformed Ignition config: no ignition.version")]
    NoVersion,
}

/// A `data:` URL carrying `bytes` (base64), as Ignition's `contents.source` takes.
pub fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

impl Config {
    /// An empty spec-3.3 config.
    pub fn new() -> Config {
        Config {
            value: json!({ "ignition": { "version": DEFAULT_SPEC } }),
        }
    }

    /// A config from JSON text (any spec version); checks it is an object with a version
    /// (`ignition.version`, or spec 1's top-level `ignitionVersion: 1`).
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        Config::from_value(value)
    }

    /// A config from a JSON value (any spec version).
    pub fn from_value(value: Value) -> Result<Config, ConfigError> {
        if !value.is_object() {
            return Err(ConfigError::Malformed("not a JSON object".into()));
        }
        let config = Config { value };
        if config.version().is_empty() {
            return Err(ConfigError::NoVersion);
        }
        Ok(config)
    }

    /// The spec version (`3.3.0`; `1` for a spec-1 config, which carries
    /// `"ignitionVersion": 1` instead of `ignition.version`).
    pub fn version(&self) -> &str {
        if let Some(v) = self
            .value
            .pointer("/ignition/version")
            .and_then(Value::as_str)
        {
            return v;
        }
        match self.value.get("ignitionVersion").and_then(Value::as_u64) {
            Some(1) => "1",
            _ => "",
        }
    }

    /// Whether the spec is 3.x (the typed builders only write 3.x shapes).
    pub fn is_v3(&self) -> bool {
        self.version().starts_with('3')
    }

    /// The JSON value.
    pub fn as_value(&self) -> &Value {
        &self.value
    }

    /// Renders to compact JSON.
    pub fn render(&self) -> String {
        self.value.to_string()
    }

    /// Renders to pretty JSON.
    pub fn render_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.value).unwrap_or_else(|_| self.render())
    }

    fn array(&mut self, section: &str, key: &str) -> &mut Vec<Value> {
        let root = self.value.as_object_mut().expect("config is an object");
        let sec = root
            .entry(section)
            .or_insert_with(|| Value::Object(Map::new()));
        if !sec.is_object() {
            *sec = Value::Object(Map::new());
        }
        let arr = sec
            .as_object_mut()
            .expect("section is an object")
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if !arr.is_array() {
            *arr = Value::Array(Vec::new());
        }
        arr.as_array_mut().expect("is an array")
    }

    fn user_mut(&mut self, name: &str) -> &mut Map<String, Value> {
        let users = self.array("passwd", "users");
        let idx = match users
            .iter()
            .position(|u| u.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(i) => i,
            None => {
                users.push(json!({ "name": name }));
                users.len() - 1
            }
        };
        users[idx].as_object_mut().expect("user is an object")
    }

    /// Adds an SSH key to a user (created in the config if absent).
    pub fn ssh_key(mut self, user: &str, key: &str) -> Self {
        self.add_ssh_key(user, key);
        self
    }

    /// Adds an SSH key to a user in place (3.x and 2.x both use `sshAuthorizedKeys`).
    pub fn add_ssh_key(&mut self, user: &str, key: &str) {
        let u = self.user_mut(user);
        let keys = u
            .entry("sshAuthorizedKeys")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(a) = keys.as_array_mut() {
            if !a.iter().any(|k| k.as_str() == Some(key)) {
                a.push(Value::String(key.to_string()));
            }
        }
    }

    /// Adds or updates a user with arbitrary fields (`groups`, `shell`, `passwordHash`, ...).
    pub fn user(mut self, name: &str, fields: Value) -> Self {
        let u = self.user_mut(name);
        if let Value::Object(f) = fields {
            for (k, v) in f {
                u.insert(k, v);
            }
        }
        self
    }

    /// Adds a group with arbitrary fields (`gid`, `system`, ...).
    pub fn group(mut self, name: &str, fields: Value) -> Self {
        let mut g = json!({ "name": name });
        merge_values(&mut g, fields);
        self.array("passwd", "groups").push(g);
        self
    }

    /// Adds a file with inline contents and a mode (e.g. `0o644`); overwrites.
    pub fn file(mut self, path: &str, contents: &str, mode: u32) -> Self {
        self.array("storage", "files").push(json!({
            "path": path,
            "overwrite": true,
            "mode": mode,
            "contents": { "source": data_url(contents.as_bytes()) },
        }));
        self
    }

    /// Adds a file fetched from a URL (with an optional `sha512-...` verification hash).
    pub fn file_from_url(mut self, path: &str, url: &str, mode: u32, hash: Option<&str>) -> Self {
        let mut contents = json!({ "source": url });
        if let Some(h) = hash {
            contents["verification"] = json!({ "hash": h });
        }
        self.array("storage", "files").push(json!({
            "path": path,
            "overwrite": true,
            "mode": mode,
            "contents": contents,
        }));
        self
    }

    /// Adds a directory.
    pub fn directory(mut self, path: &str, mode: u32) -> Self {
        self.array("storage", "directories")
            .push(json!({ "path": path, "mode": mode }));
        self
    }

    /// Adds a symbolic (or hard) link.
    pub fn link(mut self, path: &str, target: &str, hard: bool) -> Self {
        self.array("storage", "links").push(json!({
            "path": path, "target": target, "hard": hard, "overwrite": true,
        }));
        self
    }

    /// Adds a systemd unit with contents; `enabled` enables it.
    pub fn unit(mut self, name: &str, contents: &str, enabled: bool) -> Self {
        let mut u = json!({ "name": name, "contents": contents });
        if enabled {
            u["enabled"] = json!(true);
        }
        self.array("systemd", "units").push(u);
        self
    }

    /// Enables (or disables) an existing unit without changing its contents.
    pub fn enable_unit(mut self, name: &str, enabled: bool) -> Self {
        self.array("systemd", "units")
            .push(json!({ "name": name, "enabled": enabled }));
        self
    }

    /// Masks a unit.
    pub fn mask_unit(mut self, name: &str) -> Self {
        self.array("systemd", "units")
            .push(json!({ "name": name, "mask": true }));
        self
    }

    /// Adds a drop-in to a unit.
    pub fn dropin(mut self, unit: &str, name: &str, contents: &str) -> Self {
        self.array("systemd", "units").push(json!({
            "name": unit,
            "dropins": [{ "name": name, "contents": contents }],
        }));
        self
    }

    /// Deep-merges a JSON fragment: objects merge key by key, arrays append, scalars replace.
    pub fn merge(mut self, fragment: Value) -> Self {
        merge_values(&mut self.value, fragment);
        self
    }

    /// Every unit the config enables.
    pub fn enabled_units(&self) -> Vec<String> {
        self.value
            .pointer("/systemd/units")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|u| u.get("enabled").and_then(Value::as_bool) == Some(true))
                    .filter_map(|u| u.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn merge_values(base: &mut Value, fragment: Value) {
    match (base, fragment) {
        (Value::Object(b), Value::Object(f)) => {
            for (k, v) in f {
                match b.get_mut(&k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(f)) => b.extend(f),
        (b, f) => *b = f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_spec_33_config() {
        let c = Config::new()
            .ssh_key("core", "ssh-ed25519 AAAA test")
            .file("/etc/motd", "hello\n", 0o644)
            .unit("hello.service", "[Service]\nExecStart=/bin/true\n", true);
        let v = c.as_value();
        assert_eq!(v["ignition"]["version"], "3.3.0");
        assert_eq!(v["passwd"]["users"][0]["name"], "core");
        assert_eq!(v["storage"]["files"][0]["mode"], 420);
        assert!(v["storage"]["files"][0]["contents"]["source"]
            .as_str()
            .unwrap()
            .starts_with("data:;base64,"));
        assert_eq!(c.enabled_units(), vec!["hello.service"]);
    }

    #[test]
    fn ssh_keys_are_added_once_per_user() {
        let mut c = Config::new().user("core", json!({"groups": ["docker"]}));
        c.add_ssh_key("core", "k1");
        c.add_ssh_key("core", "k1");
        c.add_ssh_key("core", "k2");
        let users = c.as_value()["passwd"]["users"].as_array().unwrap().clone();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0]["sshAuthorizedKeys"], json!(["k1", "k2"]));
        assert_eq!(users[0]["groups"], json!(["docker"]));
    }

    #[test]
    fn malformed_configs_are_rejected() {
        assert!(matches!(
            Config::from_json("{"),
            Err(ConfigError::Malformed(_))
        ));
        assert!(matches!(
            Config::from_json("{}"),
            Err(ConfigError::NoVersion)
        ));
        assert!(Config::from_json(r#"{"ignition":{"version":"2.3.0"}}"#).is_ok());
        assert!(matches!(
            Config::from_json(r#"{"ignitionVersion":2}"#),
            Err(ConfigError::NoVersion)
        ));
    }

    #[test]
    fn spec_1_configs_are_carried() {
        let c = Config::from_json(r#"{"ignitionVersion":1,"storage":{}}"#).unwrap();
        assert_eq!(c.version(), "1");
        assert!(!c.is_v3());
        assert_eq!(c.as_value()["ignitionVersion"], 1);
    }

    #[test]
    fn merge_appends_arrays_and_merges_objects() {
        let c = Config::new()
            .file("/a", "a", 0o644)
            .merge(json!({"storage": {"files": [{"path": "/b"}]}, "kernelArguments": {"shouldExist": ["quiet"]}}));
        assert_eq!(
            c.as_value()["storage"]["files"].as_array().unwrap().len(),
            2
        );
        assert_eq!(c.as_value()["kernelArguments"]["shouldExist"][0], "quiet");
    }
}
