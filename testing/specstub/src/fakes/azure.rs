//! A fake Azure Resource Manager: resource groups, virtual networks, network security
//! groups, public IPs, NICs and VMs kept in memory. PUTs complete at once
//! (`provisioningState: Succeeded`); deleting a group deletes what is in it; boot
//! diagnostics hand out a blob URL served by the stub itself.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::server::{Backend, Call, Reply};

/// The fake's state: resources by lower-cased id.
#[derive(Debug, Default)]
pub struct AzureFake {
    /// The bearer token clients must send.
    pub token: String,
    resources: Mutex<BTreeMap<String, Value>>,
    next_ip: Mutex<u8>,
}

fn not_found(id: &str) -> Reply {
    Reply::json(
        404,
        json!({"error": {"code": "ResourceNotFound", "message": format!("{id} not found")}}),
    )
}

fn resource_type(op: &str) -> &'static str {
    match op.split('_').next().unwrap_or("") {
        "ResourceGroups" => "Microsoft.Resources/resourceGroups",
        "VirtualMachines" => "Microsoft.Compute/virtualMachines",
        "VirtualNetworks" => "Microsoft.Network/virtualNetworks",
        "Subnets" => "Microsoft.Network/virtualNetworks/subnets",
        "NetworkSecurityGroups" => "Microsoft.Network/networkSecurityGroups",
        "SecurityRules" => "Microsoft.Network/networkSecurityGroups/securityRules",
        "PublicIPAddresses" => "Microsoft.Network/publicIPAddresses",
        "NetworkInterfaces" => "Microsoft.Network/networkInterfaces",
        _ => "Microsoft.Unknown/unknown",
    }
}

impl AzureFake {
    /// A fake expecting `Authorization: Bearer <token>`.
    pub fn new(token: &str) -> AzureFake {
        AzureFake {
            token: token.to_string(),
            ..Default::default()
        }
    }

    /// The ids of every resource (lower case).
    pub fn ids(&self) -> Vec<String> {
        self.resources
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// A stored resource by id (any case).
    pub fn get(&self, id: &str) -> Option<Value> {
        self.resources
            .lock()
            .expect("poisoned")
            .get(&id.to_lowercase())
            .cloned()
    }

    /// Stores a resource directly (to plant leftovers for gc tests).
    pub fn insert(&self, id: &str, v: Value) {
        self.resources
            .lock()
            .expect("poisoned")
            .insert(id.to_lowercase(), v);
    }

    fn put(&self, call: &Call) -> Reply {
        let id = format!("/{}", call.path.trim_start_matches('/'));
        let key = id.to_lowercase();
        let mut body = call.body.clone().unwrap_or_else(|| json!({}));
        let name = id.rsplit('/').next().unwrap_or("").to_string();
        let obj = body.as_object_mut().expect("checked: an object");
        obj.insert("id".into(), json!(id));
        obj.insert("name".into(), json!(name));
        obj.insert("type".into(), json!(resource_type(&call.operation)));
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("properties is an object");
        props.insert("provisioningState".into(), json!("Succeeded"));
        match call.operation.as_str() {
            "PublicIPAddresses_CreateOrUpdate" => {
                let mut n = self.next_ip.lock().expect("poisoned");
                *n = n.wrapping_add(1).max(1);
                props.insert("ipAddress".into(), json!(format!("203.0.113.{}", *n)));
            }
            "VirtualMachines_CreateOrUpdate" => {
                props.insert(
                    "vmId".into(),
                    json!(format!("{:032x}", key.len() as u128 * 7919)),
                );
            }
            "NetworkInterfaces_CreateOrUpdate" => {
                if let Some(cfgs) = props
                    .get_mut("ipConfigurations")
                    .and_then(Value::as_array_mut)
                {
                    for (i, c) in cfgs.iter_mut().enumerate() {
                        if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                            p.insert(
                                "privateIPAddress".into(),
                                json!(format!("10.0.0.{}", i + 4)),
                            );
                            p.insert("provisioningState".into(), json!("Succeeded"));
                        }
                    }
                }
            }
            _ => {}
        }
        if call.operation == "ResourceGroups_CreateOrUpdate" {
            // A resource group's only property is its provisioning state.
            obj.insert(
                "properties".into(),
                json!({"provisioningState": "Succeeded"}),
            );
        }
        let existed = self
            .resources
            .lock()
            .expect("poisoned")
            .insert(key, body.clone())
            .is_some();
        Reply::json(if existed { 200 } else { 201 }, body)
    }

    fn get_one(&self, call: &Call) -> Reply {
        let id = format!("/{}", call.path.trim_start_matches('/'));
        match self.get(&id) {
            Some(v) => Reply::json(200, v),
            None => not_found(&id),
        }
    }

    fn delete(&self, call: &Call) -> Reply {
        let id = format!("/{}", call.path.trim_start_matches('/')).to_lowercase();
        let mut r = self.resources.lock().expect("poisoned");
        let existed = r.remove(&id).is_some();
        if call.operation == "ResourceGroups_Delete" {
            // Everything in the group goes with it (ids use either spelling).
            let sub = call.param("subscriptionId").to_lowercase();
            let rg = call.param("resourceGroupName").to_lowercase();
            let prefix = format!("/subscriptions/{sub}/resourcegroups/{rg}/");
            r.retain(|k, _| !k.starts_with(&prefix));
        }
        match (existed, call.operation.as_str()) {
            (false, "ResourceGroups_Delete") => not_found(&id),
            (false, _) => Reply::empty(204),
            (true, _) => Reply::empty(200),
        }
    }

    fn list_groups(&self, call: &Call) -> Reply {
        let sub = call.param("subscriptionId").to_lowercase();
        let prefix = format!("/subscriptions/{sub}/resourcegroups/");
        let filter = call.query.get("$filter").cloned().unwrap_or_default();
        let (tag_name, tag_value) = parse_tag_filter(&filter);
        let r = self.resources.lock().expect("poisoned");
        let value: Vec<Value> = r
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v.clone())
            .filter(|v| match &tag_name {
                None => true,
                Some(n) => {
                    let t = v.get("tags").and_then(|t| t.get(n)).and_then(Value::as_str);
                    match &tag_value {
                        Some(val) => t == Some(val.as_str()),
                        None => t.is_some(),
                    }
                }
            })
            .collect();
        Reply::json(200, json!({ "value": value }))
    }
}

/// Parses `tagName eq 'N' and tagValue eq 'V'` (ARM's resource-group filter).
fn parse_tag_filter(f: &str) -> (Option<String>, Option<String>) {
    let grab = |key: &str| {
        let i = f.find(key)?;
        let rest = &f[i + key.len()..];
        let start = rest.find('\'')? + 1;
        let end = rest[start..].find('\'')? + start;
        Some(rest[start..end].to_string())
    };
    (grab("tagName eq"), grab("tagValue eq"))
}

impl Backend for AzureFake {
    fn handle(&self, call: &Call) -> Reply {
        let op = call.operation.as_str();
        if op == "ResourceGroups_List" {
            return self.list_groups(call);
        }
        if op == "ResourceGroups_CheckExistence" {
            let id = format!("/{}", call.path.trim_start_matches('/'));
            return Reply::empty(if self.get(&id).is_some() { 204 } else { 404 });
        }
        if op == "VirtualMachines_InstanceView" {
            let vm = call.path.trim_end_matches("/instanceView");
            let id = format!("/{}", vm.trim_start_matches('/'));
            if self.get(&id).is_none() {
                return not_found(&id);
            }
            return Reply::json(
                200,
                json!({"statuses": [
                    {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
                    {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"},
                ]}),
            );
        }
        if op == "VirtualMachines_RetrieveBootDiagnosticsData" {
            let vm = call.path.trim_end_matches("/retrieveBootDiagnosticsData");
            let id = format!("/{}", vm.trim_start_matches('/'));
            if self.get(&id).is_none() {
                return not_found(&id);
            }
            let name = call.param("vmName");
            return Reply::json(
                200,
                json!({
                    "consoleScreenshotBlobUri": format!("{}/blob/screenshot/{name}.bmp?sv=2024&sig=FAKE-SAS-SIGNATURE", call.base_url),
                    "serialConsoleLogBlobUri": format!("{}/blob/serial/{name}.log?sv=2024&sig=FAKE-SAS-SIGNATURE", call.base_url),
                }),
            );
        }
        match call.method.as_str() {
            "PUT" => self.put(call),
            "GET" => self.get_one(call),
            "DELETE" => self.delete(call),
            _ => Reply::json(
                501,
                json!({"error": {"code": "NotImplementedInFake", "message": op}}),
            ),
        }
    }

    fn extra(&self, method: &str, path: &str, _base: &str) -> Option<Reply> {
        let name = path.strip_prefix("/blob/serial/")?.strip_suffix(".log")?;
        if method != "GET" {
            return None;
        }
        let exists = self
            .resources
            .lock()
            .expect("poisoned")
            .keys()
            .any(|k| k.ends_with(&format!("/virtualmachines/{}", name.to_lowercase())));
        Some(if exists {
            Reply::text(
                200,
                format!("[    0.000000] Linux version 6.1 (fake Azure serial console of {name})\n{name} login: \n"),
            )
        } else {
            Reply::text(404, "BlobNotFound")
        })
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), String> {
        super::check_header(headers, "authorization", &format!("Bearer {}", self.token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters_parse() {
        assert_eq!(
            parse_tag_filter("tagName eq 'bogie:basename' and tagValue eq 'ci'"),
            (Some("bogie:basename".into()), Some("ci".into()))
        );
        assert_eq!(parse_tag_filter(""), (None, None));
    }
}
