//! The server on loopback, in-process, with its limits shrunk so that each test takes well
//! under a second of waiting. No root needed.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{Limits, serve_with};
use crate::metrics::AgentState;

const SMALL: Limits = Limits {
    max_header_bytes: 8 * 1024,
    header_timeout: Duration::from_millis(400),
    deadline: Duration::from_secs(3),
    max_connections: 4,
    scrapes: 1,
};

fn server(limits: Limits) -> (SocketAddr, Arc<Mutex<AgentState>>) {
    server_with(limits, Registry::default())
}

fn server_with(limits: Limits, registry: Registry) -> (SocketAddr, Arc<Mutex<AgentState>>) {
    let state = Arc::new(Mutex::new(AgentState::default()));
    let addr = serve_with(
        "127.0.0.1:0".parse().expect("addr"),
        registry,
        Arc::clone(&state),
        limits,
    )
    .expect("serve");
    (addr, state)
}

/// Sends `request` as is; returns the whole answer (the server closes after one).
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    conn.write_all(request).expect("send");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).expect("read the answer");
    String::from_utf8(answer).expect("utf-8")
}

fn get(addr: SocketAddr, path: &str, accept: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: agent\r\nAccept: {accept}\r\n\r\n").as_bytes(),
    )
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// `/healthz` answers 200 within a second.
fn assert_healthy(addr: SocketAddr) {
    let started = Instant::now();
    let answer = get(addr, "/healthz", "*/*");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/healthz took {:?}",
        started.elapsed()
    );
}

#[test]
fn paths_methods_and_content_types() {
    let (addr, state) = server(SMALL);
    let a = get(addr, "/healthz", "*/*");
    assert_eq!((status(&a), body(&a)), (200, "ok\n"), "{a}");
    assert_eq!(header(&a, "content-type"), Some("text/plain"));
    assert_eq!(header(&a, "connection"), Some("close"), "one request each");

    let a = get(addr, "/readyz", "*/*");
    assert_eq!((status(&a), body(&a)), (503, "not ready\n"), "{a}");
    state.lock().expect("state").ready = true;
    let a = get(addr, "/readyz?verbose", "*/*");
    assert_eq!((status(&a), body(&a)), (200, "ready\n"), "{a}");

    let a = get(addr, "/metrics", "*/*");
    assert_eq!(status(&a), 200, "{a}");
    assert_eq!(
        header(&a, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let a = get(
        addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
    );
    assert_eq!(status(&a), 200, "{a}");
    assert_eq!(
        header(&a, "content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(body(&a).ends_with("# EOF\n"), "{a}");

    assert_eq!(status(&get(addr, "/", "*/*")), 404);
    assert_eq!(status(&get(addr, "/metricsx", "*/*")), 404);

    let a = exchange(
        addr,
        b"POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status(&a), 405, "{a}");
    assert_eq!(header(&a, "allow"), Some("GET, HEAD"));

    let a = exchange(addr, b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(status(&a), 200, "{a}");
    assert_eq!(header(&a, "content-length"), Some("3"));
    assert_eq!(body(&a), "", "HEAD has no body");

    // HTTP/1.0 without a Host header, as the end-to-end tests' client sends.
    let a = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!((status(&a), body(&a)), (200, "ok\n"), "{a}");
}

#[test]
fn an_oversized_head_is_refused_with_431_without_reading_it() {
    let (addr, _) = server(SMALL);
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    conn.write_all(b"GET /healthz HTTP/1.1\r\nX-Big: ")
        .expect("send");
    // 64 MiB: more than the socket buffers on both sides hold, so sending it all would mean the
    // server read it.
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    let refused = loop {
        if sent >= 64 << 20 {
            break None;
        }
        match conn.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => break Some(e),
        }
    };
    let refused = refused.expect("the server stopped reading and closed");
    assert!(
        matches!(
            refused.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "closed, not stalled: {refused} after {sent} bytes"
    );
    // The 431 itself may be lost to the reset; the next client is served.
    assert_healthy(addr);

    // Just over the limit, sent whole: the answer is 431 before the connection closes.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(SMALL.max_header_bytes)
    );
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = conn.write_all(big.as_bytes());
    let mut answer = [0u8; 64];
    let n = conn.read(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

/// Sends `GET /healthz` and then one byte every 50 ms; returns how long until the server
/// closed the connection (at most `limit`).
fn trickle(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    conn.write_all(b"GET /healthz HTTP/1.1\r\n").expect("send");
    let mut buf = [0u8; 256];
    while started.elapsed() < limit {
        match conn.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // The end, an answer (408, say) or a reset: closed by the server.
            _ => return Some(started.elapsed()),
        }
        if conn.write_all(b"X").is_err() {
            return Some(started.elapsed());
        }
    }
    None
}

#[test]
fn a_trickling_client_is_closed_at_the_header_timeout() {
    let (addr, _) = server(SMALL);
    let slow = std::thread::spawn(move || trickle(addr, Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(100));
    assert_healthy(addr);
    let closed = slow
        .join()
        .expect("slow client")
        .expect("closed by the server");
    assert!(
        closed >= SMALL.header_timeout && closed < SMALL.header_timeout * 3,
        "closed after {closed:?}"
    );
}

#[test]
fn a_connection_ends_at_its_deadline() {
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        deadline: Duration::from_millis(400),
        ..SMALL
    };
    let (addr, _) = server(limits);
    let closed = trickle(addr, Duration::from_secs(3)).expect("closed by the server");
    assert!(
        closed >= limits.deadline && closed < limits.deadline * 3,
        "closed after {closed:?}"
    );
}

#[test]
fn with_every_slot_held_probes_still_answer() {
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        ..SMALL
    };
    let (addr, _) = server(limits);
    // Three times as many idle clients as there are slots, each holding its connection open
    // with half a request.
    let idle: Vec<TcpStream> = (0..limits.max_connections * 3)
        .map(|_| {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
            c.write_all(b"GET /healthz HTTP/1.1\r\n").expect("send");
            c
        })
        .collect();
    for _ in 0..10 {
        assert_healthy(addr);
    }
    // The oldest ones were closed to make room.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let read = first.read(&mut buf);
    assert!(
        matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the oldest idle client was closed: {read:?}"
    );
}

#[test]
fn scrapes_beyond_the_allowed_take_turns() {
    let (addr, _) = server(SMALL);
    let answers: Vec<u16> = std::thread::scope(|s| {
        let scrapes: Vec<_> = (0..SMALL.max_connections)
            .map(|_| s.spawn(move || status(&get(addr, "/metrics", "*/*"))))
            .collect();
        scrapes
            .into_iter()
            .map(|t| t.join().expect("scrape"))
            .collect()
    });
    assert_eq!(answers, vec![200; SMALL.max_connections]);
    assert_healthy(addr);
}

#[test]
fn a_scrape_far_larger_than_a_request_head_arrives_whole() {
    let mut registry = Registry::default();
    let family = Family::<[(&'static str, String); 1], Counter>::default();
    for i in 0..20_000 {
        family.get_or_create(&[("series", format!("{i:08}"))]).inc();
    }
    registry.register("test", "Many series", family);
    let (addr, _) = server_with(SMALL, registry);
    let a = get(addr, "/metrics", "*/*");
    assert_eq!(status(&a), 200);
    let length: usize = header(&a, "content-length")
        .expect("content-length")
        .parse()
        .expect("a number");
    assert!(length > 500_000, "{length} bytes");
    assert_eq!(body(&a).len(), length);
    assert_eq!(
        body(&a)
            .lines()
            .filter(|l| l.starts_with("test_total{"))
            .count(),
        20_000
    );
}
