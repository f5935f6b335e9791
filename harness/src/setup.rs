//! kola's machine setup: what the harness does to every machine of a test beyond the test's
//! own config, as kola does it. The config a test gives none for is an empty one of the
//! run's spec (`--ignition-version`); the public update server is disabled
//! (`/etc/flatcar/update.conf` `SERVER=disabled`) unless the test sets
//! `no_disable_updates`; on an image with SELinux, `setenforce 1` runs and the audit rules
//! that hide AVC denials are removed at bring-up and after every reboot, unless the test
//! sets `no_enable_selinux`.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::ignition::{data_url, Config};
use crate::version::Version;

/// Where Flatcar's update-engine and locksmith read their settings.
pub const UPDATE_CONF: &str = "/etc/flatcar/update.conf";

/// What kola writes there: no update server, so a test machine never updates itself.
pub const UPDATE_CONF_DISABLED: &str = "SERVER=disabled\n";

/// The command kola runs on SELinux machines after each boot: enforcing mode, and the
/// audit rules that silence AVC denials removed so they reach the journal.
pub const ENABLE_SELINUX: &str = "sudo setenforce 1 && \
     sudo rm -rf /etc/audit/rules.d/80-selinux.rules /etc/audit/rules.d/99-default.rules && \
     if systemctl cat audit-rules.service >/dev/null 2>&1; then sudo systemctl restart audit-rules.service; fi";

/// The spec of the config a machine gets when its test gives none (`--ignition-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IgnitionVersion {
    /// Spec 2 (`2.0.0`): what Flatcar's Ignition before 3185 reads; kola's default on `cl`.
    V2,
    /// Spec 3: what every current image reads.
    #[default]
    V3,
}

/// The first Flatcar release whose Ignition (2.x) reads spec 3; older ones read spec 1 and 2.
pub fn first_spec3_flatcar() -> Version {
    Version::parse_lenient("3185.0.0").expect("a valid version")
}

impl IgnitionVersion {
    /// kola's flag values, `v2` and `v3`.
    pub fn parse(s: &str) -> Option<IgnitionVersion> {
        match s {
            "v2" => Some(IgnitionVersion::V2),
            "v3" => Some(IgnitionVersion::V3),
            _ => None,
        }
    }

    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnitionVersion::V2 => "v2",
            IgnitionVersion::V3 => "v3",
        }
    }

    /// The default when `--ignition-version` is not given: spec 2 for a Flatcar release
    /// older than 3185 (its Ignition cannot read spec 3), spec 3 otherwise (Flatcar's
    /// Ignition since 3185 reads both; every other image reads spec 3).
    pub fn default_for(is_flatcar: bool, version: Option<&Version>) -> IgnitionVersion {
        match version {
            Some(v) if is_flatcar && *v < first_spec3_flatcar() => IgnitionVersion::V2,
            _ => IgnitionVersion::V3,
        }
    }

    /// An empty config of this spec, as kola's defaults (`2.0.0`; spec 3 at bogie's
    /// rendering version).
    pub fn empty_config(self) -> Config {
        match self {
            IgnitionVersion::V2 => Config::from_value(json!({"ignition": {"version": "2.0.0"}}))
                .expect("a versioned object"),
            IgnitionVersion::V3 => Config::new(),
        }
    }
}

/// What kola's setup does to the machines of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineSetup {
    /// The spec of the config a machine without a test config gets.
    pub ignition_version: IgnitionVersion,
    /// Write [`UPDATE_CONF_DISABLED`] into every config (the test does not set
    /// `no_disable_updates`).
    pub disable_updates: bool,
    /// Run [`ENABLE_SELINUX`] after each boot (the image has SELinux and the test does not
    /// set `no_enable_selinux`).
    pub enable_selinux: bool,
}

impl MachineSetup {
    /// The setup of a test's machines on an image providing `provides`, given the test's
    /// kola flags `no_disable_updates` and `no_enable_selinux`.
    pub fn for_test(
        no_disable_updates: bool,
        no_enable_selinux: bool,
        ignition_version: IgnitionVersion,
        provides: &BTreeSet<String>,
    ) -> MachineSetup {
        MachineSetup {
            ignition_version,
            disable_updates: !no_disable_updates,
            enable_selinux: !no_enable_selinux && provides.contains("selinux"),
        }
    }

    /// The config a machine boots with: the test's, or an empty one of the run's spec; with
    /// the update server disabled where the setup says so and the config can say it (spec
    /// 2 or 3; a spec-1 config and one that writes the file itself are left as they are).
    pub fn config(&self, config: Option<Config>) -> Config {
        let mut c = config.unwrap_or_else(|| self.ignition_version.empty_config());
        if self.disable_updates {
            add_root_file(&mut c, UPDATE_CONF, UPDATE_CONF_DISABLED, 0o644);
        }
        c
    }
}

/// Adds a file of the root file system in the shape of the config's spec, unless the
/// config already writes that path (Ignition refuses a config with the path twice) or its
/// spec has no files (spec 1). Says whether it was added.
fn add_root_file(c: &mut Config, path: &str, contents: &str, mode: u32) -> bool {
    let version = c.version().to_string();
    let writes_it = c
        .as_value()
        .pointer("/storage/files")
        .and_then(Value::as_array)
        .is_some_and(|files| {
            files
                .iter()
                .any(|f| f.get("path").and_then(Value::as_str) == Some(path))
        });
    if writes_it {
        return false;
    }
    let source = data_url(contents.as_bytes());
    let entry = if version.starts_with('3') {
        json!({"path": path, "overwrite": true, "mode": mode, "contents": {"source": source}})
    } else if version.starts_with('2') {
        json!({"filesystem": "root", "path": path, "mode": mode, "contents": {"source": source}})
    } else {
        return false;
    };
    *c = c.clone().merge(json!({"storage": {"files": [entry]}}));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provides(caps: &[&str]) -> BTreeSet<String> {
        caps.iter().map(|s| s.to_string()).collect()
    }

    fn files(c: &Config) -> Vec<Value> {
        c.as_value()
            .pointer("/storage/files")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn kolas_flag_values_parse_and_nothing_else() {
        assert_eq!(IgnitionVersion::parse("v2"), Some(IgnitionVersion::V2));
        assert_eq!(IgnitionVersion::parse("v3"), Some(IgnitionVersion::V3));
        assert_eq!(IgnitionVersion::parse("3"), None);
        assert_eq!(IgnitionVersion::V2.as_str(), "v2");
    }

    #[test]
    fn old_flatcar_defaults_to_spec_2_everything_else_to_spec_3() {
        let old = Version::parse_lenient("3033.2.4").unwrap();
        let new = Version::parse_lenient("3185.0.0").unwrap();
        assert_eq!(
            IgnitionVersion::default_for(true, Some(&old)),
            IgnitionVersion::V2
        );
        assert_eq!(
            IgnitionVersion::default_for(true, Some(&new)),
            IgnitionVersion::V3
        );
        assert_eq!(
            IgnitionVersion::default_for(true, None),
            IgnitionVersion::V3
        );
        assert_eq!(
            IgnitionVersion::default_for(false, Some(&old)),
            IgnitionVersion::V3
        );
    }

    #[test]
    fn a_machine_without_a_test_config_gets_an_empty_config_of_the_runs_spec() {
        let setup = MachineSetup {
            ignition_version: IgnitionVersion::V2,
            ..MachineSetup::default()
        };
        assert_eq!(setup.config(None).version(), "2.0.0");
        assert!(files(&setup.config(None)).is_empty());
        let v3 = MachineSetup::default().config(None);
        assert!(v3.is_v3());
    }

    #[test]
    fn updates_are_disabled_in_the_shape_of_the_configs_spec() {
        let setup = MachineSetup {
            ignition_version: IgnitionVersion::V2,
            disable_updates: true,
            enable_selinux: false,
        };
        let v2 = setup.config(None);
        let f = &files(&v2)[0];
        assert_eq!(f["path"], UPDATE_CONF);
        assert_eq!(f["filesystem"], "root");
        assert!(
            f.get("overwrite").is_none(),
            "spec 2.0 has no overwrite: {f}"
        );
        assert_eq!(f["mode"], 420);
        assert_eq!(f["contents"]["source"], data_url(b"SERVER=disabled\n"));

        let v3 = setup.config(Some(Config::new().file("/etc/motd", "hi\n", 0o644)));
        let all = files(&v3);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["path"], UPDATE_CONF);
        assert_eq!(all[1]["overwrite"], true);
        assert!(all[1].get("filesystem").is_none());
    }

    #[test]
    fn a_config_writing_update_conf_itself_and_spec_1_are_left_alone() {
        let setup = MachineSetup {
            disable_updates: true,
            ..MachineSetup::default()
        };
        let own = Config::new().file(UPDATE_CONF, "REBOOT_STRATEGY=etcd-lock\n", 0o644);
        assert_eq!(setup.config(Some(own.clone())), own);
        let v1 = Config::from_json(r#"{"ignitionVersion": 1}"#).unwrap();
        assert_eq!(setup.config(Some(v1.clone())), v1);
    }

    #[test]
    fn flags_and_the_image_decide_updates_and_selinux() {
        let v3 = IgnitionVersion::V3;
        let s = MachineSetup::for_test(false, false, v3, &provides(&["selinux"]));
        assert!(s.disable_updates && s.enable_selinux);
        let s = MachineSetup::for_test(false, false, v3, &provides(&["docker"]));
        assert!(
            !s.enable_selinux,
            "an image without SELinux has nothing to enforce"
        );
        let s = MachineSetup::for_test(true, true, v3, &provides(&["selinux"]));
        assert!(!s.disable_updates && !s.enable_selinux);
    }
}
