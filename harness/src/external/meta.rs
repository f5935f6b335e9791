//! An external test's metadata, as coreos-assembler's kola reads it: `kola.json` beside the
//! test, or in the test's own header either `# kola: { json }` on one line or `## kola:`
//! followed by YAML lines that start with `## `. Only kola's keys are accepted (anything else
//! is malformed, as in kola); those bogie cannot honour yet make the test skipped with the
//! key named ([`Meta::unsupported`]).

use std::path::Path;

use serde::Deserialize;

use super::error::ExternalError;
use crate::arch::Arch;
use crate::platform::{parse_primary_disk, DiskSpec};
use crate::test::Test;

/// How far into a test kola looks for its header (bytes).
pub const HEADER_LIMIT: usize = 8192;
/// The one-line JSON header's prefix.
pub const JSON_PREFIX: &str = "# kola:";
/// The YAML header's first line; the YAML follows on lines starting `## `.
pub const YAML_PREFIX: &str = "## kola:";

/// A list kola writes as one whitespace-separated string (`"x86_64 aarch64"`, `"!s390x"`);
/// a YAML or JSON list of strings is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Words {
    /// The names listed.
    pub names: Vec<String>,
    /// The string started with `!`: the names are exclusions.
    pub exclude: bool,
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Words, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => {
                let s = s.trim();
                match s.strip_prefix('!') {
                    Some(rest) => Words {
                        names: rest.split_whitespace().map(String::from).collect(),
                        exclude: true,
                    },
                    None => Words {
                        names: s.split_whitespace().map(String::from).collect(),
                        exclude: false,
                    },
                }
            }
            Raw::Many(v) => {
                let exclude = !v.is_empty() && v.iter().all(|x| x.starts_with('!'));
                Words {
                    names: v
                        .iter()
                        .map(|x| x.trim_start_matches('!').to_string())
                        .collect(),
                    exclude,
                }
            }
        })
    }
}

/// kola's `externalTestMeta`: every key kola accepts (unknown keys are an error).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Meta {
    /// Architectures (`x86_64 aarch64`; `!` = all but these).
    pub architectures: Option<Words>,
    /// Platforms (`qemu aws`; `!` = all but these).
    pub platforms: Option<Words>,
    /// Distros (`fcos`, `rhcos`, `cl`; `!` = all but these).
    pub distros: Option<Words>,
    /// Tags (`needs-internet`, `platform-independent`, `skip-base-checks`, own tags).
    pub tags: Option<Words>,
    /// The test runs only when `--tag` names this tag.
    pub required_tag: Option<String>,
    /// Extra disks (`5G`, `1G:4k`, `5G:mpath`, `2G:channel=nvme,serial=data`).
    pub additional_disks: Option<Vec<String>>,
    /// The primary disk's size (`20G`); its options are not supported.
    pub primary_disk: Option<serde_json::Value>,
    /// Put the OS container image on the machine (not supported).
    pub inject_container: Option<bool>,
    /// Memory per machine in MiB.
    pub min_memory: Option<u32>,
    /// NUMA nodes (not supported).
    pub numa_nodes: Option<bool>,
    /// Primary disk size in GB (a minimum).
    pub min_disk: Option<u32>,
    /// More network interfaces (user-mode, MACs `52:55:00:d1:56:NN`).
    pub additional_nics: Option<u32>,
    /// Kernel arguments for every boot.
    pub append_kernel_args: Option<String>,
    /// Kernel arguments for the first boot only.
    pub append_firstboot_kernel_args: Option<String>,
    /// Whether the test needs a machine of its own (kola's default: true).
    pub exclusive: Option<bool>,
    /// The test's timeout in minutes.
    pub timeout_min: Option<u32>,
    /// Tests (names or globs) that must not share a machine with this one.
    pub conflicts: Option<Vec<String>>,
    /// Let Ignition config warnings pass (bogie never fails on them: honoured).
    pub allow_config_warnings: Option<bool>,
    /// Boot cloud machines without instance credentials (bogie gives none: honoured).
    pub no_instance_creds: Option<bool>,
    /// A cloud instance type (not supported).
    pub instance_type: Option<String>,
    /// One line on what the test checks.
    pub description: Option<String>,
    /// Host paths bind-mounted read-only into the machine (not supported).
    #[serde(rename = "bindMountHostRO")]
    pub bind_mount_host_ro: Option<Vec<String>>,
    /// When the test was written (`YYYY-MM-DD`): kola only warns on its failures for 30
    /// days (not supported within those days; no effect after them).
    pub creation_date: Option<String>,
    /// Boot from a particular medium (not supported).
    pub boot_from: Option<String>,
    /// Host ports the test needs free (not supported).
    pub required_host_ports: Option<Vec<u16>>,
}

/// Where a test's metadata came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaSource {
    /// None: kola's defaults.
    Defaults,
    /// `kola.json` beside the test.
    KolaJson,
    /// The test's `# kola:` line (1-based line number).
    JsonHeader(usize),
    /// The test's `## kola:` block (line of `## kola:`).
    YamlHeader(usize),
}

/// Reads the metadata in a test's header (its first [`HEADER_LIMIT`] bytes); `None` when
/// it has none. `path` names the file in errors.
pub fn parse_header(text: &[u8], path: &Path) -> Result<Option<(Meta, MetaSource)>, ExternalError> {
    let head = &text[..text.len().min(HEADER_LIMIT)];
    let head = String::from_utf8_lossy(head);
    // A last line cut by the limit is not read, as kola reads whole lines only.
    let mut lines: Vec<&str> = head.split_inclusive('\n').collect();
    if text.len() > HEADER_LIMIT && !head.ends_with('\n') {
        lines.pop();
    }
    let mut yaml: Option<(usize, Vec<(usize, String)>)> = None;
    for (i, raw) in lines.iter().enumerate() {
        let no = i + 1;
        let line = raw.trim_end_matches(['\n', '\r']);
        if let Some((start, body)) = yaml.as_mut() {
            if line.starts_with(JSON_PREFIX) {
                return Err(malformed(
                    path,
                    no,
                    format!("both {YAML_PREFIX:?} (line {start}) and {JSON_PREFIX:?} headers"),
                ));
            }
            if line.starts_with(YAML_PREFIX) {
                return Err(malformed(
                    path,
                    no,
                    format!("a second {YAML_PREFIX:?} header (the first is on line {start})"),
                ));
            }
            match line.strip_prefix("## ") {
                Some(rest) => {
                    body.push((no, rest.to_string()));
                    continue;
                }
                None => break,
            }
        }
        if let Some(rest) = line.strip_prefix(JSON_PREFIX) {
            let json = rest.trim();
            let meta = parse_json(json, path, no)?;
            return Ok(Some((meta, MetaSource::JsonHeader(no))));
        }
        if let Some(rest) = line.strip_prefix(YAML_PREFIX) {
            let mut body = Vec::new();
            if !rest.trim().is_empty() {
                body.push((no, rest.trim().to_string()));
            }
            yaml = Some((no, body));
        }
    }
    let Some((start, body)) = yaml else {
        return Ok(None);
    };
    if body.is_empty() {
        return Err(malformed(
            path,
            start,
            format!("{YAML_PREFIX:?} is not followed by YAML lines starting with \"## \""),
        ));
    }
    let doc: String = body.iter().map(|(_, l)| format!("{l}\n")).collect();
    let meta: Meta = serde_saphyr::from_str(&doc).map_err(|e| {
        let at = e
            .location()
            .map(|l| l.line() as usize)
            .and_then(|l| body.get(l.saturating_sub(1)))
            .map(|(no, _)| *no)
            .unwrap_or(start);
        malformed(
            path,
            at,
            format!("malformed kola YAML header: {}", yaml_reason(&e)),
        )
    })?;
    Ok(Some((meta, MetaSource::YamlHeader(start))))
}

/// Reads a `kola.json`.
pub fn parse_kola_json(text: &str, path: &Path) -> Result<Meta, ExternalError> {
    serde_json::from_str(text).map_err(|e| {
        malformed(
            path,
            e.line().max(1),
            format!("malformed kola.json: {}", json_reason(&e)),
        )
    })
}

fn parse_json(json: &str, path: &Path, line: usize) -> Result<Meta, ExternalError> {
    serde_json::from_str(json).map_err(|e| {
        malformed(
            path,
            line,
            format!("malformed {JSON_PREFIX:?} header: {}", json_reason(&e)),
        )
    })
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; the caller names the line.
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn yaml_reason(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    let first = s.lines().next().unwrap_or("").trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn malformed(path: &Path, line: usize, reason: String) -> ExternalError {
    ExternalError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

/// kola's platform names in bogie's spelling.
fn platform_name(p: &str) -> String {
    match p {
        "gcp" => "gce".to_string(),
        "equinixmetal" | "packet" => "equinix".to_string(),
        other => other.to_string(),
    }
}

/// The size part of a kola disk spec in [`DiskSpec`]'s spelling: `5G`, `5GB`, `5GiB` and
/// a bare `5` all mean 5 GiB; an empty size stays empty.
fn normalize_disk_size(spec: &str) -> String {
    let spec = spec.trim();
    let (size, opts) = match spec.split_once(':') {
        Some((s, o)) => (s.trim(), Some(o)),
        None => (spec, None),
    };
    let digits = size
        .strip_suffix("iB")
        .or_else(|| size.strip_suffix('B'))
        .unwrap_or(size);
    let digits = digits.strip_suffix('G').unwrap_or(digits);
    let size = if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        format!("{digits}G")
    } else {
        size.to_string()
    };
    match opts {
        Some(o) => format!("{size}:{o}"),
        None => size,
    }
}

/// Parses one of `additionalDisks` (coreos-assembler's `--add-disk` syntax: `5G`,
/// `1G:4k`, `5G:mpath`, `2G:channel=nvme,serial=data`).
fn parse_disk(spec: &str) -> Result<DiskSpec, String> {
    DiskSpec::parse(&normalize_disk_size(spec)).map_err(|e| format!("additionalDisks: {e}"))
}

/// `primaryDisk` (a string in `additionalDisks`' syntax, the size optional): its size in
/// GiB and its options, which bogie's primary disk cannot take.
fn primary_disk(v: &serde_json::Value) -> Result<(Option<u32>, Vec<String>), String> {
    let text = match v {
        serde_json::Value::Null => return Ok((None, Vec::new())),
        serde_json::Value::String(s) => s.clone(),
        // The documentation's example writes a one-element list.
        serde_json::Value::Array(a) if a.len() <= 1 => match a.first() {
            None => return Ok((None, Vec::new())),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("primaryDisk: {other} is not a disk spec")),
        },
        other => return Err(format!("primaryDisk: {other} is not a disk spec")),
    };
    parse_primary_disk(&normalize_disk_size(&text)).map_err(|e| format!("primaryDisk: {e}"))
}

impl Meta {
    /// kola's keys this bogie cannot honour yet, as they are set (`additionalNics: 2`);
    /// empty when bogie can run the test as kola would. `today` dates `creationDate`.
    pub fn unsupported(&self, today: chrono::NaiveDate) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        if let Some(v) = self.primary_disk.as_ref().filter(|v| !is_empty_value(v)) {
            let (_, opts) = primary_disk(v)?;
            if !opts.is_empty() {
                out.push(format!(
                    "primaryDisk option {} ({v}: the primary disk is always one virtio path with 512-byte sectors, which the image's root= names)",
                    opts.join(",")
                ));
            }
        }
        if self.inject_container == Some(true) {
            out.push("injectContainer".into());
        }
        if self.numa_nodes == Some(true) {
            out.push("numaNodes".into());
        }
        if let Some(n) = self.additional_nics.filter(|n| *n > 8) {
            out.push(format!("additionalNics ({n}: at most 8)"));
        }
        if let Some(t) = self.instance_type.as_ref().filter(|t| !t.is_empty()) {
            out.push(format!("instanceType ({t})"));
        }
        if self
            .bind_mount_host_ro
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        {
            out.push("bindMountHostRO".into());
        }
        if let Some(b) = self.boot_from.as_ref().filter(|b| !b.is_empty()) {
            out.push(format!("bootFrom ({b})"));
        }
        if self
            .required_host_ports
            .as_ref()
            .is_some_and(|v| !v.is_empty())
        {
            out.push("requiredHostPorts".into());
        }
        for d in self.additional_disks.iter().flatten() {
            parse_disk(d)?;
        }
        if let Some(date) = &self.creation_date {
            let day = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
                .map_err(|_| format!("creationDate: {date:?} is not YYYY-MM-DD"))?;
            if (today - day).num_days() < 30 {
                out.push(format!(
                    "creationDate ({date}: kola's 30 days of warn-only failures)"
                ));
            }
        }
        if let Some(a) = &self.architectures {
            if !a.exclude
                && !a.names.is_empty()
                && a.names.iter().all(|n| n.parse::<Arch>().is_err())
            {
                out.push(format!(
                    "architectures ({}: none of them amd64 or arm64)",
                    a.names.join(" ")
                ));
            }
        }
        Ok(out)
    }

    /// Sets what the metadata says on `t` (everything but the unsupported keys, see
    /// [`Meta::unsupported`]); `Err` says which value is malformed.
    ///
    /// Long on purpose: one block per metadata key, in the order of coreos-assembler's
    /// documentation, so each key's translation can be checked against it.
    pub fn apply(&self, t: &mut Test) -> Result<(), String> {
        if let Some(a) = &self.architectures {
            let known: Vec<Arch> = a.names.iter().filter_map(|n| n.parse().ok()).collect();
            if a.exclude {
                t.exclude_architectures = known;
            } else {
                t.architectures = known;
            }
        }
        if let Some(p) = &self.platforms {
            let names: Vec<String> = p.names.iter().map(|n| platform_name(n)).collect();
            if p.exclude {
                t.exclude_platforms = names;
            } else {
                t.platforms = names;
            }
        }
        if let Some(d) = &self.distros {
            if d.exclude {
                t.exclude_distros = d.names.clone();
            } else {
                t.distros = d.names.clone();
            }
        }
        if let Some(tags) = &self.tags {
            for tag in &tags.names {
                if !t.has_tag(tag) {
                    t.tags.push(tag.clone());
                }
            }
            if t.has_tag(SKIP_BASE_CHECKS) {
                t.flags.no_emergency_shell_check = true;
                t.flags.no_kernel_panic_check = true;
                t.flags.no_verity_corruption_check = true;
                t.flags.no_selinux_avc_checks = true;
            }
        }
        t.required_tag = self.required_tag.clone().filter(|r| !r.is_empty());
        if let Some(disks) = &self.additional_disks {
            t.extra_disks = disks
                .iter()
                .map(|d| parse_disk(d))
                .collect::<Result<_, _>>()?;
            if !t.extra_disks.is_empty() {
                t.require("extra-disk");
            }
            if t.extra_disks.iter().any(|d| d.multipath) {
                t.require("multipath");
            }
        }
        // coreos-assembler's `minDisk` (GB) and `primaryDisk`'s size: the bigger one is the
        // primary disk's minimum (read as GiB, a little more than asked).
        let primary = match &self.primary_disk {
            Some(v) => primary_disk(v)?.0,
            None => None,
        };
        t.primary_disk_gib = primary
            .into_iter()
            .chain(self.min_disk)
            .filter(|n| *n > 0)
            .max();
        if t.primary_disk_gib.is_some() {
            t.require("primary-disk-size");
        }
        t.extra_nics = self.additional_nics.unwrap_or(0);
        if t.extra_nics > 0 {
            t.require("extra-nic");
        }
        t.min_memory_mb = self.min_memory.filter(|m| *m > 0);
        if let Some(k) = &self.append_kernel_args {
            t.kernel_args = k.split_whitespace().map(String::from).collect();
            if !t.kernel_args.is_empty() {
                t.require("kernel-args");
            }
        }
        if let Some(k) = &self.append_firstboot_kernel_args {
            t.first_boot_kernel_args = k.split_whitespace().map(String::from).collect();
            if !t.first_boot_kernel_args.is_empty() {
                t.require("kernel-args");
            }
        }
        t.non_exclusive = !self.exclusive.unwrap_or(true);
        if let Some(m) = self.timeout_min {
            if m == 0 {
                return Err("timeoutMin must be a positive number of minutes".into());
            }
            t.timeout = Some(std::time::Duration::from_secs(u64::from(m) * 60));
        }
        t.conflicts = self.conflicts.clone().unwrap_or_default();
        if let Some(d) = &self.description {
            t.description = d.clone();
        }
        Ok(())
    }
}

/// kola's tag for tests that skip the console and journal checks.
pub const SKIP_BASE_CHECKS: &str = "skip-base-checks";

fn is_empty_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Result<Option<(Meta, MetaSource)>, ExternalError> {
        parse_header(text.as_bytes(), Path::new("t/test.sh"))
    }

    #[test]
    fn json_and_yaml_headers_parse() {
        let (m, src) = header(
            "#!/bin/bash\n# kola: { \"architectures\": \"x86_64\", \"platforms\": \"aws gcp\", \"tags\": \"needs-internet\", \"exclusive\": false }\nexit 0\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(src, MetaSource::JsonHeader(2));
        assert_eq!(m.architectures.unwrap().names, vec!["x86_64"]);
        assert_eq!(m.platforms.as_ref().unwrap().names, vec!["aws", "gcp"]);
        assert_eq!(m.exclusive, Some(false));

        let (m, src) = header(
            "#!/bin/bash\nset -xeuo pipefail\n## kola:\n##   architectures: \"!s390x ppc64le\"\n##   platforms: \"aws gcp\"  # azure support is pending\n##   tags: [needs-internet, smoke]\n##   minMemory: 2048\n##   description: test description\ntest code here\n## not: metadata\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(src, MetaSource::YamlHeader(3));
        let a = m.architectures.unwrap();
        assert!(a.exclude);
        assert_eq!(a.names, vec!["s390x", "ppc64le"]);
        assert_eq!(m.tags.unwrap().names, vec!["needs-internet", "smoke"]);
        assert_eq!(m.min_memory, Some(2048));
        assert_eq!(m.description.as_deref(), Some("test description"));
        assert!(header("#!/bin/sh\necho '# kola: no'\n").unwrap().is_none());
    }

    #[test]
    fn malformed_headers_name_file_and_line() {
        let e = header("#!/bin/bash\n## kola:\n##   exclusive: false\n##   colour: blue\necho\n")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t/test.sh:4: "), "{s}");
        assert!(s.contains("colour"), "{s}");
        let e = header("#!/bin/bash\n\n# kola: { \"exclusive\": fals }\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t/test.sh:3: malformed \"# kola:\" header"),
            "{e}"
        );
        let e =
            header("#!/bin/bash\n## kola:\n##   tags: [a\n##   exclusive: false\n").unwrap_err();
        assert!(e.to_string().starts_with("t/test.sh:"), "{e}");
        let e = header("#!/bin/bash\n## kola:\necho\n").unwrap_err();
        assert!(e.to_string().starts_with("t/test.sh:2: "), "{e}");
        let e = header("#!/bin/bash\n## kola:\n##   exclusive: false\n# kola: {}\n").unwrap_err();
        assert!(e.to_string().starts_with("t/test.sh:4: both"), "{e}");
        let e = parse_kola_json(
            "{\n  \"exclusive\": false,\n  \"nope\": 1\n}\n",
            Path::new("kola.json"),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("kola.json:3: malformed kola.json: unknown field `nope`"),
            "{e}"
        );
    }

    #[test]
    fn only_the_header_is_read() {
        let mut text = "#!/bin/sh\n".to_string();
        text.push_str(&"# padding\n".repeat(900));
        text.push_str("# kola: { \"exclusive\": false }\n");
        assert!(header(&text).unwrap().is_none());
    }

    #[test]
    fn metadata_sets_the_test_and_names_what_it_cannot_honour() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let m: Meta = serde_json::from_str(
            r#"{"architectures": "!s390x aarch64", "platforms": "qemu gcp", "distros": "fcos",
                "tags": "smoke skip-base-checks", "requiredTag": "special", "additionalDisks": ["5G", "1G"],
                "minMemory": 4096, "appendKernelArgs": "enforcing=0 quiet", "timeoutMin": 8,
                "exclusive": false, "conflicts": ["ext.x.y"], "description": "d",
                "allowConfigWarnings": true, "creationDate": "2020-01-01"}"#,
        )
        .unwrap();
        assert_eq!(m.unsupported(today).unwrap(), Vec::<String>::new());
        let mut t = Test::new("ext.p.t", |_c| async { Ok(()) }).distros(&[]);
        m.apply(&mut t).unwrap();
        assert_eq!(t.exclude_architectures, vec![Arch::Arm64]);
        assert_eq!(t.platforms, vec!["qemu", "gce"]);
        assert_eq!(t.distros, vec!["fcos"]);
        assert!(t.has_tag("smoke") && t.flags.no_kernel_panic_check);
        assert_eq!(t.required_tag.as_deref(), Some("special"));
        assert_eq!(t.extra_disks, vec![DiskSpec::new(5), DiskSpec::new(1)]);
        assert_eq!(t.min_memory_mb, Some(4096));
        assert_eq!(t.kernel_args, vec!["enforcing=0", "quiet"]);
        assert_eq!(t.requires, vec!["extra-disk", "kernel-args"]);
        assert_eq!(t.timeout, Some(std::time::Duration::from_secs(480)));
        assert!(t.non_exclusive);
        assert_eq!(t.conflicts, vec!["ext.x.y"]);

        // The machine-shape keys are honoured.
        let m: Meta = serde_json::from_str(
            r#"{"additionalNics": 2, "minDisk": 15, "primaryDisk": "20G",
                "additionalDisks": ["5G:mpath", "1G:4k", "2GB:channel=nvme,serial=fast", "3"],
                "appendFirstbootKernelArgs": "ip=dhcp rd.neednet=1", "numaNodes": false}"#,
        )
        .unwrap();
        assert_eq!(m.unsupported(today).unwrap(), Vec::<String>::new());
        let mut t = Test::new("ext.p.shape", |_c| async { Ok(()) });
        m.apply(&mut t).unwrap();
        assert_eq!(
            t.extra_disks,
            vec![
                DiskSpec::new(5).multipath(),
                DiskSpec::new(1).sectors(crate::platform::SectorSize::Native4k),
                DiskSpec::new(2)
                    .interface(crate::platform::DiskInterface::Nvme)
                    .serial("fast"),
                DiskSpec::new(3),
            ]
        );
        assert_eq!(
            t.primary_disk_gib,
            Some(20),
            "the bigger of minDisk and primaryDisk"
        );
        assert_eq!(t.extra_nics, 2);
        assert_eq!(t.first_boot_kernel_args, vec!["ip=dhcp", "rd.neednet=1"]);
        assert_eq!(
            t.requires,
            vec![
                "extra-disk",
                "multipath",
                "primary-disk-size",
                "extra-nic",
                "kernel-args"
            ]
        );
        let m: Meta = serde_json::from_str(r#"{"minDisk": 15, "primaryDisk": ["10G"]}"#).unwrap();
        let mut t = Test::new("ext.p.min", |_c| async { Ok(()) });
        m.apply(&mut t).unwrap();
        assert_eq!(t.primary_disk_gib, Some(15));

        let m: Meta = serde_json::from_str(
            r#"{"additionalNics": 9, "primaryDisk": "20G:mpath",
                "injectContainer": true, "creationDate": "2026-11-20", "architectures": "s390x"}"#,
        )
        .unwrap();
        let u = m.unsupported(today).unwrap();
        let keys: Vec<&str> = u.iter().map(|s| s.split(' ').next().unwrap()).collect();
        assert_eq!(
            keys,
            vec![
                "primaryDisk",
                "injectContainer",
                "additionalNics",
                "creationDate",
                "architectures"
            ]
        );
        assert!(
            u[0].starts_with("primaryDisk option mpath (\"20G:mpath\""),
            "{}",
            u[0]
        );
        let bad: Meta = serde_json::from_str(r#"{"additionalDisks": ["1G:8k"]}"#).unwrap();
        let e = bad.unsupported(today).unwrap_err();
        assert!(e.contains("unknown option \"8k\""), "{e}");
        let bad: Meta = serde_json::from_str(r#"{"additionalDisks": ["big"]}"#).unwrap();
        assert!(bad.unsupported(today).is_err());
        let mut t = Test::new("x", |_c| async { Ok(()) });
        assert!(bad.apply(&mut t).unwrap_err().contains("\"big\""));
    }
}
