//! The stub loads each published description and rejects what it does not allow.

use std::sync::Arc;

use bogie_specstub::fakes::{azure::AzureFake, equinix::EquinixFake, gce::GceFake};
use bogie_specstub::{specs_dir, Stub};
use serde_json::json;

const SUB: &str = "00000000-0000-0000-0000-000000000001";

#[test]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
fn descriptions_load_with_the_operations_bogie_uses() {
    let Some(dir) = specs_dir() else { return };
    let az = bogie_specstub::azure(&dir).unwrap();
    for op in [
        "ResourceGroups_CreateOrUpdate",
        "ResourceGroups_Delete",
        "ResourceGroups_List",
        "VirtualNetworks_CreateOrUpdate",
        "NetworkSecurityGroups_CreateOrUpdate",
        "PublicIPAddresses_CreateOrUpdate",
        "NetworkInterfaces_CreateOrUpdate",
        "VirtualMachines_CreateOrUpdate",
        "VirtualMachines_RetrieveBootDiagnosticsData",
    ] {
        assert!(az.operation(op).is_some(), "azure: {op}");
    }
    let gce = bogie_specstub::gce(&dir).unwrap();
    assert_eq!(gce.base_path, "/compute/v1");
    for op in [
        "compute.instances.insert",
        "compute.instances.get",
        "compute.instances.delete",
        "compute.instances.getSerialPortOutput",
        "compute.instances.aggregatedList",
        "compute.zoneOperations.wait",
    ] {
        assert!(gce.operation(op).is_some(), "gce: {op}");
    }
    let eq = bogie_specstub::equinix(&dir).unwrap();
    assert_eq!(eq.base_path, "/metal/v1");
    for op in [
        "createDevice",
        "findDeviceById",
        "deleteDevice",
        "findProjectDevices",
    ] {
        assert!(eq.operation(op).is_some(), "equinix: {op}");
    }
}

#[test]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
fn requests_are_checked_against_the_description() {
    let Some(dir) = specs_dir() else { return };
    let az = bogie_specstub::azure(&dir).unwrap();
    let rg = format!("/subscriptions/{SUB}/resourcegroups/bogie-x");
    let q = |v: &str| vec![("api-version".to_string(), v.to_string())];
    let ok = br#"{"location":"westus","tags":{"bogie:run":"x"}}"#;
    assert!(az.check_request("PUT", &rg, &q("2024-07-01"), ok).is_ok());
    // Wrong api-version, missing api-version, unknown field, wrong type, missing required.
    let e = az
        .check_request("PUT", &rg, &q("2023-01-01"), ok)
        .unwrap_err();
    assert!(e.join(" ").contains("api-version"), "{e:?}");
    let e = az.check_request("PUT", &rg, &[], ok).unwrap_err();
    assert!(
        e.join(" ").contains("missing required query parameter"),
        "{e:?}"
    );
    let e = az
        .check_request(
            "PUT",
            &rg,
            &q("2024-07-01"),
            br#"{"location":"westus","colour":"red"}"#,
        )
        .unwrap_err();
    assert!(
        e.join(" ").contains("body.colour: field not in the schema"),
        "{e:?}"
    );
    let e = az
        .check_request(
            "PUT",
            &rg,
            &q("2024-07-01"),
            br#"{"location":"westus","tags":{"a":1}}"#,
        )
        .unwrap_err();
    assert!(
        e.join(" ").contains("body.tags.a: expected a string"),
        "{e:?}"
    );
    let e = az
        .check_request("PUT", &rg, &q("2024-07-01"), br#"{"tags":{}}"#)
        .unwrap_err();
    assert!(
        e.join(" ").contains("missing required field \"location\""),
        "{e:?}"
    );
    let e = az
        .check_request("PUT", &format!("{rg}/nonsense"), &q("2024-07-01"), ok)
        .unwrap_err();
    assert!(e.join(" ").contains("no operation has the path"), "{e:?}");
    let e = az
        .check_request("POST", &rg, &q("2024-07-01"), ok)
        .unwrap_err();
    assert!(e.join(" ").contains("method POST is not allowed"), "{e:?}");
    // A VM body: types are checked deep inside, readOnly fields may not be sent.
    let vm = format!(
        "/subscriptions/{SUB}/resourceGroups/bogie-x/providers/Microsoft.Compute/virtualMachines/vm1"
    );
    let body = json!({"location": "westus", "properties": {"osProfile": {"computerName": "vm1", "adminUsername": "core", "customData": "e30="}, "hardwareProfile": {"vmSize": 42}, "storageProfile": {"osDisk": {"createOption": "FromImage", "caching": "Sometimes"}}, "provisioningState": "Succeeded"}});
    let e = az
        .check_request("PUT", &vm, &q("2024-07-01"), body.to_string().as_bytes())
        .unwrap_err()
        .join(" ");
    assert!(
        e.contains("body.properties.hardwareProfile.vmSize: expected a string"),
        "{e}"
    );
    // A closed enum (`modelAsString: false`) is exact; extensible ones take any string.
    assert!(
        e.contains("osDisk.caching: \"Sometimes\" is not one of the allowed values"),
        "{e}"
    );
    assert!(e.contains("provisioningState: read-only field"), "{e}");

    // Equinix: oneOf metro/facility; userdata must be a string.
    let eq = bogie_specstub::equinix(&dir).unwrap();
    let p = "/metal/v1/projects/00000000-0000-4000-8000-000000000001/devices";
    let good = json!({"metro": "da", "plan": "c3.small.x86", "operating_system": "custom_ipxe", "userdata": "{}", "tags": ["a"]});
    assert!(eq
        .check_request("POST", p, &[], good.to_string().as_bytes())
        .is_ok());
    let bad = json!({"plan": "c3.small.x86", "operating_system": "custom_ipxe"});
    let e = eq
        .check_request("POST", p, &[], bad.to_string().as_bytes())
        .unwrap_err()
        .join(" ");
    assert!(e.contains("matches none of the oneOf"), "{e}");
    let bad = json!({"metro": "da", "plan": "c3.small.x86", "operating_system": "custom_ipxe", "userdata": {"x": 1}});
    assert!(eq
        .check_request("POST", p, &[], bad.to_string().as_bytes())
        .is_err());
    let e = eq
        .check_request("GET", "/metal/v1/devices/not-a-uuid", &[], b"")
        .unwrap_err()
        .join(" ");
    assert!(e.contains("not a UUID"), "{e}");

    // GCE: path patterns, unknown query parameters, int64 strings.
    let gce = bogie_specstub::gce(&dir).unwrap();
    let ins = "/compute/v1/projects/my-proj/zones/us-central1-a/instances";
    let body = json!({"name": "bogie-1", "machineType": "zones/us-central1-a/machineTypes/e2-small", "labels": {"bogie-run": "x"}, "metadata": {"items": [{"key": "user-data", "value": "{}"}]}});
    assert!(gce
        .check_request("POST", ins, &[], body.to_string().as_bytes())
        .is_ok());
    let e = gce
        .check_request(
            "POST",
            ins,
            &[("color".into(), "red".into())],
            body.to_string().as_bytes(),
        )
        .unwrap_err()
        .join(" ");
    assert!(
        e.contains("query parameter \"color\" is not allowed"),
        "{e}"
    );
    let e = gce
        .check_request(
            "POST",
            "/compute/v1/projects/my-proj/zones/US_CENTRAL/instances",
            &[],
            body.to_string().as_bytes(),
        )
        .unwrap_err()
        .join(" ");
    assert!(e.contains("does not match"), "{e}");
    let e = gce
        .check_request(
            "POST",
            ins,
            &[],
            br#"{"name":"x","metadata":{"items":[{"key":"user-data","val":"{}"}]}}"#,
        )
        .unwrap_err()
        .join(" ");
    assert!(
        e.contains("body.metadata.items[0].val: field not in the schema"),
        "{e}"
    );
}

#[tokio::test]
#[cfg_attr(
    bogie_shared_absent,
    ignore = "../shared is absent (set BOGIE_SHARED_DIR)"
)]
async fn the_stub_rejects_a_bad_body_and_serves_a_good_one() {
    let Some(dir) = specs_dir() else { return };
    let spec = Arc::new(bogie_specstub::azure(&dir).unwrap());
    let fake = Arc::new(AzureFake::new("tok"));
    let stub = Stub::start(spec, fake.clone()).await.unwrap();
    bogie_platform_common::http::install_crypto_provider();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/subscriptions/{SUB}/resourcegroups/bogie-y?api-version=2024-07-01",
        stub.url()
    );
    let r = http
        .put(&url)
        .bearer_auth("tok")
        .json(&json!({"location": "westus", "size": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("body.size: field not in the schema"));
    assert_eq!(stub.rejections().len(), 1);
    let r = http
        .put(&url)
        .bearer_auth("tok")
        .json(&json!({"location": "westus"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http.get(&url).bearer_auth("tok").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        stub.response_problems().is_empty(),
        "{:?}",
        stub.response_problems()
    );

    let gspec = Arc::new(bogie_specstub::gce(&dir).unwrap());
    let g = Stub::start(gspec, Arc::new(GceFake::new("t")))
        .await
        .unwrap();
    let r = http
        .get(format!(
            "{}/projects/p1/zones/z1-a/instances/nope",
            g.api_url()
        ))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let espec = Arc::new(bogie_specstub::equinix(&dir).unwrap());
    let e = Stub::start(espec, Arc::new(EquinixFake::new("t")))
        .await
        .unwrap();
    let r = http
        .get(format!(
            "{}/devices/00000000-0000-4000-8000-000000000009",
            e.api_url()
        ))
        .header("X-Auth-Token", "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
