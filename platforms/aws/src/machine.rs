//! EC2 clusters and machines: launch, wait for running, console, terminate, keep; the
//! run-wide key pair and security group.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, InstanceStateName, InstanceType, IpPermission, IpRange,
    ResourceType,
};
use base64::Engine;
use bogie_harness::{Cluster, ClusterSpec, Machine, MachineSpec, PlatformError};
use bogie_platform_common::ignition::{ssh_keys, write_console};
use bogie_platform_common::tags::sanitize_name;
use serde_json::json;

use crate::{api_err, err_code, tag_spec, Inner};

const RUNNING: u8 = 0;
const KEPT: u8 = 1;
const DESTROYED: u8 = 2;

/// How often instance state is polled.
const POLL: Duration = Duration::from_secs(3);
/// How long shutdown waits for terminated instances before deleting the security group.
const TERMINATE_WAIT: Duration = Duration::from_secs(600);

fn machine_err(msg: impl Into<String>) -> PlatformError {
    PlatformError::Machine(msg.into())
}

/// Imports the run's SSH key once (the first machine's config names it).
async fn ensure_key_pair(
    inner: &Inner,
    spec: &MachineSpec,
) -> Result<Option<String>, PlatformError> {
    inner
        .key_pair
        .get_or_try_init(|| async {
            let Some((_, key)) = ssh_keys(&spec.ignition).into_iter().next() else {
                return Ok(None);
            };
            let name = inner.tags.name(&[], 255);
            inner
                .client
                .import_key_pair()
                .key_name(&name)
                .public_key_material(Blob::new(key.as_bytes()))
                .tag_specifications(tag_spec(&inner.tags, ResourceType::KeyPair, &name))
                .send()
                .await
                .map_err(|e| api_err("ImportKeyPair", e))?;
            tracing::info!(key_pair = %name, "imported the run's SSH key");
            Ok(Some(name))
        })
        .await
        .cloned()
}

/// Creates the run's security group (SSH from anywhere) once, unless `--aws-sg` gave one.
async fn ensure_security_group(inner: &Inner) -> Result<String, PlatformError> {
    inner
        .security_group
        .get_or_try_init(|| async {
            let name = inner.tags.name(&[], 255);
            let mut req = inner
                .client
                .create_security_group()
                .group_name(&name)
                .description(format!("bogie run {}: SSH in", inner.tags.run))
                .tag_specifications(tag_spec(&inner.tags, ResourceType::SecurityGroup, &name));
            if let Some(subnet) = &inner.opts.subnet {
                if let Some(vpc) = subnet_vpc(inner, subnet).await? {
                    req = req.vpc_id(vpc);
                }
            }
            let out = req
                .send()
                .await
                .map_err(|e| api_err("CreateSecurityGroup", e))?;
            let id = out
                .group_id()
                .ok_or_else(|| machine_err("CreateSecurityGroup returned no group id"))?
                .to_string();
            *inner.created_group.lock().expect("poisoned") = Some(id.clone());
            let auth = inner
                .client
                .authorize_security_group_ingress()
                .group_id(&id)
                .ip_permissions(
                    IpPermission::builder()
                        .ip_protocol("tcp")
                        .from_port(22)
                        .to_port(22)
                        .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                        .build(),
                )
                .send()
                .await;
            if let Err(e) = auth {
                return Err(api_err("AuthorizeSecurityGroupIngress", e));
            }
            tracing::info!(security_group = %id, "created the run's security group");
            Ok(id)
        })
        .await
        .cloned()
}

async fn subnet_vpc(inner: &Inner, subnet: &str) -> Result<Option<String>, PlatformError> {
    let out = inner
        .client
        .describe_subnets()
        .subnet_ids(subnet)
        .send()
        .await
        .map_err(|e| api_err("DescribeSubnets", e))?;
    Ok(out
        .subnets()
        .first()
        .and_then(|s| s.vpc_id())
        .map(str::to_string))
}

/// The state and address of an instance.
pub(crate) async fn describe(
    inner: &Inner,
    id: &str,
) -> Result<(Option<InstanceStateName>, Option<IpAddr>), PlatformError> {
    let out = inner
        .client
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| api_err("DescribeInstances", e))?;
    let inst = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id));
    let Some(inst) = inst else {
        return Ok((None, None));
    };
    let state = inst.state().and_then(|s| s.name()).cloned();
    let ip = inst
        .public_ip_address()
        .or(inst.private_ip_address())
        .and_then(|s| s.parse().ok());
    Ok((state, ip))
}

/// An EC2 cluster: the instances of one test attempt.
pub struct AwsCluster {
    inner: Arc<Inner>,
    spec: ClusterSpec,
    machines: Mutex<Vec<Arc<AwsMachine>>>,
}

impl std::fmt::Debug for AwsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCluster")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl AwsCluster {
    pub(crate) fn new(inner: Arc<Inner>, spec: ClusterSpec) -> AwsCluster {
        AwsCluster {
            inner,
            spec,
            machines: Mutex::new(Vec::new()),
        }
    }

    /// Launches an instance and waits until it runs; returns it with its concrete type.
    pub async fn launch(&self, spec: MachineSpec) -> Result<Arc<AwsMachine>, PlatformError> {
        let inner = &self.inner;
        // kola's NoSSHKeyInMetadata: the instance gets no key pair, so only what its
        // Ignition config installs lets the harness in.
        let key = if spec.no_ssh_key_in_metadata {
            None
        } else {
            ensure_key_pair(inner, &spec).await?
        };
        let sg = ensure_security_group(inner).await?;
        let name = sanitize_name(
            &format!(
                "{}-{}-{}",
                inner.tags.name(&[], 255),
                self.spec.name,
                spec.id
            ),
            255,
        );
        let user_data = base64::engine::general_purpose::STANDARD.encode(spec.ignition.as_bytes());
        let mut req = inner
            .client
            .run_instances()
            .image_id(&inner.opts.ami)
            .instance_type(InstanceType::from(inner.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .security_group_ids(&sg)
            .user_data(user_data)
            .tag_specifications(tag_spec(&inner.tags, ResourceType::Instance, &name))
            .tag_specifications(tag_spec(&inner.tags, ResourceType::Volume, &name));
        if let Some(k) = &key {
            req = req.key_name(k);
        }
        if let Some(p) = &inner.opts.iam_profile {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        if let Some(s) = &inner.opts.subnet {
            req = req.subnet_id(s);
        }
        let out = req.send().await.map_err(|e| api_err("RunInstances", e))?;
        let id = out
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .ok_or_else(|| machine_err("RunInstances returned no instance"))?
            .to_string();
        inner
            .launched
            .lock()
            .expect("poisoned")
            .push((id.clone(), false));
        tracing::info!(machine = %spec.id, instance = %id, "launched");
        let mut machine = AwsMachine {
            inner: inner.clone(),
            id: spec.id.clone(),
            instance_id: id.clone(),
            addr: SocketAddr::from(([0, 0, 0, 0], 22)),
            private_ip: None,
            dir: spec.dir.clone(),
            console: Mutex::new(String::new()),
            state: AtomicU8::new(RUNNING),
        };
        // Wait for `running` and an address; terminate on failure (also when the future
        // is dropped: the guard terminates in a background task).
        let guard = TerminateGuard {
            inner: Some(inner.clone()),
            id: id.clone(),
        };
        let start = Instant::now();
        let ip = loop {
            let (state, ip) = describe(inner, &id).await?;
            match (state, ip) {
                (Some(InstanceStateName::Running), Some(ip)) => break ip,
                (
                    Some(
                        s @ (InstanceStateName::Terminated
                        | InstanceStateName::ShuttingDown
                        | InstanceStateName::Stopped
                        | InstanceStateName::Stopping),
                    ),
                    _,
                ) => {
                    let console = machine.fetch_console().await.unwrap_or_default();
                    write_console(&machine.dir, &console);
                    return Err(machine_err(format!(
                        "instance {id} went to {} before running",
                        s.as_str()
                    )));
                }
                _ => {}
            }
            if start.elapsed() > inner.opts.running_timeout {
                return Err(machine_err(format!(
                    "instance {id} did not reach running within {}s",
                    inner.opts.running_timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        };
        guard.disarm();
        machine.addr = SocketAddr::new(ip, 22);
        machine.private_ip = private_ip(inner, &id).await;
        let m = Arc::new(machine);
        self.machines.lock().expect("poisoned").push(m.clone());
        Ok(m)
    }
}

async fn private_ip(inner: &Inner, id: &str) -> Option<IpAddr> {
    let out = inner
        .client
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .ok()?;
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id))
        .and_then(|i| i.private_ip_address())
        .and_then(|s| s.parse().ok())
}

/// Terminates an instance whose launch did not complete.
struct TerminateGuard {
    inner: Option<Arc<Inner>>,
    id: String,
}

impl TerminateGuard {
    fn disarm(mut self) {
        self.inner = None;
    }
}

impl Drop for TerminateGuard {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = inner.client.terminate_instances().instance_ids(&id).send().await {
                    tracing::warn!(instance = %id, error = %api_err("TerminateInstances", e), "terminating a failed launch");
                }
            });
        }
    }
}

#[async_trait]
impl Cluster for AwsCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        Ok(self.launch(spec).await?)
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        let machines: Vec<Arc<AwsMachine>> = self.machines.lock().expect("poisoned").clone();
        let results = futures::future::join_all(machines.iter().map(|m| m.destroy())).await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(())
    }
}

/// An EC2 instance.
pub struct AwsMachine {
    inner: Arc<Inner>,
    id: String,
    instance_id: String,
    addr: SocketAddr,
    private_ip: Option<IpAddr>,
    dir: PathBuf,
    console: Mutex<String>,
    state: AtomicU8,
}

impl std::fmt::Debug for AwsMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsMachine")
            .field("id", &self.id)
            .field("instance", &self.instance_id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AwsMachine {
    /// The EC2 instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    async fn fetch_console(&self) -> Result<String, PlatformError> {
        let out = self
            .inner
            .client
            .get_console_output()
            .instance_id(&self.instance_id)
            .latest(true)
            .send()
            .await
            .map_err(|e| api_err("GetConsoleOutput", e))?;
        let Some(b64) = out.output() else {
            return Ok(String::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .unwrap_or_else(|_| b64.as_bytes().to_vec());
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[async_trait]
impl Machine for AwsMachine {
    fn id(&self) -> &str {
        &self.id
    }

    fn ssh_addr(&self) -> SocketAddr {
        self.addr
    }

    fn private_ip(&self) -> Option<IpAddr> {
        self.private_ip
    }

    async fn console_output(&self) -> Result<String, PlatformError> {
        if self.state.load(Ordering::SeqCst) != DESTROYED {
            match self.fetch_console().await {
                // EC2 keeps only the latest output; keep the longest seen.
                Ok(c) if c.len() >= self.console.lock().expect("poisoned").len() => {
                    *self.console.lock().expect("poisoned") = c;
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(machine = %self.id, error = %e, "console output"),
            }
        }
        let c = self.console.lock().expect("poisoned").clone();
        write_console(&self.dir, &c);
        Ok(c)
    }

    async fn is_running(&self) -> bool {
        if self.state.load(Ordering::SeqCst) == DESTROYED {
            return false;
        }
        match describe(&self.inner, &self.instance_id).await {
            Ok((Some(InstanceStateName::Running | InstanceStateName::Pending), _)) => true,
            Ok(_) => false,
            // An API hiccup is not proof the instance died.
            Err(_) => true,
        }
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, DESTROYED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(());
        }
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(30), self.fetch_console()).await
        {
            let mut cur = self.console.lock().expect("poisoned");
            if c.len() >= cur.len() {
                *cur = c;
            }
        }
        write_console(&self.dir, &self.console.lock().expect("poisoned"));
        match self
            .inner
            .client
            .terminate_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(machine = %self.id, instance = %self.instance_id, "terminating");
                Ok(())
            }
            Err(e) if err_code(&e) == "InvalidInstanceID.NotFound" => Ok(()),
            Err(e) => Err(api_err("TerminateInstances", e)),
        }
    }

    async fn keep(&self) -> Result<serde_json::Value, PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, KEPT, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(machine_err(format!(
                "machine {} is already torn down",
                self.id
            )));
        }
        for (id, kept) in self.inner.launched.lock().expect("poisoned").iter_mut() {
            if *id == self.instance_id {
                *kept = true;
            }
        }
        let region = self
            .inner
            .client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        Ok(json!({
            "platform": "aws",
            "id": self.id,
            "instance_id": self.instance_id,
            "region": region,
            "ssh": self.addr.to_string(),
            "run": self.inner.tags.run,
            "down": format!("aws ec2 terminate-instances --region {region} --instance-ids {}", self.instance_id),
        }))
    }
}

/// Waits until the run's (not kept) instances are terminated, then deletes the security
/// group the run created and the key pair.
pub(crate) async fn shutdown(inner: &Inner) -> Result<(), PlatformError> {
    let mut errors = Vec::new();
    let owned = inner.owned_instances();
    let any_kept = inner
        .launched
        .lock()
        .expect("poisoned")
        .iter()
        .any(|(_, k)| *k);
    if !owned.is_empty() {
        // Terminate anything still alive (a machine whose cluster was never destroyed).
        let alive = owned.clone();
        if let Err(e) = inner
            .client
            .terminate_instances()
            .set_instance_ids(Some(alive))
            .send()
            .await
        {
            if err_code(&e) != "InvalidInstanceID.NotFound" {
                errors.push(api_err("TerminateInstances", e).to_string());
            }
        }
        let start = Instant::now();
        loop {
            let out = inner
                .client
                .describe_instances()
                .set_instance_ids(Some(owned.clone()))
                .send()
                .await;
            let done = match out {
                Ok(o) => o
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .all(|i| {
                        i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated)
                    }),
                Err(e) if err_code(&e) == "InvalidInstanceID.NotFound" => true,
                Err(e) => {
                    errors.push(api_err("DescribeInstances", e).to_string());
                    true
                }
            };
            if done {
                break;
            }
            if start.elapsed() > TERMINATE_WAIT {
                errors.push(format!(
                    "instances {} not terminated after {}s",
                    owned.join(" "),
                    TERMINATE_WAIT.as_secs()
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let group = inner.created_group.lock().expect("poisoned").clone();
    if let Some(g) = group {
        if any_kept {
            tracing::warn!(security_group = %g, "kept machines use the run's security group: not deleting it");
        } else {
            // Deleting can fail for a while after termination (network interfaces linger).
            let start = Instant::now();
            loop {
                match inner
                    .client
                    .delete_security_group()
                    .group_id(&g)
                    .send()
                    .await
                {
                    Ok(_) => {
                        tracing::info!(security_group = %g, "deleted");
                        break;
                    }
                    Err(e)
                        if err_code(&e) == "DependencyViolation"
                            && start.elapsed() < Duration::from_secs(300) =>
                    {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) if err_code(&e) == "InvalidGroup.NotFound" => break,
                    Err(e) => {
                        errors.push(api_err("DeleteSecurityGroup", e).to_string());
                        break;
                    }
                }
            }
        }
    }
    if let Some(Some(k)) = inner.key_pair.get() {
        match inner.client.delete_key_pair().key_name(k).send().await {
            Ok(_) => tracing::info!(key_pair = %k, "deleted"),
            Err(e) => errors.push(api_err("DeleteKeyPair", e).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(PlatformError::Api {
            service: crate::SERVICE.into(),
            message: errors.join("; "),
        })
    }
}
