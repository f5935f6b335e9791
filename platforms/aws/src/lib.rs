//! bogie's AWS platform: EC2 instances booted from an AMI with the rendered Ignition config
//! as user-data.
//!
//! One run imports the run's SSH key as a key pair, creates a security group allowing SSH
//! (unless `--aws-sg` names one), launches one instance per machine and tags everything
//! with `bogie:run`, `bogie:created` (RFC 3339) and `bogie:basename`. The console comes
//! from `GetConsoleOutput`. Teardown terminates the instances of a cluster; the run's key
//! pair and security group are deleted at [`Platform::shutdown`], after its instances are
//! gone. Whatever a crashed run leaves behind, [`gc::gc`] finds by tag and age.
//!
//! Endpoints and credentials come from the AWS SDK's usual sources (`AWS_ENDPOINT_URL_EC2`,
//! `AWS_REGION`, profiles, the credentials file, instance roles); `--aws-profile`,
//! `--aws-credentials-file` and `--aws-region` override them. Image upload (S3 →
//! ImportSnapshot → RegisterImage, `ore aws upload`'s job) is in [`upload`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::ResourceType;
use aws_sdk_ec2::types::{ArchitectureValues, Filter, Tag, TagSpecification};
use bogie_harness::{Arch, Cluster, ClusterSpec, ImageInfo, Platform, PlatformError};
use bogie_platform_common::{redact, RunTags};
use tokio::sync::OnceCell;

pub mod gc;
mod machine;
pub mod s3;
pub mod upload;

pub use machine::{AwsCluster, AwsMachine};

/// The service name in [`PlatformError::Api`] errors.
pub const SERVICE: &str = "ec2";
/// kola's default region when neither `--aws-region` nor `AWS_REGION` is set.
pub const DEFAULT_REGION: &str = "us-west-2";

/// The default instance type for an architecture (kola: `m4.large` on amd64; an arm64
/// Graviton type on arm64).
pub fn default_instance_type(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "m4.large",
        Arch::Arm64 => "m6g.large",
    }
}

/// What the user chose for AWS (kola's `--aws-*` flags).
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// The AMI under test (`--aws-ami`).
    pub ami: String,
    /// Region (`--aws-region`); else the SDK's (`AWS_REGION`, profile), else us-west-2.
    pub region: Option<String>,
    /// Profile name (`--aws-profile`).
    pub profile: Option<String>,
    /// Credentials file (`--aws-credentials-file`) instead of `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// Instance type (`--aws-type`); default per arch ([`default_instance_type`]).
    pub instance_type: Option<String>,
    /// Security group id (`sg-…`) or name (`--aws-sg`); a group allowing SSH is created
    /// for the run when not given.
    pub security_group: Option<String>,
    /// IAM instance profile name (`--aws-iam-profile`).
    pub iam_profile: Option<String>,
    /// Subnet to launch into (`--aws-subnet`); the default VPC's when not given.
    pub subnet: Option<String>,
    /// Prefix of resource names and the `bogie:basename` tag (`--basename`).
    pub basename: String,
    /// The architecture machines boot as (`--board`).
    pub arch: Arch,
    /// What bogie knows of the image (capabilities; the AMI itself is `ami`).
    pub image: ImageInfo,
    /// EC2 endpoint (tests; `AWS_ENDPOINT_URL_EC2` does the same).
    pub endpoint_url: Option<String>,
    /// How long an instance may take to reach `running`.
    pub running_timeout: Duration,
}

impl AwsOptions {
    /// Options for an AMI with defaults for the rest.
    pub fn new(ami: &str, arch: Arch, image: ImageInfo) -> AwsOptions {
        AwsOptions {
            ami: ami.to_string(),
            region: None,
            profile: None,
            credentials_file: None,
            instance_type: None,
            security_group: None,
            iam_profile: None,
            subnet: None,
            basename: "bogie".into(),
            arch,
            image,
            endpoint_url: None,
            running_timeout: Duration::from_secs(600),
        }
    }
}

/// The SDK settings needed to build a client (also for `bogie gc`).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Region override.
    pub region: Option<String>,
    /// Profile override.
    pub profile: Option<String>,
    /// Credentials file override.
    pub credentials_file: Option<PathBuf>,
    /// Endpoint override.
    pub endpoint_url: Option<String>,
    /// Explicit credentials instead of the SDK's chain (tools, emulators).
    pub credentials: Option<aws_credential_types::Credentials>,
}

/// Loads the SDK configuration: bogie's rustls (ring) HTTP client, the region, profile and
/// credentials file when given, timeouts.
pub async fn sdk_config(o: &ClientOptions) -> aws_config::SdkConfig {
    use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(20))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(p) = &o.profile {
        loader = loader.profile_name(p);
    }
    if let Some(f) = &o.credentials_file {
        let files = EnvConfigFiles::builder()
            .include_default_config_file(true)
            .with_file(EnvConfigFileKind::Credentials, f)
            .build();
        loader = loader.profile_files(files);
    }
    if let Some(u) = &o.endpoint_url {
        loader = loader.endpoint_url(u);
    }
    if let Some(c) = &o.credentials {
        loader = loader.credentials_provider(c.clone());
    }
    let mut conf = loader.load().await;
    let region = o
        .region
        .clone()
        .or_else(|| conf.region().map(|r| r.to_string()))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    conf = conf
        .into_builder()
        .region(aws_config::Region::new(region))
        .build();
    conf
}

/// An EC2 client for these settings.
pub async fn client(o: &ClientOptions) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(o).await)
}

/// An SDK error as a redacted platform API error naming the operation.
pub(crate) fn api_err<E>(what: &str, e: aws_sdk_ec2::error::SdkError<E>) -> PlatformError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let detail = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => DisplayErrorContext(&e).to_string(),
    };
    PlatformError::Api {
        service: SERVICE.into(),
        message: redact(&format!("{what}: {detail}")),
    }
}

/// The error code of an SDK error (`InvalidGroup.NotFound`, ...).
pub(crate) fn err_code<E: ProvideErrorMetadata>(e: &aws_sdk_ec2::error::SdkError<E>) -> String {
    e.code().unwrap_or_default().to_string()
}

/// The run's tags, plus `Name`, for one resource type.
pub(crate) fn tag_spec(tags: &RunTags, rt: ResourceType, name: &str) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(rt);
    for (k, v) in tags.pairs() {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.tags(Tag::builder().key("Name").value(name).build())
        .build()
}

/// The value of tag `key` in a tag list.
pub(crate) fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// A filter.
pub(crate) fn filter(name: &str, values: &[&str]) -> Filter {
    let mut b = Filter::builder().name(name);
    for v in values {
        b = b.values(*v);
    }
    b.build()
}

/// Run-wide state shared by clusters and machines.
pub(crate) struct Inner {
    pub(crate) client: aws_sdk_ec2::Client,
    pub(crate) opts: AwsOptions,
    pub(crate) instance_type: String,
    pub(crate) tags: RunTags,
    /// The imported key pair (None: the first machine had no SSH key in its config).
    pub(crate) key_pair: OnceCell<Option<String>>,
    /// The security group machines launch in.
    pub(crate) security_group: OnceCell<String>,
    /// The group this run created (deleted at shutdown).
    pub(crate) created_group: Mutex<Option<String>>,
    /// Every instance this run launched, with whether it was kept.
    pub(crate) launched: Mutex<Vec<(String, bool)>>,
}

impl Inner {
    /// The instance ids launched and not kept.
    pub(crate) fn owned_instances(&self) -> Vec<String> {
        self.launched
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(_, kept)| !kept)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The AWS platform. [`AwsPlatform::new`] checks the AMI (exists, matches `--board`) and
/// the security group before any test runs.
#[derive(Clone)]
pub struct AwsPlatform {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AwsPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsPlatform")
            .field("ami", &self.inner.opts.ami)
            .field("run", &self.inner.tags.run)
            .finish_non_exhaustive()
    }
}

fn input(msg: impl Into<String>) -> PlatformError {
    PlatformError::Input(msg.into())
}

impl AwsPlatform {
    /// Connects, checks the AMI and the security group. Errors are one-line
    /// [`PlatformError::Input`]s for bad input, [`PlatformError::Api`] for the service.
    pub async fn new(opts: AwsOptions) -> Result<AwsPlatform, PlatformError> {
        let client = client(&ClientOptions {
            region: opts.region.clone(),
            profile: opts.profile.clone(),
            credentials_file: opts.credentials_file.clone(),
            endpoint_url: opts.endpoint_url.clone(),
            credentials: None,
        })
        .await;
        Self::with_client(client, opts).await
    }

    /// Like [`AwsPlatform::new`] with a client the caller built.
    pub async fn with_client(
        client: aws_sdk_ec2::Client,
        opts: AwsOptions,
    ) -> Result<AwsPlatform, PlatformError> {
        if !opts.ami.starts_with("ami-") {
            return Err(input(format!(
                "--aws-ami {:?} is not an AMI id (ami-…)",
                opts.ami
            )));
        }
        let images = client
            .describe_images()
            .image_ids(&opts.ami)
            .send()
            .await
            .map_err(|e| {
                if err_code(&e).starts_with("InvalidAMIID") {
                    input(format!("AMI {} not found", opts.ami))
                } else {
                    api_err("DescribeImages", e)
                }
            })?;
        let image = images
            .images()
            .first()
            .ok_or_else(|| input(format!("AMI {} not found", opts.ami)))?;
        let found = match image.architecture() {
            Some(ArchitectureValues::X8664) => Some(Arch::Amd64),
            Some(ArchitectureValues::Arm64) => Some(Arch::Arm64),
            _ => None,
        };
        if let Some(found) = found {
            if found != opts.arch {
                return Err(input(format!(
                    "AMI {} is {found} but --board {} was given",
                    opts.ami,
                    opts.arch.board()
                )));
            }
        }
        let instance_type = opts
            .instance_type
            .clone()
            .unwrap_or_else(|| default_instance_type(opts.arch).to_string());
        let security_group = OnceCell::new();
        if let Some(sg) = &opts.security_group {
            let id = resolve_security_group(&client, sg).await?;
            let _ = security_group.set(id);
        }
        let tags = RunTags::new(&opts.basename);
        tracing::info!(ami = %opts.ami, run = %tags.run, "AWS platform ready");
        Ok(AwsPlatform {
            inner: Arc::new(Inner {
                client,
                instance_type,
                tags,
                opts,
                key_pair: OnceCell::new(),
                security_group,
                created_group: Mutex::new(None),
                launched: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The run's tags.
    pub fn run_tags(&self) -> &RunTags {
        &self.inner.tags
    }

    /// The EC2 client.
    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.inner.client
    }

    /// Creates a cluster with its concrete type.
    pub fn cluster(&self, spec: ClusterSpec) -> AwsCluster {
        AwsCluster::new(self.inner.clone(), spec)
    }
}

/// Finds a security group by id (`sg-…`) or name.
async fn resolve_security_group(
    client: &aws_sdk_ec2::Client,
    sg: &str,
) -> Result<String, PlatformError> {
    let req = client.describe_security_groups();
    let req = if sg.starts_with("sg-") {
        req.group_ids(sg)
    } else {
        req.filters(filter("group-name", &[sg]))
    };
    let out = req.send().await.map_err(|e| {
        if err_code(&e).starts_with("InvalidGroup") {
            input(format!("security group {sg} not found"))
        } else {
            api_err("DescribeSecurityGroups", e)
        }
    })?;
    out.security_groups()
        .first()
        .and_then(|g| g.group_id())
        .map(str::to_string)
        .ok_or_else(|| input(format!("security group {sg} not found (--aws-sg)")))
}

#[async_trait]
impl Platform for AwsPlatform {
    fn name(&self) -> &str {
        "aws"
    }

    fn arch(&self) -> Arch {
        self.inner.opts.arch
    }

    fn image(&self) -> &ImageInfo {
        &self.inner.opts.image
    }

    fn capabilities(&self) -> BTreeSet<String> {
        ["cloud", "aws", "metadata-service"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    async fn new_cluster(&self, spec: ClusterSpec) -> Result<Box<dyn Cluster>, PlatformError> {
        Ok(Box::new(self.cluster(spec)))
    }

    async fn shutdown(&self) -> Result<(), PlatformError> {
        machine::shutdown(&self.inner).await
    }
}
