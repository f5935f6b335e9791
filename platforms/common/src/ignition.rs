//! Reading a rendered Ignition config back, and the console artifact.

use std::path::Path;

use serde_json::Value;

/// The `(user, key)` pairs of `passwd.users[].sshAuthorizedKeys` in a rendered config.
pub fn ssh_keys(ignition: &str) -> Vec<(String, String)> {
    let Ok(v) = serde_json::from_str::<Value>(ignition) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for u in v
        .pointer("/passwd/users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = u.get("name").and_then(Value::as_str).unwrap_or("core");
        for k in u
            .get("sshAuthorizedKeys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.push((name.to_string(), k.to_string()));
        }
    }
    out
}

/// Writes `text` as the machine's `console.txt` (the artifact reports link to). Errors
/// are logged, not returned: a missing console must not hide the real failure.
pub fn write_console(dir: &Path, text: &str) {
    if let Err(e) = std::fs::write(dir.join("console.txt"), text) {
        tracing::warn!(dir = %dir.display(), error = %e, "writing console.txt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_out() {
        let c = bogie_harness::Config::new()
            .ssh_key("core", "ssh-ed25519 AAAA one")
            .ssh_key("admin", "ssh-ed25519 BBBB two");
        let keys = ssh_keys(&c.render());
        assert_eq!(
            keys,
            vec![
                ("core".to_string(), "ssh-ed25519 AAAA one".to_string()),
                ("admin".to_string(), "ssh-ed25519 BBBB two".to_string())
            ]
        );
        assert!(ssh_keys("not json").is_empty());
        let d = tempfile::tempdir().unwrap();
        write_console(d.path(), "hello");
        assert_eq!(
            std::fs::read_to_string(d.path().join("console.txt")).unwrap(),
            "hello"
        );
    }
}
