//! `cl.disk.*`, `cl.tang.*`, `cl.tpm.*`: root and data filesystems on md RAID, LUKS
//! volumes unlocked by a Tang server or a TPM, and the TPM event log.
//!
//! The extra disk has kola's serial, `secondary`, so the configs use kola's
//! `/dev/disk/by-id/virtio-secondary`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::platform::DiskSpec;
use bogie_harness::serve::QEMU_HOST_ADDR;
use bogie_harness::{Config, Test, TestCluster, TestMachine, Version};
use serde_json::Value;

use crate::util::{parse_json, raw_config};

/// The extra disk as the guest sees it.
const SECONDARY: &str = "/dev/disk/by-id/virtio-secondary";

/// The extra disk of the tests that have one: 1 GiB, kola's serial.
fn secondary() -> DiskSpec {
    DiskSpec::new(1).serial("secondary")
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let mut v = Vec::new();
    for level in ["raid0", "raid1"] {
        v.push(
            Test::new(&format!("cl.disk.{level}.root"), move |c| async move {
                let m = c.new_machine(Some(raw_config(&raid_root(level)))).await?;
                raid_mounted(&m, "/").await?;
                m.reboot().await?;
                raid_mounted(&m, "/").await
            })
            .description(&format!("the root filesystem on an md {level} of two partitions of an extra disk, before and after a reboot (Flatcar: md RAID in its initramfs, a root rebuilt from /usr)"))
            .cluster_size(0)
            .platforms(&["qemu"])
            .requires(&["flatcar", "flatcar-partitions"])
            .disks(&[secondary()]),
        );
        v.push(
            Test::new(&format!("cl.disk.{level}.data"), |c| async move {
                let m = c.machine()?;
                raid_mounted(&m, "/var/lib/data").await?;
                m.reboot().await?;
                raid_mounted(&m, "/var/lib/data").await
            })
            .description(&format!("a data filesystem on an md {level} of OEM-CONFIG and USR-B mounted at /var/lib/data, before and after a reboot (Flatcar: mdadm)"))
            .platforms(&["qemu", "qemu-unpriv"])
            .requires(&["flatcar", "flatcar-partitions"])
            .config(raw_config(&raid_data(level))),
        );
    }
    for (name, root) in [("cl.tang.root", true), ("cl.tang.nonroot", false)] {
        let mut t = Test::new(name, move |c| async move { tang(&c, root).await })
            .description(if root {
                "the root filesystem on LUKS bound to a Tang server (clevis) unlocks at boot and after a reboot (Flatcar: clevis and networkd in its initramfs, kargs, a root rebuilt from /usr)"
            } else {
                "a data filesystem on LUKS on an extra disk, bound to a Tang server, is mounted at boot and after a reboot (Flatcar: clevis)"
            })
            .cluster_size(0)
            .platforms(&["qemu"])
            .min_version(Version::new(3913, 0, 1))
            .requires(&["flatcar", "flatcar-partitions"]);
        if !root {
            t = t.disks(&[secondary()]);
        }
        v.push(t);
    }
    for (name, variant) in [
        ("cl.tpm.root", TpmVariant::Clevis),
        ("cl.tpm.nonroot", TpmVariant::ClevisData),
        ("cl.tpm.root-cryptenroll", TpmVariant::Cryptenroll),
        (
            "cl.tpm.root-cryptenroll-pcr-noupdate",
            TpmVariant::PcrNoUpdate,
        ),
        (
            "cl.tpm.root-cryptenroll-pcr-withupdate",
            TpmVariant::PcrWithUpdate,
        ),
    ] {
        v.push(
            Test::new(name, move |c| async move { tpm(&c, variant).await })
                .description(variant.description())
                .cluster_size(0)
                .platforms(&["qemu"])
                .min_version(Version::new(3913, 0, 1))
                .requires(variant.requires())
                .disks(&[secondary()]),
        );
    }
    v.push(
        Test::new("cl.tpm.eventlog", |c| async move {
            let m = c.new_machine(None).await?;
            m.must_ssh(
                "sudo tpm2_eventlog /sys/kernel/security/tpm0/binary_bios_measurements >/dev/null",
            )
            .await?;
            Ok(())
        })
        .description("tpm2_eventlog parses the firmware's TPM event log")
        .cluster_size(0)
        .platforms(&["qemu"])
        .min_version(Version::new(4082, 0, 0))
        .requires(&["tpm", "tpm-event-log", "tpm2-tools"]),
    );
    v
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    let mut v = vec![
        ("cl.tang.root", tang_config(true, "10.0.2.2:1")),
        ("cl.tang.nonroot", tang_config(false, "10.0.2.2:1")),
    ];
    for variant in [
        TpmVariant::Clevis,
        TpmVariant::ClevisData,
        TpmVariant::Cryptenroll,
        TpmVariant::PcrNoUpdate,
        TpmVariant::PcrWithUpdate,
    ] {
        v.push(("cl.tpm.*", variant.config()));
    }
    v
}

fn raid_root(level: &str) -> String {
    format!(
        r#"{{"ignition":{{"version":"2.3.0"}},"storage":{{
  "disks":[{{"device":"{SECONDARY}","wipeTable":true,"partitions":[
    {{"label":"root1","number":1,"sizeMiB":256,"typeGuid":"be9067b9-ea49-4f15-b4f6-f36f8c9e1818"}},
    {{"label":"root2","number":2,"sizeMiB":256,"typeGuid":"be9067b9-ea49-4f15-b4f6-f36f8c9e1818"}}]}}],
  "raid":[{{"name":"rootarray","level":"{level}","devices":["/dev/disk/by-partlabel/root1","/dev/disk/by-partlabel/root2"]}}],
  "filesystems":[
    {{"name":"ROOT","mount":{{"device":"/dev/md/rootarray","format":"ext4","label":"ROOT"}}}},
    {{"name":"NOT_ROOT","mount":{{"device":"/dev/disk/by-id/virtio-primary-disk-part9","format":"ext4","label":"wasteland","wipeFilesystem":true}}}}]}}}}"#
    )
}

fn raid_data(level: &str) -> String {
    format!(
        r#"{{"ignition":{{"version":"2.3.0"}},"storage":{{
  "disks":[{{"device":"/dev/disk/by-partlabel/OEM-CONFIG"}},{{"device":"/dev/disk/by-partlabel/USR-B"}}],
  "raid":[{{"name":"DATA","level":"{level}","devices":["/dev/disk/by-partlabel/OEM-CONFIG","/dev/disk/by-partlabel/USR-B"]}}],
  "filesystems":[{{"name":"DATA","mount":{{"device":"/dev/md/DATA","format":"ext4","label":"DATA"}}}}]}},
 "systemd":{{"units":[{{"name":"var-lib-data.mount","enabled":true,
  "contents":"[Mount]\nWhat=/dev/md/DATA\nWhere=/var/lib/data\nType=ext4\n\n[Install]\nWantedBy=local-fs.target"}}]}}}}"#
    )
}

/// Finds the block device mounted at `mountpoint` in `lsblk --json` output and applies
/// `ok` to it: Some(true/false), or None when nothing is mounted there.
pub fn mountpoint_device<F: Fn(&Value) -> bool>(
    lsblk: &Value,
    mountpoint: &str,
    ok: &F,
) -> Option<(bool, String)> {
    fn walk<F: Fn(&Value) -> bool>(devs: &Value, mp: &str, ok: &F) -> Option<(bool, String)> {
        for d in devs.as_array()? {
            let mounted = d["mountpoint"] == mp
                || d["mountpoints"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == mp));
            if mounted {
                let desc = format!("{} (type {})", d["name"], d["type"]);
                return Some((ok(d), desc));
            }
            if let Some(r) = walk(&d["children"], mp, ok) {
                return Some(r);
            }
        }
        None
    }
    walk(&lsblk["blockdevices"], mountpoint, ok)
}

async fn check_mountpoint<F: Fn(&Value) -> bool>(
    m: &TestMachine,
    mountpoint: &str,
    what: &str,
    ok: F,
) -> Result<()> {
    let out = m.must_ssh("lsblk --json").await?;
    let v = parse_json("lsblk --json", &out)?;
    match mountpoint_device(&v, mountpoint, &ok) {
        Some((true, _)) => Ok(()),
        Some((false, d)) => bail!("{mountpoint} is on {d}, which is not {what}"),
        None => bail!("nothing is mounted at {mountpoint}: {out}"),
    }
}

async fn raid_mounted(m: &TestMachine, mountpoint: &str) -> Result<()> {
    check_mountpoint(m, mountpoint, "an md raid0/raid1", |d| {
        d["type"] == "raid0" || d["type"] == "raid1"
    })
    .await
}

async fn encrypted(m: &TestMachine, mountpoint: &str) -> Result<()> {
    check_mountpoint(m, mountpoint, "a dm-crypt device", |d| d["type"] == "crypt").await
}

/// kola's Tang signing and exchange keys (the thumbprint below is the signing key's).
const TANG_SIGN_KEY: &str = r#"{"alg": "ES512", "kty": "EC", "crv": "P-521", "x": "AIcFiZgNvNMYYTOMaRjFUEMGqaXe5JrSDeKe2cAp7B1sGJL8BMDaxJJuchN5kXrP_DEyFalB6n6LcOf8EPIblAXx", "y": "AAqlZU_AueDHMBF83McJboc-Fu-8z6c2X8_4BLcPdN61LH-u6mNT21QqcWnbP5FpcdgDeIkHgUU4-9q702dFyhs9", "d": "AK1qPAdmS55UoGIRTNVxVHjxYf4JknzUWNgO4sOQaoR7VbEkoZZesjxPBP52NlYsRAdeA3ZOZCsvI3qeUWh0tS2_", "key_ops": ["sign", "verify"]}"#;
const TANG_DERIVE_KEY: &str = r#"{"alg": "ECMR", "kty": "EC", "crv": "P-521", "x": "ACZadV-S4M2dNJMZS0mqgXqucAyMs_8nNwVRus8xq04WV26QPC3ab3n2kSSH1QIus3fIGoIZlglHSzFXZ8VnRTVM", "y": "AcnqORSJ_DPub2Js0vldfn3b79renKPP6f-Sb-oCCz4bc-JlN1muIB-MxvUCKDSbZvAVn9OTCifbyy1XIFJsYK6e", "d": "AMgFsJMyqSIbDA-eU3iIn-eYaXwhuDbLU_YrbupXeQZvHEnEJ0yWKx6U04W4-Gj_GO5iQUZs8taj81eS6QHPBc_4", "key_ops": ["deriveKey"]}"#;
const TANG_THUMBPRINT: &str = "HkwVNDeKhzaVqWhXtXwEIGNILRZt4cBWWb0kI1-a0NM";

fn tang_config(root: bool, endpoint: &str) -> Config {
    let clevis = serde_json::json!({"tang": [{"url": format!("http://{endpoint}"), "thumbprint": TANG_THUMBPRINT}]});
    if root {
        Config::new().merge(serde_json::json!({
            "kernelArguments": {"shouldExist": ["rd.networkd=1"]},
            "storage": {
                "luks": [{"name": "rootencrypted", "device": "/dev/disk/by-partlabel/ROOT", "wipeVolume": true, "clevis": clevis}],
                "filesystems": [{"device": "/dev/disk/by-id/dm-name-rootencrypted", "format": "ext4", "label": "ROOT"}],
            },
        }))
    } else {
        Config::new()
            .merge(serde_json::json!({"storage": {
                "disks": [{"device": SECONDARY, "wipeTable": true, "partitions": [{"label": "data", "number": 1}]}],
                "luks": [{"name": "dataencrypted", "device": "/dev/disk/by-partlabel/data", "clevis": clevis}],
                "filesystems": [{"device": "/dev/disk/by-id/dm-name-dataencrypted", "format": "ext4", "label": "DATA", "path": "/mnt/data"}],
            }}))
            .unit(
                "mnt-data.mount",
                "[Mount]\nWhat=/dev/disk/by-label/DATA\nWhere=/mnt/data\nType=ext4\n\n[Install]\nWantedBy=local-fs.target",
                true,
            )
    }
}

/// A Tang server on the host (`tangd` from the tang package) with kola's keys, on a
/// loopback port guests reach at [`QEMU_HOST_ADDR`]. Killed when dropped.
struct Tang {
    port: u16,
    _child: tokio::process::Child,
}

async fn start_tang(dir: &Path) -> Result<Tang> {
    let tangd = [
        "/usr/libexec/tangd",
        "/usr/lib/x86_64-linux-gnu/tangd",
        "/usr/sbin/tangd",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(tangd) = tangd else {
        return bogie_harness::skip(
            "needs a Tang server on the host (tangd from the tang package)",
        );
    };
    let db = dir.join("tang-db");
    std::fs::create_dir_all(&db)?;
    std::fs::write(db.join(format!("{TANG_THUMBPRINT}.jwk")), TANG_SIGN_KEY)?;
    std::fs::write(db.join("exchange.jwk"), TANG_DERIVE_KEY)?;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(tangd)
        .args(["-l", "-p", &port.to_string()])
        .arg(&db)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting tangd")?;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(Tang {
                port,
                _child: child,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("tangd did not listen on 127.0.0.1:{port} (it needs tang ≥ 14 for -l)")
}

async fn tang(c: &TestCluster, root: bool) -> Result<()> {
    if !c.env().platform.starts_with("qemu") {
        return bogie_harness::skip(
            "the Tang server runs on the host, reachable only through QEMU's user network",
        );
    }
    let srv = start_tang(c.dir()).await?;
    let endpoint = format!("{QEMU_HOST_ADDR}:{}", srv.port);
    c.log(format!("tang on {endpoint}"));
    let m = c.new_machine(Some(tang_config(root, &endpoint))).await?;
    let mp = if root { "/" } else { "/mnt/data" };
    encrypted(&m, mp).await?;
    m.reboot().await?;
    encrypted(&m, mp).await
}

/// kola's TPM variants.
#[derive(Debug, Clone, Copy)]
enum TpmVariant {
    Clevis,
    ClevisData,
    Cryptenroll,
    PcrNoUpdate,
    PcrWithUpdate,
}

const CRYPTENROLL_FIRST: &str = "[Unit]\nConditionFirstBoot=true\nOnFailure=emergency.target\nOnFailureJobMode=isolate\nAfter=first-boot-complete.target multi-user.target\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=systemd-cryptenroll --tpm2-device=auto --unlock-key-file=/etc/luks/rootencrypted --tpm2-pcrs= /dev/disk/by-partlabel/ROOT\nExecStart=mv /etc/luks/rootencrypted /etc/luks/rootencrypted-bind\nExecStart=sleep 10\nExecStart=systemctl reboot\n[Install]\nWantedBy=multi-user.target\n";

impl TpmVariant {
    fn description(self) -> &'static str {
        match self {
            TpmVariant::Clevis => "the root filesystem on LUKS bound to the TPM through clevis unlocks at boot and after a reboot (Flatcar: clevis in its initramfs, a root rebuilt from /usr)",
            TpmVariant::ClevisData => "a data filesystem on LUKS on an extra disk, bound to the TPM through clevis by Ignition's disks stage, is mounted at boot and after a reboot",
            TpmVariant::Cryptenroll => "systemd-cryptenroll binds the LUKS root to the TPM on first boot; it unlocks after a reboot (Flatcar: TPM unlock in its systemd initramfs, a root rebuilt from /usr)",
            TpmVariant::PcrNoUpdate => "systemd-cryptenroll binds the LUKS root to TPM PCRs after a first reboot; it unlocks again (Flatcar: TPM unlock in its systemd initramfs, a root rebuilt from /usr)",
            TpmVariant::PcrWithUpdate => "a PCR-bound LUKS root survives an update's oem-postinst unbinding and a changed grub.cfg (Flatcar: TPM unlock in its systemd initramfs, oem-postinst, /oem/grub.cfg)",
        }
    }

    /// What the variant needs: the data-volume one only the disks stage, clevis and a TPM;
    /// the root ones Flatcar's initramfs (the pieces their descriptions name).
    fn requires(self) -> &'static [&'static str] {
        match self {
            TpmVariant::ClevisData => &["tpm", "ignition-disks", "cryptsetup", "clevis"],
            _ => &["flatcar", "flatcar-partitions", "tpm"],
        }
    }

    fn root_luks() -> Config {
        Config::new().merge(serde_json::json!({"storage": {
            "luks": [{"name": "rootencrypted", "wipeVolume": true, "device": "/dev/disk/by-partlabel/ROOT"}],
            "filesystems": [{"device": "/dev/mapper/rootencrypted", "format": "ext4", "label": "ROOT"}],
        }}))
    }

    fn config(self) -> Config {
        let bind = |before_update: bool, done: &str| {
            format!(
                "[Unit]\nConditionFirstBoot=false\nConditionPathExists=/etc/luks/rootencrypted-bind\nOnFailure=emergency.target\nOnFailureJobMode=isolate\n{}[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=systemd-cryptenroll --tpm2-device=auto --unlock-key-file=/etc/luks/rootencrypted-bind --tpm2-pcrs=4+7+8+9+11+12+13 --wipe-slot=tpm2 /dev/disk/by-partlabel/ROOT\nExecStart=mv /etc/luks/rootencrypted-bind /etc/luks/{done}\n[Install]\nWantedBy=multi-user.target\n",
                if before_update { "Before=update-engine.service\n" } else { "" }
            )
        };
        match self {
            TpmVariant::Clevis => Config::new().merge(serde_json::json!({"storage": {
                "luks": [{"name": "rootencrypted", "device": "/dev/disk/by-partlabel/ROOT", "wipeVolume": true, "clevis": {"tpm2": true}}],
                "filesystems": [{"device": "/dev/disk/by-id/dm-name-rootencrypted", "format": "ext4", "label": "ROOT"}],
            }})),
            TpmVariant::ClevisData => Config::new()
                .merge(serde_json::json!({"storage": {
                    "disks": [{"device": SECONDARY, "wipeTable": true, "partitions": [{"label": "data", "number": 1}]}],
                    "luks": [{"name": "dataencrypted", "device": "/dev/disk/by-partlabel/data", "clevis": {"tpm2": true}}],
                    "filesystems": [{"device": "/dev/disk/by-id/dm-name-dataencrypted", "format": "ext4", "label": "DATA", "path": "/mnt/data"}],
                }}))
                .unit("mnt-data.mount", "[Mount]\nWhat=/dev/disk/by-label/DATA\nWhere=/mnt/data\nType=ext4\n\n[Install]\nWantedBy=local-fs.target", true),
            TpmVariant::Cryptenroll => Self::root_luks().unit(
                "cryptenroll-helper.service",
                "[Unit]\nConditionFirstBoot=true\nOnFailure=emergency.target\nOnFailureJobMode=isolate\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=systemd-cryptenroll --tpm2-device=auto --unlock-key-file=/etc/luks/rootencrypted --wipe-slot=0 /dev/disk/by-partlabel/ROOT\nExecStart=rm /etc/luks/rootencrypted\n[Install]\nWantedBy=multi-user.target\n",
                true,
            ),
            TpmVariant::PcrNoUpdate => Self::root_luks()
                .file("/etc/flatcar/update.conf", "SERVER=disabled\n", 0o644)
                .unit("cryptenroll-helper-first.service", CRYPTENROLL_FIRST, true)
                .unit("cryptenroll-helper-bind.service", &bind(false, "rootencrypted"), true),
            TpmVariant::PcrWithUpdate => Self::root_luks()
                .file(
                    "/oem/bin/oem-postinst",
                    "#!/bin/bash\nset -euo pipefail\nif [ -e /etc/luks/rootencrypted-bound ]; then\n  mv /etc/luks/rootencrypted-bound /etc/luks/rootencrypted-bind\nfi\nsystemd-cryptenroll --tpm2-device=auto --unlock-key-file=/etc/luks/rootencrypted-bind --wipe-slot=tpm2 --tpm2-pcrs= /dev/disk/by-partlabel/ROOT\n",
                    0o755,
                )
                .unit("cryptenroll-helper-first.service", CRYPTENROLL_FIRST, true)
                .unit("cryptenroll-helper-bind.service", &bind(true, "rootencrypted-bound"), true),
        }
    }
}

async fn tpm(c: &TestCluster, variant: TpmVariant) -> Result<()> {
    let m = c.new_machine(Some(variant.config())).await?;
    let mp = if matches!(variant, TpmVariant::ClevisData) {
        "/mnt/data"
    } else {
        "/"
    };
    if matches!(variant, TpmVariant::PcrNoUpdate | TpmVariant::PcrWithUpdate) {
        // The first-boot helper reboots the machine once to bind the PCRs.
        tokio::time::sleep(Duration::from_secs(60)).await;
        m.must_ssh("grep -v flatcar.first_boot /proc/cmdline")
            .await?;
    }
    encrypted(&m, mp).await?;
    m.reboot().await?;
    encrypted(&m, mp).await?;
    if matches!(variant, TpmVariant::PcrWithUpdate) {
        // What an update changes: grub.cfg (measured), and oem-postinst unbinding the PCRs.
        m.must_ssh("echo 'set linux_append=\"flatcar.autologin console=ttyS0,115200 quiet\"' | sudo tee -a /oem/grub.cfg >/dev/null && sudo /oem/bin/oem-postinst")
            .await?;
        m.reboot().await?;
        encrypted(&m, "/").await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_are_found_in_nested_lsblk_output() {
        let v: Value = serde_json::from_str(r#"{"blockdevices":[{"name":"vda","type":"disk","mountpoints":[null],"children":[
            {"name":"vda9","type":"part","mountpoints":[null],"children":[{"name":"rootencrypted","type":"crypt","mountpoints":["/"]}]}]}]}"#).unwrap();
        let r = mountpoint_device(&v, "/", &|d: &Value| d["type"] == "crypt").unwrap();
        assert!(r.0, "{r:?}");
        assert!(mountpoint_device(&v, "/var", &|_: &Value| true).is_none());
        for level in ["raid0", "raid1"] {
            assert_eq!(raw_config(&raid_root(level)).version(), "2.3.0");
            assert_eq!(raw_config(&raid_data(level)).version(), "2.3.0");
        }
    }
}
