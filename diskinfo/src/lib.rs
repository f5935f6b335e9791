//! Reads a disk image file without root, mounts or loop devices, to tell what the image
//! is: the container (raw or qcow2, [`format`], [`container`], [`qcow2`]), the GPT ([`gpt`]), the
//! ext2/3/4 file systems in it ([`fs`], through the `ext4-view` crate), the OS as it will
//! be mounted (ROOT at `/`, a Flatcar USR partition at `/usr`: [`view`]), its
//! `os-release` ([`osrelease`]), its architecture and the capabilities bogie's tests
//! require ([`capabilities`], one table of capability → evidence).
//!
//! [`inspect`] does all of it in one call; bogie's harness uses it for `--qemu-image`
//! disks given without a manifest.

pub mod capabilities;
pub mod container;
pub mod error;
pub mod format;
pub mod fs;
pub mod gpt;
pub mod inspect;
pub mod osrelease;
pub mod qcow2;
pub mod view;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use error::{DiskError, Result};
pub use inspect::{inspect, Arch, Inspection, PartitionInfo};
pub use osrelease::OsRelease;
