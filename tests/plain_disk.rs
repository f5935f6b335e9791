//! A plain disk (`--qemu-image` without a manifest) is read, not assumed to be Flatcar:
//! `bogie list --filter --show-image` shows the capabilities derived from what is on the
//! disk, and selects by them. Synthetic disks (built here with `mkfs.ext4`; skipped with a
//! message without it) and bogie's Flatcar-shaped test disk (`flatcar-disk.qcow2` beside
//! the `BOGIE_TEST_IMAGE` manifest; skipped with a message when that is unset, a failure
//! under `CI`). Nothing boots.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::bogie;

const DEBIAN: &str =
    "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nVARIANT_ID=bogie-test\n";

/// `bogie ARGS`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = bogie()
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("runs bogie");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bogie list --filter --show-image --json --qemu-image DISK`: the image object, the
/// listed test names and stderr.
fn list_json(disk: &Path) -> (serde_json::Value, BTreeSet<String>, String) {
    let (code, out, err) = run(&[
        "list",
        "--filter",
        "--show-image",
        "--json",
        "--qemu-image",
        disk.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let names = v["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    (v["image"].clone(), names, err)
}

/// The tests of the catalog that require `capability`.
fn requiring(capability: &str) -> BTreeSet<String> {
    let (code, out, err) = run(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["requires"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == capability)
        })
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn provides(image: &serde_json::Value) -> BTreeSet<String> {
    image["provides"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// Asserts what a Flatcar-shaped Debian disk is seen to be, and that no test requiring
/// `flatcar` is runnable on it.
fn assert_flatcar_shaped_debian(image: &serde_json::Value, listed: &BTreeSet<String>) {
    assert_eq!(image["source"], "disk", "{image:#}");
    let p = provides(image);
    for c in [
        "flatcar-partitions",
        "oem-partition",
        "usr-readonly",
        "verity",
        "docker",
        "systemd",
        "ignition",
    ] {
        assert!(p.contains(c), "{c} not derived: {p:?}");
    }
    assert!(!p.contains("flatcar"), "Debian's os-release: {p:?}");
    assert_eq!(image["disk"]["os_release"]["VARIANT_ID"], "bogie-test");
    assert_eq!(image["arch"], "amd64");
    assert_eq!(image["version"], serde_json::Value::Null);
    let flatcar_only = requiring("flatcar");
    assert!(
        !flatcar_only.is_empty(),
        "the catalog has Flatcar-only tests"
    );
    let wrongly: Vec<&String> = flatcar_only.intersection(listed).collect();
    assert!(wrongly.is_empty(), "runnable without flatcar: {wrongly:?}");
    assert!(!listed.is_empty(), "some tests run on it");
}

#[test]
fn a_flatcar_shaped_debian_disk_is_read_not_assumed() {
    let d = tempfile::tempdir().unwrap();
    let Some(disk) = bogie_diskinfo::fixtures::flatcar_shaped(d.path(), DEBIAN, None) else {
        return;
    };
    let (image, listed, err) = list_json(&disk);
    assert_eq!(err, "", "a readable disk warns nothing");
    assert_flatcar_shaped_debian(&image, &listed);
    assert_eq!(
        image["provides"]["verity"],
        "dm-verity superblock at byte 8388608 of USR-A"
    );
    // The text form names the source and each capability's evidence.
    let (code, out, err) = run(&[
        "list",
        "--show-image",
        "--qemu-image",
        disk.to_str().unwrap(),
        "cl.basic",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("capabilities: read from the disk: ID=debian VERSION_ID=12 VARIANT_ID=bogie-test (Debian GNU/Linux) (raw)"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("docker") && l.contains("/usr/sbin/dockerd")),
        "{out}"
    );
    assert!(out.contains("\ncl.basic"), "the table follows: {out}");
    // --show-image needs an image.
    let (code, _, err) = run(&["list", "--show-image"]);
    assert_eq!(code, 2);
    assert!(err.contains("--show-image needs --qemu-image"), "{err}");
}

#[test]
fn an_unreadable_disk_is_assumed_flatcar_with_one_warning() {
    let d = tempfile::tempdir().unwrap();
    let mut btrfs = vec![0u8; 0x20000];
    btrfs[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
    let Some(disk) = bogie_diskinfo::fixtures::flatcar_shaped(d.path(), DEBIAN, Some(btrfs)) else {
        return;
    };
    let (image, listed, err) = list_json(&disk);
    assert_eq!(err.lines().count(), 1, "one warning: {err}");
    assert!(
        err.contains(&format!(
            "cannot read os-release from {} (USR-A is btrfs): assuming a Flatcar image",
            disk.display()
        )),
        "{err}"
    );
    assert_eq!(image["source"], "assumed");
    assert!(provides(&image).contains("flatcar"));
    assert!(
        !requiring("flatcar").is_disjoint(&listed),
        "Flatcar tests are runnable on an assumed Flatcar"
    );
    // No partition table at all: the same, with the reason.
    let mbr = d.path().join("mbr-only.img");
    let mut bytes = vec![0u8; 1 << 20];
    bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
    std::fs::write(&mbr, bytes).unwrap();
    let (image, _, err) = list_json(&mbr);
    assert_eq!(err.lines().count(), 1, "one warning: {err}");
    assert!(
        err.contains("(no GPT partition table (and no file system on the whole disk)): assuming a Flatcar image"),
        "{err}"
    );
    assert_eq!(image["source"], "assumed");
}

/// The test image's manifest, or `None` (with a message) when `BOGIE_TEST_IMAGE` is unset
/// outside CI.
fn test_image() -> Option<PathBuf> {
    match std::env::var_os("BOGIE_TEST_IMAGE") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "BOGIE_TEST_IMAGE is not set under CI: ci/test sets it to the test image manifest"
            );
            eprintln!(
                "SKIPPED: BOGIE_TEST_IMAGE is not set (ci/test sets it to the test image manifest)"
            );
            None
        }
    }
}

/// bogie's Flatcar-shaped test disk (docs/flatcar-disk.md) is seen as what it is: Flatcar's
/// partitions, verity, read-only /usr, the test image's content, and not Flatcar.
#[test]
fn the_flatcar_shaped_test_disk_is_not_flatcar() {
    let Some(manifest) = test_image() else {
        return;
    };
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let Some(name) = m["flatcar_disk"].as_str() else {
        panic!(
            "{} names no flatcar_disk: rebuild it with ci/build-test-image",
            manifest.display()
        );
    };
    let disk = manifest.parent().unwrap().join(name);
    let t0 = std::time::Instant::now();
    let (image, listed, err) = list_json(&disk);
    let wall = t0.elapsed();
    assert_eq!(err, "", "nothing to warn about");
    assert_flatcar_shaped_debian(&image, &listed);
    // What the manifest's checks found is what the disk is seen to contain.
    let p = provides(&image);
    for c in m["contains"].as_array().unwrap() {
        let c = c.as_str().unwrap();
        assert!(
            p.contains(c),
            "manifest contains {c}, the disk reading misses it"
        );
    }
    assert_eq!(image["disk"]["container"], "qcow2 v3");
    let read_ms = image["disk"]["read_ms"].as_u64().unwrap();
    eprintln!(
        "{}: read in {read_ms} ms (bogie list in {} ms)",
        disk.display(),
        wall.as_millis()
    );
    assert!(read_ms < 5000, "reading took {read_ms} ms");
}
