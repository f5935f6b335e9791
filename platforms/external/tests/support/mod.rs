//! A fake SSH host on a loopback port (russh's server): public-key logins checked against
//! `<home>/.ssh/authorized_keys` (read at every login, so keys bogie installs take effect),
//! and `exec` requests run locally with `bash -c` and `HOME=<home>`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::PrivateKey;
use russh::server::{Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};

/// A running fake host.
pub struct FakeHost {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its home directory (`~/.ssh/authorized_keys` is here).
    pub home: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Host {
    home: Arc<PathBuf>,
}

fn key_fields(line: &str) -> Option<String> {
    let mut f = line.split_whitespace();
    Some(format!("{} {}", f.next()?, f.next()?))
}

fn authorized(home: &Path, key: &russh::keys::PublicKey) -> bool {
    let Ok(mine) = key.to_openssh() else {
        return false;
    };
    let Some(mine) = key_fields(&mine) else {
        return false;
    };
    std::fs::read_to_string(home.join(".ssh/authorized_keys"))
        .unwrap_or_default()
        .lines()
        .filter_map(key_fields)
        .any(|k| k == mine)
}

impl russh::server::Server for Host {
    type Handler = Host;
    fn new_client(&mut self, _: Option<std::net::SocketAddr>) -> Host {
        self.clone()
    }
}

impl russh::server::Handler for Host {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if authorized(&self.home, key.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        let cmd = String::from_utf8_lossy(data).into_owned();
        let handle = session.handle();
        // This "host" has no systemd; answer the harness's bring-up check as a booted one.
        // ... and has no journal of its own worth scanning.
        let canned: Option<&[u8]> = if cmd.trim() == "systemctl is-system-running" {
            Some(b"running\n")
        } else if cmd.trim_start().starts_with("journalctl") {
            Some(b"")
        } else {
            None
        };
        if let Some(text) = canned {
            let _ = session.data(channel, text.to_vec());
            let _ = session.exit_status_request(channel, 0);
            let _ = session.eof(channel);
            let _ = session.close(channel);
            return Ok(());
        }
        let home = self.home.clone();
        tokio::spawn(async move {
            let out = tokio::process::Command::new("bash")
                .arg("-c")
                .arg(&cmd)
                .env("HOME", &*home)
                .current_dir(&*home)
                .stdin(std::process::Stdio::null())
                .output()
                .await;
            let (code, stdout, stderr) = match out {
                Ok(o) => (o.status.code().unwrap_or(255) as u32, o.stdout, o.stderr),
                Err(e) => (127, Vec::new(), e.to_string().into_bytes()),
            };
            if !stdout.is_empty() {
                let _ = handle.data(channel, stdout).await;
            }
            if !stderr.is_empty() {
                let _ = handle.extended_data(channel, 1, stderr).await;
            }
            let _ = handle.exit_status_request(channel, code).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}

impl FakeHost {
    /// Starts a host accepting `login_key` (an `authorized_keys` line).
    pub async fn start(login_key: &str) -> FakeHost {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(
            home.path().join(".ssh/authorized_keys"),
            format!("{login_key}\n"),
        )
        .unwrap();
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (i as u8)
                .wrapping_mul(31)
                .wrapping_add(std::process::id() as u8);
        }
        let config = Arc::new(russh::server::Config {
            keys: vec![PrivateKey::from(Ed25519Keypair::from_seed(&seed))],
            auth_rejection_time: std::time::Duration::from_millis(10),
            auth_rejection_time_initial: Some(std::time::Duration::from_millis(0)),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut host = Host {
            home: Arc::new(home.path().to_path_buf()),
        };
        let task = tokio::spawn(async move {
            let _ = host.run_on_socket(config, &listener).await;
        });
        FakeHost { port, home, task }
    }

    /// The `authorized_keys` file.
    pub fn authorized_keys(&self) -> String {
        std::fs::read_to_string(self.home.path().join(".ssh/authorized_keys")).unwrap_or_default()
    }
}
