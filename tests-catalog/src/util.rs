//! Helpers shared by the catalog's tests.

use anyhow::{bail, Result};
use bogie_harness::TestMachine;

/// Asserts that `command`'s stdout contains `needle`.
pub async fn assert_output_contains(
    m: &TestMachine,
    command: &str,
    needle: &str,
) -> Result<String> {
    let out = m.must_ssh(command).await?;
    if !out.contains(needle) {
        bail!("{command:?} printed {out:?}, which does not contain {needle:?}");
    }
    Ok(out)
}

/// Asserts that `command` prints exactly `expected` (trimmed).
pub async fn assert_output_eq(m: &TestMachine, command: &str, expected: &str) -> Result<()> {
    let out = m.must_ssh(command).await?;
    if out.trim() != expected {
        bail!("{command:?} printed {out:?}, expected {expected:?}");
    }
    Ok(())
}

/// Asserts that a unit is active (waits up to `secs` seconds for it to become so).
pub async fn assert_unit_active(m: &TestMachine, unit: &str, secs: u32) -> Result<()> {
    let cmd = format!(
        "for i in $(seq 1 {secs}); do systemctl is-active --quiet {unit} && exit 0; sleep 1; done; systemctl status --no-pager {unit}; exit 1"
    );
    let out = m.ssh(&cmd).await?;
    if !out.success() {
        bail!("{unit} is not active after {secs}s:\n{}", out.stdout_str());
    }
    Ok(())
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.trim().split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids() {
        assert!(is_uuid("0f5e7c0e-1d8a-4c55-9d2c-2f0b4f1d3e11\n"));
        assert!(!is_uuid("00000000000000000000000000000001"));
        assert!(!is_uuid("zz5e7c0e-1d8a-4c55-9d2c-2f0b4f1d3e11"));
    }
}
