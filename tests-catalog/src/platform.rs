//! Tests of one cloud, of GPUs, of cloud-init, of the developer container and of extra
//! tooling: `cl.misc.gce.oem`, `cl.metadata.*`, `coreos.misc.aws.diskfriendlyname`,
//! `azure.nvme-friendly-naming`, `cl.misc.nvidia*`, `cl.misc.falco`, `bpf.ig`,
//! `cl.cloudinit.*`, `devcontainer.*`.

use std::time::Duration;

use anyhow::{bail, Result};
use bogie_harness::{Arch, Config, Test, TestCluster, TestFlags, TestMachine, Version};

use crate::util::{assert_output_contains, raw_config, retry};

fn no_selinux() -> TestFlags {
    TestFlags {
        no_enable_selinux: true,
        ..TestFlags::default()
    }
}

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let mut v = vec![
        Test::new("cl.misc.gce.oem", |c| async move {
            let m = c.machine()?;
            m.must_ssh("systemctl is-active oem-gce.service").await?;
            let n = m.must_ssh("systemctl show oem-gce.service -P NRestarts").await?;
            if n != "0" {
                bail!("oem-gce.service restarted {n} times");
            }
            m.must_ssh("networkctl status eth0").await?;
            Ok(())
        })
        .description("the GCE OEM service runs without restarts and eth0 is managed (Flatcar: oem-gce.service)")
        .platforms(&["gce"])
        .min_version(Version::new(2801, 0, 0))
        .requires(&["flatcar"]),
        Test::new("cl.metadata.aws", |c| async move {
            metadata(&c, &["COREOS_EC2_IPV4_LOCAL", "COREOS_EC2_IPV4_PUBLIC", "COREOS_EC2_HOSTNAME"]).await
        })
        .description("coreos-metadata writes the EC2 addresses and hostname to /run/metadata/coreos (Flatcar: coreos-metadata)")
        .platforms(&["aws"])
        .requires(&["flatcar"])
        .config(metadata_config()),
        Test::new("cl.metadata.azure", |c| async move {
            metadata(&c, &["COREOS_AZURE_IPV4_DYNAMIC"]).await
        })
        .description("coreos-metadata writes the Azure dynamic address to /run/metadata/coreos (Flatcar: coreos-metadata)")
        .platforms(&["azure"])
        .requires(&["flatcar"])
        .config(metadata_config()),
        Test::new("coreos.misc.aws.diskfriendlyname", |c| async move {
            c.machine()?.must_ssh("stat /dev/xvda").await?;
            Ok(())
        })
        .description("the root disk has its friendly name /dev/xvda on AWS")
        .platforms(&["aws"])
        .min_version(Version::new(1828, 0, 0))
        .distros(&["cl", "rhcos"]),
        Test::new("azure.nvme-friendly-naming", |c| async move {
            let m = c.machine()?;
            m.must_ssh("test -x /usr/sbin/azure-nvme-id").await?;
            if !m.ssh("ls /dev/nvme0n1").await?.success() {
                return bogie_harness::skip("no NVMe disk on this instance");
            }
            m.must_ssh("sudo udevadm settle && test -d /dev/disk/azure && { test -e /dev/disk/azure/root || test -e /dev/disk/azure/os; }")
                .await?;
            Ok(())
        })
        .description("azure-nvme-id and the udev rules give NVMe disks their /dev/disk/azure names (Flatcar: azure-nvme-id, its udev rules)")
        .platforms(&["azure"])
        .requires(&["flatcar"]),
        Test::new("cl.misc.falco", |c| async move {
            let m = c.machine()?;
            m.must_ssh("sudo docker run --rm --privileged -v /root/.falco:/root/.falco -v /proc:/host/proc:ro -v /boot:/host/boot:ro -v /lib/modules:/host/lib/modules:ro -v /usr:/host/usr:ro -v /etc:/host/etc:ro falcosecurity/falco-driver-loader:master kmod")
                .await?;
            m.must_ssh("dmesg | grep falco && lsmod | grep falco").await?;
            Ok(())
        })
        .description("falco's driver loader builds and loads the falco kernel module (Flatcar: falco's support for Flatcar kernels)")
        .platforms(&["qemu"])
        .architectures(&[Arch::Amd64])
        .end_version(Version::new(4330, 0, 0))
        .flags(no_selinux())
        .tags(&["needs-internet"])
        .requires(&["flatcar", "docker"])
        .config(crate::docker::docker_config()),
        Test::new("bpf.ig", inspektor_gadget)
            .description("Inspektor Gadget from the extension store traces exec and DNS events with filters (Flatcar: sysexts from extensions.flatcar.org)")
            .cluster_size(0)
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .min_version(Version::new(4081, 0, 0))
            .flags(no_selinux())
            .tags(&["needs-internet"])
            .requires(&["flatcar", "sysext", "docker"]),
        Test::new("cl.cloudinit.basic", |c| async move {
            let m = c.machine()?;
            let written = m.must_ssh("cat /foo").await?;
            if written != "bar" {
                bail!("cloud-config wrote {written:?} to /foo");
            }
            assert_output_contains(&m, "hostnamectl", "Static hostname: core1").await?;
            Ok(())
        })
        .description("coreos-cloudinit applies a cloud-config: a file and the hostname (Flatcar: coreos-cloudinit)")
        // kola keeps it off qemu-unpriv for how that platform hands over user data; bogie
        // writes it where coreos-cloudinit reads it, through Ignition, on every platform.
        .platforms(&["!qemu-unpriv", "!hetzner", "!akamai", "!oraclecloud"])
        .privileged_qemu(&[])
        .requires(&["flatcar", "cloudinit"])
        .config(user_data("#cloud-config\nhostname: \"core1\"\nwrite_files:\n  - path: \"/foo\"\n    content: bar\n")),
        Test::new("cl.cloudinit.script", |c| async move {
            let written = c.machine()?.must_ssh("cat /foo").await?;
            if written != "bar" {
                bail!("the user-data script wrote {written:?} to /foo");
            }
            Ok(())
        })
        .description("coreos-cloudinit runs a user-data shell script (Flatcar: coreos-cloudinit)")
        .platforms(&["qemu", "azure", "!qemu-unpriv"])
        .privileged_qemu(&[])
        .requires(&["flatcar", "cloudinit"])
        .config(user_data("#!/bin/bash\necho bar > /foo\n")),
        Test::new("cl.cloudinit.multipart-mime", multipart)
            .description("coreos-cloudinit applies every cloud-config and script part of a multipart MIME user data and ignores the rest (Flatcar: coreos-cloudinit)")
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .min_version(Version::new(3620, 0, 0))
            .requires(&["flatcar", "cloudinit"])
            .config(user_data(MULTIPART)),
    ];
    for (name, sysext, operator) in [
        ("cl.misc.nvidia", false, false),
        ("cl.misc.nvidia-operator", false, true),
        ("cl.misc.nvidia-sysext", true, false),
        ("cl.misc.nvidia-sysext-operator", true, true),
    ] {
        let mut flags = no_selinux();
        flags.no_emergency_shell_check = operator;
        let mut t = Test::new(
            name,
            move |c| async move { nvidia(&c, sysext, operator).await },
        )
        .description(match (sysext, operator) {
            (false, false) => "the NVIDIA driver installs on a GPU instance and nvidia-smi works (Flatcar: nvidia.service)",
            (false, true) => "the NVIDIA GPU operator runs on kubeadm with the installed driver (Flatcar: nvidia.service, sysexts from extensions.flatcar.org)",
            (true, false) => {
                "the NVIDIA driver sysext loads on a GPU instance and nvidia-smi works (Flatcar: nvidia.service, its NVIDIA driver sysexts)"
            }
            (true, true) => "the NVIDIA GPU operator runs on kubeadm with the driver sysext (Flatcar: nvidia.service, its NVIDIA driver sysexts)",
        })
        .cluster_size(0)
        .platforms(&["azure", "aws"])
        .architectures(&[Arch::Amd64, Arch::Arm64])
        .flags(flags)
        .tags(&["needs-internet"])
        .requires(&["flatcar", "gpu"]);
        if sysext {
            t = t.min_version(Version::new(4334, 0, 0));
        }
        v.push(t);
    }
    for (name, docker) in [
        ("devcontainer.systemd-nspawn", false),
        ("devcontainer.docker", true),
    ] {
        let mut t = Test::new(name, move |c| async move { devcontainer(&c, docker).await })
            .description(if docker {
                "the developer container, imported into docker, emerges the kernel sources and prepares modules (Flatcar: the developer container)"
            } else {
                "the developer container, run with systemd-nspawn, emerges the kernel sources and prepares modules (Flatcar: the developer container)"
            })
            .cluster_size(0)
            .platforms(&["qemu", "qemu-unpriv"])
            .tags(&["needs-internet"])
            .requires(&["flatcar"])
            .timeout(Duration::from_secs(60 * 60));
        if docker {
            t = t.flags(no_selinux()).requires(&["docker"]);
        } else {
            t = t.min_version(Version::new(2592, 0, 0));
        }
        v.push(t);
    }
    v
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("bpf.ig", ig_config(Arch::Amd64)),
        (
            "cl.misc.nvidia-sysext",
            nvidia_config(true, false, Arch::Amd64),
        ),
        (
            "cl.misc.nvidia-operator",
            nvidia_config(false, true, Arch::Amd64),
        ),
        ("devcontainer.*", devcontainer_config(false)),
    ]
}

/// Flatcar runs coreos-cloudinit on /var/lib/flatcar-install/user_data at boot; kola
/// passes user data to the platform instead, which bogie's configs (Ignition) cannot.
fn user_data(text: &str) -> Config {
    raw_config(&format!(
        r#"{{"ignition":{{"version":"2.0.0"}},"storage":{{"files":[{{"filesystem":"root","path":"/var/lib/flatcar-install/user_data","mode":420,"contents":{{"source":"{}"}}}}]}}}}"#,
        bogie_harness::ignition::data_url(text.as_bytes())
    ))
}

const MULTIPART: &str = r#"Content-Type: multipart/mixed; boundary="MIMEMULTIPART"
MIME-Version: 1.0

--MIMEMULTIPART
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="cloud-config"

ssh_authorized_keys:
  - ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEftQIHTRvUmyDCN7VGve4srz03Jmq6rPnqq+XMHMQUIL9c/b0l7B5tWfQvQecKyLte94HOPzAyMJlktWTVGQnY=
--MIMEMULTIPART
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="cloud-config"

hostname: "example"
--MIMEMULTIPART
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="cloud-config"

write_files:
-   encoding: b64
    content: NDI=
    path: /tmp/kola_b64
    permissions: '0644'
-   encoding: base64
    content: NDI=
    path: /tmp/kola_b64_1
    permissions: '0644'
-   encoding: gzip
    content: !!binary |
        H4sIAGUfoFQC/zMxAgCIsCQyAgAAAA==
    path: /tmp/kola_gzip
    permissions: '0644'
-   encoding: gz
    content: !!binary |
        H4sIAGUfoFQC/zMxAgCIsCQyAgAAAA==
    path: /tmp/kola_gzip_1
    permissions: '0644'
-   encoding: gz+base64
    content: H4sIAGUfoFQC/zMxAgCIsCQyAgAAAA==
    path: /tmp/kola_gzip_base64
    permissions: '0644'
-   encoding: gzip+base64
    content: H4sIAGUfoFQC/zMxAgCIsCQyAgAAAA==
    path: /tmp/kola_gzip_base64_1
    permissions: '0644'
-   encoding: gz+b64
    content: H4sIAGUfoFQC/zMxAgCIsCQyAgAAAA==
    path: /tmp/kola_gzip_base64_2
    permissions: '0644'
--MIMEMULTIPART
Content-Type: text/x-shellscript; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="create_file.ps1"

#!/bin/sh
touch /coreos-cloudinit_multipart.txt
--MIMEMULTIPART
Content-Type: text/cloud-config; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="cloud-config"

#test_to_check_if_cloud_config_can_contain_a_comment
--MIMEMULTIPART
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="some_text.txt"

This is just some random text.
--MIMEMULTIPART
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0
Content-Transfer-Encoding: 7bit
Content-Disposition: attachment; filename="incognito_cloud_config.txt"

#cloud-config
write_files:
-   encoding: b64
    content: NDI=
    path: /kola_undercover
    permissions: '0644'
--MIMEMULTIPART--
"#;

async fn multipart(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_output_contains(&m, "hostnamectl", "Static hostname: example").await?;
    m.must_ssh("grep AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEftQIHTRvUmyDCN7VGve4srz03Jmq6rPnqq+XMHMQUIL9c/b0l7B5tWfQvQecKyLte94HOPzAyMJlktWTVGQnY= ~core/.ssh/authorized_keys")
        .await?;
    let n = m.must_ssh("ls -l /tmp/kola_* | wc -l").await?;
    if n != "7" {
        bail!("expected 7 files /tmp/kola_*, found {n}");
    }
    m.must_ssh(r#"for f in /tmp/kola_*; do [ "$(cat $f)" = 42 ] || { echo "$f holds $(cat $f)"; exit 1; }; done"#)
        .await?;
    m.must_ssh("test -f /coreos-cloudinit_multipart.txt && test -f /kola_undercover")
        .await?;
    Ok(())
}

/// kola's spec-1 config in spec 2: coreos-metadata.service and a metadata.target enabled.
fn metadata_config() -> Config {
    raw_config(
        r#"{"ignition":{"version":"2.0.0"},"systemd":{"units":[{"name":"coreos-metadata.service","enable":true},{"name":"metadata.target","enable":true,"contents":"[Install]\nWantedBy=multi-user.target"}]}}"#,
    )
}

async fn metadata(c: &TestCluster, keys: &[&str]) -> Result<()> {
    let m = c.machine()?;
    let out = m.must_ssh("cat /run/metadata/coreos").await?;
    let missing: Vec<&&str> = keys.iter().filter(|k| !out.contains(**k)).collect();
    if !missing.is_empty() {
        bail!("{missing:?} not in /run/metadata/coreos: {out}");
    }
    Ok(())
}

fn arch_suffix(a: Arch) -> &'static str {
    if a == Arch::Arm64 {
        "arm64"
    } else {
        "x86-64"
    }
}

fn ig_config(a: Arch) -> Config {
    Config::new().file_from_url(
        "/etc/extensions/ig.raw",
        &format!(
            "https://extensions.flatcar.org/extensions/ig-v0.40.0-{}.raw",
            arch_suffix(a)
        ),
        0o644,
        None,
    )
}

async fn inspektor_gadget(c: TestCluster) -> Result<()> {
    let node = c.new_machine(Some(ig_config(c.env().arch))).await?;
    let exec = r#"set -ex
sudo ig run trace_exec:v0.40.0 --help >/dev/null
coproc IG { sudo ig run trace_exec:v0.40.0 --host --filter 'proc.comm=docker,args~ps' --output json --verbose 2>&1 > ig.json; }
timeout 30 grep -F -m1 'running...' <&${IG[0]}
docker info >/dev/null; docker ps; docker images
sudo kill $IG_PID; wait || true
grep -q '"args":"/usr/bin/docker\u00a0ps"' ig.json
! grep -q '/usr/bin/docker\\u00a0info' ig.json
! grep -q '/usr/bin/docker\\u00a0images' ig.json"#;
    node.must_ssh(exec).await?;
    let dns = r#"set -ex
sudo ig run trace_dns:v0.40.0 --help >/dev/null
coproc IG { sudo ig run trace_dns:v0.40.0 --host --filter 'name=flatcar.org.' --output json --verbose 2>&1 > ig.json; }
timeout 30 grep -F -m1 'running...' <&${IG[0]}
dig kinvolk.io; dig flatcar.org; dig stable.release.flatcar-linux.net
sudo kill $IG_PID; wait || true
grep -q '"name":"flatcar.org."' ig.json
! grep -q '"name":"kinvolk.io."' ig.json
! grep -q '"name":"stable.release.flatcar-linux.net."' ig.json"#;
    node.must_ssh(dns).await?;
    Ok(())
}

fn nvidia_config(sysext: bool, operator: bool, a: Arch) -> Config {
    let s = arch_suffix(a);
    let mut c = Config::new();
    if sysext {
        c = c.file(
            "/etc/flatcar/enabled-sysext.conf",
            "nvidia-drivers-550-open\n",
            0o644,
        );
    }
    if operator {
        for (name, ver) in [("kubernetes", "v1.32.2"), ("nvidia-runtime", "v1.16.2")] {
            let file = format!("/opt/extensions/{name}-{ver}-{s}.raw");
            c = c
                .file_from_url(
                    &file,
                    &format!("https://extensions.flatcar.org/extensions/{name}-{ver}-{s}.raw"),
                    0o644,
                    None,
                )
                .link(&format!("/etc/extensions/{name}.raw"), &file, false);
        }
    }
    c
}

async fn wait_nvidia(m: &TestMachine) -> Result<()> {
    retry(40, Duration::from_secs(15), || async {
        let out = m.ssh("systemctl status nvidia.service").await?.stdout_str();
        if !out.contains("active (exited)") {
            bail!("nvidia.service: {out}");
        }
        Ok(())
    })
    .await
}

async fn nvidia(c: &TestCluster, sysext: bool, operator: bool) -> Result<()> {
    let m = c
        .new_machine(Some(nvidia_config(sysext, operator, c.env().arch)))
        .await?;
    wait_nvidia(&m).await?;
    if !operator {
        let smi = if sysext {
            "/usr/bin/nvidia-smi"
        } else {
            "/opt/bin/nvidia-smi"
        };
        c.log(m.must_ssh(smi).await?);
        return Ok(());
    }
    m.must_ssh("sudo systemctl cat nvidia.service >/dev/null")
        .await?;
    assert_output_contains(&m, "sudo systemd-sysext status", "nvidia-runtime").await?;
    let driver = if sysext {
        "flatcar-nvidia-drivers"
    } else {
        "nvidia-driver"
    };
    assert_output_contains(&m, "sudo systemd-sysext status", driver).await?;
    m.must_ssh(r#"set -e
curl -fsSL -o get_helm.sh https://raw.githubusercontent.com/helm/helm/master/scripts/get-helm-3 && chmod 700 get_helm.sh && HELM_INSTALL_DIR=/opt/bin PATH=$PATH:/opt/bin ./get_helm.sh
sudo kubeadm init --pod-network-cidr=10.244.0.0/16
mkdir -p $HOME/.kube && sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config && sudo chown $(id -u):$(id -g) $HOME/.kube/config
kubectl apply -f https://github.com/flannel-io/flannel/releases/latest/download/kube-flannel.yml
kubectl taint nodes --all node-role.kubernetes.io/control-plane-"#)
        .await?;
    retry(5, Duration::from_secs(10), || async {
        let out = m.must_ssh("kubectl get nodes").await?;
        if out.contains("NotReady") {
            bail!("nodes not ready: {out}");
        }
        Ok(())
    })
    .await?;
    m.must_ssh("/opt/bin/helm repo add nvidia https://helm.ngc.nvidia.com/nvidia && /opt/bin/helm repo update && /opt/bin/helm install --wait --generate-name -n gpu-operator --create-namespace --version v24.9.2 nvidia/gpu-operator --set driver.enabled=false --set toolkit.enabled=false")
        .await?;
    retry(10, Duration::from_secs(10), || async {
        let out = m
            .must_ssh("kubectl get pods --all-namespaces --no-headers | grep -v -E 'Running|Completed' || true")
            .await?;
        if !out.is_empty() {
            bail!("pods not ready: {out}");
        }
        Ok(())
    })
    .await?;
    m.must_ssh(
        r#"kubectl apply -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: cuda-vectoradd
spec:
  restartPolicy: OnFailure
  containers:
  - name: cuda-vectoradd
    image: nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.7.1-ubuntu20.04
    resources:
      limits:
        nvidia.com/gpu: 1
EOF"#,
    )
    .await?;
    retry(30, Duration::from_secs(10), || async {
        let out = m
            .must_ssh("kubectl logs cuda-vectoradd 2>/dev/null || true")
            .await?;
        if !out.contains("Test PASSED") {
            bail!("the CUDA sample did not pass yet: {out}");
        }
        Ok(())
    })
    .await
}

const DEV_CONTAINER_SCRIPT: &str = r#"#!/bin/bash
set -euxo pipefail
source /usr/share/coreos/release
if [[ "${EXPECTED_VERSION}" != "${FLATCAR_RELEASE_VERSION}" ]]; then
  echo "Version mismatch, expected '${EXPECTED_VERSION}', got '${FLATCAR_RELEASE_VERSION}'."; exit 1
fi
export PORTAGE_BINHOST="${PORTAGE_BINHOST}"
export FEATURES="-ipc-sandbox -network-sandbox"
emerge-gitclone
emerge --getbinpkg --verbose coreos-sources
zcat /proc/config.gz >/usr/src/linux/.config
exec make -C /usr/src/linux "-j$(nproc)" modules_prepare V=1
"#;

const DEV_MAIN_PROLOG: &str = r#"#!/bin/bash
set -euxo pipefail
source /usr/share/coreos/release
ARCH="${FLATCAR_RELEASE_BOARD/-usr/}"
VERSION="${FLATCAR_RELEASE_VERSION}"
curl -fsSL --retry 5 -o flatcar_developer_container.bin.bz2 "https://bincache.flatcar-linux.net/images/${ARCH}/${VERSION}/flatcar_developer_container.bin.bz2"
bunzip2 -f flatcar_developer_container.bin.bz2
PORTAGE_BINHOST="https://bincache.flatcar-linux.net/images/${ARCH}/${VERSION}/pkgs/"
EXPECTED_VERSION="${FLATCAR_RELEASE_VERSION}"
workdir="${PWD}/dev-container-workdir-${RANDOM}"
USR_SRC_DIR="${workdir}/src"; VAR_TMP_DIR="${workdir}/tmp"
mkdir -p "${USR_SRC_DIR}" "${VAR_TMP_DIR}"
"#;

const DEV_NSPAWN: &str = r#"sudo systemd-nspawn --console=pipe --setenv=PORTAGE_BINHOST="${PORTAGE_BINHOST}" --setenv=EXPECTED_VERSION="${EXPECTED_VERSION}" \
  --bind-ro=/lib/modules --bind-ro=/home/core/dev-container-script --bind="${USR_SRC_DIR}:/usr/src" --bind="${VAR_TMP_DIR}:/var/tmp" \
  --image=flatcar_developer_container.bin --machine=flatcar-developer-container /bin/bash /home/core/dev-container-script
"#;

const DEV_DOCKER: &str = r#"offset=$(parted flatcar_developer_container.bin unit b print 2>/dev/null | grep 'Start' --after-context=1 | tail --lines=1 | awk '{ print $2 }' | head --bytes=-2)
mkdir root
sudo mount -o loop,ro,offset="${offset}" flatcar_developer_container.bin root
sudo tar -C root -czf dev-container-image.tar.gz .
sudo umount root
rm -f flatcar_developer_container.bin
docker import dev-container-image.tar.gz dev-container:42
sudo rm -f dev-container-image.tar.gz
restorecon /home/core/dev-container-script || true
docker run --log-driver=journald --env PORTAGE_BINHOST="${PORTAGE_BINHOST}" --env EXPECTED_VERSION="${EXPECTED_VERSION}" \
  --mount type=bind,source=/lib/modules,target=/lib/modules,readonly=true \
  --mount type=bind,source=/home/core/dev-container-script,target=/home/core/dev-container-script,readonly=true \
  --mount type=bind,source="${USR_SRC_DIR}",target=/usr/src --mount type=bind,source="${VAR_TMP_DIR}",target=/var/tmp \
  dev-container:42 /bin/bash /home/core/dev-container-script
"#;

fn devcontainer_config(docker: bool) -> Config {
    let main = format!(
        "{DEV_MAIN_PROLOG}{}",
        if docker { DEV_DOCKER } else { DEV_NSPAWN }
    );
    let owned = |path: &str, body: &str, mode: u32| {
        serde_json::json!({
            "path": path, "mode": mode, "overwrite": true,
            "contents": {"source": bogie_harness::ignition::data_url(body.as_bytes())},
            "user": {"name": "core"}, "group": {"name": "core"},
        })
    };
    Config::new().merge(serde_json::json!({"storage": {"files": [
        owned("/home/core/dev-container-script", DEV_CONTAINER_SCRIPT, 0o755),
        owned("/home/core/main-script", &main, 0o755),
    ]}}))
}

async fn devcontainer(c: &TestCluster, docker: bool) -> Result<()> {
    let m = c.new_machine(Some(devcontainer_config(docker))).await?;
    m.must_ssh("/home/core/main-script").await?;
    Ok(())
}
