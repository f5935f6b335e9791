//! Bad input gets one clear line and exit code 2, before anything boots.

mod common;

use common::bogie;

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = bogie().args(args).output().expect("runs bogie");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw disk image as far as bogie's checks go, read as a Flatcar of unknown version: a
/// GPT whose ROOT holds an ext4 with `ID=flatcar` in `/etc/os-release` (it holds nothing to
/// boot; tests using it stop before a machine would start).
fn raw_disk(dir: &std::path::Path) -> std::path::PathBuf {
    use bogie_diskinfo::fixtures::{gpt_disk, mkfs, PartSpec, MIB};
    let tree = dir.join("raw-disk-root");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=flatcar\n").unwrap();
    let fs = dir.join("raw-disk-root.img");
    assert!(mkfs(&tree, &fs, 4, &["-L", "ROOT"]), "mkfs.ext4 is needed");
    let root = PartSpec {
        content: Some(fs),
        ..PartSpec::new("ROOT", bogie_diskinfo::gpt::types::LINUX_DATA, MIB, 4 * MIB)
    };
    let p = dir.join("flatcar_production_image.bin");
    gpt_disk(&p, 512, &[root], 6 * MIB);
    p
}

/// Asserts bogie refused the command line as bad input: exit 2 and exactly one line on
/// stderr, containing every one of `needles`. Returns the line.
fn refused<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], needles: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "{args:?}: stdout {out} stderr {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} not in {err}");
    }
    err.trim().to_string()
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
    let disk = raw_disk(d.path());
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

#[test]
fn files_that_are_not_disk_images_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let text = d.path().join("flatcar_production_image.bin");
    std::fs::write(&text, b"this is a text file\n").unwrap();
    let empty = d.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let zeros = d.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 2 << 20]).unwrap();
    for (image, why) in [
        (&text, "too small for a raw disk"),
        (&empty, "it is empty"),
        (&zeros, "no partition table"),
    ] {
        let path = image.to_str().unwrap();
        for cmd in ["run", "spawn"] {
            refused(
                &[cmd, "--qemu-image", path],
                &[
                    &format!("--qemu-image {path}: not a bogie manifest.json, a qcow2 or a raw disk image"),
                    why,
                ],
            );
        }
    }
    refused(
        &["run", "--qemu-image", d.path().to_str().unwrap()],
        &["--qemu-image", "it is a directory"],
    );
}

#[test]
fn qemu_memory_and_cpus_must_be_bootable_numbers() {
    refused(
        &["run", "--qemu-memory", "0", "cl.basic"],
        &[
            "--qemu-memory",
            "0 MiB is too little to boot (at least 256)",
        ],
    );
    refused(
        &["spawn", "--qemu-memory=255"],
        &["--qemu-memory", "255 MiB is too little"],
    );
    refused(
        &["run", "--qemu-memory", "2G", "cl.basic"],
        &["--qemu-memory", "not a whole number of MiB"],
    );
    refused(&["run", "--qemu-cpus", "0", "cl.basic"], &["--qemu-cpus"]);
}

#[test]
fn ignition_version_takes_kolas_values() {
    refused(
        &["run", "--ignition-version", "v9", "cl.basic"],
        &["--ignition-version \"v9\": kola's values are v2 and v3"],
    );
    // v2 and v3 are both taken: the run goes on to the image.
    for v in ["--ignition-version=v2", "--ignition-version=v3"] {
        refused(
            &[
                "run",
                v,
                "--qemu-image=/nonexistent/flatcar.img",
                "cl.basic",
            ],
            &["/nonexistent/flatcar.img"],
        );
    }
}

#[test]
fn output_dir_must_be_a_writable_directory() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let f = file.to_str().unwrap();
    refused(
        &["run", "--output-dir", f, "cl.basic"],
        &[&format!("--output-dir {f}: it is not a directory")],
    );
    let under = format!("{f}/out");
    refused(
        &["spawn", "--output-dir", &under],
        &[&format!("--output-dir {under}: {f} is not a directory")],
    );
    // Nothing may be created in /proc, whoever runs the test (root included).
    refused(
        &["run", "--output-dir", "/proc/bogie-out", "cl.basic"],
        &["--output-dir /proc/bogie-out: /proc is not writable"],
    );
}

#[test]
fn tapfile_is_checked_before_anything_boots() {
    let d = tempfile::tempdir().unwrap();
    let disk = raw_disk(d.path());
    let image = format!("--qemu-image={}", disk.display());
    let dir = d.path().to_str().unwrap();
    refused(
        &["run", &image, "--tapfile", dir, "cl.basic"],
        &[&format!("--tapfile {dir}: it is a directory, not a file")],
    );
    let missing = d.path().join("results");
    let tap = missing.join("results-run-1.tap");
    let t = tap.to_str().unwrap();
    refused(
        &["run", &image, &format!("--tapfile={t}"), "cl.basic"],
        &[&format!(
            "--tapfile {t}: directory {} does not exist (bogie does not create it)",
            missing.display()
        )],
    );
    assert!(!missing.exists(), "kola does not create the directory");
    refused(
        &["run", &image, "--tapfile", "/proc/results.tap", "cl.basic"],
        &["--tapfile /proc/results.tap: /proc is not writable"],
    );
    // `report merge` writes a TAP file too.
    refused(
        &["report", "merge", dir, "--output", dir, "--tapfile", t],
        &["--tapfile", "does not exist"],
    );
}

#[test]
fn kola_flags_bogie_does_not_honour_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let disk = raw_disk(d.path());
    let image = format!("--qemu-image={}", disk.display());
    for flags in [
        &["--update-payload=tmp/flatcar_test_update.gz"][..],
        &["--torcx-manifest=/w/torcx_manifest.json"],
        &["--devcontainer-url", "http://bincache/dev.bin"],
        &["--devcontainer-file", "dev.bin"],
        &["--devcontainer-binhost-url", "http://bincache/pkgs"],
        &["--force-flatcar-key"],
    ] {
        let flag = flags[0].split('=').next().unwrap();
        let line = format!("error: {flag} is not supported by bogie yet");
        for cmd in ["run", "spawn"] {
            let mut args = vec![cmd, image.as_str()];
            args.extend_from_slice(flags);
            assert_eq!(refused(&args, &[]), line);
        }
    }
    // --qemu-grow-base-disk-by is honoured: a value that is not a size is refused up front.
    for cmd in ["run", "spawn"] {
        refused(
            &[cmd, image.as_str(), "--qemu-grow-base-disk-by", "lots"],
            &["error: --qemu-grow-base-disk-by \"lots\" is not a size"],
        );
    }
    // --qemu-skip-mangle is a flag bogie honours (it boots a raw disk unmangled): accepted.
    refused(
        &[
            "run",
            "--qemu-skip-mangle",
            "--qemu-image=/nonexistent/flatcar.img",
            "cl.basic",
        ],
        &["/nonexistent/flatcar.img"],
    );
    // Listing boots nothing: the flags are no reason to refuse it.
    let (code, _, err) = run(&["list", "--enable-secureboot", "cl.basic"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn secure_boot_is_refused_where_it_cannot_be_enforced() {
    let d = tempfile::tempdir().unwrap();
    let disk = raw_disk(d.path());
    let image = format!("--qemu-image={}", disk.display());
    let bios = d.path().join("bios-256k.bin");
    std::fs::write(&bios, b"bios").unwrap();
    let bios_flag = format!("--qemu-firmware={}", bios.display());
    for cmd in ["run", "spawn"] {
        // SeaBIOS-style firmware has no Secure Boot.
        refused(
            &[cmd, "--enable-secureboot", &image, &bios_flag],
            &[&format!(
                "error: --enable-secureboot needs UEFI: --qemu-firmware {} without --qemu-ovmf-vars is BIOS firmware, which has no Secure Boot",
                bios.display()
            )],
        );
        // arm64 is not verified.
        refused(
            &[cmd, "--enable-secureboot", "--board=arm64-usr", &image],
            &["error: --enable-secureboot is supported on amd64 only"],
        );
        // Nowhere but on qemu.
        refused(
            &[cmd, "--enable-secureboot", "-p", "aws"],
            &["error: --enable-secureboot works on --platform qemu only, not aws"],
        );
    }
    // A kernel booted directly has no firmware to enforce it.
    std::fs::write(d.path().join("disk.qcow2"), b"QFI\xfb").unwrap();
    std::fs::write(d.path().join("vmlinuz"), vec![0u8; 4096]).unwrap();
    let m = d.path().join("manifest.json");
    std::fs::write(
        &m,
        r#"{"format":"bogie-image/1","arch":"amd64","disk":"disk.qcow2","boot":"direct-kernel","kernel":"vmlinuz","kernel_args":"root=/dev/vda"}"#,
    )
    .unwrap();
    refused(
        &[
            "run",
            "--enable-secureboot",
            "--qemu-image",
            m.to_str().unwrap(),
            "cl.basic",
        ],
        &[
            "error: --enable-secureboot: image ",
            "boots its kernel directly, without firmware",
        ],
    );
    refused(
        &["bench", "--enable-secureboot"],
        &["error: --enable-secureboot is not supported by bogie bench"],
    );
}

/// Flatcar's `ci-automation/vendor-testing/qemu.sh` command line (BIOS) with `kola`
/// replaced by `cmd`: its quoted `"${ovmf_vars:+--qemu-ovmf-vars=${ovmf_vars}}"` is an
/// empty argument, which kola ignores.
fn qemu_sh(
    cmd: &str,
    disk: &std::path::Path,
    tap: &std::path::Path,
    tests: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
        cmd,
        "--board=amd64-usr",
        "--parallel=2",
        "--platform=qemu",
        "--qemu-firmware=/usr/share/qemu/bios-256k.bin",
        &format!("--qemu-image={}", disk.display()),
        &format!("--tapfile={}", tap.display()),
        "",
        "--image-version",
        "4799.0.0+nightly-20261120-2100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(tests.iter().map(|s| s.to_string()));
    args
}

#[test]
fn flatcar_qemu_sh_empty_argument_is_no_pattern() {
    let d = tempfile::tempdir().unwrap();
    let disk = raw_disk(d.path());
    let tap = d.path().join("results-run-1.tap");
    let (code, out, err) = run(&qemu_sh("list", &disk, &tap, &["cl.basic"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("cl.")).count(),
        1,
        "{out}"
    );
    assert!(out.contains("cl.basic"), "{out}");
    // Only the empty argument: every test, as with no pattern at all.
    let (code, only_empty, err) = run(&qemu_sh("list", &disk, &tap, &[]));
    assert_eq!(code, 0, "{err}");
    let (code, none, err) = run(&["list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(only_empty, none);
    // `run` gets past the patterns to the test names: the unknown one is named, not "".
    // (The QEMU platform is set up first and may warn, e.g. that KVM is not usable.)
    let (code, _, err) = run(&qemu_sh("run", &disk, &tap, &["no.such.test"]));
    assert_eq!(code, 2, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(
        errors,
        ["error: unknown test \"no.such.test\" (see `bogie list`)"],
        "{err}"
    );
    assert!(!tap.exists(), "nothing ran, no TAP was written");
}

/// `--qemu-accel` on a host whose KVM cannot run guests, faked by a `qemu-system-x86_64`
/// that logs its arguments and never runs a guest: `kvm` is an input error naming the
/// reason (the flag and `BOGIE_QEMU_ACCEL` alike), `auto` falls back to TCG with one
/// warning, `tcg` never probes.
#[test]
fn qemu_accel_kvm_refuses_a_host_that_cannot_run_guests_and_tcg_never_probes() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = d.path().join("calls.log");
    // The probe (a `-bios` ROM under KVM) waits for a guest that never prints; a machine
    // start exits at once.
    let script = format!(
        "#!/bin/sh\necho \"$*\" >>{}\ncase \"$*\" in *'-accel kvm'*) exec sleep 30;; esac\nexit 1\n",
        calls.display()
    );
    let fake = bin.join("qemu-system-x86_64");
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let disk = raw_disk(d.path());
    let out = d.path().join("out");
    let args = |accel: Option<&str>| {
        let mut a = vec![
            "run".to_string(),
            "-p".into(),
            "qemu".into(),
            "--board".into(),
            "amd64-usr".into(),
            "--qemu-image".into(),
            disk.display().to_string(),
            "--output-dir".into(),
            out.display().to_string(),
        ];
        if let Some(accel) = accel {
            a.extend(["--qemu-accel".into(), accel.into()]);
        }
        a.push("cl.basic".into());
        a
    };
    let go = |accel: Option<&str>, env: Option<&str>| {
        let mut c = bogie();
        c.args(args(accel))
            .env("PATH", &path)
            .env_remove("BOGIE_QEMU_ACCEL");
        if let Some(e) = env {
            c.env("BOGIE_QEMU_ACCEL", e);
        }
        let o = c.output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for (flag, env) in [(Some("kvm"), None), (None, Some("kvm"))] {
        let (code, err) = go(flag, env);
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains("--qemu-accel kvm: KVM is not usable: "),
            "{err}"
        );
    }

    let _ = std::fs::remove_file(&calls);
    let (code, err) = go(Some("tcg"), None);
    assert_eq!(code, 1, "the fake QEMU cannot boot the machine: {err}");
    assert!(!err.contains("KVM is not usable"), "{err}");
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(!log.contains("-accel kvm"), "tcg probed KVM: {log}");
    assert!(log.contains("-accel tcg"), "{log}");

    // auto: a device that is missing or refuses fails the ioctl check before QEMU runs;
    // one that accepts gets the probe guest, which never prints. TCG either way, with
    // one warning.
    let (code, err) = go(None, None);
    assert_eq!(code, 1, "{err}");
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("KVM is not usable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("using TCG"), "{err}");
}
