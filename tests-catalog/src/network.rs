//! `cl.network.*`: listening sockets, networkd's start after the initramfs, WireGuard
//! interfaces from wg-quick, and firewall rules restored at boot (nftables, iptables).

use anyhow::{bail, Result};
use bogie_harness::{Config, Test, TestCluster, Version};
use serde_json::Value;

use crate::util::{boot_for_image, parse_json, retry};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("cl.network.listeners", listeners)
            .description("only expected processes listen (sshd/systemd on 22, networkd's DHCP client, resolved, timesyncd, containerd)")
            .platforms(&["qemu", "qemu-unpriv"])
            .min_version(Version::new(1967, 0, 0))
            .config(crate::docker::docker_config()),
        Test::new("cl.network.listeners.legacy", listeners)
            .description("only expected processes listen (images before 1967, docker not started)")
            .platforms(&["qemu", "qemu-unpriv"])
            .end_version(Version::new(1967, 0, 0)),
        Test::new("cl.network.initramfs.second-boot", second_boot)
            .description("after a reboot networkd starts only in the real root, after the switch from the systemd initramfs (Flatcar: its systemd initramfs)")
            .platforms(&["!do"])
            // The check reads the journal of a systemd initramfs (initrd-switch-root.target).
            .requires(&["flatcar"]),
        Test::new("cl.network.wireguard", wireguard)
            .description("wg-quick@kv0 and wg-quick@wg0, enabled through Ignition, bring up WireGuard interfaces with their addresses")
            .platforms(&["qemu", "qemu-unpriv", "esx", "azure"])
            .min_version(Version::new(3185, 0, 0))
            .requires(&["wireguard"])
            .config(wireguard_config()),
        Test::new("cl.network.nftables", |c| async move {
            let m = boot_for_image(&c, nftables_flatcar(), nftables_other()).await?;
            firewall(&m).await
        })
        .description("a saved nftables ruleset is loaded at boot by nftables-load.service (port 80 dropped)")
        .cluster_size(0)
        .platforms(&["qemu", "qemu-uefi", "azure"])
        .min_version(Version::new(4345, 0, 0))
        .requires(&["nftables"]),
        Test::new("cl.network.iptables", |c| async move {
            let m = boot_for_image(&c, iptables_flatcar(), iptables_other()).await?;
            firewall(&m).await
        })
        .description("saved iptables rules are restored at boot by iptables-restore.service (port 80 dropped)")
        .cluster_size(0)
        .platforms(&["qemu", "qemu-uefi", "azure"])
        .requires(&["iptables", "nftables"]),
    ]
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("cl.network.nftables (Flatcar)", nftables_flatcar()),
        ("cl.network.nftables (other)", nftables_other()),
        ("cl.network.iptables (Flatcar)", iptables_flatcar()),
        ("cl.network.iptables (other)", iptables_other()),
    ]
}

/// A listener kola expects: protocol prefix, port (`*` any), process name.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("tcp", "22", "systemd"),           // sshd.socket (Flatcar)
    ("tcp", "22", "sshd"),              // sshd.service (images without socket activation)
    ("udp", "68", "systemd-networkd"),  // DHCPv4 client
    ("udp", "546", "systemd-networkd"), // DHCPv6 client
    ("tcp", "53", "systemd-resolved"),
    ("udp", "53", "systemd-resolved"),
    ("udp", "*", "systemd-timesyncd"),
    ("tcp", "*", "containerd"),
];

/// Checks `ss -Hplutn` output; returns the unexpected listeners.
pub fn unexpected_listeners(ss: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in ss.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            bad.push(format!("unparsable: {line}"));
            continue;
        }
        let proto = f[0];
        let port = f[4].rsplit(':').next().unwrap_or("");
        // users:(("sshd",pid=303,fd=3)) — ss shows the 15-character comm.
        let process = line
            .split("((\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        if process.is_empty() {
            continue; // kola ignores listeners without a process (kernel sockets)
        }
        let ok = EXPECTED.iter().any(|(p, pt, name)| {
            proto.starts_with(p)
                && (*pt == "*" || *pt == port)
                && (*name == process || (process.len() >= 15 && name.starts_with(process)))
        });
        if !ok {
            bad.push(line.trim().to_string());
        }
    }
    bad
}

async fn listeners(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    retry(3, std::time::Duration::from_secs(5), || async {
        let out = m.must_ssh("sudo ss -Hplutn").await?;
        let bad = unexpected_listeners(&out);
        if !bad.is_empty() {
            bail!(
                "unexpected listeners: {}\nfull output:\n{out}",
                bad.join("; ")
            );
        }
        Ok(())
    })
    .await
}

const NETWORKD_STARTED: &[&str] = &[
    "Started Network Service.",
    "Started Network Configuration.",
    "Started systemd-networkd.service.",
    "Started systemd-networkd.service - Network Configuration.",
    "Started systemd-networkd.service - Network Management.",
];
const SWITCH_ROOT: &[&str] = &[
    "Reached target Switch Root.",
    "Reached target initrd-switch-root.target.",
    "Reached target initrd-switch-root.target - Switch Root.",
];

async fn second_boot(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.reboot().await?;
    let out = m
        .must_ssh("journalctl -b 0 -o cat -u initrd-switch-root.target -u systemd-networkd.service")
        .await?;
    let lines: Vec<&str> = out.lines().collect();
    if !lines.iter().any(|l| NETWORKD_STARTED.contains(l)) {
        bail!("no journal entry for networkd's start:\n{out}");
    }
    if !lines.first().is_some_and(|l| SWITCH_ROOT.contains(l)) {
        bail!("networkd started in the initramfs:\n{out}");
    }
    Ok(())
}

fn wireguard_config() -> Config {
    Config::new()
        .file(
            "/etc/wireguard/kv0.conf",
            "[Interface]\nAddress = 10.100.0.2/32\nPrivateKey = GPSa0CZhJRqtZQciPAZPI62rrGivQ2TWhCJUYI01c2g=\n[Peer]\nPublicKey = EQluuT9Wk0TFUDYlU/5fBsY3KPx/YsZxaM0lCvlLwF4=\nAllowedIPs = 192.168.0.0/24\nEndpoint = 127.0.0.1:51820\n",
            0o644,
        )
        .file(
            "/etc/wireguard/wg0.conf",
            "[Interface]\nAddress = 10.100.0.1/24\nSaveConfig = true\nListenPort = 51820\nFwMark = 0xca6c\nPrivateKey = OLjWWVfIcPj0TOIaqPOJKFArd9PfVooWeBFyC9Kqwmg=\n[Peer]\nPublicKey = 1Qy9mZNQIUmHCfvdhoBCNhuLjR0UVGOEONQAJkkqilg=\nAllowedIPs = 10.100.0.2/32\n",
            0o644,
        )
        .enable_unit("wg-quick@kv0.service", true)
        .enable_unit("wg-quick@wg0.service", true)
}

async fn wireguard(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let out = m.must_ssh("ip --json address show kv0").await?;
    let addrs = crate::ignition::inet_addresses(&parse_json("ip --json address show kv0", &out)?);
    if !addrs.iter().any(|a| a == "10.100.0.2") {
        bail!("kv0 has addresses {addrs:?}, not 10.100.0.2");
    }
    Ok(())
}

const NFT_RULES: &str = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t\ttcp dport 80 counter packets 0 bytes 0 drop\n\t}\n}\n";
const IPT_RULES: &str = "*filter\n:INPUT ACCEPT [2931:170804]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 80 -j DROP\nCOMMIT\n";

fn nftables_flatcar() -> Config {
    Config::new()
        .file("/var/lib/nftables/rules-save", NFT_RULES, 0o644)
        .enable_unit("nftables-load.service", true)
}

/// Images without Flatcar's nftables-load.service get the same unit from the config.
fn nftables_other() -> Config {
    Config::new()
        .file("/var/lib/nftables/rules-save", NFT_RULES, 0o644)
        .unit(
            "nftables-load.service",
            "[Unit]\nDescription=Load nftables rules\nDefaultDependencies=no\nBefore=network-pre.target\nWants=network-pre.target\nConditionFileNotEmpty=/var/lib/nftables/rules-save\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/nft -f /var/lib/nftables/rules-save\n\n[Install]\nWantedBy=multi-user.target\n",
            true,
        )
}

fn iptables_flatcar() -> Config {
    Config::new()
        .file("/var/lib/iptables/rules-save", IPT_RULES, 0o644)
        .enable_unit("iptables-restore.service", true)
}

/// Images without Flatcar's iptables-restore.service get the same unit from the config.
fn iptables_other() -> Config {
    Config::new()
        .file("/var/lib/iptables/rules-save", IPT_RULES, 0o644)
        .unit(
            "iptables-restore.service",
            "[Unit]\nDescription=Restore iptables firewall rules\nDefaultDependencies=no\nBefore=network-pre.target\nWants=network-pre.target\nConditionFileNotEmpty=/var/lib/iptables/rules-save\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/iptables-restore /var/lib/iptables/rules-save\n\n[Install]\nWantedBy=multi-user.target\n",
            true,
        )
}

/// Whether an `nft --json list ruleset` document has a rule matching port 80.
pub fn drops_port_80(v: &Value) -> bool {
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .any(|exprs| {
            exprs
                .iter()
                .any(|e| e["match"]["right"] == 80 || e["match"]["right"] == "80")
        })
}

async fn firewall(m: &bogie_harness::TestMachine) -> Result<()> {
    let out = m.must_ssh("sudo nft --json list ruleset").await?;
    if !drops_port_80(&parse_json("nft --json list ruleset", &out)?) {
        bail!("no rule on port 80 in the ruleset: {out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_matched_like_kola() {
        let ss = r#"udp UNCONN 0 0 10.0.2.15%eth0:68 0.0.0.0:* users:(("systemd-network",pid=275,fd=19))
tcp LISTEN 0 4096 127.0.0.1:37613 0.0.0.0:* users:(("containerd",pid=299,fd=9))
tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=303,fd=3))
tcp LISTEN 0 128 [::]:22 [::]:* users:(("sshd",pid=303,fd=4))
tcp LISTEN 0 64 0.0.0.0:2049 0.0.0.0:*
tcp LISTEN 0 4096 0.0.0.0:111 0.0.0.0:* users:(("rpcbind",pid=1,fd=4))"#;
        let bad = unexpected_listeners(ss);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("rpcbind"));
    }

    #[test]
    fn port_80_rules_are_found() {
        let v: Value = serde_json::from_str(r#"{"nftables":[{"rule":{"expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":80}},{"drop":null}]}}]}"#).unwrap();
        assert!(drops_port_80(&v));
        assert!(!drops_port_80(&serde_json::json!({"nftables": []})));
    }
}
