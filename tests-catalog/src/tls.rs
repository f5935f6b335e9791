//! An HTTPS file server for guests, for `coreos.ignition.security.tls`: the harness makes a
//! throwaway CA and a server certificate for the guest-visible address with the host's
//! `openssl`, and serves a directory with `openssl s_server -WWW` on a loopback port.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// A running `openssl s_server -WWW`; killed when dropped.
#[derive(Debug)]
pub struct TlsServer {
    dir: PathBuf,
    port: u16,
    _child: Child,
}

async fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the host's openssl (needed to serve HTTPS to guests)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl TlsServer {
    /// Makes a CA and a certificate for `ip` under `<base>/tls`, writes `files` there and
    /// serves them over HTTPS on a free port of 127.0.0.1.
    pub async fn start(base: &Path, ip: &str, files: &[(&str, &str)]) -> Result<TlsServer> {
        let dir = base.join("tls");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        openssl(
            &dir,
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-out",
                "ca.key",
            ],
        )
        .await?;
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=bogie test CA",
                "-out",
                "ca.crt",
            ],
        )
        .await?;
        openssl(
            &dir,
            &[
                "ecparam",
                "-genkey",
                "-name",
                "prime256v1",
                "-out",
                "server.key",
            ],
        )
        .await?;
        openssl(
            &dir,
            &[
                "req",
                "-new",
                "-key",
                "server.key",
                "-subj",
                &format!("/CN={ip}"),
                "-out",
                "server.csr",
            ],
        )
        .await?;
        std::fs::write(
            dir.join("san.ext"),
            format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
        )?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "san.ext",
                "-out",
                "server.crt",
            ],
        )
        .await?;
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        for (name, content) in files {
            std::fs::write(www.join(name), content)?;
        }
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            l.local_addr()?.port()
        };
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "../server.crt",
                "-key",
                "../server.key",
                "-WWW",
            ])
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting openssl s_server")?;
        // Wait until it accepts connections.
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(TlsServer {
                    dir,
                    port,
                    _child: child,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("openssl s_server did not listen on 127.0.0.1:{port}")
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca.crt")).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_https_signed_by_its_ca() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no openssl on the host");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let s = TlsServer::start(d.path(), "127.0.0.1", &[("config.ign", "{}")])
            .await
            .unwrap();
        assert!(s.ca_pem().contains("BEGIN CERTIFICATE"));
        // The server's certificate verifies against the CA.
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", "ca.crt", "server.crt"])
            .current_dir(d.path().join("tls"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
