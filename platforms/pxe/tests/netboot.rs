//! Network boot through QEMU's iPXE ROM from bogie's boot server: the boot path on its own
//! (any host with QEMU), and `cl.basic` through the real binary on the test image
//! (`BOGIE_TEST_IMAGE=<manifest>`, from `ci/build-test-image --arch amd64`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bogie_harness::{Arch, ClusterSpec, ImageInfo, MachineSpec, Platform};
use bogie_platform_pxe::{IgnitionDelivery, PxeOptions, PxePlatform, IPXE_ROM_DIR};

fn have_qemu() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok()
        && Path::new(IPXE_ROM_DIR).join("efi-virtio.rom").is_file();
    if !ok {
        eprintln!("SKIPPED: needs qemu-system-x86_64 and {IPXE_ROM_DIR} (Debian: qemu-system-x86 ipxe-qemu)");
    }
    ok
}

/// Processes whose command line contains every one of `words`.
fn processes_with(words: &[&str]) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if words.iter().all(|w| cmd.contains(w)) {
            pids.push(pid);
        }
    }
    pids
}

/// qemu-system processes whose command line names this machine.
fn qemu_processes(name: &str) -> Vec<u32> {
    processes_with(&["qemu-system", name])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipxe_fetches_the_script_kernel_and_initrd_from_bogie() {
    if !have_qemu() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // Not a bootable kernel: this test is about the network boot path up to the kernel.
    std::fs::write(d.path().join("vmlinuz"), vec![0x5au8; 64 * 1024]).unwrap();
    std::fs::write(d.path().join("initrd.img"), vec![0xa5u8; 32 * 1024]).unwrap();
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(d.path().join("disk.qcow2"))
        .arg("16M")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        d.path().join("manifest.json"),
        r#"{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","kernel":"vmlinuz","initrd":"initrd.img","kernel_args":"console=ttyS0"}"#,
    )
    .unwrap();
    let image = ImageInfo::load(&d.path().join("manifest.json")).unwrap();
    let p = PxePlatform::new(PxeOptions::new(image, Arch::Amd64))
        .await
        .unwrap();
    // The manifest names no fw_cfg_name: the config URL goes on the kernel command line.
    assert_eq!(p.ignition_delivery(), IgnitionDelivery::Url);
    let script = p.ipxe_script("m1-test");
    assert!(script.starts_with("#!ipxe\n"));
    assert!(script.contains(&format!("kernel http://10.0.2.2:{}/kernel initrd=initrd console=ttyS0 ignition.platform.id=metal ignition.config.url=http://10.0.2.2:{}/m/m1-test/config.ign", p.http_port(), p.http_port())), "{script}");
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .new_cluster(ClusterSpec {
            name: "pxe-1".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let mdir = out.path().join("m1-test");
    std::fs::create_dir_all(&mdir).unwrap();
    let m = cl
        .new_machine(MachineSpec {
            id: "m1-test".into(),
            dir: mdir.clone(),
            ignition: r#"{"ignition":{"version":"3.3.0"}}"#.into(),
            memory_mb: Some(256),
            cpus: None,
            extra_disks: vec![],
            kernel_args: vec![],
            primary_disk_gib: None,
            extra_nics: 0,
            first_boot_kernel_args: Vec::new(),
            tpm: false,
            may_outlive: false,
            no_ssh_key_in_metadata: false,
        })
        .await
        .unwrap();
    assert!(m.is_running().await);
    assert_eq!(qemu_processes("bogie-pxe-m1-test").len(), 1);
    let want = ["/m/m1-test/boot.ipxe", "/kernel", "/initrd"];
    let start = Instant::now();
    loop {
        let log = p.access_log();
        let got = |path: &str| {
            log.iter()
                .any(|a| a.path == path && a.status == 200 && a.bytes > 0)
        };
        if want.iter().all(|w| got(w)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "iPXE did not fetch everything: {log:?}\nconsole: {}",
            m.console_output().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sizes: Vec<u64> = p
        .access_log()
        .iter()
        .filter(|a| a.path == "/kernel")
        .map(|a| a.bytes)
        .collect();
    assert!(sizes.contains(&(64 * 1024)), "{sizes:?}");
    cl.destroy().await.unwrap();
    assert!(!m.is_running().await);
    assert!(
        qemu_processes("bogie-pxe-m1-test").is_empty(),
        "QEMU left running"
    );
    let log = std::fs::read_to_string(mdir.join("pxe-http.log")).unwrap();
    assert!(log.contains("200 65536 /kernel"), "{log}");
    assert!(!mdir.join("disk.qcow2").exists(), "the overlay is removed");
}

#[tokio::test]
async fn input_errors() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("disk.img"), b"x").unwrap();
    let plain = ImageInfo::load(&d.path().join("disk.img")).unwrap();
    let e = PxePlatform::new(PxeOptions::new(plain.clone(), Arch::Amd64))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("manifest"), "{e}");
    let e = PxePlatform::new(PxeOptions::new(plain, Arch::Arm64))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("amd64 guests only"), "{e}");
    std::fs::write(d.path().join("disk.qcow2"), b"x").unwrap();
    std::fs::write(
        d.path().join("m.json"),
        r#"{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","boot":"firmware"}"#,
    )
    .unwrap();
    let img = ImageInfo::load(&d.path().join("m.json")).unwrap();
    let e = PxePlatform::new(PxeOptions::new(img.clone(), Arch::Amd64))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no kernel"), "{e}");
}

/// The `bogie` binary: `$BOGIE_BIN`, else built into this test's target dir and profile.
fn bogie_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("BOGIE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "bogie", "--bin", "bogie"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("CARGO_TARGET_DIR", dir.parent().unwrap());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    assert!(
        cmd.status().unwrap().success(),
        "cargo build -p bogie failed"
    );
    dir.join("bogie")
}

/// `bogie run -p pxe ... cl.basic` on the test image: the guest has no disk and no kernel
/// from QEMU; iPXE loads the boot script, kernel and initrd from bogie's boot server, the
/// initramfs mounts the root from bogie's NBD server (an overlay of the image's disk; the
/// test image's manifest contains `nbd-root`), Ignition reads the config from fw_cfg (the
/// test image's Ignition uses the qemu provider), and `cl.basic` passes. One boot.
#[test]
fn cl_basic_passes_on_a_network_booted_guest() {
    let Some(manifest) = std::env::var_os("BOGIE_TEST_IMAGE") else {
        eprintln!("SKIPPED: set BOGIE_TEST_IMAGE to the test image manifest (ci/build-test-image --arch amd64)");
        return;
    };
    if !have_qemu() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(bogie_binary())
        .args(["run", "-p", "pxe", "--qemu-image"])
        .arg(&manifest)
        .arg("--output-dir")
        .arg(out.path())
        .arg("cl.basic")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let jsonl =
        std::fs::read_to_string(out.path().join("reports/results.jsonl")).unwrap_or_default();
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nresults:\n{jsonl}"
    );
    let test: serde_json::Value = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("test").cloned())
        .unwrap();
    assert_eq!(test["status"], "pass", "{test}");
    let console = test["attempts"][0]["machines"][0]["console"]
        .as_str()
        .unwrap();
    let mdir = out.path().join(console).parent().unwrap().to_path_buf();
    let id = mdir.file_name().unwrap().to_string_lossy().into_owned();
    let log = std::fs::read_to_string(mdir.join("pxe-http.log")).unwrap();
    for path in [
        format!("/m/{id}/boot.ipxe"),
        "/kernel".into(),
        "/initrd".into(),
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with("200 ") && l.ends_with(&path)),
            "{path} not served: {log}"
        );
    }
    assert!(
        qemu_processes(&format!("bogie-pxe-{id}")).is_empty(),
        "QEMU left running"
    );
    // Diskless: no drive on QEMU's command line, the root from NBD.
    let script = std::fs::read_to_string(mdir.join("boot.ipxe")).unwrap();
    assert!(
        script.contains(" root=/dev/nbd0 ") && script.contains(" nbdroot=10.0.2.2:"),
        "{script}"
    );
    let cmdline = std::fs::read_to_string(mdir.join("qemu.cmdline")).unwrap();
    assert!(
        !cmdline.contains("-drive"),
        "the guest has a disk: {cmdline}"
    );
    let console = std::fs::read_to_string(mdir.join("console.txt")).unwrap();
    assert!(
        console.contains("Connected /dev/nbd0"),
        "the initramfs did not connect the NBD root:\n{console}"
    );
    assert!(
        processes_with(&["qemu-nbd", mdir.to_str().unwrap()]).is_empty(),
        "qemu-nbd left running"
    );
    assert!(!mdir.join("disk.qcow2").exists(), "the overlay is removed");
}
