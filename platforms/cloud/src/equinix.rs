//! Equinix Metal through its v1 REST API.
//!
//! **Equinix Metal was sunset on 2026-06-30.** The client is kept for users who still have
//! access to the API; it warns when it starts.
//!
//! A device per machine, booted with `custom_ipxe` (an iPXE script at
//! `--equinixmetal-ipxe-script-url` boots the image under test, which reads its Ignition
//! config from the metadata service: the device's `userdata`), tagged
//! `bogie:run=…`, `bogie:created=…`, `bogie:basename=…` (device tags are plain strings).
//! There is no console over the API (the serial console is SOS over SSH); the console
//! artifact says so. `bogie gc -p equinix` lists the project's devices by tag.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use bogie_harness::{ClusterSpec, MachineSpec, PlatformError};
use bogie_platform_common::tags::{TAG_BASENAME, TAG_CREATED};
use bogie_platform_common::{GcItem, GcOptions, GcReport, RunTags, Secret};
use reqwest::Method;
use serde_json::{json, Value};

use crate::rest::{Auth, Rest};
use crate::{poll, Created, Provider};

/// Equinix Metal's API endpoint.
pub const ENDPOINT: &str = "https://api.equinix.com/metal/v1";
/// The sunset notice printed when the client starts.
pub const SUNSET_WARNING: &str = "Equinix Metal was sunset on 2026-06-30: the equinix platform is kept for existing users and may stop working at any time";
const SERVICE: &str = "equinix-metal";

/// What the user chose for Equinix Metal (kola's `--equinixmetal-*` flags).
#[derive(Debug, Clone)]
pub struct EquinixOptions {
    /// API key (`--equinixmetal-api-key`, `METAL_AUTH_TOKEN`).
    pub api_key: Secret,
    /// Project UUID (`--equinixmetal-project`).
    pub project: String,
    /// Metro (`--equinixmetal-metro`).
    pub metro: String,
    /// Plan (`--equinixmetal-plan`).
    pub plan: String,
    /// Operating system slug (`custom_ipxe` to boot the image under test).
    pub operating_system: String,
    /// The iPXE script URL for `custom_ipxe`.
    pub ipxe_script_url: Option<String>,
    /// API endpoint (tests).
    pub endpoint: String,
    /// How long a device may take to become active (`--equinixmetal-launch-timeout`).
    pub launch_timeout: Duration,
    /// How often the device is polled.
    pub poll: Duration,
}

impl EquinixOptions {
    /// Options with kola's defaults (c3.small.x86, custom_ipxe).
    pub fn new(api_key: Secret, project: &str, metro: &str) -> EquinixOptions {
        EquinixOptions {
            api_key,
            project: project.to_string(),
            metro: metro.to_string(),
            plan: "c3.small.x86".into(),
            operating_system: "custom_ipxe".into(),
            ipxe_script_url: None,
            endpoint: ENDPOINT.into(),
            launch_timeout: Duration::from_secs(1800),
            poll: Duration::from_secs(10),
        }
    }
}

/// The Equinix Metal provider.
pub struct Equinix {
    opts: EquinixOptions,
    rest: Rest,
}

impl std::fmt::Debug for Equinix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Equinix")
            .field("project", &self.opts.project)
            .field("metro", &self.opts.metro)
            .finish_non_exhaustive()
    }
}

/// One device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its UUID.
    pub id: String,
    /// Its SOS (serial over SSH) host.
    pub sos: Option<String>,
}

/// The run's tags as device tags (`key=value`).
pub fn device_tags(tags: &RunTags) -> Vec<String> {
    tags.pairs()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

fn tag_of<'a>(device: &'a Value, key: &str) -> Option<&'a str> {
    device
        .get("tags")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

impl Equinix {
    /// A provider; warns that the service was sunset.
    pub fn new(opts: EquinixOptions) -> Result<Equinix, PlatformError> {
        tracing::warn!("{SUNSET_WARNING}");
        if opts.api_key.expose().is_empty() {
            return Err(PlatformError::Input(
                "no Equinix Metal API key: pass --equinixmetal-api-key or set METAL_AUTH_TOKEN"
                    .into(),
            ));
        }
        if opts.project.is_empty() {
            return Err(PlatformError::Input(
                "no Equinix Metal project: pass --equinixmetal-project".into(),
            ));
        }
        if opts.operating_system == "custom_ipxe" && opts.ipxe_script_url.is_none() {
            return Err(PlatformError::Input(
                "custom_ipxe needs --equinixmetal-ipxe-script-url (an iPXE script booting the image under test)".into(),
            ));
        }
        let rest = Rest::new(
            SERVICE,
            &opts.endpoint,
            Auth::Header("X-Auth-Token", opts.api_key.clone()),
        )?;
        Ok(Equinix { opts, rest })
    }

    /// The device-create body for a machine.
    pub fn device_body(&self, tags: &RunTags, hostname: &str, spec: &MachineSpec) -> Value {
        let mut b = json!({
            "metro": self.opts.metro,
            "plan": self.opts.plan,
            "operating_system": self.opts.operating_system,
            "hostname": hostname,
            "billing_cycle": "hourly",
            "userdata": spec.ignition,
            "tags": device_tags(tags),
            "always_pxe": false,
        });
        if let Some(u) = &self.opts.ipxe_script_url {
            b["ipxe_script_url"] = json!(u);
        }
        b
    }

    async fn get_device(&self, id: &str) -> Result<Option<Value>, PlatformError> {
        let r = self
            .rest
            .send(
                Method::GET,
                &format!("devices/{id}"),
                None,
                "reading the device",
            )
            .await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.rest.error("reading the device", &r)),
        }
    }

    async fn delete_device(&self, id: &str) -> Result<(), PlatformError> {
        let what = format!("deleting device {id}");
        let r = self
            .rest
            .send(Method::DELETE, &format!("devices/{id}"), None, &what)
            .await?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.rest.error(&what, &r)),
        }
    }
}

#[async_trait]
impl Provider for Equinix {
    type ClusterState = ();
    type Handle = Device;

    fn name(&self) -> &'static str {
        "equinix"
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["bare-metal", "equinix", "metadata-service"]
    }

    async fn create_cluster(&self, _: &RunTags, _: &ClusterSpec) -> Result<(), PlatformError> {
        Ok(())
    }

    async fn create_machine(
        &self,
        tags: &RunTags,
        _: &(),
        spec: &MachineSpec,
        track: &(dyn Fn(Device) + Send + Sync),
    ) -> Result<Created<Device>, PlatformError> {
        let hostname = tags.name(&[&spec.id], 63);
        let what = format!("creating device {hostname}");
        let r = self
            .rest
            .ok(
                Method::POST,
                &format!("projects/{}/devices", self.opts.project),
                Some(&self.device_body(tags, &hostname, spec)),
                &what,
            )
            .await?;
        let id = r
            .body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| PlatformError::Machine(format!("{what}: no device id in the answer")))?
            .to_string();
        let mut device = Device {
            id: id.clone(),
            sos: None,
        };
        track(device.clone());
        let d = poll(&what, self.opts.poll, self.opts.launch_timeout, || async {
            let Some(d) = self.get_device(&id).await? else {
                return Err(PlatformError::Machine(format!("device {id} vanished")));
            };
            match d.get("state").and_then(Value::as_str) {
                Some("active") => Ok(Some(d)),
                Some("failed") => Err(PlatformError::Machine(format!(
                    "device {id} failed to provision"
                ))),
                _ => Ok(None),
            }
        })
        .await?;
        device.sos = d.get("sos").and_then(Value::as_str).map(str::to_string);
        let addrs: Vec<&Value> = d
            .get("ip_addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.get("address_family").and_then(Value::as_i64) == Some(4))
            .collect();
        let pick = |public: bool| -> Option<IpAddr> {
            addrs
                .iter()
                .find(|a| a.get("public").and_then(Value::as_bool) == Some(public))
                .and_then(|a| a.get("address").and_then(Value::as_str))
                .and_then(|s| s.parse().ok())
        };
        let private = pick(false);
        let addr = pick(true)
            .or(private)
            .ok_or_else(|| PlatformError::Machine(format!("device {id} has no IPv4 address")))?;
        Ok(Created {
            handle: device,
            ssh: SocketAddr::new(addr, 22),
            private_ip: private,
        })
    }

    async fn console(&self, h: &Device) -> Result<String, PlatformError> {
        Ok(format!(
            "Equinix Metal has no console API. Serial console (SOS): ssh {}@{}\n",
            h.id,
            h.sos
                .as_deref()
                .unwrap_or("sos.<facility>.platformequinix.com")
        ))
    }

    async fn is_running(&self, h: &Device) -> bool {
        match self.get_device(&h.id).await {
            Ok(Some(d)) => d.get("state").and_then(Value::as_str) == Some("active"),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn delete_machine(&self, _: &(), h: &Device) -> Result<(), PlatformError> {
        self.delete_device(&h.id).await
    }

    async fn delete_cluster(&self, _: &(), _: bool) -> Result<(), PlatformError> {
        Ok(())
    }

    fn describe(&self, h: &Device) -> Value {
        json!({
            "platform": "equinix",
            "device": h.id,
            "down": format!("metal device delete --force --id {}", h.id),
        })
    }

    async fn gc(&self, opts: &GcOptions) -> Result<GcReport, PlatformError> {
        let tag = format!("{TAG_BASENAME}={}", opts.basename);
        let mut report = GcReport::default();
        let mut page = 1;
        loop {
            let path = format!(
                "projects/{}/devices?tag={}&page={page}&per_page=100",
                self.opts.project,
                urlencoding::encode(&tag)
            );
            let r = self
                .rest
                .ok(Method::GET, &path, None, "listing devices")
                .await?;
            for d in r
                .body
                .get("devices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = d.get("id").and_then(Value::as_str).unwrap_or_default();
                let created = tag_of(d, TAG_CREATED);
                if !opts.is_leftover(tag_of(d, TAG_BASENAME), created) {
                    report.young += 1;
                    continue;
                }
                let item = GcItem::new("device", id, created.map(str::to_string));
                if opts.dry_run {
                    report.deleted.push(item);
                    continue;
                }
                match self.delete_device(id).await {
                    Ok(()) => report.deleted.push(item),
                    Err(e) => report.failed.push((item, e.to_string())),
                }
            }
            let last = r
                .body
                .pointer("/meta/last_page")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if page >= last {
                break;
            }
            page += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let t = RunTags::new("ci");
        let d = json!({ "tags": device_tags(&t) });
        assert_eq!(tag_of(&d, TAG_BASENAME), Some("ci"));
        assert_eq!(tag_of(&d, TAG_CREATED), Some(t.created_rfc3339().as_str()));
        assert_eq!(tag_of(&d, "nope"), None);
    }
}
