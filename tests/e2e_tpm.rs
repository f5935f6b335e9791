//! A TPM 2.0 through swtpm, on the real test image under QEMU: a test that requires `tpm`
//! gets a machine whose kernel sees a TPM 2.0 (`/sys/class/tpm/tpm0`), with its state in
//! the machine's directory, and no swtpm or QEMU is left afterwards; a test that does not
//! ask for one gets none.
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`) and
//! swtpm (`ci/install-deps` installs both; `ci/test` sets the variable).

mod common;

use anyhow::bail;
use bogie_harness::{Registry, Test};
use bogie_reports::Status;
use common::{dispatch, qemu_processes_mentioning, qemu_run_args, results, serial};

fn fixtures() -> Registry {
    let mut r = Registry::new();
    r.register(
        Test::new("tpm.present", |c| async move {
            let m = c.machine()?;
            let major = m
                .must_ssh("cat /sys/class/tpm/tpm0/tpm_version_major")
                .await?;
            if major.trim() != "2" {
                bail!("TPM version {major:?}, expected 2");
            }
            // The kernel's resource manager answers too (what clevis and systemd use).
            m.must_ssh("test -c /dev/tpmrm0").await?;
            Ok(())
        })
        .distros(&[])
        .requires(&["tpm"]),
    )
    .unwrap();
    r.register(
        Test::new("tpm.absent", |c| async move {
            let m = c.machine()?;
            m.must_ssh("test ! -e /sys/class/tpm/tpm0").await?;
            Ok(())
        })
        .distros(&[]),
    )
    .unwrap();
    r
}

/// Processes whose command line mentions `needle` and `what`.
fn processes(what: &str, needle: &std::path::Path) -> Vec<String> {
    let needle = needle.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name();
        if !pid.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        let here = cmd.contains(&needle) || cwd.display().to_string().contains(&needle);
        if cmd.contains(what) && here {
            out.push(format!("{}: {cmd}", pid.to_string_lossy()));
        }
    }
    out
}

#[test]
fn a_test_that_requires_tpm_gets_a_tpm2_and_nothing_is_left() {
    let _g = serial();
    if no_swtpm("a_test_that_requires_tpm_gets_a_tpm2_and_nothing_is_left") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut args = qemu_run_args(&out);
    args.push("tpm.*".into());
    let code = dispatch(&args, fixtures());
    let report = results(&out);
    for t in &report.tests {
        assert_eq!(
            t.status,
            Status::Pass,
            "{}: {:?}",
            t.name,
            t.last_failure().map(|f| &f.message)
        );
    }
    assert_eq!(report.tests.len(), 2);
    assert_eq!(code, 0);
    // The TPM's state lived in the machine's directory.
    let m = &report
        .tests
        .iter()
        .find(|t| t.name == "tpm.present")
        .unwrap()
        .attempts[0]
        .machines[0];
    let console = out.join(m.console.as_ref().unwrap());
    let machine_dir = console.parent().unwrap();
    assert!(machine_dir.join("tpm").is_dir(), "no TPM state dir");
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind"
    );
    assert!(
        processes("swtpm", &out).is_empty(),
        "swtpm left behind: {:?}",
        processes("swtpm", &out)
    );
}

/// Whether swtpm is missing: a failure under CI, else a skip said on stderr.
fn no_swtpm(test: &str) -> bool {
    if which("swtpm").is_some() {
        return false;
    }
    let why = "swtpm is not installed (ci/install-deps installs it)";
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIPPED: {test}: {why}");
    true
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// The catalog's `cl.tpm.*` on the amd64 test image: `cl.tpm.eventlog` runs and passes (a
/// TPM, the firmware's event log, tpm2-tools); each of the other five is skipped with what
/// it still lacks there (Ignition's disks stage for the data volume, Flatcar's initramfs for
/// a LUKS root), and none counts as passed.
#[test]
fn the_catalogs_tpm_tests_run_where_the_image_allows_and_name_what_they_lack() {
    let _g = serial();
    if no_swtpm("the_catalogs_tpm_tests_run_where_the_image_allows_and_name_what_they_lack") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut args = qemu_run_args(&out);
    args.push("cl.tpm.*".into());
    dispatch(&args, bogie_tests_catalog::registry());
    let report = results(&out);
    let find = |n: &str| report.tests.iter().find(|t| t.name == n).unwrap();
    let ev = find("cl.tpm.eventlog");
    assert_eq!(
        ev.status,
        Status::Pass,
        "{:?}",
        ev.last_failure().map(|f| &f.message)
    );
    let data = find("cl.tpm.nonroot");
    assert_eq!(data.status, Status::Skip);
    let why = data.skip_reason.as_deref().unwrap_or_default();
    assert!(why.contains("ignition-disks"), "{why}");
    assert!(!why.contains("flatcar"), "{why}");
    for n in [
        "cl.tpm.root",
        "cl.tpm.root-cryptenroll",
        "cl.tpm.root-cryptenroll-pcr-noupdate",
        "cl.tpm.root-cryptenroll-pcr-withupdate",
    ] {
        let t = find(n);
        assert_eq!(t.status, Status::Skip, "{n}");
        let why = t.skip_reason.as_deref().unwrap_or_default();
        assert!(why.contains("flatcar"), "{n}: {why}");
    }
    assert_eq!(report.tests.len(), 6);
    assert!(
        processes("swtpm", &out).is_empty(),
        "swtpm left behind: {:?}",
        processes("swtpm", &out)
    );
}
