//! A fake Compute Engine: instances and zone operations kept in memory. Inserts and
//! deletes return operations that are already `DONE`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::server::{Backend, Call, Reply};

/// The fake's state.
#[derive(Debug, Default)]
pub struct GceFake {
    /// The bearer token clients must send.
    pub token: String,
    /// Instances by `projects/P/zones/Z/instances/N`.
    instances: Mutex<BTreeMap<String, Value>>,
    operations: Mutex<BTreeMap<String, Value>>,
    counter: Mutex<u64>,
}

fn error(code: u16, message: &str) -> Reply {
    Reply::json(
        code,
        json!({"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": if code == 404 { "notFound" } else { "invalid" }}]}}),
    )
}

impl GceFake {
    /// A fake expecting `Authorization: Bearer <token>`.
    pub fn new(token: &str) -> GceFake {
        GceFake {
            token: token.to_string(),
            ..Default::default()
        }
    }

    fn next(&self) -> u64 {
        let mut c = self.counter.lock().expect("poisoned");
        *c += 1;
        *c
    }

    /// Every instance (for assertions).
    pub fn instances(&self) -> Vec<Value> {
        self.instances
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Plants an instance directly (for gc tests).
    pub fn insert_instance(&self, project: &str, zone: &str, instance: Value) {
        let name = instance
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("x")
            .to_string();
        self.instances.lock().expect("poisoned").insert(
            format!("projects/{project}/zones/{zone}/instances/{name}"),
            instance,
        );
    }

    fn operation(&self, call: &Call, kind: &str, target: &str) -> Value {
        let n = self.next();
        let project = call.param("project");
        let zone = call.param("zone");
        let name = format!("operation-{n}-{kind}");
        let base = format!("{}/compute/v1", call.base_url);
        let op = json!({
            "kind": "compute#operation",
            "id": (1000 + n).to_string(),
            "name": name,
            "operationType": kind,
            "status": "DONE",
            "progress": 100,
            "targetLink": format!("{base}/{target}"),
            "zone": format!("{base}/projects/{project}/zones/{zone}"),
            "selfLink": format!("{base}/projects/{project}/zones/{zone}/operations/{name}"),
            "insertTime": chrono::Utc::now().to_rfc3339(),
        });
        self.operations.lock().expect("poisoned").insert(
            format!("projects/{project}/zones/{zone}/operations/{name}"),
            op.clone(),
        );
        op
    }

    fn insert(&self, call: &Call) -> Reply {
        let mut inst = call.body.clone().unwrap_or_else(|| json!({}));
        let project = call.param("project").to_string();
        let zone = call.param("zone").to_string();
        let Some(name) = inst.get("name").and_then(Value::as_str).map(str::to_string) else {
            return error(400, "Invalid value for field 'resource.name': ''");
        };
        let key = format!("projects/{project}/zones/{zone}/instances/{name}");
        if self.instances.lock().expect("poisoned").contains_key(&key) {
            return error(409, &format!("The resource '{key}' already exists"));
        }
        let n = self.next();
        let base = format!("{}/compute/v1", call.base_url);
        let o = inst.as_object_mut().expect("checked: an object");
        o.insert("kind".into(), json!("compute#instance"));
        o.insert("id".into(), json!((9_000_000 + n).to_string()));
        o.insert("status".into(), json!("RUNNING"));
        o.insert(
            "zone".into(),
            json!(format!("{base}/projects/{project}/zones/{zone}")),
        );
        o.insert("selfLink".into(), json!(format!("{base}/{key}")));
        o.insert(
            "creationTimestamp".into(),
            json!(chrono::Utc::now().to_rfc3339()),
        );
        if let Some(nics) = o.get_mut("networkInterfaces").and_then(Value::as_array_mut) {
            for (i, nic) in nics.iter_mut().enumerate() {
                nic["networkIP"] = json!(format!("10.128.0.{}", (n % 200) as usize + i + 2));
                nic["name"] = json!(format!("nic{i}"));
                if let Some(acs) = nic.get_mut("accessConfigs").and_then(Value::as_array_mut) {
                    for ac in acs {
                        ac["natIP"] = json!(format!("203.0.113.{}", (n % 200) + 10));
                    }
                }
            }
        }
        self.instances
            .lock()
            .expect("poisoned")
            .insert(key.clone(), inst);
        Reply::json(200, self.operation(call, "insert", &key))
    }

    fn list(&self, call: &Call, aggregated: bool) -> Reply {
        let project = call.param("project").to_string();
        let zone = call.param("zone").to_string();
        let filter = call.query.get("filter").cloned().unwrap_or_default();
        let label = parse_label_filter(&filter);
        let all = self.instances.lock().expect("poisoned");
        let mut by_zone: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in all.iter() {
            let parts: Vec<&str> = k.split('/').collect();
            if parts.get(1) != Some(&project.as_str()) {
                continue;
            }
            let z = parts.get(3).copied().unwrap_or("");
            if !aggregated && z != zone {
                continue;
            }
            if let Some((lk, lv)) = &label {
                if v.pointer(&format!("/labels/{lk}")).and_then(Value::as_str) != Some(lv.as_str())
                {
                    continue;
                }
            }
            by_zone
                .entry(format!("zones/{z}"))
                .or_default()
                .push(v.clone());
        }
        if aggregated {
            let items: serde_json::Map<String, Value> = by_zone
                .into_iter()
                .map(|(z, list)| (z, json!({ "instances": list })))
                .collect();
            Reply::json(
                200,
                json!({"kind": "compute#instanceAggregatedList", "id": format!("projects/{project}/aggregated/instances"), "items": items}),
            )
        } else {
            let items: Vec<Value> = by_zone.into_values().flatten().collect();
            Reply::json(
                200,
                json!({"kind": "compute#instanceList", "id": format!("projects/{project}/zones/{zone}/instances"), "items": items}),
            )
        }
    }
}

/// Parses `labels.K = "V"` or `labels.K = V` (the one filter form bogie uses).
fn parse_label_filter(f: &str) -> Option<(String, String)> {
    let rest = f.trim().trim_start_matches('(').trim_end_matches(')');
    let rest = rest.strip_prefix("labels.")?;
    let (k, v) = rest.split_once('=')?;
    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
}

impl Backend for GceFake {
    fn handle(&self, call: &Call) -> Reply {
        let project = call.param("project");
        let zone = call.param("zone");
        let key = format!(
            "projects/{project}/zones/{zone}/instances/{}",
            call.param("instance")
        );
        match call.operation.as_str() {
            "compute.instances.insert" => self.insert(call),
            "compute.instances.get" => match self.instances.lock().expect("poisoned").get(&key) {
                Some(v) => Reply::json(200, v.clone()),
                None => error(404, &format!("The resource '{key}' was not found")),
            },
            "compute.instances.delete" => {
                if self
                    .instances
                    .lock()
                    .expect("poisoned")
                    .remove(&key)
                    .is_none()
                {
                    return error(404, &format!("The resource '{key}' was not found"));
                }
                Reply::json(200, self.operation(call, "delete", &key))
            }
            "compute.instances.getSerialPortOutput" => {
                if !self.instances.lock().expect("poisoned").contains_key(&key) {
                    return error(404, &format!("The resource '{key}' was not found"));
                }
                let contents = format!(
                    "SeaBIOS (fake GCE serial port 1 of {})\nLinux version 6.1\n",
                    call.param("instance")
                );
                Reply::json(
                    200,
                    json!({"kind": "compute#serialPortOutput", "contents": contents, "start": "0", "next": contents.len().to_string(), "selfLink": format!("{}/compute/v1/{key}/serialPort", call.base_url)}),
                )
            }
            "compute.instances.list" => self.list(call, false),
            "compute.instances.aggregatedList" => self.list(call, true),
            "compute.zoneOperations.get" | "compute.zoneOperations.wait" => {
                let k = format!(
                    "projects/{project}/zones/{zone}/operations/{}",
                    call.param("operation")
                );
                match self.operations.lock().expect("poisoned").get(&k) {
                    Some(op) => Reply::json(200, op.clone()),
                    None => error(404, &format!("The resource '{k}' was not found")),
                }
            }
            other => error(501, &format!("{other} is not in the fake")),
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), String> {
        super::check_header(headers, "authorization", &format!("Bearer {}", self.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_filters_parse() {
        assert_eq!(
            parse_label_filter("labels.bogie-basename = \"ci\""),
            Some(("bogie-basename".into(), "ci".into()))
        );
        assert_eq!(parse_label_filter("name = x"), None);
    }
}
