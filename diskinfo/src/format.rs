//! Which container an image file is: qcow2 (by its magic), a format this crate refuses by
//! name, or raw.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::container::{read_up_to, Disk, RawDisk};
use crate::error::{DiskError, Result};
use crate::qcow2::{Qcow2, MAGIC};

/// Magic numbers of container formats this crate does not read, at byte 0.
const OTHER_FORMATS: &[(&[u8], &str)] = &[
    (b"KDMV", "VMDK"),
    (b"vhdxfile", "VHDX"),
    (b"conectix", "VHD"),
    (b"QEVM", "QED"),
];

/// Opens an image file: qcow2 when it starts with qcow2's magic, else raw. VMDK, VHDX, VHD
/// and QED files are refused by name; a VDI or any other file is read as raw.
pub fn open(path: &Path) -> Result<Arc<dyn Disk>> {
    let file = File::open(path).map_err(|e| DiskError::io(path, e))?;
    let mut magic = [0u8; 8];
    let n = read_up_to(&file, 0, &mut magic).map_err(|e| DiskError::io(path, e))?;
    let magic = &magic[..n];
    if magic.starts_with(MAGIC) {
        return Ok(Arc::new(Qcow2::open(path, 0)?));
    }
    if let Some((_, name)) = OTHER_FORMATS.iter().find(|(m, _)| magic.starts_with(m)) {
        return Err(DiskError::UnsupportedContainer(name));
    }
    Ok(Arc::new(RawDisk::open(path)?))
}
