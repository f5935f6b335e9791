//! A platform that boots nothing: machines exist at once, in-process, with no SSH.
//!
//! For benchmarks of the harness itself (scheduling and reports for 10,000 tests) and for
//! tests of the scheduler's machine handling (sharing, templates) without QEMU. Its
//! machines have no sshd, so tests on it set `no_ssh_key_in_user_data` (the harness then
//! does not wait for SSH) or use no machine at all. It counts what it was asked to do.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::arch::Arch;
use crate::image::ImageInfo;
use crate::platform::{
    Cluster, ClusterSpec, Machine, MachineSpec, Platform, PlatformError, Template,
};

/// What an [`InstantPlatform`] was asked to do.
#[derive(Debug, Default)]
pub struct InstantCounts {
    /// Clusters created.
    pub clusters: AtomicU64,
    /// Machines booted (`new_machine`).
    pub booted: AtomicU64,
    /// Machines restored from a template.
    pub restored: AtomicU64,
    /// Templates made.
    pub templates: AtomicU64,
    /// Machines destroyed.
    pub destroyed: AtomicU64,
}

/// The instant platform.
#[derive(Debug, Clone)]
pub struct InstantPlatform {
    image: ImageInfo,
    snapshots: bool,
    counts: Arc<InstantCounts>,
}

impl Default for InstantPlatform {
    fn default() -> Self {
        InstantPlatform::new()
    }
}

impl InstantPlatform {
    /// A platform named `instant` for amd64, without snapshots.
    pub fn new() -> InstantPlatform {
        InstantPlatform {
            image: ImageInfo {
                path: PathBuf::from("instant"),
                manifest: None,
                arch: Some(Arch::Amd64),
                version: None,
                provides: BTreeSet::new(),
                provides_from: Default::default(),
            },
            snapshots: false,
            counts: Arc::new(InstantCounts::default()),
        }
    }

    /// Also "supports" snapshots: templates are directories with one marker file.
    pub fn with_snapshots(mut self) -> InstantPlatform {
        self.snapshots = true;
        self
    }

    /// What it was asked to do so far.
    pub fn counts(&self) -> &Arc<InstantCounts> {
        &self.counts
    }
}

#[async_trait]
impl Platform for InstantPlatform {
    fn name(&self) -> &str {
        "instant"
    }
    fn arch(&self) -> Arch {
        Arch::Amd64
    }
    fn image(&self) -> &ImageInfo {
        &self.image
    }
    fn capabilities(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }
    async fn new_cluster(&self, _spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        self.counts.clusters.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(InstantCluster {
            counts: self.counts.clone(),
            snapshots: self.snapshots,
            machines: Mutex::new(Vec::new()),
        }))
    }
    fn supports_snapshots(&self) -> bool {
        self.snapshots
    }
}

struct InstantCluster {
    counts: Arc<InstantCounts>,
    snapshots: bool,
    machines: Mutex<Vec<Arc<InstantMachine>>>,
}

impl InstantCluster {
    fn add(&self, spec: &MachineSpec, from: Option<&Template>) -> Arc<dyn Machine> {
        let m = Arc::new(InstantMachine {
            id: spec.id.clone(),
            template: from.cloned(),
            counts: Some(self.counts.clone()),
            destroyed: AtomicBool::new(false),
        });
        self.machines.lock().expect("poisoned").push(m.clone());
        m
    }
}

#[async_trait]
impl Cluster for InstantCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        self.counts.booted.fetch_add(1, Ordering::Relaxed);
        Ok(self.add(&spec, None))
    }
    async fn restore_machine(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<dyn Machine>, PlatformError> {
        if !self.snapshots || !template.dir.join("template").exists() {
            return Err(PlatformError::Machine(format!(
                "no template in {}",
                template.dir.display()
            )));
        }
        self.counts.restored.fetch_add(1, Ordering::Relaxed);
        Ok(self.add(&spec, Some(template)))
    }
    async fn destroy(&self) -> Result<(), PlatformError> {
        let machines = std::mem::take(&mut *self.machines.lock().expect("poisoned"));
        for m in machines {
            m.destroy().await?;
        }
        Ok(())
    }
}

/// A machine of the instant platform.
#[derive(Debug)]
pub struct InstantMachine {
    id: String,
    template: Option<Template>,
    counts: Option<Arc<InstantCounts>>,
    destroyed: AtomicBool,
}

impl InstantMachine {
    /// A machine on its own (outside any cluster), e.g. for template tests.
    pub fn standalone(id: &str, template: Option<Template>) -> Arc<dyn Machine> {
        Arc::new(InstantMachine {
            id: id.to_string(),
            template,
            counts: None,
            destroyed: AtomicBool::new(false),
        })
    }

    /// The template it was restored from.
    pub fn template(&self) -> Option<&Template> {
        self.template.as_ref()
    }
}

#[async_trait]
impl Machine for InstantMachine {
    fn id(&self) -> &str {
        &self.id
    }
    fn ssh_addr(&self) -> SocketAddr {
        // Nothing listens on port 1: an SSH attempt is refused at once.
        SocketAddr::from(([127, 0, 0, 1], 1))
    }
    fn private_ip(&self) -> Option<IpAddr> {
        None
    }
    async fn console_output(&self) -> Result<String, PlatformError> {
        Ok(String::new())
    }
    async fn is_running(&self) -> bool {
        !self.destroyed.load(Ordering::SeqCst)
    }
    async fn destroy(&self) -> Result<(), PlatformError> {
        if !self.destroyed.swap(true, Ordering::SeqCst) {
            if let Some(c) = &self.counts {
                c.destroyed.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
    async fn keep(&self) -> Result<serde_json::Value, PlatformError> {
        Ok(serde_json::json!({ "platform": "instant", "id": self.id }))
    }
    async fn make_template(&self, dir: &Path) -> Result<Template, PlatformError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| PlatformError::io(format!("creating {}", dir.display()), e))?;
        std::fs::write(dir.join("template"), &self.id)
            .map_err(|e| PlatformError::io(format!("writing {}", dir.display()), e))?;
        if let Some(c) = &self.counts {
            c.templates.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Template {
            id: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            dir: dir.to_path_buf(),
        })
    }
}
