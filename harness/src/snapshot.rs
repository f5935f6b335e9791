//! Snapshot fast start: machines of one first-boot config share a template.
//!
//! The first machine of a config boots cold; once SSH works and systemd has settled, the
//! platform freezes it into a [`Template`] (it keeps running for its own test). Every
//! further machine of that config is restored from the template: its own disk layer, SSH
//! port and console, the template's memory. Tests that change their machine in lasting ways
//! do not leak into the next test, because each machine is its own copy.
//!
//! Which machines qualify: the one machine of a `cluster_size == 1` test, unless the test
//! `needs_first_boot`, has extra disks, or brings its own SSH access. Machines a test boots
//! itself (`TestCluster::new_machine`) always boot cold, as do all machines of larger
//! clusters: restored copies share the template's machine-id, boot id, SSH host keys and
//! private-network address, which tests of several machines would notice.
//!
//! A restored guest's clock stands where the template's stood when frozen; the harness sets
//! it from the host's clock (`date -s`) right after the first SSH login.
//!
//! Templates live under `<out>/.templates/` and are removed when the run ends, also when it
//! is interrupted ([`remove_all_templates_now`] for the last-resort exit path).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::platform::{Cluster, Machine, MachineSpec, Platform, PlatformError, Template};

/// The directory under the run's output dir that holds templates while the run lasts.
pub const TEMPLATES_DIR: &str = ".templates";

/// How often a config's template may fail to be made before its machines stop trying.
const MAX_BUILD_FAILURES: u32 = 2;

/// Every template root of this process, for [`remove_all_templates_now`].
static ROOTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every template directory of this process at once (synchronously): for exit
/// paths that skip the orderly teardown, such as a second Ctrl-C.
pub fn remove_all_templates_now() {
    let roots = std::mem::take(&mut *ROOTS.lock().unwrap_or_else(|p| p.into_inner()));
    for r in roots {
        let _ = std::fs::remove_dir_all(r);
    }
}

/// The key under which machines share a template: everything that shapes a machine's
/// first boot (the rendered config with the run's key, memory, vCPUs, disks, kernel args).
pub fn template_key(spec: &MachineSpec) -> String {
    format!(
        "mem={:?};cpus={:?};disks={:?};primary={:?};nics={};kargs={:?};firstboot={:?};tpm={};ign={}",
        spec.memory_mb,
        spec.cpus,
        spec.extra_disks,
        spec.primary_disk_gib,
        spec.extra_nics,
        spec.kernel_args,
        spec.first_boot_kernel_args,
        spec.tpm,
        spec.ignition
    )
}

/// Counts of how machines came up in a run (for the summary line and `bogie bench`).
#[derive(Debug, Default)]
pub struct BootStats {
    cold: AtomicU64,
    restored: AtomicU64,
    reused: AtomicU64,
    templates: AtomicU64,
}

/// A copy of [`BootStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootCounts {
    /// Machines booted from scratch.
    pub cold: u64,
    /// Machines restored from a template.
    pub restored: u64,
    /// Tests that ran on a machine an earlier test handed over (no machine started).
    pub reused: u64,
    /// Templates made.
    pub templates: u64,
}

impl BootCounts {
    /// Machines started either way.
    pub fn started(&self) -> u64 {
        self.cold + self.restored
    }
}

impl BootStats {
    /// A copy of the counts now.
    pub fn counts(&self) -> BootCounts {
        BootCounts {
            cold: self.cold.load(Ordering::Relaxed),
            restored: self.restored.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            templates: self.templates.load(Ordering::Relaxed),
        }
    }
    pub(crate) fn add_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_template(&self) {
        self.templates.fetch_add(1, Ordering::Relaxed);
    }
}

/// Wraps a platform cluster to count the machines it starts.
pub(crate) struct CountingCluster {
    pub(crate) inner: Arc<dyn Cluster>,
    pub(crate) stats: Arc<BootStats>,
}

#[async_trait]
impl Cluster for CountingCluster {
    async fn new_machine(&self, spec: MachineSpec) -> Result<Arc<dyn Machine>, PlatformError> {
        let m = self.inner.new_machine(spec).await?;
        self.stats.cold.fetch_add(1, Ordering::Relaxed);
        Ok(m)
    }
    async fn restore_machine(
        &self,
        spec: MachineSpec,
        template: &Template,
    ) -> Result<Arc<dyn Machine>, PlatformError> {
        let m = self.inner.restore_machine(spec, template).await?;
        self.stats.restored.fetch_add(1, Ordering::Relaxed);
        Ok(m)
    }
    async fn destroy(&self) -> Result<(), PlatformError> {
        self.inner.destroy().await
    }
}

#[derive(Debug, Clone)]
enum Slot {
    /// A machine of this config is booting to become the template (after this many
    /// failed attempts).
    Building(u32),
    Ready(Template),
    /// Making it failed this many times (building again is allowed below the limit).
    Failed(u32),
}

/// The run's templates, one per first-boot config.
pub struct Templates {
    platform: Arc<dyn Platform>,
    root: PathBuf,
    slots: Mutex<HashMap<String, Slot>>,
    changed: Notify,
    seq: AtomicU64,
    stats: Option<Arc<BootStats>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// What a machine of a config should do, from [`Templates::claim`].
#[derive(Debug)]
pub enum Claim {
    /// Start from this template.
    Restore(Template),
    /// Boot cold, then make the template ([`Builder::finish`]).
    Build(Builder),
    /// Boot cold (making this config's template failed).
    Cold,
}

/// The duty to make a config's template. Dropped unfinished (the machine never came up),
/// it lets another machine of the config try.
#[derive(Debug)]
pub struct Builder {
    templates: Arc<Templates>,
    key: String,
    done: bool,
}

impl Templates {
    /// A registry keeping its templates under `root` (created as needed, removed by
    /// [`Templates::cleanup`]).
    pub fn new(
        platform: Arc<dyn Platform>,
        root: PathBuf,
        stats: Option<Arc<BootStats>>,
    ) -> Arc<Templates> {
        ROOTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(root.clone());
        Arc::new(Templates {
            platform,
            root,
            slots: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            seq: AtomicU64::new(0),
            stats,
        })
    }

    /// Where the templates live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What a machine with template key `key` should do. While another machine of the same
    /// config is becoming the template this waits (a restore after the wait is still far
    /// quicker than a second cold boot competing for the same cores).
    pub async fn claim(self: &Arc<Self>, key: &str) -> Claim {
        loop {
            let wait = self.changed.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            {
                let mut slots = self.slots.lock().expect("poisoned");
                match slots.get(key).cloned() {
                    Some(Slot::Ready(t)) => return Claim::Restore(t),
                    Some(Slot::Failed(n)) if n >= MAX_BUILD_FAILURES => return Claim::Cold,
                    Some(Slot::Building(_)) => {}
                    None | Some(Slot::Failed(_)) => {
                        let failures = match slots.get(key) {
                            Some(Slot::Failed(n)) => *n,
                            _ => 0,
                        };
                        slots.insert(key.to_string(), Slot::Building(failures));
                        return Claim::Build(Builder {
                            templates: self.clone(),
                            key: key.to_string(),
                            done: false,
                        });
                    }
                }
            }
            wait.await;
        }
    }

    /// The templates made so far.
    pub fn ready(&self) -> Vec<Template> {
        self.slots
            .lock()
            .expect("poisoned")
            .values()
            .filter_map(|s| match s {
                Slot::Ready(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    /// Removes every template (files and directory). Machines restored from them keep
    /// running (they hold their files open), so this is safe with kept machines too.
    pub fn cleanup(&self) {
        self.slots.lock().expect("poisoned").clear();
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("removing templates {}: {e}", self.root.display());
            }
        }
        ROOTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r != &self.root);
    }

    fn settle(&self, key: &str, slot: Slot) {
        self.slots
            .lock()
            .expect("poisoned")
            .insert(key.to_string(), slot);
        self.changed.notify_waiters();
    }
}

impl Drop for Templates {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Builder {
    /// Freezes `machine` (ready: SSH works, systemd settled) into the config's template.
    /// Failing leaves the machine as it was for its test; the config's other machines then
    /// try again or boot cold.
    pub async fn finish(mut self, machine: &dyn Machine) -> Result<Template, PlatformError> {
        self.done = true;
        let t = &self.templates;
        let n = t.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = t.root.join(format!("t{n}"));
        let started = Instant::now();
        match machine.make_template(&dir).await {
            Ok(template) => {
                tracing::info!(
                    machine = machine.id(),
                    template = %template.id,
                    "template made in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                if let Some(s) = &t.stats {
                    s.add_template();
                }
                t.settle(&self.key, Slot::Ready(template.clone()));
                Ok(template)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                self.fail();
                Err(e)
            }
        }
    }

    fn fail(&self) {
        let t = &self.templates;
        let n = match t.slots.lock().expect("poisoned").get(&self.key) {
            Some(Slot::Failed(n) | Slot::Building(n)) => *n,
            _ => 0,
        };
        t.settle(&self.key, Slot::Failed(n + 1));
    }

    /// Whether the platform can make templates at all.
    pub fn supported(&self) -> bool {
        self.templates.platform.supports_snapshots()
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        if !self.done {
            self.fail();
        }
    }
}

/// The shell command that sets a restored guest's clock to the host's time now.
pub(crate) fn clock_command() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!(
        "sudo date -u -s @{}.{:09} >/dev/null && (sudo systemctl try-restart systemd-timesyncd.service 2>/dev/null || true)",
        now.as_secs(),
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instant::InstantPlatform;

    fn registry(dir: &Path) -> Arc<Templates> {
        let p: Arc<dyn Platform> = Arc::new(InstantPlatform::new().with_snapshots());
        Templates::new(p, dir.join(".templates"), None)
    }

    fn machine(id: &str) -> Arc<dyn Machine> {
        crate::instant::InstantMachine::standalone(id, None)
    }

    #[tokio::test]
    async fn one_build_per_config_and_waiters_restore() {
        let d = tempfile::tempdir().unwrap();
        let t = registry(d.path());
        let Claim::Build(b) = t.claim("a").await else {
            panic!("first claim builds")
        };
        // A second machine of the same config waits for the template.
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.claim("a").await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        // Another config builds its own.
        assert!(matches!(t.claim("b").await, Claim::Build(_)));
        let made = b.finish(machine("m1").as_ref()).await.unwrap();
        match waiter.await.unwrap() {
            Claim::Restore(x) => assert_eq!(x, made),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.claim("a").await, Claim::Restore(_)));
        assert!(made.dir.starts_with(t.root()));
        assert!(made.dir.exists());
        t.cleanup();
        assert!(!t.root().exists());
    }

    #[tokio::test]
    async fn a_failed_build_lets_another_machine_try_then_gives_up() {
        let d = tempfile::tempdir().unwrap();
        let t = registry(d.path());
        let Claim::Build(b) = t.claim("a").await else {
            panic!()
        };
        let t2 = t.clone();
        let waiter = tokio::spawn(async move { t2.claim("a").await });
        drop(b); // the machine never came up
        let Claim::Build(b2) = waiter.await.unwrap() else {
            panic!("a waiter takes over the build")
        };
        drop(b2);
        assert!(matches!(t.claim("a").await, Claim::Cold));
    }

    #[test]
    fn the_clock_command_carries_the_host_time() {
        let c = clock_command();
        assert!(c.starts_with("sudo date -u -s @"), "{c}");
        let secs: u64 = c["sudo date -u -s @".len()..]
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs > 1_700_000_000);
    }
}
