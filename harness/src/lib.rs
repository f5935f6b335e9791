//! bogie's harness: the test model and registry, selection, the scheduler, the
//! `Platform`/`Cluster`/`Machine` traits, SSH, Ignition config building and console checks.
//!
//! A platform knows nothing of tests; a test knows nothing of platforms beyond what
//! [`TestCluster`] offers.

pub mod admission;
pub mod arch;
pub mod bootwatch;
pub mod checks;
pub mod cluster;
pub mod denylist;
pub mod external;
pub mod ignition;
pub mod image;
pub mod instant;
pub mod platform;
pub mod registry;
pub mod runner;
pub mod schedule;
pub mod select;
pub mod serve;
pub mod shard;
pub mod sharing;
pub mod snapshot;
pub mod spawn;
pub mod ssh;
pub mod test;

pub use arch::Arch;
pub use cluster::{skip, Phase, Skip, TestCluster, TestEnv, TestMachine};
pub use ignition::Config;
pub use image::{ImageInfo, Manifest};
pub use platform::{Cluster, ClusterSpec, Machine, MachineSpec, Platform, PlatformError, Template};
pub use registry::Registry;
pub use test::{Test, TestFlags, Version};
