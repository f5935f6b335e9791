//! Azure through Resource Manager's REST API.
//!
//! Each cluster gets a resource group (`<basename>-<run>-<cluster>`, tagged) with a virtual
//! network, a subnet and a network security group allowing SSH; each machine a public IP, a
//! NIC and a VM whose `osProfile.customData` (and `userData`) carry the Ignition config and
//! whose boot diagnostics give the serial console. Teardown deletes the group, which
//! deletes everything in it. With `--azure-resource-group` the group is the user's: bogie
//! then deletes only what it created in it. `bogie gc -p azure` deletes old groups tagged
//! with the basename.
//!
//! Why plain REST rather than `azure_core`'s pipeline: there is no maintained Rust
//! management crate for Compute/Network, so requests are hand-written either way; the
//! JSON bodies are small, long-running operations are handled by polling the resource
//! (which works the same on every ARM endpoint and in the test stub), and `azure_identity`
//! still provides the credentials (service principal, workload/managed identity, Azure CLI).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bogie_harness::{Arch, ClusterSpec, MachineSpec, PlatformError};
use bogie_platform_common::ignition::ssh_keys;
use bogie_platform_common::tags::{sanitize_name, TAG_BASENAME, TAG_CREATED};
use bogie_platform_common::{GcItem, GcOptions, GcReport, RunTags};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::auth::{AzureToken, TokenSource};
use crate::rest::{Auth, Rest};
use crate::{poll, Created, Provider};

/// Resource Manager's public endpoint.
pub const ARM_ENDPOINT: &str = "https://management.azure.com";
/// API version of resource groups (Microsoft.Resources).
pub const API_RESOURCES: &str = "2024-07-01";
/// API version of virtual machines (Microsoft.Compute).
pub const API_COMPUTE: &str = "2024-07-01";
/// API version of networks (Microsoft.Network).
pub const API_NETWORK: &str = "2024-05-01";
const SERVICE: &str = "arm";

/// The image to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AzureImage {
    /// A managed image, gallery image version or other image resource id (`--azure-disk-uri`).
    Id(String),
    /// A marketplace image (`--azure-publisher/-offer/-sku/-version`).
    Marketplace {
        /// Publisher (`kinvolk`).
        publisher: String,
        /// Offer (`flatcar-container-linux-free`).
        offer: String,
        /// SKU (the channel).
        sku: String,
        /// Version (`latest`).
        version: String,
    },
}

/// What the user chose for Azure (kola's `--azure-*` flags).
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// Subscription id (`--azure-subscription`, `AZURE_SUBSCRIPTION_ID`, or the auth file).
    pub subscription: String,
    /// Location (`--azure-location`).
    pub location: String,
    /// VM size (`--azure-size`).
    pub size: String,
    /// The image.
    pub image: AzureImage,
    /// An existing resource group to use instead of one per cluster.
    pub resource_group: Option<String>,
    /// An existing `vnet/subnet` (`--azure-vnet-subnet-name`) in `resource_group`.
    pub vnet_subnet: Option<String>,
    /// Reach machines on their private addresses (`--azure-use-private-ips`): no public IP.
    pub use_private_ips: bool,
    /// Resource Manager endpoint (sovereign clouds, tests).
    pub endpoint: String,
    /// How long a PUT may take to succeed.
    pub provision_timeout: Duration,
    /// How often provisioning state is polled.
    pub poll: Duration,
}

impl AzureOptions {
    /// Options with kola's defaults (westus, Standard_DS2_v2).
    pub fn new(subscription: &str, image: AzureImage) -> AzureOptions {
        AzureOptions {
            subscription: subscription.to_string(),
            location: "westus".into(),
            size: "Standard_DS2_v2".into(),
            image,
            resource_group: None,
            vnet_subnet: None,
            use_private_ips: false,
            endpoint: ARM_ENDPOINT.into(),
            provision_timeout: Duration::from_secs(900),
            poll: Duration::from_secs(5),
        }
    }
}

/// The Azure provider.
pub struct Azure {
    opts: AzureOptions,
    rest: Rest,
    arch: Arch,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("subscription", &self.opts.subscription)
            .field("location", &self.opts.location)
            .finish_non_exhaustive()
    }
}

/// A cluster's resource group and network.
#[derive(Debug, Clone)]
pub struct AzureCluster {
    /// The resource group.
    pub group: String,
    /// Whether bogie created it (and deletes it).
    pub owned: bool,
    /// The subnet id machines join.
    pub subnet: String,
    /// The network security group id (None with a user's subnet).
    pub nsg: Option<String>,
    /// Resources bogie created in a user's group, deleted at teardown (last first).
    pub created: Vec<String>,
    /// Name prefix of the cluster's resources.
    pub prefix: String,
}

/// One machine's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureMachine {
    /// The VM's resource id.
    pub vm: String,
    /// The NIC's resource id.
    pub nic: String,
    /// The public IP's resource id, when it has one.
    pub ip: Option<String>,
}

fn api_version(id: &str) -> &'static str {
    let l = id.to_lowercase();
    if l.contains("/providers/microsoft.compute/") {
        API_COMPUTE
    } else if l.contains("/providers/microsoft.network/") {
        API_NETWORK
    } else {
        API_RESOURCES
    }
}

fn with_version(id: &str) -> String {
    format!("{id}?api-version={}", api_version(id))
}

impl Azure {
    /// A provider with credentials from [`AzureToken::from_environment`].
    pub fn new(
        opts: AzureOptions,
        arch: Arch,
        auth_file: Option<PathBuf>,
    ) -> Result<Azure, PlatformError> {
        let scope = if opts.endpoint == ARM_ENDPOINT {
            crate::auth::ARM_SCOPE.to_string()
        } else {
            format!("{}/.default", opts.endpoint.trim_end_matches('/'))
        };
        let (token, _) = AzureToken::from_environment(auth_file.as_deref(), &scope)?;
        Self::with_token(opts, arch, Arc::new(token))
    }

    /// A provider with a given token source (tests).
    pub fn with_token(
        opts: AzureOptions,
        arch: Arch,
        token: Arc<dyn TokenSource>,
    ) -> Result<Azure, PlatformError> {
        if opts.subscription.is_empty() {
            return Err(PlatformError::Input(
                "no Azure subscription: pass --azure-subscription or set AZURE_SUBSCRIPTION_ID"
                    .into(),
            ));
        }
        let rest = Rest::new(SERVICE, &opts.endpoint, Auth::Bearer(token))?;
        Ok(Azure { opts, rest, arch })
    }

    fn group_id(&self, group: &str) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{group}",
            self.opts.subscription
        )
    }

    fn resource_id(&self, group: &str, provider_type: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{group}/providers/{provider_type}/{name}",
            self.opts.subscription
        )
    }

    fn tags(&self, tags: &RunTags) -> Value {
        let m: Map<String, Value> = tags
            .pairs()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Value::Object(m)
    }

    /// PUTs a resource and waits until its provisioning state is `Succeeded`.
    async fn put(&self, id: &str, body: &Value, what: &str) -> Result<Value, PlatformError> {
        let r = self
            .rest
            .ok(Method::PUT, &with_version(id), Some(body), what)
            .await?;
        let state = |v: &Value| {
            v.pointer("/properties/provisioningState")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match state(&r.body).as_deref() {
            Some("Succeeded") | None => return Ok(r.body),
            _ => {}
        }
        poll(
            what,
            self.opts.poll,
            self.opts.provision_timeout,
            || async {
                let g = self
                    .rest
                    .ok(Method::GET, &with_version(id), None, what)
                    .await?;
                match state(&g.body).as_deref() {
                    Some("Succeeded") | None => Ok(Some(g.body)),
                    Some("Failed") | Some("Canceled") => {
                        Err(self.rest.error(&format!("{what}: provisioning failed"), &g))
                    }
                    _ => Ok(None),
                }
            },
        )
        .await
    }

    async fn get(&self, id: &str, what: &str) -> Result<Option<Value>, PlatformError> {
        let r = self
            .rest
            .send(Method::GET, &with_version(id), None, what)
            .await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(self.rest.error(what, &r)),
        }
    }

    /// Deletes a resource; waits until it is gone when `wait`.
    async fn delete(&self, id: &str, wait: bool, what: &str) -> Result<(), PlatformError> {
        let r = self
            .rest
            .send(Method::DELETE, &with_version(id), None, what)
            .await?;
        match r.status {
            200 | 202 | 204 | 404 => {}
            _ => return Err(self.rest.error(what, &r)),
        }
        if wait && r.status != 404 {
            poll(
                what,
                self.opts.poll,
                self.opts.provision_timeout,
                || async { Ok(self.get(id, what).await?.is_none().then_some(())) },
            )
            .await?;
        }
        Ok(())
    }

    fn image_reference(&self) -> (Value, Option<Value>) {
        match &self.opts.image {
            AzureImage::Id(id) => (json!({ "id": id }), None),
            AzureImage::Marketplace {
                publisher,
                offer,
                sku,
                version,
            } => (
                json!({"publisher": publisher, "offer": offer, "sku": sku, "version": version}),
                // Marketplace images from third parties (Flatcar's) need their plan.
                (publisher != "Canonical" && publisher != "MicrosoftWindowsServer")
                    .then(|| json!({"name": sku, "publisher": publisher, "product": offer})),
            ),
        }
    }

    /// The VM body for a machine.
    pub fn vm_body(&self, tags: &RunTags, name: &str, nic: &str, spec: &MachineSpec) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(spec.ignition.as_bytes());
        let (image, plan) = self.image_reference();
        // kola's NoSSHKeyInMetadata: Azure insists on a key in osProfile, so it gets a
        // throwaway one nobody holds; only what Ignition installs lets the harness in.
        let metadata_keys = if spec.no_ssh_key_in_metadata {
            let fake = bogie_harness::ssh::SshKey::generate();
            vec![("core".to_string(), fake.public_openssh().to_string())]
        } else {
            ssh_keys(&spec.ignition)
        };
        let keys: Vec<Value> = metadata_keys
            .into_iter()
            .filter(|(u, _)| u == "core")
            .map(|(_, k)| json!({"path": "/home/core/.ssh/authorized_keys", "keyData": k}))
            .collect();
        let mut linux = json!({"disablePasswordAuthentication": true});
        if !keys.is_empty() {
            linux["ssh"] = json!({ "publicKeys": keys });
        }
        let mut vm = json!({
            "location": self.opts.location,
            "tags": self.tags(tags),
            "properties": {
                "hardwareProfile": {"vmSize": self.opts.size},
                "storageProfile": {
                    "imageReference": image,
                    "osDisk": {
                        "createOption": "FromImage",
                        "deleteOption": "Delete",
                        "managedDisk": {"storageAccountType": "Premium_LRS"},
                    },
                },
                "osProfile": {
                    "computerName": name,
                    "adminUsername": "core",
                    "customData": b64,
                    "linuxConfiguration": linux,
                },
                "userData": b64,
                "networkProfile": {
                    "networkInterfaces": [{"id": nic, "properties": {"primary": true, "deleteOption": "Delete"}}],
                },
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}},
            },
        });
        if let Some(p) = plan {
            vm["plan"] = p;
        }
        vm
    }

    async fn gc_groups(&self, opts: &GcOptions) -> Result<GcReport, PlatformError> {
        let filter = format!(
            "tagName eq '{TAG_BASENAME}' and tagValue eq '{}'",
            opts.basename
        );
        let mut url = format!(
            "/subscriptions/{}/resourcegroups?api-version={API_RESOURCES}&$filter={}",
            self.opts.subscription,
            urlencoding::encode(&filter)
        );
        let mut report = GcReport::default();
        loop {
            let r = self
                .rest
                .ok(Method::GET, &url, None, "listing resource groups")
                .await?;
            for g in r
                .body
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = g.get("name").and_then(Value::as_str).unwrap_or_default();
                let tag = |k: &str| {
                    g.pointer(&format!("/tags/{}", k.replace('/', "~1")))
                        .and_then(Value::as_str)
                };
                if !opts.is_leftover(tag(TAG_BASENAME), tag(TAG_CREATED)) {
                    report.young += 1;
                    continue;
                }
                let item =
                    GcItem::new("resource-group", name, tag(TAG_CREATED).map(str::to_string));
                if opts.dry_run {
                    report.deleted.push(item);
                    continue;
                }
                match self
                    .delete(
                        &self.group_id(name),
                        false,
                        &format!("deleting resource group {name}"),
                    )
                    .await
                {
                    Ok(()) => report.deleted.push(item),
                    Err(e) => report.failed.push((item, e.to_string())),
                }
            }
            match r.body.get("nextLink").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => url = next.to_string(),
                _ => break,
            }
        }
        Ok(report)
    }

    async fn console_text(&self, vm: &str) -> Result<String, PlatformError> {
        let r = self
            .rest
            .ok(
                Method::POST,
                &format!("{vm}/retrieveBootDiagnosticsData?api-version={API_COMPUTE}"),
                None,
                "retrieving boot diagnostics",
            )
            .await?;
        let Some(uri) = r
            .body
            .get("serialConsoleLogBlobUri")
            .and_then(Value::as_str)
        else {
            return Ok(String::new());
        };
        // A SAS URL: a plain GET, no Resource Manager token.
        let http = bogie_platform_common::http::client(Duration::from_secs(60))?;
        let resp = http.get(uri).send().await.map_err(|e| {
            bogie_platform_common::http::transport_error("blob", "reading the serial log", &e)
        })?;
        let resp =
            bogie_platform_common::http::check("blob", "reading the serial log", resp).await?;
        Ok(resp.text().await.unwrap_or_default())
    }
}

#[async_trait]
impl Provider for Azure {
    type ClusterState = AzureCluster;
    type Handle = AzureMachine;

    fn name(&self) -> &'static str {
        "azure"
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["cloud", "azure", "metadata-service"]
    }

    async fn create_cluster(
        &self,
        tags: &RunTags,
        spec: &ClusterSpec,
    ) -> Result<AzureCluster, PlatformError> {
        let prefix = tags.name(&[&spec.name], 60);
        let (group, owned) = match &self.opts.resource_group {
            Some(g) => (g.clone(), false),
            None => (prefix.clone(), true),
        };
        if owned {
            self.put(
                &self.group_id(&group),
                &json!({"location": self.opts.location, "tags": self.tags(tags)}),
                &format!("creating resource group {group}"),
            )
            .await?;
        }
        let mut created = Vec::new();
        // Anything failing from here on leaves the group (or the resources made so far) for
        // teardown; a failed cluster is deleted right away.
        let res: Result<(String, Option<String>), PlatformError> = async {
            if let Some(vs) = &self.opts.vnet_subnet {
                let (vnet, subnet) = vs.split_once('/').unwrap_or((vs.as_str(), "default"));
                let id = format!(
                    "{}/subnets/{subnet}",
                    self.resource_id(&group, "Microsoft.Network/virtualNetworks", vnet)
                );
                return Ok((id, None));
            }
            let nsg = self.resource_id(&group, "Microsoft.Network/networkSecurityGroups", &format!("{prefix}-nsg"));
            self.put(
                &nsg,
                &json!({
                    "location": self.opts.location,
                    "tags": self.tags(tags),
                    "properties": {"securityRules": [{
                        "name": "ssh",
                        "properties": {
                            "protocol": "Tcp",
                            "sourcePortRange": "*",
                            "destinationPortRange": "22",
                            "sourceAddressPrefix": "*",
                            "destinationAddressPrefix": "*",
                            "access": "Allow",
                            "priority": 100,
                            "direction": "Inbound",
                        },
                    }]},
                }),
                "creating the network security group",
            )
            .await?;
            created.push(nsg.clone());
            let vnet = self.resource_id(&group, "Microsoft.Network/virtualNetworks", &format!("{prefix}-vnet"));
            self.put(
                &vnet,
                &json!({
                    "location": self.opts.location,
                    "tags": self.tags(tags),
                    "properties": {
                        "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                        "subnets": [{
                            "name": "default",
                            "properties": {"addressPrefix": "10.0.0.0/24", "networkSecurityGroup": {"id": nsg}},
                        }],
                    },
                }),
                "creating the virtual network",
            )
            .await?;
            created.push(vnet.clone());
            Ok((format!("{vnet}/subnets/default"), Some(nsg)))
        }
        .await;
        let mut cl = AzureCluster {
            group,
            owned,
            subnet: String::new(),
            nsg: None,
            created,
            prefix,
        };
        match res {
            Ok((subnet, nsg)) => {
                cl.subnet = subnet;
                cl.nsg = nsg;
                Ok(cl)
            }
            Err(e) => {
                if let Err(e2) = self.delete_cluster(&cl, false).await {
                    tracing::warn!(error = %e2, "cleaning up a failed cluster");
                }
                Err(e)
            }
        }
    }

    async fn create_machine(
        &self,
        tags: &RunTags,
        cl: &AzureCluster,
        spec: &MachineSpec,
        track: &(dyn Fn(AzureMachine) + Send + Sync),
    ) -> Result<Created<AzureMachine>, PlatformError> {
        let name = sanitize_name(&format!("{}-{}", cl.prefix, spec.id), 64);
        let ip_id = (!self.opts.use_private_ips).then(|| {
            self.resource_id(
                &cl.group,
                "Microsoft.Network/publicIPAddresses",
                &format!("{name}-ip"),
            )
        });
        let nic = self.resource_id(
            &cl.group,
            "Microsoft.Network/networkInterfaces",
            &format!("{name}-nic"),
        );
        let vm = self.resource_id(&cl.group, "Microsoft.Compute/virtualMachines", &name);
        let handle = AzureMachine {
            vm: vm.clone(),
            nic: nic.clone(),
            ip: ip_id.clone(),
        };
        track(handle.clone());
        if let Some(ip) = &ip_id {
            self.put(
                ip,
                &json!({
                    "location": self.opts.location,
                    "tags": self.tags(tags),
                    "sku": {"name": "Standard"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                }),
                "creating the public IP",
            )
            .await?;
        }
        let mut ipconf = json!({
            "name": "ipconfig1",
            "properties": {"subnet": {"id": cl.subnet}, "privateIPAllocationMethod": "Dynamic", "primary": true},
        });
        if let Some(ip) = &ip_id {
            ipconf["properties"]["publicIPAddress"] = json!({ "id": ip });
        }
        let mut nic_body = json!({
            "location": self.opts.location,
            "tags": self.tags(tags),
            "properties": {"ipConfigurations": [ipconf]},
        });
        if let Some(nsg) = &cl.nsg {
            nic_body["properties"]["networkSecurityGroup"] = json!({ "id": nsg });
        }
        let nic_res = self
            .put(&nic, &nic_body, "creating the network interface")
            .await?;
        self.put(
            &vm,
            &self.vm_body(tags, &name, &nic, spec),
            &format!("creating VM {name}"),
        )
        .await?;
        let private: Option<IpAddr> = nic_res
            .pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let public: Option<IpAddr> = match &ip_id {
            Some(ip) => self.get(ip, "reading the public IP").await?.and_then(|v| {
                v.pointer("/properties/ipAddress")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
            }),
            None => None,
        };
        let addr = public
            .or(private)
            .ok_or_else(|| PlatformError::Machine(format!("VM {name} has no IP address")))?;
        Ok(Created {
            handle,
            ssh: SocketAddr::new(addr, 22),
            private_ip: private,
        })
    }

    async fn console(&self, h: &AzureMachine) -> Result<String, PlatformError> {
        self.console_text(&h.vm).await
    }

    async fn is_running(&self, h: &AzureMachine) -> bool {
        let url = format!("{}/instanceView?api-version={API_COMPUTE}", h.vm);
        match self
            .rest
            .send(Method::GET, &url, None, "reading the instance view")
            .await
        {
            Ok(r) if r.status == 404 => false,
            Ok(r) => {
                let stopped = r
                    .body
                    .get("statuses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("code").and_then(Value::as_str))
                    .any(|c| c == "PowerState/stopped" || c == "PowerState/deallocated");
                !stopped
            }
            Err(_) => true,
        }
    }

    async fn delete_machine(
        &self,
        cl: &AzureCluster,
        h: &AzureMachine,
    ) -> Result<(), PlatformError> {
        // In a group of its own, deleting the group removes everything at once.
        let wait = !cl.owned;
        self.delete(&h.vm, wait, "deleting the VM").await?;
        if wait {
            self.delete(&h.nic, true, "deleting the network interface")
                .await?;
            if let Some(ip) = &h.ip {
                self.delete(ip, false, "deleting the public IP").await?;
            }
        }
        Ok(())
    }

    async fn delete_cluster(&self, cl: &AzureCluster, kept: bool) -> Result<(), PlatformError> {
        if kept {
            tracing::warn!(group = %cl.group, "machines were kept: not deleting their resource group");
            return Ok(());
        }
        if cl.owned {
            return self
                .delete(
                    &self.group_id(&cl.group),
                    false,
                    &format!("deleting resource group {}", cl.group),
                )
                .await;
        }
        for id in cl.created.iter().rev() {
            self.delete(id, true, "deleting a network resource").await?;
        }
        Ok(())
    }

    fn describe(&self, h: &AzureMachine) -> Value {
        json!({
            "platform": "azure",
            "vm": h.vm,
            "nic": h.nic,
            "public_ip": h.ip,
            "down": format!("az vm delete --yes --ids {}", h.vm),
        })
    }

    async fn gc(&self, opts: &GcOptions) -> Result<GcReport, PlatformError> {
        let _ = self.arch;
        self.gc_groups(opts).await
    }
}
