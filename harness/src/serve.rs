//! A tiny file server on loopback ports for guests: HTTP (GET/HEAD) and TFTP (read
//! requests, octet mode). A QEMU guest on user networking reaches the host's loopback as
//! [`QEMU_HOST_ADDR`], so `http://10.0.2.2:PORT/name` and `tftp://10.0.2.2:PORT/name` work
//! from the guest, also from its initramfs (Ignition fetching remote resources).
//!
//! Files live in memory; every request is logged so a test can report what was fetched.
//! The server stops when the [`FileServer`] is dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The address under which a QEMU guest on user networking (slirp) reaches the host.
pub const QEMU_HOST_ADDR: &str = "10.0.2.2";

type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;
type Log = Arc<Mutex<Vec<String>>>;

/// An HTTP and TFTP server for a fixed set of in-memory files.
#[derive(Debug)]
pub struct FileServer {
    files: Files,
    log: Log,
    http: SocketAddr,
    tftp: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl FileServer {
    /// Starts both servers on free ports of 127.0.0.1.
    pub async fn start() -> std::io::Result<FileServer> {
        let files: Files = Arc::default();
        let log: Log = Arc::default();
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let (http, tftp) = (tcp.local_addr()?, udp.local_addr()?);
        let tasks = vec![
            tokio::spawn(http_loop(tcp, files.clone(), log.clone())),
            tokio::spawn(tftp_loop(udp, files.clone(), log.clone())),
        ];
        Ok(FileServer {
            files,
            log,
            http,
            tftp,
            tasks,
        })
    }

    /// Serves `data` under `path` (a leading `/` is optional).
    pub fn add(&self, path: &str, data: impl Into<Vec<u8>>) {
        let key = format!("/{}", path.trim_start_matches('/'));
        self.files
            .lock()
            .expect("poisoned")
            .insert(key, data.into());
    }

    /// The HTTP port on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// The TFTP port on 127.0.0.1.
    pub fn tftp_port(&self) -> u16 {
        self.tftp.port()
    }

    /// `http://10.0.2.2:PORT/path`: the URL a QEMU guest uses.
    pub fn guest_http_url(&self, path: &str) -> String {
        format!(
            "http://{QEMU_HOST_ADDR}:{}/{}",
            self.http_port(),
            path.trim_start_matches('/')
        )
    }

    /// `tftp://10.0.2.2:PORT/path`: the URL a QEMU guest uses.
    pub fn guest_tftp_url(&self, path: &str) -> String {
        format!(
            "tftp://{QEMU_HOST_ADDR}:{}/{}",
            self.tftp_port(),
            path.trim_start_matches('/')
        )
    }

    /// Every request so far, one line each (`http GET /x 200`, `tftp RRQ /y 404`).
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().expect("poisoned").clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn record(log: &Log, line: String) {
    tracing::debug!("serve: {line}");
    log.lock().expect("poisoned").push(line);
}

async fn http_loop(l: TcpListener, files: Files, log: Log) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let (files, log) = (files.clone(), log.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(60), http_conn(s, files, log)).await;
        });
    }
}

async fn http_conn(mut s: TcpStream, files: Files, log: Log) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    let body = files.lock().expect("poisoned").get(&path).cloned();
    let (status, body) = match (method, body) {
        ("GET" | "HEAD", Some(b)) => ("200 OK", b),
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec()),
        _ => ("405 Method Not Allowed", Vec::new()),
    };
    record(&log, format!("http {method} {target} {}", &status[..3]));
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        s.write_all(&body).await?;
    }
    s.shutdown().await
}

const TFTP_RRQ: u16 = 1;
const TFTP_DATA: u16 = 3;
const TFTP_ACK: u16 = 4;
const TFTP_ERROR: u16 = 5;
const TFTP_OACK: u16 = 6;

async fn tftp_loop(sock: UdpSocket, files: Files, log: Log) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let req = buf[..n].to_vec();
        let (files, log) = (files.clone(), log.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(120),
                tftp_transfer(req, peer, files, log),
            )
            .await;
        });
    }
}

/// A parsed read request: filename, mode, options.
type ReadRequest = (String, String, Vec<(String, String)>);

/// Parses an RRQ.
fn parse_rrq(req: &[u8]) -> Option<ReadRequest> {
    if req.len() < 4 || u16::from_be_bytes([req[0], req[1]]) != TFTP_RRQ {
        return None;
    }
    let fields: Vec<String> = req[2..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let name = fields.first()?.clone();
    let mode = fields.get(1)?.to_ascii_lowercase();
    let opts = fields[2..]
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].to_ascii_lowercase(), c[1].clone()))
        .collect();
    Some((name, mode, opts))
}

fn tftp_error(code: u16, msg: &str) -> Vec<u8> {
    let mut p = TFTP_ERROR.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(0);
    p
}

async fn tftp_transfer(
    req: Vec<u8>,
    peer: SocketAddr,
    files: Files,
    log: Log,
) -> std::io::Result<()> {
    // Each transfer gets its own port (its transfer id), as RFC 1350 asks.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    sock.connect(peer).await?;
    let Some((name, _mode, opts)) = parse_rrq(&req) else {
        sock.send(&tftp_error(4, "only read requests")).await?;
        return Ok(());
    };
    let path = format!("/{}", name.trim_start_matches('/'));
    let Some(data) = files.lock().expect("poisoned").get(&path).cloned() else {
        record(&log, format!("tftp RRQ {path} 404"));
        sock.send(&tftp_error(1, "file not found")).await?;
        return Ok(());
    };
    record(&log, format!("tftp RRQ {path} 200"));
    let mut blksize = 512usize;
    let mut oack = Vec::new();
    for (k, v) in &opts {
        match k.as_str() {
            "blksize" => {
                if let Ok(b) = v.parse::<usize>() {
                    blksize = b.clamp(8, 1428);
                    oack.push(("blksize".to_string(), blksize.to_string()));
                }
            }
            "tsize" => oack.push(("tsize".to_string(), data.len().to_string())),
            _ => {}
        }
    }
    let mut ack = [0u8; 516];
    if !oack.is_empty() {
        let mut p = TFTP_OACK.to_be_bytes().to_vec();
        for (k, v) in &oack {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        send_until_acked(&sock, &p, 0, &mut ack).await?;
    }
    let mut block: u16 = 1;
    let mut offset = 0usize;
    loop {
        let end = (offset + blksize).min(data.len());
        let mut p = TFTP_DATA.to_be_bytes().to_vec();
        p.extend_from_slice(&block.to_be_bytes());
        p.extend_from_slice(&data[offset..end]);
        send_until_acked(&sock, &p, block, &mut ack).await?;
        if end - offset < blksize {
            return Ok(());
        }
        offset = end;
        block = block.wrapping_add(1);
    }
}

async fn send_until_acked(
    sock: &UdpSocket,
    packet: &[u8],
    block: u16,
    buf: &mut [u8],
) -> std::io::Result<()> {
    for _ in 0..8 {
        sock.send(packet).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv(buf)).await {
            let n = r?;
            if n >= 4
                && u16::from_be_bytes([buf[0], buf[1]]) == TFTP_ACK
                && u16::from_be_bytes([buf[2], buf[3]]) == block
            {
                return Ok(());
            }
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == TFTP_ERROR {
                return Err(std::io::Error::other("the client aborted the transfer"));
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no ACK from the TFTP client",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_http_and_tftp() {
        let s = FileServer::start().await.unwrap();
        s.add("http", "kola-http");
        s.add("/big", vec![7u8; 1300]);
        assert!(s.guest_http_url("/http").starts_with("http://10.0.2.2:"));

        let mut c = TcpStream::connect(("127.0.0.1", s.http_port()))
            .await
            .unwrap();
        c.write_all(b"GET /http HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("\r\n\r\nkola-http"), "{out}");
        let mut c = TcpStream::connect(("127.0.0.1", s.http_port()))
            .await
            .unwrap();
        c.write_all(b"GET /nope HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 404"), "{out}");

        // A TFTP client reading /big in 512-byte blocks.
        let u = UdpSocket::bind(("127.0.0.1", 0)).await.unwrap();
        let mut rrq = TFTP_RRQ.to_be_bytes().to_vec();
        rrq.extend_from_slice(b"big\0octet\0");
        u.send_to(&rrq, ("127.0.0.1", s.tftp_port())).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 600];
        loop {
            let (n, from) = u.recv_from(&mut buf).await.unwrap();
            assert_ne!(from.port(), s.tftp_port(), "transfers use their own port");
            assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), TFTP_DATA);
            got.extend_from_slice(&buf[4..n]);
            let mut ack = TFTP_ACK.to_be_bytes().to_vec();
            ack.extend_from_slice(&buf[2..4]);
            u.send_to(&ack, from).await.unwrap();
            if n - 4 < 512 {
                break;
            }
        }
        assert_eq!(got, vec![7u8; 1300]);
        let reqs = s.requests();
        assert!(reqs.contains(&"http GET /http 200".to_string()), "{reqs:?}");
        assert!(reqs.contains(&"tftp RRQ /big 200".to_string()), "{reqs:?}");
    }

    #[test]
    fn rrq_options_parse() {
        let req = [
            &b"\0\x01tftp\0octet\0blksize\0"[..],
            b"1024\0tsize\0",
            b"0\0",
        ]
        .concat();
        let (n, m, o) = parse_rrq(&req).unwrap();
        assert_eq!((n.as_str(), m.as_str()), ("tftp", "octet"));
        assert_eq!(o[0], ("blksize".to_string(), "1024".to_string()));
        assert!(parse_rrq(b"\0\x02x\0octet\0").is_none());
    }
}
