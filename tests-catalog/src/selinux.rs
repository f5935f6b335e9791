//! `coreos.selinux.*`: switching the SELinux mode and flipping a boolean, each followed by
//! a reboot that must restore the configured state.

use anyhow::{anyhow, bail, Result};
use bogie_harness::{Test, TestCluster, TestMachine, Version};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("coreos.selinux.enforce", enforce)
            .description("setenforce switches between Enforcing and Permissive, and SELINUX=enforcing holds after a reboot")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .requires(&["selinux-enforcing"]),
        Test::new("coreos.selinux.boolean", boolean)
            .description("setsebool (without -P) flips a boolean, and the reboot restores its original value")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .requires(&["selinux"]),
    ]
}

/// Runs the commands, checking the output of those with a pattern, then reboots.
async fn commands_then_reboot(m: &TestMachine, cmds: &[(&str, Option<&str>)]) -> Result<()> {
    for (cmd, want) in cmds {
        let out = m.must_ssh(cmd).await?;
        if let Some(w) = want {
            if !out.contains(w) {
                bail!("{cmd:?} printed {out:?}, expected {w:?}");
            }
        }
    }
    m.reboot().await
}

async fn enforce(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    commands_then_reboot(
        &m,
        &[
            ("PATH=$PATH:/usr/sbin:/sbin getenforce", Some("Enforcing")),
            ("sudo setenforce 0", None),
            ("PATH=$PATH:/usr/sbin:/sbin getenforce", Some("Permissive")),
            ("sudo setenforce 1", None),
            ("PATH=$PATH:/usr/sbin:/sbin getenforce", Some("Enforcing")),
            (
                "systemctl --no-pager is-active system.slice",
                Some("active"),
            ),
            ("sudo cp /etc/selinux/config /etc/selinux/config.old", None),
            (
                "sudo sed -i 's/SELINUX=permissive/SELINUX=enforcing/' /etc/selinux/config",
                None,
            ),
        ],
    )
    .await?;
    let out = m.must_ssh("PATH=$PATH:/usr/sbin:/sbin getenforce").await?;
    if out != "Enforcing" {
        bail!("getenforce after the reboot printed {out:?}, expected Enforcing");
    }
    Ok(())
}

/// The boolean kola flips (`virt_use_nfs` before 3733).
fn boolean_name(c: &TestCluster) -> &'static str {
    match c.env().version {
        Some(v) if v < Version::new(3733, 0, 0) => "virt_use_nfs",
        _ => "container_use_nfs",
    }
}

fn parse_bool(name: &str, out: &str) -> Result<&'static str> {
    let v = out
        .trim()
        .strip_prefix(&format!("{name} --> "))
        .ok_or_else(|| anyhow!("getsebool printed {out:?}"))?;
    match v {
        "on" => Ok("on"),
        "off" => Ok("off"),
        other => bail!("boolean value {other:?} is neither on nor off"),
    }
}

async fn boolean(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let name = boolean_name(&c);
    let orig = parse_bool(
        name,
        &m.must_ssh(&format!("PATH=$PATH:/usr/sbin:/sbin getsebool {name}"))
            .await?,
    )?;
    let new = if orig == "on" { "off" } else { "on" };
    commands_then_reboot(
        &m,
        &[
            (&format!("sudo setsebool {name} {new}"), None),
            (
                &format!("PATH=$PATH:/usr/sbin:/sbin getsebool {name}"),
                Some(new),
            ),
        ],
    )
    .await?;
    let after = parse_bool(
        name,
        &m.must_ssh(&format!("PATH=$PATH:/usr/sbin:/sbin getsebool {name}"))
            .await?,
    )?;
    if after != orig {
        bail!("{name} is {after} after the reboot, expected the original {orig}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getsebool_output() {
        assert_eq!(parse_bool("x", "x --> on\n").unwrap(), "on");
        assert!(parse_bool("x", "y --> on").is_err());
    }
}
