//! `systemd.*`: journal forwarding between machines, per-user journals, sysusers' gshadow
//! parser.

use std::time::Duration;

use anyhow::{bail, Result};
use bogie_harness::{Config, Test, TestCluster, Version};
use serde_json::json;

use crate::util::{private_ip, retry};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("systemd.journal.remote", journal_remote)
            .description("systemd-journal-remote on one machine pulls a logged message from systemd-journal-gatewayd on another")
            .cluster_size(0)
            .platforms(&["qemu", "qemu-unpriv", "!azure"])
            .timeout(Duration::from_secs(30 * 60))
            .requires(&["journal-remote", "private-network"]),
        Test::new("systemd.journal.user", journal_user)
            .description("a lingering user's unit logs to the user journal, readable with journalctl --user")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .min_version(Version::new(3549, 0, 0))
            .default_user("flatcar")
            .config(journal_user_config()),
        Test::new("systemd.sysusers.gshadow", gshadow)
            .description("systemd-sysusers parses a gshadow with long member lists")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos"]),
    ]
}

/// The gateway machine's config.
pub fn gateway_config() -> Config {
    Config::new()
        .file("/etc/hostname", "gateway", 0o644)
        .enable_unit("systemd-journal-gatewayd.socket", true)
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![("systemd.journal.remote (gateway)", gateway_config())]
}

const MESSAGE: &str = "supercalifragilisticexpialidocious";

async fn journal_remote(c: TestCluster) -> Result<()> {
    let gateway = c.new_machine(Some(gateway_config())).await?;
    gateway.must_ssh(&format!("logger {MESSAGE}")).await?;
    let collector = c.new_machine(None).await?;
    let gw = private_ip(&gateway)?;
    collector
        .must_ssh(&format!(
            "sudo systemd-run --unit systemd-journal-remote-client /usr/lib/systemd/systemd-journal-remote --url http://{gw}:19531"
        ))
        .await?;
    let cmd = format!(
        "sudo journalctl _HOSTNAME=gateway -t core --file /var/log/journal/remote/remote-{gw}.journal"
    );
    retry(5, Duration::from_secs(2), || async {
        let out = collector.ssh(&cmd).await?;
        if !out.success() {
            bail!("journalctl: {}{}", out.stdout_str(), out.stderr_str());
        }
        if !out.stdout_str().contains(MESSAGE) {
            bail!(
                "journal is missing the entry {MESSAGE:?}: {}",
                out.stdout_str()
            );
        }
        Ok(())
    })
    .await
}

fn journal_user_config() -> Config {
    Config::new()
        .user("flatcar", json!({"groups": ["systemd-journal"]}))
        .directory("/etc/systemd/user/default.target.wants", 0o755)
        .file("/var/lib/systemd/linger/flatcar", "", 0o644)
        .file(
            "/etc/systemd/user/hello.service",
            "[Unit]\nDescription=A hello world unit!\n[Service]\nType=oneshot\nExecStart=/usr/bin/echo \"Foo !\"\n[Install]\nWantedBy=default.target\n",
            0o644,
        )
        .link(
            "/etc/systemd/user/default.target.wants/hello.service",
            "/etc/systemd/user/hello.service",
            false,
        )
}

async fn journal_user(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    retry(10, Duration::from_secs(2), || async {
        let out = m.ssh("journalctl --user").await?;
        let log = out.stdout_str();
        if !out.success() {
            bail!("journalctl --user failed: {}", out.stderr_str());
        }
        if !log.contains("Foo") {
            bail!("no 'Foo' in the user journal yet: {log}");
        }
        Ok(())
    })
    .await
}

async fn gshadow(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let members: Vec<String> = (1..=47).map(|i| format!("somebody.a{i}")).collect();
    let cmd = format!(
        "sudo sh -c \"echo 'grp0:*::root' >> /etc/gshadow && echo 'grp1:*::{},a1234' >> /etc/gshadow && echo 'grp2:*::root' >> /etc/gshadow\" && sudo systemd-sysusers",
        members.join(",")
    );
    m.must_ssh(&cmd).await?;
    Ok(())
}
