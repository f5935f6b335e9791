//! Cluster software on Flatcar: `cl.locksmith.cluster`, `coreos.locksmith.*` (reboot
//! coordination through etcd locks), `cl.flannel.*` (overlay networks between machines)
//! and `kubeadm.*.base` (a Kubernetes cluster with an external etcd, per CNI).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bogie_harness::{Config, Test, TestCluster, TestFlags, TestMachine, Version};

use crate::etcd::{cluster_health, discovery_url, etcd_config, set_discovery, start_etcd};
use crate::util::{private_ip, retry};

fn q_az() -> [&'static str; 3] {
    ["qemu", "qemu-unpriv", "azure"]
}

/// The Kubernetes releases and CNIs kola tests (the cgroup v1 variants only for 1.34.4).
const KUBE_RELEASES: &[&str] = &["v1.34.4", "v1.35.1", "v1.36.1"];
const CNIS: &[&str] = &["calico", "flannel", "cilium"];

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    let updates_on = TestFlags {
        no_disable_updates: true,
        ..TestFlags::default()
    };
    let mut v = vec![
        Test::new("cl.locksmith.cluster", locksmith_cluster)
            .description("three machines with locksmith's etcd-lock strategy all reboot on send-need-reboot, coordinated through etcd (Flatcar: locksmith, update.conf)")
            .cluster_size(3)
            .platforms(&q_az())
            .flags(updates_on)
            .requires(&["flatcar", "locksmith", "etcd", "etcdctl", "private-network"])
            .timeout(Duration::from_secs(40 * 60))
            .config(
                etcd_config(&[
                    ("ETCD_IMAGE_TAG", "v3.5.0"),
                    ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
                    ("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379"),
                    ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://$IP:2380"),
                    ("ETCD_LISTEN_PEER_URLS", "http://$IP:2380"),
                    ("ETCD_ENABLE_V2", "true"),
                ])
                .file(
                    "/etc/flatcar/update.conf",
                    "REBOOT_STRATEGY=etcd-lock\nSERVER=disabled\n",
                    0o644,
                ),
            ),
        Test::new("coreos.locksmith.reboot", |c| async move {
            let m = c.machine()?;
            let before = m.boot_id().await?;
            send_need_reboot(&m, false).await?;
            wait_rebooted(&m, &before).await
        })
        .description("locksmithctl send-need-reboot reboots the machine (Flatcar: locksmith)")
        .platforms(&q_az())
        .requires(&["flatcar", "locksmith"]),
        Test::new("coreos.locksmith.tls", locksmith_tls)
            .description("locksmith talks to a TLS-only etcd with client certificates: lock, status, unlock by locksmithd (Flatcar: locksmith, etcd-member)")
            .platforms(&q_az())
            .flags(updates_on)
            .requires(&["flatcar", "locksmith", "etcd", "openssl"])
            .timeout(Duration::from_secs(20 * 60))
            .config(locksmith_tls_config()),
    ];
    for (name, ty, flannel_if, peer_if) in [
        ("cl.flannel.udp", "udp", "flannel0", "docker0"),
        ("cl.flannel.vxlan", "vxlan", "flannel.1", "flannel.1"),
    ] {
        let mut t = Test::new(name, move |c| async move { flannel(&c, flannel_if, peer_if).await })
            .description(&format!("flanneld ({ty} backend, network config in etcd) connects the machines' container networks: a ping crosses it (Flatcar: flanneld.service, flannel-wrapper)"))
            .cluster_size(3)
            // kola excludes qemu-unpriv (no network between VMs); bogie requires the
            // private network instead.
            .tags(&["needs-internet"])
            .requires(&["flatcar", "etcd", "etcdctl", "docker", "private-network"])
            .timeout(Duration::from_secs(40 * 60))
            .config(flannel_config(ty));
        if ty == "udp" {
            t = t.architectures(&[bogie_harness::Arch::Amd64]);
        }
        v.push(t);
    }
    for (release, cgroupv1) in KUBE_RELEASES
        .iter()
        .map(|r| (*r, false))
        .chain(std::iter::once(("v1.34.4", true)))
    {
        for cni in CNIS {
            let suffix = if cgroupv1 { ".cgroupv1" } else { "" };
            let mut t = Test::new(
                &format!("kubeadm.{release}.{cni}{suffix}.base"),
                move |c| async move { kubeadm(&c, release, cni, cgroupv1).await },
            )
            .description(&format!(
                "kubeadm {release} with {cni}{}: an external etcd, a control plane and a worker become Ready, nginx and an NFS-backed pod deploy (Flatcar: its containerd setup and kubeadm's host tools{})",
                if cgroupv1 { " on cgroup v1" } else { "" },
                if cgroupv1 { ", /etc/flatcar-cgroupv1" } else { "" }
            ))
            .cluster_size(0)
            // kola: "network config problems in qemu-unpriv" (no network between machines);
            // bogie's QEMU has the private network.
            .platforms(&["!qemu-unpriv"])
            .privileged_qemu(&["private-network"])
            .min_version(Version::new(3374, 0, 0))
            .tags(&["needs-internet"])
            .requires(&["flatcar", "etcd", "containerd", "private-network"])
            .min_memory_mb(2048)
            .timeout(Duration::from_secs(60 * 60));
            if cgroupv1 {
                t = t.end_version(Version::new(4179, 0, 0));
            }
            if *cni == "flannel" {
                t = t.flags(TestFlags {
                    no_enable_selinux: true,
                    ..TestFlags::default()
                });
            }
            v.push(t);
        }
    }
    v
}

/// Configs the bodies boot machines with, for the validation test.
pub fn body_configs() -> Vec<(&'static str, Config)> {
    vec![
        ("kubeadm (etcd)", kube_etcd_config()),
        ("kubeadm (node)", kube_node_config("echo master", false)),
    ]
}

/// Runs send-need-reboot; the connection may drop as the machine goes down.
async fn send_need_reboot(m: &TestMachine, sudo: bool) -> Result<()> {
    let cmd = format!(
        "sudo systemctl stop sshd.socket; {}locksmithctl send-need-reboot",
        if sudo { "sudo " } else { "" }
    );
    match tokio::time::timeout(Duration::from_secs(120), m.ssh(&cmd)).await {
        Ok(Ok(o)) if o.status.is_some_and(|s| s != 0) => {
            bail!("{cmd:?} failed: {}{}", o.stdout_str(), o.stderr_str())
        }
        _ => Ok(()),
    }
}

/// Waits until the machine is back with a new boot id.
async fn wait_rebooted(m: &TestMachine, before: &str) -> Result<()> {
    retry(120, Duration::from_secs(5), || async {
        let id = m.boot_id().await?;
        if id == before {
            bail!("still the same boot");
        }
        Ok(())
    })
    .await
    .context("the machine did not reboot")?;
    m.must_ssh("systemctl is-system-running --wait >/dev/null 2>&1; true")
        .await?;
    Ok(())
}

async fn etcd_cluster_up(c: &TestCluster) -> Result<Vec<TestMachine>> {
    let ms = c.machines();
    let url = discovery_url(c, &ms[0], ms.len()).await?;
    for m in &ms {
        set_discovery(m, &url).await?;
    }
    for m in &ms {
        start_etcd(m).await?;
    }
    cluster_health(&ms[0], ms.len()).await?;
    Ok(ms)
}

async fn locksmith_cluster(c: TestCluster) -> Result<()> {
    let ms = etcd_cluster_up(&c).await?;
    ms[0]
        .must_ssh("locksmithctl status && locksmithctl set-max 3")
        .await?;
    let mut befores = Vec::new();
    for m in &ms {
        befores.push(m.boot_id().await?);
    }
    for m in &ms {
        send_need_reboot(m, true).await?;
    }
    for (m, b) in ms.iter().zip(&befores) {
        wait_rebooted(m, b).await?;
    }
    Ok(())
}

const LOCKSMITH_CNF: &str = "[req]\ndistinguished_name=req\n[etcd_ca]\nbasicConstraints=CA:true\nkeyUsage=keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n[etcd_client]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n[etcd_server]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\nsubjectAltName=@sans\n[sans]\nDNS.1=localhost\nIP.1=127.0.0.1\n";

/// Makes an etcd CA and server certificate and a locksmith CA and client certificate.
const CERTGEN_SH: &str = r#"#!/bin/sh
set -e
for i in $(seq 600); do timedatectl | grep -q "System clock synchronized: yes" && break; sleep 1; done
d=/etc/ssl/certs; cnf=/etc/ssl/etcd.cnf; mkdir -p $d
gen() { # name subject ext ca
  openssl req -config $cnf -nodes -newkey rsa:2048 -sha512 -extensions $3 -subj "$2" -out $d/$1-csr.pem -keyout $d/$1-key.pem
  openssl x509 -extfile $cnf -extensions $3 -CA $d/$4-cert.pem -CAkey $d/$4-key.pem -CAcreateserial -sha512 -days 3 -req -in $d/$1-csr.pem -out $d/$1-cert.pem
}
openssl req -config $cnf -x509 -nodes -newkey rsa:2048 -sha512 -days 3 -extensions etcd_ca -subj '/CN=etcd CA' -out $d/ca-etcd-cert.pem -keyout $d/ca-etcd-key.pem
gen etcd /CN=localhost etcd_server ca-etcd
openssl req -config $cnf -x509 -nodes -newkey rsa:2048 -sha512 -days 3 -extensions etcd_ca -subj '/CN=locksmith CA' -out $d/ca-locksmith-cert.pem -keyout $d/ca-locksmith-key.pem
gen locksmith '/CN=locksmith client' etcd_client ca-locksmith
chmod 0644 $d/*-cert.pem $d/*-key.pem
ln -fns ca-etcd-cert.pem $d/etcd.pem
c_rehash >/dev/null 2>&1 || openssl rehash $d
"#;

fn locksmith_tls_config() -> Config {
    Config::new()
        .file("/etc/coreos/update.conf", "REBOOT_STRATEGY=etcd-lock\nSERVER=disabled\n", 0o644)
        .file("/etc/ssl/etcd.cnf", LOCKSMITH_CNF, 0o644)
        .file("/opt/bogie/certgen.sh", CERTGEN_SH, 0o755)
        .unit(
            "certgen.service",
            "[Unit]\nAfter=system-config.target time-sync.target\nWants=time-sync.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/sh /opt/bogie/certgen.sh\n",
            false,
        )
        .dropin(
            "etcd-member.service",
            "environment.conf",
            "[Unit]\nAfter=certgen.service\nRequires=certgen.service\n[Service]\nEnvironment=ETCD_ADVERTISE_CLIENT_URLS=https://127.0.0.1:2379\nEnvironment=ETCD_LISTEN_CLIENT_URLS=https://127.0.0.1:2379\nEnvironment=ETCD_CERT_FILE=/etc/ssl/certs/etcd-cert.pem\nEnvironment=ETCD_KEY_FILE=/etc/ssl/certs/etcd-key.pem\nEnvironment=ETCD_TRUSTED_CA_FILE=/etc/ssl/certs/ca-locksmith-cert.pem\nEnvironment=ETCD_CLIENT_CERT_AUTH=true\nEnvironment=ETCD_ENABLE_V2=true\n",
        )
        .merge(serde_json::json!({"systemd": {"units": [{
            "name": "locksmithd.service",
            "enabled": true,
            "dropins": [{"name": "environment.conf", "contents": "[Unit]\nAfter=etcd-member.service\nRequires=etcd-member.service\n[Service]\nEnvironment=LOCKSMITHD_ETCD_CERTFILE=/etc/ssl/certs/locksmith-cert.pem\nEnvironment=LOCKSMITHD_ETCD_KEYFILE=/etc/ssl/certs/locksmith-key.pem\nEnvironment=LOCKSMITHD_ETCD_CAFILE=/etc/ssl/certs/ca-etcd-cert.pem\nEnvironment=LOCKSMITHD_ENDPOINT=https://localhost:2379\nEnvironment=LOCKSMITHD_REBOOT_WINDOW_START=00:00\nEnvironment=LOCKSMITHD_REBOOT_WINDOW_LENGTH=23h59m\n"}],
        }]}}))
}

async fn locksmith_tls(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    let l = "sudo locksmithctl --endpoint https://localhost:2379 --etcd-cafile /etc/ssl/certs/ca-etcd-cert.pem --etcd-certfile /etc/ssl/certs/locksmith-cert.pem --etcd-keyfile /etc/ssl/certs/locksmith-key.pem ";
    retry(5, Duration::from_secs(12), || async {
        let out = m
            .ssh("openssl s_client -showcerts -verify_return_error -verify_ip 127.0.0.1 -verify_hostname localhost -connect localhost:2379 -cert /etc/ssl/certs/locksmith-cert.pem -key /etc/ssl/certs/locksmith-key.pem 0</dev/null 2>&1")
            .await?
            .stdout_str();
        if !out.contains("Verify return code: 0") {
            bail!("openssl s_client: {out}");
        }
        Ok(())
    })
    .await?;
    m.must_ssh(&format!("{l}status")).await?;
    m.must_ssh("sudo systemctl stop locksmithd.service").await?;
    m.must_ssh(&format!("{l}lock")).await?;
    let out = m.must_ssh(&format!("{l}status")).await?;
    if !out.starts_with("Available: 0\nMax: 1") {
        bail!("locksmithctl status while locked: {out:?}");
    }
    m.must_ssh("sudo systemctl start locksmithd.service")
        .await?;
    retry(10, Duration::from_secs(12), || async {
        let out = m.must_ssh(&format!("{l}status")).await?;
        if !out.starts_with("Available: 1\nMax: 1") {
            bail!("locksmithctl status after locksmithd started: {out:?}");
        }
        Ok(())
    })
    .await
}

fn flannel_config(ty: &str) -> Config {
    let net = format!("{{ \\\"Network\\\": \\\"10.254.0.0/16\\\", \\\"Backend\\\": {{\\\"Type\\\": \\\"{ty}\\\"}} }}");
    etcd_config(&[
        ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
        ("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379"),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://$IP:2380"),
        ("ETCD_LISTEN_PEER_URLS", "http://$IP:2380"),
        ("ETCD_ENABLE_V2", "true"),
    ])
    .dropin(
        "flannel-docker-opts.service",
        "retry.conf",
        "[Service]\nTimeoutStartSec=300\nExecStart=\nExecStart=/bin/sh -exc 'for try in 1 2 3 4 5 6 ; do /usr/lib/coreos/flannel-wrapper -d /run/flannel/flannel_docker_opts.env -i && break || sleep 10 ; try=fail ; done ; [ $try != fail ]'\n",
    )
    .enable_unit("docker.service", true)
    .dropin(
        "flanneld.service",
        "50-network-config.conf",
        &format!("[Service]\nEnvironment=ETCDCTL_API=2\nExecStartPre=/usr/bin/etcdctl set /coreos.com/network/config '{net}'\n"),
    )
}

/// The primary IPv4 address of `ifname`.
async fn bridge_ip(m: &TestMachine, ifname: &str) -> Result<String> {
    let out = m
        .must_ssh(&format!(
            "/usr/lib/systemd/systemd-networkd-wait-online --interface={ifname} --timeout=60 >/dev/null 2>&1; ip -4 -o addr show dev {ifname} primary | awk -F ' +|/' '{{printf \"%s\", $4}}'"
        ))
        .await?;
    if out.is_empty() {
        bail!("interface {ifname} doesn't exist on {}", m.id());
    }
    Ok(out)
}

async fn flannel(c: &TestCluster, a_if: &str, b_if: &str) -> Result<()> {
    let ms = etcd_cluster_up(c).await?;
    for m in &ms {
        m.must_ssh("sudo systemctl start --no-block flanneld.service docker.service")
            .await?;
    }
    let (a, b) = (&ms[0], &ms[2]);
    let src = bridge_ip(a, a_if).await?;
    let dst = bridge_ip(b, b_if).await?;
    for ip in [&src, &dst] {
        if !ip.starts_with("10.254.") {
            bail!("bridge address {ip} is not in the flannel network 10.254.0.0/16");
        }
    }
    c.log(format!("ping from {}({src}) to {}({dst})", a.id(), b.id()));
    a.must_ssh(&format!("ping -c 10 -I {src} {dst}")).await?;
    Ok(())
}

fn kube_etcd_config() -> Config {
    etcd_config(&[
        ("ETCD_IMAGE_TAG", "v3.5.24"),
        ("ETCD_ADVERTISE_CLIENT_URLS", "http://$IP:2379"),
        ("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379"),
    ])
}

/// Installs the Kubernetes binaries, CNI plugins and helm into /opt/bin.
const KUBE_INSTALL_SH: &str = r#"set -eux
RELEASE=@RELEASE@
ARCH=$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
mkdir -p /opt/bin /opt/cni/bin /etc/systemd/system/kubelet.service.d
cd /opt/bin
curl -fsSL --retry 5 -O "https://dl.k8s.io/release/${RELEASE}/bin/linux/${ARCH}/{kubeadm,kubelet,kubectl}"
chmod +x kubeadm kubelet kubectl
curl -fsSL --retry 5 "https://github.com/containernetworking/plugins/releases/download/v1.5.1/cni-plugins-linux-${ARCH}-v1.5.1.tgz" | tar -C /opt/cni/bin -xz
curl -fsSL --retry 5 "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.31.1/crictl-v1.31.1-linux-${ARCH}.tar.gz" | tar -C /opt/bin -xz
curl -fsSL --retry 5 "https://get.helm.sh/helm-v3.17.3-linux-${ARCH}.tar.gz" | tar -C /opt/bin --strip-components=1 -xz "linux-${ARCH}/helm"
cat >/etc/systemd/system/kubelet.service <<'EOF'
[Unit]
Description=kubelet
[Service]
ExecStart=/opt/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
Restart=always
StartLimitInterval=0
RestartSec=10
[Install]
WantedBy=multi-user.target
EOF
cat >/etc/systemd/system/kubelet.service.d/10-kubeadm.conf <<'EOF'
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EOF
systemctl daemon-reload
systemctl enable --now containerd kubelet
"#;

fn kube_node_config(script: &str, cgroupv1: bool) -> Config {
    let mut c = Config::new()
        .file("/home/core/install.sh", script, 0o755)
        .file(
            "/etc/modules-load.d/k8s.conf",
            "br_netfilter\noverlay\n",
            0o644,
        )
        .file(
            "/etc/sysctl.d/90-k8s.conf",
            "net.ipv4.ip_forward=1\nnet.bridge.bridge-nf-call-iptables=1\n",
            0o644,
        );
    if cgroupv1 {
        c = c.file("/etc/flatcar-cgroupv1", "", 0o644);
    }
    c
}

fn cni_manifest(cni: &str) -> &'static str {
    match cni {
        "calico" => "kubectl create -f https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/tigera-operator.yaml && kubectl create -f - <<'EOF'\napiVersion: operator.tigera.io/v1\nkind: Installation\nmetadata:\n  name: default\nspec:\n  calicoNetwork:\n    ipPools:\n    - cidr: 192.168.0.0/17\n      encapsulation: VXLAN\n  flexVolumePath: /opt/libexec/kubernetes/kubelet-plugins/volume/exec/\nEOF",
        "flannel" => "curl -fsSL https://github.com/flannel-io/flannel/releases/download/v0.26.7/kube-flannel.yml | sed 's,10.244.0.0/16,192.168.0.0/17,' | kubectl apply -f -",
        _ => "curl -fsSL https://github.com/cilium/cilium-cli/releases/download/v0.16.19/cilium-linux-$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/').tar.gz | sudo tar -C /opt/bin -xz && /opt/bin/cilium install --version 1.16.3 --set ipam.operator.clusterPoolIPv4PodCIDRList=192.168.0.0/17 && /opt/bin/cilium status --wait --wait-duration 5m",
    }
}

async fn kubeadm(c: &TestCluster, release: &str, cni: &str, cgroupv1: bool) -> Result<()> {
    let etcd = c.new_machine(Some(kube_etcd_config())).await?;
    start_etcd(&etcd).await?;
    cluster_health(&etcd, 1).await?;
    let endpoint = format!("http://{}:2379", private_ip(&etcd)?);
    let install = KUBE_INSTALL_SH.replace("@RELEASE@", release);
    let master = c
        .new_machine(Some(kube_node_config(&install, cgroupv1)))
        .await?;
    master.must_ssh("sudo /home/core/install.sh").await?;
    let mip = private_ip(&master)?;
    let init = format!(
        r#"set -eux
cat >/tmp/kubeadm.yaml <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {mip}
nodeRegistration:
  kubeletExtraArgs:
  - name: volume-plugin-dir
    value: /opt/libexec/kubernetes/kubelet-plugins/volume/exec/
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {release}
networking:
  podSubnet: 192.168.0.0/17
etcd:
  external:
    endpoints: [{endpoint}]
controllerManager:
  extraArgs:
  - name: flex-volume-plugin-dir
    value: /opt/libexec/kubernetes/kubelet-plugins/volume/exec/
EOF
sudo /opt/bin/kubeadm init --config /tmp/kubeadm.yaml >/tmp/kubeadm-init.log 2>&1 || {{ cat /tmp/kubeadm-init.log; exit 1; }}
mkdir -p $HOME/.kube && sudo cp /etc/kubernetes/admin.conf $HOME/.kube/config && sudo chown $(id -u):$(id -g) $HOME/.kube/config
export PATH=$PATH:/opt/bin
{cni}
"#,
        cni = cni_manifest(cni)
    );
    master.must_ssh(&init).await?;
    let join = master
        .must_ssh("sudo /opt/bin/kubeadm token create --print-join-command")
        .await?;
    let worker = c
        .new_machine(Some(kube_node_config(&install, cgroupv1)))
        .await?;
    worker.must_ssh("sudo /home/core/install.sh").await?;
    worker.must_ssh(&format!("sudo /opt/bin/{join}")).await?;
    let kubectl = "PATH=$PATH:/opt/bin kubectl";
    c.run("node readiness", |_| async {
        retry(36, Duration::from_secs(5), || async {
            let n = master
                .must_ssh(&format!("{kubectl} get nodes | grep ' Ready' | wc -l"))
                .await?;
            if n != "2" {
                bail!("{n} nodes ready, expected 2");
            }
            Ok(())
        })
        .await
    })
    .await;
    c.run("nginx deployment", |_| async {
        master
            .must_ssh(&format!(
                "{kubectl} create deployment nginx --image=ghcr.io/flatcar/nginx"
            ))
            .await?;
        retry(36, Duration::from_secs(5), || async {
            let n = master
                .must_ssh(&format!(
                    "{kubectl} get deployment nginx -o jsonpath='{{.status.readyReplicas}}'"
                ))
                .await?;
            if n != "1" {
                bail!("{n:?} nginx replicas ready, expected 1");
            }
            Ok(())
        })
        .await
    })
    .await;
    c.run("NFS deployment", |_| async {
        master
            .must_ssh(&format!(
                r#"set -e
export PATH=$PATH:/opt/bin
helm repo add nfs-ganesha-server-and-external-provisioner https://kubernetes-sigs.github.io/nfs-ganesha-server-and-external-provisioner/
helm install nfs-server-provisioner nfs-ganesha-server-and-external-provisioner/nfs-server-provisioner --set 'storageClass.mountOptions={{nfsvers=4.2}}'
{kubectl} apply -f - <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: test-dynamic-volume-claim
spec:
  storageClassName: nfs
  accessModes: [ReadWriteMany]
  resources:
    requests:
      storage: 100Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: test-pod-1
spec:
  containers:
  - name: test
    image: ghcr.io/flatcar/nginx
    volumeMounts:
    - name: config
      mountPath: /test
  volumes:
  - name: config
    persistentVolumeClaim:
      claimName: test-dynamic-volume-claim
EOF"#
            ))
            .await?;
        retry(36, Duration::from_secs(5), || async {
            let r = master
                .must_ssh(&format!(
                    "{kubectl} get pod/test-pod-1 -o jsonpath='{{.status.containerStatuses[?(@.name==\"test\")].ready}}'"
                ))
                .await?;
            if r != "true" {
                bail!("the NFS-backed pod is not ready: {r:?}");
            }
            Ok(())
        })
        .await
    })
    .await;
    if cni == "cilium" {
        c.run("IPSec encryption", |_| async {
            master
                .must_ssh("set -e; export PATH=$PATH:/opt/bin; kubectl create -n kube-system secret generic cilium-ipsec-keys --from-literal=keys=\"3 rfc4106(gcm(aes)) $(echo $(dd if=/dev/urandom count=20 bs=1 2>/dev/null | xxd -p -c 64)) 128\"; cilium upgrade --reuse-values --set encryption.enabled=true --set encryption.type=ipsec; cilium status --wait --wait-duration 5m")
                .await?;
            Ok(())
        })
        .await;
    }
    Ok(())
}
