//! The few S3 calls image upload needs (put, delete object; create bucket for tests), signed
//! with SigV4 over bogie's HTTP client, so the AWS S3 SDK (a second very large generated
//! crate) is not built.

use std::path::Path;
use std::time::SystemTime;

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use bogie_harness::PlatformError;
use bogie_platform_common::http::{api_error, check, client, transport_error};

const SERVICE: &str = "s3";

/// An S3 client for one region and endpoint.
#[derive(Debug, Clone)]
pub struct S3 {
    http: reqwest::Client,
    conf: aws_config::SdkConfig,
    region: String,
    /// Custom endpoint (path-style addressing) or None for AWS (virtual-hosted style).
    endpoint: Option<String>,
}

fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl S3 {
    /// A client using the SDK configuration's region and credentials. The endpoint is
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS's.
    pub fn new(conf: &aws_config::SdkConfig) -> Result<S3, PlatformError> {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
            .ok()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        Self::with_endpoint(conf, endpoint)
    }

    /// A client for a given endpoint (path-style addressing), or AWS's when None.
    pub fn with_endpoint(
        conf: &aws_config::SdkConfig,
        endpoint: Option<String>,
    ) -> Result<S3, PlatformError> {
        let endpoint = endpoint
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('/').to_string());
        Ok(S3 {
            http: client(std::time::Duration::from_secs(3600))?,
            region: conf
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| crate::DEFAULT_REGION.into()),
            conf: conf.clone(),
            endpoint,
        })
    }

    /// The URL of a bucket or object.
    pub fn url(&self, bucket: &str, key: Option<&str>) -> String {
        let path = key
            .map(|k| format!("/{}", encode_key(k)))
            .unwrap_or_default();
        match &self.endpoint {
            Some(e) => format!("{e}/{bucket}{path}"),
            None => format!("https://{bucket}.s3.{}.amazonaws.com{path}", self.region),
        }
    }

    async fn signed(
        &self,
        method: &str,
        url: &str,
        extra: &[(&str, String)],
    ) -> Result<Vec<(String, String)>, PlatformError> {
        let provider = self
            .conf
            .credentials_provider()
            .ok_or_else(|| api_error(SERVICE, "no AWS credentials configured"))?;
        let creds = provider
            .provide_credentials()
            .await
            .map_err(|e| api_error(SERVICE, format!("loading AWS credentials: {e}")))?;
        let identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| api_error(SERVICE, format!("signing: {e}")))?
            .into();
        let headers: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let req = SignableRequest::new(
            method,
            url,
            headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| api_error(SERVICE, format!("signing: {e}")))?;
        let (instructions, _) = sign(req, &params)
            .map_err(|e| api_error(SERVICE, format!("signing: {e}")))?
            .into_parts();
        let mut out: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        for (k, v) in instructions.headers() {
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        extra: &[(&str, String)],
        body: Option<reqwest::Body>,
        what: &str,
    ) -> Result<(), PlatformError> {
        let headers = self.signed(method.as_str(), url, extra).await?;
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(SERVICE, what, &e))?;
        check(SERVICE, what, resp).await?;
        Ok(())
    }

    /// Uploads a file as one object (PutObject takes up to 5 GiB), streaming it.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        file: &Path,
    ) -> Result<(), PlatformError> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| PlatformError::io(format!("opening {}", file.display()), e))?;
        let len = f
            .metadata()
            .await
            .map_err(|e| PlatformError::io(format!("reading {}", file.display()), e))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let url = self.url(bucket, Some(key));
        self.send(
            reqwest::Method::PUT,
            &url,
            &[("content-length", len.to_string())],
            Some(body),
            &format!("PutObject s3://{bucket}/{key}"),
        )
        .await
    }

    /// Deletes an object.
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<(), PlatformError> {
        let url = self.url(bucket, Some(key));
        self.send(
            reqwest::Method::DELETE,
            &url,
            &[],
            None,
            &format!("DeleteObject s3://{bucket}/{key}"),
        )
        .await
    }

    /// Creates a bucket in the client's region.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), PlatformError> {
        let url = self.url(bucket, None);
        let body = if self.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )
        };
        self.send(
            reqwest::Method::PUT,
            &url,
            &[("content-length", body.len().to_string())],
            Some(body.into()),
            &format!("CreateBucket {bucket}"),
        )
        .await
    }

    /// Reads an object (for tests and checks).
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, PlatformError> {
        let url = self.url(bucket, Some(key));
        let what = format!("GetObject s3://{bucket}/{key}");
        let headers = self.signed("GET", &url, &[]).await?;
        let mut req = self.http.get(&url);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(SERVICE, &what, &e))?;
        let resp = check(SERVICE, &what, resp).await?;
        Ok(resp
            .bytes()
            .await
            .map_err(|e| transport_error(SERVICE, &what, &e))?
            .to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(encode_key("a b/c+d/e.vmdk"), "a%20b/c%2Bd/e.vmdk");
    }
}
