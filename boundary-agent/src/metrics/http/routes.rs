//! What each request is answered: the paths, methods, status codes and content types.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError, TryLockError},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
};
use prometheus_client::{
    encoding::{prometheus_text, text},
    registry::Registry,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::AgentState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const PLAIN: &str = "text/plain";

/// What every connection's handler shares.
#[derive(Debug)]
pub struct Shared {
    registry: Registry,
    state: Arc<Mutex<AgentState>>,
    scrapes: Arc<Semaphore>,
}

impl Shared {
    /// `scrapes`: how many scrapes may be encoded, or their answers held, at once.
    pub fn new(registry: Registry, state: Arc<Mutex<AgentState>>, scrapes: usize) -> Self {
        Self {
            registry,
            state,
            scrapes: Arc::new(Semaphore::new(scrapes)),
        }
    }
}

/// Keeps a connection's scrape permit until the connection closes, so that an encoded body
/// waiting for a client that does not read it still counts against the scrapes allowed at once.
#[derive(Debug, Clone, Default)]
pub struct ScrapeHold(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl ScrapeHold {
    fn keep(&self, permit: OwnedSemaphorePermit) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(permit);
    }
}

/// Answers one request. The request body, if any, is never read.
pub async fn respond<B>(
    req: Request<B>,
    shared: Arc<Shared>,
    hold: ScrapeHold,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // HEAD is GET without the body (hyper leaves it out and keeps Content-Length).
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match req.uri().path() {
        "/metrics" => {
            // OpenMetrics for clients that ask for it (Prometheus does), the classic text
            // format (0.0.4) for everything else (curl, promtool).
            let openmetrics = req.headers().get_all(ACCEPT).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.contains("application/openmetrics-text"))
            });
            metrics(&shared, openmetrics, &hold).await
        }
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if ready(&shared.state).await {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    })
}

/// Reads the maps and encodes them on the blocking pool: that takes tens of ms at scale, and
/// the thread every connection is served on must not wait for it.
async fn metrics(
    shared: &Arc<Shared>,
    openmetrics: bool,
    hold: &ScrapeHold,
) -> Response<Full<Bytes>> {
    let Ok(permit) = Arc::clone(&shared.scrapes).acquire_owned().await else {
        unreachable!("the scrape semaphore is never closed");
    };
    let s = Arc::clone(shared);
    // The permit goes with the encoding and comes back with the body: a connection closed
    // meanwhile cannot free it for another encoding while this one still runs.
    let encoded = tokio::task::spawn_blocking(move || {
        let mut body = String::new();
        let encoded = if openmetrics {
            text::encode(&mut body, &s.registry).map(|()| (body, OPENMETRICS))
        } else {
            prometheus_text::encode(&mut body, &s.registry).map(|()| (body, PROMETHEUS_TEXT))
        };
        (encoded, permit)
    })
    .await
    .map(|(encoded, permit)| {
        hold.keep(permit);
        encoded
    });
    match encoded {
        Ok(Ok((body, content_type))) => response(StatusCode::OK, content_type, body),
        _ => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        ),
    }
}

/// Whether the agent is ready. A scrape holds the state's lock while it encodes: wait for it
/// without blocking the thread every connection is served on.
async fn ready(state: &Mutex<AgentState>) -> bool {
    loop {
        let ready = match state.try_lock() {
            Ok(s) => Some(s.ready),
            // Something panicked while updating the state: say not ready, as before.
            Err(TryLockError::Poisoned(_)) => Some(false),
            Err(TryLockError::WouldBlock) => None,
        };
        match ready {
            Some(ready) => return ready,
            None => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, PLAIN, body)
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
