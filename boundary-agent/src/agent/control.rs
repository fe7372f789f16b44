//! The local control socket: `<stateDir>/control.sock`, root's alone (mode 0600), HTTP/1.1 by
//! hyper. State-changing CLI commands (`identity revoke`) go through it to the running agent,
//! which alone writes the maps; `identity list` reads through it what only the agent knows
//! (static bindings' IDs). The requests reach the agent's loop as [`Request`]s and are
//! answered from there, between reloads.
//!
//! Routes (JSON answers), here and on the identity endpoint for the SPIFFE IDs in
//! `identity.admins` (the control API over mTLS):
//! - `GET /v1/identities`: every binding, static and earned.
//! - `POST /v1/identities/revoke?target=ID|ADDRESS`: takes earned bindings out.
//! - `POST /v1/reload`: reads the policy file again and applies it (as SIGHUP does).

use std::{
    convert::Infallible,
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Method, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::{
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::{debug, info};

use crate::{datapath::maps::EarnedBinding, timefmt};

/// The socket's name in the state directory.
pub const SOCKET: &str = "control.sock";

/// The socket of an agent whose state directory is `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// One binding, as `identity list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingView {
    pub address: String,
    pub spiffe_id: String,
    /// `static` or `mtls`.
    pub source: String,
    /// RFC 3339, earned bindings only.
    pub expires: Option<String>,
    /// Hex, earned bindings only.
    pub serial: Option<String>,
}

impl BindingView {
    /// An earned binding as listed.
    pub fn earned(b: &EarnedBinding) -> Self {
        use std::fmt::Write as _;
        Self {
            address: b.addr.to_string(),
            spiffe_id: b.id.clone(),
            source: "mtls".to_owned(),
            expires: Some(timefmt::rfc3339(b.expires_at())),
            serial: Some(b.serial.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            })),
        }
    }
}

/// What the agent's loop is asked.
pub enum Request {
    List(oneshot::Sender<Vec<BindingView>>),
    /// An ID (`spiffe://...`) or an address; answered with what was taken out.
    Revoke(String, oneshot::Sender<Result<Vec<BindingView>, String>>),
    /// The policy file read and applied again; answered with whether it was.
    Reload(oneshot::Sender<Result<(), String>>),
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::List(_) => f.write_str("List"),
            Request::Revoke(t, _) => write!(f, "Revoke({t})"),
            Request::Reload(_) => f.write_str("Reload"),
        }
    }
}

/// Listens on `<state_dir>/control.sock` (replacing a stale socket file) and serves on the
/// agent's runtime; requests go to `tx`.
pub fn serve(state_dir: &Path, tx: mpsc::Sender<Request>) -> io::Result<PathBuf> {
    std::fs::create_dir_all(state_dir)?;
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Created with no permission for anyone but the owner from the start: a connect between
    // bind and chmod would otherwise find it open.
    let listener = {
        use nix::sys::stat::{Mode, umask};
        // The mask is the process's: the old one is put back at once.
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = std::os::unix::net::UnixListener::bind(&path);
        umask(old);
        bound?
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    info!(socket = %path.display(), "control socket listening");
    tokio::spawn(accept(listener, tx));
    Ok(path)
}

async fn accept(listener: UnixListener, tx: mpsc::Sender<Request>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .max_buf_size(16 * 1024)
        .keep_alive(false);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(error = %e, "control accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tx = tx.clone();
        let service = service_fn(move |req| respond(req, tx.clone()));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), conn).await {
                debug!(error = %e, "control connection past its deadline");
            }
        });
    }
}

type Answer = hyper::Response<Full<Bytes>>;

fn json(status: StatusCode, body: &impl Serialize) -> Answer {
    let text = serde_json::to_vec(body).unwrap_or_default();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

fn error(status: StatusCode, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

pub(crate) async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    tx: mpsc::Sender<Request>,
) -> Result<Answer, Infallible> {
    let gone = || error(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping");
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/identities") => {
            let (reply, answer) = oneshot::channel();
            if tx.send(Request::List(reply)).await.is_err() {
                return Ok(gone());
            }
            match answer.await {
                Ok(list) => json(StatusCode::OK, &list),
                Err(_) => gone(),
            }
        }
        (&Method::POST, "/v1/identities/revoke") => {
            let target = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("target=")))
                .map(percent_decode);
            // A body is not read, only drained within a bound.
            let _ = Limited::new(req.into_body(), 4096).collect().await;
            let Some(target) = target.filter(|t| !t.is_empty()) else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "give ?target=SPIFFE-ID or ?target=ADDRESS",
                ));
            };
            let (reply, answer) = oneshot::channel();
            if tx.send(Request::Revoke(target, reply)).await.is_err() {
                return Ok(gone());
            }
            match answer.await {
                Ok(Ok(list)) => json(StatusCode::OK, &list),
                Ok(Err(e)) => error(StatusCode::BAD_REQUEST, &e),
                Err(_) => gone(),
            }
        }
        (&Method::POST, "/v1/reload") => {
            let _ = Limited::new(req.into_body(), 4096).collect().await;
            let (reply, answer) = oneshot::channel();
            if tx.send(Request::Reload(reply)).await.is_err() {
                return Ok(gone());
            }
            match answer.await {
                Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({ "reloaded": true })),
                Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
                Err(_) => gone(),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    })
}

/// `%XX` sequences decoded (a SPIFFE ID in a query has its `:` and `/` as they are or encoded).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request to the agent at `socket`: (status, body). Blocking, for the CLI.
pub fn call(socket: &Path, method: &str, path_and_query: &str) -> io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path_and_query} HTTP/1.1\r\nHost: boundary\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no HTTP status"))?;
    Ok((status, body.to_owned()))
}

/// `s` with the characters a query value cannot hold as they are percent-encoded.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_survive_the_query() {
        for t in ["spiffe://example.org/ns/a/sa/b", "10.1.2.3", "fd00::1"] {
            assert_eq!(percent_decode(&percent_encode(t)), t);
        }
    }
}
