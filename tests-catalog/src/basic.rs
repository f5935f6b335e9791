//! `cl.basic`: the checks kola's kolet runs natively on every image, as subtests. Checks
//! that only hold on Flatcar (read-only `/usr`, update-engine keys, Flatcar symlinks, ...)
//! are gated on the image's capabilities and reported as skipped with the reason.

use anyhow::{bail, Result};
use bogie_harness::{Test, TestCluster};

use crate::util::{assert_output_contains, is_uuid};

/// Hashes (sha256) of update_engine public keys kola accepts.
const UPDATE_ENGINE_KEYS: &[&str] = &[
    "d410d94dc56a1cba8df71c94ea6925811e44b09416f66958ab7a453f0731d80e",
    "a76a22e6afcdfbc55dd2953aa950c7ec93b254774fca02d13ec52c59672e5982",
    "b59a0fa528fec10d706e5d48030218199568769e385dcf473aa696763331a353",
    "b6a8227f835a4a56988241eaeeda57a19ef5ff413c8533fd791827be2c15dd6c",
];

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![Test::new("cl.basic", basic)
        .description("SSH port, D-Bus permissions, services active, machine-id, boot id, useradd, and Flatcar's read-only /usr, symlinks and update keys")
        .non_exclusive()]
}

async fn basic(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    c.run("PortSSH", |_| {
        let m = m.clone();
        async move {
            m.must_ssh("timeout 3 bash -c '</dev/tcp/127.0.0.1/22'")
                .await?;
            Ok(())
        }
    })
    .await;
    c.run("DbusPerms", |_| {
        let m = m.clone();
        async move {
            // An unprivileged user must not restart units through systemd's D-Bus API...
            let out = m
                .ssh("busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager RestartUnit ss ntpd.service replace 2>&1")
                .await?;
            let text = out.stdout_str();
            if out.success() {
                bail!("a non-root user could call RestartUnit");
            }
            if !(text.contains("Access denied")
                || text.contains("AccessDenied")
                || text.contains("Interactive authentication required")
                || text.contains("InteractiveAuthorizationRequired"))
            {
                bail!("RestartUnit as non-root failed for an unexpected reason: {text}");
            }
            // ...but may read unit properties.
            m.must_ssh("busctl --system call org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/sshd_2eservice org.freedesktop.DBus.Properties GetAll s org.freedesktop.systemd1.Unit >/dev/null")
                .await?;
            Ok(())
        }
    })
    .await;
    c.run("ServicesActive", |c| {
        let m = m.clone();
        async move {
            let mut units = vec!["multi-user.target", "systemd-journald.service"];
            if c.has("flatcar") {
                units.extend([
                    "docker.socket",
                    "systemd-timesyncd.service",
                    "update-engine.service",
                ]);
            }
            for u in units {
                let out = m.ssh(&format!("systemctl is-active {u}")).await?;
                if !out.success() {
                    bail!("{u} is {}", out.stdout_str());
                }
            }
            Ok(())
        }
    })
    .await;
    c.run("MachineID", |_| {
        let m = m.clone();
        async move {
            let id = m.must_ssh("cat /etc/machine-id").await?;
            if id.is_empty() || id == "uninitialized" {
                bail!("machine-id is empty");
            }
            if id == "COREOS_BLANK_MACHINE_ID" {
                bail!("machine-id is {id}");
            }
            if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                bail!("machine-id {id:?} is not 32 hex digits");
            }
            Ok(())
        }
    })
    .await;
    c.run("RandomBootID", |_| {
        let m = m.clone();
        async move {
            let a = m.must_ssh("cat /proc/sys/kernel/random/boot_id").await?;
            let b = m.must_ssh("cat /proc/sys/kernel/random/uuid").await?;
            if !is_uuid(&a) || !is_uuid(&b) || a == b {
                bail!("boot id {a:?} / random uuid {b:?} are not distinct UUIDs");
            }
            Ok(())
        }
    })
    .await;
    c.run("Useradd", |_| {
        let m = m.clone();
        async move {
            m.must_ssh("sudo useradd -p '*' -U -m user1 -G sudo")
                .await?;
            assert_output_contains(&m, "id user1", "uid=").await?;
            m.must_ssh("sudo userdel -r user1 2>/dev/null").await?;
            Ok(())
        }
    })
    .await;
    c.run_if("flatcar", "ReadOnly", |_| {
        let m = m.clone();
        async move {
            let opts = m
                .must_ssh("findmnt -no OPTIONS /usr || findmnt -no OPTIONS /")
                .await?;
            if !opts.split(',').any(|o| o == "ro") {
                bail!("/usr is not mounted read-only ({opts})");
            }
            Ok(())
        }
    })
    .await;
    c.run_if("flatcar", "Symlink", |_| {
        let m = m.clone();
        async move {
            let target = m.must_ssh("readlink -f /etc/resolv.conf").await?;
            if target != "/run/systemd/resolve/resolv.conf" {
                bail!("/etc/resolv.conf points at the wrong file: {target}");
            }
            Ok(())
        }
    })
    .await;
    c.run_if("flatcar", "SymlinkFlatcar", |_| {
        let m = m.clone();
        async move {
            for (old, new) in [
                ("/etc/coreos", "flatcar"),
                ("/usr/bin/coreos-install", "flatcar-install"),
                ("/usr/lib/coreos", "flatcar"),
                ("/usr/share/coreos", "flatcar"),
            ] {
                let t = m.must_ssh(&format!("readlink {old}")).await?;
                if t.trim_start_matches("./") != new {
                    bail!("{old} points at {t}, not {new}");
                }
            }
            Ok(())
        }
    })
    .await;
    c.run_if("update-engine", "UpdateEngineKeys", |_| {
        let m = m.clone();
        async move {
            let h = m
                .must_ssh(
                    "sha256sum /usr/share/update_engine/update-payload-key.pub.pem | cut -d' ' -f1",
                )
                .await?;
            if !UPDATE_ENGINE_KEYS.contains(&h.as_str()) {
                bail!("update-payload-key.pub.pem has an unexpected hash {h}");
            }
            Ok(())
        }
    })
    .await;
    c.run_if("flatcar-partitions", "RandomUUID", |_| {
        let m = m.clone();
        async move {
            let g = m
                .must_ssh("sudo blkid -o value -s PTUUID /dev/$(lsblk -no PKNAME $(findmnt -vno SOURCE /))")
                .await?;
            if g.trim() == "00000000-0000-0000-0000-000000000001" {
                bail!("the disk still has the image's default GUID");
            }
            Ok(())
        }
    })
    .await;
    c.run_if("cloudinit", "CloudConfig", |_| {
        let m = m.clone();
        async move {
            m.must_ssh("command -v coreos-cloudinit").await?;
            Ok(())
        }
    })
    .await;
    Ok(())
}
