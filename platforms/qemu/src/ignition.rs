//! Adding the private-network configuration to a machine's Ignition config.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// Where the networkd file for the private NIC goes.
pub const PRIVATE_NETWORK_FILE: &str = "/etc/systemd/network/10-bogie-private.network";

/// The networkd unit that gives the NIC with `mac` the static address `ip/prefix`.
pub fn private_network_unit(mac: &str, ip: Ipv4Addr, prefix: u8) -> String {
    format!(
        "[Match]\nMACAddress={mac}\n\n[Link]\nRequiredForOnline=no\n\n\
         [Network]\nAddress={ip}/{prefix}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
}

/// Percent-encodes for a `data:,` URL (RFC 2397): everything but RFC 3986 unreserved bytes.
pub fn data_url(content: &str) -> String {
    let mut s = String::with_capacity(6 + content.len() * 2);
    s.push_str("data:,");
    for b in content.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Adds `storage.files` entry `path` with `content` (mode 0644) to an Ignition config.
///
/// Returns `Ok(None)` when the config is not an Ignition JSON object (empty, or a
/// cloud-config): it is then passed on unchanged and the file is not written. Handles spec
/// 3.x (`overwrite: true`) and the 2.x spec Flatcar still accepts (`filesystem: "root"`).
pub fn add_file(config: &str, path: &str, content: &str) -> Result<Option<String>, String> {
    let mut v: Value = match serde_json::from_str(config) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Ok(None),
    };
    let version = v
        .pointer("/ignition/version")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if version.is_empty() {
        return Ok(None);
    }
    let mut file = json!({
        "path": path,
        "mode": 420,
        "contents": { "source": data_url(content) },
    });
    if version.starts_with("2.") {
        file["filesystem"] = json!("root");
    } else {
        file["overwrite"] = json!(true);
    }
    let root = v
        .as_object_mut()
        .ok_or_else(|| "config is not a JSON object".to_string())?;
    let storage = root.entry("storage").or_insert_with(|| json!({}));
    let storage = storage
        .as_object_mut()
        .ok_or_else(|| "storage is not an object".to_string())?;
    let files = storage.entry("files").or_insert_with(|| json!([]));
    let files = files
        .as_array_mut()
        .ok_or_else(|| "storage.files is not an array".to_string())?;
    files.retain(|f| f.get("path").and_then(Value::as_str) != Some(path));
    files.push(file);
    serde_json::to_string(&v)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_are_percent_encoded() {
        assert_eq!(data_url("a b\n=/"), "data:,a%20b%0A%3D%2F");
    }

    #[test]
    fn adds_the_private_network_file_to_a_3x_config() {
        let cfg = r#"{"ignition":{"version":"3.3.0"},"passwd":{"users":[{"name":"core"}]},
            "storage":{"files":[{"path":"/etc/x","contents":{"source":"data:,x"}}]}}"#;
        let unit = private_network_unit("52:54:00:77:05:0a", "10.77.0.10".parse().unwrap(), 24);
        let out = add_file(cfg, PRIVATE_NETWORK_FILE, &unit).unwrap().unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let files = v["storage"]["files"].as_array().unwrap();
        assert_eq!(files.len(), 2);
        let f = &files[1];
        assert_eq!(f["path"], PRIVATE_NETWORK_FILE);
        assert_eq!(f["mode"], 420);
        assert_eq!(f["overwrite"], true);
        let src = f["contents"]["source"].as_str().unwrap();
        assert!(src.starts_with("data:,%5BMatch%5D%0AMACAddress%3D52%3A54%3A00%3A77%3A05%3A0a%0A"));
        assert!(src.contains("Address%3D10.77.0.10%2F24"));
        assert_eq!(v["passwd"]["users"][0]["name"], "core");

        // Injecting twice replaces, never duplicates.
        let again = add_file(&out, PRIVATE_NETWORK_FILE, &unit)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v["storage"]["files"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn handles_2x_configs_and_missing_storage() {
        let out = add_file(r#"{"ignition":{"version":"2.3.0"}}"#, "/etc/f", "x")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["storage"]["files"][0]["filesystem"], "root");
        assert!(v["storage"]["files"][0].get("overwrite").is_none());
    }

    #[test]
    fn leaves_non_ignition_configs_alone() {
        assert_eq!(add_file("", "/f", "x").unwrap(), None);
        assert_eq!(add_file("#cloud-config\n", "/f", "x").unwrap(), None);
        assert_eq!(add_file("{}", "/f", "x").unwrap(), None);
        assert!(add_file(
            r#"{"ignition":{"version":"3.3.0"},"storage":{"files":{}}}"#,
            "/f",
            "x"
        )
        .is_err());
    }
}
