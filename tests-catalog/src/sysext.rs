//! `sysext.*` and `confext.*`: systemd system extensions on Flatcar — a directory
//! extension, disabling the shipped docker/containerd extensions, custom docker
//! extensions, an OEM extension built in the developer container, ZFS from the extension
//! store, and the confext refresh skip.

use anyhow::{bail, Result};
use bogie_harness::platform::DiskSpec;
use bogie_harness::{Arch, Config, Test, TestCluster, TestMachine, Version};
use serde_json::json;

use crate::util::{assert_output_contains, private_ip};

fn q() -> [&'static str; 2] {
    ["qemu", "qemu-unpriv"]
}
fn q_az() -> [&'static str; 3] {
    ["qemu", "qemu-unpriv", "azure"]
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("sysext.simple", |c| async move { simple(&c, "/oem").await })
            .description("a directory extension in /etc/extensions adds /usr/hello-sysext, also after restarting systemd-sysext (Flatcar: extension-release ID=flatcar)")
            .platforms(&q_az())
            .min_version(Version::new(3603, 0, 0))
            .requires(&["flatcar", "sysext"])
            .config(simple_config()),
        Test::new("sysext.simple.old", |c| async move { simple(&c, "/usr/share/oem").await })
            .description("a directory extension in /etc/extensions adds /usr/hello-sysext (Flatcar: extension-release ID=flatcar, OEM at /usr/share/oem)")
            .platforms(&q())
            .min_version(Version::new(3185, 0, 0))
            .end_version(Version::new(3603, 0, 0))
            .requires(&["flatcar", "sysext"])
            .config(simple_config()),
        Test::new("confext.skiprefresh", |c| async move {
            let m = c.machine()?;
            m.must_ssh(r#"if sudo journalctl -u systemd-confext -b0 | grep "Merged extensions into"; then echo "Unexpected confext merge, expected skip"; exit 1; fi"#)
                .await?;
            m.must_ssh(r#"if ! findmnt -O rw --target /etc >/dev/null; then echo "Missing or wrong /etc mount, expected rw"; exit 1; fi"#)
                .await?;
            Ok(())
        })
        .description("without configuration extensions systemd-confext skips the merge and /etc stays a writable mount (Flatcar: its systemd-confext setup over the /etc overlay)")
        .platforms(&q())
        .min_version(Version::new(4548, 0, 0))
        .requires(&["flatcar", "sysext"]),
        Test::new("sysext.disable-docker", |c| async move {
            let out = c
                .machine()?
                .must_ssh("test -f /usr/bin/docker && echo ERROR || true")
                .await?;
            if out == "ERROR" {
                bail!("/usr/bin/docker exists although its sysext is disabled");
            }
            Ok(())
        })
        .description("masking docker-flatcar.raw with /dev/null removes /usr/bin/docker (Flatcar: its docker sysext)")
        .platforms(&q_az())
        .min_version(Version::new(3761, 0, 0))
        .requires(&["flatcar", "sysext"])
        .config(mask_extensions(&["docker-flatcar"])),
        Test::new("sysext.disable-containerd", |c| async move {
            let out = c
                .machine()?
                .must_ssh("test -f /usr/bin/containerd && echo ERROR || true")
                .await?;
            if out == "ERROR" {
                bail!("/usr/bin/containerd exists although its sysext is disabled");
            }
            Ok(())
        })
        .description("masking containerd-flatcar.raw and docker-flatcar.raw removes /usr/bin/containerd (Flatcar: its docker and containerd sysexts)")
        .platforms(&q_az())
        .min_version(Version::new(3761, 0, 0))
        .requires(&["flatcar", "sysext"])
        .config(mask_extensions(&["containerd-flatcar", "docker-flatcar"])),
        Test::new("sysext.custom-docker.sysext", custom_docker)
            .description("with the shipped docker disabled, docker sysexts built with the sysext-bakery make docker work again (Flatcar: its docker and containerd sysexts, licenses.json)")
            .platforms(&q_az())
            .min_version(Version::new(3761, 0, 0))
            .tags(&["needs-internet"])
            .requires(&["flatcar", "sysext"])
            .config(mask_extensions(&["docker-flatcar", "containerd-flatcar"])),
        Test::new("sysext.custom-docker.torcx", custom_docker)
            .description("with torcx's docker disabled, docker sysexts built with the sysext-bakery make docker work (Flatcar: torcx, licenses.json)")
            .platforms(&q())
            .min_version(Version::new(3185, 0, 0))
            .end_version(Version::new(3760, 0, 0))
            .tags(&["needs-internet"])
            .requires(&["flatcar", "sysext", "torcx"])
            .config(
                Config::new()
                    .file("/etc/systemd/system-generators/torcx-generator", "", 0o755)
                    .directory("/etc/extensions/docker-flatcar", 0o755)
                    .directory("/etc/extensions/containerd-flatcar", 0o755),
            ),
        Test::new("sysext.custom-oem", custom_oem)
            .description("an OEM sysext built in the developer container is activated after flatcar-reset and its file is there (Flatcar: the developer container, flatcar-reset, OEM sysexts)")
            .cluster_size(0)
            .platforms(&q())
            .min_version(Version::new(3603, 0, 0))
            .tags(&["needs-internet"])
            .requires(&["flatcar", "sysext", "oem-partition"]),
        Test::new("sysext.zfs.reboot", |c| async move {
            let m = zfs_machine(&c, zfs_config(ZfsUse::Plain)).await?;
            assert_output_contains(&m, "findmnt /tank", "zfs").await?;
            assert_output_contains(&m, "zpool list -H -o name", "tank").await?;
            assert_output_contains(&m, "zfs list -H -o name", "tank").await?;
            m.must_ssh("sudo chown core /tank/ && echo world >/tank/hello").await?;
            m.reboot().await?;
            assert_output_contains(&m, "lsmod", "zfs").await?;
            assert_output_contains(&m, "grep --with-filename . /tank/hello", "hello:world").await?;
            Ok(())
        })
        .description("the zfs sysext from the extension store creates a pool on an extra disk; the data survives a reboot (Flatcar: its zfs sysext, enabled-sysext.conf)")
        .cluster_size(0)
        .platforms(&q_az())
        .min_version(Version::new(3902, 0, 0))
        .tags(&["needs-internet"])
        .requires(&["flatcar", "sysext"])
        .disks(&[DiskSpec::new(1).serial("zfs")]),
        Test::new("sysext.zfs.docker", |c| async move {
            let m = zfs_machine(&c, zfs_config(ZfsUse::Docker)).await?;
            assert_output_contains(&m, "docker info -f '{{.Driver}}'", "zfs").await?;
            assert_output_contains(&m, "docker run --rm ghcr.io/flatcar/busybox mount", "zfs").await?;
            Ok(())
        })
        .description("docker runs on the zfs storage driver on a pool from the zfs sysext (Flatcar: its zfs sysext, enabled-sysext.conf)")
        .cluster_size(0)
        .platforms(&q_az())
        .min_version(Version::new(3902, 0, 0))
        .tags(&["needs-internet"])
        .requires(&["flatcar", "sysext", "docker"])
        .disks(&[DiskSpec::new(1).serial("zfs")]),
        Test::new("sysext.zfs.nfs", |c| async move {
            let m = zfs_machine(&c, zfs_config(ZfsUse::Nfs)).await?;
            m.must_ssh("sudo chown core /tank/nfs && echo world >/tank/nfs/hello").await?;
            let client = c
                .new_machine(Some(Config::new().enable_unit("nfs-client.target", true)))
                .await?;
            let ip = private_ip(&m)?;
            client
                .must_ssh(&format!("sudo mkdir /mnt/nfs && sudo mount -t nfs -o nfsvers=4 {ip}:/tank/nfs /mnt/nfs"))
                .await?;
            assert_output_contains(&client, "cat /mnt/nfs/hello", "world").await?;
            Ok(())
        })
        .description("a zfs dataset shared with sharenfs=on is mounted over NFSv4 by a second machine (Flatcar: its zfs sysext, enabled-sysext.conf)")
        .cluster_size(0)
        .platforms(&q_az())
        .min_version(Version::new(3902, 0, 0))
        .tags(&["needs-internet"])
        .requires(&["flatcar", "sysext", "nfs-server", "private-network"])
        .disks(&[DiskSpec::new(1).serial("zfs")]),
    ]
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("sysext.zfs.reboot", zfs_config(ZfsUse::Plain)),
        ("sysext.zfs.docker", zfs_config(ZfsUse::Docker)),
        ("sysext.zfs.nfs", zfs_config(ZfsUse::Nfs)),
        ("sysext.custom-oem", custom_oem_config()),
    ]
}

fn simple_config() -> Config {
    Config::new()
        .file(
            "/etc/extensions/test/usr/lib/extension-release.d/extension-release.test",
            "ID=flatcar\nSYSEXT_LEVEL=1.0\n",
            0o644,
        )
        .file(
            "/etc/extensions/test/usr/hello-sysext",
            "sysext works\n",
            0o644,
        )
}

async fn simple_check(m: &TestMachine, oem: &str) -> Result<()> {
    m.must_ssh("grep -m 1 '^sysext works$' /usr/hello-sysext")
        .await?;
    let target = m
        .must_ssh(&format!(
            "if [ -e /dev/disk/by-label/OEM ]; then df --output=target | grep {oem}; fi"
        ))
        .await?;
    if target != oem {
        bail!("the OEM partition should be mounted at {oem}, is at {target:?}");
    }
    Ok(())
}

async fn simple(c: &TestCluster, oem: &str) -> Result<()> {
    let m = c.machine()?;
    simple_check(&m, oem).await?;
    m.must_ssh("sudo systemctl restart systemd-sysext").await?;
    simple_check(&m, oem).await
}

fn mask_extensions(names: &[&str]) -> Config {
    names.iter().fold(Config::new(), |c, n| {
        c.link(&format!("/etc/extensions/{n}.raw"), "/dev/null", false)
    })
}

async fn custom_docker(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let arch = if c.env().arch == Arch::Arm64 {
        "aarch64"
    } else {
        "x86_64"
    };
    let working = "docker run --rm ghcr.io/flatcar/busybox echo Hello World";
    m.must_ssh("if docker run --rm ghcr.io/flatcar/busybox true; then echo 'docker works although disabled'; exit 1; fi")
        .await?;
    m.must_ssh("git clone https://github.com/flatcar/sysext-bakery.git && git -C sysext-bakery checkout 9850ffd5b2353f45a9b3bf4fb84f8138a149e3e7")
        .await?;
    let build = |version: &str| {
        format!(
            "ARCH={arch} ONLY_DOCKER=1 FORMAT=ext4 sysext-bakery/create_docker_sysext.sh {version} docker && ARCH={arch} ONLY_CONTAINERD=1 FORMAT=ext4 sysext-bakery/create_docker_sysext.sh {version} containerd && sudo mv docker.raw containerd.raw /etc/extensions/"
        )
    };
    m.must_ssh(&build("20.10.21")).await?;
    m.must_ssh("sudo systemctl restart systemd-sysext && sudo systemctl daemon-reload")
        .await?;
    m.must_ssh(working).await?;
    // The docker version the image ships, as a sysext too.
    let version = m
        .must_ssh("bzcat /usr/share/licenses/licenses.json.bz2 | grep -m 1 -o 'app-\\(containers\\|emulation\\)/docker-[0-9][^:]*' | cut -d - -f 3")
        .await?;
    m.must_ssh(&format!(
        "rm -f docker.raw containerd.raw; {}",
        build(&version)
    ))
    .await?;
    m.must_ssh("sudo systemctl restart systemd-sysext && sudo systemctl daemon-reload && sudo systemctl restart docker containerd")
        .await?;
    m.must_ssh(working).await?;
    Ok(())
}

const DEV_CONTAINER_SCRIPT: &str = r#"#!/bin/bash
set -euxo pipefail
version=$(source /etc/os-release; echo "${VERSION}")
version_id=$(source /etc/os-release; echo "${VERSION_ID}")
board=$(source /usr/share/flatcar/release; echo "${FLATCAR_RELEASE_BOARD}")
mkdir -p /work/sysext_rootfs/usr/share/flatcar-sysext-kola-test /work/sysext_rootfs/usr/lib/extension-release.d
echo "${version_id}" >/work/sysext_rootfs/usr/share/flatcar-sysext-kola-test/file
sysext_arch=x86-64
if [[ "${board}" = 'arm64-usr' ]]; then sysext_arch=arm64; fi
printf '%s\n' 'ID=flatcar' "VERSION_ID=${version_id}" "ARCHITECTURE=${sysext_arch}" >/work/sysext_rootfs/usr/lib/extension-release.d/extension-release.oem-test
mksquashfs /work/sysext_rootfs "/work/oem-test-${version}.raw" -all-root
"#;

const MAIN_SCRIPT: &str = r#"#!/bin/bash
set -euxo pipefail
version=$(source /etc/os-release; echo "${VERSION}")
board=$(source /usr/share/flatcar/release; echo "${FLATCAR_RELEASE_BOARD}")
arch=${board%-usr}
curl -fsSL --retry 5 -o flatcar_developer_container.bin.bz2 "https://bincache.flatcar-linux.net/images/${arch}/${version}/flatcar_developer_container.bin.bz2" \
  || curl -fsSL --retry 5 -o flatcar_developer_container.bin.bz2 "https://${CHANNEL:-alpha}.release.flatcar-linux.net/${board}/${version}/flatcar_developer_container.bin.bz2"
bunzip2 -f flatcar_developer_container.bin.bz2
workdir="${PWD}/dev-container-workdir-${RANDOM}"
mkdir -p "${workdir}"
sudo systemd-nspawn --console=pipe --bind-ro=/home/core/dev-container-script.sh --bind="${workdir}:/work" \
  --image=flatcar_developer_container.bin --machine=flatcar-developer-container /bin/bash /home/core/dev-container-script.sh
sysext_file="${workdir}/oem-test-${version}.raw"
[[ -e "${sysext_file}" ]] || { echo "Expected ${sysext_file} to exist"; ls -la "${workdir}"; exit 1; }
if [[ ! -e /oem/oem-release ]]; then
  printf '%s\n' 'ID=test' 'VERSION_ID=1.0.0' 'NAME=testing stuff' | sudo tee /oem/oem-release >/dev/null
else
  sudo sed -i'' -e 's/^ID=.*/ID=test/' /oem/oem-release
fi
sudo mkdir -p /oem/sysext
sudo mv "${sysext_file}" /oem/sysext
sudo touch /oem/sysext/active-oem-test
sudo flatcar-reset --keep-machine-id --keep-paths /var/log
"#;

const CHECK_SCRIPT: &str = r#"#!/bin/bash
set -euxo pipefail
systemd-sysext list
systemd-sysext status
systemd-sysext list | grep -E '^oem-test[[:space:]]+raw' || { echo "oem-test image is not listed as raw"; exit 1; }
systemd-sysext status | grep -q oem-test || { echo "oem-test sysext is not active on /usr"; exit 1; }
f=/usr/share/flatcar-sysext-kola-test/file
[[ -e "${f}" ]] || { echo "Missing file from sysext"; exit 1; }
got=$(cat "${f}")
ex=$(source /etc/os-release; echo "${VERSION_ID}")
[[ "${got}" == "${ex}" ]] || { echo "Bad content of sysext file (got '${got}', expected '${ex}')"; exit 1; }
"#;

fn custom_oem_config() -> Config {
    let owned = json!({"user": {"name": "core"}, "group": {"name": "core"}});
    let file = |path: &str, body: &str, overwrite: bool| {
        let mut f = json!({
            "path": path, "mode": 0o755, "overwrite": overwrite,
            "contents": {"source": bogie_harness::ignition::data_url(body.as_bytes())},
        });
        f["user"] = owned["user"].clone();
        f["group"] = owned["group"].clone();
        f
    };
    Config::new().merge(json!({"storage": {"files": [
        file("/home/core/dev-container-script.sh", DEV_CONTAINER_SCRIPT, false),
        file("/home/core/main-script.sh", MAIN_SCRIPT, false),
        // overwrite: flatcar-reset keeps /oem
        file("/oem/check-script.sh", CHECK_SCRIPT, true),
    ]}}))
}

async fn custom_oem(c: TestCluster) -> Result<()> {
    let m = c.new_machine(Some(custom_oem_config())).await?;
    m.must_ssh("/home/core/main-script.sh").await?;
    m.reboot().await?;
    m.must_ssh("/oem/check-script.sh").await?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum ZfsUse {
    Plain,
    Docker,
    Nfs,
}

/// The pool's disk, with kola's serial `zfs`.
const ZFS_DISK: &str = "/dev/disk/by-id/virtio-zfs";

fn zfs_config(u: ZfsUse) -> Config {
    let mut exec = format!("ExecStart=zpool create tank {ZFS_DISK}\n");
    match u {
        ZfsUse::Plain => {}
        ZfsUse::Docker => {
            exec.push_str("ExecStart=zfs create -o mountpoint=/var/lib/docker tank/docker\n")
        }
        ZfsUse::Nfs => exec.push_str("ExecStart=zfs create -o sharenfs=on tank/nfs\n"),
    }
    let mut c = Config::new()
        .file("/etc/flatcar/enabled-sysext.conf", "zfs\n", 0o644)
        .unit(
            "zpool-create.service",
            &format!("[Unit]\nConditionFirstBoot=1\nBefore=first-boot-complete.target\nWants=first-boot-complete.target\n[Service]\nType=oneshot\n{exec}[Install]\nWantedBy=multi-user.target\n"),
            true,
        );
    match u {
        ZfsUse::Plain => {}
        ZfsUse::Docker => {
            c = c
                .file(
                    "/etc/docker/daemon.json",
                    "{\n  \"storage-driver\": \"zfs\"\n}\n",
                    0o644,
                )
                .dropin("docker.service", "zfs.conf", "[Unit]\nAfter=zfs.target\n");
        }
        ZfsUse::Nfs => c = c.enable_unit("nfs-server.service", true),
    }
    c
}

async fn zfs_machine(c: &TestCluster, cfg: Config) -> Result<TestMachine> {
    // kola skips release builds (no zfs sysext in the bincache for them) and secure boot.
    if c.env().version.is_none() {
        return bogie_harness::skip("the zfs sysext comes from the bincache of development builds");
    }
    c.new_machine(Some(cfg)).await
}
