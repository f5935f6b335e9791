//! End-to-end tests that boot the real test image through the QEMU platform.
//!
//! They run only when `BOGIE_TEST_IMAGE` names an image manifest from `ci/build-test-image`
//! (otherwise they print a note and pass):
//!
//! ```text
//! BOGIE_TEST_IMAGE=~/.cache/bogie/images/amd64-<key>/manifest.json \
//!     cargo test -p bogie-platform-qemu --test e2e -- --nocapture --test-threads=1
//! ```
//!
//! They need `ssh` and `ssh-keygen`, and check that no QEMU process or overlay is left.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bogie_harness::{Cluster, ClusterSpec, ImageInfo, Machine, MachineSpec, Platform};
use bogie_platform_qemu::{default_cpus, down, QemuMachine, QemuOptions, QemuPlatform};

/// Boots share 2 cores: one test at a time, so timings mean something.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn image() -> Option<ImageInfo> {
    let Some(p) = std::env::var_os("BOGIE_TEST_IMAGE") else {
        eprintln!("skipped: set BOGIE_TEST_IMAGE=/path/to/manifest.json to boot the test image");
        return None;
    };
    Some(ImageInfo::load(Path::new(&p)).expect("BOGIE_TEST_IMAGE must be a loadable image"))
}

fn platform(image: ImageInfo, parallel: u32) -> QemuPlatform {
    let arch = image.arch.expect("manifest names its arch");
    let mut o = QemuOptions::new(image, arch);
    o.cpus = default_cpus(parallel);
    QemuPlatform::new(o).expect("platform validates")
}

struct Key {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public: String,
}

fn keygen() -> Key {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "bogie-e2e", "-f"])
        .arg(&private)
        .status()
        .expect("ssh-keygen runs");
    assert!(st.success());
    let public = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    Key {
        _dir: dir,
        private,
        public: public.trim().to_string(),
    }
}

fn ignition(key: &Key) -> String {
    serde_json::json!({
        "ignition": { "version": "3.3.0" },
        "passwd": { "users": [ { "name": "core", "sshAuthorizedKeys": [ key.public ] } ] }
    })
    .to_string()
}

fn machine_spec(dir: &Path, id: &str, ignition: &str, may_outlive: bool) -> MachineSpec {
    let mdir = dir.join(id);
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("ignition.json"), ignition).unwrap();
    MachineSpec {
        id: id.into(),
        dir: mdir,
        ignition: ignition.into(),
        memory_mb: None,
        cpus: None,
        extra_disks: vec![],
        kernel_args: vec![],
        primary_disk_gib: None,
        extra_nics: 0,
        first_boot_kernel_args: Vec::new(),
        tpm: false,
        may_outlive,
        no_ssh_key_in_metadata: false,
    }
}

/// One `ssh` run with its own 10 s connect timeout and a 20 s overall limit (an early connect
/// through slirp can hang waiting for the banner). Returns (exit code, stdout).
async fn ssh(key: &Key, port: u16, command: &str) -> Option<(i32, String)> {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-i"])
        .arg(&key.private)
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            "core@127.0.0.1",
            command,
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .ok()?
        .ok()?;
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Waits for SSH, then for `systemctl is-system-running` to settle. Returns the times from
/// `since` to the first SSH login and to a settled system.
async fn wait_ready(m: &QemuMachine, key: &Key, since: Instant) -> (Duration, Duration) {
    let deadline = since + Duration::from_secs(600);
    let port = m.ssh_addr().port();
    let mut first_login = None;
    loop {
        assert!(Instant::now() < deadline, "{} not ready in time", m.id());
        assert!(
            m.is_running().await,
            "{} stopped:\n{}",
            m.id(),
            m.console_output().await.unwrap()
        );
        // ssh exits 255 on its own errors; any other code means the command ran.
        if let Some((code, state)) = ssh(key, port, "systemctl is-system-running").await {
            if code == 255 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let t = *first_login.get_or_insert_with(|| since.elapsed());
            if state == "running" || state == "degraded" {
                if state == "degraded" {
                    let failed = ssh(key, port, "systemctl --failed --no-legend").await;
                    eprintln!("{}: degraded: {failed:?}", m.id());
                }
                return (t, since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every live `qemu-system-*` process whose command line mentions `needle`.
fn qemu_processes(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let c = String::from_utf8_lossy(&c);
        if c.contains("qemu-system") && c.contains(needle) {
            v.push(pid);
        }
    }
    v
}

fn alive(pid: u32) -> bool {
    // A zombie has an empty cmdline; count it as gone.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[tokio::test]
async fn boots_to_ssh_and_is_destroyed_without_leftovers() {
    let Some(image) = image() else { return };
    let _serial = SERIAL.lock().await;
    let p = platform(image, 1);
    eprintln!("accel: {:?}, binary {}", p.accel(), p.binary().display());
    let key = keygen();
    let out = tempfile::tempdir().unwrap();
    let cdir = out.path().join("cl.e2e");
    let cluster = p
        .cluster(ClusterSpec {
            name: "cl.e2e".into(),
            dir: cdir.clone(),
        })
        .unwrap();
    let start = Instant::now();
    let m = cluster
        .boot(machine_spec(&cdir, "m0", &ignition(&key), false))
        .await
        .unwrap();
    let started = start.elapsed();
    let (login, settled) = wait_ready(&m, &key, start).await;
    eprintln!(
        "TIMING single: QEMU up {:.1}s, first SSH login {:.1}s, is-system-running settled {:.1}s",
        started.as_secs_f64(),
        login.as_secs_f64(),
        settled.as_secs_f64()
    );

    // The machine is what we asked for.
    let st = m
        .qmp_execute("query-status", None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(st["status"], "running");
    // The image boots `quiet` with no serial getty, so a clean boot may print nothing:
    // a line the guest writes to /dev/console must reach the console file.
    let (rc, out) = ssh(
        &key,
        m.ssh_addr().port(),
        "echo bogie-console-marker | sudo tee /dev/console >/dev/null",
    )
    .await
    .expect("ssh to the machine");
    assert_eq!(rc, 0, "writing to /dev/console: {out}");
    let mut console = String::new();
    for _ in 0..20 {
        console = m.console_output().await.unwrap();
        if console.contains("bogie-console-marker") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        console.contains("bogie-console-marker"),
        "the console misses what the guest wrote: {console:?}"
    );
    let (_, ip) = ssh(&key, m.ssh_addr().port(), "ip -4 -o addr show")
        .await
        .unwrap();
    assert!(
        ip.contains("10.77.0.10/24"),
        "private address missing: {ip}"
    );
    assert_eq!(m.private_ip(), Some("10.77.0.10".parse().unwrap()));
    let overlay = m.overlay();
    assert!(overlay.exists());

    // Destroy: no QEMU left, overlay gone, artifacts kept; destroy again is a no-op.
    let pid = m.pid();
    let t = Instant::now();
    cluster.destroy().await.unwrap();
    eprintln!("TIMING destroy: {:.2}s", t.elapsed().as_secs_f64());
    assert!(!m.is_running().await);
    assert!(!alive(pid), "QEMU {pid} still alive");
    assert!(qemu_processes(cdir.to_str().unwrap()).is_empty());
    assert!(!overlay.exists(), "overlay left behind");
    assert!(cdir.join("m0/console.txt").exists() && cdir.join("m0/ignition.json").exists());
    m.destroy().await.unwrap();
    cluster.destroy().await.unwrap();
    assert!(cluster
        .new_machine(machine_spec(&cdir, "m1", "", false))
        .await
        .is_err());
}

#[tokio::test]
async fn two_machines_reach_each_other_on_the_private_network() {
    let Some(image) = image() else { return };
    let _serial = SERIAL.lock().await;
    let p = platform(image, 2);
    let key = keygen();
    let out = tempfile::tempdir().unwrap();
    let cdir = out.path().join("cl.pair");
    let cluster: Box<dyn Cluster> = p
        .new_cluster(ClusterSpec {
            name: "cl.pair".into(),
            dir: cdir.clone(),
        })
        .await
        .unwrap();
    let cfg = ignition(&key);
    let start = Instant::now();
    let (a, b) = tokio::join!(
        cluster.new_machine(machine_spec(&cdir, "m0", &cfg, false)),
        cluster.new_machine(machine_spec(&cdir, "m1", &cfg, false)),
    );
    let (a, b): (Arc<dyn Machine>, Arc<dyn Machine>) = (a.unwrap(), b.unwrap());
    let ips = [a.private_ip().unwrap(), b.private_ip().unwrap()];
    let mut ready = Vec::new();
    for m in [&a, &b] {
        let port = m.ssh_addr().port();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "{} not ready",
                m.id()
            );
            if let Some((code, s)) = ssh(&key, port, "systemctl is-system-running").await {
                if code != 255 && (s == "running" || s == "degraded") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ready.push(start.elapsed());
    }
    eprintln!(
        "TIMING pair (booted together, {} vCPU each): ready at {:.1}s and {:.1}s",
        default_cpus(2),
        ready[0].as_secs_f64(),
        ready[1].as_secs_f64()
    );

    for (from, to) in [(&a, ips[1]), (&b, ips[0])] {
        let port = from.ssh_addr().port();
        let probe = format!(
            "if command -v ping >/dev/null; then ping -c 3 -W 2 {to}; \
             else timeout 5 bash -c '</dev/tcp/{to}/22' && echo tcp-ok; fi"
        );
        let t = Instant::now();
        let (code, out) = ssh(&key, port, &probe).await.unwrap();
        eprintln!(
            "{} -> {to}: exit {code} in {:.1}s\n{out}",
            from.id(),
            t.elapsed().as_secs_f64()
        );
        assert_eq!(code, 0, "{} cannot reach {to}: {out}", from.id());
    }

    let pids: Vec<u32> = qemu_processes(cdir.to_str().unwrap());
    assert_eq!(pids.len(), 2);
    cluster.destroy().await.unwrap();
    assert!(pids.iter().all(|p| !alive(*p)));
    assert!(qemu_processes(cdir.to_str().unwrap()).is_empty());
    assert!(!cdir.join("m0/disk.qcow2").exists() && !cdir.join("m1/disk.qcow2").exists());
}

#[tokio::test]
async fn dropped_machines_die_and_kept_ones_survive_until_down() {
    let Some(image) = image() else { return };
    let _serial = SERIAL.lock().await;
    let p = platform(image, 1);
    let out = tempfile::tempdir().unwrap();
    let cdir = out.path().join("cl.keep");
    let cfg = r#"{"ignition":{"version":"3.3.0"}}"#;

    // Dropped without destroy: QEMU is killed, the overlay removed.
    let cluster = p
        .cluster(ClusterSpec {
            name: "cl.keep".into(),
            dir: cdir.clone(),
        })
        .unwrap();
    let m = cluster
        .boot(machine_spec(&cdir, "dropped", cfg, false))
        .await
        .unwrap();
    let pid = m.pid();
    assert!(alive(pid));
    assert!(
        m.keep().await.is_err(),
        "a machine tied to bogie cannot be kept"
    );
    drop(m);
    drop(cluster);
    let t = Instant::now();
    while alive(pid) && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "dropped machine's QEMU survived");
    assert!(!cdir.join("dropped/disk.qcow2").exists());

    // Kept: survives its cluster being destroyed and dropped; `down` ends it.
    let cluster = p
        .cluster(ClusterSpec {
            name: "cl.keep".into(),
            dir: cdir.clone(),
        })
        .unwrap();
    let m = cluster
        .boot(machine_spec(&cdir, "kept", cfg, true))
        .await
        .unwrap();
    let kept = m.keep().await.unwrap();
    assert_eq!(kept["platform"], "qemu");
    assert_eq!(kept["pid"], m.pid());
    assert_eq!(kept["ssh_port"], m.ssh_addr().port());
    let pid = m.pid();
    cluster.destroy().await.unwrap();
    drop(m);
    drop(cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "kept machine died");
    assert!(cdir.join("kept/disk.qcow2").exists());
    // The kept machine's QMP socket is free for others.
    let mut q = bogie_platform_qemu::qmp::Qmp::connect(
        Path::new(kept["qmp"].as_str().unwrap()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        q.query_status(Duration::from_secs(5)).await.unwrap(),
        "running"
    );
    drop(q);
    let t = Instant::now();
    assert!(down(&kept).unwrap());
    eprintln!("TIMING down: {:.2}s", t.elapsed().as_secs_f64());
    assert!(!alive(pid));
    assert!(!cdir.join("kept/disk.qcow2").exists());
    assert!(!down(&kept).unwrap(), "already gone");
    assert!(qemu_processes(cdir.to_str().unwrap()).is_empty());
}

/// Firmware boot of a plain (blank) disk: UEFI starts from the pflash pair with this
/// machine's own vars copy and tries the disk first. amd64 uses OVMF passed as
/// `--qemu-firmware`/`--qemu-ovmf-vars` (SeaBIOS prints nothing on serial); arm64 uses the
/// AAVMF defaults. Runs with the other end-to-end tests.
#[tokio::test]
async fn uefi_firmware_boots_a_plain_disk_with_a_per_machine_vars_copy() {
    if image().is_none() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let out = tempfile::tempdir().unwrap();
    let disk = out.path().join("blank.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .unwrap();
    assert!(st.success());
    let cases = [
        (bogie_harness::Arch::Arm64, None, None),
        (
            bogie_harness::Arch::Amd64,
            Some(PathBuf::from("/usr/share/OVMF/OVMF_CODE.fd")),
            Some(PathBuf::from("/usr/share/OVMF/OVMF_VARS.fd")),
        ),
    ];
    for (arch, firmware, vars) in cases {
        let mut o = QemuOptions::new(ImageInfo::load(&disk).unwrap(), arch);
        o.firmware = firmware;
        o.ovmf_vars = vars;
        o.cpus = 1;
        let p = match QemuPlatform::new(o) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipped {arch}: {e}");
                continue;
            }
        };
        let cdir = out.path().join(format!("fw-{arch}"));
        let cluster = p
            .cluster(ClusterSpec {
                name: "fw".into(),
                dir: cdir.clone(),
            })
            .unwrap();
        let start = Instant::now();
        let m = cluster
            .boot(machine_spec(&cdir, "m0", "", false))
            .await
            .unwrap();
        let vars_copy = cdir.join("m0/efivars.fd");
        assert!(vars_copy.exists());
        loop {
            let console = m.console_output().await.unwrap();
            if console.contains("BdsDxe") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{arch}: no UEFI boot manager output:\n{console}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "TIMING {arch} UEFI boot manager reached in {:.1}s",
            start.elapsed().as_secs_f64()
        );
        cluster.destroy().await.unwrap();
        assert!(!vars_copy.exists() && !cdir.join("m0/disk.qcow2").exists());
        assert!(qemu_processes(cdir.to_str().unwrap()).is_empty());
    }
}

/// SIGKILL of the bogie process takes its QEMUs with it, except machines that may outlive
/// the run. The test re-runs itself as a child process that boots two machines (one tied,
/// one `may_outlive`), prints their pids and sleeps; the parent kills it with SIGKILL.
#[tokio::test]
async fn killing_bogie_kills_its_qemus_but_not_kept_ones() {
    let Some(image) = image() else { return };
    if let Some(dir) = std::env::var_os("BOGIE_E2E_CHILD_DIR") {
        let dir = PathBuf::from(dir);
        let p = platform(image, 2);
        let cluster = p
            .cluster(ClusterSpec {
                name: "cl.child".into(),
                dir: dir.clone(),
            })
            .unwrap();
        let cfg = r#"{"ignition":{"version":"3.3.0"}}"#;
        let tied = cluster
            .boot(machine_spec(&dir, "tied", cfg, false))
            .await
            .unwrap();
        let kept = cluster
            .boot(machine_spec(&dir, "kept", cfg, true))
            .await
            .unwrap();
        let json = kept.keep().await.unwrap();
        println!("BOGIE-CHILD {} {}", tied.pid(), json);
        tokio::time::sleep(Duration::from_secs(600)).await;
        return;
    }
    let _serial = SERIAL.lock().await;
    let out = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killing_bogie_kills_its_qemus_but_not_kept_ones",
            "--nocapture",
        ])
        .env("BOGIE_E2E_CHILD_DIR", out.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(rest) = l.strip_prefix("BOGIE-CHILD ") {
                return rest.to_string();
            }
        }
        panic!("child exited without booting");
    })
    .await
    .expect("child boots in time");
    let (tied_pid, kept) = line.split_once(' ').unwrap();
    let tied_pid: u32 = tied_pid.parse().unwrap();
    let kept: serde_json::Value = serde_json::from_str(kept).unwrap();
    let kept_pid = kept["pid"].as_u64().unwrap() as u32;
    assert!(alive(tied_pid) && alive(kept_pid));

    child.start_kill().unwrap(); // SIGKILL: no destructors, no destroy.
    child.wait().await.unwrap();
    let t = Instant::now();
    while alive(tied_pid) && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(tied_pid), "tied QEMU survived bogie's SIGKILL");
    eprintln!(
        "TIMING tied QEMU gone {:.2}s after SIGKILL",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(kept_pid), "kept QEMU died with bogie");
    assert!(down(&kept).unwrap());
    assert!(!alive(kept_pid));
    assert!(qemu_processes(out.path().to_str().unwrap()).is_empty());
}
