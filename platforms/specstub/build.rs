//! Marks the tests that read the project's shared folder (`../shared`, beside the
//! checkout: the published API descriptions, kola's test names) as ignored when it is
//! absent, so `cargo test` reports them as not run instead of counting them as passed.
//! Under CI (`CI` set and not empty) they are never ignored: they run and fail there.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bogie_shared_absent)");
    println!("cargo::rerun-if-env-changed=BOGIE_SHARED_DIR");
    println!("cargo::rerun-if-env-changed=CI");
    let dir = std::env::var_os("BOGIE_SHARED_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
                .join("../../../shared")
        });
    println!("cargo::rerun-if-changed={}", dir.display());
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    if !dir.is_dir() && !ci {
        println!("cargo::rustc-cfg=bogie_shared_absent");
    }
}
