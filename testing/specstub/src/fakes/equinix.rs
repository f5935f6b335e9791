//! A fake Equinix Metal API: devices kept in memory, `active` as soon as created.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::server::{Backend, Call, Reply};

/// The fake's state.
#[derive(Debug, Default)]
pub struct EquinixFake {
    /// The API token clients must send as `X-Auth-Token`.
    pub token: String,
    /// Devices by id, with their project id.
    devices: Mutex<BTreeMap<String, (String, Value)>>,
    counter: Mutex<u64>,
}

fn error(code: u16, msg: &str) -> Reply {
    Reply::json(code, json!({"errors": [msg]}))
}

impl EquinixFake {
    /// A fake expecting `X-Auth-Token: <token>`.
    pub fn new(token: &str) -> EquinixFake {
        EquinixFake {
            token: token.to_string(),
            ..Default::default()
        }
    }

    /// Every device (for assertions).
    pub fn devices(&self) -> Vec<Value> {
        self.devices
            .lock()
            .expect("poisoned")
            .values()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Plants a device directly (for gc tests).
    pub fn insert_device(&self, project: &str, device: Value) {
        let id = device
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.devices
            .lock()
            .expect("poisoned")
            .insert(id, (project.to_string(), device));
    }

    fn uuid(&self) -> String {
        let mut c = self.counter.lock().expect("poisoned");
        *c += 1;
        format!("00000000-0000-4000-8000-{:012x}", *c)
    }

    fn create(&self, call: &Call) -> Reply {
        let project = call.param("id").to_string();
        let body = call.body.clone().unwrap_or_else(|| json!({}));
        let id = self.uuid();
        let n = id.len() % 200 + self.devices.lock().expect("poisoned").len();
        let now = chrono::Utc::now().to_rfc3339();
        let mut d = json!({
            "id": id,
            "href": format!("/metal/v1/devices/{id}"),
            "short_id": &id[..8],
            "hostname": body.get("hostname").cloned().unwrap_or(json!(format!("device-{}", &id[..8]))),
            "state": "active",
            "created_at": now,
            "updated_at": now,
            "tags": body.get("tags").cloned().unwrap_or(json!([])),
            "userdata": body.get("userdata").cloned().unwrap_or(json!("")),
            "always_pxe": body.get("always_pxe").cloned().unwrap_or(json!(false)),
            "billing_cycle": body.get("billing_cycle").cloned().unwrap_or(json!("hourly")),
            "plan": {"slug": body.get("plan").cloned().unwrap_or(json!(""))},
            "operating_system": {"slug": body.get("operating_system").cloned().unwrap_or(json!(""))},
            "sos": "sos.da11.platformequinix.com",
            "project_lite": {"href": format!("/metal/v1/projects/{project}")},
            "ip_addresses": [
                {"address": format!("198.51.100.{}", n % 250 + 1), "address_family": 4, "public": true, "management": true, "cidr": 31, "gateway": "198.51.100.254", "netmask": "255.255.255.254", "enabled": true},
                {"address": format!("10.70.0.{}", n % 250 + 1), "address_family": 4, "public": false, "management": true, "cidr": 31, "enabled": true},
            ],
        });
        if let Some(m) = body.get("metro").and_then(Value::as_str) {
            d["metro"] = json!({"code": m});
        }
        if let Some(u) = body.get("ipxe_script_url") {
            d["ipxe_script_url"] = u.clone();
        }
        if let Some(c) = body.get("customdata") {
            d["customdata"] = c.clone();
        }
        self.devices
            .lock()
            .expect("poisoned")
            .insert(id, (project, d.clone()));
        Reply::json(201, d)
    }
}

impl Backend for EquinixFake {
    fn handle(&self, call: &Call) -> Reply {
        let id = call.param("id").to_string();
        match call.operation.as_str() {
            "createDevice" => self.create(call),
            "findDeviceById" => match self.devices.lock().expect("poisoned").get(&id) {
                Some((_, d)) => Reply::json(200, d.clone()),
                None => error(404, "Not found"),
            },
            "deleteDevice" => match self.devices.lock().expect("poisoned").remove(&id) {
                Some(_) => Reply::empty(204),
                None => error(404, "Not found"),
            },
            "findDeviceCustomdata" | "findDeviceUserdata" => {
                match self.devices.lock().expect("poisoned").get(&id) {
                    Some((_, d)) => Reply::json(200, json!({"userdata": d.get("userdata")})),
                    None => error(404, "Not found"),
                }
            }
            "findProjectDevices" => {
                let tag = call.query.get("tag").cloned();
                let devices: Vec<Value> = self
                    .devices
                    .lock()
                    .expect("poisoned")
                    .values()
                    .filter(|(p, _)| *p == id)
                    .map(|(_, d)| d.clone())
                    .filter(|d| match &tag {
                        None => true,
                        Some(t) => d
                            .get("tags")
                            .and_then(Value::as_array)
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t.as_str()))),
                    })
                    .collect();
                let total = devices.len();
                Reply::json(
                    200,
                    json!({"devices": devices, "meta": {"total": total, "current_page": 1, "last_page": 1}}),
                )
            }
            other => error(501, &format!("{other} is not in the fake")),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), String> {
        super::check_header(headers, "x-auth-token", &self.token)
    }
}
