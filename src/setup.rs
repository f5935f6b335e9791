//! What a command sets up from its options before it runs tests or machines: the image,
//! the platform, the output directory and the run's SSH keys.

use std::path::PathBuf;
use std::sync::Arc;

use bogie_harness::ssh::SshKey;
use bogie_harness::{Arch, ImageInfo, Platform, PlatformError};

use crate::input_error;
use crate::options::{Output, Target};

/// The image of a platform that boots a local one: `--qemu-image`, a bogie manifest or a
/// disk image bogie can read.
pub fn load_image(t: &Target) -> anyhow::Result<ImageInfo> {
    let Some(path) = &t.qemu.qemu_image else {
        return Err(input_error(
            "no image given: pass --qemu-image (a manifest.json from ci/build-test-image, or a disk image)",
        ));
    };
    // A file that is no disk image at all is refused before the disk is read (reading it
    // would only warn that it is assumed to be Flatcar).
    let is_manifest = path.extension().is_some_and(|e| e == "json");
    if !is_manifest && path.exists() {
        let problem = bogie_platform_qemu::detect::not_a_disk_image(path)
            .map_err(|e| input_error(format!("--qemu-image {}: {e}", path.display())))?;
        if let Some(why) = problem {
            return Err(input_error(format!(
                "--qemu-image {}: not a bogie manifest.json, a qcow2 or a raw disk image: {why}",
                path.display()
            )));
        }
    }
    ImageInfo::load(path).map_err(|e| input_error(e.to_string()))
}

/// The image of the target's platform: the local one (qemu, pxe), else the description of
/// the image a remote platform boots.
pub fn target_image(t: &Target) -> anyhow::Result<ImageInfo> {
    if crate::cloud::needs_local_image(&t.platform) {
        load_image(t)
    } else {
        crate::cloud::remote_image(t, &t.platform)
    }
}

/// The target's platform for `image` on `arch`, sized for `parallel` machines at once.
pub fn make_platform(
    t: &Target,
    image: &ImageInfo,
    arch: Arch,
    parallel: usize,
) -> anyhow::Result<Arc<dyn Platform>> {
    match t.platform.as_str() {
        "qemu" => {
            let q = &t.qemu;
            let mut o = bogie_platform_qemu::QemuOptions::new(image.clone(), arch);
            o.firmware = q.qemu_firmware.clone();
            o.ovmf_vars = q.qemu_ovmf_vars.clone();
            o.skip_mangle = q.qemu_skip_mangle;
            o.secure_boot = t.secure_boot;
            o.grow_base_disk_by = match &q.qemu_grow_base_disk_by {
                None => 0,
                Some(s) => bogie_platform_qemu::parse_size(s)
                    .map_err(|e| input_error(format!("--qemu-grow-base-disk-by {e}")))?,
            };
            o.accel = q.qemu_accel;
            if let Some(m) = q.qemu_memory {
                o.memory_mb = m;
            }
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            o.cpus = q
                .qemu_cpus
                .unwrap_or_else(|| (cores / parallel.max(1)).max(1) as u32);
            if let Some(opts) = &q.qemu_options {
                o.qemu_options = serde_json::from_str(opts).map_err(|e| {
                    input_error(format!(
                        "--qemu-options must be a JSON array of strings: {e}"
                    ))
                })?;
            }
            let p = bogie_platform_qemu::QemuPlatform::new(o).map_err(platform_input)?;
            Ok(Arc::new(p))
        }
        cloud if crate::cloud::handles(cloud) => {
            crate::cloud::make_platform(t, cloud, image, arch, parallel)
        }
        other => Err(input_error(format!(
            "platform {other:?} is not built into this bogie yet"
        ))),
    }
}

fn platform_input(e: PlatformError) -> anyhow::Error {
    match e {
        PlatformError::Input(m) => input_error(m),
        other => anyhow::Error::new(other),
    }
}

fn default_output_dir(platform: &str) -> PathBuf {
    let stamp = chrono::Local::now().format("%Y-%m-%d-%H%M");
    PathBuf::from("_kola_temp").join(format!("{platform}-{stamp}-{}", std::process::id()))
}

/// The run's output directory: `--output-dir`, else a fresh
/// `_kola_temp/<platform>-<stamp>-<pid>` with the `<platform>-latest` link; with
/// `reports/` and kola's `.harness_temp` marker in it.
pub fn prepare_output_dir(o: &Output, platform: &str) -> anyhow::Result<PathBuf> {
    let out = match &o.dir {
        Some(d) => d.clone(),
        None => {
            let d = default_output_dir(platform);
            std::fs::create_dir_all(&d)?;
            let link = PathBuf::from("_kola_temp").join(format!("{platform}-latest"));
            let _ = std::fs::remove_file(&link);
            if let Some(name) = d.file_name() {
                let _ = std::os::unix::fs::symlink(name, &link);
            }
            d
        }
    };
    let named = |e: std::io::Error| {
        let flag = if o.dir.is_some() {
            "--output-dir"
        } else {
            "output directory"
        };
        input_error(format!("{flag} {}: {e}", out.display()))
    };
    std::fs::create_dir_all(out.join("reports")).map_err(named)?;
    std::fs::write(out.join(".harness_temp"), b"").map_err(named)?;
    Ok(std::fs::canonicalize(&out).unwrap_or(out))
}

/// The run's key pair and extra public keys from `--key` files: public keys are added to
/// machines, a private key replaces the ephemeral run key. The user's ~/.ssh is never read.
pub fn keys(files: &[PathBuf]) -> anyhow::Result<(SshKey, Vec<String>)> {
    let mut run_key = None;
    let mut extra = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| input_error(format!("--key {}: {e}", f.display())))?;
        if text.contains("PRIVATE KEY") {
            run_key = Some(
                SshKey::load(f).map_err(|e| input_error(format!("--key {}: {e}", f.display())))?,
            );
        } else {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if !line.starts_with("ssh-") && !line.starts_with("ecdsa-") {
                    return Err(input_error(format!(
                        "--key {}: not an OpenSSH public or private key",
                        f.display()
                    )));
                }
                extra.push(line.to_string());
            }
        }
    }
    Ok((run_key.unwrap_or_else(SshKey::generate), extra))
}

/// The run's key written to `<out>/ssh/id_ed25519`; returns that path.
pub fn write_key(key: &SshKey, out: &std::path::Path) -> anyhow::Result<PathBuf> {
    let key_path = out.join("ssh").join("id_ed25519");
    std::fs::create_dir_all(out.join("ssh"))?;
    key.write(&key_path)?;
    Ok(key_path)
}

/// A run id that differs between runs and processes (time and pid hashed with a random
/// key).
pub fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}
