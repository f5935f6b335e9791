//! Shared helpers for bogie's end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// QEMU-heavy tests take turns: the host has few cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test image manifest (`ci/build-test-image --arch amd64 | tail -n1`), from
/// `BOGIE_TEST_IMAGE`. End-to-end tests need it: `ci/test` sets it.
pub fn test_image() -> PathBuf {
    let p = std::env::var_os("BOGIE_TEST_IMAGE").expect(
        "BOGIE_TEST_IMAGE is not set: run the tests through ci/test, which builds the test image",
    );
    PathBuf::from(p)
}

/// The bogie binary cargo built for these tests.
pub fn bogie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bogie"))
}

/// qemu-system processes whose command line mentions `needle`.
pub fn qemu_processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|s| s.chars().all(|c| c.is_ascii_digit()))
            else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains("qemu-system") && cmd.contains(&needle) {
                    out.push(format!("{pid}: {cmd}"));
                }
            }
        }
    }
    out
}
