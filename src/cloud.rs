//! The cloud, bare-metal, external and PXE platforms made from a [`Target`]'s flags, the
//! image a remote platform boots, and `bogie gc`'s pass over a cloud.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bogie_harness::{Arch, ImageInfo, Platform, PlatformError};
use bogie_platform_common::Secret;

use crate::input_error;
use crate::options::Target;

/// Log targets held at `info` whatever level is asked for: the cloud SDKs' runtimes log
/// resolved identities (the AWS access key id), signed requests and tokens at `debug` and
/// `trace`, and credentials must never reach bogie's logs.
pub const QUIET_LOG_TARGETS: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_runtime",
    "aws_sdk_ec2",
    "aws_sigv4",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "azure_core",
    "azure_identity",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
];

/// Holds [`QUIET_LOG_TARGETS`] at `info` in a log filter that lets more than `info` through
/// (a quieter filter is returned as it is).
pub fn quiet_cloud_sdks(
    mut filter: tracing_subscriber::EnvFilter,
) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::filter::LevelFilter;
    if filter
        .max_level_hint()
        .is_some_and(|h| h <= LevelFilter::INFO)
    {
        return filter;
    }
    for t in QUIET_LOG_TARGETS {
        if let Ok(d) = format!("{t}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Whether the platform boots a local image (`--qemu-image` required).
pub fn needs_local_image(platform: &str) -> bool {
    matches!(platform, "qemu" | "pxe")
}

/// The platforms built here.
pub fn handles(platform: &str) -> bool {
    matches!(
        platform,
        "aws" | "azure" | "gce" | "equinix" | "external" | "pxe"
    )
}

/// The image description for a platform whose image lives elsewhere (an AMI, a cloud
/// image, an installed host): `--qemu-image` when given (a manifest telling what the image
/// contains), else a real Flatcar image is assumed.
pub fn remote_image(t: &Target, platform: &str) -> anyhow::Result<ImageInfo> {
    if let Some(p) = &t.qemu.qemu_image {
        return ImageInfo::load(p).map_err(|e| input_error(e.to_string()));
    }
    let c = &t.cloud;
    let name = match platform {
        "aws" => c.aws_ami.clone(),
        "azure" => c.azure_disk_uri.clone().or_else(|| {
            Some(format!(
                "{}:{}:{}:{}",
                c.azure_publisher, c.azure_offer, c.azure_sku, c.azure_version
            ))
        }),
        "gce" => Some(c.gce_image.clone()),
        "equinix" => c.equinixmetal_ipxe_script_url.clone(),
        _ => None,
    }
    .unwrap_or_else(|| platform.to_string());
    Ok(ImageInfo {
        path: PathBuf::from(name),
        manifest: None,
        arch: None,
        version: None,
        provides: bogie_harness::image::FLATCAR_PROVIDES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        provides_from: bogie_harness::image::ProvidesFrom::Assumed {
            reason: format!("a {platform} image is not read by bogie"),
            inspection: None,
        },
    })
}

fn platform_err(e: PlatformError) -> anyhow::Error {
    match e {
        PlatformError::Input(m) => input_error(m),
        other => anyhow::Error::new(other),
    }
}

/// Runs an async constructor from synchronous code inside the (multi-threaded) runtime.
fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let h = tokio::runtime::Handle::try_current()
        .context("platforms are built inside the tokio runtime")?;
    if h.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        anyhow::bail!("cloud and PXE platforms need the multi-threaded tokio runtime");
    }
    Ok(tokio::task::block_in_place(|| h.block_on(f)))
}

fn duration(flag: &str, s: &str) -> anyhow::Result<Duration> {
    crate::parse::parse_duration(s)
        .ok_or_else(|| input_error(format!("{flag} {s:?} is not a duration")))
}

/// Builds the platform `name` (one of [`handles`]) from the flags.
///
/// Long on purpose: one match arm per platform, each filling that platform's options from
/// its own flags; splitting it would only scatter the flag-to-option table.
pub fn make_platform(
    t: &Target,
    name: &str,
    image: &ImageInfo,
    arch: Arch,
    parallel: usize,
) -> anyhow::Result<Arc<dyn Platform>> {
    let c = &t.cloud;
    match name {
        "aws" => {
            let ami = c
                .aws_ami
                .clone()
                .ok_or_else(|| input_error("-p aws needs --aws-ami (the AMI under test)"))?;
            let mut o = bogie_platform_aws::AwsOptions::new(&ami, arch, image.clone());
            o.region = c.aws_region.clone();
            o.profile = c.aws_profile.clone();
            o.credentials_file = c.aws_credentials_file.clone();
            o.instance_type = c.aws_type.clone();
            o.security_group = c.aws_sg.clone();
            o.iam_profile = c.aws_iam_profile.clone();
            o.subnet = c.aws_subnet.clone();
            o.basename = t.basename.clone();
            let p = block_on(bogie_platform_aws::AwsPlatform::new(o))?.map_err(platform_err)?;
            Ok(Arc::new(p))
        }
        "azure" => Ok(Arc::new(azure_platform(t, arch, image.clone())?)),
        "gce" => Ok(Arc::new(gce_platform(t, arch, image.clone())?)),
        "equinix" => Ok(Arc::new(equinix_platform(t, arch, image.clone())?)),
        "external" => {
            let mut o = bogie_platform_external::ExternalOptions::new(arch, image.clone());
            o.hosts = c
                .external_host
                .iter()
                .map(|h| {
                    h.parse()
                        .map_err(|e| input_error(format!("--external-host {e}")))
                })
                .collect::<anyhow::Result<_>>()?;
            o.user = c.external_user.clone();
            o.key = c.external_key.clone();
            o.provisioning_cmds = c.external_provisioning_cmds.clone();
            o.deprovisioning_cmds = c.external_deprovisioning_cmds.clone();
            o.serial_console_cmd = c.external_serial_console_cmd.clone();
            let p = bogie_platform_external::ExternalPlatform::new(o).map_err(platform_err)?;
            Ok(Arc::new(p))
        }
        "pxe" => {
            let mut o = bogie_platform_pxe::PxeOptions::new(image.clone(), arch);
            // PXE machines probe KVM as the QEMU platform does; `--qemu-accel tcg` skips it.
            o.kvm = t.qemu.qemu_accel != bogie_platform_qemu::Accel::Tcg;
            if let Some(m) = t.qemu.qemu_memory {
                o.memory_mb = m;
            }
            let cores = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            o.cpus = t
                .qemu
                .qemu_cpus
                .unwrap_or_else(|| (cores / parallel.max(1)).max(1) as u32);
            o.kernel_args = c.pxe_kernel_args.clone();
            o.http_port = c.pxe_http_port;
            o.rom = c.pxe_rom.clone();
            o.ignition = bogie_platform_pxe::IgnitionDelivery::parse(&c.pxe_ignition, image)
                .ok_or_else(|| {
                    input_error(format!(
                        "--pxe-ignition {:?} is not auto, url or fw-cfg",
                        c.pxe_ignition
                    ))
                })?;
            o.root = bogie_platform_pxe::PxeRoot::parse(&c.pxe_root, image).ok_or_else(|| {
                input_error(format!(
                    "--pxe-root {:?} is not auto, nbd, disk or none",
                    c.pxe_root
                ))
            })?;
            let p = block_on(bogie_platform_pxe::PxePlatform::new(o))?.map_err(platform_err)?;
            Ok(Arc::new(p))
        }
        other => Err(input_error(format!(
            "platform {other:?} is not built into this bogie"
        ))),
    }
}

fn azure_provider(t: &Target, arch: Arch) -> anyhow::Result<bogie_platform_cloud::azure::Azure> {
    use bogie_platform_cloud::azure::{Azure, AzureImage, AzureOptions};
    let c = &t.cloud;
    let image = match &c.azure_disk_uri {
        Some(id) => AzureImage::Id(id.clone()),
        None => AzureImage::Marketplace {
            publisher: c.azure_publisher.clone(),
            offer: c.azure_offer.clone(),
            sku: c.azure_sku.clone(),
            version: c.azure_version.clone(),
        },
    };
    let mut sub = c.azure_subscription.clone().unwrap_or_default();
    if sub.is_empty() {
        if let Some(f) = &c.azure_auth {
            // The service principal file usually names the subscription.
            let v: serde_json::Value = std::fs::read_to_string(f)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            sub = v
                .get("subscriptionId")
                .and_then(|s| s.as_str())
                .unwrap_or_default()
                .to_string();
        }
    }
    let mut o = AzureOptions::new(&sub, image);
    o.location = c.azure_location.clone();
    o.size = c.azure_size.clone().unwrap_or_else(|| {
        match arch {
            Arch::Amd64 => "Standard_DS2_v2",
            Arch::Arm64 => "Standard_D2ps_v5",
        }
        .to_string()
    });
    o.resource_group = c.azure_resource_group.clone();
    o.vnet_subnet = c.azure_vnet_subnet_name.clone();
    o.use_private_ips = c.azure_use_private_ips;
    o.endpoint = c.azure_endpoint.clone();
    Azure::new(o, arch, c.azure_auth.clone()).map_err(platform_err)
}

fn azure_platform(
    t: &Target,
    arch: Arch,
    image: ImageInfo,
) -> anyhow::Result<bogie_platform_cloud::CloudPlatform<bogie_platform_cloud::azure::Azure>> {
    Ok(bogie_platform_cloud::CloudPlatform::new(
        azure_provider(t, arch)?,
        arch,
        image,
        &t.basename,
    ))
}

fn gce_provider(t: &Target, arch: Arch) -> anyhow::Result<bogie_platform_cloud::gce::Gce> {
    use bogie_platform_cloud::gce::{Gce, GceAuth, GceOptions};
    let c = &t.cloud;
    let project = c
        .gce_project
        .clone()
        .ok_or_else(|| input_error("-p gce needs --gce-project"))?;
    let mut o = GceOptions::new(&project, &c.gce_image, arch);
    o.zone = c.gce_zone.clone();
    if let Some(t) = &c.gce_machinetype {
        o.machine_type = t.clone();
    }
    o.disk_type = c.gce_disktype.clone();
    o.network = c.gce_network.clone();
    o.gvnic = c.gce_gvnic;
    o.endpoint = c.gce_endpoint.clone();
    let auth = match (&c.gce_json_key, c.gce_service_auth) {
        (Some(k), _) => GceAuth::JsonKey(k.clone()),
        (None, true) => GceAuth::Metadata,
        (None, false) => GceAuth::Default,
    };
    Gce::new(o, auth).map_err(platform_err)
}

fn gce_platform(
    t: &Target,
    arch: Arch,
    image: ImageInfo,
) -> anyhow::Result<bogie_platform_cloud::CloudPlatform<bogie_platform_cloud::gce::Gce>> {
    Ok(bogie_platform_cloud::CloudPlatform::new(
        gce_provider(t, arch)?,
        arch,
        image,
        &t.basename,
    ))
}

fn equinix_provider(t: &Target) -> anyhow::Result<bogie_platform_cloud::equinix::Equinix> {
    use bogie_platform_cloud::equinix::{Equinix, EquinixOptions};
    let c = &t.cloud;
    let key = c
        .equinixmetal_api_key
        .clone()
        .unwrap_or_else(|| Secret::new(""));
    let mut o = EquinixOptions::new(
        key,
        c.equinixmetal_project.as_deref().unwrap_or_default(),
        c.equinixmetal_metro
            .as_deref()
            .ok_or_else(|| input_error("-p equinix needs --equinixmetal-metro"))?,
    );
    o.plan = c.equinixmetal_plan.clone();
    o.operating_system = c.equinixmetal_os.clone();
    o.ipxe_script_url = c.equinixmetal_ipxe_script_url.clone();
    o.endpoint = c.equinixmetal_endpoint.clone();
    o.launch_timeout = duration(
        "--equinixmetal-launch-timeout",
        &c.equinixmetal_launch_timeout,
    )?;
    Equinix::new(o).map_err(platform_err)
}

fn equinix_platform(
    t: &Target,
    arch: Arch,
    image: ImageInfo,
) -> anyhow::Result<bogie_platform_cloud::CloudPlatform<bogie_platform_cloud::equinix::Equinix>> {
    Ok(bogie_platform_cloud::CloudPlatform::new(
        equinix_provider(t)?,
        arch,
        image,
        &t.basename,
    ))
}

/// `bogie gc` for one platform: the garbage-collection pass with these options.
pub async fn collect(
    t: &Target,
    platform: &str,
    opts: &bogie_platform_common::GcOptions,
) -> anyhow::Result<bogie_platform_common::GcReport> {
    use bogie_platform_cloud::Provider;
    let c = &t.cloud;
    let arch = Arch::host().unwrap_or(Arch::Amd64);
    let r = match platform {
        "aws" => {
            let client = bogie_platform_aws::client(&bogie_platform_aws::ClientOptions {
                region: c.aws_region.clone(),
                profile: c.aws_profile.clone(),
                credentials_file: c.aws_credentials_file.clone(),
                endpoint_url: None,
                credentials: None,
            })
            .await;
            bogie_platform_aws::gc::gc(&client, opts).await
        }
        "azure" => azure_provider(t, arch)?.gc(opts).await,
        "gce" => gce_provider(t, arch)?.gc(opts).await,
        "equinix" => equinix_provider(t)?.gc(opts).await,
        other => {
            return Err(input_error(format!(
                "bogie gc works on clouds (aws, azure, gce, equinix), not {other:?}: its machines do not outlive bogie"
            )))
        }
    };
    r.map_err(platform_err)
}
