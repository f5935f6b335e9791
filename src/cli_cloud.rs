//! Flags of the cloud and bare-metal platforms (kola's `--aws-*`, `--azure-*`, `--gce-*`,
//! `--equinixmetal-*`, `--external-*` spellings, plus `--pxe-*`) and `bogie gc`'s
//! arguments. The platforms are made from them in `cloud.rs`.

use std::path::PathBuf;

use bogie_platform_common::Secret;
use clap::Args;

fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// Flags of the cloud (`aws`, `azure`, `gce`, `equinix`) and bare-metal (`external`, `pxe`)
/// platforms.
#[derive(Debug, Args, Clone, Default)]
pub struct CloudArgs {
    /// AWS: the AMI under test (`ami-…`).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_ami: Option<String>,
    /// AWS: region (default: AWS_REGION, the profile's, else us-west-2).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_region: Option<String>,
    /// AWS: instance type (default m4.large; m6g.large for arm64-usr).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_type: Option<String>,
    /// AWS: profile name in the shared config/credentials files.
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_profile: Option<String>,
    /// AWS: credentials file (default ~/.aws/credentials).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_credentials_file: Option<PathBuf>,
    /// AWS: security group id or name (default: one allowing SSH is created per run).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_sg: Option<String>,
    /// AWS: IAM instance profile name for the instances.
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_iam_profile: Option<String>,
    /// AWS: subnet to launch into (default: the default VPC's).
    #[arg(long, global = true, help_heading = "AWS")]
    pub aws_subnet: Option<String>,

    /// Azure: subscription id.
    #[arg(
        long,
        global = true,
        env = "AZURE_SUBSCRIPTION_ID",
        help_heading = "Azure"
    )]
    pub azure_subscription: Option<String>,
    /// Azure: service principal file (`az ad sp create-for-rbac --sdk-auth` JSON); default:
    /// AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, workload identity, or the Azure CLI.
    #[arg(
        long,
        global = true,
        env = "AZURE_AUTH_LOCATION",
        help_heading = "Azure"
    )]
    pub azure_auth: Option<PathBuf>,
    /// Azure: location.
    #[arg(long, global = true, default_value = "westus", help_heading = "Azure")]
    pub azure_location: String,
    /// Azure: VM size (default Standard_DS2_v2; Standard_D2ps_v5 for arm64-usr).
    #[arg(long, global = true, help_heading = "Azure")]
    pub azure_size: Option<String>,
    /// Azure: image resource id (managed image or gallery image version) to boot.
    #[arg(long, global = true, help_heading = "Azure")]
    pub azure_disk_uri: Option<String>,
    /// Azure: marketplace image publisher.
    #[arg(long, global = true, default_value = "kinvolk", help_heading = "Azure")]
    pub azure_publisher: String,
    /// Azure: marketplace image offer.
    #[arg(
        long,
        global = true,
        default_value = "flatcar-container-linux-free",
        help_heading = "Azure"
    )]
    pub azure_offer: String,
    /// Azure: marketplace image SKU (the channel).
    #[arg(long, global = true, default_value = "alpha", help_heading = "Azure")]
    pub azure_sku: String,
    /// Azure: marketplace image version.
    #[arg(long, global = true, default_value = "latest", help_heading = "Azure")]
    pub azure_version: String,
    /// Azure: use this existing resource group instead of one per test.
    #[arg(long, global = true, help_heading = "Azure")]
    pub azure_resource_group: Option<String>,
    /// Azure: existing `vnet/subnet` (in --azure-resource-group) for the machines.
    #[arg(long, global = true, help_heading = "Azure")]
    pub azure_vnet_subnet_name: Option<String>,
    /// Azure: reach machines on private addresses (no public IPs).
    #[arg(long, global = true, help_heading = "Azure")]
    pub azure_use_private_ips: bool,
    /// Azure: Resource Manager endpoint (sovereign clouds).
    #[arg(long, global = true, default_value = bogie_platform_cloud::azure::ARM_ENDPOINT, help_heading = "Azure")]
    pub azure_endpoint: String,

    /// GCE: image (`projects/P/global/images/[family/]NAME`, a URL, or a name in the project).
    #[arg(
        long,
        global = true,
        default_value = "projects/kinvolk-public/global/images/family/flatcar-alpha",
        help_heading = "GCE"
    )]
    pub gce_image: String,
    /// GCE: project.
    #[arg(long, global = true, help_heading = "GCE")]
    pub gce_project: Option<String>,
    /// GCE: zone.
    #[arg(
        long,
        global = true,
        default_value = "us-central1-a",
        help_heading = "GCE"
    )]
    pub gce_zone: String,
    /// GCE: machine type (default t2d-standard-1; t2a-standard-1 for arm64-usr).
    #[arg(long, global = true, help_heading = "GCE")]
    pub gce_machinetype: Option<String>,
    /// GCE: disk type.
    #[arg(long, global = true, default_value = "pd-ssd", help_heading = "GCE")]
    pub gce_disktype: String,
    /// GCE: network.
    #[arg(long, global = true, default_value = "default", help_heading = "GCE")]
    pub gce_network: String,
    /// GCE: gVNIC instead of virtio-net.
    #[arg(long, global = true, help_heading = "GCE")]
    pub gce_gvnic: bool,
    /// GCE: authenticate through the metadata server (bogie runs on GCE).
    #[arg(long, global = true, help_heading = "GCE")]
    pub gce_service_auth: bool,
    /// GCE: service account JSON key (default: GOOGLE_OAUTH_ACCESS_TOKEN, else gcloud).
    #[arg(long, global = true, help_heading = "GCE")]
    pub gce_json_key: Option<PathBuf>,
    /// GCE: API endpoint.
    #[arg(long, global = true, default_value = bogie_platform_cloud::gce::ENDPOINT, help_heading = "GCE")]
    pub gce_endpoint: String,

    /// Equinix Metal (sunset 2026-06-30): API key.
    #[arg(long, global = true, alias = "packet-api-key", env = "METAL_AUTH_TOKEN", hide_env_values = true, value_parser = secret, help_heading = "Equinix Metal")]
    pub equinixmetal_api_key: Option<Secret>,
    /// Equinix Metal: project UUID.
    #[arg(
        long,
        global = true,
        alias = "packet-project",
        env = "METAL_PROJECT_ID",
        help_heading = "Equinix Metal"
    )]
    pub equinixmetal_project: Option<String>,
    /// Equinix Metal: metro (`da`, `sv`, ...).
    #[arg(long, global = true, help_heading = "Equinix Metal")]
    pub equinixmetal_metro: Option<String>,
    /// Equinix Metal: plan.
    #[arg(
        long,
        global = true,
        alias = "packet-plan",
        default_value = "c3.small.x86",
        help_heading = "Equinix Metal"
    )]
    pub equinixmetal_plan: String,
    /// Equinix Metal: operating system slug.
    #[arg(
        long,
        global = true,
        default_value = "custom_ipxe",
        help_heading = "Equinix Metal"
    )]
    pub equinixmetal_os: String,
    /// Equinix Metal: iPXE script URL booting the image under test (for custom_ipxe).
    #[arg(long, global = true, help_heading = "Equinix Metal")]
    pub equinixmetal_ipxe_script_url: Option<String>,
    /// Equinix Metal: how long a device may take to become active, e.g. `30m`.
    #[arg(
        long,
        global = true,
        default_value = "30m",
        help_heading = "Equinix Metal"
    )]
    pub equinixmetal_launch_timeout: String,
    /// Equinix Metal: API endpoint.
    #[arg(long, global = true, default_value = bogie_platform_cloud::equinix::ENDPOINT, help_heading = "Equinix Metal")]
    pub equinixmetal_endpoint: String,

    /// External: a host under test, `[user@]host[:port]` (repeatable); with
    /// --external-provisioning-cmds, the management host the commands run on.
    #[arg(long, global = true, help_heading = "External")]
    pub external_host: Vec<String>,
    /// External: login user for hosts that name none (default core).
    #[arg(long, global = true, help_heading = "External")]
    pub external_user: Option<String>,
    /// External: private key that logs into the hosts / the management host.
    #[arg(long, global = true, help_heading = "External")]
    pub external_key: Option<PathBuf>,
    /// External: shell commands that provision a machine from $USERDATA (the Ignition
    /// config) and print its address as the last output line.
    #[arg(long, global = true, help_heading = "External")]
    pub external_provisioning_cmds: Option<String>,
    /// External: shell commands that tear down the machine at $IPADDR.
    #[arg(long, global = true, help_heading = "External")]
    pub external_deprovisioning_cmds: Option<String>,
    /// External: shell command that prints the serial console of the machine at $IPADDR.
    #[arg(long, global = true, help_heading = "External")]
    pub external_serial_console_cmd: Option<String>,

    /// PXE: more kernel arguments for the network-booted kernel.
    #[arg(long, global = true, help_heading = "PXE")]
    pub pxe_kernel_args: Option<String>,
    /// PXE: port of bogie's boot server on 127.0.0.1 (default: any free port).
    #[arg(long, global = true, default_value_t = 0, help_heading = "PXE")]
    pub pxe_http_port: u16,
    /// PXE: iPXE option ROM for virtio-net (default from /usr/lib/ipxe/qemu).
    #[arg(long, global = true, help_heading = "PXE")]
    pub pxe_rom: Option<PathBuf>,
    /// PXE: how the guest gets its Ignition config: `url` (ignition.config.url= naming the
    /// config on bogie's boot server, as on bare metal), `fw-cfg` (QEMU fw_cfg, for images
    /// whose Ignition uses the qemu provider), or `auto` (fw-cfg when the image manifest
    /// names a fw_cfg_name, else url).
    #[arg(long, global = true, default_value = "auto", help_heading = "PXE")]
    pub pxe_ignition: String,
    /// PXE: where the guest's root file system lives: `nbd` (no disk: bogie serves an
    /// overlay of the image's disk over NBD and the initramfs mounts it), `disk` (the
    /// overlay attached as a local disk), `none` (kernel and initrd only), or `auto` (nbd
    /// when the image manifest contains `nbd-root`, else disk).
    #[arg(long, global = true, default_value = "auto", help_heading = "PXE")]
    pub pxe_root: String,
}

/// `bogie gc`: delete what crashed runs left on a cloud.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only resources created longer ago than this (`6h`, `2d`).
    #[arg(long, default_value = "6h")]
    pub older_than: String,
    /// List what would be deleted without deleting it.
    #[arg(long)]
    pub dry_run: bool,
}
