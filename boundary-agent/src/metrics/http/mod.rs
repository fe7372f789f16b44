//! The agent's HTTP endpoints, `/metrics`, `/healthz` and `/readyz`: HTTP/1.1 by hyper, on a
//! thread with a small tokio runtime of its own.
//!
//! In a `DaemonSet` they listen where Prometheus and the kubelet reach them, so every pod on the
//! node reaches them too. Whatever one client does, the probes must keep answering (a kubelet
//! restarts the pod after a few failed ones) and the agent's memory must stay flat:
//!
//! - **A thread of its own.** The reload loop (`agent/mod.rs`) compiles and applies a policy
//!   on its runtime's only thread, for seconds at 100k rules; probes served there would stall
//!   as long. Apart, a reload delays no probe and no amount of scraping delays a reload.
//! - **A request head is at most [`MAX_HEADER_BYTES`]**, request line included: hyper reads no
//!   more than that, answers 431 and closes. A request body is never read.
//! - **It must arrive within [`HEADER_TIMEOUT`]** of the connection's start, however it
//!   trickles in: a client sending a byte at a time is closed then.
//! - **One request per connection, all of it within [`DEADLINE`]**: reading it, waiting for a
//!   scrape, and writing the answer to a client that may not read it.
//! - **At most [`MAX_CONNECTIONS`] connections, and a new one is always admitted**: when every
//!   slot is taken, the oldest connection is closed to make room (`crate::slots`). A probe sends
//!   its request on connecting and is answered at once, so it is the newest connection, not
//!   the oldest; it could only be closed if that many connections arrived while it was being
//!   answered. Refusing it instead would let whoever holds the slots turn the kubelet away.
//! - **Scrapes off the serving thread.** Reading the maps and encoding take tens of ms at
//!   scale: they run on the runtime's blocking pool, at most [`SCRAPES`] at a time, and a
//!   scrape's permit is held from its encoding until its connection closes, so at most that
//!   many encoded bodies are held however many clients ask and then do not read. `/healthz` touches nothing shared;
//!   `/readyz` waits for the agent state's lock (which a scrape holds while it encodes) without
//!   blocking the thread.

mod routes;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info};

use self::routes::{ScrapeHold, Shared};
use super::AgentState;
use crate::slots::Slots;

/// The largest request head read: request line and headers. Prometheus and the kubelet send
/// well under 1 KiB; 8 KiB is nginx's limit for a header line too.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// How long a client has, from connecting, to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection lives at most, its one request and answer included. Prometheus'
/// default scrape timeout is the same.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; beyond, the oldest is closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Scrapes encoded, or their answers held, at once; more wait for their turn.
pub const SCRAPES: usize = 2;

/// The limits above, as one value so that tests can shrink them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_header_bytes: usize,
    header_timeout: Duration,
    deadline: Duration,
    max_connections: usize,
    scrapes: usize,
}

impl Limits {
    const DEFAULT: Self = Self {
        max_header_bytes: MAX_HEADER_BYTES,
        header_timeout: HEADER_TIMEOUT,
        deadline: DEADLINE,
        max_connections: MAX_CONNECTIONS,
        scrapes: SCRAPES,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server: {source}")]
    Start {
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
    serve_with(addr, registry, state, Limits::DEFAULT)
}

fn serve_with(
    addr: SocketAddr,
    registry: Registry,
    state: Arc<Mutex<AgentState>>,
    limits: Limits,
) -> Result<SocketAddr, HttpError> {
    let bind = |source| HttpError::Bind { addr, source };
    let start = |source| HttpError::Start { source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(limits.scrapes)
        .thread_name("http-scrape")
        .build()
        .map_err(start)?;
    let listener = {
        let _in_runtime = runtime.enter();
        TcpListener::from_std(listener).map_err(bind)?
    };
    let shared = Arc::new(Shared::new(registry, state, limits.scrapes));
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || runtime.block_on(accept(listener, shared, limits)))
        .map_err(start)?;
    info!(address = %bound, "metrics and health endpoints listening");
    Ok(bound)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, limits: Limits) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        // The read buffer too, so a header never grows it past the limit between two checks.
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(false);
    let slots = Slots::new(limits.max_connections);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin on it.
                debug!(error = %e, "http accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (mut slot, evicted) = slots.admit();
        if evicted {
            debug!(
                connections = limits.max_connections,
                "http connection slots all taken: closed the oldest"
            );
        }
        let hold = ScrapeHold::default();
        let shared = Arc::clone(&shared);
        let service =
            service_fn(move |req| routes::respond(req, Arc::clone(&shared), hold.clone()));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            tokio::select! {
                () = slot.evicted() => debug!("http connection closed to make room"),
                served = tokio::time::timeout(limits.deadline, conn) => match served {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "http connection"),
                    Err(_) => debug!("http connection past its deadline"),
                },
            }
        });
    }
}
