//! `cl.etcd-member.*`: etcd configured through Ignition, bootstrapped by discovery, backed
//! up and restored (v2 and v3 APIs).
//!
//! Flatcar runs etcd as `etcd-member.service`, Debian as `etcd.service`. The configs add the
//! same drop-in to both names (a drop-in for a unit that does not exist is ignored); its
//! `ExecStartPre` writes the settings kola's Container Linux Config gives (private address
//! in the URLs, discovery URL), so one config fits both images. The bodies start the unit
//! after they have set up discovery: kola used the public discovery.etcd.io, bogie runs a
//! discovery etcd on the first machine (an etcd v2 keys endpoint is the discovery protocol)
//! and falls back to discovery.etcd.io only where the image has no etcd binary.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::{Config, Test, TestCluster, TestMachine};

use crate::util::{parse_json, private_ip, retry, PRIVATE_IPV4_SH};

/// Where the bodies put the discovery URL for the drop-in to pick up.
const DISCOVERY_FILE: &str = "/etc/bogie-etcd/discovery";

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("cl.etcd-member.discovery", discovery)
            .description("three etcd members bootstrap through discovery over the private network and report healthy")
            .cluster_size(3)
            .requires(&["etcd", "etcdctl", "private-network"])
            .timeout(Duration::from_secs(30 * 60))
            .config(etcd_config(&[
                ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
                ("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379"),
                ("ETCD_LISTEN_PEER_URLS", "http://$IP:2380"),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://$IP:2380"),
            ])),
        Test::new("cl.etcd-member.v2-backup-restore", v2_backup_restore)
            .description("a key written with the v2 API survives etcdctl backup, removal and a forced new cluster from the backup")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .requires(&["etcd", "etcdctl"])
            .timeout(Duration::from_secs(20 * 60))
            .config(etcd_config(&[
                ("ETCD_IMAGE_TAG", "v3.5.0"),
                ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:4001,http://0.0.0.0:2379"),
                ("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379"),
                ("ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380"),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://$IP:2380"),
                ("ETCD_ENABLE_V2", "true"),
            ])),
        Test::new("cl.etcd-member.etcdctlv3", etcdctl_v3)
            .description("etcdctl v3 lists the single member, puts and gets a key, saves and checks a snapshot")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .requires(&["etcd", "etcdctl"])
            .timeout(Duration::from_secs(20 * 60))
            .config(etcd_config(&[
                ("ETCD_NAME", "kola-etcd-member-bogie"),
                ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
                ("ETCD_ADVERTISE_CLIENT_URLS", "http://127.0.0.1:2379"),
                ("ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380"),
                ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:2380"),
                ("ETCD_INITIAL_CLUSTER", "kola-etcd-member-bogie=http://127.0.0.1:2380"),
            ])),
    ]
}

/// A config whose drop-in (for `etcd-member.service` and `etcd.service`) sets `vars`;
/// `$IP` in a value is the machine's private address, found when the unit starts.
pub fn etcd_config(vars: &[(&str, &str)]) -> Config {
    let mut lines = vec![
        "ETCD_DATA_DIR=/var/lib/etcd".to_string(),
        "ETCD_NAME=etcd-$(cut -c1-12 /etc/machine-id)".to_string(),
    ];
    lines.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    let mut script = format!("set -e; IP=$({PRIVATE_IPV4_SH}); mkdir -p /run/bogie-etcd; {{ ");
    for l in &lines {
        script.push_str(&format!("echo \"{l}\"; "));
    }
    script.push_str(&format!(
        "[ -s {DISCOVERY_FILE} ] && echo \"ETCD_DISCOVERY=$(cat {DISCOVERY_FILE})\"; true; }} >/run/bogie-etcd/env"
    ));
    // Written to a file so no systemd unit-file quoting is involved.
    let dropin = "[Service]\nExecStartPre=+/bin/sh /etc/bogie-etcd/env.sh\nEnvironmentFile=-/run/bogie-etcd/env\n";
    let mut c = Config::new().file("/etc/bogie-etcd/env.sh", &format!("{script}\n"), 0o755);
    for unit in ["etcd-member.service", "etcd.service"] {
        c = c.dropin(unit, "20-bogie-etcd.conf", dropin);
    }
    c
}

/// The etcd unit of this image.
pub(crate) async fn etcd_unit(m: &TestMachine) -> Result<String> {
    m.must_ssh("systemctl cat etcd-member.service >/dev/null 2>&1 && echo etcd-member.service || echo etcd.service")
        .await
}

/// Starts etcd without waiting (members of a new cluster wait for each other).
pub(crate) async fn start_etcd(m: &TestMachine) -> Result<()> {
    let unit = etcd_unit(m).await?;
    m.must_ssh(&format!(
        "sudo chown -R etcd:etcd /var/lib/etcd 2>/dev/null; sudo systemctl start --no-block {unit}"
    ))
    .await?;
    Ok(())
}

/// Runs a discovery service for `size` members; returns its URL.
pub(crate) async fn discovery_url(c: &TestCluster, m: &TestMachine, size: usize) -> Result<String> {
    let has_etcd = m.ssh("test -x /usr/bin/etcd").await?.success();
    if !has_etcd {
        if !c.env().internet {
            return bogie_harness::skip(
                "no etcd binary on the image to run discovery, and no internet for discovery.etcd.io",
            );
        }
        let url = m
            .must_ssh(&format!(
                "curl -sSf 'https://discovery.etcd.io/new?size={size}'"
            ))
            .await?;
        return Ok(url);
    }
    let ip = private_ip(m).or_else(|_| Ok::<_, anyhow::Error>("127.0.0.1".into()))?;
    let token: String = format!("{:032x}", rand_token());
    let script = format!(
        "set -e
sudo systemd-run --quiet --unit bogie-etcd-discovery /usr/bin/etcd --name discovery --data-dir /var/lib/bogie-etcd-discovery \
  --listen-client-urls http://0.0.0.0:12379 --advertise-client-urls http://{ip}:12379 \
  --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
  --initial-cluster discovery=http://127.0.0.1:12380 --enable-v2=true
for i in $(seq 1 120); do curl -sf http://127.0.0.1:12379/version >/dev/null && break; sleep 1; done
curl -sSf -X PUT http://127.0.0.1:12379/v2/keys/_etcd/registry/{token}/_config/size -d value={size} >/dev/null
echo http://{ip}:12379/v2/keys/_etcd/registry/{token}"
    );
    m.must_ssh(&script)
        .await
        .context("starting the discovery etcd")
}

fn rand_token() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish() as u128;
    let mut h2 = s.build_hasher();
    h2.write_u64(a as u64 ^ 0x9e37_79b9_7f4a_7c15);
    (a << 64) | h2.finish() as u128
}

pub(crate) async fn set_discovery(m: &TestMachine, url: &str) -> Result<()> {
    m.write_file(DISCOVERY_FILE, format!("{url}\n").as_bytes(), 0o644)
        .await
}

/// kola's health check: `etcdctl endpoint --cluster health` names every member healthy.
pub(crate) async fn cluster_health(m: &TestMachine, size: usize) -> Result<()> {
    retry(30, Duration::from_secs(10), || async {
        let out = m
            .ssh("ETCDCTL_API=3 etcdctl endpoint --cluster health 2>&1")
            .await?;
        let text = out.stdout_str();
        let n = text.matches("is healthy").count();
        if !out.success() || n != size {
            bail!("{n} of {size} members healthy: {text}");
        }
        Ok(())
    })
    .await
    .context("etcd cluster health")
}

async fn discovery(c: TestCluster) -> Result<()> {
    let ms = c.machines();
    let url = discovery_url(&c, &ms[0], ms.len()).await?;
    c.log(format!("discovery: {url}"));
    for m in &ms {
        set_discovery(m, &url).await?;
    }
    for m in &ms {
        start_etcd(m).await?;
    }
    cluster_health(&ms[0], ms.len()).await
}

const V2_BACKUP_RESTORE: &str = r#"set -e
export ETCDCTL_API=2
U=UNIT
prefix=$RANDOM
etcdctl set /$prefix/test magic
res="$(etcdctl get /$prefix/test)"
if [ "$res" != "magic" ]; then echo "Expected magic, got $res"; exit 1; fi
backup_to="$(mktemp -d)"
sudo --preserve-env=ETCDCTL_API etcdctl backup --data-dir=/var/lib/etcd --backup-dir "${backup_to}"
etcdctl rm /$prefix/test
if etcdctl get /$prefix/test 2>&1; then echo "Expected rm'd key to error on get, didn't"; exit 1; fi
sudo systemctl stop $U
# A new cluster of size 1, as etcd2 backup/restore works.
sudo rm -rf /var/lib/etcd
sudo mv "${backup_to}" /var/lib/etcd/
sudo chown -R etcd:etcd /var/lib/etcd
sudo mkdir -p /run/systemd/system/$U.service.d/
printf '[Service]\nEnvironment=ETCD_FORCE_NEW_CLUSTER=true\n' | sudo tee /run/systemd/system/$U.service.d/10-force-new.conf >/dev/null
sudo systemctl daemon-reload
sudo systemctl start $U
for i in $(seq 1 60); do res="$(etcdctl get /$prefix/test 2>/dev/null)" && break; sleep 1; done
if [ "$res" != "magic" ]; then echo "Expected magic after backup-restore, got $res"; exit 1; fi"#;

async fn v2_backup_restore(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let url = discovery_url(&c, &m, 1).await?;
    set_discovery(&m, &url).await?;
    start_etcd(&m).await?;
    cluster_health(&m, 1).await?;
    let unit = etcd_unit(&m).await?;
    m.must_ssh(&V2_BACKUP_RESTORE.replace("UNIT", unit.trim_end_matches(".service")))
        .await?;
    Ok(())
}

async fn etcdctl_v3(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    start_etcd(&m).await?;
    cluster_health(&m, 1).await?;
    let out = m
        .must_ssh("ETCDCTL_API=3 etcdctl member list --write-out=json")
        .await?;
    let v = parse_json("etcdctl member list", &out)?;
    let n = v["members"].as_array().map(Vec::len).unwrap_or(0);
    if n != c.machines().len() {
        bail!("expected {} members, got {n}: {out}", c.machines().len());
    }
    m.must_ssh(
        r#"set -e
export ETCDCTL_API=3
if [ "$(etcdctl put foo bar)" != "OK" ]; then echo "Put failed"; exit 1; fi
value="$(etcdctl get foo --print-value-only)"
if [ "$value" != "bar" ]; then echo "Reading our put failed: expected bar, got $value"; exit 1; fi
backup_to="$(mktemp -d)"
sudo -E etcdctl snapshot save "${backup_to}/snapshot.db"
sudo -E etcdctl snapshot status "${backup_to}/snapshot.db""#,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropin_covers_both_unit_names() {
        let c = etcd_config(&[("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379")]);
        let v = c.as_value();
        let names: Vec<&str> = v["systemd"]["units"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["etcd-member.service", "etcd.service"]);
        assert_ne!(rand_token(), rand_token());
    }
}
