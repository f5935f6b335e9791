//! Google Compute Engine through its v1 REST API.
//!
//! An instance per machine, with the Ignition config in the `user-data` metadata item
//! (which Ignition's GCP provider reads), labels `bogie-run`, `bogie-created` (unix seconds:
//! label values cannot hold `:`) and `bogie-basename`, an external address for SSH and the
//! console from serial port 1. Inserts and deletes are long-running operations, waited for
//! through `zoneOperations.wait`. `bogie gc -p gce` lists instances by label across zones.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bogie_harness::{Arch, ClusterSpec, MachineSpec, PlatformError};
use bogie_platform_common::tags::sanitize_name;
use bogie_platform_common::{GcItem, GcOptions, GcReport, RunTags};
use reqwest::Method;
use serde_json::{json, Value};

use crate::auth::{GoogleToken, StaticToken, TokenSource};
use crate::rest::{Auth, Rest};
use crate::{poll, Created, Provider};

/// Compute Engine's v1 endpoint.
pub const ENDPOINT: &str = "https://compute.googleapis.com/compute/v1";
const SERVICE: &str = "compute";
/// Label naming the run.
pub const LABEL_RUN: &str = "bogie-run";
/// Label holding the creation time in unix seconds.
pub const LABEL_CREATED: &str = "bogie-created";
/// Label holding the basename.
pub const LABEL_BASENAME: &str = "bogie-basename";

/// What the user chose for GCE (kola's `--gce-*` flags).
#[derive(Debug, Clone)]
pub struct GceOptions {
    /// Project (`--gce-project`).
    pub project: String,
    /// Zone (`--gce-zone`).
    pub zone: String,
    /// Machine type (`--gce-machinetype`).
    pub machine_type: String,
    /// Disk type (`--gce-disktype`).
    pub disk_type: String,
    /// Network (`--gce-network`).
    pub network: String,
    /// Image (`--gce-image`): `projects/P/global/images/[family/]NAME`, a full URL, or a
    /// name in the project.
    pub image: String,
    /// gVNIC instead of virtio-net (`--gce-gvnic`).
    pub gvnic: bool,
    /// API endpoint (tests).
    pub endpoint: String,
    /// How long an operation may take.
    pub op_timeout: Duration,
}

impl GceOptions {
    /// Options with kola's defaults for an arch (us-central1-a, pd-ssd, default network;
    /// t2d-standard-1 on amd64, t2a-standard-1 on arm64).
    pub fn new(project: &str, image: &str, arch: Arch) -> GceOptions {
        GceOptions {
            project: project.to_string(),
            zone: "us-central1-a".into(),
            machine_type: match arch {
                Arch::Amd64 => "t2d-standard-1",
                Arch::Arm64 => "t2a-standard-1",
            }
            .into(),
            disk_type: "pd-ssd".into(),
            network: "default".into(),
            image: image.to_string(),
            gvnic: false,
            endpoint: ENDPOINT.into(),
            op_timeout: Duration::from_secs(600),
        }
    }
}

/// How GCE requests authenticate.
#[derive(Debug, Clone)]
pub enum GceAuth {
    /// A service account JSON key (`--gce-json-key`).
    JsonKey(std::path::PathBuf),
    /// The metadata server (`--gce-service-auth`).
    Metadata,
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`/`CLOUDSDK_AUTH_ACCESS_TOKEN`, else `gcloud`.
    Default,
}

/// The GCE provider.
pub struct Gce {
    opts: GceOptions,
    rest: Rest,
}

impl std::fmt::Debug for Gce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gce")
            .field("project", &self.opts.project)
            .field("zone", &self.opts.zone)
            .finish_non_exhaustive()
    }
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GceInstance {
    /// Its zone.
    pub zone: String,
    /// Its name.
    pub name: String,
}

/// A label value: lower case, `[a-z0-9_-]`, at most 63 characters.
pub fn label_value(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect()
}

fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl Gce {
    /// A provider authenticating as `auth` says.
    pub fn new(opts: GceOptions, auth: GceAuth) -> Result<Gce, PlatformError> {
        let token: Arc<dyn TokenSource> = match auth {
            GceAuth::JsonKey(p) => Arc::new(GoogleToken::from_key_file(&p)?),
            GceAuth::Metadata => Arc::new(GoogleToken::metadata()),
            GceAuth::Default => {
                let env = ["GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN"]
                    .iter()
                    .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
                match env {
                    Some(t) => Arc::new(StaticToken(bogie_platform_common::Secret::new(t))),
                    None => Arc::new(GoogleToken::gcloud()),
                }
            }
        };
        Self::with_token(opts, token)
    }

    /// A provider with a given token source (tests).
    pub fn with_token(opts: GceOptions, token: Arc<dyn TokenSource>) -> Result<Gce, PlatformError> {
        if opts.project.is_empty() {
            return Err(PlatformError::Input(
                "no GCE project: pass --gce-project".into(),
            ));
        }
        let rest = Rest::new(SERVICE, &opts.endpoint, Auth::Bearer(token))?;
        Ok(Gce { opts, rest })
    }

    fn zone_path(&self, zone: &str) -> String {
        format!("projects/{}/zones/{zone}", self.opts.project)
    }

    fn source_image(&self) -> String {
        let i = &self.opts.image;
        if i.contains('/') {
            i.clone()
        } else {
            format!("projects/{}/global/images/{i}", self.opts.project)
        }
    }

    /// The instance body for a machine.
    pub fn instance_body(&self, tags: &RunTags, name: &str, spec: &MachineSpec) -> Value {
        let zone = &self.opts.zone;
        let labels = json!({
            LABEL_RUN: label_value(&tags.run),
            LABEL_CREATED: tags.created.timestamp().to_string(),
            LABEL_BASENAME: label_value(&tags.basename),
        });
        let mut nic = json!({
            "network": format!("global/networks/{}", self.opts.network),
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
        });
        if self.opts.gvnic {
            nic["nicType"] = json!("GVNIC");
        }
        json!({
            "name": name,
            "machineType": format!("zones/{zone}/machineTypes/{}", self.opts.machine_type),
            "labels": labels,
            "metadata": {"items": [{"key": "user-data", "value": spec.ignition}]},
            "disks": [{
                "boot": true,
                "autoDelete": true,
                "type": "PERSISTENT",
                "initializeParams": {
                    "sourceImage": self.source_image(),
                    "diskType": format!("zones/{zone}/diskTypes/{}", self.opts.disk_type),
                    "labels": labels,
                },
            }],
            "networkInterfaces": [nic],
        })
    }

    /// Waits for a zone operation to finish; its error is an error.
    async fn wait(&self, op: &Value, what: &str) -> Result<(), PlatformError> {
        let name = op
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let zone = op
            .get("zone")
            .and_then(Value::as_str)
            .map(last_segment)
            .unwrap_or(&self.opts.zone)
            .to_string();
        let check = |v: &Value| -> Result<bool, PlatformError> {
            if let Some(errs) = v.pointer("/error/errors").and_then(Value::as_array) {
                let msgs: Vec<String> = errs
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.get("code").and_then(Value::as_str).unwrap_or(""),
                            e.get("message").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect();
                return Err(bogie_platform_common::http::api_error(
                    SERVICE,
                    format!("{what}: {}", msgs.join("; ")),
                ));
            }
            Ok(v.get("status").and_then(Value::as_str) == Some("DONE"))
        };
        if check(op)? {
            return Ok(());
        }
        let path = format!("{}/operations/{name}/wait", self.zone_path(&zone));
        poll(
            what,
            Duration::from_secs(1),
            self.opts.op_timeout,
            || async {
                let r = self.rest.ok(Method::POST, &path, None, what).await?;
                Ok(check(&r.body)?.then_some(()))
            },
        )
        .await
    }

    async fn get_instance(&self, h: &GceInstance) -> Result<Option<Value>, PlatformError> {
        let path = format!("{}/instances/{}", self.zone_path(&h.zone), h.name);
        let r = self
            .rest
            .send(Method::GET, &path, None, "reading the instance")
            .await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.rest.error("reading the instance", &r)),
        }
    }

    async fn delete_instance(&self, h: &GceInstance) -> Result<(), PlatformError> {
        let path = format!("{}/instances/{}", self.zone_path(&h.zone), h.name);
        let what = format!("deleting instance {}", h.name);
        let r = self.rest.send(Method::DELETE, &path, None, &what).await?;
        match r.status {
            404 => Ok(()),
            200..=299 => self.wait(&r.body, &what).await,
            _ => Err(self.rest.error(&what, &r)),
        }
    }
}

#[async_trait]
impl Provider for Gce {
    type ClusterState = ();
    type Handle = GceInstance;

    fn name(&self) -> &'static str {
        "gce"
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["cloud", "gce", "metadata-service"]
    }

    async fn create_cluster(&self, _: &RunTags, _: &ClusterSpec) -> Result<(), PlatformError> {
        Ok(())
    }

    async fn create_machine(
        &self,
        tags: &RunTags,
        _: &(),
        spec: &MachineSpec,
        track: &(dyn Fn(GceInstance) + Send + Sync),
    ) -> Result<Created<GceInstance>, PlatformError> {
        let name = sanitize_name(&tags.name(&[&spec.id], 63), 63);
        let handle = GceInstance {
            zone: self.opts.zone.clone(),
            name: name.clone(),
        };
        let what = format!("creating instance {name}");
        let path = format!("{}/instances", self.zone_path(&self.opts.zone));
        let op = self
            .rest
            .ok(
                Method::POST,
                &path,
                Some(&self.instance_body(tags, &name, spec)),
                &what,
            )
            .await?;
        track(handle.clone());
        self.wait(&op.body, &what).await?;
        let inst = poll(
            &what,
            Duration::from_secs(3),
            self.opts.op_timeout,
            || async {
                let Some(v) = self.get_instance(&handle).await? else {
                    return Err(PlatformError::Machine(format!("instance {name} vanished")));
                };
                match v.get("status").and_then(Value::as_str) {
                    Some("RUNNING") => Ok(Some(v)),
                    Some(s @ ("TERMINATED" | "STOPPED" | "SUSPENDED")) => {
                        Err(PlatformError::Machine(format!("instance {name} is {s}")))
                    }
                    _ => Ok(None),
                }
            },
        )
        .await?;
        let nic = inst.pointer("/networkInterfaces/0");
        let private: Option<IpAddr> = nic
            .and_then(|n| n.get("networkIP"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let public: Option<IpAddr> = nic
            .and_then(|n| n.pointer("/accessConfigs/0/natIP"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let addr = public
            .or(private)
            .ok_or_else(|| PlatformError::Machine(format!("instance {name} has no address")))?;
        Ok(Created {
            handle,
            ssh: SocketAddr::new(addr, 22),
            private_ip: private,
        })
    }

    async fn console(&self, h: &GceInstance) -> Result<String, PlatformError> {
        let path = format!(
            "{}/instances/{}/serialPort?port=1&start=0",
            self.zone_path(&h.zone),
            h.name
        );
        let r = self
            .rest
            .ok(Method::GET, &path, None, "reading serial port 1")
            .await?;
        Ok(r.body
            .get("contents")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    async fn is_running(&self, h: &GceInstance) -> bool {
        match self.get_instance(h).await {
            Ok(Some(v)) => matches!(
                v.get("status").and_then(Value::as_str),
                Some("RUNNING" | "PROVISIONING" | "STAGING")
            ),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn delete_machine(&self, _: &(), h: &GceInstance) -> Result<(), PlatformError> {
        self.delete_instance(h).await
    }

    async fn delete_cluster(&self, _: &(), _: bool) -> Result<(), PlatformError> {
        Ok(())
    }

    fn describe(&self, h: &GceInstance) -> Value {
        json!({
            "platform": "gce",
            "project": self.opts.project,
            "zone": h.zone,
            "instance": h.name,
            "down": format!("gcloud compute instances delete --quiet --project {} --zone {} {}", self.opts.project, h.zone, h.name),
        })
    }

    async fn gc(&self, opts: &GcOptions) -> Result<GcReport, PlatformError> {
        let filter = format!(
            "labels.{LABEL_BASENAME} = \"{}\"",
            label_value(&opts.basename)
        );
        let mut report = GcReport::default();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "projects/{}/aggregated/instances?filter={}",
                self.opts.project,
                urlencoding::encode(&filter)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&pageToken={}", urlencoding::encode(t)));
            }
            let r = self
                .rest
                .ok(Method::GET, &path, None, "listing instances")
                .await?;
            for (_, scope) in r
                .body
                .get("items")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                for inst in scope
                    .get("instances")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = inst.get("name").and_then(Value::as_str).unwrap_or_default();
                    let zone = inst
                        .get("zone")
                        .and_then(Value::as_str)
                        .map(last_segment)
                        .unwrap_or_default();
                    let label = |k: &str| {
                        inst.pointer(&format!("/labels/{k}"))
                            .and_then(Value::as_str)
                    };
                    let ours = label(LABEL_BASENAME).map(|b| b == label_value(&opts.basename));
                    // Compare against the sanitized basename gc looks for.
                    let gc_opts = GcOptions {
                        basename: label_value(&opts.basename),
                        ..opts.clone()
                    };
                    if ours != Some(true)
                        || !gc_opts.is_leftover(label(LABEL_BASENAME), label(LABEL_CREATED))
                    {
                        report.young += 1;
                        continue;
                    }
                    let item = GcItem::new(
                        "instance",
                        format!("{zone}/{name}"),
                        label(LABEL_CREATED).map(str::to_string),
                    );
                    if opts.dry_run {
                        report.deleted.push(item);
                        continue;
                    }
                    let h = GceInstance {
                        zone: zone.to_string(),
                        name: name.to_string(),
                    };
                    match self.delete_instance(&h).await {
                        Ok(()) => report.deleted.push(item),
                        Err(e) => report.failed.push((item, e.to_string())),
                    }
                }
            }
            match r.body.get("nextPageToken").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("Kola:CI/1"), "kola-ci-1");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
