//! `coreos.ignition.*` and `cl.ignition.*` tests that work without Flatcar's partitions.

use anyhow::Result;
use bogie_harness::{Config, Test, TestCluster};

use crate::util::{assert_output_eq, assert_unit_active};

/// The tests of this module.
pub fn tests() -> Vec<Test> {
    vec![
        Test::new("coreos.ignition.systemd.enable-service", enable_service)
            .description(
                "Ignition enables a unit shipped disabled (nfs-server.service) and it runs",
            )
            .platforms(&["qemu", "qemu-unpriv", "azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .requires(&["nfs-server"])
            .config(Config::new().enable_unit("nfs-server.service", true)),
        Test::new("coreos.ignition.sethostname", sethostname)
            .description("Ignition writes /etc/hostname and the machine takes the name")
            .platforms(&["!azure"])
            .distros(&["cl", "fcos", "rhcos"])
            .config(Config::new().file("/etc/hostname", "core1\n", 0o644)),
    ]
}

async fn enable_service(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_unit_active(&m, "nfs-server.service", 60).await
}

async fn sethostname(c: TestCluster) -> Result<()> {
    let m = c.machine()?;
    assert_output_eq(&m, "hostnamectl hostname 2>/dev/null || hostname", "core1").await
}
