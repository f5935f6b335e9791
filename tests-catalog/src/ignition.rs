//! `coreos.ignition.*`, `cl.ignition.*` and `cl.swap_activation`: what Ignition does on the
//! first boot (files, links, units, users, groups, remote resources, TLS, filesystems) and
//! that it does it only once.
//!
//! Spec-3 configs are written as kola's v3 variants (Debian's Ignition 2.14 and Flatcar's
//! both take them); tests whose kola config is spec 1 or 2 keep it (Flatcar's Ignition
//! translates those) and require `ignition-spec1` / `ignition-spec2`, or `flatcar` where
//! they need more of Flatcar (named in their descriptions). Tests that reformat Flatcar's
//! partitions (ROOT, USR-B, OEM) require `flatcar-partitions`.

use anyhow::{anyhow, bail, Context, Result};
use bogie_harness::serve::{FileServer, QEMU_HOST_ADDR};
use bogie_harness::{Config, Test, TestCluster, TestFlags, TestMachine, Version};
use serde_json::{json, Value};

use crate::util::{assert_output_contains, assert_unit_active, parse_json, raw_config, v1_config};

/// The filesystem UUID kola's reformatting tests ask for.
const TARGET_UUID: &str = "9aa5237a-ab6b-458b-a7e8-f25e2baef1a3";
/// The vfat volume id kola's vfat test asks for.
const TARGET_VFAT_ID: &str = "1A37-8FA3";
/// The swap file `cl.swap_activation` creates.
const SWAP_FILE: &str = "/var/vm/swapfile1";
/// Its size as `swapon --show` prints it.
const SWAP_SIZE: &str = "1024M";

fn q_az() -> [&'static str; 3] {
    ["qemu", "qemu-unpriv", "azure"]
}
fn q() -> [&'static str; 2] {
    ["qemu", "qemu-unpriv"]
}
fn all_distros() -> [&'static str; 3] {
    ["cl", "fcos", "rhcos"]
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let mut v = vec![
        Test::new("coreos.ignition.systemd.enable-service", enable_service)
            .description("Ignition enables a unit shipped disabled (nfs-server.service) and systemd starts it")
            .platforms(&q_az())
            .distros(&["cl", "rhcos", "!fcos"])
            .requires(&["nfs-server"])
            .config(raw_config(
                r#"{"ignition":{"version":"3.0.0"},
                    "systemd":{"units":[{"name":"nfs-server.service","enabled":true}]},
                    "storage":{"files":[{"path":"/etc/exports"},{"path":"/var/lib/nfs/etab"}]}}"#,
            ))
            // An NFS server beside other tests changes only what cl.network.listeners sees.
            .conflicts(&["cl.network.listeners*"])
            .non_exclusive(),
        Test::new("coreos.ignition.sethostname", sethostname)
            .description("Ignition writes /etc/hostname and hostnamectl reports it as the static hostname")
            .platforms(&["!azure"])
            .distros(&all_distros())
            .config(raw_config(
                r#"{"ignition":{"version":"3.0.0"},
                    "storage":{"files":[{"path":"/etc/hostname","mode":420,"overwrite":true,
                                         "contents":{"source":"data:,core1"}}]}}"#,
            ))
            .non_exclusive(),
        Test::new("cl.ignition.v1.sethostname", |c| async move {
            boot_v1(&c, V1_HOSTNAME).await?;
            sethostname(c).await
        })
        .description("a spec-1 config writes /etc/hostname through the ROOT filesystem entry")
        .cluster_size(0)
        .platforms(&["qemu", "qemu-unpriv", "!azure"])
        .requires(&["ignition-spec1"]),
        Test::new("coreos.ignition.once", runs_once)
            .description("a file Ignition wrote and the test removed is not written again on the next boot")
            .distros(&all_distros())
            .config(raw_config(
                r#"{"ignition":{"version":"3.0.0"},
                    "storage":{"files":[{"path":"/etc/ignition-ran","mode":420,
                                         "contents":{"source":"data:,Ignition%20ran."}}]}}"#,
            ))
            .needs_first_boot(),
        Test::new("cl.ignition.v1.once", |c| async move {
            boot_v1(&c, V1_ONCE).await?;
            runs_once(c).await
        })
        .description("spec 1: a file Ignition wrote and the test removed is not written again on the next boot")
        .cluster_size(0)
        .platforms(&q_az())
        .requires(&["ignition-spec1"])
        .needs_first_boot(),
        Test::new("cl.ignition.translation", translation)
            .description("a spec-2.3 config with networkd units and a link is translated and applied")
            .platforms(&q_az())
            .requires(&["ignition-spec2"])
            .config(raw_config(TRANSLATION)),
        Test::new("cl.ignition.symlink", symlink)
            .description("Ignition writes an absolute symlink /etc/localtime owned by core")
            .platforms(&q_az())
            .min_version(Version::new(3185, 0, 0))
            .config(raw_config(
                r#"{"ignition":{"version":"3.0.0"},
                    "storage":{"links":[{"group":{"name":"core"},"overwrite":true,"path":"/etc/localtime",
                      "user":{"name":"core"},"hard":false,"target":"/usr/share/zoneinfo/Europe/Zurich"}]}}"#,
            ))
            // cl.filesystem judges every link of the root.
            .conflicts(&["cl.filesystem"])
            .non_exclusive(),
        Test::new("cl.ignition.instantiated.enable-unit", instantiated)
            .description("Ignition enables instances of template units (echo@bar.service, echo@foo.service, echo@foo.timer)")
            .platforms(&q())
            .min_version(Version::new(3185, 0, 0))
            .config(raw_config(INSTANTIATED))
            .non_exclusive(),
        Test::new("cl.ignition.kargs", kargs)
            .description("kernelArguments.shouldExist adds `quiet` to the kernel command line (Flatcar: Ignition's kargs stage and its reboot)")
            .min_version(Version::new(3185, 0, 0))
            // The test image boots its kernel directly with `quiet` already on the command
            // line and runs no kargs stage: the check means something only on Flatcar.
            .requires(&["flatcar"])
            .config(Config::new().merge(json!({"kernelArguments": {"shouldExist": ["quiet"]}})))
            .needs_first_boot(),
        Test::new("cl.ignition.luks", luks)
            .description("Ignition creates a LUKS volume on USR-B and a filesystem on it mounted at /var/lib/data")
            .platforms(&q_az())
            .min_version(Version::new(3185, 0, 0))
            .requires(&["flatcar-partitions", "cryptsetup", "ignition-disks"])
            .config(luks_config()),
        Test::new("cl.swap_activation", swap_activation)
            .description("a swap unit and the service creating its file (kola's CLC, as spec 3) activate a 1 GiB swap file")
            .platforms(&q_az())
            .min_version(Version::new(3033, 0, 0))
            .config(swap_config()),
        Test::new("coreos.ignition.groups", groups)
            .description("Ignition creates groups with fixed gids and a password hash (group, gshadow)")
            .platforms(&q_az())
            .distros(&all_distros())
            .config(raw_config(GROUPS_V3))
            // Its groups have password hashes: cl.filesystem and the sysusers test read
            // /etc/gshadow.
            .conflicts(&["cl.filesystem", "systemd.sysusers.*"])
            .non_exclusive(),
        Test::new("cl.ignition.v1.groups", |c| async move {
            boot_v1(&c, V1_GROUPS).await?;
            groups(c).await
        })
        .description("spec 1: Ignition creates groups with fixed gids and a password hash")
        .cluster_size(0)
        .platforms(&q_az())
        .requires(&["ignition-spec1"]),
        Test::new("cl.ignition.v1.users", |c| async move {
            boot_v1(&c, V1_USERS).await?;
            users(c).await
        })
        .description("spec 1: Ignition sets core's password and creates users with default and fixed uids")
        .cluster_size(0)
        .platforms(&q_az())
        .requires(&["ignition-spec1"]),
        Test::new("cl.ignition.v2.users", users)
            .description("spec 2: Ignition sets core's password and creates users with default and fixed uids")
            .platforms(&q_az())
            .requires(&["ignition-spec2"])
            .config(raw_config(V2_USERS)),
        Test::new("coreos.ignition.v2.users", users_rhcos)
            .description("Ignition sets core's password and creates users in /var/home (RHCOS layout)")
            .platforms(&q())
            .distros(&["rhcos"])
            .config(raw_config(RHCOS_USERS_V3)),
        Test::new("coreos.ignition.resource.local", resource_local)
            .description("Ignition fetches files over HTTP and TFTP from a server the harness runs")
            .cluster_size(0)
            .platforms(&["!do"])
            .distros(&all_distros())
            .requires(&["ignition-fetch"]),
        Test::new("coreos.ignition.resource.remote", |c| async move {
            check_resources(
                &c.machine()?,
                &[("http", "kola-anonymous"), ("https", "kola-anonymous"), ("s3-anon", "kola-anonymous")],
            )
            .await
        })
        .description("Ignition fetches anonymous files over HTTP, HTTPS and S3 from kola's fixtures bucket")
        .platforms(&["!do"])
        .distros(&all_distros())
        .tags(&["needs-internet"])
        .requires(&["ignition-fetch"])
        .config(raw_config(REMOTE_V3)),
        Test::new("coreos.ignition.resource.s3", |c| async move {
            let m = c.machine()?;
            check_resources(&m, &[("s3-auth", "kola-authenticated"), ("s3-config", "kola-config")]).await?;
            for obj in ["authenticated", "authenticated.ign"] {
                let out = m
                    .ssh(&format!("curl -sf https://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/{obj}"))
                    .await?;
                if out.success() {
                    bail!("anonymously fetching the authenticated resource {obj} should have failed");
                }
            }
            m.must_ssh("curl -sf https://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/anonymous")
                .await?;
            Ok(())
        })
        .description("Ignition fetches a file and merges a config from an authenticated S3 bucket")
        .platforms(&["aws"])
        .distros(&all_distros())
        .tags(&["needs-internet"])
        .requires(&["ignition-fetch"])
        .config(raw_config(S3_V3)),
        Test::new("coreos.ignition.resource.s3.versioned", |c| async move {
            check_resources(&c.machine()?, &[("original", "original"), ("latest", "updated")]).await
        })
        .description("Ignition fetches two versions of one S3 object by versionId")
        .platforms(&["qemu", "qemu-unpriv", "!do"])
        .min_version(Version::new(1995, 0, 0))
        .distros(&["cl", "rhcos"])
        .tags(&["needs-internet"])
        .requires(&["ignition-fetch"])
        .config(raw_config(S3_VERSIONED_V3)),
        Test::new("coreos.ignition.security.tls", security_tls)
            .description("Ignition merges a config from an HTTPS server whose certificate is signed by a CA given in ignition.security.tls")
            .cluster_size(0)
            .platforms(&["!do"])
            .distros(&all_distros())
            .requires(&["ignition-fetch"]),
        Test::new("coreos.ignition.ssh.key", empty)
            .description("the SSH key reaches the machine through Ignition alone (none in platform metadata)")
            .platforms(&["!qemu"])
            .distros(&all_distros())
            .flags(TestFlags { no_ssh_key_in_metadata: true, ..TestFlags::default() })
            .config(raw_config(r#"{"ignition":{"version":"3.0.0"}}"#)),
        Test::new("cl.ignition.v1.ssh.key", |c| async move {
            boot_v1(&c, V1_EMPTY).await?;
            empty(c).await
        })
        .description("spec 1: the SSH key reaches the machine through Ignition alone (none in platform metadata)")
        .cluster_size(0)
        .platforms(&["do", "!qemu"])
        .flags(TestFlags { no_ssh_key_in_metadata: true, ..TestFlags::default() })
        .requires(&["ignition-spec1"]),
        Test::new("cl.ignition.misc.empty", empty)
            .description("an empty config boots; the SSH key comes from platform metadata")
            .platforms(&["!qemu", "!esx", "!brightbox", "!akamai"])
            .flags(TestFlags { no_disable_updates: true, no_ssh_key_in_user_data: true, ..TestFlags::default() })
            .config(Config::new()),
        Test::new("cl.ignition.v1.noop", |c| async move {
            boot_v1(&c, V1_EMPTY).await?;
            empty(c).await
        })
        .description("a spec-1 config with nothing in it boots; the SSH key comes from platform metadata")
        .cluster_size(0)
        .platforms(&["!qemu", "!esx", "!openstack", "!brightbox", "!akamai"])
        .flags(TestFlags { no_ssh_key_in_user_data: true, ..TestFlags::default() })
        .requires(&["ignition-spec1"]),
        Test::new("cl.ignition.v2.noop", empty)
            .description("a spec-2 config with nothing in it boots; the SSH key comes from platform metadata")
            .platforms(&["!qemu", "!esx", "!brightbox", "!akamai"])
            .min_version(Version::new(3227, 0, 0))
            .flags(TestFlags { no_ssh_key_in_user_data: true, ..TestFlags::default() })
            .requires(&["ignition-spec2"])
            .config(raw_config(r#"{"ignition":{"version":"2.0.0"}}"#)),
        Test::new("cl.ignition.v2_1.ext4checkexisting", ext4_check_existing)
            .description("a spec-2.1 ext4 ROOT entry without wipe keeps the existing filesystem (same UUID)")
            .platforms(&q_az())
            .requires(&["ignition-spec2", "ignition-disks", "flatcar-partitions"]),
        Test::new("cl.ignition.v2_1.vfat", |c| async move { formatted(&c, "vfat", "USR-B").await })
            .description("spec 2.1 formats USR-B as vfat with a fixed volume id")
            .platforms(&q_az())
            .requires(&["ignition-spec2", "ignition-disks", "flatcar-partitions", "vfat"])
            .config(raw_config(&v2_1_usrb("vfat", TARGET_VFAT_ID))),
        Test::new("cl.ignition.v2_1.swap", |c| async move { formatted(&c, "swap", "USR-B").await })
            .description("spec 2.1 formats USR-B as swap with a fixed UUID")
            .platforms(&q_az())
            .requires(&["ignition-spec2", "ignition-disks", "flatcar-partitions"])
            .config(raw_config(&v2_1_usrb("swap", TARGET_UUID))),
        Test::new("cl.ignition.partition_on_boot_disk", partition_on_boot_disk)
            .description("a partition added to the boot disk at 9 GiB becomes an xfs /var with a file on it (Flatcar: ROOT ending before 9 GiB, spec-2 files on a named filesystem)")
            .cluster_size(0)
            .platforms(&q())
            .requires(&["flatcar", "flatcar-partitions", "xfs"])
            // kola's 10 GiB boot disk, for the partition at 9 GiB.
            .primary_disk_gib(10),
    ];
    for (fs, btrfs_opts, other_opts) in [
        ("btrfs", r#"["--label=ROOT","--uuid=UUID"]"#, ""),
        ("xfs", "", r#"["-L","ROOT","-m","uuid=UUID"]"#),
        ("ext4", "", r#"["-L","ROOT","-U","UUID"]"#),
    ] {
        let opts = if fs == "btrfs" {
            btrfs_opts
        } else {
            other_opts
        }
        .replace("UUID", TARGET_UUID);
        let v1 = format!(
            r#"{{"ignitionVersion":1,"storage":{{"filesystems":[{{"device":"/dev/disk/by-partlabel/ROOT","format":"{fs}","create":{{"force":true,"options":{opts}}}}}]}}}}"#
        );
        // kola's v2 btrfs config names the device by label, the others by partition label.
        let dev = if fs == "btrfs" {
            "/dev/disk/by-label/ROOT"
        } else {
            "/dev/disk/by-partlabel/ROOT"
        };
        let v2 = format!(
            r#"{{"ignition":{{"version":"2.0.0"}},"storage":{{"filesystems":[{{"mount":{{"device":"{dev}","format":"{fs}","create":{{"force":true,"options":{opts}}}}}}}]}}}}"#
        );
        let need: Vec<&str> = if fs == "ext4" {
            vec!["flatcar", "flatcar-partitions"]
        } else {
            vec!["flatcar", "flatcar-partitions", fs]
        };
        let fs1: &'static str = fs;
        v.push(
            Test::new(&format!("cl.ignition.v1.{fs}root"), move |c| {
                let v1 = v1.clone();
                async move {
                    boot_v1(&c, &v1).await?;
                    root_reformatted(&c, fs1).await
                }
            })
            .description(&format!(
                "spec 1 reformats ROOT as {fs} with a fixed UUID and the machine boots from it (Flatcar: a root rebuilt from /usr on an empty ROOT)"
            ))
            .cluster_size(0)
            .platforms(&q_az())
            .requires(&need),
        );
        let mut t = Test::new(&format!("cl.ignition.v2.{fs}root"), move |c| async move {
            root_reformatted(&c, fs1).await
        })
        .description(&format!(
            "spec 2 reformats ROOT as {fs} with a fixed UUID and the machine boots from it (Flatcar: a root rebuilt from /usr on an empty ROOT)"
        ))
        .requires(&need)
        .config(raw_config(&v2));
        if fs != "btrfs" {
            t = t.platforms(&q_az());
        }
        v.push(t);
    }
    for (name, mountpoint, min, butane, cfg) in [
        (
            "cl.ignition.oem.regular",
            OLD_OEM,
            3549,
            true,
            oem_butane(OLD_OEM, true),
        ),
        (
            "cl.ignition.oem.regular.new",
            NEW_OEM,
            3620,
            true,
            oem_butane(NEW_OEM, true),
        ),
        (
            "cl.ignition.oem.indirect",
            OLD_OEM,
            3550,
            true,
            oem_butane(OLD_OEM, false),
        ),
        (
            "cl.ignition.oem.indirect.new",
            NEW_OEM,
            3620,
            true,
            oem_butane(NEW_OEM, false),
        ),
        (
            "cl.ignition.oem.reuse",
            OLD_OEM,
            2983,
            false,
            raw_config(&oem_clc(false)),
        ),
    ] {
        let flatcar = if mountpoint == OLD_OEM {
            "btrfs OEM at /usr/share/oem"
        } else {
            "btrfs OEM"
        };
        let what = if butane {
            "a grub.cfg written to the OEM partition through its mount point"
        } else {
            "a grub.cfg written to the reused OEM filesystem (spec 2)"
        };
        v.push(
            Test::new(
                name,
                move |c| async move { oem_reuse(&c, mountpoint).await },
            )
            .description(&format!(
                "{what} ({mountpoint}) is there, OEM stays btrfs, and the machine reboots fine (Flatcar: {flatcar})"
            ))
            .platforms(&q())
            .min_version(Version::new(min, 0, 0))
            .requires(&["flatcar", "oem-partition"])
            .config(cfg),
        );
    }
    v.push(
        Test::new("cl.ignition.oem.wipe", oem_wipe)
            .description("spec 2 wipes the OEM partition and makes it ext4 (Flatcar: btrfs OEM, spec-2 files on a named filesystem)")
            .platforms(&q())
            .min_version(Version::new(2983, 0, 0))
            .requires(&["flatcar", "oem-partition"])
            .config(raw_config(&oem_clc(true))),
    );
    v
}

/// Configs the bodies boot machines with (not attached to a test), for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    let v1 = |j: &str| v1_config(j).expect("a spec-1 config the harness carries");
    vec![
        ("cl.ignition.v1.sethostname", v1(V1_HOSTNAME)),
        ("cl.ignition.v1.once", v1(V1_ONCE)),
        ("cl.ignition.v1.groups", v1(V1_GROUPS)),
        ("cl.ignition.v1.users", v1(V1_USERS)),
        ("cl.ignition.v1.noop", v1(V1_EMPTY)),
        (
            "coreos.ignition.resource.local (client)",
            resource_local_config("http://10.0.2.2:1/http", "tftp://10.0.2.2:2/tftp"),
        ),
        (
            "coreos.ignition.security.tls (client)",
            security_tls_config(
                "https://10.0.2.2:1/config.ign",
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            ),
        ),
        (
            "coreos.ignition.security.tls (served)",
            raw_config(TLS_SERVED_V3),
        ),
        (
            "cl.ignition.v2_1.ext4checkexisting (second)",
            raw_config(EXT4_NO_CLOBBER),
        ),
        (
            "cl.ignition.partition_on_boot_disk",
            raw_config(PARTITION_ON_BOOT_DISK),
        ),
    ]
}

async fn enable_service(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let out = m
        .ssh("systemctl status --no-pager nfs-server.service")
        .await?
        .stdout_str();
    if out.contains("inactive") || out.trim().is_empty() {
        bail!("nfs-server.service was not enabled or presets did not run:\n{out}");
    }
    assert_unit_active(&m, "nfs-server.service", 60).await
}

async fn sethostname(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let out = m.must_ssh("hostnamectl").await?;
    if !out.contains("Static hostname: core1") {
        bail!("the hostname wasn't set:\n{out}");
    }
    Ok(())
}

const V1_HOSTNAME: &str = r#"{"ignitionVersion":1,"storage":{"filesystems":[{"device":"/dev/disk/by-partlabel/ROOT","format":"ext4","files":[{"path":"/etc/hostname","mode":420,"contents":"core1"}]}]}}"#;
const V1_ONCE: &str = r#"{"ignitionVersion":1,"storage":{"filesystems":[{"device":"/dev/disk/by-partlabel/ROOT","format":"ext4","files":[{"path":"/etc/ignition-ran","contents":"Ignition ran.","mode":420}]}]}}"#;

/// The spec-1 config with nothing in it (`cl.ignition.v1.noop`, `cl.ignition.v1.ssh.key`).
const V1_EMPTY: &str = r#"{"ignitionVersion": 1}"#;

/// Boots the machine of a spec-1 test.
async fn boot_v1(c: &TestCluster, json: &str) -> Result<TestMachine> {
    let cfg = v1_config(json)?;
    c.new_machine(Some(cfg)).await
}

async fn runs_once(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh("sudo rm /etc/ignition-ran").await?;
    m.reboot().await?;
    m.must_ssh("test ! -e /etc/ignition-ran")
        .await
        .context("Ignition ran again on the second boot")?;
    Ok(())
}

const TRANSLATION: &str = r#"{
  "ignition": { "version": "2.3.0" },
  "networkd": { "units": [
    { "name": "00-dummy.netdev", "contents": "[NetDev]\nName=kola\nKind=dummy" },
    { "name": "00-dummy.network", "contents": "[Match]\nType=!vlan bond bridge\nName=kola\n\n[Network]\nAddress=10.0.2.1/24" } ] },
  "storage": {
    "files": [ { "filesystem": "root", "path": "/testdir/helloworld", "contents": { "source": "data:," }, "mode": 420 } ],
    "links": [ { "filesystem": "root", "path": "/testdir/hello", "target": "/testdir/helloworld" } ] }
}"#;

async fn translation(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh("ls /testdir/hello").await?;
    let out = m.must_ssh("ip --json address show kola").await?;
    let addrs = inet_addresses(&parse_json("ip --json address show kola", &out)?);
    if !addrs.iter().any(|a| a == "10.0.2.1") {
        bail!("the dummy interface kola has addresses {addrs:?}, not 10.0.2.1");
    }
    assert_output_contains(
        &m,
        "cat /etc/systemd/network/00-dummy.network",
        "!vlan bond bridge",
    )
    .await?;
    Ok(())
}

/// The IPv4 addresses in `ip --json address` output.
pub fn inet_addresses(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .filter_map(|a| a["local"].as_str().map(String::from))
        .collect()
}

async fn symlink(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_output_contains(
        &m,
        "readlink /etc/localtime",
        "/usr/share/zoneinfo/Europe/Zurich",
    )
    .await?;
    Ok(())
}

const INSTANTIATED: &str = r#"{
  "ignition": {"version": "3.0.0"},
  "systemd": { "units": [
    { "name": "echo@.service",
      "contents": "[Unit]\nDescription=f\n[Service]\nType=oneshot\nExecStart=/bin/echo %i\nRemainAfterExit=yes\n[Install]\nWantedBy=multi-user.target\n" },
    { "name": "echo@.timer",
      "contents": "[Unit]\nDescription=echo timer template\n[Timer]\nOnUnitInactiveSec=10s\n[Install]\nWantedBy=timers.target" },
    { "enabled": true, "name": "echo@bar.service" },
    { "enabled": true, "name": "echo@foo.service" },
    { "enabled": true, "name": "echo@foo.timer" } ] }
}"#;

async fn instantiated(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh(
        "systemctl -q is-active echo@foo.service && systemctl -q is-active echo@bar.service \
         && systemctl -q is-enabled echo@foo.service && systemctl -q is-enabled echo@bar.service \
         && systemctl -q is-active echo@foo.timer && systemctl -q is-enabled echo@foo.timer",
    )
    .await
    .context("the instantiated units are not all enabled and active")?;
    Ok(())
}

async fn kargs(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_output_contains(&m, "cat /proc/cmdline", " quiet").await?;
    Ok(())
}

fn luks_config() -> Config {
    Config::new()
        .merge(json!({"storage": {
            "luks": [{"name": "data", "device": "/dev/disk/by-partlabel/USR-B"}],
            "filesystems": [{"path": "/var/lib/data", "device": "/dev/disk/by-id/dm-name-data",
                             "format": "ext4", "label": "DATA"}],
        }}))
        .unit(
            "var-lib-data.mount",
            "[Unit]\nRequires=systemd-fsck@dev-disk-by\\x2did-dm\\x2dname\\x2ddata.service\nAfter=systemd-fsck@dev-disk-by\\x2did-dm\\x2dname\\x2ddata.service\n\n[Mount]\nWhere=/var/lib/data\nWhat=/dev/disk/by-id/dm-name-data\nType=ext4\n\n[Install]\nRequiredBy=local-fs.target\n",
            true,
        )
}

async fn luks(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh("sudo cryptsetup isLuks /dev/disk/by-partlabel/USR-B && systemctl is-active var-lib-data.mount")
        .await?;
    Ok(())
}

fn swap_config() -> Config {
    let swap = format!(
        "[Unit]\nDescription=Turn on swap\nRequires=create-swapfile.service\nAfter=create-swapfile.service\n\n[Swap]\nWhat={SWAP_FILE}\n\n[Install]\nWantedBy=multi-user.target\n"
    );
    let create = format!(
        "[Unit]\nDescription=Create a swapfile\nRequiresMountsFor=/var\nDefaultDependencies=no\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/mkdir -p /var/vm\nExecStart=/usr/bin/fallocate -l {SWAP_SIZE} {SWAP_FILE}\nExecStart=/usr/bin/chmod 600 {SWAP_FILE}\nExecStart=/usr/sbin/mkswap {SWAP_FILE}\nRemainAfterExit=true\n"
    );
    Config::new()
        .file(
            "/etc/sysctl.d/80-swappiness.conf",
            "vm.swappiness=10",
            0o644,
        )
        .unit("var-vm-swapfile1.swap", &swap, true)
        .unit("create-swapfile.service", &create, false)
}

async fn swap_activation(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let out = m
        .must_ssh("for i in $(seq 1 60); do s=$(PATH=$PATH:/usr/sbin:/sbin swapon --show=NAME,SIZE --noheadings); [ -n \"$s\" ] && break; sleep 1; done; echo \"$s\"")
        .await?;
    let cols: Vec<&str> = out.split_whitespace().collect();
    match cols.as_slice() {
        [] => bail!("swap is not enabled"),
        [name, size, ..] if *name == SWAP_FILE && *size == SWAP_SIZE => Ok(()),
        [name, size, ..] => bail!("expected swap {SWAP_FILE} of {SWAP_SIZE}, got {name} of {size}"),
        _ => bail!("swapon output should be NAME SIZE, got {out:?}"),
    }
}

const GROUPS_V3: &str = r#"{
  "ignition": { "version": "3.0.0" },
  "systemd": { "units": [ { "name": "system-cloudinit@usr-share-flatcar-developer_data.service", "mask": true } ] },
  "passwd": { "groups": [ { "name": "group1", "gid": 501 }, { "name": "group2", "gid": 502, "passwordHash": "foobar" } ] }
}"#;
const V1_GROUPS: &str = r#"{
  "ignitionVersion": 1,
  "systemd": { "units": [ { "name": "system-cloudinit@usr-share-flatcar-developer_data.service", "mask": true } ] },
  "passwd": { "groups": [ { "name": "group1", "gid": 501 }, { "name": "group2", "gid": 502, "passwordHash": "foobar" } ] }
}"#;
const V1_USERS: &str = r#"{
  "ignitionVersion": 1,
  "systemd": { "units": [ { "name": "system-cloudinit@usr-share-flatcar-developer_data.service", "mask": true } ] },
  "passwd": { "users": [ { "name": "core", "passwordHash": "foobar" }, { "name": "user1", "create": {} },
                         { "name": "user2", "create": { "uid": 1010, "groups": [ "docker" ] } } ] }
}"#;
const V2_USERS: &str = r#"{
  "ignition": { "version": "2.0.0" },
  "systemd": { "units": [ { "name": "system-cloudinit@usr-share-flatcar-developer_data.service", "mask": true } ] },
  "passwd": { "users": [ { "name": "core", "passwordHash": "foobar" }, { "name": "user1", "create": {} },
                         { "name": "user2", "create": { "uid": 1010, "groups": [ "docker" ] } } ] }
}"#;
const RHCOS_USERS_V3: &str = r#"{
  "ignition": { "version": "3.0.0" },
  "passwd": { "users": [ { "name": "core", "passwordHash": "foobar" }, { "name": "user1" },
                         { "name": "user2", "uid": 1010, "groups": [ "sudo" ] } ] }
}"#;

async fn getent(m: &TestMachine, db: &str, key: &str) -> Result<String> {
    m.must_ssh(&format!("sudo getent {db} {key}")).await
}

async fn groups(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let mut errors = Vec::new();
    for (g, rec, gshadow) in [
        ("group1", "group1:x:501:", "group1:*::"),
        ("group2", "group2:x:502:", "group2:foobar::"),
    ] {
        let got = getent(&m, "group", g).await?;
        if got != rec {
            errors.push(format!("{g}: group record {got:?}, expected {rec:?}"));
        }
        let got = getent(&m, "gshadow", g).await?;
        if got != gshadow && got != gshadow.replacen(":*:", ":!:", 1) {
            errors.push(format!("{g}: gshadow record {got:?}, expected {gshadow:?}"));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

async fn check_users(m: &TestMachine, expect: &[(&str, &str, &str)]) -> Result<()> {
    let mut errors = Vec::new();
    for (user, passwd, shadow_pw) in expect {
        let got = getent(m, "passwd", user).await?;
        if got != *passwd {
            errors.push(format!(
                "{user}: passwd record {got:?}, expected {passwd:?}"
            ));
        }
        let sh = getent(m, "shadow", user).await?;
        let f: Vec<&str> = sh.split(':').collect();
        if f.len() < 2 {
            bail!("could not parse the shadow record {sh:?} of {user}");
        }
        if f[0] != *user || f[1] != *shadow_pw {
            errors.push(format!(
                "{user}: shadow {}:{}, expected {user}:{shadow_pw}",
                f[0], f[1]
            ));
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

async fn users(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    if c.has("flatcar") {
        return check_users(
            &m,
            &[
                (
                    "core",
                    "core:x:500:500:Flatcar Admin:/home/core:/bin/bash",
                    "foobar",
                ),
                ("user1", "user1:x:1000:1000::/home/user1:/bin/bash", "*"),
                ("user2", "user2:x:1010:1010::/home/user2:/bin/bash", "*"),
            ],
        )
        .await;
    }
    // Another image has its own core account (Ignition only sets its password), and user1
    // gets the first free uid from 1000 on, which core may hold.
    let core = getent(&m, "passwd", "core").await?;
    let cf: Vec<&str> = core.split(':').collect();
    if cf.len() != 7 {
        bail!("could not parse the passwd record {core:?} of core");
    }
    let user1 = getent(&m, "passwd", "user1").await?;
    let uid1: u32 = user1
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| anyhow!("user1 has no passwd record with a uid: {user1:?}"))?;
    if uid1 < 1000 || cf[2] == uid1.to_string() {
        bail!(
            "user1 got uid {uid1}, expected a free uid from 1000 on (core has {})",
            cf[2]
        );
    }
    check_users(
        &m,
        &[
            (
                "core",
                &format!("core:x:{}:{}:{}:/home/core:/bin/bash", cf[2], cf[3], cf[4]),
                "foobar",
            ),
            (
                "user1",
                &format!("user1:x:{uid1}:{uid1}::/home/user1:/bin/bash"),
                "*",
            ),
            ("user2", "user2:x:1010:1010::/home/user2:/bin/bash", "*"),
        ],
    )
    .await
}

async fn users_rhcos(c: TestCluster) -> Result<()> {
    check_users(
        &c.machine()?,
        &[
            ("core", "core:x:1000:1000::/home/core:/bin/bash", "foobar"),
            ("user1", "user1:x:1001:1001::/var/home/user1:/bin/bash", "*"),
            ("user2", "user2:x:1010:1010::/var/home/user2:/bin/bash", "*"),
        ],
    )
    .await
}

/// Checks `/var/resource/<name>` holds the expected contents.
async fn check_resources(m: &TestMachine, expect: &[(&str, &str)]) -> Result<()> {
    for (name, want) in expect {
        let got = m
            .must_ssh(&format!("sudo cat /var/resource/{name}"))
            .await?;
        if got != *want {
            bail!("/var/resource/{name}: expected {want:?}, got {got:?}");
        }
    }
    Ok(())
}

fn resource_local_config(http: &str, tftp: &str) -> Config {
    Config::new()
        .file("/var/resource/data", "kola-data", 0o644)
        .file_from_url("/var/resource/http", http, 0o644, None)
        .file_from_url("/var/resource/tftp", tftp, 0o644, None)
}

/// Starts the harness's file server, or skips where guests cannot reach it.
async fn host_server(c: &TestCluster) -> Result<FileServer> {
    if !c.env().platform.starts_with("qemu") {
        return bogie_harness::skip(format!(
            "the harness serves files to guests at {QEMU_HOST_ADDR} (QEMU user networking), not on {}",
            c.env().platform
        ));
    }
    FileServer::start()
        .await
        .context("starting the harness's file server")
}

async fn resource_local(c: TestCluster) -> Result<()> {
    let srv = host_server(&c).await?;
    srv.add("http", "kola-http");
    srv.add("tftp", "kola-tftp");
    let cfg = resource_local_config(&srv.guest_http_url("http"), &srv.guest_tftp_url("tftp"));
    let m = c.new_machine(Some(cfg)).await;
    c.log(format!("served: {:?}", srv.requests()));
    check_resources(
        &m?,
        &[
            ("data", "kola-data"),
            ("http", "kola-http"),
            ("tftp", "kola-tftp"),
        ],
    )
    .await
}

const REMOTE_V3: &str = r#"{
  "ignition": { "version": "3.0.0" },
  "storage": { "files": [
    { "path": "/var/resource/http", "contents": { "source": "http://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/anonymous" }, "mode": 420 },
    { "path": "/var/resource/https", "contents": { "source": "https://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/anonymous" }, "mode": 420 },
    { "path": "/var/resource/s3-anon", "contents": { "source": "s3://kola-fixtures/resources/anonymous" }, "mode": 420 } ] }
}"#;
const S3_V3: &str = r#"{
  "ignition": { "version": "3.0.0", "config": { "merge": [ { "source": "s3://kola-fixtures/resources/authenticated-var-v3.ign" } ] } },
  "storage": { "files": [ { "path": "/var/resource/s3-auth", "contents": { "source": "s3://kola-fixtures/resources/authenticated" }, "mode": 420 } ] }
}"#;
const S3_VERSIONED_V3: &str = r#"{
  "ignition": { "version": "3.0.0" },
  "storage": { "files": [
    { "path": "/var/resource/original", "contents": { "source": "http://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/versioned?versionId=null" }, "mode": 420 },
    { "path": "/var/resource/latest", "contents": { "source": "http://kola-fixtures.s3.eu-central-1.amazonaws.com/resources/versioned?versionId=kihPXL28M3YwRrU0Dbjie2Q.xFfmv8hi" }, "mode": 420 } ] }
}"#;
/// What the TLS server hands out: a config that writes one file.
const TLS_SERVED_V3: &str = r#"{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"/var/resource/data","contents":{"source":"data:,kola-data"}}]}}"#;

fn security_tls_config(url: &str, ca_pem: &str) -> Config {
    Config::new().merge(json!({"ignition": {
        "config": {"merge": [{"source": url}]},
        "security": {"tls": {"certificateAuthorities": [
            {"source": bogie_harness::ignition::data_url(ca_pem.as_bytes())}
        ]}},
    }}))
}

async fn security_tls(c: TestCluster) -> Result<()> {
    if !c.env().platform.starts_with("qemu") {
        return bogie_harness::skip(format!(
            "the harness serves HTTPS to guests at {QEMU_HOST_ADDR} (QEMU user networking), not on {}",
            c.env().platform
        ));
    }
    let tls =
        crate::tls::TlsServer::start(c.dir(), QEMU_HOST_ADDR, &[("config.ign", TLS_SERVED_V3)])
            .await?;
    let url = format!("https://{QEMU_HOST_ADDR}:{}/config.ign", tls.port());
    let m = c
        .new_machine(Some(security_tls_config(&url, &tls.ca_pem())))
        .await?;
    check_resources(&m, &[("data", "kola-data")]).await
}

async fn empty(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh(
        "sudo mkdir -p /etc/flatcar && echo SERVER=disabled | sudo tee /etc/flatcar/update.conf",
    )
    .await?;
    Ok(())
}

const EXT4_NO_CLOBBER: &str = r#"{"ignition":{"version":"2.1.0"},"storage":{"filesystems":[{"mount":{"device":"/dev/disk/by-partlabel/ROOT","format":"ext4","label":"ROOT"}}]}}"#;

async fn ext4_check_existing(c: TestCluster) -> Result<()> {
    let m1 = c.machine()?;
    let cmd = "sudo blkid /dev/disk/by-partlabel/ROOT -s UUID -o value";
    let uuid1 = m1.must_ssh(cmd).await?;
    let m2 = c.new_machine(Some(raw_config(EXT4_NO_CLOBBER))).await?;
    let uuid2 = m2.must_ssh(cmd).await?;
    if uuid1 != uuid2 {
        bail!("the filesystem was reformatted: {uuid1} != {uuid2}");
    }
    Ok(())
}

fn v2_1_usrb(fs: &str, id: &str) -> String {
    format!(
        r#"{{"ignition":{{"version":"2.1.0"}},"storage":{{"filesystems":[{{"mount":{{"device":"/dev/disk/by-partlabel/USR-B","format":"{fs}","wipeFilesystem":true,"label":"USR-B","uuid":"{id}"}}}}]}}}}"#
    )
}

async fn formatted(c: &TestCluster, fs: &str, label: &str) -> Result<()> {
    let m = c.machine()?;
    let uuid = m
        .must_ssh(&format!(
            "sudo blkid -s UUID -o value /dev/disk/by-label/{label}"
        ))
        .await?;
    let want = if fs == "vfat" {
        TARGET_VFAT_ID
    } else {
        TARGET_UUID
    };
    if uuid != want {
        bail!("{label} was not formatted with UUID {want}: {uuid}");
    }
    let ty = m
        .must_ssh(&format!(
            "sudo blkid -s TYPE -o value /dev/disk/by-label/{label}"
        ))
        .await?;
    if ty != fs {
        bail!("{label} has type {ty}, not {fs}");
    }
    Ok(())
}

async fn root_reformatted(c: &TestCluster, fs: &str) -> Result<()> {
    formatted(c, fs, "ROOT").await?;
    let m = c.machine()?;
    let out = m
        .must_ssh("findmnt --noheadings --output FSTYPE --target /")
        .await?;
    if out != fs {
        bail!("/ is {out}, not the reformatted {fs}");
    }
    Ok(())
}

const PARTITION_ON_BOOT_DISK: &str = r#"{
  "ignition": { "version": "2.3.0" },
  "storage": {
    "disks": [ { "device": "/dev/disk/by-id/virtio-primary-disk",
                 "partitions": [ { "label": "VAR", "number": 10, "start": 18874368 } ] } ],
    "filesystems": [ { "name": "VAR", "mount": { "device": "/dev/disk/by-partlabel/VAR", "format": "xfs", "label": "VAR" } } ],
    "files": [
      { "filesystem": "VAR", "path": "/hello", "mode": 420, "contents": { "source": "data:,world" } },
      { "filesystem": "root", "path": "/etc/fstab", "mode": 420,
        "contents": { "source": "data:,%2Fdev%2Fdisk%2Fby-label%2FVAR%20%2Fvar%20xfs%20defaults%200%200%0A" } } ] }
}"#;

async fn partition_on_boot_disk(c: TestCluster) -> Result<()> {
    // The test asks for kola's 10 GiB boot disk (`primary_disk_gib`); a platform that
    // cannot grow disks does not provide `primary-disk-size`, so the test never starts there.
    let m = c
        .new_machine(Some(raw_config(PARTITION_ON_BOOT_DISK)))
        .await?;
    let size: u64 = m
        .must_ssh("lsblk -bdno SIZE /dev/disk/by-id/virtio-primary-disk")
        .await?
        .parse()
        .unwrap_or(0);
    if size < 10 << 30 {
        bail!("the boot disk has {size} bytes; the test asked for 10 GiB");
    }
    c.log(m.must_ssh("lsblk -f; findmnt").await?);
    m.must_ssh(
        "mountpoint /var && ls -la /dev/disk/by-partlabel/VAR && ls -la /dev/disk/by-label/VAR",
    )
    .await?;
    assert_output_contains(&m, "findmnt /var", "xfs").await?;
    assert_output_contains(&m, "cat /var/hello", "world").await?;
    Ok(())
}

/// Flatcar's OEM mount points before and after 3620.
const OLD_OEM: &str = "/usr/share/oem";
const NEW_OEM: &str = "/oem";
const GRUB_APPEND: &str = "set linux_append=\"flatcar.autologin\"\n# Needed if --qemu-skip-mangle is not set\nset linux_console=\"console=ttyS0,115200\"\n";

/// kola's Butane OEM configs (rendered as spec 3.3): "regular" also declares the OEM
/// filesystem at its mount point, "indirect" only writes through the mount point.
fn oem_butane(mountpoint: &str, regular: bool) -> Config {
    let mut c = Config::new().file(&format!("{mountpoint}/grub.cfg"), GRUB_APPEND, 0o644);
    if regular {
        c = c.merge(json!({"storage": {"filesystems": [
            {"device": "/dev/disk/by-label/OEM", "format": "btrfs", "path": mountpoint}
        ]}}));
    }
    c
}

/// kola's CLC OEM configs as Flatcar's ct renders them (spec 2.x).
fn oem_clc(wipe: bool) -> String {
    let wipe = if wipe {
        r#","wipeFilesystem":true,"label":"OEM""#
    } else {
        ""
    };
    format!(
        r#"{{"ignition":{{"version":"2.3.0"}},"storage":{{"filesystems":[{{"name":"oem","mount":{{"device":"/dev/disk/by-label/OEM","format":"ext4"{wipe}}}}}],"files":[{{"filesystem":"oem","path":"/grub.cfg","mode":420,"contents":{{"source":"data:,set%20linux_append%3D%22flatcar.autologin%22%0A"}}}}]}}}}"#
    )
}

async fn oem_fstype(m: &TestMachine) -> Result<String> {
    let out = m
        .must_ssh("lsblk --output FSTYPE,LABEL,MOUNTPOINT --json")
        .await?;
    let v = parse_json("lsblk --json", &out)?;
    fn walk(v: &Value) -> Option<String> {
        for d in v.as_array()? {
            if d["label"] == "OEM" {
                return d["fstype"].as_str().map(String::from);
            }
            if let Some(f) = walk(&d["children"]) {
                return Some(f);
            }
        }
        None
    }
    walk(&v["blockdevices"]).ok_or_else(|| anyhow::anyhow!("no filesystem labelled OEM: {out}"))
}

async fn oem_reuse(c: &TestCluster, mountpoint: &str) -> Result<()> {
    let m = c.machine()?;
    let line = m
        .must_ssh(&format!(
            "grep -m 1 '^set linux_append=\"flatcar.autologin\"$' {mountpoint}/grub.cfg"
        ))
        .await?;
    if line != "set linux_append=\"flatcar.autologin\"" {
        bail!("did not find the written grub entry: {line}");
    }
    let fs = oem_fstype(&m).await?;
    if fs != "btrfs" {
        bail!("OEM should be btrfs, is {fs}");
    }
    m.must_ssh("sudo touch /boot/flatcar/first_boot").await?;
    m.reboot().await?;
    m.must_ssh("true").await?;
    Ok(())
}

async fn oem_wipe(c: TestCluster) -> Result<()> {
    let fs = oem_fstype(&c.machine()?).await?;
    if fs != "ext4" {
        bail!("OEM should be ext4 after the wipe, is {fs}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_json_addresses() {
        let v = json!([{"ifname": "kola", "addr_info": [
            {"family": "inet", "local": "10.0.2.1"}, {"family": "inet6", "local": "fe80::1"}]}]);
        assert_eq!(inet_addresses(&v), vec!["10.0.2.1"]);
    }

    #[test]
    fn legacy_configs_are_well_formed() {
        for (fs, id) in [("vfat", TARGET_VFAT_ID), ("swap", TARGET_UUID)] {
            let c = raw_config(&v2_1_usrb(fs, id));
            assert_eq!(c.version(), "2.1.0");
        }
        assert_eq!(
            raw_config(&oem_clc(true)).as_value()["storage"]["filesystems"][0]["mount"]["label"],
            "OEM"
        );
        for j in [V1_GROUPS, V1_USERS, V1_HOSTNAME, V1_ONCE] {
            let v: Value = serde_json::from_str(j).unwrap();
            assert_eq!(v["ignitionVersion"], 1);
        }
    }
}
