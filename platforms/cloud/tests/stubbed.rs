//! Azure, GCE and Equinix Metal clients against a local stub that checks every request
//! against the provider's published API description (`shared/specs`): create cluster →
//! machine → console → destroy → gc. A request the description does not allow is answered
//! 400 and recorded; every test asserts there were none, and that the fakes' answers match
//! the response schemas.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bogie_harness::{Arch, Cluster, ClusterSpec, ImageInfo, Machine, MachineSpec};
use bogie_platform_cloud::auth::StaticToken;
use bogie_platform_cloud::azure::{Azure, AzureImage, AzureOptions};
use bogie_platform_cloud::equinix::{Equinix, EquinixOptions};
use bogie_platform_cloud::gce::{Gce, GceOptions};
use bogie_platform_cloud::{CloudPlatform, Provider};
use bogie_platform_common::tags::{TAG_BASENAME, TAG_CREATED, TAG_RUN};
use bogie_platform_common::{GcOptions, Secret};
use bogie_specstub::fakes::{azure::AzureFake, equinix::EquinixFake, gce::GceFake};
use bogie_specstub::{specs_dir, Backend, Call, Reply, Stub};
use serde_json::{json, Value};

const SUB: &str = "00000000-0000-4000-8000-00000000abcd";
const PROJECT: &str = "00000000-0000-4000-8000-0000000000aa";

fn image() -> ImageInfo {
    ImageInfo {
        path: "cloud-image".into(),
        manifest: None,
        arch: None,
        version: None,
        provides: Default::default(),
        provides_from: Default::default(),
    }
}

fn ignition() -> String {
    bogie_harness::Config::new()
        .ssh_key("core", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHb0gie bogie")
        .file("/etc/motd", "hello from bogie", 0o644)
        .render_pretty()
}

fn spec(dir: &std::path::Path, id: &str) -> MachineSpec {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    MachineSpec {
        id: id.into(),
        dir: d,
        ignition: ignition(),
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

fn assert_clean(stub: &Stub) {
    assert!(
        stub.rejections().is_empty(),
        "requests the description does not allow:\n{}",
        stub.rejections().join("\n")
    );
    assert!(
        stub.response_problems().is_empty(),
        "fake answers that do not match the description:\n{}",
        stub.response_problems().join("\n")
    );
}

fn old(hours: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::hours(hours))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn gc_opts(basename: &str) -> GcOptions {
    GcOptions {
        older_than: Duration::from_secs(6 * 3600),
        basename: basename.into(),
        dry_run: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn azure_create_console_destroy_gc() {
    let Some(dir) = specs_dir() else { return };
    let fake = Arc::new(AzureFake::new("arm-token-0123456789"));
    let stub = Stub::start(Arc::new(bogie_specstub::azure(&dir).unwrap()), fake.clone())
        .await
        .unwrap();
    let mut o = AzureOptions::new(
        SUB,
        AzureImage::Marketplace {
            publisher: "kinvolk".into(),
            offer: "flatcar-container-linux-free".into(),
            sku: "alpha".into(),
            version: "latest".into(),
        },
    );
    o.endpoint = stub.url();
    o.poll = Duration::from_millis(10);
    let token = Arc::new(StaticToken(Secret::new("arm-token-0123456789")));
    let p = CloudPlatform::new(
        Azure::with_token(o, Arch::Amd64, token).unwrap(),
        Arch::Amd64,
        image(),
        "stubci",
    );
    let run = p.run_tags().run.clone();
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .cluster(ClusterSpec {
            name: "cl.basic-1".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let m = cl.machine(spec(out.path(), "m1-0001")).await.unwrap();
    assert!(
        m.ssh_addr().ip().to_string().starts_with("203.0.113."),
        "{}",
        m.ssh_addr()
    );
    assert_eq!(m.ssh_addr().port(), 22);
    assert!(m.private_ip().is_some());

    // The resource group carries the run's tags; the VM the config and boot diagnostics.
    let groups: Vec<Value> = stub
        .calls("ResourceGroups_CreateOrUpdate")
        .into_iter()
        .filter_map(|r| r.body)
        .collect();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["tags"][TAG_RUN], run);
    assert_eq!(groups[0]["tags"][TAG_BASENAME], "stubci");
    let vm = stub.calls("VirtualMachines_CreateOrUpdate")[0]
        .body
        .clone()
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(ignition());
    assert_eq!(vm["properties"]["osProfile"]["customData"], b64);
    assert_eq!(vm["properties"]["userData"], b64);
    assert_eq!(
        vm["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"],
        true
    );
    assert_eq!(vm["plan"]["product"], "flatcar-container-linux-free");
    assert_eq!(vm["tags"][TAG_CREATED], p.run_tags().created_rfc3339());
    assert!(
        vm["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    // kola's NoSSHKeyInMetadata: the VM gets a throwaway key Azure insists on, not the
    // run's (only what Ignition installs lets the harness in).
    let key_of = |vm: &Value| {
        vm["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let m2 = cl
        .machine(MachineSpec {
            no_ssh_key_in_metadata: true,
            ..spec(out.path(), "m2-0002")
        })
        .await
        .unwrap();
    let vm2 = stub.calls("VirtualMachines_CreateOrUpdate")[1]
        .body
        .clone()
        .unwrap();
    assert!(key_of(&vm2).starts_with("ssh-ed25519 "), "{vm2}");
    assert_ne!(key_of(&vm2), key_of(&vm));
    assert!(!ignition().contains(&key_of(&vm2)));

    let console = m.console_output().await.unwrap();
    assert!(console.contains("fake Azure serial console"), "{console}");
    assert_eq!(
        std::fs::read_to_string(out.path().join("m1-0001/console.txt")).unwrap(),
        console
    );
    assert!(m.is_running().await);

    cl.destroy().await.unwrap();
    cl.destroy().await.unwrap();
    assert!(fake.ids().is_empty(), "left behind: {:?}", fake.ids());
    assert!(!m.is_running().await);
    assert!(!m2.is_running().await);

    // gc: an old group of the basename goes; a young one, another basename's and an
    // untagged one stay.
    let plant = |name: &str, tags: Value| {
        fake.insert(
            &format!("/subscriptions/{SUB}/resourcegroups/{name}"),
            json!({"id": format!("/subscriptions/{SUB}/resourceGroups/{name}"), "name": name, "type": "Microsoft.Resources/resourceGroups", "location": "westus", "tags": tags, "properties": {"provisioningState": "Succeeded"}}),
        )
    };
    plant(
        "stubci-old",
        json!({TAG_BASENAME: "stubci", TAG_CREATED: old(9)}),
    );
    plant(
        "stubci-young",
        json!({TAG_BASENAME: "stubci", TAG_CREATED: old(1)}),
    );
    plant(
        "other-old",
        json!({TAG_BASENAME: "other", TAG_CREATED: old(99)}),
    );
    plant("untagged", json!({}));
    let r = p.provider().gc(&gc_opts("stubci")).await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.deleted.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["stubci-old"]
    );
    assert_eq!(r.young, 1);
    let left: Vec<String> = fake.ids();
    assert_eq!(left.len(), 3, "{left:?}");
    assert_clean(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn azure_in_a_users_resource_group_deletes_only_its_own() {
    let Some(dir) = specs_dir() else { return };
    let fake = Arc::new(AzureFake::new("tok-abcdef"));
    let stub = Stub::start(Arc::new(bogie_specstub::azure(&dir).unwrap()), fake.clone())
        .await
        .unwrap();
    fake.insert(
        &format!("/subscriptions/{SUB}/resourcegroups/team-rg"),
        json!({"id": format!("/subscriptions/{SUB}/resourceGroups/team-rg"), "name": "team-rg", "location": "westus", "properties": {"provisioningState": "Succeeded"}}),
    );
    let mut o = AzureOptions::new(SUB, AzureImage::Id(format!("/subscriptions/{SUB}/resourceGroups/images/providers/Microsoft.Compute/images/flatcar-dev")));
    o.endpoint = stub.url();
    o.poll = Duration::from_millis(10);
    o.resource_group = Some("team-rg".into());
    o.use_private_ips = true;
    let az = Azure::with_token(
        o,
        Arch::Amd64,
        Arc::new(StaticToken(Secret::new("tok-abcdef"))),
    )
    .unwrap();
    let p = CloudPlatform::new(az, Arch::Amd64, image(), "stubci");
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .cluster(ClusterSpec {
            name: "t-1".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let m = cl.machine(spec(out.path(), "m1")).await.unwrap();
    assert!(
        m.ssh_addr().ip().to_string().starts_with("10.0.0."),
        "private address: {}",
        m.ssh_addr()
    );
    assert!(stub.calls("PublicIPAddresses_CreateOrUpdate").is_empty());
    let vm = stub.calls("VirtualMachines_CreateOrUpdate")[0]
        .body
        .clone()
        .unwrap();
    assert!(vm["properties"]["storageProfile"]["imageReference"]["id"]
        .as_str()
        .unwrap()
        .ends_with("/flatcar-dev"));
    assert!(vm.get("plan").is_none());
    cl.destroy().await.unwrap();
    assert_eq!(
        fake.ids(),
        vec![format!("/subscriptions/{SUB}/resourcegroups/team-rg").to_lowercase()]
    );
    assert!(
        stub.calls("ResourceGroups_Delete").is_empty(),
        "the user's group stays"
    );
    assert_clean(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn gce_create_console_destroy_gc() {
    let Some(dir) = specs_dir() else { return };
    let fake = Arc::new(GceFake::new("ya29.gce-token-xyz"));
    let stub = Stub::start(Arc::new(bogie_specstub::gce(&dir).unwrap()), fake.clone())
        .await
        .unwrap();
    let mut o = GceOptions::new(
        "bogie-proj",
        "projects/kinvolk-public/global/images/family/flatcar-alpha",
        Arch::Amd64,
    );
    o.endpoint = stub.api_url();
    o.gvnic = true;
    let g = Gce::with_token(o, Arc::new(StaticToken(Secret::new("ya29.gce-token-xyz")))).unwrap();
    let p = CloudPlatform::new(g, Arch::Amd64, image(), "StubCI");
    let run = p.run_tags().run.clone();
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .cluster(ClusterSpec {
            name: "cl.basic-1".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let m = cl.machine(spec(out.path(), "m1-0001")).await.unwrap();
    assert!(m.ssh_addr().ip().to_string().starts_with("203.0.113."));
    let body = stub.calls("compute.instances.insert")[0]
        .body
        .clone()
        .unwrap();
    assert_eq!(
        body["metadata"]["items"][0],
        json!({"key": "user-data", "value": ignition()})
    );
    assert_eq!(body["labels"]["bogie-run"], run);
    assert_eq!(body["labels"]["bogie-basename"], "stubci");
    assert_eq!(
        body["labels"]["bogie-created"],
        p.run_tags().created.timestamp().to_string()
    );
    assert_eq!(body["networkInterfaces"][0]["nicType"], "GVNIC");
    assert_eq!(
        body["machineType"],
        "zones/us-central1-a/machineTypes/t2d-standard-1"
    );
    let console = m.console_output().await.unwrap();
    assert!(console.contains("fake GCE serial port 1"), "{console}");
    cl.destroy().await.unwrap();
    assert!(fake.instances().is_empty());
    assert_eq!(stub.calls("compute.instances.delete").len(), 1);

    let plant = |name: &str, zone: &str, basename: &str, hours: i64| {
        fake.insert_instance(
            "bogie-proj",
            zone,
            json!({"name": name, "status": "RUNNING", "zone": format!("{}/projects/bogie-proj/zones/{zone}", stub.api_url()),
                   "labels": {"bogie-basename": basename, "bogie-created": (chrono::Utc::now() - chrono::Duration::hours(hours)).timestamp().to_string()}}),
        )
    };
    plant("stubci-old", "europe-west4-a", "stubci", 8);
    plant("stubci-young", "us-central1-a", "stubci", 1);
    plant("other-old", "us-central1-a", "other", 80);
    let r = p.provider().gc(&gc_opts("StubCI")).await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        r.deleted.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec!["europe-west4-a/stubci-old"]
    );
    assert_eq!(fake.instances().len(), 2);
    assert_clean(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn equinix_create_console_destroy_gc() {
    let Some(dir) = specs_dir() else { return };
    let fake = Arc::new(EquinixFake::new("metal-key-0987654321"));
    let stub = Stub::start(
        Arc::new(bogie_specstub::equinix(&dir).unwrap()),
        fake.clone(),
    )
    .await
    .unwrap();
    let mut o = EquinixOptions::new(Secret::new("metal-key-0987654321"), PROJECT, "da");
    o.endpoint = stub.api_url();
    o.ipxe_script_url = Some("http://boot.example/flatcar.ipxe".into());
    o.poll = Duration::from_millis(10);
    let eq = Equinix::new(o).unwrap();
    let p = CloudPlatform::new(eq, Arch::Amd64, image(), "stubci");
    let run = p.run_tags().run.clone();
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .cluster(ClusterSpec {
            name: "cl.basic-1".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let m = cl.machine(spec(out.path(), "m1-0001")).await.unwrap();
    assert!(
        m.ssh_addr().ip().to_string().starts_with("198.51.100."),
        "{}",
        m.ssh_addr()
    );
    let body = stub.calls("createDevice")[0].body.clone().unwrap();
    assert_eq!(body["userdata"], ignition());
    assert_eq!(body["operating_system"], "custom_ipxe");
    assert_eq!(body["ipxe_script_url"], "http://boot.example/flatcar.ipxe");
    let tags: Vec<&str> = body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&format!("{TAG_RUN}={run}").as_str()),
        "{tags:?}"
    );
    assert!(tags.contains(&"bogie:basename=stubci"), "{tags:?}");
    let console = m.console_output().await.unwrap();
    assert!(console.contains("no console API"), "{console}");
    cl.destroy().await.unwrap();
    assert!(fake.devices().is_empty());

    let plant = |id: &str, basename: &str, hours: i64| {
        fake.insert_device(
            PROJECT,
            json!({"id": id, "state": "active", "tags": [format!("bogie:basename={basename}"), format!("bogie:created={}", old(hours))]}),
        )
    };
    plant("00000000-0000-4000-8000-0000000000f1", "stubci", 10);
    plant("00000000-0000-4000-8000-0000000000f2", "stubci", 2);
    plant("00000000-0000-4000-8000-0000000000f3", "other", 100);
    let r = p.provider().gc(&gc_opts("stubci")).await.unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.deleted.len(), 1);
    assert_eq!(r.deleted[0].id, "00000000-0000-4000-8000-0000000000f1");
    assert_eq!(fake.devices().len(), 2);
    assert_clean(&stub);
}

/// A request the description does not allow fails the machine, with the stub's reason
/// (here a zone name GCE's path pattern rejects), and the stub records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn a_request_the_description_rejects_fails_the_machine() {
    let Some(dir) = specs_dir() else { return };
    let fake = Arc::new(GceFake::new("tok-123456"));
    let stub = Stub::start(Arc::new(bogie_specstub::gce(&dir).unwrap()), fake.clone())
        .await
        .unwrap();
    let mut o = GceOptions::new("bogie-proj", "flatcar-dev", Arch::Amd64);
    o.endpoint = stub.api_url();
    o.zone = "US_Central1".into();
    let g = Gce::with_token(o, Arc::new(StaticToken(Secret::new("tok-123456")))).unwrap();
    let p = CloudPlatform::new(g, Arch::Amd64, image(), "neg");
    let out = tempfile::tempdir().unwrap();
    let cl = p
        .cluster(ClusterSpec {
            name: "t".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap();
    let e = cl
        .machine(spec(out.path(), "m1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 400") && e.contains("does not match"),
        "{e}"
    );
    assert_eq!(stub.rejections().len(), 1, "{:?}", stub.rejections());
    assert!(fake.instances().is_empty());
    cl.destroy().await.unwrap();
}

/// A backend that echoes the credential it got in its error, as some services do.
struct Echo;

impl Backend for Echo {
    fn handle(&self, _: &Call) -> Reply {
        Reply::json(500, json!({}))
    }
    fn authorize(&self, headers: &axum_headers::HeaderMap) -> Result<(), String> {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Err(format!(
            "the credential {got:?} is not valid for this subscription"
        ))
    }
}

mod axum_headers {
    pub use bogie_specstub::server::HeaderMap;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn credentials_never_appear_in_errors() {
    let Some(dir) = specs_dir() else { return };
    let stub = Stub::start(
        Arc::new(bogie_specstub::azure(&dir).unwrap()),
        Arc::new(Echo),
    )
    .await
    .unwrap();
    let mut o = AzureOptions::new(SUB, AzureImage::Id("img".into()));
    o.endpoint = stub.url();
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.leaky-token-material.c2lnbmF0dXJl";
    let az = Azure::with_token(o, Arch::Amd64, Arc::new(StaticToken(Secret::new(token)))).unwrap();
    let p = CloudPlatform::new(az, Arch::Amd64, image(), "redact");
    let out = tempfile::tempdir().unwrap();
    let e = p
        .cluster(ClusterSpec {
            name: "t".into(),
            dir: out.path().into(),
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401"), "{e}");
    assert!(e.contains("not valid for this subscription"), "{e}");
    assert!(!e.contains("leaky-token-material"), "the token leaked: {e}");
    assert!(!e.contains(token), "the token leaked: {e}");
    assert!(e.contains("[redacted]"), "{e}");
    // Debug output of the credential is redacted too.
    assert_eq!(format!("{:?}", Secret::new(token)), "[redacted]");
}
