//! Bad input gets one clear line and exit code 2, before anything boots.

mod common;

use common::bogie;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = bogie().args(args).output().expect("runs bogie");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_image_names_the_path() {
    let (code, _, err) = run(&[
        "run",
        "--qemu-image",
        "/nonexistent/flatcar.img",
        "cl.basic",
    ]);
    assert_eq!(code, 2);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("/nonexistent/flatcar.img"), "{err}");
}

#[test]
fn unknown_platform_and_test_are_input_errors() {
    let (code, _, err) = run(&["run", "-p", "vmware-cloud", "cl.basic"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown platform \"vmware-cloud\""), "{err}");

    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("disk.img");
    std::fs::write(&disk, b"not really a disk").unwrap();
    let (code, _, err) = run(&[
        "run",
        "--qemu-image",
        disk.to_str().unwrap(),
        "no.such.test",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown test \"no.such.test\""), "{err}");
}

#[test]
fn malformed_manifest_and_bad_flags_are_input_errors() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("manifest.json");
    std::fs::write(&m, b"{ not json").unwrap();
    let (code, _, err) = run(&["run", "--qemu-image", m.to_str().unwrap(), "cl.basic"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid image manifest"), "{err}");

    let (code, _, err) = run(&["run", "--board", "riscv-usr", "cl.basic"]);
    assert_eq!(code, 2);
    assert!(err.contains("riscv-usr"), "{err}");

    let (code, _, err) = run(&["run", "-j", "zero", "cl.basic"]);
    assert_eq!(code, 2);
    assert!(err.contains("--parallel"), "{err}");
}

#[test]
fn wrong_arch_image_is_caught_before_boot() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("disk.qcow2"), b"x").unwrap();
    let m = d.path().join("manifest.json");
    std::fs::write(
        &m,
        r#"{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","boot":"firmware"}"#,
    )
    .unwrap();
    let (code, _, err) = run(&[
        "run",
        "--board",
        "arm64-usr",
        "--qemu-image",
        m.to_str().unwrap(),
        "cl.basic",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("amd64") && err.contains("arm64"), "{err}");
}

#[test]
fn check_console_finds_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.txt");
    std::fs::write(
        &bad,
        "[    0.1] Linux version 6.1\n[    5.123456] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n",
    )
    .unwrap();
    let good = d.path().join("good.txt");
    std::fs::write(&good, "[  OK  ] Reached target multi-user.target\n").unwrap();
    let (code, out, _) = run(&["check-console", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("kernel panic"), "{out}");
    assert!(out.contains(":2:"), "names the line: {out}");
    let (code, out, _) = run(&["check-console", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn list_json_names_requirements() {
    let (code, out, _) = run(&["list", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let basic = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "cl.basic")
        .expect("cl.basic is listed");
    assert_eq!(basic["cluster_size"], 1);
    assert!(basic["requires"].is_array());
}

#[test]
fn unknown_pxe_root_is_an_input_error() {
    let d = tempfile::tempdir().unwrap();
    for f in ["disk.qcow2", "vmlinuz", "initrd.img"] {
        std::fs::write(d.path().join(f), b"x").unwrap();
    }
    let m = d.path().join("manifest.json");
    std::fs::write(
        &m,
        r#"{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","kernel":"vmlinuz","initrd":"initrd.img","contains":["nbd-root"]}"#,
    )
    .unwrap();
    let (code, _, err) = run(&[
        "run",
        "-p",
        "pxe",
        "--qemu-image",
        m.to_str().unwrap(),
        "--pxe-root",
        "nfs",
        "cl.basic",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--pxe-root \"nfs\" is not auto, nbd, disk or none"),
        "{err}"
    );
}
