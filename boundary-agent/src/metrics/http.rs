//! A small HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz`. One request per
//! connection, bounded request size and time: it serves scrapers and probes, nothing else.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};
use tracing::{debug, info};

use super::AgentState;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr` and serves from a thread of its own. Returns the bound address (the port may
/// have been 0).
pub fn serve(
    addr: SocketAddr,
    registry: Registry,
    state: Arc<Mutex<AgentState>>,
) -> Result<SocketAddr, HttpError> {
    let listener = TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    info!(address = %bound, "metrics and health endpoints listening");
    let registry = Arc::new(registry);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = handle(conn, &registry, &state) {
                    debug!(error = %e, "http connection");
                }
            }
        })
        .map_err(|source| HttpError::Bind { addr, source })?;
    Ok(bound)
}

fn handle(conn: TcpStream, registry: &Registry, state: &Mutex<AgentState>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Headers: only Accept matters. A request larger than 16 KiB is cut off there.
    let mut seen = request_line.len();
    let mut openmetrics = false;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        seen += n;
        if n == 0 || line == "\r\n" || line == "\n" || seen > 16 * 1024 {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("accept")
            && value.contains("application/openmetrics-text")
        {
            openmetrics = true;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        // OpenMetrics for clients that ask for it (Prometheus does), the classic text format
        // (0.0.4) for everything else (curl, promtool).
        ("GET", "/metrics") => {
            let mut body = String::new();
            let (encoded, content_type) = if openmetrics {
                (
                    text::encode(&mut body, registry),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    prometheus_text::encode(&mut body, registry),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            match encoded {
                Ok(()) => ("200 OK", content_type, body),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "metrics encoding failed\n".into(),
                ),
            }
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/readyz") => {
            if state.lock().is_ok_and(|s| s.ready) {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
