//! Where bearer tokens come from: Azure's identity library, Google service-account keys,
//! the GCE metadata server, the gcloud CLI, or a fixed token. Tokens are [`Secret`]s, cached
//! until shortly before they expire.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use bogie_harness::PlatformError;
use bogie_platform_common::http::{api_error, client, transport_error};
use bogie_platform_common::Secret;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// A source of bearer tokens.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A valid token.
    async fn token(&self) -> Result<Secret, PlatformError>;
}

/// A fixed token (tests, `GOOGLE_OAUTH_ACCESS_TOKEN`).
#[derive(Debug, Clone)]
pub struct StaticToken(pub Secret);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<Secret, PlatformError> {
        Ok(self.0.clone())
    }
}

/// The scope of Azure Resource Manager tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// Tokens from an `azure_identity` credential (client secret, managed or workload identity,
/// Azure CLI), which caches them itself.
pub struct AzureToken {
    cred: Arc<dyn azure_core::credentials::TokenCredential>,
    scope: String,
}

impl std::fmt::Debug for AzureToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureToken")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn azure_err(e: azure_core::Error) -> PlatformError {
    api_error("azure-identity", format!("getting an Azure token: {e}"))
}

impl AzureToken {
    /// Chooses a credential: the service principal in `auth_file` (the JSON `az ad sp
    /// create-for-rbac --sdk-auth` writes: clientId, clientSecret, tenantId), else
    /// `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`, else a workload
    /// identity (`AZURE_FEDERATED_TOKEN_FILE`), else the developer tools (Azure CLI, azd).
    /// Returns the credential and the subscription the auth file names, if any.
    pub fn from_environment(
        auth_file: Option<&Path>,
        endpoint_scope: &str,
    ) -> Result<(AzureToken, Option<String>), PlatformError> {
        bogie_platform_common::http::install_crypto_provider();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (cred, sub): (
            Arc<dyn azure_core::credentials::TokenCredential>,
            Option<String>,
        ) = if let Some(f) = auth_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| PlatformError::Input(format!("--azure-auth {}: {e}", f.display())))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| {
                PlatformError::Input(format!("--azure-auth {}: not JSON: {e}", f.display()))
            })?;
            let field = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        PlatformError::Input(format!("--azure-auth {}: no {k}", f.display()))
                    })
            };
            let secret = field("clientSecret")?;
            bogie_platform_common::redact::register(&secret);
            let c = azure_identity::ClientSecretCredential::new(
                &field("tenantId")?,
                field("clientId")?,
                secret.into(),
                None,
            )
            .map_err(azure_err)?;
            (
                c,
                v.get("subscriptionId")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            )
        } else if let (Some(t), Some(c), Some(s)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            bogie_platform_common::redact::register(&s);
            (
                azure_identity::ClientSecretCredential::new(&t, c, s.into(), None)
                    .map_err(azure_err)?,
                None,
            )
        } else if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            (
                azure_identity::WorkloadIdentityCredential::new(None).map_err(azure_err)?,
                None,
            )
        } else {
            (
                azure_identity::DeveloperToolsCredential::new(None).map_err(azure_err)?,
                None,
            )
        };
        Ok((
            AzureToken {
                cred,
                scope: endpoint_scope.to_string(),
            },
            sub,
        ))
    }
}

#[async_trait]
impl TokenSource for AzureToken {
    async fn token(&self) -> Result<Secret, PlatformError> {
        let t = self
            .cred
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(azure_err)?;
        Ok(Secret::new(t.token.secret()))
    }
}

/// The scope of Google Cloud tokens.
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

enum GoogleKind {
    /// A service account key (the JSON `gcloud iam service-accounts keys create` writes).
    Key {
        email: String,
        key_id: String,
        der: Vec<u8>,
        token_uri: String,
    },
    /// The metadata server of the GCE VM bogie runs on (`--gce-service-auth`).
    Metadata,
    /// `gcloud auth print-access-token`.
    Gcloud,
}

/// Google OAuth access tokens.
pub struct GoogleToken {
    kind: GoogleKind,
    cache: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for GoogleToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            GoogleKind::Key { email, .. } => format!("key for {email}"),
            GoogleKind::Metadata => "metadata server".into(),
            GoogleKind::Gcloud => "gcloud".into(),
        };
        f.debug_struct("GoogleToken")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl GoogleToken {
    /// From a service account JSON key file (`--gce-json-key`).
    pub fn from_key_file(path: &Path) -> Result<GoogleToken, PlatformError> {
        let bad =
            |why: String| PlatformError::Input(format!("--gce-json-key {}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Self::from_key_json(&text).map_err(|e| bad(e.to_string()))
    }

    /// From the text of a service account JSON key.
    pub fn from_key_json(text: &str) -> Result<GoogleToken, PlatformError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| PlatformError::Input(format!("not JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| PlatformError::Input(format!("the key has no {k}")))
        };
        let pem = field("private_key")?;
        let der = pem_to_der(&pem)
            .ok_or_else(|| PlatformError::Input("private_key is not PEM".into()))?;
        ring::signature::RsaKeyPair::from_pkcs8(&der).map_err(|e| {
            PlatformError::Input(format!("private_key is not a PKCS#8 RSA key: {e}"))
        })?;
        Ok(GoogleToken {
            kind: GoogleKind::Key {
                email: field("client_email")?,
                key_id: field("private_key_id").unwrap_or_default(),
                der,
                token_uri: field("token_uri")
                    .unwrap_or_else(|_| "https://oauth2.googleapis.com/token".into()),
            },
            cache: Mutex::new(None),
        })
    }

    /// From the metadata server (bogie runs on GCE).
    pub fn metadata() -> GoogleToken {
        GoogleToken {
            kind: GoogleKind::Metadata,
            cache: Mutex::new(None),
        }
    }

    /// From the gcloud CLI's login.
    pub fn gcloud() -> GoogleToken {
        GoogleToken {
            kind: GoogleKind::Gcloud,
            cache: Mutex::new(None),
        }
    }

    /// The signed JWT assertion for the token endpoint (service account keys only).
    pub fn assertion(&self, now: u64) -> Result<Option<String>, PlatformError> {
        let GoogleKind::Key {
            email,
            key_id,
            der,
            token_uri,
        } = &self.kind
        else {
            return Ok(None);
        };
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": key_id});
        let claims = json!({
            "iss": email,
            "scope": GOOGLE_SCOPE,
            "aud": token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let msg = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let key = ring::signature::RsaKeyPair::from_pkcs8(der)
            .map_err(|e| api_error("oauth2", format!("loading the key: {e}")))?;
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            msg.as_bytes(),
            &mut sig,
        )
        .map_err(|e| api_error("oauth2", format!("signing: {e}")))?;
        Ok(Some(format!("{msg}.{}", b64url(&sig))))
    }

    async fn fetch(&self) -> Result<(String, Duration), PlatformError> {
        let http = client(Duration::from_secs(30))?;
        let parse = |v: &Value| -> Result<(String, Duration), PlatformError> {
            let t = v
                .get("access_token")
                .and_then(Value::as_str)
                .ok_or_else(|| api_error("oauth2", "the token response has no access_token"))?;
            let secs = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
            Ok((t.to_string(), Duration::from_secs(secs)))
        };
        match &self.kind {
            GoogleKind::Key { token_uri, .. } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let jwt = self.assertion(now)?.unwrap_or_default();
                let body = format!(
                    "grant_type={}&assertion={}",
                    urlencoding::encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
                    urlencoding::encode(&jwt)
                );
                let r = http
                    .post(token_uri)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| transport_error("oauth2", "token exchange", &e))?;
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(api_error(
                        "oauth2",
                        format!("token exchange: HTTP {status}: {text}"),
                    ));
                }
                parse(&serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            GoogleKind::Metadata => {
                let r = http
                    .get("http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token")
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .map_err(|e| transport_error("metadata", "token", &e))?;
                let text = r.text().await.unwrap_or_default();
                parse(&serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            GoogleKind::Gcloud => {
                let out = tokio::process::Command::new("gcloud")
                    .args(["auth", "print-access-token"])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| PlatformError::io("running gcloud auth print-access-token", e))?;
                if !out.status.success() {
                    return Err(api_error(
                        "gcloud",
                        format!(
                            "gcloud auth print-access-token failed: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    ));
                }
                let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
                Ok((t, Duration::from_secs(300)))
            }
        }
    }
}

#[async_trait]
impl TokenSource for GoogleToken {
    async fn token(&self) -> Result<Secret, PlatformError> {
        let mut c = self.cache.lock().await;
        if let Some((t, until)) = c.as_ref() {
            if Instant::now() < *until {
                return Ok(t.clone());
            }
        }
        let (t, life) = self.fetch().await?;
        let t = Secret::new(t);
        let until = Instant::now() + life.saturating_sub(Duration::from_secs(60));
        *c = Some((t.clone(), until));
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bodies_decode() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAEC\nAwQ=\n-----END PRIVATE KEY-----\n";
        assert_eq!(pem_to_der(pem).unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_keys_are_input_errors() {
        let e = GoogleToken::from_key_json(r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PRIVATE KEY-----"}"#)
            .unwrap_err();
        assert!(matches!(e, PlatformError::Input(_)), "{e}");
        assert!(!e.to_string().contains("AAEC"));
    }
}
