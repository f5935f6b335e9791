//! bogie's REST cloud platforms: Azure Resource Manager ([`azure`]), Google Compute Engine
//! ([`gce`]) and Equinix Metal ([`equinix`]).
//!
//! Each provider implements [`Provider`]: create a machine with the rendered Ignition config
//! as its user data and wait until it runs, read its console, delete it, find leftovers by
//! tag or label. [`CloudPlatform`] turns a provider into bogie's
//! `Platform`/`Cluster`/`Machine`: it tracks every resource as soon as it exists, so a
//! failed or interrupted bring-up is still torn down, and teardown is idempotent.
//!
//! Requests are plain JSON over `reqwest` ([`rest`]), with a base URL that tests point at a
//! local stub checking every request against the provider's published API description.
//! Tokens are [`bogie_platform_common::Secret`]s; API errors are redacted.

pub mod auth;
pub mod azure;
pub mod equinix;
pub mod gce;
pub mod rest;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bogie_harness::{
    Arch, Cluster, ClusterSpec, ImageInfo, Machine, MachineSpec, Platform, PlatformError,
};
use bogie_platform_common::ignition::write_console;
use bogie_platform_common::{GcOptions, GcReport, RunTags};
use serde_json::Value;

/// A machine a provider created.
#[derive(Debug, Clone)]
pub struct Created<H> {
    /// The provider's handle.
    pub handle: H,
    /// Where SSH is reachable.
    pub ssh: SocketAddr,
    /// The private address, when known.
    pub private_ip: Option<IpAddr>,
}

/// A cloud behind bogie's platform traits.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Per-cluster resources (Azure: a resource group with its network).
    type ClusterState: Send + Sync + 'static;
    /// What identifies a machine.
    type Handle: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// kola's platform name.
    fn name(&self) -> &'static str;
    /// Capabilities offered to tests.
    fn capabilities(&self) -> &'static [&'static str];
    /// Creates the cluster's shared resources.
    async fn create_cluster(
        &self,
        tags: &RunTags,
        spec: &ClusterSpec,
    ) -> Result<Self::ClusterState, PlatformError>;
    /// Creates a machine and waits until it runs with an address. `track` must be called
    /// as soon as the resource exists, so a failure after that point still deletes it.
    async fn create_machine(
        &self,
        tags: &RunTags,
        cluster: &Self::ClusterState,
        spec: &MachineSpec,
        track: &(dyn Fn(Self::Handle) + Send + Sync),
    ) -> Result<Created<Self::Handle>, PlatformError>;
    /// The console output so far.
    async fn console(&self, handle: &Self::Handle) -> Result<String, PlatformError>;
    /// Whether the machine still runs (errors count as running).
    async fn is_running(&self, handle: &Self::Handle) -> bool;
    /// Deletes a machine. Deleting one that is gone is not an error.
    async fn delete_machine(
        &self,
        cluster: &Self::ClusterState,
        handle: &Self::Handle,
    ) -> Result<(), PlatformError>;
    /// Deletes the cluster's shared resources; `kept` says whether machines were kept (then
    /// resources they need stay).
    async fn delete_cluster(
        &self,
        cluster: &Self::ClusterState,
        kept: bool,
    ) -> Result<(), PlatformError>;
    /// A JSON description of a kept machine, with how to delete it.
    fn describe(&self, handle: &Self::Handle) -> Value;
    /// Deletes leftovers of crashed runs.
    async fn gc(&self, opts: &GcOptions) -> Result<GcReport, PlatformError>;
}

struct Inner<P: Provider> {
    provider: P,
    arch: Arch,
    image: ImageInfo,
    tags: RunTags,
}

/// A provider as a bogie platform.
pub struct CloudPlatform<P: Provider> {
    inner: Arc<Inner<P>>,
}

impl<P: Provider> Clone for CloudPlatform<P> {
    fn clone(&self) -> Self {
        CloudPlatform {
            inner: self.inner.clone(),
        }
    }
}

impl<P: Provider> std::fmt::Debug for CloudPlatform<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudPlatform")
            .field("provider", &self.inner.provider.name())
            .field("run", &self.inner.tags.run)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> CloudPlatform<P> {
    /// Wraps a provider for a run with this basename.
    pub fn new(provider: P, arch: Arch, image: ImageInfo, basename: &str) -> Self {
        CloudPlatform {
            inner: Arc::new(Inner {
                provider,
                arch,
                image,
                tags: RunTags::new(basename),
            }),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &P {
        &self.inner.provider
    }

    /// The run's tags.
    pub fn run_tags(&self) -> &RunTags {
        &self.inner.tags
    }

    /// Creates a cluster with its concrete type.
    pub async fn cluster(&self, spec: ClusterSpec) -> Result<CloudCluster<P>, PlatformError> {
        let state = self
            .inner
            .provider
            .create_cluster(&self.inner.tags, &spec)
            .await?;
        Ok(CloudCluster {
            inner: self.inner.clone(),
            state: Arc::new(state),
            spec,
            tracked: Arc::new(Mutex::new(Vec::new())),
            machines: Mutex::new(Vec::new()),
            destroyed: AtomicU8::new(0),
        })
    }
}

#[async_trait]
impl<P: Provider> Platform for CloudPlatform<P> {
    fn name(&self) -> &str {
        self.inner.provider.name()
    }

    fn arch(&self) -> Arch {
        self.inner.arch
    }

    fn image(&self) -> &ImageInfo {
        &self.inner.image
    }

    fn capabilities(&self) -> BTreeSet<String> {
        self.inner
            .provider
            .capabilities()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        Ok(Box::new(self.cluster(spec).await?))
    }
}

/// Every machine resource a cluster created, with whether it was kept.
type Tracked<H> = Arc<Mutex<Vec<(H, bool)>>>;

const RUNNING: u8 = 0;
const KEPT: u8 = 1;
const DESTROYED: u8 = 2;

/// The machines of one test attempt on a cloud.
pub struct CloudCluster<P: Provider> {
    inner: Arc<Inner<P>>,
    state: Arc<P::ClusterState>,
    spec: ClusterSpec,
    /// Every machine resource created, with whether it was kept.
    tracked: Tracked<P::Handle>,
    machines: Mutex<Vec<Arc<CloudMachine<P>>>>,
    destroyed: AtomicU8,
}

impl<P: Provider> std::fmt::Debug for CloudCluster<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudCluster")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> CloudCluster<P> {
    /// Creates a machine and returns it with its concrete type.
    pub async fn machine(&self, spec: MachineSpec) -> Result<Arc<CloudMachine<P>>, PlatformError> {
        if self.destroyed.load(Ordering::SeqCst) == DESTROYED {
            return Err(PlatformError::Machine(format!(
                "cluster {} was destroyed",
                self.spec.name
            )));
        }
        let tracked = self.tracked.clone();
        let track = move |h: P::Handle| tracked.lock().expect("poisoned").push((h, false));
        let created = self
            .inner
            .provider
            .create_machine(&self.inner.tags, &self.state, &spec, &track)
            .await?;
        let m = Arc::new(CloudMachine {
            inner: self.inner.clone(),
            cluster: self.state.clone(),
            tracked: self.tracked.clone(),
            id: spec.id.clone(),
            handle: created.handle,
            ssh: created.ssh,
            private_ip: created.private_ip,
            dir: spec.dir.clone(),
            console: Mutex::new(String::new()),
            state: AtomicU8::new(RUNNING),
        });
        self.machines.lock().expect("poisoned").push(m.clone());
        Ok(m)
    }
}

#[async_trait]
impl<P: Provider> Cluster for CloudCluster<P> {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        Ok(self.machine(spec).await?)
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        if self.destroyed.swap(DESTROYED, Ordering::SeqCst) == DESTROYED {
            return Ok(());
        }
        let machines: Vec<Arc<CloudMachine<P>>> = self.machines.lock().expect("poisoned").clone();
        let mut errors = Vec::new();
        for r in futures::future::join_all(machines.iter().map(|m| m.destroy())).await {
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        }
        // Resources whose machine never came up.
        let orphans: Vec<P::Handle> = {
            let known: Vec<String> = machines.iter().map(|m| format!("{:?}", m.handle)).collect();
            self.tracked
                .lock()
                .expect("poisoned")
                .iter()
                .filter(|(h, kept)| !kept && !known.contains(&format!("{h:?}")))
                .map(|(h, _)| h.clone())
                .collect()
        };
        for h in orphans {
            if let Err(e) = self.inner.provider.delete_machine(&self.state, &h).await {
                errors.push(e.to_string());
            }
        }
        let kept = self
            .tracked
            .lock()
            .expect("poisoned")
            .iter()
            .any(|(_, k)| *k);
        if let Err(e) = self.inner.provider.delete_cluster(&self.state, kept).await {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PlatformError::Api {
                service: self.inner.provider.name().to_string(),
                message: errors.join("; "),
            })
        }
    }
}

/// A machine on a cloud.
pub struct CloudMachine<P: Provider> {
    inner: Arc<Inner<P>>,
    cluster: Arc<P::ClusterState>,
    tracked: Tracked<P::Handle>,
    id: String,
    handle: P::Handle,
    ssh: SocketAddr,
    private_ip: Option<IpAddr>,
    dir: PathBuf,
    console: Mutex<String>,
    state: AtomicU8,
}

impl<P: Provider> std::fmt::Debug for CloudMachine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudMachine")
            .field("id", &self.id)
            .field("handle", &self.handle)
            .field("ssh", &self.ssh)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> CloudMachine<P> {
    /// The provider's handle.
    pub fn handle(&self) -> &P::Handle {
        &self.handle
    }

    async fn refresh_console(&self) {
        match self.inner.provider.console(&self.handle).await {
            Ok(c) => {
                let mut cur = self.console.lock().expect("poisoned");
                if c.len() >= cur.len() {
                    *cur = c;
                }
            }
            Err(e) => tracing::debug!(machine = %self.id, error = %e, "console output"),
        }
    }
}

#[async_trait]
impl<P: Provider> Machine for CloudMachine<P> {
    fn id(&self) -> &str {
        &self.id
    }

    fn ssh_addr(&self) -> SocketAddr {
        self.ssh
    }

    fn private_ip(&self) -> Option<IpAddr> {
        self.private_ip
    }

    async fn console_output(&self) -> Result<String, PlatformError> {
        if self.state.load(Ordering::SeqCst) != DESTROYED {
            self.refresh_console().await;
        }
        let c = self.console.lock().expect("poisoned").clone();
        write_console(&self.dir, &c);
        Ok(c)
    }

    async fn is_running(&self) -> bool {
        self.state.load(Ordering::SeqCst) != DESTROYED
            && self.inner.provider.is_running(&self.handle).await
    }

    async fn destroy(&self) -> Result<(), PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, DESTROYED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Ok(());
        }
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(30), self.refresh_console()).await;
        write_console(&self.dir, &self.console.lock().expect("poisoned"));
        self.inner
            .provider
            .delete_machine(&self.cluster, &self.handle)
            .await
    }

    async fn keep(&self) -> Result<Value, PlatformError> {
        if self
            .state
            .compare_exchange(RUNNING, KEPT, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(PlatformError::Machine(format!(
                "machine {} is already torn down",
                self.id
            )));
        }
        let key = format!("{:?}", self.handle);
        for (h, kept) in self.tracked.lock().expect("poisoned").iter_mut() {
            if format!("{h:?}") == key {
                *kept = true;
            }
        }
        let mut v = self.inner.provider.describe(&self.handle);
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), Value::String(self.id.clone()));
            o.insert("ssh".into(), Value::String(self.ssh.to_string()));
            o.insert("run".into(), Value::String(self.inner.tags.run.clone()));
        }
        Ok(v)
    }
}

/// Polls `f` every `every` until it returns `Some`, or fails after `max`.
pub(crate) async fn poll<T, F, Fut>(
    what: &str,
    every: std::time::Duration,
    max: std::time::Duration,
    mut f: F,
) -> Result<T, PlatformError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, PlatformError>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if start.elapsed() > max {
            return Err(PlatformError::Machine(format!(
                "{what}: not done after {}s",
                max.as_secs()
            )));
        }
        tokio::time::sleep(every).await;
    }
}
