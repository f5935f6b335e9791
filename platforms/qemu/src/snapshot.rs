//! Templates: a ready machine frozen once, many machines started from it.
//!
//! Internal snapshots (`savevm`/`-loadvm`) live inside one qcow2 file, which overlays cannot
//! share, and copying a snapshotted overlay per machine costs as long as the restore
//! itself (~200 MiB). So disk and memory are kept apart instead:
//!
//! 1. the ready machine is paused (`stop`);
//! 2. `blockdev-snapshot-sync` moves its writes to a new overlay, so the overlay it booted
//!    on is frozen: that becomes the template's disk;
//! 3. `migrate` to `exec:cat > memory` saves its memory and device state to a file;
//! 4. `cont` resumes it, and its test goes on as if nothing happened.
//!
//! A machine restored from the template gets a new qcow2 overlay on the frozen disk, the
//! same command line as the template (memory, vCPUs, devices, kernel arguments, MAC of the
//! private NIC) except for its own files, SSH port and private-network group, and
//! `-incoming exec:cat memory`. The template was paused when saved, so QEMU waits after
//! loading; [`resume_incoming`] resumes it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bogie_harness::platform::Template;
use bogie_harness::{MachineSpec, PlatformError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cmdline::MachinePlan;
use crate::cmdline::{Boot, Firmware};
use crate::parts::{machine_err, machine_firmware, private_identity, QMP_TIMEOUT};
use crate::qmp::Qmp;
use crate::{BootTemplate, FirmwareTemplate, PlatformInner};

/// The template's description, `template.json` in its directory.
const INFO: &str = "template.json";
/// The frozen disk (qcow2, backed by the image).
const DISK: &str = "disk.qcow2";
/// The saved memory and device state (QEMU's migration stream).
const MEMORY: &str = "memory";
const FORMAT: &str = "bogie-qemu-template/1";
/// How long saving or loading the memory file may take.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);

/// What a restore must repeat of the template's command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TemplateInfo {
    pub format: String,
    /// The machine it was made from.
    pub source: String,
    pub arch: String,
    pub accel: String,
    pub memory_mb: u32,
    pub cpus: u32,
    /// The private NIC's MAC and address (the guest configured them at first boot).
    pub mac: String,
    pub private_ip: Ipv4Addr,
    /// Direct kernel boot: the exact `-append`.
    pub append: Option<String>,
    /// UEFI: the vars store as it was when frozen (file name in the template dir).
    pub efivars: Option<String>,
}

/// A template loaded for one restore.
#[derive(Debug)]
pub(crate) struct Restore {
    pub info: TemplateInfo,
    pub disk: PathBuf,
    memory: PathBuf,
    boot: RestoreBoot,
}

#[derive(Debug)]
enum RestoreBoot {
    Direct(Boot),
    Firmware(FirmwareTemplate),
}

/// Quotes a path for `/bin/sh` (QEMU runs `exec:` migration URIs through it).
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> PlatformError {
    move |e| PlatformError::io(context, e)
}

impl Restore {
    /// `-incoming` for the template's memory file.
    pub fn incoming_uri(&self) -> String {
        format!("exec:cat {}", sh_quote(&self.memory))
    }

    /// The restored machine's boot setup: the template's kernel arguments, or its firmware
    /// with a copy of the template's UEFI vars in the machine's `dir`.
    pub async fn boot(&self, dir: &Path, files: &mut Vec<PathBuf>) -> Result<Boot, PlatformError> {
        Ok(match &self.boot {
            RestoreBoot::Direct(b) => b.clone(),
            RestoreBoot::Firmware(fw) => Boot::Firmware(machine_firmware(fw, dir, files).await?),
        })
    }
}

/// Loads `template` for a restore of `spec` on platform `p`; refuses a template whose
/// machine differs from what `spec` asks (memory, vCPUs, disks, kernel arguments).
pub(crate) fn load(
    template: &Template,
    p: &PlatformInner,
    spec: &MachineSpec,
) -> Result<Restore, PlatformError> {
    let dir = &template.dir;
    let text = std::fs::read_to_string(dir.join(INFO))
        .map_err(io(format!("reading template {}", dir.display())))?;
    let info: TemplateInfo = serde_json::from_str(&text)
        .map_err(|e| machine_err(format!("template {}: {e}", dir.display())))?;
    let refuse = |what: String| {
        Err(machine_err(format!(
            "{}: template {} does not fit: {what}",
            spec.id, template.id
        )))
    };
    if info.format != FORMAT {
        return refuse(format!("format {:?}", info.format));
    }
    if info.arch != p.opts.arch.as_str() || info.accel != p.accel.as_str() {
        return refuse(format!("made for {} under {}", info.arch, info.accel));
    }
    let memory_mb = spec.memory_mb.unwrap_or(p.opts.memory_mb);
    let cpus = spec.cpus.unwrap_or(p.opts.cpus).max(1);
    if (memory_mb, cpus) != (info.memory_mb, info.cpus) {
        return refuse(format!(
            "{memory_mb} MiB/{cpus} vCPUs asked, {} MiB/{} vCPUs saved",
            info.memory_mb, info.cpus
        ));
    }
    if !spec.extra_disks.is_empty() {
        return refuse("extra disks".into());
    }
    if spec.extra_nics > 0 {
        return refuse("extra NICs".into());
    }
    if spec.primary_disk_gib.is_some() {
        return refuse("a primary disk size".into());
    }
    if !spec.first_boot_kernel_args.is_empty() {
        return refuse("first-boot kernel arguments".into());
    }
    let boot = match &p.boot {
        BootTemplate::DirectKernel {
            kernel,
            initrd,
            args,
        } => {
            let append = join_args(args, &spec.kernel_args);
            if info.append.as_deref() != Some(append.as_str()) {
                return refuse(format!("kernel arguments {append:?}"));
            }
            RestoreBoot::Direct(Boot::DirectKernel {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                append,
            })
        }
        BootTemplate::Firmware(fw) => RestoreBoot::Firmware(match (fw, &info.efivars) {
            (
                FirmwareTemplate::Uefi {
                    code, secure_boot, ..
                },
                Some(vars),
            ) => FirmwareTemplate::Uefi {
                code: code.clone(),
                vars: dir.join(vars),
                secure_boot: *secure_boot,
            },
            (FirmwareTemplate::Uefi { .. }, None) => return refuse("no UEFI vars saved".into()),
            (other, _) => other.clone(),
        }),
    };
    Ok(Restore {
        info,
        disk: dir.join(DISK),
        memory: dir.join(MEMORY),
        boot,
    })
}

/// The kernel command line: the image's arguments, then the test's.
pub(crate) fn join_args(base: &str, extra: &[String]) -> String {
    let mut append = base.trim().to_string();
    for a in extra {
        if !append.is_empty() {
            append.push(' ');
        }
        append.push_str(a);
    }
    append
}

/// Waits until `query-migrate` says the operation completed (an error when it failed).
async fn wait_migration(q: &mut Qmp, what: &str) -> Result<(), PlatformError> {
    let deadline = Instant::now() + MIGRATE_TIMEOUT;
    loop {
        let r = q
            .execute("query-migrate", None, QMP_TIMEOUT)
            .await
            .map_err(|e| machine_err(format!("{what}: {e}")))?;
        match r.get("status").and_then(Value::as_str) {
            Some("completed") => return Ok(()),
            Some(s @ ("failed" | "cancelled")) => {
                let why = r.get("error-desc").and_then(Value::as_str).unwrap_or("");
                return Err(machine_err(format!("{what}: migration {s} {why}")));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(machine_err(format!(
                "{what}: not done after {}s",
                MIGRATE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits for an `-incoming` machine to load the template's memory, then resumes it.
pub(crate) async fn resume_incoming(q: &mut Qmp) -> Result<(), PlatformError> {
    wait_migration(q, "loading the memory").await?;
    q.execute("cont", None, QMP_TIMEOUT)
        .await
        .map_err(|e| machine_err(format!("resuming: {e}")))?;
    Ok(())
}

/// What making a template needs of a running machine (`QemuMachine` lends it).
pub(crate) struct Live<'a> {
    /// The machine's id.
    pub(crate) id: &'a str,
    /// Its directory.
    pub(crate) dir: &'a Path,
    /// Its address on the private network.
    pub(crate) private_ip: Option<std::net::IpAddr>,
    /// How it was started.
    pub(crate) plan: &'a MachinePlan,
    /// The disk it writes to (moved to the template).
    pub(crate) overlay: &'a std::sync::Mutex<PathBuf>,
    /// Files removed at its teardown.
    pub(crate) scratch: &'a std::sync::Mutex<Vec<PathBuf>>,
    /// Its QMP connection.
    pub(crate) qmp: &'a tokio::sync::Mutex<Option<Qmp>>,
}

impl Live<'_> {
    fn overlay(&self) -> PathBuf {
        self.overlay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Freezes a running machine into a template under `dir` (see
/// `QemuMachine::make_template`).
pub(crate) async fn make_template(m: Live<'_>, dir: &Path) -> Result<Template, PlatformError> {
    let id = m.id.to_string();
    if !m.plan.extra_disks.is_empty() || !m.plan.extra_nics.is_empty() {
        return Err(machine_err(format!(
            "{id}: a machine with extra disks or NICs cannot be a template"
        )));
    }
    if m.plan.no_reboot {
        return Err(machine_err(format!(
            "{id}: a machine in its first boot with first-boot kernel arguments cannot be a template"
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let dir = std::fs::canonicalize(dir).map_err(io(format!("resolving {}", dir.display())))?;
    let old = m.overlay();
    let mut n = 1;
    let new = loop {
        let candidate = m.dir.join(format!("disk-{n}.qcow2"));
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    let started = Instant::now();
    let mut guard = m.qmp.lock().await;
    let q = guard
        .as_mut()
        .ok_or_else(|| machine_err(format!("{id}: no QMP connection")))?;
    let qmp_err = |what: &str| {
        let what = format!("{id}: {what}");
        move |e: crate::qmp::QmpError| machine_err(format!("{what}: {e}"))
    };
    q.execute("stop", None, QMP_TIMEOUT)
        .await
        .map_err(qmp_err("pausing"))?;
    let saved = async {
        let new_str = crate::cmdline::path_str(&new)?;
        q.execute(
            "blockdev-snapshot-sync",
            Some(json!({"device": "disk0", "snapshot-file": new_str, "format": "qcow2"})),
            QMP_TIMEOUT,
        )
        .await
        .map_err(qmp_err("moving disk writes to a new overlay"))?;
        m.scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(new.clone());
        *m.overlay.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        let efivars = match &m.plan.boot {
            Boot::Firmware(Firmware::Pflash { vars, .. }) => {
                let name = vars
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "efivars.fd".into());
                tokio::fs::copy(vars, dir.join(&name))
                    .await
                    .map_err(io(format!("copying {}", vars.display())))?;
                Some(name)
            }
            _ => None,
        };
        // QEMU 7's default migration bandwidth is 128 MiB/s; a local file takes more.
        let _ = q
            .execute(
                "migrate-set-parameters",
                Some(json!({"max-bandwidth": 1u64 << 40})),
                QMP_TIMEOUT,
            )
            .await;
        let uri = format!("exec:cat > {}", sh_quote(&dir.join(MEMORY)));
        q.execute("migrate", Some(json!({ "uri": uri })), QMP_TIMEOUT)
            .await
            .map_err(qmp_err("saving memory"))?;
        wait_migration(q, &format!("{id}: saving memory")).await?;
        Ok::<_, PlatformError>(efivars)
    }
    .await;
    // Resume whatever happened: the test goes on with this machine.
    let resumed = q
        .execute("cont", None, QMP_TIMEOUT)
        .await
        .map_err(qmp_err("resuming"));
    drop(guard);
    let efivars = saved?;
    resumed?;
    std::fs::rename(&old, dir.join(DISK)).map_err(io(format!(
        "moving {} into {}",
        old.display(),
        dir.display()
    )))?;
    let append = match &m.plan.boot {
        Boot::DirectKernel { append, .. } => Some(append.clone()),
        Boot::Firmware(_) => None,
    };
    let mac = m
        .plan
        .private_nic
        .as_ref()
        .map(|n| n.mac.clone())
        .unwrap_or_default();
    let private_ip = match m.private_ip {
        Some(std::net::IpAddr::V4(ip)) => ip,
        _ => private_identity(0, 0).0,
    };
    let info = TemplateInfo {
        format: FORMAT.into(),
        source: id.clone(),
        arch: m.plan.arch.as_str().to_string(),
        accel: m.plan.accel.as_str().to_string(),
        memory_mb: m.plan.memory_mb,
        cpus: m.plan.cpus,
        mac,
        private_ip,
        append,
        efivars,
    };
    let text = serde_json::to_vec_pretty(&info).map_err(|e| machine_err(e.to_string()))?;
    std::fs::write(dir.join(INFO), text).map_err(io(format!("writing {}", dir.display())))?;
    let template_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| id.clone());
    tracing::info!(
        machine = %id,
        template = %template_id,
        "frozen into a template in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(Template {
        id: template_id,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
        assert_eq!(
            join_args(" root=/dev/vda ", &["x=1".into()]),
            "root=/dev/vda x=1"
        );
        assert_eq!(join_args("", &["x=1".into()]), "x=1");
    }
}
