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

/// The etcd discovery URL kola's cloud-config check writes.
const DISCOVERY: &str = "https://discovery.etcd.io/827c73219eeb2fa5530027c37bf18877";
/// Two throwaway keys kola's cloud-config check installs.
const KEY_ONE: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC5LaGMGRqZEEvOhHlIEiQgdMJIQ9Qe8L/XSz06GqzcESbEnYLIXar2nou4eW4AGMVC1V0BrcWWnSTxM1/dWeCLOUt5NulKAjtdBUZGhCT83nbimSzbmx3/q2y5bCiS4Zr8ZjYFbi1eLvye2jKPE4xo7cvIfDKc0ztQ9kU7JknUdKNZo3RKXr5EPhJ5UZ8Ff15CI9+hDSvdPwer+HNnEt/psRVC+s29EwNGwUXD4IYqrk3X4ew0YAl/oULHM4cctoBW9GM+kAl40rOuIARlKfe4UdCgDMHYA/whi7Us+cPNgPit9IVJVBU4eo/cF5molD2l+PMSntypuv79obu8sA1H cloudinit-test-key-one";
const KEY_TWO: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCZw5Ljtt9wlEfyDvmUwu/BeMcIhVarbcM4ajZolxRy9G8vvCa7ODcSjzSyhfG1mLSBB2KfaFFI6zGHBjFX0Gzy9i8m3u7PnZBPX30bb1n0hJCrUhpqUGQUe8OFdoBstf1HIwJU/KoTBL0Ap1WEn0quRT4kNgBLbPrMjYCPbS1q4wJKdIE5rRm/EfTUrmIb0i91gujEGw5oUHDXf0X+/cxwwIVZh1z16YhOgvJBzXhsJ9a0w7kcy/6wPRv03yyMg/r2Ada6ci68LulKz5GLn+xInT0bvIcra/PZ7WE+jyZhZKly239VZyT/1dHkBbTw+kgnGobLMbjOOg5bKaT8NZJ3 cloudinit-test-key-two";

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("cl.basic", basic)
            .description("SSH port, D-Bus permissions, services active, machine-id, boot id, useradd, and Flatcar's read-only /usr, symlinks, update keys, cloudinit and microcode")
            .non_exclusive(),
        Test::new("cl.internet", internet)
            .description("update_engine_client answers, containers pulled from ghcr.io run and ping the internet, ntpdate syncs")
            .tags(&["needs-internet"])
            .config(crate::docker::docker_config()),
    ]
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
                units.extend(["docker.socket", "update-engine.service"]);
            }
            let mut script = String::new();
            for u in &units {
                script.push_str(&format!("systemctl is-active --quiet {u} || echo \"inactive: {u}\"; "));
            }
            // kola: one of the NTP clients must run. Images without any of them installed
            // (the test image) say so instead.
            script.push_str("ntp=; inst=; for u in systemd-timesyncd.service chronyd.service ntpd.service; do \
                systemctl cat $u >/dev/null 2>&1 && inst=1; systemctl is-active --quiet $u && ntp=$u; done; \
                [ -n \"$ntp\" ] || { [ -n \"$inst\" ] && echo 'no NTP service active' || echo 'NOTE: no NTP service installed'; }");
            let out = m.ssh(&script).await?.stdout_str();
            let bad: Vec<&str> = out
                .lines()
                .filter(|l| !l.starts_with("NOTE:") || c.has("flatcar"))
                .collect();
            if !bad.is_empty() {
                bail!("{}", bad.join("; "));
            }
            if out.contains("NOTE:") {
                c.log("ServicesActive: the image has no NTP client installed");
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
            // coreos-cloudinit applies a cloud-config: an etcd discovery drop-in and two
            // SSH keys for core (removed again afterwards).
            let cfg = format!(
                "#cloud-config\ncoreos:\n    etcd:\n        discovery: {DISCOVERY}\nssh_authorized_keys:\n    - {KEY_ONE}\n    - {KEY_TWO}\n"
            );
            let out = m
                .ssh_with_stdin(
                    "set -e; ws=$(mktemp -d); f=$(mktemp); cat >$f; \
                     sudo /usr/bin/coreos-cloudinit --workspace $ws --from-file $f --ssh-key-name coretest >/dev/null; \
                     echo '== dropin'; cat /run/systemd/system/etcd.service.d/20-cloudinit.conf; \
                     echo '== keys'; cat /home/core/.ssh/authorized_keys; \
                     sudo update-ssh-keys -d coretest >/dev/null 2>&1 || true; sudo rm -rf $ws $f",
                    Some(cfg.as_bytes()),
                )
                .await?;
            let text = out.stdout_str();
            if !out.success() {
                bail!("coreos-cloudinit failed: {text}{}", out.stderr_str());
            }
            let (dropin, keys) = text.split_once("== keys").unwrap_or((&text, ""));
            if !dropin.contains(&format!("Environment=\"ETCD_DISCOVERY={DISCOVERY}\"")) {
                bail!("incorrect data in etcd.service.d/20-cloudinit.conf: {dropin}");
            }
            for (n, k) in [("first", KEY_ONE), ("second", KEY_TWO)] {
                if !keys.contains(k) {
                    bail!("the {n} key is not in core's authorized_keys");
                }
            }
            Ok(())
        }
    })
    .await;
    c.run_if("cloudinit", "Script", |_| {
        let m = m.clone();
        async move {
            // coreos-cloudinit runs a user-data script as a transient unit that stays active.
            let out = m
                .ssh("set -e; ws=$(mktemp -d); f=$(mktemp); printf '#!/bin/bash\\n/bin/sleep 10\\n' >$f; \
                      sudo /usr/bin/coreos-cloudinit --workspace $ws --from-file $f >/dev/null; \
                      u=$(cat $ws/scripts/unit-name); systemctl status --no-pager $u; sudo systemctl stop $u; sudo rm -rf $ws $f")
                .await?;
            if !out.stdout_str().contains("Active: active") {
                bail!("the user-data unit is not active: {}{}", out.stdout_str(), out.stderr_str());
            }
            Ok(())
        }
    })
    .await;
    c.run_if("flatcar", "Microcode", |_| {
        let m = m.clone();
        async move {
            if m.must_ssh("uname -m").await? == "aarch64" {
                return Ok(());
            }
            assert_output_contains(
                &m,
                "zgrep -m1 EXTRA_FIRMWARE= /proc/config.gz | grep amd-ucode | grep intel-ucode",
                "ucode",
            )
            .await?;
            Ok(())
        }
    })
    .await;
    Ok(())
}

async fn internet(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    c.run_if("update-engine", "UpdateEngine", |_| {
        let m = m.clone();
        async move {
            m.must_ssh("timeout 20 update_engine_client -status")
                .await?;
            Ok(())
        }
    })
    .await;
    for (name, cmd) in [
        ("DockerPing", "ping -c4 flatcar.org"),
        ("DockerEcho", "echo"),
    ] {
        let m = m.clone();
        c.run_if("docker", name, |_| async move {
            m.must_ssh(&format!(
                "timeout 60 sudo docker run --rm ghcr.io/flatcar/busybox {cmd}"
            ))
            .await?;
            Ok(())
        })
        .await;
    }
    c.run("NTPDate", |c| {
        let m = m.clone();
        async move {
            crate::util::need_tool(&c, &m, "ntpdate").await?;
            m.must_ssh("timeout 20 sudo ntpdate -d -s -u pool.ntp.org")
                .await?;
            Ok(())
        }
    })
    .await;
    Ok(())
}
