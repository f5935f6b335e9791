//! Image upload, `ore aws upload`'s job: the disk image goes to S3, EC2 imports it as an
//! EBS snapshot (`ImportSnapshot`, polled through `DescribeImportSnapshotTasks`), and the
//! snapshot is registered as an AMI (`RegisterImage`).
//!
//! Each step is a method of [`UploadBackend`], so the pipeline ([`upload_image`]) can be
//! tested where an emulator lacks a step (moto has no `ImportSnapshot`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ResourceType,
    SnapshotDiskContainer, UserBucket, VolumeType,
};
use bogie_harness::{Arch, PlatformError};
use bogie_platform_common::RunTags;

use crate::{api_err, tag_spec};

/// The disk format of an uploaded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// VMDK (stream-optimised), Flatcar's `ami_vmdk` image.
    Vmdk,
    /// Raw disk image.
    Raw,
    /// VHD.
    Vhd,
}

impl DiskFormat {
    /// From a file name's suffix (`.vmdk`, `.vhd`, anything else raw).
    pub fn from_path(p: &Path) -> DiskFormat {
        match p.extension().and_then(|e| e.to_str()) {
            Some("vmdk") => DiskFormat::Vmdk,
            Some("vhd") => DiskFormat::Vhd,
            _ => DiskFormat::Raw,
        }
    }

    /// The name `ImportSnapshot` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Vmdk => "VMDK",
            DiskFormat::Raw => "RAW",
            DiskFormat::Vhd => "VHD",
        }
    }
}

/// What to upload and register.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// The disk image file.
    pub file: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// The S3 bucket to stage it in (must exist).
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// The AMI name (unique in the account and region).
    pub name: String,
    /// The AMI description.
    pub description: String,
    /// The image's architecture.
    pub arch: Arch,
    /// Boot mode (`uefi` is required for arm64; `uefi-preferred` for amd64 images that
    /// boot both ways). None leaves it to EC2's default.
    pub boot_mode: Option<String>,
    /// Tags for the snapshot and AMI.
    pub tags: RunTags,
    /// Delete the S3 object once the snapshot exists.
    pub delete_object: bool,
}

/// What an upload produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedImage {
    /// The EBS snapshot.
    pub snapshot_id: String,
    /// The AMI.
    pub ami: String,
}

/// The steps of an upload.
#[async_trait]
pub trait UploadBackend: Send + Sync {
    /// Stores the file as `s3://bucket/key`.
    async fn put_object(&self, bucket: &str, key: &str, file: &Path) -> Result<(), PlatformError>;
    /// Imports the object as an EBS snapshot and waits for it; returns the snapshot id.
    async fn import_snapshot(&self, req: &UploadRequest) -> Result<String, PlatformError>;
    /// Registers the snapshot as an AMI; returns the AMI id.
    async fn register_image(
        &self,
        req: &UploadRequest,
        snapshot_id: &str,
    ) -> Result<String, PlatformError>;
    /// Deletes the staged object.
    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), PlatformError>;
}

/// Runs the pipeline: put → import snapshot → register (→ delete the staged object).
pub async fn upload_image(
    backend: &dyn UploadBackend,
    req: &UploadRequest,
) -> Result<UploadedImage, PlatformError> {
    if !req.file.is_file() {
        return Err(PlatformError::Input(format!(
            "image file not found: {}",
            req.file.display()
        )));
    }
    tracing::info!(file = %req.file.display(), bucket = %req.bucket, key = %req.key, "uploading");
    backend.put_object(&req.bucket, &req.key, &req.file).await?;
    let snapshot_id = backend.import_snapshot(req).await?;
    tracing::info!(snapshot = %snapshot_id, "snapshot imported");
    if req.delete_object {
        if let Err(e) = backend.delete_object(&req.bucket, &req.key).await {
            tracing::warn!(error = %e, "deleting the staged object");
        }
    }
    let ami = backend.register_image(req, &snapshot_id).await?;
    tracing::info!(ami = %ami, "image registered");
    Ok(UploadedImage { snapshot_id, ami })
}

/// The real backend: S3 over SigV4, EC2 through the SDK.
#[derive(Debug, Clone)]
pub struct Ec2Upload {
    /// EC2 client.
    pub ec2: aws_sdk_ec2::Client,
    /// S3 client.
    pub s3: crate::s3::S3,
    /// How long an import may take.
    pub import_timeout: Duration,
    /// How often the import task is polled.
    pub poll: Duration,
}

impl Ec2Upload {
    /// A backend from an SDK configuration.
    pub fn new(conf: &aws_config::SdkConfig) -> Result<Ec2Upload, PlatformError> {
        Ok(Ec2Upload {
            ec2: aws_sdk_ec2::Client::new(conf),
            s3: crate::s3::S3::new(conf)?,
            import_timeout: Duration::from_secs(3600),
            poll: Duration::from_secs(10),
        })
    }
}

#[async_trait]
impl UploadBackend for Ec2Upload {
    async fn put_object(&self, bucket: &str, key: &str, file: &Path) -> Result<(), PlatformError> {
        self.s3.put_file(bucket, key, file).await
    }

    async fn import_snapshot(&self, req: &UploadRequest) -> Result<String, PlatformError> {
        let out = self
            .ec2
            .import_snapshot()
            .description(&req.description)
            .disk_container(
                SnapshotDiskContainer::builder()
                    .format(req.format.as_str())
                    .description(&req.description)
                    .user_bucket(
                        UserBucket::builder()
                            .s3_bucket(&req.bucket)
                            .s3_key(&req.key)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(tag_spec(
                &req.tags,
                ResourceType::ImportSnapshotTask,
                &req.name,
            ))
            .send()
            .await
            .map_err(|e| api_err("ImportSnapshot", e))?;
        let task = out
            .import_task_id()
            .ok_or_else(|| PlatformError::Machine("ImportSnapshot returned no task id".into()))?
            .to_string();
        let start = Instant::now();
        loop {
            let out = self
                .ec2
                .describe_import_snapshot_tasks()
                .import_task_ids(&task)
                .send()
                .await
                .map_err(|e| api_err("DescribeImportSnapshotTasks", e))?;
            let detail = out
                .import_snapshot_tasks()
                .first()
                .and_then(|t| t.snapshot_task_detail());
            match detail.and_then(|d| d.status()) {
                Some("completed") => {
                    if let Some(id) = detail.and_then(|d| d.snapshot_id()) {
                        return Ok(id.to_string());
                    }
                }
                Some(s @ ("deleted" | "deleting")) => {
                    let why = detail.and_then(|d| d.status_message()).unwrap_or("");
                    return Err(PlatformError::Api {
                        service: crate::SERVICE.into(),
                        message: format!("import task {task} {s}: {why}"),
                    });
                }
                _ => {}
            }
            if start.elapsed() > self.import_timeout {
                return Err(PlatformError::Api {
                    service: crate::SERVICE.into(),
                    message: format!(
                        "import task {task} did not complete within {}s",
                        self.import_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn register_image(
        &self,
        req: &UploadRequest,
        snapshot_id: &str,
    ) -> Result<String, PlatformError> {
        register(&self.ec2, req, snapshot_id).await
    }

    async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), PlatformError> {
        self.s3.delete_object(bucket, key).await
    }
}

/// `RegisterImage` for a snapshot: HVM, ENA, `/dev/xvda` root on gp3, deleted with the
/// instance, tagged with the run's tags.
pub async fn register(
    ec2: &aws_sdk_ec2::Client,
    req: &UploadRequest,
    snapshot_id: &str,
) -> Result<String, PlatformError> {
    let arch = match req.arch {
        Arch::Amd64 => ArchitectureValues::X8664,
        Arch::Arm64 => ArchitectureValues::Arm64,
    };
    let mut r = ec2
        .register_image()
        .name(&req.name)
        .description(&req.description)
        .architecture(arch)
        .virtualization_type("hvm")
        .ena_support(true)
        .root_device_name("/dev/xvda")
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .snapshot_id(snapshot_id)
                        .delete_on_termination(true)
                        .volume_type(VolumeType::Gp3)
                        .build(),
                )
                .build(),
        )
        .tag_specifications(tag_spec(&req.tags, ResourceType::Image, &req.name));
    let mode = req
        .boot_mode
        .clone()
        .or_else(|| (req.arch == Arch::Arm64).then(|| "uefi".to_string()));
    if let Some(m) = mode {
        r = r.boot_mode(BootModeValues::from(m.as_str()));
    }
    let out = r.send().await.map_err(|e| api_err("RegisterImage", e))?;
    out.image_id()
        .map(str::to_string)
        .ok_or_else(|| PlatformError::Machine("RegisterImage returned no image id".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            DiskFormat::from_path(Path::new("x/flatcar_production_ami_vmdk_image.vmdk")),
            DiskFormat::Vmdk
        );
        assert_eq!(DiskFormat::from_path(Path::new("a.vhd")), DiskFormat::Vhd);
        assert_eq!(DiskFormat::from_path(Path::new("a.bin")), DiskFormat::Raw);
        assert_eq!(DiskFormat::Vmdk.as_str(), "VMDK");
        assert_eq!(
            aws_sdk_ec2::types::DiskImageFormat::Vmdk.as_str(),
            DiskFormat::Vmdk.as_str()
        );
    }
}
