//! `bogie gc`: deletes what crashed runs left on a cloud: resources tagged with the
//! `--basename` (default `bogie`) and created longer ago than `--older-than`.

use bogie_platform_common::{parse_age, GcOptions};

use crate::input_error;
use crate::options::GcRequest;

/// Runs one garbage-collection pass and prints what it did; exits 1 when a leftover could
/// not be deleted.
pub async fn gc(o: &GcRequest) -> anyhow::Result<u8> {
    let (platform, args) = (&o.target.platform, &o.args);
    let older_than = parse_age(&args.older_than).ok_or_else(|| {
        input_error(format!(
            "--older-than {:?} is not an age (e.g. 6h, 2d, 90m)",
            args.older_than
        ))
    })?;
    let opts = GcOptions {
        older_than,
        basename: o.target.basename.clone(),
        dry_run: args.dry_run,
    };
    let report = crate::cloud::collect(&o.target, platform, &opts).await?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for item in &report.deleted {
        println!("{verb} {item}");
    }
    for (item, why) in &report.failed {
        eprintln!("could not delete {item}: {why}");
    }
    println!(
        "{platform}: {} {verb}, {} failed, {} of basename {:?} younger than {} left alone",
        report.deleted.len(),
        report.failed.len(),
        report.young,
        opts.basename,
        args.older_than
    );
    Ok(if report.ok() { 0 } else { 1 })
}
