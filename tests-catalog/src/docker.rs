//! `docker.*`: Docker on the image, offline. No registry is reachable, so every test builds
//! its container image on the machine (`docker import` of a root made from the image's
//! static busybox, or of host binaries and their libraries where there is no busybox, as
//! kola's `GenDockerImage` does) and checks what kola checks: `docker info`, resource
//! limits, networking, capabilities of a non-root user, file ownership through export,
//! user-namespace remapping, containerd restarts.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::{Arch, Config, Test, TestCluster, TestFlags, TestMachine, Version};
use serde_json::{json, Value};

use crate::util::{assert_output_contains, is_emulated, parse_json, private_ip, retry};

/// The local image every docker test uses.
pub const IMAGE: &str = "bogie/busybox:local";

/// Builds [`IMAGE`] on the machine unless it exists; waits for the daemon first. Prints
/// `busybox` or `host` (which root was used) on its last line.
const BUILD_IMAGE_SH: &str = r#"set -e
for i in $(seq 1 180); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null
IMG=bogie/busybox:local
if docker image inspect "$IMG" >/dev/null 2>&1; then cat /var/lib/bogie-image-kind 2>/dev/null || echo busybox; exit 0; fi
r=$(mktemp -d)
mkdir -p "$r/bin" "$r/etc" "$r/root" "$r/tmp" "$r/proc" "$r/sys" "$r/dev"
BB=$(command -v busybox || true)
if [ -n "$BB" ] && "$BB" --list >/dev/null 2>&1 && ! ldd "$BB" >/dev/null 2>&1; then
    kind=busybox
    cp "$BB" "$r/bin/busybox"
    for a in $("$r/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
else
    kind=host
    for b in sh ls cat grep sleep echo true id stat ping nc timeout tar; do
        p=$(command -v $b || true); [ -n "$p" ] || continue
        cp -L "$p" "$r/bin/$b"
        for l in $(ldd "$p" 2>/dev/null | grep -o '/[^ ]*'); do mkdir -p "$r$(dirname "$l")"; cp -L "$l" "$r$l"; done
    done
fi
echo 'root:x:0:0:root:/root:/bin/sh' >"$r/etc/passwd"
printf 'root:x:0:\nshadow:x:42:\n' >"$r/etc/group"
echo 'root:*:19000:0:99999:7:::' >"$r/etc/shadow"
chown 0:42 "$r/etc/shadow"; chmod 0640 "$r/etc/shadow"
chmod 0700 "$r/root"; chmod 1777 "$r/tmp"
tar -C "$r" -c . | docker import -c 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' - "$IMG" >/dev/null
rm -rf "$r"
echo "$kind" >/var/lib/bogie-image-kind
echo "$kind"
"#;

/// How the local image was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// From the image's static busybox (every applet).
    Busybox,
    /// From host binaries and their libraries.
    Host,
}

/// Builds (once per machine) the local container image; returns how it was made.
pub async fn build_image(m: &TestMachine) -> Result<ImageKind> {
    let out = m
        .ssh_with_stdin("sudo sh -s", Some(BUILD_IMAGE_SH.as_bytes()))
        .await?;
    if !out.success() {
        bail!(
            "building the local container image failed: {}{}",
            out.stdout_str(),
            out.stderr_str()
        );
    }
    let kind = out.stdout_str();
    Ok(if kind.lines().last() == Some("host") {
        ImageKind::Host
    } else {
        ImageKind::Busybox
    })
}

/// A config that starts Docker at boot (Flatcar socket-activates it; the test image ships
/// it disabled).
pub fn docker_config() -> Config {
    Config::new().enable_unit("docker.service", true)
}

fn qemu_az() -> [&'static str; 3] {
    ["qemu", "qemu-unpriv", "azure"]
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let long = Duration::from_secs(40 * 60);
    vec![
        Test::new("docker.base", base)
            .description("docker info, resource limits, networks reliably, a user without capabilities, ownership through export")
            .platforms(&qemu_az())
            .requires(&["docker"])
            .timeout(long)
            .config(docker_config()),
        Test::new("docker.lib-coreos-dockerd-compat", base)
            .description("docker.base with the old docker.service that ran /usr/lib/coreos/dockerd, as users copied it to /etc (Flatcar: /usr/lib/coreos/dockerd)")
            .platforms(&qemu_az())
            .requires(&["docker", "flatcar"])
            .timeout(long)
            .config(lib_coreos_dockerd_config()),
        Test::new("docker.userns", userns)
            .description("dockerd with --userns-remap=dockremap runs containers whose root maps to 100000")
            .platforms(&qemu_az())
            .requires(&["docker"])
            .timeout(long)
            .config(userns_config()),
        Test::new("docker.btrfs-storage", |c| async move { info(&c, "btrfs").await })
            .description("docker info reports the btrfs storage driver on a btrfs /var/lib/docker (loop file)")
            .platforms(&qemu_az())
            .requires(&["docker", "btrfs"])
            .timeout(long)
            .config(btrfs_config()),
        Test::new("docker.devicemapper-storage", |c| async move { info(&c, "devicemapper").await })
            .description("docker info reports the devicemapper storage driver when daemon.json selects it")
            .platforms(&qemu_az())
            .min_version(Version::new(3034, 0, 0))
            .end_version(Version::new(4048, 0, 0))
            .requires(&["docker"])
            .timeout(long)
            .config(
                docker_config().file(
                    "/etc/docker/daemon.json",
                    "{\n  \"storage-driver\": \"devicemapper\"\n}\n",
                    0o644,
                ),
            ),
        Test::new("docker.containerd-restart", containerd_restart)
            .description("containerd killed with SIGTERM and SIGHUP comes back with a new pid and docker runs containers again")
            .platforms(&qemu_az())
            .requires(&["docker", "containerd"])
            .timeout(long)
            .config(docker_config()),
        Test::new("docker.enable-service.sysext", enable_service)
            .description("docker.service enabled through Ignition (plus an upholds link) reports enabled")
            .platforms(&qemu_az())
            .min_version(Version::new(3746, 0, 0))
            .requires(&["docker"])
            .config(
                docker_config().link(
                    "/etc/systemd/system/multi-user.target.upholds/docker.service",
                    "/usr/lib/systemd/system/docker.service",
                    false,
                ),
            ),
        Test::new("docker.enable-service.torcx", enable_service)
            .description("docker.service enabled through Ignition on torcx images reports enabled")
            .platforms(&["qemu", "qemu-unpriv"])
            .end_version(Version::new(3760, 0, 0))
            .requires(&["docker", "torcx"])
            .config(docker_config()),
        Test::new("docker.network-openbsd-nc", |c| async move { network(&c).await })
            .description("a container on one machine talks to a container listening on another over the private network")
            .cluster_size(2)
            .min_version(Version::new(4057, 0, 0))
            // kola excludes qemu-unpriv because its VMs had no network between them;
            // bogie's QEMU gives every cluster a private network, so require that instead.
            .requires(&["docker", "private-network"])
            .timeout(long)
            .config(docker_config()),
        Test::new("docker.network-nmap-ncat", |c| async move { network(&c).await })
            .description("a container on one machine talks to a container listening on another over the private network (ncat images)")
            .cluster_size(2)
            .end_version(Version::new(4057, 0, 0))
            .requires(&["docker", "private-network"])
            .timeout(long)
            .config(docker_config()),
        Test::new("docker.selinux", selinux)
            .description("a bind mount is denied in enforcing mode, works with :z relabelling, and exactly the expected AVC is logged")
            .platforms(&qemu_az())
            .min_version(Version::new(2942, 0, 0))
            .requires(&["docker", "selinux-enforcing"])
            .flags(TestFlags {
                no_selinux_avc_checks: true,
                ..TestFlags::default()
            })
            .timeout(long)
            .config(docker_config()),
        Test::new("docker.oldclient", oldclient)
            .description("the docker 1.9.1 client (from the host's /usr/lib/kola/amd64) still talks to the daemon")
            .cluster_size(0)
            .platforms(&["qemu", "qemu-unpriv"])
            .architectures(&[Arch::Amd64])
            .end_version(Version::new(2956, 0, 0))
            .requires(&["docker"]),
        Test::new("docker.torcx-manifest-pkgs", torcx_manifest_pkgs)
            .description("every docker version in the image's torcx vendor manifest can be selected by profile and passes docker.base")
            .cluster_size(0)
            .platforms(&["qemu", "qemu-unpriv", "!do"])
            .end_version(Version::new(3760, 0, 0))
            .requires(&["docker", "torcx"])
            .timeout(long),
    ]
}

fn lib_coreos_dockerd_config() -> Config {
    let unit = "[Unit]\nDescription=Docker Application Container Engine\nDocumentation=http://docs.docker.com\nAfter=containerd.service docker.socket network.target\nRequires=containerd.service docker.socket\n\n[Service]\nType=notify\nEnvironmentFile=-/run/flannel/flannel_docker_opts.env\nEnvironment=DOCKER_OPTS=--selinux-enabled=false\nExecStart=/usr/lib/coreos/dockerd --host=fd:// --containerd=/var/run/docker/libcontainerd/docker-containerd.sock $DOCKER_OPTS $DOCKER_CGROUPS $DOCKER_OPT_BIP $DOCKER_OPT_MTU $DOCKER_OPT_IPMASQ\nExecReload=/bin/kill -s HUP $MAINPID\nLimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\nTimeoutStartSec=0\nDelegate=yes\n\n[Install]\nWantedBy=multi-user.target\n";
    Config::new().unit("docker.service", unit, false)
}

fn userns_config() -> Config {
    Config::new()
        .merge(json!({"systemd": {"units": [{
            "name": "docker.service",
            "enabled": true,
            "dropins": [{
                "name": "10-userns.conf",
                "contents": "[Service]\nEnvironment=DOCKER_OPTS=--userns-remap=dockremap\n",
            }],
        }]}}))
        .file("/etc/subuid", "dockremap:100000:65536\n", 0o644)
        .file("/etc/subgid", "dockremap:100000:65536\n", 0o644)
        .user("dockremap", json!({}))
}

fn btrfs_config() -> Config {
    // kola's units, plus DefaultDependencies=no on the format service: with the default
    // After=sysinit.target it closes an ordering cycle (sysinit.target after
    // systemd-tmpfiles-setup, after local-fs.target, after the mount, after the format
    // service) that systemd breaks by dropping a sysinit job, which the journal check fails.
    let format = "[Unit]\nDefaultDependencies=no\nBefore=docker.service var-lib-docker.mount\nConditionPathExists=!/var/lib/docker.btrfs\n[Service]\nType=oneshot\nExecStart=/usr/bin/truncate --size=25G /var/lib/docker.btrfs\nExecStart=/usr/sbin/mkfs.btrfs /var/lib/docker.btrfs\n[Install]\nWantedBy=multi-user.target\n";
    let mount = "[Unit]\nBefore=docker.service\nAfter=format-var-lib-docker.service\nRequires=format-var-lib-docker.service\n[Install]\nRequiredBy=docker.service\n[Mount]\nWhat=/var/lib/docker.btrfs\nWhere=/var/lib/docker\nType=btrfs\nOptions=loop,discard\n";
    docker_config()
        .file(
            "/etc/docker/daemon.json",
            "{\n  \"storage-driver\": \"btrfs\"\n}\n",
            0o644,
        )
        .unit("format-var-lib-docker.service", format, true)
        .unit("var-lib-docker.mount", mount, true)
}

async fn docker_info(m: &TestMachine) -> Result<Value> {
    let cmd = "for i in $(seq 1 180); do sudo docker info >/dev/null 2>&1 && break; sleep 1; done; sudo docker info --format '{{json .}}'";
    let out = m.must_ssh(cmd).await?;
    parse_json("docker info", &out)
}

/// Checks `docker info` the way kola does; `fs` is `overlay`, `btrfs` or `devicemapper`.
pub async fn info(c: &TestCluster, fs: &str) -> Result<()> {
    let m = c.machine()?;
    let info = docker_info(&m).await?;
    check_info(&info, fs)
}

/// The checks on parsed `docker info` output.
pub fn check_info(info: &Value, fs: &str) -> Result<()> {
    let mut errors = Vec::new();
    let version = info["ServerVersion"].as_str().unwrap_or("");
    let major: u32 = version
        .split(['.', '-', '+'])
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if major == 0 {
        errors.push(format!("cannot parse the server version {version:?}"));
    }
    let expected = match fs {
        "overlay" if major >= 29 => "overlayfs",
        "overlay" => "overlay2",
        other => other,
    };
    let driver = info["Driver"].as_str().unwrap_or("");
    if driver != expected {
        errors.push(format!("unexpected driver: {expected} != {driver}"));
    }
    let opts: Vec<&str> = info["SecurityOptions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !has_security_options(&opts) {
        errors.push(format!("unexpected security options: {opts:?}"));
    }
    let cg = info["CgroupDriver"].as_str().unwrap_or("");
    if cg != "cgroupfs" && cg != "systemd" {
        errors.push(format!("unexpected cgroup driver {cg:?}"));
    }
    match info["Runtimes"].get("runc") {
        Some(r) if r["path"].as_str().is_some_and(|p| !p.is_empty()) => {}
        Some(_) => errors.push("expected a non-empty runc path".into()),
        None => errors.push(format!(
            "runc is not among the runtimes: {}",
            info["Runtimes"]
        )),
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// kola: every security option is one of seccomp, selinux, cgroupns.
fn has_security_options(opts: &[&str]) -> bool {
    opts.iter().all(|o| {
        let first = o.split(',').next().unwrap_or("");
        matches!(
            first.split_once('=').map(|(_, v)| v),
            Some("selinux" | "seccomp" | "cgroupns")
        )
    })
}

async fn base(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    build_image(&m).await?;
    c.run("docker-info", |c| async move { info(&c, "overlay").await })
        .await;
    c.run("resources", |c| resources(c, m.clone())).await;
    c.run("networks-reliably", |c| networks_reliably(c, m.clone()))
        .await;
    c.run("user-no-caps", |_| user_no_caps(m.clone())).await;
    c.run("ownership", |_| ownership(m.clone())).await;
    Ok(())
}

/// Resource and security options kola exercises (those QEMU's block devices support).
const RESOURCE_CASES: &[&str] = &[
    "--memory=50m --memory-swap=50m",
    "--memory-reservation=10m",
    "--kernel-memory=10m",
    "--cpu-shares=100",
    "--cpu-period=1000 --cpu-quota=1000",
    "--cpuset-cpus=0",
    "--cpuset-mems=0",
    "--blkio-weight=10",
    "--memory=50m --oom-kill-disable=true",
    "--memory-swappiness=50",
    "--shm-size=1m",
    "--security-opt=label=disable --security-opt=no-new-privileges",
    "--security-opt=no-new-privileges",
];

async fn resources(c: TestCluster, m: TestMachine) -> Result<()> {
    // All cases at once, as kola's worker group does; one after the other under software
    // emulation, where a dozen container starts at once starve the guest.
    let parallel = !is_emulated(&m).await;
    if !parallel {
        c.log("resources: the cases run one after the other (software-emulated CPU)");
    }
    let mut script = String::from("cd \"$(mktemp -d)\"\n");
    for (i, case) in RESOURCE_CASES.iter().enumerate() {
        script.push_str(&format!(
            "( sudo docker run --rm {case} {IMAGE} sleep 0.2 >out.{i} 2>&1 || {{ echo \"FAIL: docker run {case}: $(tail -n 3 out.{i})\"; }} ){}\n",
            if parallel { " &" } else { "" }
        ));
    }
    script.push_str("wait\n");
    let out = m.ssh(&script).await?;
    let text = out.stdout_str();
    if text.contains("FAIL:") || !out.success() {
        bail!("resource limits: {text}{}", out.stderr_str());
    }
    Ok(())
}

async fn networks_reliably(c: TestCluster, m: TestMachine) -> Result<()> {
    // kola starts 100 containers; under software emulation each start costs seconds, so
    // 10 there (logged), still each a fresh container network namespace.
    let n = if is_emulated(&m).await { 10 } else { 100 };
    if n != 100 {
        c.log(format!(
            "networks-reliably: {n} containers instead of 100 (software-emulated CPU)"
        ));
    }
    let cmd = format!(
        "for i in $(seq 1 {n}); do echo -n \"$i: \"; sudo docker run --rm {IMAGE} sh -c 'ping -i 0.2 172.17.0.1 -w 1 >/dev/null && echo PASS || echo FAIL'; done"
    );
    let out = m.must_ssh(&cmd).await?;
    let passes = out.matches("PASS").count();
    if passes != n {
        bail!("expected {n} passes, but output was: {out}");
    }
    Ok(())
}

async fn user_no_caps(m: TestMachine) -> Result<()> {
    let cmd = format!(
        r#"sudo docker run --rm --user 1000:1000 -v /root:/root {IMAGE} sh -c 'grep -E "Cap(Eff|Prm)" /proc/self/status; ls /root >/dev/null 2>&1 && echo "FAIL: could read root" || echo "PASS: err reading root"'"#
    );
    let out = m.must_ssh(&cmd).await?;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() < 3 {
        bail!("expected two lines of capabilities and a result line, got {out:?}");
    }
    for l in &lines[..2] {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 2 {
            bail!("capability line {l:?} does not have two parts: {out:?}");
        }
        if f[1] != "0000000000000000" {
            bail!("permitted/effective capabilities are not zero: {out:?}");
        }
    }
    if !lines[lines.len() - 1].starts_with("PASS: ") {
        bail!("a non-root container user could read /root: {out:?}");
    }
    Ok(())
}

async fn ownership(m: TestMachine) -> Result<()> {
    let run = m
        .must_ssh(&format!(
            "sudo docker rm -f ownership >/dev/null 2>&1; sudo docker run --name ownership {IMAGE} stat -c '%u/%g' /etc/shadow"
        ))
        .await?;
    let export = m
        .must_ssh("sudo docker export ownership | tar --numeric-owner -tvf - etc/shadow ./etc/shadow 2>/dev/null | awk '{print $2}' | head -n1; sudo docker rm ownership >/dev/null")
        .await?;
    if run.trim() != export.trim() || run.trim().is_empty() {
        bail!("ownership should be kept between run and export: {run:?} and {export:?}");
    }
    if run.trim() != "0/42" {
        bail!("/etc/shadow in the container is owned by {run}, not 0/42");
    }
    Ok(())
}

async fn userns(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    build_image(&m).await?;
    let out = m
        .must_ssh(&format!("sudo docker run --rm {IMAGE} echo fj.fj"))
        .await?;
    if out != "fj.fj" {
        bail!("expected fj.fj, got {out:?}");
    }
    let map = m
        .must_ssh(&format!(
            "sudo docker run -d --name=sleepy {IMAGE} sleep 10000 >/dev/null; until [ \"$(sudo docker inspect -f '{{{{.State.Running}}}}' sleepy)\" = true ]; do sleep 0.2; done; pid=$(sudo docker inspect -f '{{{{.State.Pid}}}}' sleepy); cat /proc/$pid/uid_map; sudo docker kill sleepy >/dev/null 2>&1"
        ))
        .await?;
    let parts: Vec<&str> = map.split_whitespace().collect();
    if parts.len() != 3 {
        bail!("expected uid_map to have three parts, was: {map:?}");
    }
    if parts[0] != "0" || parts[1] != "100000" {
        bail!("unexpected userns mapping values: {map:?}");
    }
    Ok(())
}

async fn containerd_up(m: &TestMachine) -> Result<()> {
    let info = docker_info(m).await?;
    if info["ContainerdCommit"]["ID"]
        .as_str()
        .unwrap_or("")
        .is_empty()
    {
        bail!("docker could not find containerd");
    }
    Ok(())
}

async fn run_sleeper(m: &TestMachine, after: &str) -> Result<()> {
    retry(5, Duration::from_secs(5), || async {
        m.must_ssh(&format!("sudo docker run -d {IMAGE} sleep infinity"))
            .await
            .map(|_| ())
    })
    .await
    .with_context(|| format!("unable to run a container{after}"))
}

async fn containerd_restart(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    build_image(&m).await?;
    containerd_up(&m).await?;
    run_sleeper(&m, "").await?;
    for signal in ["SIGTERM", "SIGHUP"] {
        let pid = m
            .must_ssh("systemctl show containerd -p MainPID --value")
            .await?;
        if pid == "0" {
            bail!("could not find containerd's pid");
        }
        m.must_ssh(&format!("sudo kill -{signal} {pid}")).await?;
        let state = retry(12, Duration::from_secs(6), || async {
            let s = m
                .must_ssh("systemctl show containerd -p SubState --value")
                .await?;
            match s.as_str() {
                "running" => Ok(Ok(())),
                "stopped" | "exited" | "failed" => Ok(Err(s)),
                _ => bail!("containerd is {s} after {signal}"),
            }
        })
        .await?;
        if let Err(s) = state {
            bail!("containerd entered state {s} after {signal}");
        }
        let new_pid = m
            .must_ssh("systemctl show containerd -p MainPID --value")
            .await?;
        if new_pid == "0" {
            bail!("containerd is not running (no pid) after {signal}");
        }
        if new_pid == pid {
            bail!("containerd has the same pid {pid} after {signal}: it did not die");
        }
        containerd_up(&m).await?;
        run_sleeper(&m, &format!(" after killing containerd with {signal}")).await?;
    }
    Ok(())
}

async fn enable_service(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_output_contains(&m, "systemctl is-enabled docker", "enabled").await?;
    Ok(())
}

async fn network(c: &TestCluster) -> Result<()> {
    let ms = c.machines();
    let (src, dest) = (ms[0].clone(), ms[1].clone());
    let dest_ip = private_ip(&dest)?;
    let (ks, kd) = tokio::try_join!(build_image(&src), build_image(&dest))?;
    let server = match kd {
        ImageKind::Busybox => "timeout 20 nc -l -p 9988",
        ImageKind::Host => "timeout 20 nc -N -l 0.0.0.0 9988",
    };
    let client = match ks {
        ImageKind::Busybox => format!("nc -w 10 {dest_ip} 9988"),
        ImageKind::Host => format!("nc {dest_ip} 9988"),
    };
    let listener = async {
        let out = dest
            .must_ssh(&format!(
                "echo 'HELLO FROM SERVER' | sudo docker run -i --rm -p 9988:9988 {IMAGE} {server}"
            ))
            .await?;
        if out != "HELLO FROM CLIENT" {
            bail!("unexpected result from the listener: {out:?}");
        }
        Ok(())
    };
    let talker = async {
        dest.must_ssh("for i in $(seq 1 600); do ss -Hltn 'sport = :9988' | grep -q 9988 && exit 0; sleep 0.1; done; echo 'no listener on :9988'; exit 1")
            .await?;
        let out = src
            .must_ssh(&format!(
                "echo 'HELLO FROM CLIENT' | sudo docker run -i --rm {IMAGE} {client}"
            ))
            .await?;
        if out != "HELLO FROM SERVER" {
            bail!("unexpected result from the talker: {out:?}");
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(300), async {
        tokio::try_join!(listener, talker)
    })
    .await
    .context("timed out waiting for the containers to talk")??;
    Ok(())
}

async fn selinux(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    build_image(&m).await?;
    m.must_ssh("sudo setenforce 0").await?;
    m.must_ssh(&format!(
        "sudo mkdir -p /etc/misc && sudo docker run -v /etc/misc:/opt --rm {IMAGE} true"
    ))
    .await?;
    m.must_ssh("sudo setenforce 1").await?;
    let denied = m
        .ssh(&format!(
            "sudo docker run -v /etc/misc:/opt --rm {IMAGE} sh -c 'echo world > /opt/hello'"
        ))
        .await?;
    if denied.success() {
        bail!("writing to an unlabelled bind mount should fail in enforcing mode");
    }
    m.must_ssh(&format!(
        "sudo docker run -v /etc/misc:/opt:z --rm {IMAGE} sh -c 'echo world > /opt/hello'"
    ))
    .await?;
    let out = m.must_ssh("cat /etc/misc/hello").await?;
    if out != "world" {
        bail!("/etc/misc/hello should hold 'world', holds {out:?}");
    }
    let avcs = m
        .ssh("sudo journalctl | grep -ie 'avc:[[:space:]]*denied'")
        .await?
        .stdout_str();
    let lines: Vec<&str> = avcs.lines().filter(|l| !l.trim().is_empty()).collect();
    let expected = |l: &str| {
        l.contains("avc:  denied  { write }")
            && l.contains("comm=\"sh\"")
            && l.contains("name=\"misc\"")
            && (l.contains("container_t") || l.contains("svirt_lxc_net_t"))
            && l.contains("tcontext=system_u:object_r:etc_t:s0")
            && l.contains("tclass=dir")
    };
    match lines.as_slice() {
        [] => bail!("missing the expected AVC in the journal"),
        [one] if expected(one) => Ok(()),
        [one] => bail!("unexpected AVC: {one}"),
        many if c
            .env()
            .version
            .is_some_and(|v| v < Version::new(4208, 0, 0)) =>
        {
            if many.iter().any(|l| expected(l)) {
                Ok(())
            } else {
                bail!("missing the expected AVC among: {}", many.join("\n"))
            }
        }
        many => bail!("too many AVCs, expected only one:\n{}", many.join("\n")),
    }
}

async fn oldclient(c: TestCluster) -> Result<()> {
    let client = std::path::Path::new("/usr/lib/kola/amd64/docker-1.9.1");
    let bytes = match std::fs::read(client) {
        Ok(b) => b,
        Err(e) => {
            return bogie_harness::skip(format!(
                "can't find the old docker client to test ({}: {e})",
                client.display()
            ))
        }
    };
    let m = c.new_machine(Some(docker_config())).await?;
    m.write_file("/home/core/docker-1.9.1", &bytes, 0o755)
        .await?;
    build_image(&m).await?;
    let out = m
        .must_ssh(&format!(
            "sudo /home/core/docker-1.9.1 run --rm {IMAGE} echo 'IT WORKED'"
        ))
        .await?;
    if out != "IT WORKED" {
        bail!("unexpected result from the old docker client: {out:?}");
    }
    Ok(())
}

async fn torcx_manifest_pkgs(c: TestCluster) -> Result<()> {
    let m = c.new_machine(Some(docker_config())).await?;
    // The vendor store lists the docker versions the image ships.
    let versions = m
        .must_ssh("ls /usr/share/torcx/store 2>/dev/null | sed -n 's/^docker:\\(.*\\)\\.torcx\\.tgz$/\\1/p'")
        .await?;
    let versions: Vec<String> = versions.lines().map(str::to_string).collect();
    if versions.is_empty() {
        return bogie_harness::skip("the image's torcx store has no docker packages");
    }
    for v in versions {
        let m = m.clone();
        c.run(&format!("torcx-pkg-{v}"), |c| async move {
            let profile = format!(
                "{{\"kind\":\"profile-manifest-v0\",\"value\":{{\"images\":[{{\"name\":\"docker\",\"reference\":\"{v}\"}}]}}}}\n"
            );
            m.write_file("/etc/torcx/profiles/docker.json", profile.as_bytes(), 0o644)
                .await?;
            m.must_ssh("echo docker | sudo tee /etc/torcx/next-profile >/dev/null")
                .await?;
            m.reboot().await?;
            m.must_ssh("sudo rm -rf /var/lib/docker").await?;
            let prof = m.must_ssh("cat /run/torcx/profile.json").await?;
            let prof = parse_json("cat /run/torcx/profile.json", &prof)?;
            let current = prof["value"]["images"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == "docker"))
                .and_then(|i| i["reference"].as_str())
                .unwrap_or("");
            if current != v {
                bail!("expected torcx docker reference {v}, got {current}");
            }
            let info = docker_info(&m).await?;
            let server = info["ServerVersion"].as_str().unwrap_or("");
            if !server.starts_with(&v) {
                bail!("expected a docker version like {v}, got {server}");
            }
            base(c).await
        })
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_info_checks() {
        let good = json!({
            "ServerVersion": "20.10.24+dfsg1", "Driver": "overlay2", "CgroupDriver": "systemd",
            "SecurityOptions": ["name=seccomp,profile=default", "name=cgroupns"],
            "Runtimes": {"runc": {"path": "runc"}},
        });
        check_info(&good, "overlay").unwrap();
        let mut new = good.clone();
        new["ServerVersion"] = json!("29.0.1");
        assert!(check_info(&new, "overlay")
            .unwrap_err()
            .to_string()
            .contains("overlayfs != overlay2"));
        let mut bad = good.clone();
        bad["SecurityOptions"] = json!(["name=apparmor"]);
        bad["Runtimes"] = json!({});
        let e = check_info(&bad, "overlay").unwrap_err().to_string();
        assert!(e.contains("security options") && e.contains("runc"), "{e}");
    }
}
