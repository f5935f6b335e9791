//! Whether `/dev/kvm` actually works. It can exist and still refuse to create a VM (a
//! container without the device cgroup), or create VMs whose vCPUs QEMU cannot set up (a
//! nested hypervisor rejecting MSRs: QEMU then aborts at start). So the ioctl check is
//! followed by starting QEMU itself, paused, with the machine and CPU bogie would use.

use std::ffi::CStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bogie_harness::Arch;

use crate::cmdline::{machine_and_cpu, ResolvedAccel};

const KVM_GET_API_VERSION: u64 = 0xAE00;
const KVM_CREATE_VM: u64 = 0xAE01;
const KVM_CREATE_VCPU: u64 = 0xAE41;
const KVM_API_VERSION: i32 = 12;

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd was returned by open/ioctl and is owned only by this guard.
        unsafe { libc::close(self.0) };
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Opens `/dev/kvm` and creates (then drops) a VM with one vCPU. `Err` says why KVM is
/// not usable.
pub fn probe() -> Result<(), String> {
    probe_device(c"/dev/kvm")
}

fn probe_device(path: &CStr) -> Result<(), String> {
    let dev = path.to_string_lossy();
    // SAFETY: path is a valid NUL-terminated string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!("cannot open {dev}: {}", errno()));
    }
    let kvm = Fd(fd);
    // SAFETY: KVM ioctls on an fd we own; the integer argument is what the API takes.
    let version = unsafe { libc::ioctl(kvm.0, KVM_GET_API_VERSION as _, 0) };
    if version != KVM_API_VERSION {
        return Err(format!(
            "{dev}: KVM_GET_API_VERSION returned {version} ({})",
            errno()
        ));
    }
    // SAFETY: as above; machine type 0 is the default.
    let vm = unsafe { libc::ioctl(kvm.0, KVM_CREATE_VM as _, 0) };
    if vm < 0 {
        return Err(format!("{dev}: KVM_CREATE_VM failed: {}", errno()));
    }
    let vm = Fd(vm);
    // SAFETY: as above; vCPU id 0.
    let vcpu = unsafe { libc::ioctl(vm.0, KVM_CREATE_VCPU as _, 0) };
    if vcpu < 0 {
        return Err(format!("{dev}: KVM_CREATE_VCPU failed: {}", errno()));
    }
    drop(Fd(vcpu));
    Ok(())
}

/// Starts `qemu` paused under KVM with the machine and CPU a real machine would get, and
/// quits it through QMP on stdin. `Err` carries QEMU's first error line.
pub fn probe_qemu(qemu: &Path, arch: Arch) -> Result<(), String> {
    let (machine, cpu) = machine_and_cpu(arch, ResolvedAccel::Kvm);
    let mut child = Command::new(qemu)
        .args([
            "-accel", "kvm", "-machine", machine, "-cpu", cpu, "-m", "64",
        ])
        .args(["-nodefaults", "-display", "none", "-S", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means QEMU already exited; its status tells why.
        let _ = stdin.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("QEMU did not start under KVM within 10s".into());
            }
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let line = err
        .lines()
        .find(|l| l.contains("error") || l.contains("failed"))
        .or_else(|| err.lines().last())
        .unwrap_or("no output")
        .trim()
        .to_string();
    Err(format!("QEMU cannot start a KVM guest ({status}): {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_wrong_device_is_reported() {
        let e = probe_device(c"/nonexistent/kvm").unwrap_err();
        assert!(e.starts_with("cannot open /nonexistent/kvm"), "{e}");
        let e = probe_device(c"/dev/null").unwrap_err();
        assert!(e.contains("KVM_GET_API_VERSION"), "{e}");
    }

    #[test]
    fn a_qemu_that_aborts_under_kvm_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("qemu");
        let script = "#!/bin/sh\ncat >/dev/null\necho 'qemu: error: failed to set MSR 0x10a to 0x69' >&2\necho 'kvm.c: Assertion failed.' >&2\nkill -ABRT $$\n";
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = probe_qemu(&fake, Arch::Amd64).unwrap_err();
        assert!(e.starts_with("QEMU cannot start a KVM guest"), "{e}");
        assert!(
            e.ends_with("qemu: error: failed to set MSR 0x10a to 0x69"),
            "{e}"
        );

        std::fs::write(&fake, "#!/bin/sh\ncat >/dev/null\nexit 0\n").unwrap();
        assert_eq!(probe_qemu(&fake, Arch::Amd64), Ok(()));
    }
}
