//! `bogie gc -p aws`: deletes instances, key pairs and security groups that crashed runs
//! left behind, found by their `bogie:basename` and `bogie:created` tags.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use bogie_platform_common::tags::{TAG_BASENAME, TAG_CREATED};
use bogie_platform_common::{GcItem, GcOptions, GcReport};

use crate::{api_err, err_code, filter, tag_value};

/// Finds and (unless a dry run) deletes this basename's leftovers older than the cut-off:
/// instances first (terminated, then waited for), then security groups, then key pairs.
/// Resources of other basenames, untagged ones and young ones are left alone.
pub async fn gc(
    client: &aws_sdk_ec2::Client,
    opts: &GcOptions,
) -> Result<GcReport, bogie_harness::PlatformError> {
    let mut report = GcReport::default();
    let by_basename = filter(&format!("tag:{TAG_BASENAME}"), &[&opts.basename]);

    // Instances (not already terminated).
    let out = client
        .describe_instances()
        .filters(by_basename.clone())
        .filters(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped"],
        ))
        .send()
        .await
        .map_err(|e| api_err("DescribeInstances", e))?;
    let mut doomed = Vec::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let Some(id) = i.instance_id() else { continue };
        let created = tag_value(i.tags(), TAG_CREATED);
        if opts.is_leftover(tag_value(i.tags(), TAG_BASENAME), created) {
            doomed.push(id.to_string());
            report
                .deleted
                .push(GcItem::new("instance", id, created.map(str::to_string)));
        } else {
            report.young += 1;
        }
    }
    if !doomed.is_empty() && !opts.dry_run {
        if let Err(e) = client
            .terminate_instances()
            .set_instance_ids(Some(doomed.clone()))
            .send()
            .await
        {
            let msg = api_err("TerminateInstances", e).to_string();
            report.deleted.retain(|it| {
                let gone = it.kind == "instance" && doomed.contains(&it.id);
                if gone {
                    report.failed.push((it.clone(), msg.clone()));
                }
                !gone
            });
        } else {
            wait_terminated(client, &doomed, Duration::from_secs(600)).await;
        }
    }

    // Security groups.
    let out = client
        .describe_security_groups()
        .filters(by_basename.clone())
        .send()
        .await
        .map_err(|e| api_err("DescribeSecurityGroups", e))?;
    for g in out.security_groups() {
        let Some(id) = g.group_id() else { continue };
        let created = tag_value(g.tags(), TAG_CREATED);
        if !opts.is_leftover(tag_value(g.tags(), TAG_BASENAME), created) {
            report.young += 1;
            continue;
        }
        let item = GcItem::new("security-group", id, created.map(str::to_string));
        if opts.dry_run {
            report.deleted.push(item);
            continue;
        }
        let start = Instant::now();
        loop {
            match client.delete_security_group().group_id(id).send().await {
                Ok(_) => {
                    report.deleted.push(item);
                    break;
                }
                Err(e)
                    if err_code(&e) == "DependencyViolation"
                        && start.elapsed() < Duration::from_secs(180) =>
                {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Err(e) => {
                    report
                        .failed
                        .push((item, api_err("DeleteSecurityGroup", e).to_string()));
                    break;
                }
            }
        }
    }

    // Key pairs.
    let out = client
        .describe_key_pairs()
        .filters(by_basename)
        .send()
        .await
        .map_err(|e| api_err("DescribeKeyPairs", e))?;
    for k in out.key_pairs() {
        let Some(name) = k.key_name() else { continue };
        let created = tag_value(k.tags(), TAG_CREATED);
        if !opts.is_leftover(tag_value(k.tags(), TAG_BASENAME), created) {
            report.young += 1;
            continue;
        }
        let item = GcItem::new("key-pair", name, created.map(str::to_string));
        if opts.dry_run {
            report.deleted.push(item);
            continue;
        }
        match client.delete_key_pair().key_name(name).send().await {
            Ok(_) => report.deleted.push(item),
            Err(e) => report
                .failed
                .push((item, api_err("DeleteKeyPair", e).to_string())),
        }
    }
    Ok(report)
}

async fn wait_terminated(client: &aws_sdk_ec2::Client, ids: &[String], max: Duration) {
    let start = Instant::now();
    while start.elapsed() < max {
        let Ok(out) = client
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
        else {
            return;
        };
        if out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .all(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated))
        {
            return;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}
