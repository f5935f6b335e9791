//! Machine shapes on the real test image under QEMU (TCG), all on one machine (two boots):
//! extra disks of given sizes, interfaces, sector sizes and serials (one 4Kn, one NVMe, one
//! SCSI 512e, one multipath), a primary disk grown by `--qemu-grow-base-disk-by`, extra
//! user-mode NICs with their MACs beside the private network, and per-test and
//! first-boot-only kernel arguments on the first and the second boot. Then nothing is
//! left: no QEMU, no disk files. (A test's own primary-disk minimum takes the same path,
//! `qemu-img create` with a size; `primary_disk_size` is unit-tested in the platform.)
//!
//! Needs `BOGIE_TEST_IMAGE` (the manifest from `ci/build-test-image --arch amd64`; `ci/test`
//! sets it).

mod common;

use std::path::Path;

use anyhow::{bail, ensure, Context};
use bogie_harness::platform::{extra_nic_mac, DiskInterface, DiskSpec, SectorSize};
use bogie_harness::{Registry, Test, TestCluster};
use bogie_reports::Status;
use common::{dispatch, qemu_processes_mentioning, qemu_run_args, results, serial};

const GIB: u64 = 1 << 30;

/// The multipath disk's WWN.
const MPATH_WWN: u64 = 0x5000_c500_155a_3456;

/// The extra disks of `shape.disks-nics-kargs`: (spec, the end of its `/dev/disk/by-id`
/// link, logical and physical block size). udev names each by its serial, a SCSI disk with
/// a WWN by the WWN.
fn disks() -> Vec<(DiskSpec, String, u64, u64)> {
    let mut mpath = DiskSpec::new(1).multipath().serial("mpdisk");
    mpath.wwn = Some(MPATH_WWN);
    vec![
        (
            DiskSpec::new(2)
                .sectors(SectorSize::Native4k)
                .serial("fourk"),
            "fourk".into(),
            4096,
            4096,
        ),
        (
            DiskSpec::new(3)
                .interface(DiskInterface::Nvme)
                .serial("fastnvme"),
            "fastnvme".into(),
            512,
            512,
        ),
        (
            DiskSpec::new(1)
                .interface(DiskInterface::Scsi)
                .sectors(SectorSize::Emulated512)
                .serial("scsidisk"),
            "scsidisk".into(),
            512,
            4096,
        ),
        (mpath, format!("wwn-{MPATH_WWN:#x}"), 512, 512),
    ]
}

/// `/dev/vda`'s size in bytes.
async fn primary_size(c: &TestCluster) -> anyhow::Result<u64> {
    let m = c.machine()?;
    let out = m
        .must_ssh("sudo blockdev --getsize64 /dev/disk/by-id/virtio-primary-disk")
        .await?;
    out.trim().parse().context("blockdev --getsize64")
}

async fn cmdline(c: &TestCluster) -> anyhow::Result<Vec<String>> {
    let out = c.machine()?.must_ssh("cat /proc/cmdline").await?;
    Ok(out.split_whitespace().map(String::from).collect())
}

fn fixtures(base: u64) -> Registry {
    let mut r = Registry::new();
    let specs: Vec<DiskSpec> = disks().into_iter().map(|d| d.0).collect();
    r.register(
        Test::new("shape.disks-nics-kargs", move |c| async move {
            c.run("disks", |c| async move {
                let m = c.machine()?;
                for (spec, serial, logical, physical) in disks() {
                    let out = m
                        .must_ssh(&format!(
                            "d=$(readlink -f $(ls /dev/disk/by-id/*{serial} | head -n1)) && echo $d $(sudo blockdev --getsize64 --getss --getpbsz $d)"
                        ))
                        .await?;
                    let f: Vec<&str> = out.split_whitespace().collect();
                    ensure!(f.len() == 4, "{serial}: {out:?}");
                    let want = (u64::from(spec.size_gib) * GIB, logical, physical);
                    let got: (u64, u64, u64) = (f[1].parse()?, f[2].parse()?, f[3].parse()?);
                    ensure!(got == want, "{serial} ({}): {got:?}, expected {want:?}", f[0]);
                    let prefix = match spec.interface {
                        _ if spec.multipath => "/dev/sd",
                        DiskInterface::Virtio => "/dev/vd",
                        DiskInterface::Nvme => "/dev/nvme",
                        DiskInterface::Scsi => "/dev/sd",
                    };
                    ensure!(f[0].starts_with(prefix), "{serial} is {}", f[0]);
                }
                // The multipath disk: two SCSI disks with its WWN and serial.
                let out = m.must_ssh("lsblk -dnro NAME,WWN,SERIAL").await?;
                let paths: Vec<&str> = out
                    .lines()
                    .filter(|l| l.contains(&format!("{MPATH_WWN:#x}")))
                    .collect();
                ensure!(paths.len() == 2, "two paths to the mpath disk: {out:?}");
                ensure!(
                    paths.iter().all(|l| l.ends_with(" mpdisk")),
                    "the paths' serials: {paths:?}"
                );
                Ok(())
            })
            .await;
            c.run("grown-primary-disk", |c| async move {
                let size = primary_size(&c).await?;
                ensure!(size == base + GIB, "/dev/vda is {size} bytes, expected {}", base + GIB);
                Ok(())
            })
            .await;
            c.run("nics", |c| async move {
                let m = c.machine()?;
                let out = m
                    .must_ssh("for n in /sys/class/net/eth*; do echo ${n##*/} $(cat $n/address); done")
                    .await?;
                let macs: Vec<&str> = out
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(1))
                    .collect();
                // The first NIC, the private network and the two extra NICs.
                ensure!(macs.len() == 4, "interfaces: {out:?}");
                for n in 0..2 {
                    let mac = extra_nic_mac(n);
                    ensure!(macs.contains(&mac.as_str()), "{mac} not among {out:?}");
                }
                // The private network is configured as before.
                let addrs = m.must_ssh("ip -4 -o addr show").await?;
                ensure!(addrs.contains("10.77.0."), "no private address: {addrs}");
                Ok(())
            })
            .await;
            c.run("kernel-args", |c| async move {
                let first = cmdline(&c).await?;
                for want in ["bogie.every=1", "bogie.first=1"] {
                    ensure!(first.iter().any(|a| a == want), "first boot: {first:?}");
                }
                c.machine()?.reboot().await?;
                let second = cmdline(&c).await?;
                ensure!(
                    second.iter().any(|a| a == "bogie.every=1"),
                    "second boot: {second:?}"
                );
                ensure!(
                    !second.iter().any(|a| a == "bogie.first=1"),
                    "second boot kept the first boot's argument: {second:?}"
                );
                // Its disks are still there after the relaunch.
                c.machine()?
                    .must_ssh("ls /dev/disk/by-id/*fourk /dev/disk/by-id/*fastnvme")
                    .await?;
                Ok(())
            })
            .await;
            let failed = c.failed_subtests();
            if !failed.is_empty() {
                bail!("failed: {}", failed.join(", "));
            }
            Ok(())
        })
        .distros(&[])
        .disks(&specs)
        .extra_nics(2)
        .kernel_args(&["bogie.every=1"])
        .first_boot_kernel_args(&["bogie.first=1"]),
    )
    .unwrap();
    r
}

/// The virtual size of the image's disk, from `qemu-img info`.
fn base_disk_size(manifest: &Path) -> u64 {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    let disk = manifest.parent().unwrap().join(m["disk"].as_str().unwrap());
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

/// Files under `dir` whose name ends in `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn machines_get_the_disks_nics_and_kernel_arguments_their_tests_ask_for() {
    let _g = serial();
    let base = base_disk_size(&common::test_image());
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let mut args = qemu_run_args(&out);
    // One machine: give it both vCPUs (-j 1).
    let j = args.iter().position(|a| a == "-j").unwrap();
    args[j + 1] = "1".into();
    args.extend(["--qemu-grow-base-disk-by".into(), "1G".into()]);
    args.push("shape.*".into());
    let started = std::time::Instant::now();
    let code = dispatch(&args, fixtures(base));
    eprintln!("shape run: {:.0}s", started.elapsed().as_secs_f64());
    let report = results(&out);
    assert_eq!(report.tests.len(), 1);
    for t in &report.tests {
        let a = t.attempts.last().unwrap();
        let subtests: Vec<String> = a
            .subtests
            .iter()
            .map(|s| format!("{} {:?} {}", s.name, s.status, s.message))
            .collect();
        assert_eq!(
            t.status,
            Status::Pass,
            "{}: {:?} {subtests:#?}",
            t.name,
            t.last_failure().map(|f| &f.message)
        );
    }
    assert_eq!(code, 0);
    let shaped = report
        .tests
        .iter()
        .find(|t| t.name == "shape.disks-nics-kargs")
        .unwrap();
    assert_eq!(shaped.attempts[0].subtests.len(), 4);
    // The relaunched machine appended its second boot to the same console and log.
    let m = &shaped.attempts[0].machines[0];
    let console = out.join(m.console.as_ref().unwrap());
    let text = std::fs::read_to_string(&console).unwrap();
    assert_eq!(
        text.matches("bogie-test-image: initramfs mounted the root")
            .count(),
        2,
        "both boots in {}",
        console.display()
    );
    let log = std::fs::read_to_string(console.with_file_name("qemu.log")).unwrap();
    assert!(log.contains("-no-reboot"), "{log}");
    assert!(log.contains("# relaunched after the first boot: "), "{log}");
    // Nothing is left: no QEMU, no disks.
    assert!(
        qemu_processes_mentioning(&out).is_empty(),
        "QEMU left behind: {:?}",
        qemu_processes_mentioning(&out)
    );
    let disks = files_ending(&out, ".qcow2");
    assert!(disks.is_empty(), "disks left behind: {disks:?}");
}
