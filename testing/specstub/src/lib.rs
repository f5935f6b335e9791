//! Test support for bogie's REST cloud clients (Azure, GCE, Equinix Metal), which have no
//! local emulator.
//!
//! A [`Spec`] is loaded from the provider's published API description (Swagger 2 for Azure
//! Resource Manager, the Discovery document for Compute Engine, OpenAPI 3 for Equinix
//! Metal), `$ref`s resolved across files. A [`Stub`] serves it on 127.0.0.1 and **rejects**
//! every request the description does not allow: unknown path or method, undeclared or
//! missing required path/query parameters (including Azure's `api-version`, which must be
//! the description's version), a body with fields the schema does not have, of the wrong
//! type, missing required fields, matching no `oneOf` alternative. Allowed requests go to
//! an in-memory fake of the service ([`fakes`]): state is kept so create → get → delete
//! works, and long-running operations complete at once. The fakes' answers are checked
//! against the response schemas as well, so a client reading a misspelt field is caught.

pub mod docs;
pub mod fakes;
pub mod schema;
pub mod server;
pub mod spec;

use std::path::PathBuf;

pub use server::{Backend, Call, Record, Reply, Stub};
pub use spec::{Format, Spec};

/// Errors loading a description.
#[derive(Debug, thiserror::Error)]
pub enum StubError {
    /// A file could not be read or parsed, or a `$ref` does not resolve.
    #[error("loading the API description: {0}")]
    Load(String),
}

/// The project's shared folder beside the workspace (`<workspace>/../shared`: the cloud
/// API descriptions in `specs/`, research notes such as kola's test list), or
/// `$BOGIE_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("BOGIE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            docs::normalize(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
        })
}

/// Ends a test that cannot run for `reason` (libtest has no runtime skip): on CI (`CI` set
/// and not empty) it fails, so a test that did not run never passes there; elsewhere it
/// prints `SKIPPED: <test>: <reason>` to stderr and the caller returns. The test's name is
/// its thread's, as libtest names it.
pub fn skip_or_fail(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<test>");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} cannot run on CI: {reason}");
    }
    // Written past libtest's output capture (which only takes `eprintln!`), so the skip
    // shows in a plain `cargo test`.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// A file or folder under [`shared_dir`] a test needs, or `None` after [`skip_or_fail`]
/// when it is absent.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let p = shared_dir().join(rel);
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail(&format!(
            "{} is absent (the project's shared folder; set BOGIE_SHARED_DIR)",
            p.display()
        ));
        None
    }
}

/// The folder of published API descriptions: `$BOGIE_SPECS_DIR`, else `specs` in
/// [`shared_dir`]. `None` after [`skip_or_fail`] when absent.
pub fn specs_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("BOGIE_SPECS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_dir().join("specs"));
    let dir = docs::normalize(&dir);
    if dir.join("README.md").is_file() || dir.join("gce").is_dir() {
        Some(dir)
    } else {
        skip_or_fail(&format!(
            "the API descriptions are not at {} (set BOGIE_SPECS_DIR or BOGIE_SHARED_DIR)",
            dir.display()
        ));
        None
    }
}

/// The Azure Resource Manager files bogie's Azure client uses: resource groups, network,
/// virtual machines.
pub fn azure(dir: &std::path::Path) -> Result<Spec, StubError> {
    let az = dir.join("azure/specification");
    let net = az.join("network/resource-manager/Microsoft.Network/stable/2024-05-01");
    let files = vec![
        az.join("resources/resource-manager/Microsoft.Resources/stable/2024-07-01/resources.json"),
        az.join("compute/resource-manager/Microsoft.Compute/ComputeRP/stable/2024-07-01/virtualMachine.json"),
        net.join("virtualNetwork.json"),
        net.join("networkSecurityGroup.json"),
        net.join("publicIpAddress.json"),
        net.join("networkInterface.json"),
    ];
    Spec::swagger2(&files)
}

/// The Compute Engine v1 Discovery document.
pub fn gce(dir: &std::path::Path) -> Result<Spec, StubError> {
    Spec::discovery(&dir.join("gce/compute.v1.json"))
}

/// The Equinix Metal OpenAPI 3 description.
pub fn equinix(dir: &std::path::Path) -> Result<Spec, StubError> {
    Spec::openapi3(&dir.join("equinix-metal/openapi3.yaml"))
}
