//! The loopback HTTP server: checks every request against the [`Spec`], hands allowed ones
//! to a [`Backend`] (an in-memory fake of the service), checks the fake's answers against
//! the response schemas and records everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::spec::Spec;

pub use axum::http::HeaderMap;

/// A request the description allows, as the backend sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation id.
    pub operation: String,
    /// Upper-case method.
    pub method: String,
    /// The path after the API's base path, percent-decoded per segment.
    pub path: String,
    /// Path parameters.
    pub params: BTreeMap<String, String>,
    /// Query parameters (last value wins).
    pub query: BTreeMap<String, String>,
    /// The JSON body.
    pub body: Option<Value>,
    /// The stub's base URL (`http://127.0.0.1:PORT`), for links in answers.
    pub base_url: String,
}

impl Call {
    /// A path parameter.
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: Option<Value>,
    /// Plain text body (when `body` is None).
    pub text: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            text: None,
            headers: Vec::new(),
        }
    }

    /// An empty answer.
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: None,
            text: None,
            headers: Vec::new(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, text: impl Into<String>) -> Reply {
        Reply {
            status,
            body: None,
            text: Some(text.into()),
            headers: Vec::new(),
        }
    }
}

/// An in-memory fake of the service behind the stub.
pub trait Backend: Send + Sync + 'static {
    /// Answers a request the description allows.
    fn handle(&self, call: &Call) -> Reply;
    /// Answers a request outside the description (e.g. a blob URL the API handed out);
    /// None rejects it like any unknown path.
    fn extra(&self, _method: &str, _path: &str, _base_url: &str) -> Option<Reply> {
        None
    }
    /// Checks credentials (headers); Err rejects with 401.
    fn authorize(&self, _headers: &HeaderMap) -> Result<(), String> {
        Ok(())
    }
}

/// One request the stub saw.
#[derive(Debug, Clone)]
pub struct Record {
    /// Method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Query pairs.
    pub query: Vec<(String, String)>,
    /// Body (JSON when it parsed).
    pub body: Option<Value>,
    /// The operation matched.
    pub operation: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Why the request was rejected, when it was.
    pub rejected: Option<String>,
}

struct Shared {
    spec: Arc<Spec>,
    backend: Arc<dyn Backend>,
    base_url: String,
    records: Mutex<Vec<Record>>,
    response_problems: Mutex<Vec<String>>,
}

/// A running stub. Dropping it stops the server.
pub struct Stub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                urlencoding::decode(&s.replace('+', " "))
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|_| s.to_string())
            };
            (dec(k), dec(v))
        })
        .collect()
}

async fn serve(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query());
    let mut record = Record {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: serde_json::from_slice(&body).ok(),
        operation: None,
        status: 0,
        rejected: None,
    };
    let reply = if let Some(r) = sh.backend.extra(method.as_str(), &path, &sh.base_url) {
        r
    } else if let Err(why) = sh.backend.authorize(&headers) {
        record.rejected = Some(format!("unauthorized: {why}"));
        Reply::json(
            401,
            json!({"error": {"code": "Unauthorized", "message": why}}),
        )
    } else {
        match sh.spec.check_request(method.as_str(), &path, &query, &body) {
            Err(problems) => {
                let msg = problems.join("\n  ");
                tracing::warn!("stub rejected a request: {msg}");
                record.rejected = Some(msg.clone());
                Reply::json(
                    400,
                    json!({"error": {"code": "RequestRejectedByDescription", "message": msg}}),
                )
            }
            Ok(m) => {
                record.operation = Some(m.operation.clone());
                let rel = path
                    .strip_prefix(sh.spec.base_path.as_str())
                    .unwrap_or(&path)
                    .split('/')
                    .map(|s| {
                        urlencoding::decode(s)
                            .map(|c| c.into_owned())
                            .unwrap_or_else(|_| s.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let call = Call {
                    operation: m.operation.clone(),
                    method: method.to_string(),
                    path: rel,
                    params: m.path_params,
                    query: query.iter().cloned().collect(),
                    body: serde_json::from_slice(&body).ok(),
                    base_url: sh.base_url.clone(),
                };
                let reply = sh.backend.handle(&call);
                if let Some(b) = &reply.body {
                    let problems = sh.spec.check_response(&m.operation, reply.status, b);
                    if !problems.is_empty() {
                        sh.response_problems.lock().expect("poisoned").push(format!(
                            "{} {}: {}",
                            m.operation,
                            reply.status,
                            problems.join("; ")
                        ));
                    }
                }
                reply
            }
        }
    };
    record.status = reply.status;
    sh.records.lock().expect("poisoned").push(record);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match (reply.body, reply.text) {
        (Some(b), _) => (status, axum::Json(b)).into_response(),
        (None, Some(t)) => (status, t).into_response(),
        (None, None) => status.into_response(),
    };
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

impl Stub {
    /// Starts the stub on a free port of 127.0.0.1.
    pub async fn start(spec: Arc<Spec>, backend: Arc<dyn Backend>) -> std::io::Result<Stub> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            spec,
            backend,
            base_url: format!("http://{addr}"),
            records: Mutex::new(Vec::new()),
            response_problems: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Stub { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The URL clients use as the API's base (`url()` + the description's base path).
    pub fn api_url(&self) -> String {
        format!("{}{}", self.shared.base_url, self.shared.spec.base_path)
    }

    /// Every request seen so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared.records.lock().expect("poisoned").clone()
    }

    /// The requests that were rejected, with why.
    pub fn rejections(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .filter_map(|r| {
                r.rejected
                    .map(|why| format!("{} {}: {why}", r.method, r.path))
            })
            .collect()
    }

    /// Answers of the fake that do not match the description's response schemas.
    pub fn response_problems(&self) -> Vec<String> {
        self.shared
            .response_problems
            .lock()
            .expect("poisoned")
            .clone()
    }

    /// The calls of one operation (allowed ones).
    pub fn calls(&self, operation: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.operation.as_deref() == Some(operation))
            .collect()
    }
}
