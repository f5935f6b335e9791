//! Small system tests: `coreos.auth.verify`, `cl.users.shells`, `coreos.tls.fetch-urls`,
//! `cl.filesystem`, `packages`, `misc.fips`, `cl.overlay.cleanup`,
//! `cl.osreset.ignition-rerun`, `cl.verity`, `cl.cgroupv1`, `cl.toolbox.dnf-install`,
//! `cl.install.cloudinit`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::ssh::SshSession;
use bogie_harness::{Config, Test, TestCluster, TestFlags, TestMachine, Version};
use serde_json::json;

use crate::util::{assert_output_contains, need_tool, private_ip};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("coreos.auth.verify", auth_verify)
            .description("a wrong password does not log in over SSH")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .non_exclusive(),
        Test::new("cl.users.shells", users_shells)
            .description("only root and core have login shells; every other account's shell is nologin/false")
            .platforms(&["qemu", "qemu-unpriv", "azure", "!gce"])
            .non_exclusive(),
        Test::new("coreos.tls.fetch-urls", tls_fetch_urls)
            .description("curl and wget fetch well-known HTTPS sites with the system's CA bundle")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "!rhcos", "!fcos"])
            .tags(&["needs-internet"])
            .requires(&["curl"])
            .non_exclusive(),
        Test::new("cl.filesystem", filesystem)
            .description("no dead links, no unknown SUID/SGID files, no world-writable files or dirs, no sticky dirs, nothing blacklisted")
            .platforms(&["qemu", "qemu-unpriv"])
            .non_exclusive(),
        Test::new("packages", packages)
            .description("ipvsadm manages virtual services; open-iscsi logs in to a target on the second machine and the disk survives a reboot")
            .cluster_size(2)
            .platforms(&["qemu", "qemu-unpriv"])
            .config(crate::docker::docker_config()),
        Test::new("misc.fips", fips)
            .description("with fips=1 and the FIPS provider configured, sha512 works, md5 is refused and the kernel reports FIPS mode (Flatcar: kargs, its OpenSSL FIPS module)")
            .platforms(&["qemu", "qemu-unpriv"])
            .min_version(Version::new(3549, 0, 0))
            .requires(&["flatcar", "openssl"])
            .config(fips_config()),
        Test::new("cl.overlay.cleanup", overlay_cleanup)
            .description("the /etc overlay keeps no stray copies of /usr files, and deletions and edits survive a reboot (Flatcar: the /etc overlay, /usr/share/flatcar/etc)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .min_version(Version::new(3530, 0, 0))
            .requires(&["flatcar"]),
        Test::new("cl.osreset.ignition-rerun", osreset)
            .description("flatcar-reset keeps the listed paths and the machine id, drops the rest, and Ignition runs again (Flatcar: flatcar-reset)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .min_version(Version::new(3530, 0, 0))
            .requires(&["flatcar"])
            .config(osreset_config())
            .needs_first_boot(),
        Test::new("cl.verity", verity)
            .description("dm-verity: /usr verifies against its root hash (the kernel command line's verity.usrhash=, else the hash in Flatcar's kernel image), and corrupting USR panics the machine")
            // kola: "somehow hangs" on qemu-unpriv (its machine never ends after the panic);
            // bogie's console watch sees the panic and the machine's end.
            .platforms(&["qemu", "azure", "!qemu-unpriv"])
            .privileged_qemu(&[])
            .min_version(Version::new(2943, 0, 0))
            .requires(&["verity", "flatcar-partitions"])
            .flags(TestFlags {
                no_kernel_panic_check: true,
                no_verity_corruption_check: true,
                ..TestFlags::default()
            }),
        Test::new("cl.cgroupv1", cgroupv1)
            .description("/etc/flatcar-cgroupv1 boots with only cgroup v1 hierarchies, every controller mounted (Flatcar: /etc/flatcar-cgroupv1)")
            .platforms(&["qemu", "qemu-unpriv"])
            .min_version(Version::new(3033, 0, 0))
            .end_version(Version::new(4179, 0, 0))
            .requires(&["flatcar"])
            .config(crate::util::raw_config(
                r#"{"ignition":{"version":"2.0.0"},"storage":{"files":[{"filesystem":"root","path":"/etc/flatcar-cgroupv1","contents":{"source":"data:,"},"mode":420}]}}"#,
            )),
        Test::new("cl.toolbox.dnf-install", |c| async move {
            let m = c.machine()?;
            let out = m
                .must_ssh("toolbox sh -c 'dnf install -y tcpdump; tcpdump --version >/dev/null && echo PASS' 2>/dev/null")
                .await?;
            if !out.contains("PASS") {
                bail!("expected PASS from the toolbox, got {out}");
            }
            Ok(())
        })
        .description("toolbox starts a Fedora container where dnf installs and runs tcpdump")
        .platforms(&["qemu", "qemu-unpriv", "azure"])
        .tags(&["needs-internet"])
        .requires(&["toolbox"]),
        Test::new("cl.install.cloudinit", |c| async move {
            crate::util::assert_output_eq(&c.machine()?, "hostname", "cloud-config-worked").await
        })
        .description("a cloud-config in /var/lib/flatcar-install/user_data (what flatcar-install writes) sets the hostname (Flatcar: coreos-cloudinit)")
        .platforms(&["!azure"])
        .requires(&["flatcar", "cloudinit"])
        .config(crate::util::raw_config(
            r#"{"ignition":{"version":"2.0.0"},"storage":{"files":[{"filesystem":"root","path":"/var/lib/flatcar-install/user_data","contents":{"source":"data:,%23cloud-config%0Ahostname:%20%22cloud-config-worked%22"},"mode":420}]}}"#,
        )),
    ]
}

async fn auth_verify(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let addr = m.platform_machine().ssh_addr();
    for user in [m.user(), "root"] {
        if SshSession::password_accepted(addr, user, "asdf", Duration::from_secs(30)).await? {
            bail!("SSH accepted the wrong password \"asdf\" for {user}");
        }
    }
    Ok(())
}

/// Accounts that may have a real shell.
const LOGIN_USERS: &[&str] = &["root", "core", "sync", "shutdown", "halt"];

async fn users_shells(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let passwd = m.must_ssh("getent passwd").await?;
    let mut bad = Vec::new();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            bail!("malformed passwd line {line:?}");
        }
        let (user, shell) = (f[0], f[6]);
        if LOGIN_USERS.contains(&user) {
            continue;
        }
        let ok = shell.ends_with("/nologin") || shell.ends_with("/false") || shell == "/bin/sync";
        if !ok {
            bad.push(format!("{user} ({shell})"));
        }
    }
    if !bad.is_empty() {
        bail!("accounts with a login shell: {}", bad.join(", "));
    }
    Ok(())
}

const FETCH_URLS: &[&str] = &[
    "https://www.example.com/",
    "https://www.wikipedia.org/",
    "https://start.fedoraproject.org/",
];

async fn tls_fetch_urls(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    for url in FETCH_URLS {
        m.must_ssh(&format!("curl -s -S -m 30 --retry 2 {url} >/dev/null"))
            .await?;
    }
    c.run("wget", |c| {
        let m = m.clone();
        async move {
            need_tool(&c, &m, "wget").await?;
            for url in FETCH_URLS {
                m.must_ssh(&format!("wget -nv -T 30 -t 2 --delete-after {url}"))
                    .await?;
            }
            Ok(())
        }
    })
    .await;
    Ok(())
}

/// `find` over `/` with these paths pruned.
fn find_cmd(prune: &[&str], expr: &str) -> String {
    let p: Vec<String> = prune.iter().map(|x| format!("-path {x} -prune")).collect();
    format!(
        "sudo find / -ignore_readdir_race {} -o {expr} -print",
        p.join(" -o ")
    )
}

async fn find_nothing(m: &TestMachine, prune: &[&str], expr: &str, what: &str) -> Result<()> {
    let out = m.must_ssh(&find_cmd(prune, expr)).await?;
    if !out.is_empty() {
        bail!("{what} found:\n{out}");
    }
    Ok(())
}

const SUID_OK: &[&str] = &[
    "/usr/bin/chage",
    "/usr/bin/chfn",
    "/usr/bin/chsh",
    "/usr/bin/expiry",
    "/usr/bin/gpasswd",
    "/usr/bin/ksu",
    "/usr/bin/man",
    "/usr/bin/mandb",
    "/usr/bin/mount",
    "/usr/bin/mount.nfs",
    "/usr/bin/newgidmap",
    "/usr/bin/newgrp",
    "/usr/bin/newuidmap",
    "/usr/bin/passwd",
    "/usr/bin/pkexec",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/umount",
    "/usr/bin/unix_chkpwd",
    "/usr/lib/polkit-1/polkit-agent-helper-1",
    "/usr/lib64/polkit-1/polkit-agent-helper-1",
    "/usr/libexec/dbus-daemon-launch-helper",
    "/usr/sbin/mount.nfs",
    "/usr/sbin/unix_chkpwd",
];
const SGID_OK: &[&str] = &["/usr/bin/chage", "/usr/bin/expiry", "/usr/bin/unix_chkpwd"];

async fn sugid(m: &TestMachine, valid: &[&str], mode: &str) -> Result<()> {
    let prune = [
        "/proc",
        "/sys",
        "/var/lib/docker",
        "/var/lib/rkt",
        "/var/lib/flatcar-oem-gce",
    ];
    let out = m
        .must_ssh(&find_cmd(&prune, &format!("-type f -perm -{mode}")))
        .await?;
    let bad: Vec<&str> = out.lines().filter(|f| !valid.contains(f)).collect();
    if !bad.is_empty() {
        bail!("unknown SUID or SGID files found: {bad:?}");
    }
    Ok(())
}

async fn filesystem(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    c.run("deadlinks", |_| {
        let m = m.clone();
        async move {
            let prune = [
                "/dev",
                "/proc",
                "/run/systemd",
                "/run/udev/links",
                "/run/udev/watch",
                "/run/user/500/systemd/units",
                "/sys",
                "/var/lib/docker",
                "/var/lib/rkt",
                "/var/lib/flatcar-oem-gce",
                "/usr/share/flatcar/etc",
            ];
            find_nothing(&m, &prune, "-xtype l", "dead symbolic links").await
        }
    })
    .await;
    // The SUID/SGID allow-lists and the blacklist are Flatcar's package policy.
    c.run_if("flatcar", "suid", |_| {
        let m = m.clone();
        async move { sugid(&m, SUID_OK, "4000").await }
    })
    .await;
    c.run_if("flatcar", "sgid", |_| {
        let m = m.clone();
        async move { sugid(&m, SGID_OK, "2000").await }
    })
    .await;
    c.run("writablefiles", |_| {
        let m = m.clone();
        async move {
            let prune = ["/sys", "/proc", "/var/lib/rkt"];
            find_nothing(&m, &prune, "-type f -perm -0002", "world-writable files").await
        }
    })
    .await;
    c.run("writabledirs", |_| {
        let m = m.clone();
        async move {
            let prune = ["/sys", "/proc", "/var/lib/rkt"];
            let what = "world-writable directories without the sticky bit";
            find_nothing(&m, &prune, "-type d -perm -0002 -a ! -perm -1000", what).await
        }
    })
    .await;
    c.run("stickydirs", |_| {
        let m = m.clone();
        async move {
            let prune = [
                "/proc",
                "/sys",
                "/var/lib/docker",
                "/var/lib/rkt",
                "/var/lib/flatcar-oem-gce",
                "/dev/mqueue",
                "/dev/shm",
                "/media",
                "/tmp",
                "/var/tmp",
            ];
            find_nothing(
                &m,
                &prune,
                "-type d -perm /1000",
                "unknown sticky directories",
            )
            .await
        }
    })
    .await;
    c.run_if("flatcar", "blacklist", |_| {
        let m = m.clone();
        async move {
            let skip = ["/proc", "/sys", "/var/lib/docker", "/var/lib/rkt", "/run"];
            let black = [
                "/usr/bin/perl",
                "/usr/bin/python",
                "/usr/share/man",
                "/usr/bin/*.old",
                "*[\x01-\x1f]*",
                "* *",
                "*\x7f*",
            ];
            let p: Vec<String> = skip.iter().map(|x| format!("-path {x} -prune")).collect();
            let b: Vec<String> = black
                .iter()
                .map(|x| format!("-path '{x}' -print"))
                .collect();
            let cmd = format!(
                "sudo find / -ignore_readdir_race {} -o {}",
                p.join(" -o "),
                b.join(" -o ")
            );
            let out = m.must_ssh(&cmd).await?;
            if !out.is_empty() {
                bail!("blacklisted files or directories found:\n{out}");
            }
            Ok(())
        }
    })
    .await;
    Ok(())
}

const IPVS_RULES: &str = "-A -t 207.175.44.110:80 -s rr\n-a -t 207.175.44.110:80 -r 192.168.10.1:80 -m\n-a -t 207.175.44.110:80 -r 192.168.10.2:80 -m\n-a -t 207.175.44.110:80 -r 192.168.10.3:80 -m\n-a -t 207.175.44.110:80 -r 192.168.10.4:80 -m\n-a -t 207.175.44.110:80 -r 192.168.10.5:80 -m\n";

async fn packages(c: TestCluster) -> Result<()> {
    let ms = c.machines();
    let (client, server) = (ms[0].clone(), ms[1].clone());
    // Whether any subtest got past its preconditions (else the test is a skip, not a pass).
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran1 = ran.clone();
    c.run("sys-cluster/ipvsadm", |c| {
        let m = client.clone();
        async move {
            need_tool(&c, &m, "ipvsadm").await?;
            ran1.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_output_contains(&m, "sudo ipvsadm", "IP Virtual Server version").await?;
            let out = m
                .ssh_with_stdin("sudo ipvsadm -R", Some(IPVS_RULES.as_bytes()))
                .await?;
            if !out.success() {
                bail!("ipvsadm -R failed: {}", out.stderr_str());
            }
            let out = m.must_ssh("sudo ipvsadm -Ln").await?;
            if !out.contains("TCP  207.175.44.110:80 rr") {
                bail!("could not create the virtual service: {out}");
            }
            for i in 1..=5 {
                if !out.contains(&format!("-> 192.168.10.{i}:80")) {
                    bail!("real server 192.168.10.{i} was not added: {out}");
                }
            }
            m.must_ssh("sudo ipvsadm -D -t 207.175.44.110:80").await?;
            let out = m.must_ssh("sudo ipvsadm -Ln").await?;
            if out.contains("207.175.44.110:80") {
                bail!("could not delete the virtual service: {out}");
            }
            Ok(())
        }
    })
    .await;
    let ran2 = ran.clone();
    c.run("sys-block/open-iscsi", |c| {
        let (client, server) = (client.clone(), server.clone());
        async move {
            if !c.env().internet {
                return bogie_harness::skip(
                    "the iSCSI target runs in ghcr.io/flatcar/targetcli-fb, which needs the internet",
                );
            }
            need_tool(&c, &client, "iscsiadm").await?;
            ran2.store(true, std::sync::atomic::Ordering::Relaxed);
            open_iscsi(&client, &server).await
        }
    })
    .await;
    if !ran.load(std::sync::atomic::Ordering::Relaxed) {
        return bogie_harness::skip("every package subtest was skipped (see the subtests)");
    }
    Ok(())
}

const ISCSI_INITIATOR: &str = r#"set -eu
sudo systemctl start iscsid
for i in $(seq 0 9); do
  if [ -e /etc/iscsi/initiatorname.iscsi ]; then
    name=$(grep -F InitiatorName /etc/iscsi/initiatorname.iscsi | cut -d= -f2-)
    [ -n "$name" ] || { echo "malformed initiator name config"; exit 1; }
    echo "$name"; exit 0
  fi
  sleep 1
done
echo "no initiator name config found"; exit 1"#;

async fn open_iscsi(client: &TestMachine, server: &TestMachine) -> Result<()> {
    let initiator = client.must_ssh(ISCSI_INITIATOR).await?;
    let script = format!(
        "cd /\nbackstores/fileio create test /shared/test.img 100m\niscsi/ create iqn.2006-04.com.example:test-target\ncd iscsi/iqn.2006-04.com.example:test-target/tpg1/\nluns/ create /backstores/fileio/test\nset attribute generate_node_acls=1\nacls/ create {initiator}\n"
    );
    server
        .write_file("/shared/init.script", script.as_bytes(), 0o644)
        .await?;
    server
        .must_ssh("sudo docker run --privileged --network host --mount type=bind,source=/sys,destination=/sys --mount type=bind,source=/shared,destination=/shared --mount type=bind,source=/run/dbus,destination=/run/dbus,readonly --mount type=bind,source=/usr/lib/modules,destination=/usr/lib/modules,readonly --rm ghcr.io/flatcar/targetcli-fb bash -c 'targetcli </shared/init.script'")
        .await?;
    let ip = private_ip(server)?;
    client
        .must_ssh(&format!(
            r#"set -eu
target=$(sudo iscsiadm --mode=discovery --type=sendtargets --portal={ip} | cut -d' ' -f 2-)
sudo iscsiadm --mode=node --login --targetname="$target" --portal={ip}
for i in $(seq 0 9); do [ -e /dev/sda ] && break; sleep 1; done
[ -e /dev/sda ] || {{ echo "no /dev/sda device"; exit 1; }}
sudo mkfs.ext2 -q /dev/sda
sudo mkdir -p /drive
sudo mount -t ext2 /dev/sda /drive
echo "seems to be working" | sudo tee /drive/test-file >/dev/null
sudo umount /drive
sudo systemctl enable iscsi"#
        ))
        .await?;
    client.reboot().await?;
    client
        .must_ssh(
            r#"set -eu
[ -e /dev/sda ] || { echo "no /dev/sda device after reboot"; exit 1; }
sudo mkdir -p /drive
sudo mount -t ext2 /dev/sda /drive
[ "$(cat /drive/test-file)" = "seems to be working" ] || { echo "unexpected file contents"; exit 1; }
sudo umount /drive"#,
        )
        .await?;
    Ok(())
}

fn fips_config() -> Config {
    Config::new()
        .merge(json!({"kernelArguments": {"shouldExist": ["fips=1"]}}))
        .file("/etc/system-fips", "", 0o644)
        .file(
            "/etc/ssl/openssl.cnf",
            "config_diagnostics = 1\nopenssl_conf = openssl_init\n# includes the fipsmodule configuration\n.include /etc/ssl/fipsmodule.cnf\n[openssl_init]\nproviders = provider_sect\n[provider_sect]\nfips = fips_sect\nbase = base_sect\n[base_sect]\nactivate = 1\n",
            0o644,
        )
}

async fn fips(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh("echo Flatcar | openssl sha512 - && openssl list -provider fips")
        .await?;
    if m.ssh("echo Flatcar | openssl md5 -").await?.success() {
        bail!("the MD5 hash algorithm should fail in FIPS mode");
    }
    assert_output_contains(&m, "cat /proc/sys/crypto/fips_enabled", "1").await?;
    Ok(())
}

const OVERLAY_CHECK: &str = r#"sudo unshare -m bash -c 'umount -l /etc || { echo "Could not unmount /etc"; exit 1; }; if test -e "/etc/hosts" || test -e "/etc/security" || test -e "/etc/profile.d" || test -e "/etc/shells" || test -e "/etc/os-release" ; then echo "Unexpected overlay copy in /etc WHEN: $_" ; exit 1; fi'"#;

async fn overlay_cleanup(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh(&OVERLAY_CHECK.replace("WHEN", "on initial boot"))
        .await?;
    m.must_ssh("sudo rm -r /etc/sssd && sudo mkdir /etc/sssd && sudo chmod 700 /etc/sssd && sudo rm /etc/kexec.conf && sudo rm -r /etc/wireguard && sudo rm -r /etc/bash && sudo cp -a /usr/share/flatcar/etc/bash /etc/bash && sudo touch /etc/bash/hello && sudo rm /etc/resolv.conf")
        .await?;
    m.must_ssh("sudo unshare -m bash -c 'umount -l /etc && cp -a /usr/share/flatcar/etc/{hosts,shells,os-release} /etc/ && mkdir /etc/security /etc/profile.d'")
        .await?;
    m.reboot().await?;
    m.must_ssh(&OVERLAY_CHECK.replace("WHEN", "after reboot"))
        .await?;
    m.must_ssh(r#"if sudo test -e /etc/sssd/sssd.conf || test -e /etc/kexec.conf || test -e /etc/wireguard || test ! -e /etc/bash/hello || test ! -e /etc/bash/bashrc ; then echo "Deletion or modification lost: $_" ; exit 1; fi"#)
        .await?;
    m.must_ssh(r#"if test ! -e /etc/resolv.conf ; then echo "Files with tmpfile rule not recreated: $_" ; exit 1; fi && if ! sudo unshare -m bash -c 'umount -l /etc && test ! -e /etc/resolv.conf'; then echo "File with tmpfile rule exists as upcopy: $_"; exit 1; fi"#)
        .await?;
    Ok(())
}

fn osreset_config() -> Config {
    Config::new().file("/file-works", "something", 0o644).unit(
        "test.service",
        "[Service]\nType=oneshot\nRemainAfterExit=true\nExecStart=touch /service-works\n[Install]\nWantedBy=multi-user.target\n",
        true,
    )
}

fn osreset_check(when: &str) -> String {
    format!(
        r#"sudo systemctl start test && if ! systemctl is-enabled -q test.service || test ! -e /service-works || test ! -e /file-works; then echo "Missing service/file {when}: $_"; exit 1; fi"#
    )
}

async fn osreset(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    m.must_ssh(&osreset_check("on initial boot")).await?;
    let before = m.must_ssh("cat /etc/machine-id").await?;
    m.must_ssh("sudo rm /file-works && sudo mkdir /etc/custom /etc/keep-dir /etc/delete-dir && sudo touch /etc/delete-me /etc/keep-me /etc/keep-dir/file /etc/custom/delete-me /etc/custom/keep-me /etc/delete-dir/test")
        .await?;
    m.must_ssh("sudo flatcar-reset --keep-machine-id --keep-paths '/etc/keep-dir' '/etc/keep-me' '/etc/custom/keep.*' '/var/log'")
        .await?;
    m.reboot().await?;
    m.must_ssh(&osreset_check("after reset")).await?;
    m.must_ssh(r#"if test ! -e /etc/keep-dir/file || test ! -e /etc/custom/keep-me || test ! -e /etc/keep-me || test -e /etc/delete-me || test -e /etc/custom/delete-me || test -e /etc/delete-dir ; then echo "Unexpected state: $_"; exit 1; fi"#)
        .await?;
    let after = m.must_ssh("cat /etc/machine-id").await?;
    if before != after {
        bail!("the machine id was not kept: {before} != {after}");
    }
    Ok(())
}

/// The partition behind /usr (the verity data device on Flatcar).
const USR_DEVICE: &str = r#"sudo veritysetup status usr 2>/dev/null | awk '$1=="data" && $2=="device:" {print $3}'; sudo findmnt -no SOURCE /usr"#;

async fn usr_device(m: &TestMachine) -> Result<String> {
    let out = m.must_ssh(USR_DEVICE).await?;
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("/dev/") && *l != "/dev/mapper/usr")
        .map(String::from)
        .context("cannot find the partition behind /usr")
}

/// The dm-verity root hash of /usr on a kernel command line (`verity.usrhash=HEX`).
pub(crate) fn usrhash(cmdline: &str) -> Option<&str> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("verity.usrhash="))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn verity(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    c.run("verify", |c| {
        let m = m.clone();
        async move {
            // GRUB passes the root hash as verity.usrhash=; Flatcar also keeps it at a fixed
            // offset in the kernel image (512 on arm64), where kola reads it.
            let cmdline = m.must_ssh("cat /proc/cmdline").await?;
            let hash = match usrhash(&cmdline) {
                Some(h) => h.to_string(),
                None => {
                    let offset = if c.env().arch == bogie_harness::Arch::Arm64 {
                        512
                    } else {
                        64
                    };
                    m.must_ssh(&format!(
                        "sudo dd if=/boot/flatcar/vmlinuz-a skip={offset} count=64 bs=1 status=none"
                    ))
                    .await?
                }
            };
            let dev = usr_device(&m).await?;
            let hash_offset = m
                .must_ssh(&format!("sudo e2size {dev} || echo 1065345024"))
                .await?;
            m.must_ssh(&format!(
                "sudo veritysetup verify --verbose --hash-offset={hash_offset} {dev} {dev} {hash}"
            ))
            .await?;
            Ok(())
        }
    })
    .await;
    c.run("corruption", |_| {
        let m = m.clone();
        async move {
            let st = m.ssh("sudo veritysetup status usr").await?;
            if !st.success() {
                if st.stdout_str().contains("is inactive") {
                    return bogie_harness::skip("verity is not enabled");
                }
                bail!("checking verity status failed: {}", st.stdout_str());
            }
            let out = m.must_ssh("sudo dmsetup --target verity status usr").await?;
            let f: Vec<&str> = out.split_whitespace().collect();
            if f.len() != 4 {
                bail!("unexpected dmsetup status of usr: {out}");
            }
            if f[3] != "V" {
                bail!("dmsetup reports the usr verity device is not valid: {out}");
            }
            let dev = usr_device(&m).await?;
            m.must_ssh(&format!(
                "sudo dd if=/dev/zero of={dev} bs=1M count=100 status=none"
            ))
            .await?;
            // Reading the corrupted /usr must panic the kernel: the command never returns
            // an exit status.
            let r = tokio::time::timeout(
                Duration::from_secs(120),
                m.ssh("sudo /bin/sh -c 'sync; echo -n 3 >/proc/sys/vm/drop_caches; cat /usr/lib/os-release; ls -R /usr'"),
            )
            .await;
            match r {
                Ok(Ok(o)) if o.status.is_some() => bail!(
                    "verity did not prevent reading from a corrupted disk (expected a kernel panic)"
                ),
                _ => Ok(()),
            }
        }
    })
    .await;
    Ok(())
}

const CGROUP_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "name=systemd",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
];

async fn cgroupv1(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let mounts = m.must_ssh("cat /proc/self/mounts").await?;
    let mut found = std::collections::BTreeSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" => bail!("cgroup2 is mounted: {line}"),
            "cgroup" => {
                let known: Vec<&str> = f[3]
                    .split(',')
                    .filter(|o| CGROUP_CONTROLLERS.contains(o))
                    .collect();
                if known.is_empty() {
                    bail!("unexpected controller: {line}");
                }
                found.extend(known.into_iter().map(String::from));
            }
            _ => {}
        }
    }
    let missing: Vec<&&str> = CGROUP_CONTROLLERS
        .iter()
        .filter(|c| !found.contains(**c))
        .collect();
    if !missing.is_empty() {
        bail!("cgroup controllers missing: {missing:?}");
    }
    Ok(())
}
