//! `linux.*`: NFS v3 and v4 between two machines over the private network, and time sync
//! from the NTP server kola's privileged QEMU network announces.

use std::time::Duration;

use anyhow::{bail, Result};
use bogie_harness::{Config, Test, TestCluster};

use crate::util::{private_ip, retry};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("linux.nfs.v3", |c| async move { nfs(&c, 3, "/tmp").await })
            .description("an NFSv3 export of /tmp on one machine is mounted by a mount unit on another, and a file made on the server is seen")
            .cluster_size(0)
            .platforms(&["!azure"])
            .timeout(Duration::from_secs(30 * 60))
            .requires(&["nfs-server", "nfs-client", "private-network"]),
        Test::new("linux.nfs.v4", |c| async move { nfs(&c, 4, "/").await })
            .description("an NFSv4 export (fsid=0 root) on one machine is mounted by a mount unit on another, and a file made on the server is seen")
            .cluster_size(0)
            .platforms(&["!azure"])
            .distros(&["cl", "rhcos", "!fcos"])
            .timeout(Duration::from_secs(30 * 60))
            .requires(&["nfs-server", "nfs-client", "private-network"]),
        Test::new("linux.ntp", ntp)
            .description("networkd takes the NTP server from DHCP and timesyncd synchronises to it")
            .cluster_size(0)
            // kola's privileged QEMU network runs a DHCP and NTP server at 10.0.0.1; QEMU's
            // user-mode DHCP offers no NTP server, so bogie's QEMU has none.
            .platforms(&["qemu", "!qemu-unpriv"])
            .privileged_qemu(&["host-ntp"]),
    ]
}

/// The NFS server's config.
pub fn server_config() -> Config {
    Config::new()
        .file("/etc/hostname", "nfs1", 0o644)
        .file(
            "/etc/exports",
            "/tmp  *(ro,insecure,all_squash,no_subtree_check,fsid=0)",
            0o644,
        )
        .file("/var/lib/nfs/etab", "", 0o644)
        .enable_unit("nfs-server.service", true)
}

/// The NFS client's config: a mount unit for the server's export.
pub fn client_config(server: &str, path: &str, version: u32) -> Config {
    let ty = if version == 4 { "nfs4" } else { "nfs" };
    let unit = format!(
        "[Unit]\nDescription=NFS Client\nAfter=network-online.target\nRequires=network-online.target\nAfter=rpc-statd.service\nRequires=rpc-statd.service\n\n[Mount]\nWhat={server}:{path}\nWhere=/var/mnt\nType={ty}\nOptions=defaults,noexec,nfsvers={version}\n\n[Install]\nWantedBy=multi-user.target\n"
    );
    Config::new()
        .file("/etc/hostname", "nfs2", 0o644)
        .unit("var-mnt.mount", &unit, true)
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("linux.nfs (server)", server_config()),
        ("linux.nfs (client)", client_config("10.77.0.10", "/tmp", 3)),
    ]
}

async fn nfs(c: &TestCluster, version: u32, remote: &str) -> Result<()> {
    let server = c.new_machine(Some(server_config())).await?;
    c.log("NFS server booted.");
    let tmp = server.must_ssh("mktemp").await?;
    c.log(format!("test file {tmp:?} created on the server"));
    let ip = private_ip(&server)?;
    let client = c
        .new_machine(Some(client_config(&ip, remote, version)))
        .await?;
    c.log("NFS client booted.");
    retry(10, Duration::from_secs(3), || async {
        let s = client.ssh("systemctl is-active var-mnt.mount").await?;
        if s.stdout_str() != "active" {
            bail!("var-mnt.mount is {:?}", s.stdout_str());
        }
        Ok(())
    })
    .await?;
    let base = tmp.rsplit('/').next().unwrap_or(&tmp);
    client.must_ssh(&format!("stat /var/mnt/{base}")).await?;
    Ok(())
}

const TIMESYNCD_MESSAGES: &[&str] = &[
    "Status: \"Synchronized to time server 10.0.0.1:123 (10.0.0.1).\"",
    "Status: \"Synchronized to time server for the first time 10.0.0.1:123 (10.0.0.1).\"",
    "Status: \"Initial synchronization to time server 10.0.0.1:123 (10.0.0.1).\"",
    "Status: \"Contacted time server 10.0.0.1:123 (10.0.0.1).\"",
];

async fn ntp(c: TestCluster) -> Result<()> {
    let m = c.new_machine(None).await?;
    let out = m.must_ssh("networkctl status eth0").await?;
    if !out.contains("NTP: 10.0.0.1") {
        bail!("bad network config:\n{out}");
    }
    retry(60, Duration::from_secs(1), || async {
        let out = m
            .ssh("systemctl status --no-pager systemd-timesyncd.service")
            .await?
            .stdout_str();
        if !TIMESYNCD_MESSAGES.iter().any(|s| out.contains(s)) {
            bail!("unexpected systemd-timesyncd status: {out}");
        }
        Ok(())
    })
    .await
}
