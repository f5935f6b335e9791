//! The real `bogie` binary against moto: `bogie run -p aws` ends in a classified harness
//! failure with nothing left behind, and `bogie gc -p aws` removes a planted leftover.

mod support;

use std::process::Command;

use aws_sdk_ec2::types::{ArchitectureValues, InstanceAttributeName, InstanceStateName};
use base64::Engine;
use bogie_platform_common::tags::{parse_created, TAG_BASENAME, TAG_CREATED, TAG_RUN};
use support::{ami, bogie_binary, client, Moto};

/// The access key the binary is given; it must appear in no output or report.
const ACCESS_KEY: &str = "AKIABOGIELEAKCHECK01";
/// The secret key the binary is given; it must appear in no output or report.
const SECRET_KEY: &str = "bogie/leak-check/Secret+Key0123456789abcd";

fn bogie(moto: &Moto) -> Command {
    let mut c = Command::new(bogie_binary());
    c.env("AWS_ENDPOINT_URL_EC2", &moto.url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogie_run_on_aws_fails_as_harness_and_cleans_up() {
    let moto = Moto::start();
    let c = client(&moto).await;
    let x86 = ami(&c, ArchitectureValues::X8664).await;
    let out = tempfile::tempdir().unwrap();
    let basename = format!("e2e{}", std::process::id());
    let mut cmd = bogie(&moto); // builds the binary first
    moto.record();
    // `-d` logs at debug level, so the credential check below covers the chattiest output.
    // One short SSH attempt: emulated instances never answer.
    let o = cmd
        .args([
            "run",
            "-d",
            "-p",
            "aws",
            "--aws-ami",
            &x86,
            "--aws-region",
            "us-east-1",
        ])
        .args([
            "--basename",
            &basename,
            "--ssh-timeout",
            "1s",
            "--ssh-retries",
            "1",
        ])
        .arg("--output-dir")
        .arg(out.path())
        .arg("cl.basic")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_no_credentials("stdout", stdout.as_bytes());
    assert_no_credentials("stderr", stderr.as_bytes());
    let mut files = 0;
    for f in files_under(out.path()) {
        assert_no_credentials(&f.display().to_string(), &std::fs::read(&f).unwrap());
        files += 1;
    }
    assert!(files > 0, "the run wrote no files under its output dir");

    // The report says cl.basic failed, class harness.
    let jsonl = std::fs::read_to_string(out.path().join("reports/results.jsonl")).unwrap();
    let test: serde_json::Value = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("test").cloned())
        .expect("a test line");
    assert_eq!(test["name"], "cl.basic");
    assert_eq!(test["status"], "fail", "{test}");
    assert_eq!(test["attempts"][0]["failure"]["class"], "harness", "{test}");
    assert_eq!(test["platform"], "aws");

    // Its instance was created with the rendered config as user-data, and terminated.
    let insts = lifecycle_instances(&c, &basename).await;
    assert_eq!(insts.len(), 1, "{insts:?}");
    let i = &insts[0];
    assert_eq!(
        i.state().and_then(|s| s.name()),
        Some(&InstanceStateName::Terminated)
    );
    let machine = test["attempts"][0]["machines"][0]["ignition"]
        .as_str()
        .unwrap();
    let ign = std::fs::read_to_string(out.path().join(machine)).unwrap();
    let ud = c
        .describe_instance_attribute()
        .instance_id(i.instance_id().unwrap())
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let got = base64::engine::general_purpose::STANDARD
        .decode(ud.user_data().and_then(|v| v.value()).unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), ign);
    // The instance carries the run's tags.
    let tags = i.tags();
    let tag = |k: &str| {
        tags.iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .unwrap_or_else(|| panic!("instance lacks tag {k}: {tags:?}"))
            .to_string()
    };
    assert_eq!(tag(TAG_BASENAME), basename);
    let run = tag(TAG_RUN);
    assert!(!run.is_empty());
    assert!(parse_created(&tag(TAG_CREATED)).is_some(), "{tags:?}");
    // The run imported a key pair and created a security group, both tagged with its run
    // id, and deleted them again.
    for (create, delete, rt) in [
        ("ImportKeyPair", "DeleteKeyPair", "key-pair"),
        (
            "CreateSecurityGroup",
            "DeleteSecurityGroup",
            "security-group",
        ),
    ] {
        let made = moto.ec2_requests(create);
        assert_eq!(made.len(), 1, "{create}: {made:?}");
        let tags = tag_spec(&made[0], rt);
        assert_eq!(tags.get(TAG_RUN), Some(&run), "{create}: {made:?}");
        assert_eq!(
            tags.get(TAG_BASENAME),
            Some(&basename),
            "{create}: {made:?}"
        );
        assert!(tags.contains_key(TAG_CREATED), "{create}: {made:?}");
        assert_eq!(moto.ec2_requests(delete).len(), 1, "{delete}");
    }
    // No key pair or security group of the run is left.
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{TAG_BASENAME}"))
        .values(&basename)
        .build();
    let k = c
        .describe_key_pairs()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    assert!(k.key_pairs().is_empty(), "{:?}", k.key_pairs());
    let g = c
        .describe_security_groups()
        .filters(f)
        .send()
        .await
        .unwrap();
    assert!(g.security_groups().is_empty(), "{:?}", g.security_groups());
}

/// Fails if either test credential occurs in `bytes`.
fn assert_no_credentials(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(ACCESS_KEY), "{what} contains the access key");
    assert!(!text.contains(SECRET_KEY), "{what} contains the secret key");
}

/// Every regular file below `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The tags a Query-API request's `TagSpecification.N` gives resources of type `rt`.
fn tag_spec(
    req: &std::collections::BTreeMap<String, String>,
    rt: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut tags = std::collections::BTreeMap::new();
    for n in 1.. {
        let Some(t) = req.get(&format!("TagSpecification.{n}.ResourceType")) else {
            break;
        };
        if t != rt {
            continue;
        }
        for m in 1.. {
            let Some(k) = req.get(&format!("TagSpecification.{n}.Tag.{m}.Key")) else {
                break;
            };
            let v = req
                .get(&format!("TagSpecification.{n}.Tag.{m}.Value"))
                .cloned()
                .unwrap_or_default();
            tags.insert(k.clone(), v);
        }
    }
    tags
}

async fn lifecycle_instances(
    c: &aws_sdk_ec2::Client,
    basename: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = c
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{TAG_BASENAME}"))
                .values(basename)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogie_gc_on_aws_removes_a_planted_leftover() {
    let moto = Moto::start();
    let c = client(&moto).await;
    let x86 = ami(&c, ArchitectureValues::X8664).await;
    // Leftovers of the default basename "bogie": one old (a crashed run), one young (a run
    // that may still be going); an old one of another basename; and untagged resources
    // that are not bogie's at all.
    let old = support::plant(&c, &x86, "bogie", 8, "crashed-run").await;
    let young = support::plant(&c, &x86, "bogie", 2, "running-run").await;
    let foreign = support::plant(&c, &x86, "other", 48, "other-run").await;
    let unrelated = support::plant_untagged(&c, &x86, "not-bogies").await;

    let gc = |extra: &[&str]| {
        let o = bogie(&moto)
            .args([
                "gc",
                "-p",
                "aws",
                "--aws-region",
                "us-east-1",
                "--older-than",
                "6h",
            ])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
        assert_no_credentials("gc stdout", stdout.as_bytes());
        assert_no_credentials("gc stderr", stderr.as_bytes());
        stdout
    };
    let deleted = |stdout: &str, p: &(String, String, String)| {
        for line in [
            format!("deleted instance {}", p.0),
            format!("deleted key-pair {}", p.1),
            format!("deleted security-group {}", p.2),
        ] {
            assert!(stdout.contains(&line), "{line:?} missing:\n{stdout}");
        }
    };

    // `bogie gc -p aws --older-than 6h` (basename "bogie").
    let stdout = gc(&[]);
    deleted(&stdout, &old);
    assert_eq!(stdout.matches("deleted ").count(), 3, "{stdout}");
    assert_eq!(support::exists(&c, &old).await, (false, false, false));
    assert_eq!(support::exists(&c, &young).await, (true, true, true));
    assert_eq!(support::exists(&c, &foreign).await, (true, true, true));
    assert_eq!(support::exists(&c, &unrelated).await, (true, true, true));

    // `--basename other` collects the other basename's leftover, and only that.
    let stdout = gc(&["--basename", "other"]);
    deleted(&stdout, &foreign);
    assert_eq!(stdout.matches("deleted ").count(), 3, "{stdout}");
    assert_eq!(support::exists(&c, &foreign).await, (false, false, false));
    assert_eq!(support::exists(&c, &young).await, (true, true, true));
    assert_eq!(support::exists(&c, &unrelated).await, (true, true, true));

    // A bad age is an input error.
    let o = bogie(&moto)
        .args(["gc", "-p", "aws", "--older-than", "soon"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
