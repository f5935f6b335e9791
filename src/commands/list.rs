//! `bogie list`.

use bogie_harness::{ImageInfo, Registry};

use crate::input_error;
use crate::options::{ListOptions, Selection, Target};

/// Lists tests (table or `--json`).
pub fn list(o: &ListOptions, registry: &Registry) -> anyhow::Result<u8> {
    let mut tests: Vec<&bogie_harness::Test> = registry.tests().iter().collect();
    let patterns = &o.patterns;
    if !patterns.is_empty() {
        let ms = patterns
            .iter()
            .map(|p| bogie_harness::select::glob(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| input_error(e.to_string()))?;
        tests.retain(|t| ms.iter().any(|m| m.is_match(&t.name)));
        if tests.is_empty() {
            return Err(input_error(format!(
                "no test matches {}",
                patterns.join(" ")
            )));
        }
    }
    if let Some((target, selection)) = &o.filter {
        let runs = runnable(target, selection)?;
        tests.retain(|t| runs(t));
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    if o.json {
        print_json(&tests)?;
    } else {
        print_table(&tests);
    }
    Ok(0)
}

/// Whether each test would run with `--filter`'s platform, board and image (an image
/// without a manifest is assumed to be Flatcar).
fn runnable(
    target: &Target,
    selection: &Selection,
) -> anyhow::Result<impl Fn(&bogie_harness::Test) -> bool> {
    let image = target
        .qemu
        .qemu_image
        .as_ref()
        .map(|p| ImageInfo::load(p).map_err(|e| input_error(e.to_string())))
        .transpose()?;
    let arch = target.arch_for(image.as_ref());
    let version = target.version_for(image.as_ref())?;
    let provides = image
        .as_ref()
        .map(|i| i.provides.clone())
        .unwrap_or_else(|| {
            bogie_harness::image::FLATCAR_PROVIDES
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
    let f = selection.filter(&target.platform, arch, version, provides);
    Ok(move |t: &bogie_harness::Test| bogie_harness::select::skip_reason(t, &f, false).is_none())
}

/// The tests as `--json`: one object per test with its declared needs.
fn print_json(tests: &[&bogie_harness::Test]) -> anyhow::Result<()> {
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
                "min_memory_mb": t.min_memory_mb,
                "extra_disks_gib": t.extra_disks.iter().map(|d| d.size_gib).collect::<Vec<_>>(),
                "extra_disks": t.extra_disks.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "primary_disk_gib": t.primary_disk_gib,
                "extra_nics": t.extra_nics,
                "first_boot_kernel_args": t.first_boot_kernel_args,
                "kernel_args": t.kernel_args,
                "required_tag": t.required_tag,
                "conflicts": t.conflicts,
                "has_config": t.config.is_some(),
                "unsupported": t.unsupported,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// The tests as kola's table: name, platforms, arches, cluster size, requirements.
fn print_table(tests: &[&bogie_harness::Test]) {
    let rows: Vec<[String; 5]> = tests
        .iter()
        .map(|t| {
            let mut plats: Vec<String> = t.platforms.clone();
            plats.extend(t.exclude_platforms.iter().map(|p| format!("!{p}")));
            let mut arches: Vec<String> = t.architectures.iter().map(|a| a.to_string()).collect();
            arches.extend(t.exclude_architectures.iter().map(|a| format!("!{a}")));
            let mut req = t.requires.clone();
            req.extend(t.tags.iter().map(|t| format!("#{t}")));
            req.extend(machine_needs(t));
            let or_all = |v: Vec<String>| {
                if v.is_empty() {
                    "all".to_string()
                } else {
                    v.join(",")
                }
            };
            [
                t.name.clone(),
                or_all(plats),
                or_all(arches),
                t.cluster_size.to_string(),
                req.join(" "),
            ]
        })
        .collect();
    let header = ["Test Name", "Platforms", "Arches", "N", "Requires"].map(String::from);
    let width = |i: usize| {
        std::iter::once(&header)
            .chain(rows.iter())
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
        println!("{}", line.trim_end());
    }
}

/// What a test asks of its machine beyond capabilities and tags, for the Requires column
/// (external tests' metadata shows here): memory, disks, kernel arguments, a required tag,
/// and why bogie cannot run it.
fn machine_needs(t: &bogie_harness::Test) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(m) = t.min_memory_mb {
        v.push(format!("memory>={m}M"));
    }
    if !t.extra_disks.is_empty() {
        let d: Vec<String> = t.extra_disks.iter().map(|d| d.to_string()).collect();
        v.push(format!("disks={}", d.join(",")));
    }
    if let Some(g) = t.primary_disk_gib {
        v.push(format!("primary-disk>={g}G"));
    }
    if t.extra_nics > 0 {
        v.push(format!("nics=+{}", t.extra_nics));
    }
    if !t.kernel_args.is_empty() {
        v.push(format!("kargs={:?}", t.kernel_args.join(" ")));
    }
    if !t.first_boot_kernel_args.is_empty() {
        v.push(format!(
            "firstboot-kargs={:?}",
            t.first_boot_kernel_args.join(" ")
        ));
    }
    if let Some(r) = &t.required_tag {
        v.push(format!("--tag={r}"));
    }
    if let Some(u) = &t.unsupported {
        v.push(format!("(skipped: {u})"));
    }
    v
}
