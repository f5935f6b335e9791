//! bogie's harness: the test model and registry, selection, the scheduler, the
//! `Platform`/`Cluster`/`Machine` traits, SSH, Ignition config building and console checks.
//!
//! A platform knows nothing of tests; a test knows nothing of platforms beyond what
//! [`TestCluster`] offers.

pub mod admission;
pub mod arch;
pub mod body;
pub mod bootwatch;
pub mod bringup;
pub mod buckets;
pub mod checks;
pub mod cluster;
pub mod collect;
pub mod context;
pub mod denylist;
pub mod env;
pub mod external;
pub mod failure;
pub mod ignition;
pub mod image;
pub mod instant;
pub mod machine;
pub mod pattern;
pub mod plan;
pub mod platform;
pub mod prepare;
pub mod registry;
pub mod runner;
pub mod schedule;
pub mod select;
pub mod serve;
pub mod setup;
pub mod shard;
pub mod sharing;
pub mod snapshot;
pub mod spawn;
pub mod ssh;
pub mod teardown;
pub mod test;
pub mod text;
pub mod version;

pub use arch::Arch;
pub use bringup::Phase;
pub use cluster::{skip, Skip, TestCluster};
pub use env::TestEnv;
pub use ignition::Config;
pub use image::{ImageInfo, Manifest, ProvidesFrom};
pub use machine::TestMachine;
pub use platform::{Cluster, ClusterSpec, Machine, MachineSpec, Platform, PlatformError, Template};
pub use registry::Registry;
pub use test::{Test, TestFlags};
pub use version::Version;
