//! A small QMP (QEMU Machine Protocol) client: newline-delimited JSON over a unix socket.
//!
//! Every call has a timeout. Commands carry an `id`; replies to commands that timed out
//! earlier are skipped by id, and asynchronous events are kept for [`Qmp::take_events`].

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Most events kept before the oldest are dropped.
const MAX_EVENTS: usize = 256;

/// What went wrong talking QMP.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be used.
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU closed the connection (usually: it exited).
    #[error("QMP connection closed")]
    Closed,
    /// No answer in time.
    #[error("QMP {0} timed out")]
    Timeout(String),
    /// QEMU sent something that is not QMP.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU answered with an error.
    #[error("QMP {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QMP error class (`GenericError`, `CommandNotFound`, ...).
        class: String,
        /// QEMU's description.
        desc: String,
    },
}

/// A negotiated QMP connection.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Bytes of a line not yet complete (kept across cancelled reads).
    line: Vec<u8>,
    next_id: u64,
    events: Vec<Value>,
    /// QEMU's version from the greeting.
    version: Value,
}

impl Qmp {
    /// Connects to a QMP socket, reads the greeting and enters command mode
    /// (`qmp_capabilities`), all within `timeout`.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout("connect".into()))??;
        Self::negotiate(stream, timeout).await
    }

    /// Reads the greeting from an already connected stream and enters command mode.
    pub async fn negotiate(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            line: Vec::new(),
            next_id: 1,
            events: Vec::new(),
            version: Value::Null,
        };
        let greeting = tokio::time::timeout(timeout, qmp.read_message())
            .await
            .map_err(|_| QmpError::Timeout("greeting".into()))??;
        let Some(g) = greeting.get("QMP") else {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        };
        qmp.version = g.get("version").cloned().unwrap_or(Value::Null);
        qmp.execute("qmp_capabilities", None, timeout).await?;
        Ok(qmp)
    }

    /// QEMU's version object from the greeting (`{"qemu":{"major":..},"package":..}`).
    pub fn version(&self) -> &Value {
        &self.version
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        loop {
            // read_until is cancel safe: a partial line stays in `self.line`.
            let n = self.reader.read_until(b'\n', &mut self.line).await?;
            if n == 0 && !self.line.ends_with(b"\n") {
                return Err(QmpError::Closed);
            }
            if !self.line.ends_with(b"\n") {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            return serde_json::from_str(text)
                .map_err(|e| QmpError::Protocol(format!("{e}: {text}")));
        }
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        let fut = async {
            self.writer.write_all(&bytes).await?;
            loop {
                let m = self.read_message().await?;
                if m.get("event").is_some() {
                    if self.events.len() >= MAX_EVENTS {
                        self.events.remove(0);
                    }
                    self.events.push(m);
                    continue;
                }
                if m.get("id").and_then(Value::as_u64) != Some(id) {
                    // A late reply to a command that timed out earlier.
                    continue;
                }
                if let Some(r) = m.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = m.get("error") {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    return Err(QmpError::Command {
                        command: command.to_string(),
                        class: s("class"),
                        desc: s("desc"),
                    });
                }
                return Err(QmpError::Protocol(format!("unexpected reply {m}")));
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| QmpError::Timeout(command.to_string()))?
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, `internal-error`, ...).
    pub async fn query_status(&mut self, timeout: Duration) -> Result<String, QmpError> {
        let r = self.execute("query-status", None, timeout).await?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status returned {r}")))
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub async fn system_powerdown(&mut self, timeout: Duration) -> Result<(), QmpError> {
        self.execute("system_powerdown", None, timeout)
            .await
            .map(|_| ())
    }

    /// `quit`: QEMU exits at once. A closed connection counts as success.
    pub async fn quit(&mut self, timeout: Duration) -> Result<(), QmpError> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
        match self.execute("quit", None, timeout).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if matches!(e.kind(), BrokenPipe | ConnectionReset) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `human-monitor-command`: runs an HMP command (e.g. `savevm ready`) and returns its
    /// output.
    pub async fn human_monitor_command(
        &mut self,
        command_line: &str,
        timeout: Duration,
    ) -> Result<String, QmpError> {
        let r = self
            .execute(
                "human-monitor-command",
                Some(json!({ "command-line": command_line })),
                timeout,
            )
            .await?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }

    /// Events received so far (oldest first), emptying the buffer.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Reads what QEMU still sends until it closes the connection (it is exiting) or
    /// `timeout` passes, and returns every event received, oldest first (emptying the
    /// buffer): how a watcher learns why QEMU ended (`SHUTDOWN`'s `reason`).
    pub async fn events_until_closed(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Ok(msg)) = tokio::time::timeout_at(deadline, self.read_message()).await {
            if msg.get("event").is_some() {
                self.events.push(msg);
            }
        }
        self.take_events()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A fake QEMU: greets, then answers from a script of (expected command, reply lines).
    async fn fake(server: UnixStream, script: Vec<(&'static str, Vec<String>)>) {
        let (r, mut w) = server.into_split();
        let mut r = BufReader::new(r);
        w.write_all(
            b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\r\n",
        )
        .await
        .unwrap();
        for (cmd, replies) in script {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return;
            }
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], cmd);
            let id = v["id"].clone();
            for reply in replies {
                let reply = reply.replace("$ID", &id.to_string());
                w.write_all(reply.as_bytes()).await.unwrap();
                w.write_all(b"\n").await.unwrap();
            }
        }
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest).await;
    }

    #[tokio::test]
    async fn negotiates_matches_ids_and_keeps_events() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(fake(
            b,
            vec![
                (
                    "qmp_capabilities",
                    vec![r#"{"return": {}, "id": $ID}"#.into()],
                ),
                (
                    "query-status",
                    vec![
                        r#"{"event": "RESET", "data": {}}"#.into(),
                        r#"{"return": {"status": "old"}, "id": 999}"#.into(),
                        r#"{"return": {"status": "running", "running": true}, "id": $ID}"#.into(),
                    ],
                ),
                (
                    "human-monitor-command",
                    vec![r#"{"return": "ok\r\n", "id": $ID}"#.into()],
                ),
                (
                    "system_powerdown",
                    vec![
                        r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": $ID}"#.into(),
                    ],
                ),
            ],
        ));
        let t = Duration::from_secs(5);
        let mut q = Qmp::negotiate(a, t).await.unwrap();
        assert_eq!(q.version()["qemu"]["major"], 7);
        assert_eq!(q.query_status(t).await.unwrap(), "running");
        assert_eq!(q.take_events().len(), 1);
        assert_eq!(
            q.human_monitor_command("info status", t).await.unwrap(),
            "ok\r\n"
        );
        let e = q.system_powerdown(t).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "QMP system_powerdown failed: GenericError: nope"
        );
        drop(q);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn times_out_and_reports_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(fake(
            b,
            vec![
                (
                    "qmp_capabilities",
                    vec![r#"{"return": {}, "id": $ID}"#.into()],
                ),
                ("query-status", vec![]),
            ],
        ));
        let mut q = Qmp::negotiate(a, Duration::from_secs(5)).await.unwrap();
        let e = q
            .query_status(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, QmpError::Timeout(_)), "{e}");
        server.abort();
        let _ = server.await;
        let e = q.query_status(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, QmpError::Closed | QmpError::Io(_)), "{e}");
        // quit treats a closed connection as done.
        let mut q2 = {
            let (a, b) = UnixStream::pair().unwrap();
            let s = tokio::spawn(fake(
                b,
                vec![(
                    "qmp_capabilities",
                    vec![r#"{"return": {}, "id": $ID}"#.into()],
                )],
            ));
            let q = Qmp::negotiate(a, Duration::from_secs(5)).await.unwrap();
            s.abort();
            let _ = s.await;
            q
        };
        assert!(q2.quit(Duration::from_secs(5)).await.is_ok());
    }

    #[tokio::test]
    async fn events_are_read_until_qemu_closes_the_monitor() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let (r, mut w) = b.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .await
                .unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            let id = serde_json::from_str::<Value>(&line).unwrap()["id"].clone();
            let lines = [
                format!("{{\"return\": {{}}, \"id\": {id}}}"),
                r#"{"event": "RESET", "data": {"guest": true}}"#.to_string(),
                r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#
                    .to_string(),
            ];
            for l in lines {
                w.write_all(format!("{l}\n").as_bytes()).await.unwrap();
            }
            // QEMU exits: the monitor closes.
        });
        let t = Duration::from_secs(5);
        let mut q = Qmp::negotiate(a, t).await.unwrap();
        server.await.unwrap();
        let events = q.events_until_closed(t).await;
        let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        assert_eq!(names, ["RESET", "SHUTDOWN"]);
        assert_eq!(events[1]["data"]["reason"], "guest-reset");
        assert!(q.take_events().is_empty());
    }
}
