//! SSH to machines: one ephemeral ed25519 key pair per run, async sessions on `russh`
//! (one task per session, no thread per machine), commands with exit status, stdout and
//! stderr, and a bring-up wait with a timeout on every connect attempt.
//!
//! Why russh and not ssh2: ssh2 is blocking (a thread per guest) and links libssh2 and
//! OpenSSL; russh is pure Rust on tokio and handles hundreds of sessions on a few threads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use russh::client;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio_util::sync::CancellationToken;

/// SSH errors.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A connect attempt (TCP + handshake + auth) took too long.
    #[error("ssh: connect to {addr} timed out after {secs}s")]
    ConnectTimeout {
        /// Address.
        addr: SocketAddr,
        /// Seconds waited.
        secs: u64,
    },
    /// The machine never accepted a login within the bring-up timeout.
    #[error("ssh: machine never reached SSH at {addr} within {secs}s (last error: {last})")]
    NeverReady {
        /// Address.
        addr: SocketAddr,
        /// Seconds waited.
        secs: u64,
        /// The last connect error.
        last: String,
    },
    /// The server refused the key.
    #[error("ssh: authentication as {user} at {addr} was refused")]
    AuthRefused {
        /// User.
        user: String,
        /// Address.
        addr: SocketAddr,
    },
    /// A protocol or transport error.
    #[error("ssh: {0}")]
    Protocol(String),
    /// Cancelled (Ctrl-C or timeout of the test).
    #[error("ssh: cancelled")]
    Cancelled,
    /// Writing the key file failed.
    #[error("ssh: writing key {path}: {source}")]
    KeyFile {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<russh::Error> for SshError {
    fn from(e: russh::Error) -> Self {
        SshError::Protocol(e.to_string())
    }
}

/// The run's ephemeral key pair.
#[derive(Clone)]
pub struct SshKey {
    private: Arc<PrivateKey>,
    public_openssh: String,
}

impl std::fmt::Debug for SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKey")
            .field("public", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

impl SshKey {
    /// Generates a fresh ed25519 key pair.
    pub fn generate() -> SshKey {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let kp = Ed25519Keypair::from_seed(&seed);
        let mut private = PrivateKey::from(kp);
        private.set_comment("bogie");
        let public_openssh = private
            .public_key()
            .to_openssh()
            .expect("ed25519 public keys always encode");
        SshKey {
            private: Arc::new(private),
            public_openssh,
        }
    }

    /// Loads an OpenSSH private key file (for `--key`/reusing a kept run's key).
    pub fn load(path: &Path) -> Result<SshKey, SshError> {
        let private = russh::keys::load_secret_key(path, None)
            .map_err(|e| SshError::Protocol(e.to_string()))?;
        let public_openssh = private
            .public_key()
            .to_openssh()
            .map_err(|e| SshError::Protocol(e.to_string()))?;
        Ok(SshKey {
            private: Arc::new(private),
            public_openssh,
        })
    }

    /// The public key in `authorized_keys` form.
    pub fn public_openssh(&self) -> &str {
        &self.public_openssh
    }

    /// Writes the private key (mode 0600) and `<path>.pub`, so a person can `ssh -i` into
    /// kept machines.
    pub fn write(&self, path: &Path) -> Result<(), SshError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| SshError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let text = self
            .private
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshError::Protocol(e.to_string()))?;
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        std::fs::write(
            path.with_extension("pub"),
            format!("{}\n", self.public_openssh),
        )
        .map_err(err)?;
        Ok(())
    }
}

/// What a command returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status (None when the command was killed by a signal or the channel closed).
    pub status: Option<u32>,
    /// The signal that killed it, if any.
    pub signal: Option<String>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    /// stdout as text, trailing whitespace trimmed.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim_end().to_string()
    }
    /// stderr as text, trailing whitespace trimmed.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim_end().to_string()
    }
}

struct Handler;

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        // Throwaway machines: host keys are not verified (as kola does).
        Ok(true)
    }
}

/// An authenticated SSH session to one machine.
pub struct SshSession {
    handle: client::Handle<Handler>,
    addr: SocketAddr,
    user: String,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("addr", &self.addr)
            .field("user", &self.user)
            .finish()
    }
}

impl SshSession {
    /// One connect attempt: TCP, handshake and key auth, all within `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        key: &SshKey,
        timeout: Duration,
    ) -> Result<SshSession, SshError> {
        let attempt = async {
            let config = Arc::new(client::Config {
                inactivity_timeout: None,
                keepalive_interval: Some(Duration::from_secs(15)),
                keepalive_max: 8,
                nodelay: true,
                ..Default::default()
            });
            let mut handle = client::connect(config, addr, Handler).await?;
            let auth = handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.private.clone(), None))
                .await?;
            if !auth.success() {
                return Err(SshError::AuthRefused {
                    user: user.to_string(),
                    addr,
                });
            }
            Ok(SshSession {
                handle,
                addr,
                user: user.to_string(),
            })
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(SshError::ConnectTimeout {
                addr,
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Tries a password login (for tests that check passwords are refused). Returns whether
    /// the server accepted it.
    pub async fn password_accepted(
        addr: SocketAddr,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<bool, SshError> {
        let attempt = async {
            let config = Arc::new(client::Config::default());
            let mut handle = client::connect(config, addr, Handler).await?;
            let auth = handle.authenticate_password(user, password).await?;
            let ok = auth.success();
            let _ = handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
            Ok::<bool, SshError>(ok)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| SshError::ConnectTimeout {
                addr,
                secs: timeout.as_secs(),
            })?
    }

    /// Retries [`SshSession::connect`] until it works, `overall` passes, `alive` says the
    /// machine is gone, or `cancel` fires.
    pub async fn wait_ready<F, Fut>(
        addr: SocketAddr,
        user: &str,
        key: &SshKey,
        overall: Duration,
        per_attempt: Duration,
        cancel: &CancellationToken,
        alive: F,
    ) -> Result<SshSession, SshError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        let mut last = String::from("no attempt made");
        loop {
            if cancel.is_cancelled() {
                return Err(SshError::Cancelled);
            }
            let left = overall.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(SshError::NeverReady {
                    addr,
                    secs: overall.as_secs(),
                    last,
                });
            }
            let attempt = tokio::select! {
                r = SshSession::connect(addr, user, key, per_attempt.min(left)) => r,
                _ = cancel.cancelled() => return Err(SshError::Cancelled),
            };
            match attempt {
                Ok(s) => return Ok(s),
                Err(e @ SshError::AuthRefused { .. }) if start.elapsed() > overall / 2 => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "ssh attempt failed");
                    last = e.to_string();
                }
            }
            if !alive().await {
                return Err(SshError::NeverReady {
                    addr,
                    secs: start.elapsed().as_secs(),
                    last: format!("{last}; the machine stopped"),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = cancel.cancelled() => return Err(SshError::Cancelled),
            }
        }
    }

    /// Where the session goes.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The user logged in.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs a command, collecting its exit status and output.
    pub async fn exec(&self, command: &str) -> Result<CommandOutput, SshError> {
        self.exec_with_stdin(command, None).await
    }

    /// Runs a command with `stdin` fed to it (then EOF).
    pub async fn exec_with_stdin(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
    ) -> Result<CommandOutput, SshError> {
        let mut channel = self.handle.channel_open_session().await?;
        channel.exec(true, command).await?;
        if let Some(data) = stdin {
            channel.data(data).await?;
        }
        channel.eof().await?;
        let mut out = CommandOutput::default();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.signal = Some(format!("{signal_name:?}"))
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Closes the session politely.
    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_ed25519_and_unique() {
        let a = SshKey::generate();
        let b = SshKey::generate();
        assert!(a.public_openssh().starts_with("ssh-ed25519 "));
        assert_ne!(a.public_openssh(), b.public_openssh());
    }

    #[test]
    fn keys_round_trip_through_files() {
        let d = tempfile::tempdir().unwrap();
        let k = SshKey::generate();
        let p = d.path().join("id_ed25519");
        k.write(&p).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let back = SshKey::load(&p).unwrap();
        assert_eq!(back.public_openssh(), k.public_openssh());
        let pubtext = std::fs::read_to_string(p.with_extension("pub")).unwrap();
        assert_eq!(pubtext.trim(), k.public_openssh());
    }
}
