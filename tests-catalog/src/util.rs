//! Helpers shared by the catalog's tests.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bogie_harness::{Config, TestCluster, TestMachine};

/// Asserts that `command`'s stdout contains `needle`.
pub async fn assert_output_contains(
    m: &TestMachine,
    command: &str,
    needle: &str,
) -> Result<String> {
    let out = m.must_ssh(command).await?;
    if !out.contains(needle) {
        bail!("{command:?} printed {out:?}, which does not contain {needle:?}");
    }
    Ok(out)
}

/// Asserts that `command` prints exactly `expected` (trimmed).
pub async fn assert_output_eq(m: &TestMachine, command: &str, expected: &str) -> Result<()> {
    let out = m.must_ssh(command).await?;
    if out.trim() != expected {
        bail!("{command:?} printed {out:?}, expected {expected:?}");
    }
    Ok(())
}

/// Asserts that a unit is active (waits up to `secs` seconds for it to become so).
pub async fn assert_unit_active(m: &TestMachine, unit: &str, secs: u32) -> Result<()> {
    let cmd = format!(
        "for i in $(seq 1 {secs}); do systemctl is-active --quiet {unit} && exit 0; sleep 1; done; systemctl status --no-pager {unit}; exit 1"
    );
    let out = m.ssh(&cmd).await?;
    if !out.success() {
        bail!("{unit} is not active after {secs}s:\n{}", out.stdout_str());
    }
    Ok(())
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.trim().split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Runs `f` up to `attempts` times, sleeping `delay` between failures; returns the first
/// success or the last error.
pub async fn retry<T, F, Fut>(attempts: u32, delay: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut last = anyhow!("retry: no attempt made");
    for i in 0..attempts.max(1) {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
        if i + 1 < attempts {
            tokio::time::sleep(delay).await;
        }
    }
    Err(last)
}

/// A config written out as JSON in the catalog (any spec version Ignition knows by
/// `ignition.version`). Panics on malformed JSON: catalog configs are constants, and the
/// unit tests render every one of them.
pub fn raw_config(json: &str) -> Config {
    Config::from_json(json).unwrap_or_else(|e| panic!("catalog config is malformed: {e}\n{json}"))
}

/// A spec-1 config (`"ignitionVersion": 1`, Flatcar's Ignition only). The harness's
/// [`Config`] needs `ignition.version`, which spec 1 does not have, so this fails with a
/// clear message until the harness learns spec 1.
pub fn v1_config(json: &str) -> Result<Config> {
    Config::from_json(json).map_err(|e| {
        anyhow!("the harness cannot carry this spec-1 Ignition config (`ignitionVersion: 1`): {e}")
    })
}

/// Whether the machine runs under QEMU's software emulation (TCG), where every container
/// start costs seconds; loops that kola runs 100 times are shortened there.
pub async fn is_emulated(m: &TestMachine) -> bool {
    matches!(m.ssh("systemd-detect-virt").await, Ok(o) if o.stdout_str() == "qemu")
}

/// Skips (at run time) when `tool` is not on the machine's PATH, unless the image is
/// Flatcar, where its absence is a failure.
pub async fn need_tool(c: &TestCluster, m: &TestMachine, tool: &str) -> Result<()> {
    let out = m
        .ssh(&format!("PATH=$PATH:/usr/sbin:/sbin command -v {tool}"))
        .await?;
    if out.success() {
        return Ok(());
    }
    if c.has("flatcar") {
        bail!("{tool} is not installed on this Flatcar image");
    }
    bogie_harness::skip(format!("the image has no {tool}"))
}

/// The machine's address on the cluster's private network, or an error naming the machine.
pub fn private_ip(m: &TestMachine) -> Result<String> {
    m.private_ip()
        .map(|ip| ip.to_string())
        .ok_or_else(|| anyhow!("machine {} has no private-network address", m.id()))
}

/// A shell snippet that prints the machine's own private address: the first global IPv4
/// address on an interface without the default route (the cluster's second NIC under
/// bogie's QEMU), else the default-route address (single-NIC clouds).
pub const PRIVATE_IPV4_SH: &str = r#"def=$(ip -4 route show default | awk '{for(i=1;i<NF;i++) if($i=="dev") print $(i+1); exit}'); ip=$(ip -4 -o addr show scope global | awk -v d="$def" '$2!=d {sub("/.*","",$4); print $4; exit}'); [ -n "$ip" ] || ip=$(ip -4 -o addr show dev "$def" scope global | awk '{sub("/.*","",$4); print $4; exit}'); echo "$ip""#;

/// Parses JSON printed by a command, naming the command on error.
pub fn parse_json(command: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .with_context(|| format!("{command:?} did not print JSON: {:.300}", text))
}

/// Boots one machine from `flatcar` on Flatcar images and from `other` elsewhere: for tests
/// whose kola config names Flatcar-only units (`nftables-load.service`, `etcd-member`), the
/// other config sets up the same thing with the units the image has.
pub async fn boot_for_image(
    c: &TestCluster,
    flatcar: Config,
    other: Config,
) -> Result<TestMachine> {
    let cfg = if c.has("flatcar") { flatcar } else { other };
    c.new_machine(Some(cfg)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid("0f5e7c0e-1d8a-4c55-9d2c-2f0b4f1d3e11\n"));
        assert!(!is_uuid("00000000000000000000000000000001"));
        assert!(!is_uuid("zz5e7c0e-1d8a-4c55-9d2c-2f0b4f1d3e11"));
    }

    #[tokio::test]
    async fn retry_returns_the_first_success() {
        let mut n = 0;
        let v = retry(5, Duration::from_millis(1), || {
            n += 1;
            let k = n;
            async move {
                if k < 3 {
                    bail!("not yet")
                } else {
                    Ok(k)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = retry(2, Duration::from_millis(1), || async {
            bail!("never") as Result<()>
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "never");
    }

    #[test]
    fn spec_1_configs_are_carried_and_bad_json_reported() {
        let c = v1_config(r#"{"ignitionVersion": 1}"#).unwrap();
        assert!(c.render().contains("ignitionVersion"), "{}", c.render());
        assert!(v1_config("{not json").is_err());
        assert_eq!(
            raw_config(r#"{"ignition":{"version":"2.0.0"}}"#).version(),
            "2.0.0"
        );
    }
}
