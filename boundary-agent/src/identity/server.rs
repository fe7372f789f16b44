//! The mTLS identity endpoint: TLS 1.3 by tokio-rustls, on a thread with a 2-worker tokio
//! runtime of its own (apart from the agent's reload loop, like the metrics endpoint).
//!
//! Per connection: the handshake must complete within [`HANDSHAKE_TIMEOUT`]; a failure is
//! counted by `(result, reason)` and logged with the reason and peer address (at most
//! [`throttle::LINES_PER_SECOND`] lines a second, the rest summed up once a second). A verified
//! peer is sent to the binding side as a [`BindRequest`] and the answer counted. The peer is
//! bound once the handshake completes, whether or not it then sends anything (`openssl
//! s_client`); a client that sends an HTTP/1.1 request (`curl`, `identity register`) is
//! answered on `/v1/register` (GET or POST): 200 with `{"spiffeId", "address", "expires",
//! "expiresUnix"}` when bound, 409 on an address conflict, 403 when the policy binds the
//! address to another ID, 503 when the binding side cannot act; 404 elsewhere.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections, the oldest closed for a newcomer
//! (`slots.rs` says why); a request head of at most [`MAX_HEADER_BYTES`] within
//! [`HEADER_TIMEOUT`] of the handshake; each connection closed [`DEADLINE`] after its
//! handshake at the latest. No session resumption: every connection proves its certificate.
//!
//! The trust files are polled every [`POLL_INTERVAL`] on the same runtime; certificates a new
//! CRL lists are sent to the agent as [`Revoked`].

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::{debug, info, warn};

use crate::slots::{Slot, Slots};

use super::{
    Attested, BindOutcome, BindRequest, Rejection, Revoked, Stats, duration::rfc3339,
    stats::outcome_labels, svid, throttle::LogThrottle, trust::TrustStore,
};

/// How long a client has to complete the TLS handshake, from its connection's acceptance.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the binding side has to answer a request.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; beyond, the oldest is closed.
pub const MAX_CONNECTIONS: usize = 512;
/// The largest request head read after the handshake.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// How long a client has, after the handshake, to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection lives after its handshake at most.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often the trust files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The endpoint runtime's worker threads.
pub const WORKERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the identity endpoint: {source}")]
    Start {
        #[source]
        source: std::io::Error,
    },
}

/// The control API over mTLS: the SPIFFE IDs allowed to use it, and the agent's control
/// channel (the one its local socket feeds). An admin's handshake binds nothing: it is an
/// operator's identity, not a workload's.
#[derive(Debug, Clone)]
pub struct Control {
    pub admins: Vec<String>,
    pub tx: mpsc::Sender<crate::agent::control::Request>,
}

/// What every connection's task shares.
#[derive(Debug)]
struct Shared {
    control: Option<Control>,
    trust: Arc<TrustStore>,
    binds: mpsc::Sender<BindRequest>,
    stats: Arc<Stats>,
    /// Rejections and conflicts logged.
    refusals: LogThrottle,
    /// Bindings logged.
    bindings: LogThrottle,
}

/// Binds `addr` and serves the identity endpoint from a thread of its own. Verified peers are
/// sent on `binds`; certificates that a reloaded CRL newly lists, on `revoked`. Returns the
/// bound address (the port may have been 0).
pub fn serve(
    addr: SocketAddr,
    trust: Arc<TrustStore>,
    binds: mpsc::Sender<BindRequest>,
    revoked: mpsc::Sender<Revoked>,
    stats: Arc<Stats>,
) -> Result<SocketAddr, ServeError> {
    serve_with_control(addr, trust, binds, revoked, stats, None)
}

/// As [`serve`], with the control API for `control`'s admins.
pub fn serve_with_control(
    addr: SocketAddr,
    trust: Arc<TrustStore>,
    binds: mpsc::Sender<BindRequest>,
    revoked: mpsc::Sender<Revoked>,
    stats: Arc<Stats>,
    control: Option<Control>,
) -> Result<SocketAddr, ServeError> {
    let bind = |source| ServeError::Bind { addr, source };
    let start = |source| ServeError::Start { source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_io()
        .enable_time()
        .thread_name("identity")
        .build()
        .map_err(start)?;
    let listener = {
        let _in_runtime = runtime.enter();
        TcpListener::from_std(listener).map_err(bind)?
    };
    let shared = Arc::new(Shared {
        control,
        trust,
        binds,
        stats,
        refusals: LogThrottle::default(),
        bindings: LogThrottle::default(),
    });
    std::thread::Builder::new()
        .name("identity".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(poll(Arc::clone(&shared), revoked));
                accept(listener, shared).await;
            });
        })
        .map_err(start)?;
    info!(address = %bound, "identity endpoint listening (mTLS)");
    Ok(bound)
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin on it.
                debug!(error = %e, "identity accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small writes in a row (the handshake's flights, the answer, close_notify): not held
        // back for an acknowledgement.
        let _ = stream.set_nodelay(true);
        let (slot, evicted) = slots.admit();
        if evicted {
            debug!(
                connections = MAX_CONNECTIONS,
                "identity connection slots all taken: closed the oldest"
            );
        }
        tokio::spawn(connection(stream, peer, Arc::clone(&shared), slot));
    }
}

/// The trust files' reload, and the summary of log lines the throttles held back.
async fn poll(shared: Arc<Shared>, revoked: mpsc::Sender<Revoked>) {
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (throttle, what) in [
            (&shared.refusals, "refused handshakes"),
            (&shared.bindings, "bindings"),
        ] {
            let n = throttle.take_suppressed();
            if n > 0 {
                warn!(
                    suppressed = n,
                    "identity: {n} log lines about {what} suppressed in the last second (the counters have them all)"
                );
            }
        }
        let trust = Arc::clone(&shared.trust);
        // File reads and parsing: off the workers that run handshakes.
        let polled = tokio::task::spawn_blocking(move || trust.poll()).await;
        match polled {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(reload))) => {
                let n = reload.newly_revoked;
                info!(
                    newly_revoked = n,
                    trust_domain = %shared.trust.trust_domain(),
                    "identity: trust bundle, CRL or agent certificate reloaded"
                );
                // Every reload: a CA taken out of the bundle ends its bindings too.
                if revoked.send(reload.state).await.is_err() {
                    warn!("identity: nothing receives revocations any more");
                }
            }
            Ok(Err(e)) => warn!(
                error = %e,
                "identity: reload refused, the previous trust bundle, CRL and certificate stay in use"
            ),
            Err(e) => warn!(error = %e, "identity: reload panicked"),
        }
    }
}

/// The address a peer is bound by: an IPv4-mapped IPv6 address (a dual-stack listener's view
/// of an IPv4 peer) as the IPv4 address the datapath sees.
pub fn peer_address(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The rejection a failed handshake's I/O error stands for.
fn rejection_of(e: &std::io::Error) -> Rejection {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or(Rejection::OtherTls, Rejection::from_tls_error)
}

async fn connection(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>, mut slot: Slot) {
    let peer = peer_address(peer.ip());
    let started = Instant::now();
    let acceptor = TlsAcceptor::from(shared.trust.server_config());
    let handshake = tokio::select! {
        () = slot.evicted() => Err(Rejection::Evicted),
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match done {
            Err(_) => Err(Rejection::HandshakeTimeout),
            Ok(Err(e)) => Err(rejection_of(&e)),
            Ok(Ok(tls)) => Ok(tls),
        },
    };
    shared.stats.observe_handshake(started.elapsed());
    let attested = handshake.and_then(|tls| {
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first)
            .ok_or(Rejection::NoClientCert)?;
        // Verified already; parsed again for the values the binding needs.
        let svid = svid::check_leaf(leaf, &shared.trust.trust_domain())?;
        let presented = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let chain = svid::chain_of(presented)?;
        Ok((
            tls,
            Attested {
                peer,
                id: svid.id,
                serial: svid.serial,
                issuer: svid.issuer,
                not_after: chain.not_after.min(svid.not_after),
                chain: chain.links,
                anchor: chain.anchor,
            },
        ))
    });
    let (tls, attested) = match attested {
        Ok(ok) => ok,
        Err(r) => {
            shared.stats.count(r.result(), r.reason());
            if shared.refusals.allow() {
                if r.result() == "tls_error" {
                    info!(peer = %peer, reason = r.reason(), result = r.result(), "identity handshake failed: {r}");
                } else {
                    warn!(peer = %peer, reason = r.reason(), result = r.result(), "identity handshake refused: {r}");
                }
            }
            return;
        }
    };
    let id = attested.id.to_string();
    if let Some(control) = shared.control.as_ref().filter(|c| c.admins.contains(&id)) {
        shared.stats.count("ok", "admin");
        info!(peer = %peer, spiffe_id = %id, "identity: control API connection");
        let tx = control.tx.clone();
        tokio::select! {
            () = slot.evicted() => debug!("identity connection closed to make room"),
            served = tokio::time::timeout(DEADLINE, answer_control(tls, tx)) => if let Ok(Err(e)) = served {
                debug!(error = %e, "identity control connection");
            },
        }
        return;
    }
    let outcome = bind(&shared.binds, attested).await;
    let (result, reason) = outcome_labels(&outcome);
    shared.stats.count(result, reason);
    match &outcome {
        BindOutcome::Bound { expires } => {
            if shared.bindings.allow() {
                info!(peer = %peer, spiffe_id = %id, expires = %rfc3339(*expires), "identity: bound");
            }
        }
        refused => {
            if shared.refusals.allow() {
                warn!(peer = %peer, spiffe_id = %id, result, reason, "identity: not bound: {refused:?}");
            }
        }
    }
    let answer = Arc::new(Answer { id, peer, outcome });
    tokio::select! {
        () = slot.evicted() => debug!("identity connection closed to make room"),
        served = tokio::time::timeout(DEADLINE, answer_http(tls, answer)) => match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "identity connection"),
            Err(_) => debug!("identity connection past its deadline"),
        },
    }
}

/// Asks the binding side; whatever goes wrong on the way is `Unavailable`.
async fn bind(binds: &mpsc::Sender<BindRequest>, attested: Attested) -> BindOutcome {
    let (reply, answer) = oneshot::channel();
    let asked = async {
        binds
            .send(BindRequest { attested, reply })
            .await
            .map_err(|_| "the binding side is not running")?;
        answer
            .await
            .map_err(|_| "the binding side dropped the request")
    };
    match tokio::time::timeout(BIND_TIMEOUT, asked).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(why)) => BindOutcome::Unavailable(why.into()),
        Err(_) => BindOutcome::Unavailable("the binding side did not answer in time".into()),
    }
}

/// What a connection's HTTP request, if any, is answered.
#[derive(Debug)]
struct Answer {
    id: String,
    peer: IpAddr,
    outcome: BindOutcome,
}

async fn answer_http(tls: TlsStream<TcpStream>, answer: Arc<Answer>) -> Result<(), hyper::Error> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let service = service_fn(move |req| {
        let answer = Arc::clone(&answer);
        async move { Ok::<_, Infallible>(respond(&req, &answer)) }
    });
    http.serve_connection(TokioIo::new(tls), service).await
}

/// An admin's connection: the control API's routes (`agent/control.rs`), as on the local
/// socket.
async fn answer_control(
    tls: TlsStream<TcpStream>,
    tx: mpsc::Sender<crate::agent::control::Request>,
) -> Result<(), hyper::Error> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(false);
    let service = service_fn(move |req| crate::agent::control::respond(req, tx.clone()));
    http.serve_connection(TokioIo::new(tls), service).await
}

fn respond<B>(req: &Request<B>, answer: &Answer) -> Response<Full<Bytes>> {
    if req.uri().path().starts_with("/v1/identities") || req.uri().path() == "/v1/reload" {
        return json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "not_an_admin", "detail": "the control API takes the SPIFFE IDs in identity.admins"}),
        );
    }
    if req.uri().path() != "/v1/register" {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "detail": "try POST /v1/register"}),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed", "detail": "GET or POST"}),
        );
    }
    let (id, address) = (&answer.id, answer.peer.to_string());
    match &answer.outcome {
        BindOutcome::Bound { expires } => json(
            StatusCode::OK,
            &serde_json::json!({
                "spiffeId": id,
                "address": address,
                "expires": rfc3339(*expires),
                "expiresUnix": expires
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            }),
        ),
        BindOutcome::Conflict { holder } => json(
            StatusCode::CONFLICT,
            &serde_json::json!({
                "error": "address_conflict",
                "spiffeId": id,
                "address": address,
                "holder": holder.to_string(),
            }),
        ),
        BindOutcome::StaticElsewhere => json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({
                "error": "static_binding",
                "spiffeId": id,
                "address": address,
                "detail": "the policy binds this address to another identity",
            }),
        ),
        BindOutcome::Unavailable(why) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "error": "unavailable",
                "spiffeId": id,
                "address": address,
                "detail": why,
            }),
        ),
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
