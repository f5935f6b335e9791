//! The AWS platform against moto (a local EC2/S3 emulator): the whole lifecycle, the
//! harness's classification of the (impossible) SSH bring-up, garbage collection and image
//! upload.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{ArchitectureValues, InstanceAttributeName, InstanceStateName, Tag};
use base64::Engine;
use bogie_harness::{Arch, ClusterSpec, ImageInfo, MachineSpec, Platform, PlatformError};
use bogie_platform_aws::upload::{self, DiskFormat, UploadBackend, UploadRequest};
use bogie_platform_aws::{AwsOptions, AwsPlatform};
use bogie_platform_common::tags::{parse_created, TAG_BASENAME, TAG_CREATED, TAG_RUN};
use bogie_platform_common::{GcOptions, RunTags};
use support::{ami, client, exists, plant, Moto};

fn image() -> ImageInfo {
    ImageInfo {
        path: "ami".into(),
        manifest: None,
        arch: None,
        version: None,
        provides: Default::default(),
        provides_from: Default::default(),
    }
}

fn spec(dir: &std::path::Path, id: &str, ignition: &str) -> MachineSpec {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    MachineSpec {
        id: id.into(),
        dir: d,
        ignition: ignition.into(),
        memory_mb: None,
        cpus: None,
        extra_disks: vec![],
        kernel_args: vec![],
        primary_disk_gib: None,
        extra_nics: 0,
        first_boot_kernel_args: Vec::new(),
        tpm: false,
        may_outlive: false,
        no_ssh_key_in_metadata: false,
    }
}

fn tag<'a>(tags: &'a [Tag], k: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(k))
        .and_then(|t| t.value())
}

async fn instances_of(
    c: &aws_sdk_ec2::Client,
    key: &str,
    value: &str,
) -> Vec<aws_sdk_ec2::types::Instance> {
    let out = c
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{key}"))
                .values(value)
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

/// Key pairs and security groups carrying `tag:key=value`.
async fn keys_and_groups(
    c: &aws_sdk_ec2::Client,
    key: &str,
    value: &str,
) -> (Vec<String>, Vec<String>) {
    let f = aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build();
    let k = c
        .describe_key_pairs()
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    let g = c
        .describe_security_groups()
        .filters(f)
        .send()
        .await
        .unwrap();
    (
        k.key_pairs()
            .iter()
            .filter_map(|k| k.key_name().map(str::to_string))
            .collect(),
        g.security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_tags_user_data_console_and_teardown() {
    let moto = Moto::start();
    let c = client(&moto).await;
    let ami = ami(&c, ArchitectureValues::X8664).await;
    let mut o = AwsOptions::new(&ami, Arch::Amd64, image());
    o.basename = "lifecycle".into();
    o.running_timeout = Duration::from_secs(120);
    let p = AwsPlatform::with_client(c.clone(), o).await.unwrap();
    let run = p.run_tags().run.clone();
    let dir = tempfile::tempdir().unwrap();
    let key = bogie_harness::ssh::SshKey::generate();
    let ign = bogie_harness::Config::new()
        .ssh_key("core", key.public_openssh())
        .file("/etc/hello", "hi", 0o644)
        .render_pretty();
    let cluster = p.cluster(ClusterSpec {
        name: "cl.basic-1".into(),
        dir: dir.path().to_path_buf(),
    });
    let m1 = cluster
        .launch(spec(dir.path(), "m1-aaaa", &ign))
        .await
        .unwrap();
    let m2 = cluster
        .launch(spec(dir.path(), "m2-bbbb", &ign))
        .await
        .unwrap();

    // One key pair and one security group for the run, tagged, SSH allowed in.
    let (keys, groups) = keys_and_groups(&c, TAG_RUN, &run).await;
    assert_eq!(keys, vec![format!("lifecycle-{run}")]);
    assert_eq!(groups.len(), 1, "{groups:?}");
    let sg = c
        .describe_security_groups()
        .group_ids(&groups[0])
        .send()
        .await
        .unwrap();
    let perms = sg.security_groups()[0].ip_permissions();
    assert!(
        perms
            .iter()
            .any(|p| p.from_port() == Some(22) && p.to_port() == Some(22)),
        "{perms:?}"
    );

    // Instances: running, tagged, with the key pair, the group and the config as user-data.
    let insts = instances_of(&c, TAG_RUN, &run).await;
    assert_eq!(insts.len(), 2);
    for i in &insts {
        assert_eq!(
            i.state().and_then(|s| s.name()),
            Some(&InstanceStateName::Running)
        );
        assert_eq!(tag(i.tags(), TAG_BASENAME), Some("lifecycle"));
        let created = parse_created(tag(i.tags(), TAG_CREATED).unwrap()).unwrap();
        assert!((chrono::Utc::now() - created).num_seconds().abs() < 300);
        assert!(tag(i.tags(), "Name")
            .unwrap()
            .starts_with(&format!("lifecycle-{run}-cl-basic-1-m")));
        assert_eq!(i.key_name(), Some(keys[0].as_str()));
        assert!(i
            .security_groups()
            .iter()
            .any(|g| g.group_id() == Some(groups[0].as_str())));
        let ud = c
            .describe_instance_attribute()
            .instance_id(i.instance_id().unwrap())
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let b64 = ud.user_data().and_then(|v| v.value()).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), ign);
    }
    use bogie_harness::Machine;
    assert_ne!(m1.ssh_addr(), m2.ssh_addr());
    assert_eq!(m1.ssh_addr().port(), 22);
    assert!(m1.is_running().await);
    let console = m1.console_output().await.unwrap();
    assert!(dir.path().join("m1-aaaa/console.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("m1-aaaa/console.txt")).unwrap(),
        console
    );

    // Teardown: the cluster terminates, the platform deletes the key pair and the group.
    use bogie_harness::Cluster;
    cluster.destroy().await.unwrap();
    cluster.destroy().await.unwrap(); // idempotent
    assert!(!m1.is_running().await);
    p.shutdown().await.unwrap();
    for i in instances_of(&c, TAG_RUN, &run).await {
        assert_eq!(
            i.state().and_then(|s| s.name()),
            Some(&InstanceStateName::Terminated)
        );
    }
    assert_eq!(keys_and_groups(&c, TAG_RUN, &run).await, (vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_before_anything_boots() {
    let moto = Moto::start();
    let c = client(&moto).await;
    let arm = ami(&c, ArchitectureValues::Arm64).await;
    let e = AwsPlatform::with_client(c.clone(), AwsOptions::new(&arm, Arch::Amd64, image()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("is arm64 but --board amd64-usr")),
        "{e}"
    );
    let e = AwsPlatform::with_client(
        c.clone(),
        AwsOptions::new("ami-00000000deadbeef", Arch::Amd64, image()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("not found")),
        "{e}"
    );
    let e = AwsPlatform::with_client(c.clone(), AwsOptions::new("flatcar", Arch::Amd64, image()))
        .await
        .unwrap_err();
    assert!(matches!(e, PlatformError::Input(_)));
    let x86 = ami(&c, ArchitectureValues::X8664).await;
    let mut o = AwsOptions::new(&x86, Arch::Amd64, image());
    o.security_group = Some("no-such-group".into());
    let e = AwsPlatform::with_client(c.clone(), o).await.unwrap_err();
    assert!(
        matches!(&e, PlatformError::Input(m) if m.contains("no-such-group")),
        "{e}"
    );
    // An existing group by name is used, not created.
    let g = c
        .create_security_group()
        .group_name("mine")
        .description("user's")
        .send()
        .await
        .unwrap();
    let mut o = AwsOptions::new(&x86, Arch::Amd64, image());
    o.security_group = Some("mine".into());
    o.basename = "given-sg".into();
    let p = AwsPlatform::with_client(c.clone(), o).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cl = p.cluster(ClusterSpec {
        name: "t-1".into(),
        dir: dir.path().into(),
    });
    let m = cl
        .launch(spec(
            dir.path(),
            "m1",
            r#"{"ignition":{"version":"3.3.0"}}"#,
        ))
        .await
        .unwrap();
    let inst = instances_of(&c, TAG_RUN, &p.run_tags().run).await;
    assert_eq!(inst[0].security_groups()[0].group_id(), g.group_id());
    assert!(
        inst[0].key_name().is_none(),
        "no SSH key in the config: no key pair"
    );
    // kola's NoSSHKeyInMetadata: a config with a key, but no key pair on the instance.
    let keyed = bogie_harness::Config::new()
        .ssh_key("core", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0gie bogie")
        .render();
    let m2 = cl
        .launch(MachineSpec {
            no_ssh_key_in_metadata: true,
            ..spec(dir.path(), "m2", &keyed)
        })
        .await
        .unwrap();
    let inst = instances_of(&c, TAG_RUN, &p.run_tags().run).await;
    assert_eq!(inst.len(), 2);
    assert!(
        inst.iter().all(|i| i.key_name().is_none()),
        "no_ssh_key_in_metadata: no key pair"
    );
    use bogie_harness::{Cluster, Machine};
    m2.destroy().await.unwrap();
    m.destroy().await.unwrap();
    cl.destroy().await.unwrap();
    p.shutdown().await.unwrap();
    // The user's group stays.
    assert!(c
        .describe_security_groups()
        .group_ids(g.group_id().unwrap())
        .send()
        .await
        .is_ok());
}

/// The harness boots a machine on moto; SSH can never work there, so the attempt must end
/// as a `harness` failure, and nothing of the run may remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_instances_are_a_classified_harness_failure() {
    use bogie_harness::cluster::{BringUp, TestEnv};
    use bogie_harness::runner::{run_attempt, AttemptContext, KeepPolicy};
    let moto = Moto::start();
    let c = client(&moto).await;
    let x86 = ami(&c, ArchitectureValues::X8664).await;
    let mut o = AwsOptions::new(&x86, Arch::Amd64, image());
    o.basename = "harness".into();
    let p = Arc::new(AwsPlatform::with_client(c.clone(), o).await.unwrap());
    let run = p.run_tags().run.clone();
    let out = tempfile::tempdir().unwrap();
    let ctx = AttemptContext {
        platform: p.clone(),
        key: bogie_harness::ssh::SshKey::generate(),
        key_path: out.path().join("id"),
        out_dir: out.path().to_path_buf(),
        env: TestEnv {
            platform: "aws".into(),
            arch: Arch::Amd64,
            image: Arc::new(image()),
            version: None,
            provides: Default::default(),
            internet: false,
        },
        default_timeout: Duration::from_secs(120),
        bring_up: BringUp {
            ssh_timeout: Duration::from_secs(4),
            ssh_attempt_timeout: Duration::from_secs(2),
            settle_timeout: Duration::from_secs(5),
            boot_watch: None,
        },
        keep: KeepPolicy::None,
        no_avc_checks: false,
        memory_mb: None,
        cancel: tokio_util::sync::CancellationToken::new(),
        extra_keys: vec![],
        ignition_version: bogie_harness::setup::IgnitionVersion::V3,
    };
    let test = bogie_harness::Test::new("aws.unreachable", |_c| async { Ok(()) });
    let outcome = run_attempt(&ctx, &test, 1, Box::new(|_| {})).await;
    let f = outcome.attempt.failure.expect("the attempt must fail");
    assert_eq!(f.class, bogie_reports::FailureClass::Harness, "{f:?}");
    assert!(!outcome.attempt.passed);
    p.shutdown().await.unwrap();
    let insts = instances_of(&c, TAG_RUN, &run).await;
    assert_eq!(insts.len(), 1);
    assert_eq!(
        insts[0].state().and_then(|s| s.name()),
        Some(&InstanceStateName::Terminated)
    );
    assert_eq!(keys_and_groups(&c, TAG_RUN, &run).await, (vec![], vec![]));
    // The console was collected as an artifact.
    let m = &outcome.attempt.machines[0];
    assert!(out.path().join(m.console.as_ref().unwrap()).is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_deletes_old_leftovers_and_leaves_young_and_foreign_ones() {
    let moto = Moto::start();
    let c = client(&moto).await;
    let x86 = ami(&c, ArchitectureValues::X8664).await;
    let old = plant(&c, &x86, "ci", 7, "old-one").await;
    let young = plant(&c, &x86, "ci", 1, "young-one").await;
    let foreign = plant(&c, &x86, "someone-else", 30, "foreign-one").await;
    let dry = GcOptions {
        older_than: Duration::from_secs(6 * 3600),
        basename: "ci".into(),
        dry_run: true,
    };
    let r = bogie_platform_aws::gc::gc(&c, &dry).await.unwrap();
    assert_eq!(r.deleted.len(), 3, "{r:?}");
    assert_eq!(
        exists(&c, &old).await,
        (true, true, true),
        "a dry run deletes nothing"
    );
    let r = bogie_platform_aws::gc::gc(
        &c,
        &GcOptions {
            dry_run: false,
            ..dry
        },
    )
    .await
    .unwrap();
    assert!(r.ok(), "{r:?}");
    let kinds: Vec<&str> = r.deleted.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, vec!["instance", "security-group", "key-pair"]);
    assert_eq!(r.young, 3);
    assert_eq!(exists(&c, &old).await, (false, false, false));
    assert_eq!(exists(&c, &young).await, (true, true, true));
    assert_eq!(exists(&c, &foreign).await, (true, true, true));
}

/// ImportSnapshot is not in moto: a backend that does the rest for real and fakes that one
/// step with CreateVolume + CreateSnapshot.
struct FakeImport {
    real: upload::Ec2Upload,
    imported: std::sync::Mutex<Vec<(String, String, DiskFormat)>>,
}

#[async_trait::async_trait]
impl UploadBackend for FakeImport {
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        file: &std::path::Path,
    ) -> Result<(), PlatformError> {
        self.real.put_object(bucket, key, file).await
    }
    async fn import_snapshot(&self, req: &UploadRequest) -> Result<String, PlatformError> {
        // The object must be there, as ImportSnapshot would read it.
        let body = self.real.s3.get_object(&req.bucket, &req.key).await?;
        assert_eq!(body, std::fs::read(&req.file).unwrap());
        self.imported
            .lock()
            .unwrap()
            .push((req.bucket.clone(), req.key.clone(), req.format));
        let v = self
            .real
            .ec2
            .create_volume()
            .availability_zone("us-east-1a")
            .size(1)
            .send()
            .await
            .unwrap();
        let s = self
            .real
            .ec2
            .create_snapshot()
            .volume_id(v.volume_id().unwrap())
            .send()
            .await
            .unwrap();
        Ok(s.snapshot_id().unwrap().to_string())
    }
    async fn register_image(
        &self,
        req: &UploadRequest,
        snapshot_id: &str,
    ) -> Result<String, PlatformError> {
        self.real.register_image(req, snapshot_id).await
    }
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), PlatformError> {
        self.real.delete_object(bucket, key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_upload_puts_imports_and_registers() {
    let moto = Moto::start();
    let conf = bogie_platform_aws::sdk_config(&support::options(&moto)).await;
    moto.record();
    let s3 = bogie_platform_aws::s3::S3::with_endpoint(&conf, Some(moto.url.clone())).unwrap();
    s3.create_bucket("bogie-images").await.unwrap();
    let real = upload::Ec2Upload {
        ec2: aws_sdk_ec2::Client::new(&conf),
        s3,
        import_timeout: Duration::from_secs(60),
        poll: Duration::from_millis(100),
    };
    let backend = FakeImport {
        real,
        imported: Default::default(),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flatcar_production_ami_vmdk_image.vmdk");
    std::fs::write(&file, vec![7u8; 256 * 1024]).unwrap();
    let req = UploadRequest {
        format: DiskFormat::from_path(&file),
        file: file.clone(),
        bucket: "bogie-images".into(),
        key: "dev/4000.0.0/flatcar.vmdk".into(),
        name: "bogie-test-4000.0.0-arm64".into(),
        description: "bogie upload test".into(),
        arch: Arch::Arm64,
        boot_mode: None,
        tags: RunTags::new("upload"),
        delete_object: true,
    };
    let got = upload::upload_image(&backend, &req).await.unwrap();
    assert_eq!(
        backend.imported.lock().unwrap().clone(),
        vec![(
            "bogie-images".to_string(),
            "dev/4000.0.0/flatcar.vmdk".to_string(),
            DiskFormat::Vmdk
        )]
    );
    // moto keeps only some of RegisterImage's fields: check the request it got.
    let img = backend
        .real
        .ec2
        .describe_images()
        .image_ids(&got.ami)
        .send()
        .await
        .unwrap();
    assert_eq!(img.images()[0].name(), Some("bogie-test-4000.0.0-arm64"));
    let reg = moto.ec2_requests("RegisterImage");
    assert_eq!(reg.len(), 1, "{reg:?}");
    let r = &reg[0];
    let want = [
        ("Name", "bogie-test-4000.0.0-arm64"),
        ("Architecture", "arm64"),
        ("BootMode", "uefi"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        (
            "BlockDeviceMapping.1.Ebs.SnapshotId",
            got.snapshot_id.as_str(),
        ),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("TagSpecification.1.ResourceType", "image"),
    ];
    for (k, v) in want {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k} in {r:?}");
    }
    let tags: Vec<(&str, &str)> = (1..=4)
        .filter_map(|i| {
            Some((
                r.get(&format!("TagSpecification.1.Tag.{i}.Key"))?.as_str(),
                r.get(&format!("TagSpecification.1.Tag.{i}.Value"))?
                    .as_str(),
            ))
        })
        .collect();
    assert!(tags.contains(&(TAG_BASENAME, "upload")), "{tags:?}");
    assert!(
        tags.contains(&("Name", "bogie-test-4000.0.0-arm64")),
        "{tags:?}"
    );
    // The staged object was deleted after the import.
    assert!(backend
        .real
        .s3
        .get_object("bogie-images", "dev/4000.0.0/flatcar.vmdk")
        .await
        .is_err());
    // A missing file is an input error, before any upload.
    let mut bad = req.clone();
    bad.file = dir.path().join("nope.vmdk");
    assert!(matches!(
        upload::upload_image(&backend, &bad).await,
        Err(PlatformError::Input(_))
    ));
}
