//! Whether `/dev/kvm` actually works (it can exist and still refuse to create a VM, e.g.
//! in containers without the device cgroup, or nested without virtualisation extensions).

use std::ffi::CStr;

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
}
