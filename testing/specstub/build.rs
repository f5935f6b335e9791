//! Marks the tests that read the project's shared folder (`../shared` beside the checkout:
//! the published API descriptions, kola's test names) as ignored when it is absent, so
//! `cargo test` reports them as not run instead of counting them as passed. Under CI
//! (`CI` set and not empty) they are never ignored: they run and fail there.
//!
//! The build script of every crate with such tests (specstub, cloud, tests-catalog: their
//! Cargo.toml names this file), so each finds the folder the same way: `BOGIE_SHARED_DIR`,
//! else `shared` beside the workspace root (the directory holding `Cargo.lock`).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bogie_shared_absent)");
    println!("cargo::rerun-if-env-changed=BOGIE_SHARED_DIR");
    println!("cargo::rerun-if-env-changed=CI");
    let dir = std::env::var_os("BOGIE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
            let root = manifest
                .ancestors()
                .find(|d| d.join("Cargo.lock").is_file())
                .unwrap_or(&manifest);
            root.join("../shared")
        });
    println!("cargo::rerun-if-changed={}", dir.display());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if !dir.is_dir() && !ci {
        println!("cargo::rustc-cfg=bogie_shared_absent");
    }
}
