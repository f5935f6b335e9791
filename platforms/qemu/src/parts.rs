//! Pieces a machine and its snapshots both use: the platform's machine error, QMP's
//! timeout, the private network's addresses, and a machine's own copy of its firmware.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bogie_harness::PlatformError;

use crate::cmdline::Firmware;
use crate::FirmwareTemplate;

/// The private network's prefix: machine N of a cluster is `10.77.0.(N+10)`.
pub const PRIVATE_NET_PREFIX: [u8; 3] = [10, 77, 0];
/// Prefix length of the private network.
pub const PRIVATE_NET_PREFIX_LEN: u8 = 24;
const FIRST_HOST: u32 = 10;

/// Timeout of one QMP command.
pub(crate) const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// A machine problem, as the platform reports it.
pub(crate) fn machine_err(msg: impl Into<String>) -> PlatformError {
    PlatformError::Machine(msg.into())
}

/// The address and MAC of machine `index` on a cluster's private network.
pub(crate) fn private_identity(cluster_tag: u8, index: u32) -> (Ipv4Addr, String) {
    let host = (index + FIRST_HOST) as u8;
    let [a, b, c] = PRIVATE_NET_PREFIX;
    (
        Ipv4Addr::new(a, b, c, host),
        format!("52:54:00:77:{cluster_tag:02x}:{host:02x}"),
    )
}

/// Specialises the image's firmware for one machine: UEFI gets its own copy of the vars
/// store in the machine dir (added to `files` for removal at teardown).
pub(crate) async fn machine_firmware(
    fw: &FirmwareTemplate,
    dir: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Firmware, PlatformError> {
    Ok(match fw {
        FirmwareTemplate::Default => Firmware::Default,
        FirmwareTemplate::Bios(f) => Firmware::Bios(f.clone()),
        FirmwareTemplate::Uefi {
            code,
            vars,
            secure_boot,
        } => {
            let ext = if crate::cmdline::format_by_suffix(vars) == "qcow2" {
                "qcow2"
            } else {
                "fd"
            };
            let copy = dir.join(format!("efivars.{ext}"));
            files.push(copy.clone());
            tokio::fs::copy(vars, &copy).await.map_err(|e| {
                PlatformError::io(
                    format!("copying {} to {}", vars.display(), copy.display()),
                    e,
                )
            })?;
            Firmware::Pflash {
                code: code.clone(),
                vars: copy,
                secure_boot: *secure_boot,
            }
        }
    })
}
