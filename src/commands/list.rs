//! `bogie list`.

use bogie_harness::{ImageInfo, ProvidesFrom, Registry};

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
    // One load serves --show-image and --filter (a plain disk warns at most once).
    let image = o
        .show_image
        .as_ref()
        .or_else(|| {
            o.filter
                .as_ref()
                .and_then(|(t, _)| t.qemu.qemu_image.as_ref())
        })
        .map(|p| ImageInfo::load(p).map_err(|e| input_error(e.to_string())))
        .transpose()?;
    if let Some((target, selection)) = &o.filter {
        let runs = runnable(target, selection, image.as_ref())?;
        tests.retain(|t| runs(t));
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    let shown = image.as_ref().filter(|_| o.show_image.is_some());
    if o.json {
        let tests = tests_json(&tests);
        let v = match shown {
            Some(i) => serde_json::json!({ "image": image_json(i), "tests": tests }),
            None => serde_json::Value::Array(tests),
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(i) = shown {
            print_image(i);
            println!();
        }
        print_table(&tests);
    }
    Ok(0)
}

/// Whether each test would run with `--filter`'s platform, board and image (`image`, the
/// loaded `--qemu-image`: a manifest's capabilities, a plain disk's as read from it; without
/// one a Flatcar image is assumed).
fn runnable(
    target: &Target,
    selection: &Selection,
    image: Option<&ImageInfo>,
) -> anyhow::Result<impl Fn(&bogie_harness::Test) -> bool> {
    let arch = target.arch_for(image);
    let version = target.version_for(image)?;
    let provides = image.map(|i| i.provides.clone()).unwrap_or_else(|| {
        bogie_harness::image::FLATCAR_PROVIDES
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let f = selection.filter(&target.platform, arch, version, provides);
    Ok(move |t: &bogie_harness::Test| bogie_harness::select::skip_reason(t, &f, false).is_none())
}

/// Why the image provides `capability`: the disk's evidence, else where the whole set came
/// from.
fn evidence(image: &ImageInfo, capability: &str) -> String {
    if let Some(e) = image
        .provides_from
        .inspection()
        .and_then(|i| i.capabilities.get(capability))
    {
        return e.clone();
    }
    match &image.provides_from {
        ProvidesFrom::Manifest => {
            let m = image.manifest.as_ref();
            if m.is_some_and(|m| m.contains.contains(capability)) {
                "manifest contains".into()
            } else {
                format!(
                    "manifest selinux {}",
                    m.map(|m| m.selinux.as_str()).unwrap_or("")
                )
            }
        }
        ProvidesFrom::Disk(_) => "os-release ID=flatcar: what a Flatcar image ships".into(),
        ProvidesFrom::Assumed { .. } => "assumed: what a Flatcar image ships".into(),
    }
}

/// `--show-image`: what bogie knows of the image, for people.
fn print_image(image: &ImageInfo) {
    println!("Image: {}", image.path.display());
    println!("  capabilities: {}", image.provides_from.summary());
    let arch_from = image
        .provides_from
        .inspection()
        .and_then(|i| i.arch.as_ref())
        .map(|(_, how)| format!(" ({how})"))
        .unwrap_or_else(|| {
            if image.manifest.is_some() {
                " (manifest)".into()
            } else {
                String::new()
            }
        });
    match image.arch {
        Some(a) => println!("  arch: {a}{arch_from}"),
        None => println!("  arch: unknown (--board decides)"),
    }
    match (&image.version, image.has_flatcar_versions()) {
        (Some(v), _) => println!("  version: {v}"),
        (None, true) => {
            println!("  version: unknown (booted to read it when a test's range matters)")
        }
        (None, false) => println!("  version: none (not Flatcar: version ranges do not apply)"),
    }
    if let Some(i) = image.provides_from.inspection() {
        let parts: Vec<String> = i
            .partitions
            .iter()
            .map(|p| format!("{} {} ({})", p.entry.number, p.entry.name, p.fs))
            .collect();
        if !parts.is_empty() {
            println!("  partitions: {}", parts.join(", "));
        }
        let mounts: Vec<String> = i
            .mounts
            .iter()
            .map(|(at, what)| format!("{at} {what}"))
            .collect();
        if !mounts.is_empty() {
            println!("  mounts: {}", mounts.join("; "));
        }
        println!("  read in {} ms", i.elapsed.as_millis());
    }
    println!("  provides:");
    let width = image.provides.iter().map(|c| c.len()).max().unwrap_or(0);
    for c in &image.provides {
        println!("    {c:<width$}  {}", evidence(image, c));
    }
}

/// `--show-image --json`: the image as an object.
fn image_json(image: &ImageInfo) -> serde_json::Value {
    let (source, reason) = match &image.provides_from {
        ProvidesFrom::Manifest => ("manifest", None),
        ProvidesFrom::Disk(_) => ("disk", None),
        ProvidesFrom::Assumed { reason, .. } => ("assumed", Some(reason.clone())),
    };
    let provides: serde_json::Map<String, serde_json::Value> = image
        .provides
        .iter()
        .map(|c| (c.clone(), serde_json::Value::String(evidence(image, c))))
        .collect();
    let mut v = serde_json::json!({
        "path": image.path,
        "source": source,
        "summary": image.provides_from.summary(),
        "reason": reason,
        "arch": image.arch.map(|a| a.to_string()),
        "version": image.version.map(|v| v.to_string()),
        "flatcar_versions": image.has_flatcar_versions(),
        "provides": provides,
    });
    if let Some(i) = image.provides_from.inspection() {
        v["disk"] = serde_json::json!({
            "container": i.container,
            "size": i.size,
            "sector_size": i.sector_size,
            "partitions": i.partitions.iter().map(|p| serde_json::json!({
                "number": p.entry.number,
                "name": p.entry.name,
                "type_guid": p.entry.type_guid.to_string(),
                "unique_guid": p.entry.unique_guid.to_string(),
                "start": p.entry.start,
                "size": p.entry.size,
                "attributes": p.entry.attributes,
                "fs": p.fs.to_string(),
            })).collect::<Vec<_>>(),
            "mounts": i.mounts.iter().map(|(at, what)| serde_json::json!({"at": at, "what": what})).collect::<Vec<_>>(),
            "os_release": i.os_release.as_ref().map(|o| &o.fields),
            "os_problem": i.os_problem,
            "arch_from": i.arch.as_ref().map(|(_, how)| how),
            "read_ms": i.elapsed.as_millis() as u64,
        });
    }
    v
}

/// The tests as `--json`: one object per test with its declared needs.
fn tests_json(tests: &[&bogie_harness::Test]) -> Vec<serde_json::Value> {
    tests
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "description": t.description,
                "platforms": t.platforms,
                "exclude_platforms": t.exclude_platforms,
                "privileged_qemu_needs": t.privileged_qemu_needs,
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
        .collect()
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
    if let Some(needs) = t.privileged_qemu_needs.as_ref().filter(|n| !n.is_empty()) {
        v.push(format!("qemu-needs={}", needs.join(",")));
    }
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
