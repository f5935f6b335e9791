//! A minimal Omaha update server on a loopback port, for `cl.omaha.ping` and the
//! `cl.update.*` payload tests: answers update checks with one payload (served from the
//! same port), acknowledges events and pings, and records every request so tests can see
//! that update_engine talked to it. Guests on QEMU user networking reach it at 10.0.2.2.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The payload an update check offers.
#[derive(Debug, Clone)]
struct Payload {
    bytes: Arc<Vec<u8>>,
    sha1_b64: String,
    sha256_b64: String,
}

#[derive(Debug, Default)]
struct State {
    payload: Option<Payload>,
    version: String,
    requests: Vec<String>,
}

/// A running Omaha server; stops when dropped.
#[derive(Debug)]
pub struct Omaha {
    port: u16,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Omaha {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn digest_b64(path: &Path, algo: &str) -> Result<String> {
    let cmd = format!(
        "openssl dgst -{algo} -binary {} | openssl base64 -A",
        bogie_harness::cluster::shell_quote(&path.display().to_string())
    );
    let out = tokio::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .await
        .context("hashing the update payload with the host's openssl")?;
    if !out.status.success() {
        bail!(
            "hashing {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Omaha {
    /// Starts the server; with `payload`, update checks offer it as version `version`.
    pub async fn start(payload: Option<&Path>, version: &str) -> Result<Omaha> {
        let payload = match payload {
            Some(p) => Some(Payload {
                bytes: Arc::new(
                    std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                ),
                sha1_b64: digest_b64(p, "sha1").await?,
                sha256_b64: digest_b64(p, "sha256").await?,
            }),
            None => None,
        };
        let l = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = l.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            payload,
            version: version.to_string(),
            requests: Vec::new(),
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(600), serve(s, st)).await;
                });
            }
        });
        Ok(Omaha { port, state, task })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request so far: `GET /path` or `POST /path <request kinds>`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("poisoned").requests.clone()
    }

    /// Waits until a request satisfies `pred`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < end {
            if self.requests().iter().any(|r| pred(r)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }
}

/// The response to one Omaha request body.
fn respond(state: &State, body: &str, port: u16) -> String {
    let mut app = String::new();
    if body.contains("<ping") {
        app.push_str("<ping status=\"ok\"/>");
    }
    if body.contains("<event") {
        app.push_str("<event status=\"ok\"/>");
    }
    if body.contains("<updatecheck") {
        match &state.payload {
            Some(p) => app.push_str(&format!(
                "<updatecheck status=\"ok\"><urls><url codebase=\"http://10.0.2.2:{port}/packages/\"/></urls>\
                 <manifest version=\"{v}\"><packages><package hash=\"{h1}\" name=\"update.gz\" size=\"{n}\" required=\"true\"/></packages>\
                 <actions><action event=\"postinstall\" sha256=\"{h2}\" DisablePayloadBackoff=\"true\"/></actions></manifest></updatecheck>",
                v = state.version,
                h1 = p.sha1_b64,
                n = p.bytes.len(),
                h2 = p.sha256_b64,
            )),
            None => app.push_str("<updatecheck status=\"noupdate\"/>"),
        }
    }
    let appid = body
        .split("appid=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("{e96281a6-d1af-4bde-9a0a-97b76e56dc57}");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response protocol=\"3.0\" server=\"bogie\"><daystart elapsed_seconds=\"0\"/><app appid=\"{appid}\" status=\"ok\">{app}</app></response>\n"
    )
}

async fn serve(mut s: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let port = s.local_addr()?.port();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("/").to_string(),
    );
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).to_string();
    let (ctype, reply): (&str, Vec<u8>) = {
        let mut st = state.lock().expect("poisoned");
        if method == "POST" {
            let kinds: Vec<&str> = ["updatecheck", "event", "ping"]
                .into_iter()
                .filter(|k| body.contains(&format!("<{k}")))
                .collect();
            st.requests.push(format!("POST {path} {}", kinds.join(",")));
            ("text/xml", respond(&st, &body, port).into_bytes())
        } else {
            st.requests.push(format!("{method} {path}"));
            match (&st.payload, path.as_str()) {
                (Some(p), "/packages/update.gz") => ("application/octet-stream", p.bytes.to_vec()),
                _ => ("text/plain", b"bogie omaha\n".to_vec()),
            }
        }
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.len()
    );
    s.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        s.write_all(&reply).await?;
    }
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_checks_and_records_pings() {
        let o = Omaha::start(None, "9999.0.0").await.unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", o.port())).await.unwrap();
        let body = r#"<request protocol="3.0"><app appid="{x}"><ping r="1"/><updatecheck/></app></request>"#;
        c.write_all(
            format!(
                "POST /v1/update/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.contains("<updatecheck status=\"noupdate\"/>"), "{out}");
        assert!(out.contains("appid=\"{x}\""), "{out}");
        assert!(
            o.wait_for(Duration::from_secs(1), |r| r.contains("ping"))
                .await
        );
    }
}
