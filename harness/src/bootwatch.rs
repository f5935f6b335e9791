//! Watching a machine come up. While the harness waits for a machine's first SSH login it
//! also reads the machine's console and its platform's own log (QEMU's stderr), as kola's
//! streaming console checks do, and ends the wait at once on a decisive sign: a kernel
//! panic, an emergency or rescue shell, a reboot loop, an error of the emulator, the
//! emulator gone, or a console that stays empty or stops growing for longer than a boot
//! can take. The failure names the line that decided it and carries its class, so a broken
//! guest is reported in seconds or minutes, never as a silent test timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bogie_reports::FailureClass;

use crate::platform::Machine;
pub use crate::platform::WatchLimits;

/// A machine that cannot come up, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BootFailure {
    /// The failure's class (`kernel`, `systemd`, `harness`).
    pub class: FailureClass,
    /// One line for people: what happened, with the decisive line.
    pub message: String,
}

fn fail(class: FailureClass, message: String) -> BootFailure {
    BootFailure { class, message }
}

/// Console lines that mean the boot is over before SSH (checked in this order).
const CONSOLE_SIGNS: &[(&str, FailureClass, &str)] = &[
    (
        "Kernel panic - not syncing",
        FailureClass::Kernel,
        "the kernel panicked",
    ),
    (
        "You are in emergency mode",
        FailureClass::Systemd,
        "the machine is in emergency mode",
    ),
    (
        "You are in rescue mode",
        FailureClass::Systemd,
        "the machine is in rescue mode",
    ),
    (
        "Entering emergency mode",
        FailureClass::Systemd,
        "the machine entered emergency mode",
    ),
    (
        "Cannot open access to console, the root account is locked",
        FailureClass::Systemd,
        "the machine entered emergency mode",
    ),
    (
        "Give root password for maintenance",
        FailureClass::Systemd,
        "the machine entered emergency mode",
    ),
    (
        "Freezing execution.",
        FailureClass::Systemd,
        "systemd froze execution",
    ),
];

/// Console lines after which an initramfs gives up (initramfs-tools' `panic`, dracut):
/// the line before them says why.
const INITRAMFS_SIGNS: &[&str] = &[
    "Rebooting automatically due to panic= boot argument",
    "Halting automatically due to panic= boot argument",
    "(initramfs) ",
    "dracut Warning: Could not boot.",
    "Starting Dracut Emergency Shell",
];

/// Emulator log lines that mean the machine is broken (QEMU's own errors).
const LOG_SIGNS: &[&str] = &[
    "KVM internal error",
    "Assertion",
    "qemu: fatal",
    "error: ",
    "Failed to",
    "failed to",
];

/// How many kernel boots on one console, before SSH was up, make a reboot loop.
const REBOOT_LOOP_BOOTS: usize = 3;

/// Looks for a decisive sign in what a booting machine printed so far: its `console` and
/// the platform's own `log`. `None`: nothing decisive yet.
pub fn scan(console: &str, log: &str) -> Option<BootFailure> {
    let mut previous = String::new();
    for line in console.lines() {
        let clean = crate::text::strip_ansi(line);
        for (needle, class, what) in CONSOLE_SIGNS {
            if clean.contains(needle) {
                let line = clean.trim();
                return Some(fail(*class, format!("{what} before SSH came up: {line}")));
            }
        }
        if INITRAMFS_SIGNS.iter().any(|s| clean.contains(s)) {
            let why = match previous.as_str() {
                "" => clean.trim().to_string(),
                p => p.to_string(),
            };
            return Some(fail(
                FailureClass::Kernel,
                format!("the initramfs gave up before SSH came up: {why}"),
            ));
        }
        if !clean.trim().is_empty() {
            previous = clean.trim().to_string();
        }
    }
    let boots = console.matches("Linux version ").count();
    if boots >= REBOOT_LOOP_BOOTS {
        return Some(fail(
            FailureClass::Kernel,
            format!("reboot loop before SSH came up: the kernel booted {boots} times"),
        ));
    }
    for line in log.lines() {
        let line = line.trim();
        if LOG_SIGNS.iter().any(|s| line.contains(s)) && !line.contains("warning:") {
            return Some(fail(
                FailureClass::Harness,
                format!("the emulator reported an error before SSH came up: {line}"),
            ));
        }
    }
    None
}

/// The last non-empty line of `text`, for messages.
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// What the console's silence says, given how long it has been empty or unchanged.
pub fn judge_silence(
    console_len: usize,
    unchanged_for: Duration,
    last: &str,
    limits: &WatchLimits,
) -> Option<BootFailure> {
    if console_len == 0 && unchanged_for >= limits.empty_console {
        return Some(fail(
            FailureClass::Harness,
            format!(
                "the console stayed empty for {}s: the guest never ran or writes elsewhere \
                 (likely causes: the accelerator, try --qemu-accel tcg; the firmware; the \
                 kernel's console= argument)",
                limits.empty_console.as_secs()
            ),
        ));
    }
    if console_len > 0 && unchanged_for >= limits.stalled_console {
        return Some(fail(
            FailureClass::Harness,
            format!(
                "the console stopped for {}s before SSH came up (last line: {})",
                limits.stalled_console.as_secs(),
                crate::text::strip_ansi(last).trim()
            ),
        ));
    }
    None
}

/// Watches `machine` until it shows a decisive sign, and returns it. Never returns while
/// the machine is booting normally: run it beside the SSH wait and drop it once SSH is up.
pub async fn watch(machine: Arc<dyn Machine>, limits: WatchLimits) -> BootFailure {
    let mut seen_len = 0usize;
    let mut changed_at = Instant::now();
    loop {
        tokio::time::sleep(limits.poll).await;
        let console = machine.console_output().await.unwrap_or_default();
        let log = machine.platform_log().await;
        if let Some(f) = scan(&console, &log) {
            return f;
        }
        if !machine.is_running().await {
            let why = match last_line(&log) {
                "" => "no message".to_string(),
                l => l.to_string(),
            };
            return fail(
                FailureClass::Harness,
                format!("the machine's emulator exited before SSH came up ({why})"),
            );
        }
        if console.len() != seen_len {
            seen_len = console.len();
            changed_at = Instant::now();
        }
        if let Some(f) = judge_silence(seen_len, changed_at.elapsed(), last_line(&console), &limits)
        {
            return f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_emergency_shells_and_emulator_errors_are_decisive() {
        let panic = "[    1.2] Run /bin/false as init process\n[   38.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n";
        let f = scan(panic, "").unwrap();
        assert_eq!(f.class, FailureClass::Kernel);
        assert_eq!(
            f.message,
            "the kernel panicked before SSH came up: [   38.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
        );
        let emergency = "\x1b[0;1;31mYou are in emergency mode. After logging in, type \"journalctl -xb\"\x1b[0m\n";
        let f = scan(emergency, "").unwrap();
        assert_eq!(f.class, FailureClass::Systemd);
        assert!(
            f.message.starts_with(
                "the machine is in emergency mode before SSH came up: You are in emergency mode."
            ),
            "{}",
            f.message
        );
        let locked = "Cannot open access to console, the root account is locked.\n";
        assert_eq!(scan(locked, "").unwrap().class, FailureClass::Systemd);
        let kvm = "KVM internal error. Suberror: 1\nemulation failure\n";
        let f = scan("Probing EDD (edd=off to disable)... ok\n", kvm).unwrap();
        assert_eq!(f.class, FailureClass::Harness);
        assert_eq!(
            f.message,
            "the emulator reported an error before SSH came up: KVM internal error. Suberror: 1"
        );
        let initramfs = "bogie-test-image: initramfs mounted the root\nbogie-test-image: the requested init /nonexistent is not in the root file system\nRebooting automatically due to panic= boot argument\n";
        let f = scan(initramfs, "").unwrap();
        assert_eq!(f.class, FailureClass::Kernel);
        assert_eq!(
            f.message,
            "the initramfs gave up before SSH came up: bogie-test-image: the requested init /nonexistent is not in the root file system"
        );
        let shell = "No init found. Try passing init= bootarg.\n\n(initramfs) ";
        let f = scan(shell, "").unwrap();
        assert!(
            f.message
                .ends_with(": No init found. Try passing init= bootarg."),
            "{}",
            f.message
        );
        let loops = "Linux version 6.1\n...\nLinux version 6.1\n...\nLinux version 6.1\n";
        assert_eq!(scan(loops, "").unwrap().class, FailureClass::Kernel);
    }

    #[test]
    fn a_healthy_boot_and_emulator_warnings_are_not() {
        let boot = "Linux version 6.1.0 (debian)\n[  OK  ] Reached target multi-user.target\nignition[312]: files: op(1): [finished] writing file\nKernel panic handlers registered? no\n";
        assert_eq!(scan(boot, ""), None);
        let one_reboot = "Linux version 6.1\nreboot: Restarting system\nLinux version 6.1\n";
        assert_eq!(scan(one_reboot, ""), None);
        let warn = "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\nqemu-system-x86_64: terminating on signal 15 from pid 7\n";
        assert_eq!(scan("", warn), None);
    }

    #[test]
    fn silence_is_judged_by_the_accelerators_limits() {
        let l = WatchLimits::EMULATED;
        assert_eq!(judge_silence(0, Duration::from_secs(149), "", &l), None);
        let f = judge_silence(0, Duration::from_secs(150), "", &l).unwrap();
        assert_eq!(f.class, FailureClass::Harness);
        assert!(
            f.message.starts_with("the console stayed empty for 150s"),
            "{}",
            f.message
        );
        assert!(f.message.contains("--qemu-accel tcg"), "{}", f.message);
        assert_eq!(judge_silence(10, Duration::from_secs(299), "x", &l), None);
        let f = judge_silence(10, Duration::from_secs(300), "Probing EDD ... ok", &l).unwrap();
        assert_eq!(
            f.message,
            "the console stopped for 300s before SSH came up (last line: Probing EDD ... ok)"
        );
        let k = WatchLimits::ACCELERATED;
        assert!(k.empty_console < l.empty_console && k.stalled_console < l.stalled_console);
        assert!(judge_silence(0, Duration::from_secs(60), "", &k).is_some());
    }
}
