//! The boot server: a small HTTP/1.1 server on a loopback port that serves the kernel, the
//! initrd, each machine's iPXE script and each machine's Ignition config, and logs every
//! request (so a test can tell the machine really booted over the network).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a path serves.
#[derive(Debug, Clone)]
pub enum Content {
    /// Bytes in memory.
    Bytes(Arc<Vec<u8>>),
    /// A file, streamed.
    File(PathBuf),
}

/// One request served (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The request path.
    pub path: String,
    /// Status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Content>>,
    log: Mutex<Vec<Access>>,
}

/// A running boot server. Dropping it stops accepting connections.
pub struct BootServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for BootServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BootServer {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub async fn start(port: u16) -> std::io::Result<BootServer> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(conn, &st).await {
                        tracing::debug!(error = %e, "boot server connection");
                    }
                });
            }
        });
        Ok(BootServer { addr, state, task })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves `content` at `path` (which starts with `/`).
    pub fn put(&self, path: &str, content: Content) {
        self.state
            .routes
            .lock()
            .expect("poisoned")
            .insert(path.to_string(), content);
    }

    /// Stops serving `path`.
    pub fn remove(&self, path: &str) {
        self.state.routes.lock().expect("poisoned").remove(path);
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Access> {
        self.state.log.lock().expect("poisoned").clone()
    }
}

async fn read_head(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut chunk))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")
            })??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

async fn serve(mut conn: TcpStream, st: &State) -> std::io::Result<()> {
    let head = read_head(&mut conn).await?;
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    let content = st.routes.lock().expect("poisoned").get(&path).cloned();
    let mut access = Access {
        path: path.clone(),
        status: 200,
        bytes: 0,
    };
    let result = match (method, content) {
        ("GET" | "HEAD", Some(c)) => {
            let (len, file) = match &c {
                Content::Bytes(b) => (b.len() as u64, None),
                Content::File(p) => match tokio::fs::File::open(p).await {
                    Ok(f) => (f.metadata().await?.len(), Some(f)),
                    Err(_) => (0, None),
                },
            };
            if matches!(c, Content::File(_)) && file.is_none() {
                access.status = 404;
                respond(&mut conn, 404, b"not found\n").await
            } else {
                let hdr = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
                );
                conn.write_all(hdr.as_bytes()).await?;
                if method == "GET" {
                    match (c, file) {
                        (Content::Bytes(b), _) => conn.write_all(&b).await?,
                        (_, Some(mut f)) => {
                            tokio::io::copy(&mut f, &mut conn).await?;
                        }
                        _ => {}
                    }
                    access.bytes = len;
                }
                conn.shutdown().await
            }
        }
        ("GET" | "HEAD", None) => {
            access.status = 404;
            respond(&mut conn, 404, b"not found\n").await
        }
        _ => {
            access.status = 405;
            respond(&mut conn, 405, b"method not allowed\n").await
        }
    };
    tracing::debug!(path = %access.path, status = access.status, bytes = access.bytes, "boot server");
    st.log.lock().expect("poisoned").push(access);
    result
}

async fn respond(conn: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let hdr = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(hdr.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16, path: &str) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_bytes_and_files_and_logs() {
        let s = BootServer::start(0).await.unwrap();
        s.put("/a", Content::Bytes(Arc::new(b"hello".to_vec())));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("k"), b"kernel!").unwrap();
        s.put("/k", Content::File(d.path().join("k")));
        let r = get(s.port(), "/a?x=1").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nhello"));
        assert!(get(s.port(), "/k").await.ends_with("kernel!"));
        assert!(get(s.port(), "/nope").await.starts_with("HTTP/1.1 404"));
        let log = s.log();
        assert_eq!(log.len(), 3);
        assert_eq!(
            log[0],
            Access {
                path: "/a".into(),
                status: 200,
                bytes: 5
            }
        );
        assert_eq!(log[2].status, 404);
    }
}
