//! `bogie list`.

use bogie_harness::{ImageInfo, Registry};

use super::{filter_for, image_version, platform_name, resolve_arch};
use crate::cli::{Global, ListArgs};
use crate::input_error;

/// Lists tests (table or `--json`).
pub fn list(g: &Global, args: ListArgs, registry: &Registry) -> anyhow::Result<u8> {
    let mut tests: Vec<&bogie_harness::Test> = registry.tests().iter().collect();
    if !args.patterns.is_empty() {
        let ms = args
            .patterns
            .iter()
            .map(|p| bogie_harness::select::glob(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| input_error(e.to_string()))?;
        tests.retain(|t| ms.iter().any(|m| m.is_match(&t.name)));
        if tests.is_empty() {
            return Err(input_error(format!(
                "no test matches {}",
                args.patterns.join(" ")
            )));
        }
    }
    if args.filter {
        let platform = platform_name(g)?;
        let image = g
            .qemu
            .qemu_image
            .as_ref()
            .map(|p| ImageInfo::load(p).map_err(|e| input_error(e.to_string())))
            .transpose()?;
        let arch = resolve_arch(g, image.as_ref())?;
        let version = image_version(g, image.as_ref())?;
        let provides = image
            .as_ref()
            .map(|i| i.provides.clone())
            .unwrap_or_else(|| {
                bogie_harness::image::FLATCAR_PROVIDES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            });
        let f = filter_for(g, &platform, arch, version, provides, vec![], &[], false);
        tests.retain(|t| bogie_harness::select::skip_reason(t, &f, false).is_none());
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if args.json {
        let v: Vec<serde_json::Value> = tests
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name,
                    "description": t.description,
                    "platforms": t.platforms,
                    "exclude_platforms": t.exclude_platforms,
                    "architectures": t.architectures,
                    "exclude_architectures": t.exclude_architectures,
                    "distros": t.distros,
                    "cluster_size": t.cluster_size,
                    "min_version": t.min_version.map(|v| v.to_string()),
                    "end_version": t.end_version.map(|v| v.to_string()),
                    "tags": t.tags,
                    "requires": t.requires,
                    "timeout_secs": t.timeout.map(|d| d.as_secs()),
                    "non_exclusive": t.non_exclusive,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<44} {:<18} {:<12} {:>2}  {}",
            "Test Name", "Platforms", "Arches", "N", "Requires"
        );
        for t in tests {
            let mut plats: Vec<String> = t.platforms.clone();
            plats.extend(t.exclude_platforms.iter().map(|p| format!("!{p}")));
            let plats = if plats.is_empty() {
                "all".into()
            } else {
                plats.join(",")
            };
            let mut arches: Vec<String> = t.architectures.iter().map(|a| a.to_string()).collect();
            arches.extend(t.exclude_architectures.iter().map(|a| format!("!{a}")));
            let arches = if arches.is_empty() {
                "all".into()
            } else {
                arches.join(",")
            };
            let mut req = t.requires.clone();
            req.extend(t.tags.iter().map(|t| format!("#{t}")));
            println!(
                "{:<44} {:<18} {:<12} {:>2}  {}",
                t.name,
                plats,
                arches,
                t.cluster_size,
                req.join(" ")
            );
        }
    }
    Ok(0)
}
