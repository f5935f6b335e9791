//! Whether `/dev/kvm` actually works. It can exist and still refuse to create a VM (a
//! container without the device cgroup), or create VMs whose vCPUs QEMU cannot set up (a
//! nested hypervisor rejecting MSRs: QEMU then aborts at start), or accept everything and
//! then never run the guest (seen on nested hosts without `vmx`/`svm`: the kernel's
//! real-mode setup prints and the guest hangs at the switch to long mode). So the ioctl
//! check is followed by running a tiny guest under QEMU itself, with the machine and CPU
//! bogie would use, that must reach 64-bit mode and write a line to its serial port.

use std::ffi::CStr;
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

/// How long the probe guest may take to print its line. QEMU itself starts in well under
/// a second; a guest whose vCPU runs prints at once.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// What the probe guest prints on its serial port once it has run.
const PROBE_LINE: &[u8] = b"KV";

/// The amd64 probe guest: 168 bytes of code and data at the start of a 64 KiB `-bios`
/// ROM, and a jump to them at the reset vector. From real mode it builds identity page
/// tables for the first 2 MiB, enables PAE, `EFER.LME` and paging, far-jumps into a 64-bit
/// code segment and writes `KV\n` to COM1, then halts. It goes through every mode switch
/// a Linux kernel makes, so a KVM that opens, creates VMs and starts QEMU but cannot run a
/// real guest (nested KVM without hardware support, a paravirtual KVM that needs a
/// patched guest) fails here instead of hanging the first test. Assembled from:
///
/// ```text
/// start:  cli; ljmp $0xF000,$low               # run from the 0xF0000 alias
/// low:    es=0; ds=0xF000; cld
///         rep stosl 0 over 0x1000..0x4000      # PML4, PDPT, PD
///         [0x1000]=0x2003 [0x2000]=0x3003 [0x3000]=0x83   # 2 MiB identity page
///         cr3=0x1000; cr4|=PAE; EFER|=LME (rdmsr/wrmsr 0xC0000080)
///         lgdtl gdtr; cr0|=PG|PE; ljmpl $0x08,$(0xF0000+long64)
/// long64: outb 'K','V','\n' to 0x3f8; 1: hlt; jmp 1b
/// gdt:    null, 0x00AF9A000000FFFF (64-bit code), 0x00CF92000000FFFF (data)
/// gdtr:   .word 23; .long 0xF0000+gdt
/// 0xFFF0: jmp start
/// ```
const AMD64_PROBE_CODE: [u8; 168] = [
    0xfa, 0xea, 0x06, 0x00, 0x00, 0xf0, 0x31, 0xc0, 0x8e, 0xc0, 0xb8, 0x00, //
    0xf0, 0x8e, 0xd8, 0xfc, 0xbf, 0x00, 0x10, 0xb9, 0x00, 0x0c, 0x66, 0x31, //
    0xc0, 0x66, 0xf3, 0xab, 0x26, 0x66, 0xc7, 0x06, 0x00, 0x10, 0x03, 0x20, //
    0x00, 0x00, 0x26, 0x66, 0xc7, 0x06, 0x00, 0x20, 0x03, 0x30, 0x00, 0x00, //
    0x26, 0x66, 0xc7, 0x06, 0x00, 0x30, 0x83, 0x00, 0x00, 0x00, 0x66, 0xb8, //
    0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0x0f, 0x20, 0xe0, 0x66, 0x83, //
    0xc8, 0x20, 0x0f, 0x22, 0xe0, 0x66, 0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, //
    0x32, 0x66, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x66, 0x0f, 0x01, //
    0x16, 0xa0, 0x00, 0x0f, 0x20, 0xc0, 0x66, 0x0d, 0x01, 0x00, 0x00, 0x80, //
    0x0f, 0x22, 0xc0, 0x66, 0xea, 0x77, 0x00, 0x0f, 0x00, 0x08, 0x00, 0x66, //
    0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xb0, 0x56, 0xee, 0xb0, 0x0a, 0xee, //
    0xf4, 0xeb, 0xfd, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00, 0xff, 0xff, 0x00, 0x00, //
    0x00, 0x92, 0xcf, 0x00, 0x17, 0x00, 0x88, 0x00, 0x0f, 0x00, 0x00, 0x00, //
];

/// `jmp start` (rel16 wrapping to offset 0), placed at the reset vector 0xFFF0.
const AMD64_RESET_JUMP: [u8; 3] = [0xe9, 0x0d, 0x00];

/// The arm64 probe guest for `virt` (flash at 0, PL011 at 0x0900_0000): writes `KV\n`
/// to the UART with the MMU off, then waits for interrupts forever.
const ARM64_PROBE_CODE: [u32; 9] = [
    0xd2a1_2000, // movz x0, #0x0900, lsl #16
    0x5280_0961, // movz w1, #'K'
    0x3900_0001, // strb w1, [x0]
    0x5280_0ac1, // movz w1, #'V'
    0x3900_0001, // strb w1, [x0]
    0x5280_0141, // movz w1, #'\n'
    0x3900_0001, // strb w1, [x0]
    0xd503_207f, // wfi
    0x17ff_ffff, // b .-4
];

/// The probe guest's 64 KiB ROM image for `arch`.
pub fn probe_rom(arch: Arch) -> Vec<u8> {
    let mut rom = vec![0u8; 64 * 1024];
    match arch {
        Arch::Amd64 => {
            rom[..AMD64_PROBE_CODE.len()].copy_from_slice(&AMD64_PROBE_CODE);
            rom[0xFFF0..0xFFF0 + AMD64_RESET_JUMP.len()].copy_from_slice(&AMD64_RESET_JUMP);
        }
        Arch::Arm64 => {
            for (i, w) in ARM64_PROBE_CODE.iter().enumerate() {
                rom[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
    }
    rom
}

/// Runs the probe guest under KVM with the machine and CPU a real machine would get. `Ok`
/// only when the guest's line reached its serial port: the vCPU really executed guest
/// code through the mode switches a kernel makes. `Err` says why not: QEMU's own error
/// line when it aborted, or that the guest never ran.
pub fn probe_qemu(qemu: &Path, arch: Arch) -> Result<(), String> {
    let (machine, cpu) = machine_and_cpu(arch, ResolvedAccel::Kvm);
    run_probe_guest(qemu, arch, "kvm", machine, cpu, PROBE_TIMEOUT)
}

/// Runs the probe guest under `accel` and waits up to `timeout` for its line.
pub(crate) fn run_probe_guest(
    qemu: &Path,
    arch: Arch,
    accel: &str,
    machine: &str,
    cpu: &str,
    timeout: Duration,
) -> Result<(), String> {
    use std::io::Read;
    let dir = tempfile::Builder::new()
        .prefix("bogie-kvm-probe-")
        .tempdir()
        .map_err(|e| format!("creating the probe's temp dir: {e}"))?;
    let rom = dir.path().join("probe.rom");
    std::fs::write(&rom, probe_rom(arch)).map_err(|e| format!("writing {}: {e}", rom.display()))?;
    let mut child = Command::new(qemu)
        .args([
            "-accel", accel, "-machine", machine, "-cpu", cpu, "-m", "16",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .arg("-bios")
        .arg(&rom)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Readers on threads: a guest that never runs writes nothing, and the deadline below
    // must still fire.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let out_thread = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(PROBE_LINE.len()).any(|w| w == PROBE_LINE) {
                let _ = tx.send(());
                break;
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let deadline = Instant::now() + timeout;
    let mut ran = false;
    let mut exited = None;
    while Instant::now() < deadline {
        if rx.try_recv().is_ok() {
            ran = true;
            break;
        }
        match child.try_wait() {
            Ok(Some(s)) => {
                // Output may still be in the pipe: give the reader a moment.
                ran = rx.recv_timeout(Duration::from_millis(200)).is_ok();
                exited = Some(s);
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    }
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = out_thread.join();
    let err = err_thread.join().unwrap_or_default();
    if ran {
        return Ok(());
    }
    let line = err
        .lines()
        .find(|l| l.contains("error") || l.contains("failed"))
        .or_else(|| {
            err.lines()
                .rev()
                .find(|l| !l.contains("terminating on signal"))
        })
        .map(str::trim)
        .filter(|l| !l.is_empty());
    Err(match (exited, line) {
        (Some(status), line) => format!(
            "QEMU cannot start a KVM guest ({status}): {}",
            line.unwrap_or("no output")
        ),
        (None, Some(line)) => format!(
            "KVM accepted the VM but its vCPU did not run a probe guest within {}s (QEMU said: {line})",
            timeout.as_secs()
        ),
        (None, None) => format!(
            "KVM accepted the VM but its vCPU did not run a probe guest within {}s",
            timeout.as_secs()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_qemu(dir: &Path, script: &str) -> std::path::PathBuf {
        let fake = dir.join("qemu");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake
    }

    #[test]
    fn a_missing_or_wrong_device_is_reported() {
        let e = probe_device(c"/nonexistent/kvm").unwrap_err();
        assert!(e.starts_with("cannot open /nonexistent/kvm"), "{e}");
        let e = probe_device(c"/dev/null").unwrap_err();
        assert!(e.contains("KVM_GET_API_VERSION"), "{e}");
    }

    #[test]
    fn a_qemu_that_aborts_under_kvm_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let script = "#!/bin/sh\necho 'qemu: error: failed to set MSR 0x10a to 0x69' >&2\necho 'kvm.c: Assertion failed.' >&2\nkill -ABRT $$\n";
        let fake = fake_qemu(d.path(), script);
        let e = probe_qemu(&fake, Arch::Amd64).unwrap_err();
        assert!(e.starts_with("QEMU cannot start a KVM guest"), "{e}");
        assert!(
            e.ends_with("qemu: error: failed to set MSR 0x10a to 0x69"),
            "{e}"
        );
    }

    #[test]
    fn a_guest_that_prints_its_line_passes_and_one_that_never_runs_does_not() {
        let d = tempfile::tempdir().unwrap();
        let fake = fake_qemu(d.path(), "#!/bin/sh\nprintf 'KV\\n'\nexec sleep 30\n");
        assert_eq!(probe_qemu(&fake, Arch::Amd64), Ok(()));
        // KVM that accepts the VM and starts QEMU, but whose vCPU never runs: no line.
        let fake = fake_qemu(d.path(), "#!/bin/sh\nexec sleep 30\n");
        let start = Instant::now();
        let e = run_probe_guest(
            &fake,
            Arch::Amd64,
            "kvm",
            "q35",
            "host",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the deadline fired late"
        );
        assert_eq!(
            e,
            "KVM accepted the VM but its vCPU did not run a probe guest within 1s"
        );
        // QEMU exiting cleanly without the line is not a pass either.
        let fake = fake_qemu(d.path(), "#!/bin/sh\nexit 0\n");
        let e = probe_qemu(&fake, Arch::Amd64).unwrap_err();
        assert!(
            e.starts_with("QEMU cannot start a KVM guest (exit status: 0)"),
            "{e}"
        );
    }

    /// Each kind of broken host, faked: no device, a device that refuses VMs, and one that
    /// accepts the VM but whose vCPU never runs the guest. `auto` falls back to TCG,
    /// `kvm` is an input error naming the reason.
    #[test]
    fn accel_choice_on_each_kind_of_broken_host() {
        use crate::{resolve_accel, Accel, ResolvedAccel};
        use bogie_harness::PlatformError;
        let d = tempfile::tempdir().unwrap();
        let silent = fake_qemu(d.path(), "#!/bin/sh\nexec sleep 30\n");
        type Probe<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;
        let hosts: [(&str, Probe); 3] = [
            (
                "cannot open /nonexistent/kvm",
                Box::new(|| probe_device(c"/nonexistent/kvm")),
            ),
            (
                "KVM_GET_API_VERSION",
                Box::new(|| probe_device(c"/dev/null")),
            ),
            (
                "its vCPU did not run a probe guest",
                Box::new(|| {
                    let short = Duration::from_millis(500);
                    run_probe_guest(&silent, Arch::Amd64, "kvm", "q35", "host", short)
                }),
            ),
        ];
        for (why, probe) in &hosts {
            let host = Some(Arch::Amd64);
            let auto = resolve_accel(Accel::Auto, Arch::Amd64, host, probe).unwrap();
            assert_eq!(auto, ResolvedAccel::Tcg, "{why}");
            match resolve_accel(Accel::Kvm, Arch::Amd64, host, probe) {
                Err(PlatformError::Input(e)) => {
                    assert!(
                        e.starts_with("--qemu-accel kvm: KVM is not usable: "),
                        "{e}"
                    );
                    assert!(e.contains(why), "{e}");
                }
                other => panic!("expected an input error for {why}, got {other:?}"),
            }
        }
    }

    /// The probe guests themselves, run under TCG by the real QEMU: they must reach their
    /// serial line (the amd64 one only after switching to 64-bit mode).
    #[test]
    fn the_probe_guests_run_under_tcg() {
        for (arch, bin, machine, cpu) in [
            (Arch::Amd64, "qemu-system-x86_64", "q35", "max"),
            (Arch::Arm64, "qemu-system-aarch64", "virt", "max"),
        ] {
            let Some(qemu) = crate::detect::find_program(bin, std::env::var_os("PATH").as_deref())
            else {
                let why = format!("{bin} is not installed (ci/install-deps installs it)");
                assert!(std::env::var_os("CI").is_none(), "{why}");
                eprintln!("SKIPPED: the_probe_guests_run_under_tcg ({arch}): {why}");
                continue;
            };
            run_probe_guest(&qemu, arch, "tcg", machine, cpu, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{arch} probe guest under TCG: {e}"));
        }
    }
}
