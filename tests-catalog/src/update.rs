//! `cl.update.*`, `coreos.update.badusr`, `cl.sysext.boot*`, `cl.omaha.ping`: Flatcar's A/B
//! `/usr` updates (switching partitions, falling back from broken ones, applying payloads
//! from an Omaha server the harness runs) and the sysext symlink logic at boot.
//!
//! The payload tests need an update payload (`--update-payload`; the harness exports its
//! path as `BOGIE_UPDATE_PAYLOAD`) and Flatcar's update_engine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::serve::QEMU_HOST_ADDR;
use bogie_harness::{Arch, Config, Test, TestCluster, TestFlags, TestMachine, Version};

use crate::omaha::Omaha;
use crate::util::raw_config;

fn q() -> [&'static str; 2] {
    ["qemu", "qemu-unpriv"]
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let no_avc = TestFlags {
        no_selinux_avc_checks: true,
        ..TestFlags::default()
    };
    let payload_needs = [
        "flatcar",
        "flatcar-partitions",
        "update-engine",
        "update-payload",
    ];
    vec![
        Test::new("cl.update.reboot", reboot_into_usr_b)
            .description("a copy of USR-A in USR-B, prioritized with cgpt, boots after a reboot (Flatcar: cgpt, rootdev, its A/B boot)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .requires(&["flatcar", "flatcar-partitions"])
            .config(disable_update_engine()),
        Test::new("cl.update.badverity", bad_verity)
            .description("a USR-B kernel with a wrong verity hash fails to boot and the machine falls back to USR-A (Flatcar: cgpt, the verity hash in its kernel)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .requires(&["flatcar", "flatcar-partitions", "verity"])
            .flags(TestFlags {
                no_emergency_shell_check: true,
                no_kernel_panic_check: true,
                ..TestFlags::default()
            })
            .timeout(Duration::from_secs(30 * 60))
            .config(disable_update_engine()),
        Test::new("coreos.update.badusr", bad_usr)
            .description("an empty but verity-valid USR-B fails to boot and the machine falls back to USR-A (Flatcar: cgpt, the verity hash in its kernel)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .requires(&["flatcar", "flatcar-partitions", "verity"])
            .flags(TestFlags {
                no_emergency_shell_check: true,
                ..TestFlags::default()
            })
            .timeout(Duration::from_secs(30 * 60))
            .config(disable_update_engine()),
        Test::new("cl.update.payload", |c| async move {
            let (omaha, m) = prepare(&c, None).await?;
            perform_update(&c, &omaha, &m).await?;
            no_avc_messages(&c, &m).await
        })
        .description("update_engine applies a payload from the harness's Omaha server to USR-B, then back to USR-A (Flatcar: update_engine, cgpt)")
        .cluster_size(0)
        .platforms(&q())
        .requires(&payload_needs)
        .flags(no_avc)
        .timeout(Duration::from_secs(40 * 60)),
        Test::new("cl.update.payload-boot-part-too-small", boot_part_too_small)
            .description("with /boot full, the update fails cleanly (kernel copy error) and the machine stays on USR-A (Flatcar: update_engine)")
            .cluster_size(0)
            .platforms(&q())
            .requires(&payload_needs)
            .flags(no_avc)
            .timeout(Duration::from_secs(30 * 60)),
        Test::new("cl.update.docker-btrfs-compat", docker_btrfs_compat)
            .description("docker's btrfs storage, its images and containers survive an update (Flatcar: update_engine)")
            .cluster_size(0)
            .platforms(&q())
            .end_version(Version::new(3760, 0, 0))
            .requires(&["flatcar", "flatcar-partitions", "update-engine", "update-payload", "docker", "btrfs"])
            .tags(&["needs-internet"])
            .flags(no_avc)
            .timeout(Duration::from_secs(40 * 60)),
        Test::new("cl.update.oem", oem_update)
            .description("an update migrates the Azure OEM to its sysext and removes the OEM cleanup paths (Flatcar: update_engine, its OEM sysexts)")
            .platforms(&q())
            .requires(&["flatcar", "flatcar-partitions", "update-engine", "update-payload", "oem-partition", "sysext"])
            .tags(&["needs-internet"])
            .flags(no_avc)
            .timeout(Duration::from_secs(40 * 60))
            .config(raw_config(OEM_UPDATE_CONFIG)),
        Test::new("cl.sysext.boot.old", |c| async move { sysext_boot(&c, "/usr/share/oem").await })
            .description("at boot the sysext symlinks are switched to the running version's images (Flatcar: its sysext symlink service, OEM in /usr/share/oem)")
            .cluster_size(0)
            .platforms(&q())
            .min_version(Version::new(3481, 0, 0))
            .end_version(Version::new(3603, 0, 0))
            .requires(&["flatcar", "sysext", "oem-partition"]),
        Test::new("cl.sysext.boot", |c| async move { sysext_boot(&c, "/oem").await })
            .description("at boot the sysext symlinks are switched to the running version's images (Flatcar: its sysext symlink service, OEM in /oem)")
            .cluster_size(0)
            .platforms(&q())
            .min_version(Version::new(3603, 0, 0))
            .requires(&["flatcar", "sysext", "oem-partition"]),
        Test::new("cl.sysext.fallbackdownload", fallback_download)
            .description("a missing OEM sysext image is downloaded from the bincache at boot (Flatcar: its OEM sysext download, dev builds)")
            .cluster_size(0)
            .platforms(&q())
            .min_version(Version::new(3620, 0, 0))
            .tags(&["needs-internet"])
            .requires(&["flatcar", "sysext", "update-engine"]),
        Test::new("cl.omaha.ping", omaha_ping)
            .description("update_engine pings the Omaha server the config names (Flatcar: update_engine)")
            .cluster_size(0)
            // kola's Omaha server lived in its privileged QEMU network namespace; bogie's
            // runs on the host, at 10.0.2.2 for QEMU's guests (`host-omaha`).
            .platforms(&["qemu", "!qemu-unpriv"])
            .privileged_qemu(&["host-omaha"])
            .flags(TestFlags {
                no_disable_updates: true,
                ..TestFlags::default()
            })
            .requires(&["flatcar", "update-engine"]),
    ]
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        (
            "cl.omaha.ping",
            update_server_config("http://10.0.2.2:1/v1/update/"),
        ),
        ("cl.update.docker-btrfs-compat", btrfs_docker_config()),
    ]
}

fn disable_update_engine() -> Config {
    Config::new().mask_unit("update-engine.service")
}

fn update_server_config(url: &str) -> Config {
    Config::new().file(
        "/etc/flatcar/update.conf",
        &format!("SERVER={url}\n"),
        0o644,
    )
}

/// The partition label /usr is on (USR-A or USR-B).
async fn assert_booted_usr(m: &TestMachine, usr: &str) -> Result<()> {
    let dev = m.must_ssh("rootdev -s /usr").await?;
    let target = m
        .must_ssh(&format!("readlink -f /dev/disk/by-partlabel/{usr}"))
        .await?;
    if dev != target {
        bail!("expected /usr on {usr} ({target}), it is on {dev}");
    }
    Ok(())
}

async fn prioritize_usr(m: &TestMachine, usr: &str) -> Result<()> {
    m.must_ssh(&format!(
        "sudo cgpt repair /dev/disk/by-partlabel/{usr} && sudo cgpt add -S0 -T1 /dev/disk/by-partlabel/{usr} && sudo cgpt prioritize /dev/disk/by-partlabel/{usr}"
    ))
    .await?;
    Ok(())
}

fn verity_hash_offset(c: &TestCluster) -> u32 {
    if c.env().arch == Arch::Arm64 {
        512
    } else {
        64
    }
}

async fn reboot_into_usr_b(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_booted_usr(&m, "USR-A").await?;
    m.must_ssh("sudo dd if=/dev/disk/by-partlabel/USR-A of=/dev/disk/by-partlabel/USR-B bs=10M status=none && sudo cp /boot/flatcar/vmlinuz-a /boot/flatcar/vmlinuz-b")
        .await?;
    prioritize_usr(&m, "USR-B").await?;
    m.reboot().await?;
    assert_booted_usr(&m, "USR-B").await
}

/// Starts a reboot into a /usr that must fail, waits (kola: 5 minutes) and checks the
/// machine came back on USR-A.
async fn reboot_expecting_fallback(m: &TestMachine) -> Result<()> {
    let before = m.boot_id().await?;
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        m.ssh("sudo systemd-run --no-block --on-active=1 systemctl reboot"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(300)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(id) = m.boot_id().await {
            if id != before {
                break;
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the machine did not come back after the failed boot");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    m.must_ssh("systemctl is-system-running --wait || true")
        .await?;
    assert_booted_usr(m, "USR-A").await
}

async fn bad_verity(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let st = m.ssh("sudo veritysetup status usr").await?;
    if !st.success() && st.stdout_str().contains("is inactive") {
        return bogie_harness::skip("verity is not enabled");
    }
    assert_booted_usr(&m, "USR-A").await?;
    m.must_ssh(&format!(
        "sudo dd if=/dev/disk/by-partlabel/USR-A of=/dev/disk/by-partlabel/USR-B bs=10M status=none && sudo cp /boot/flatcar/vmlinuz-a /boot/flatcar/vmlinuz-b && printf '%064d' 0 | sudo dd of=/boot/flatcar/vmlinuz-b bs=1 seek={} count=64 conv=notrunc status=none",
        verity_hash_offset(&c)
    ))
    .await?;
    prioritize_usr(&m, "USR-B").await?;
    reboot_expecting_fallback(&m).await
}

async fn bad_usr(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_booted_usr(&m, "USR-A").await?;
    m.must_ssh("sudo mkfs.ext4 -q -b 4096 /dev/disk/by-partlabel/USR-B 260094")
        .await?;
    let out = m
        .must_ssh("sudo veritysetup format --hash=sha256 --data-block-size 4096 --hash-block-size 4096 --data-blocks 260094 --hash-offset 1065345024 /dev/disk/by-partlabel/USR-B /dev/disk/by-partlabel/USR-B")
        .await?;
    let hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(str::trim)
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
        .with_context(|| format!("no root hash in veritysetup's output: {out}"))?
        .to_string();
    m.must_ssh(&format!(
        "sudo cp /boot/flatcar/vmlinuz-a /boot/flatcar/vmlinuz-b && printf '%s' {hash} | sudo dd of=/boot/flatcar/vmlinuz-b bs=1 seek={} count=64 conv=notrunc status=none",
        verity_hash_offset(&c)
    ))
    .await?;
    prioritize_usr(&m, "USR-B").await?;
    reboot_expecting_fallback(&m).await
}

/// The payload the harness was given.
fn payload_path() -> Result<PathBuf> {
    match std::env::var_os("BOGIE_UPDATE_PAYLOAD") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bogie_harness::skip("no update payload given (--update-payload)"),
    }
}

/// The developer key Flatcar's test payloads are signed with.
const DEV_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzFS5uVJ+pgibcFLD3kbY\nk02Edj0HXq31ZT/Bva1sLp3Ysv+QTv/ezjf0gGFfASdgpz6G+zTipS9AIrQr0yFR\n+tdp1ZsHLGxVwvUoXFftdapqlyj8uQcWjjbN7qJsZu0Ett/qo93hQ5nHW7Sv5dRm\n/ZsDFqk2Uvyaoef4bF9r03wYpZq7K3oALZ2smETv+A5600mj1Xg5M52QFU67UHls\nEFkZphrGjiqiCdp9AAbAvE7a5rFcJf86YR73QX08K8BX7OMzkn3DsqdnWvLB3l3W\n6kvIuP+75SrMNeYAcU8PI1+bzLcAG3VN3jA78zeKALgynUNH50mxuiiU3DO4DZ+p\n5QIDAQAB\n-----END PUBLIC KEY-----\n";

async fn start_omaha(c: &TestCluster) -> Result<Omaha> {
    if !c.env().platform.starts_with("qemu") {
        return bogie_harness::skip(format!(
            "the harness's Omaha server is reachable at {QEMU_HOST_ADDR} only through QEMU's user network"
        ));
    }
    let payload = payload_path()?;
    Omaha::start(Some(&payload), "9999.9.9").await
}

/// kola's configureMachineForUpdate: point update_engine at the server, trust the dev key.
async fn configure_for_update(m: &TestMachine, omaha: &Omaha) -> Result<()> {
    let conf = format!(
        "GROUP=developer\nSERVER=http://{QEMU_HOST_ADDR}:{}/v1/update\n",
        omaha.port()
    );
    m.write_file("/etc/coreos/update.conf", conf.as_bytes(), 0o644)
        .await?;
    m.write_file(
        "/etc/coreos/update-payload-key.pub.pem",
        DEV_KEY.as_bytes(),
        0o644,
    )
    .await?;
    m.must_ssh("sudo mount --bind /etc/coreos/update-payload-key.pub.pem /usr/share/update_engine/update-payload-key.pub.pem && sudo systemctl mask --now locksmithd.service; sudo systemctl reset-failed locksmithd.service; sudo systemctl restart update-engine.service")
        .await?;
    Ok(())
}

fn status_op(envs: &str) -> &str {
    envs.lines()
        .find_map(|l| l.strip_prefix("CURRENT_OP="))
        .unwrap_or("")
}

/// Triggers an update check and waits for `want` (as update_engine_client -status reports).
async fn wait_for_op(m: &TestMachine, want: &str, timeout: Duration) -> Result<()> {
    m.must_ssh("update_engine_client -check_for_update").await?;
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let envs = m
            .must_ssh("update_engine_client -status 2>/dev/null")
            .await?;
        if status_op(&envs) == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > end {
            bail!("update_engine did not reach {want}: {envs}");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

async fn prepare(c: &TestCluster, config: Option<Config>) -> Result<(Omaha, TestMachine)> {
    let omaha = start_omaha(c).await?;
    let m = c.new_machine(config).await?;
    configure_for_update(&m, &omaha).await?;
    assert_booted_usr(&m, "USR-A").await?;
    Ok((omaha, m))
}

async fn update_and_reboot(m: &TestMachine) -> Result<()> {
    wait_for_op(
        m,
        "UPDATE_STATUS_UPDATED_NEED_REBOOT",
        Duration::from_secs(600),
    )
    .await?;
    m.reboot().await
}

async fn perform_update(c: &TestCluster, omaha: &Omaha, m: &TestMachine) -> Result<()> {
    update_and_reboot(m).await?;
    assert_booted_usr(m, "USR-B").await?;
    m.must_ssh("sudo flatcar-setgoodroot && sudo wipefs /dev/disk/by-partlabel/USR-A")
        .await?;
    // The payload may have replaced the trusted key with the official one: trust the dev
    // key again before updating back.
    configure_for_update(m, omaha).await?;
    update_and_reboot(m).await?;
    c.log(format!("omaha requests: {:?}", omaha.requests()));
    assert_booted_usr(m, "USR-A").await
}

async fn no_avc_messages(c: &TestCluster, m: &TestMachine) -> Result<()> {
    if c.env()
        .version
        .is_some_and(|v| v < Version::new(4208, 0, 0))
    {
        return Ok(());
    }
    let out = m
        .ssh("journalctl -b | grep -ie 'avc:[[:space:]]*denied'; true")
        .await?
        .stdout_str();
    if !out.is_empty() {
        bail!("AVC denials in the last boot on {}:\n{out}", m.id());
    }
    Ok(())
}

async fn boot_part_too_small(c: TestCluster) -> Result<()> {
    let (omaha, m) = prepare(&c, None).await?;
    m.must_ssh("sudo dd if=/dev/zero of=/boot/increase_boot_part_usage bs=1M count=9999 status=none || true")
        .await?;
    configure_for_update(&m, &omaha).await?;
    wait_for_op(&m, "UPDATE_STATUS_IDLE", Duration::from_secs(60)).await?;
    let msg = m
        .ssh("journalctl -xeu update-engine.service | grep -i 'Failed to copy kernel from /boot/flatcar/vmlinuz-a to /boot/flatcar/vmlinuz-b'")
        .await?
        .stdout_str();
    if msg.is_empty() {
        bail!("update-engine did not log the failed kernel copy");
    }
    assert_booted_usr(&m, "USR-A").await?;
    m.reboot().await?;
    assert_booted_usr(&m, "USR-A").await
}

fn btrfs_docker_config() -> Config {
    let format = "[Unit]\nBefore=docker.service var-lib-docker.mount\nConditionPathExists=!/var/lib/docker.btrfs\n[Service]\nType=oneshot\nExecStart=/usr/bin/truncate --size=25G /var/lib/docker.btrfs\nExecStart=/usr/sbin/mkfs.btrfs /var/lib/docker.btrfs\n[Install]\nWantedBy=multi-user.target\n";
    let mount = "[Unit]\nBefore=docker.service\nAfter=format-var-lib-docker.service\nRequires=format-var-lib-docker.service\n[Install]\nRequiredBy=docker.service\n[Mount]\nWhat=/var/lib/docker.btrfs\nWhere=/var/lib/docker\nType=btrfs\nOptions=loop,discard\n";
    Config::new()
        .unit("format-var-lib-docker.service", format, true)
        .unit("var-lib-docker.mount", mount, true)
}

async fn docker_btrfs_compat(c: TestCluster) -> Result<()> {
    let (omaha, m) = prepare(&c, Some(btrfs_docker_config())).await?;
    let check = r#"docker info | grep 'Storage Driver: btrfs' || { echo "ERROR: expected BTRFS storage driver"; docker info; exit 1; }"#;
    m.must_ssh(check).await?;
    m.must_ssh("docker run -i --name docker_btrfs_driver_test alpine ls /")
        .await?;
    perform_update(&c, &omaha, &m).await?;
    m.must_ssh(check).await?;
    m.must_ssh(r#"docker image ls | grep alpine || { echo "ERROR: image alpine disappeared after the update"; exit 1; }"#)
        .await?;
    m.must_ssh(r#"docker ps --all | grep docker_btrfs_driver_test || { echo "ERROR: container docker_btrfs_driver_test disappeared after the update"; exit 1; }"#)
        .await?;
    no_avc_messages(&c, &m).await
}

const OEM_UPDATE_CONFIG: &str = r#"{
  "ignition": { "version": "2.3.0" },
  "storage": {
    "filesystems": [ { "name": "oem", "mount": { "device": "/dev/disk/by-label/OEM", "format": "ext4" } } ],
    "files": [
      { "filesystem": "oem", "path": "/oem-release", "contents": { "source": "data:,ID%3Dazure%0A" } },
      { "filesystem": "oem", "path": "/python/shouldbedeleted", "contents": { "source": "data:,should%20be%20deleted%20because%20its%20part%20of%20the%20Azure%20OEM%20cleanup%20paths%0A" } },
      { "filesystem": "root", "path": "/etc/systemd/system/waagent.service", "contents": { "source": "data:,%5BService%5D%0AExecStart%3D%2Fbin%2Fecho%20%22should%20be%20deleted%22%0A" } } ] },
  "systemd": { "units": [ { "name": "chronyd.service", "mask": true } ] }
}"#;

async fn oem_update(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let omaha = start_omaha(&c).await?;
    let payload = payload_path()?;
    // flatcar-update reads the payload from the machine.
    let bytes =
        std::fs::read(&payload).with_context(|| format!("reading {}", payload.display()))?;
    m.write_file("/updates/update.gz", &bytes, 0o644).await?;
    configure_for_update(&m, &omaha).await?;
    assert_booted_usr(&m, "USR-A").await?;
    update_and_reboot(&m).await?;
    assert_booted_usr(&m, "USR-B").await?;
    m.must_ssh("sudo flatcar-setgoodroot && sudo wipefs /dev/disk/by-partlabel/USR-A")
        .await?;
    m.must_ssh("test -e /oem/python/shouldbedeleted && test -e /etc/systemd/system/waagent.service && test ! -e /oem/sysext/active-oem-azure")
        .await?;
    let version = m
        .must_ssh(". /etc/os-release && echo \"${VERSION}\"")
        .await?;
    if version.is_empty() {
        bail!("empty VERSION in /etc/os-release");
    }
    let arch = if c.env().arch == Arch::Arm64 {
        "arm64"
    } else {
        "amd64"
    };
    m.must_ssh(&format!(
        "test -e /oem/sysext/oem-azure-{version}.raw && test ! -e /etc/extensions/oem-azure.raw && test ! -e /oem/sysext/active-oem-azure"
    ))
    .await?;
    m.must_ssh(&format!(
        r#"set -e
curl -fsSLO --retry-delay 1 --retry 60 --retry-connrefused --retry-max-time 60 --connect-timeout 20 https://bincache.flatcar-linux.net/images/{arch}/{version}/flatcar_test_update-oem-azure.gz
cp ./flatcar_test_update-oem-azure.gz ./flatcar_test_update-flatcar-unknown.gz
echo unknown | sudo tee -a /etc/flatcar/enabled-sysext.conf >/dev/null
sudo mkdir -p /etc/flatcar/sysext
sudo flatcar-update --to-version {version} --to-payload /updates/update.gz --extension ./flatcar_test_update-oem-azure.gz --extension ./flatcar_test_update-flatcar-unknown.gz --disable-afterwards --force-dev-key
sudo rm /etc/flatcar/sysext/flatcar-unknown-{version}.raw
mkdir -p /tmp/unknown/usr/lib/extension-release.d/ && echo ID=_any > /tmp/unknown/usr/lib/extension-release.d/extension-release.flatcar-unknown
sudo mkfs.btrfs --mixed -m single -d single --shrink --rootdir /tmp/unknown /etc/flatcar/sysext/flatcar-unknown-{version}.raw"#
    ))
    .await?;
    no_avc_messages(&c, &m).await?;
    m.reboot().await?;
    assert_booted_usr(&m, "USR-A").await?;
    m.must_ssh("test ! -e /oem/python/shouldbedeleted && test ! -e /etc/systemd/system/waagent.service && test -e /oem/sysext/active-oem-azure")
        .await?;
    m.must_ssh("systemd-sysext status | grep -q -E '(oem-azure|flatcar-unknown)'")
        .await?;
    m.must_ssh(&format!(
        "test -e /oem/sysext/oem-azure-{version}.raw && test -e /etc/extensions/oem-azure.raw && test -e /etc/extensions/flatcar-unknown.raw && test -e /etc/flatcar/sysext/flatcar-unknown-{version}.raw"
    ))
    .await?;
    no_avc_messages(&c, &m).await
}

async fn sysext_boot(c: &TestCluster, oem: &str) -> Result<()> {
    let m = c.new_machine(None).await?;
    let version = m
        .must_ssh(". /etc/os-release && echo \"${VERSION}\"")
        .await?;
    if version.is_empty() {
        bail!("empty VERSION in /etc/os-release");
    }
    m.must_ssh(&format!(
        r#"set -eux
sudo systemctl mask --now ensure-sysext || true
sudo systemctl mask --now systemd-sysext
sudo mkdir -p /etc/flatcar/sysext /etc/flatcar/oem-sysext {oem}/sysext /etc/extensions
echo ID=test | sudo tee {oem}/oem-release
echo myext | sudo tee /etc/flatcar/enabled-sysext.conf
sudo touch {oem}/sysext/active-oem-test /etc/flatcar/oem-sysext/oem-test-{version}.raw /etc/flatcar/oem-sysext/oem-test-1.2.3.raw /etc/flatcar/sysext/flatcar-myext-{version}.raw /etc/flatcar/sysext/flatcar-myext-1.2.3.raw
sudo ln -fs /etc/flatcar/oem-sysext/oem-test-1.2.3.raw /etc/extensions/oem-test.raw
sudo ln -fs /etc/flatcar/sysext/flatcar-myext-1.2.3.raw /etc/extensions/flatcar-myext.raw"#
    ))
    .await?;
    m.reboot().await?;
    let checks = format!(
        r#"[ "$(readlink -f /etc/extensions/oem-test.raw)" = "{oem}/sysext/oem-test-{version}.raw" ] || {{ echo "OEM symlink wrong"; exit 1; }}
[ "$(readlink -f /etc/extensions/flatcar-myext.raw)" = "/etc/flatcar/sysext/flatcar-myext-{version}.raw" ] || {{ echo "Extension symlink wrong"; exit 1; }}"#
    );
    m.must_ssh(&format!(
        "set -eux\n{checks}\nsudo mv {oem}/sysext/oem-test-{version}.raw /etc/flatcar/oem-sysext/\nsudo mv /etc/flatcar/oem-sysext/oem-test-1.2.3.raw {oem}/sysext/\nsudo ln -fs {oem}/sysext/oem-test-1.2.3.raw /etc/extensions/oem-test.raw\nsudo ln -fs /etc/flatcar/sysext/flatcar-myext-1.2.3.raw /etc/extensions/flatcar-myext.raw"
    ))
    .await?;
    m.reboot().await?;
    m.must_ssh(&format!(
        "set -eux\n{checks}\n[ -e /etc/flatcar/oem-sysext/oem-test-1.2.3.raw ] || {{ echo \"Old sysext didn't get moved to rootfs\"; exit 1; }}"
    ))
    .await?;
    m.platform_machine().destroy().await?;
    // The same state made by Ignition on first boot.
    let cfg = raw_config(&format!(
        r#"{{"ignition":{{"version":"2.3.0"}},"storage":{{
  "filesystems":[{{"name":"oem","mount":{{"device":"/dev/disk/by-label/OEM","format":"btrfs"}}}}],
  "files":[
    {{"filesystem":"oem","path":"/oem-release","contents":{{"source":"data:,ID%3Dtest%0A"}}}},
    {{"filesystem":"oem","path":"/sysext/active-oem-test","contents":{{"source":"data:,"}}}},
    {{"filesystem":"oem","path":"/sysext/oem-test-{version}.raw","contents":{{"source":"data:,"}}}},
    {{"filesystem":"root","path":"/etc/flatcar/enabled-sysext.conf","contents":{{"source":"data:,myext%0A"}}}},
    {{"filesystem":"root","path":"/etc/flatcar/sysext/flatcar-myext-{version}.raw","contents":{{"source":"data:,"}}}}]}},
 "systemd":{{"units":[{{"name":"systemd-sysext.service","mask":true}},{{"name":"ensure-sysext.service","mask":true}}]}}}}"#
    ));
    let m2 = c.new_machine(Some(cfg)).await?;
    m2.must_ssh(&format!("set -eux\n{checks}")).await?;
    Ok(())
}

async fn fallback_download(c: TestCluster) -> Result<()> {
    let m = c.new_machine(None).await?;
    m.must_ssh("test ! -e /etc/extensions/oem-qemu.raw").await?;
    let sum = m
        .must_ssh("md5sum /usr/share/update_engine/update-payload-key.pub.pem | cut -d ' ' -f 1")
        .await?;
    if sum != "7192addf4a7f890c0057d21653eff2ea" {
        return bogie_harness::skip("only dev builds download OEM sysexts from the bincache");
    }
    let version = m
        .must_ssh(". /etc/os-release && echo \"${VERSION}\"")
        .await?;
    let arch = if c.env().arch == Arch::Arm64 {
        "arm64"
    } else {
        "amd64"
    };
    let pre = m
        .ssh(&format!(
            "curl -fsSI https://bincache.flatcar-linux.net/images/{arch}/{version}/version.txt"
        ))
        .await?;
    if !pre.success() {
        return bogie_harness::skip("the bincache has no build of this version");
    }
    m.must_ssh("sudo mkdir -p /oem/sysext && sudo touch /oem/sysext/active-oem-qemu && echo ID=qemu | sudo tee /oem/oem-release >/dev/null")
        .await?;
    m.reboot().await?;
    m.must_ssh("test -e /etc/extensions/oem-qemu.raw").await?;
    Ok(())
}

async fn omaha_ping(c: TestCluster) -> Result<()> {
    if !c.env().platform.starts_with("qemu") {
        return bogie_harness::skip("the harness's Omaha server needs QEMU's user network");
    }
    let omaha = Omaha::start(None, "0.0.0").await?;
    let url = format!("http://{QEMU_HOST_ADDR}:{}/v1/update/", omaha.port());
    let m = c.new_machine(Some(update_server_config(&url))).await?;
    m.must_ssh("update_engine_client -check_for_update").await?;
    if !omaha
        .wait_for(Duration::from_secs(30), |r| {
            r.starts_with("POST") && r.contains("ping")
        })
        .await
    {
        bail!(
            "timed out waiting for the Omaha ping; requests: {:?}",
            omaha.requests()
        );
    }
    Ok(())
}
