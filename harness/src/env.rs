//! What a test may know about its run: [`TestEnv`].

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::arch::Arch;
use crate::image::ImageInfo;
use crate::version::Version;

/// Facts about the run a test may look at.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Platform name.
    pub platform: String,
    /// Architecture.
    pub arch: Arch,
    /// The image.
    pub image: Arc<ImageInfo>,
    /// The image version, when known.
    pub version: Option<Version>,
    /// Capabilities of image and platform together.
    pub provides: BTreeSet<String>,
    /// Whether the run may reach the internet (`--no-net` clears it).
    pub internet: bool,
}
