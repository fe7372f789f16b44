//! Real applications in lab namespaces, for the end-to-end tests with real traffic and the
//! demo: a bulk TCP server and client that move a known byte stream and check every byte, a
//! large-datagram UDP echo, a DNS-shaped UDP responder, Python's HTTP server, curl and ethtool.
//!
//! Every server stops on drop; child processes are stopped by their own PID. Waits are stall
//! detectors (a socket that stays silent for seconds), never measurements.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};
use sha2::{Digest as _, Sha256};

use crate::netns::NetNs;

/// How long a socket may stay silent before a transfer counts as stalled.
pub const STALL: Duration = Duration::from_secs(10);

/// How long a UDP client waits for an answer before it counts as lost.
pub const UDP_WAIT: Duration = Duration::from_secs(2);

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// The known byte stream
// ---------------------------------------------------------------------------------------------

/// Bytes per block of the test stream: a prime, so that no segment, page or datagram boundary
/// lines up with a block and a shifted, repeated or dropped piece can never compare equal.
const BLOCK: usize = 65_521;

/// A deterministic byte stream: block `k` is one pseudo-random block whose first eight bytes
/// are replaced by `k`. Checking a transfer against it is a `memcmp` per read, so even a debug
/// build checks hundreds of MiB per second, and a piece delivered twice, out of order or from
/// the wrong offset never matches.
pub struct Stream {
    base: Vec<u8>,
}

impl Default for Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Stream {
    pub fn new() -> Self {
        // xorshift64*: any fixed sequence would do; this one has no runs or short cycles.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base = (0..BLOCK)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()[7]
            })
            .collect();
        Self { base }
    }

    /// Writes the stream's bytes at `offset..offset + out.len()` into `out`.
    pub fn fill(&self, offset: u64, out: &mut [u8]) {
        let block = BLOCK as u64;
        let mut done = 0;
        while done < out.len() {
            let at = offset + done as u64;
            let k = at / block;
            let within = usize::try_from(at % block).expect("below BLOCK");
            let n = (BLOCK - within).min(out.len() - done);
            let piece = &mut out[done..done + n];
            piece.copy_from_slice(&self.base[within..within + n]);
            // The block number over the block's first eight bytes.
            let stamp = k.to_le_bytes();
            for (i, b) in piece
                .iter_mut()
                .enumerate()
                .take(8_usize.saturating_sub(within))
            {
                *b = stamp[within + i];
            }
            done += n;
        }
    }

    /// Whether `data` is exactly the stream's bytes at `offset`.
    pub fn matches(&self, offset: u64, data: &[u8], scratch: &mut Vec<u8>) -> bool {
        scratch.resize(data.len(), 0);
        self.fill(offset, scratch);
        scratch.as_slice() == data
    }
}

/// Writes `len` bytes of the stream at offset 0 to `path` (a file for the HTTP server) and
/// returns its SHA-256 digest, as lower-case hex.
pub fn write_stream_file(path: &Path, len: u64) -> String {
    let stream = Stream::new();
    let mut file = std::fs::File::create(path).expect("create stream file");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; usize::try_from(MIB).expect("fits")];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(MIB)).expect("fits");
        stream.fill(at, &mut buf[..n]);
        file.write_all(&buf[..n]).expect("write stream file");
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    hex(&hasher.finalize())
}

/// SHA-256 of a file's contents, as lower-case hex, and its size.
pub fn file_digest(path: &Path) -> (u64, String) {
    let mut file = std::fs::File::open(path).expect("open file to digest");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf).expect("read file to digest");
        if n == 0 {
            return (size, hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// "12.5 MiB" for messages.
pub fn mib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a figure for a message")]
    let m = bytes as f64 / MIB as f64;
    format!("{m:.2} MiB")
}

// ---------------------------------------------------------------------------------------------
// Bulk TCP
// ---------------------------------------------------------------------------------------------

const OP_DOWNLOAD: u8 = b'D';
const OP_UPLOAD: u8 = b'U';

/// A TCP server in a namespace speaking a two-command protocol. The client sends one byte and
/// a little-endian `u64` length: `D` (download) gets that many bytes of the [`Stream`] and then
/// end of stream; `U` (upload) sends that many bytes of it and half-closes, and the server
/// answers with the number of bytes it received and one byte, `1` when every byte matched the
/// stream. A connection per thread; stops accepting on drop.
pub struct BulkServer {
    pub addr: SocketAddr,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl BulkServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &NetNs, addr: SocketAddr) -> Self {
        let listener = Arc::new(ns.run(|| TcpListener::bind(addr).expect("bind bulk server")));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (Arc::clone(&listener), Arc::clone(&stop));
        let acceptor = std::thread::spawn(move || {
            let stream = Arc::new(Stream::new());
            for conn in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let stream = Arc::clone(&stream);
                // Detached: every socket call has a timeout, so the thread ends on its own.
                std::thread::spawn(move || serve_bulk(conn, &stream));
            }
        });
        Self {
            addr,
            listener,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for BulkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting a listening socket down wakes a blocked accept() (it returns EINVAL).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn serve_bulk(mut conn: TcpStream, stream: &Stream) {
    let _ = conn.set_read_timeout(Some(STALL));
    let _ = conn.set_write_timeout(Some(STALL));
    let mut head = [0u8; 9];
    if conn.read_exact(&mut head).is_err() {
        return;
    }
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    match head[0] {
        OP_DOWNLOAD => {
            let _ = send_stream(&mut conn, stream, len);
            let _ = conn.shutdown(Shutdown::Write);
        }
        OP_UPLOAD => {
            let (got, intact) = receive_stream(&mut conn, stream, len);
            let mut answer = [0u8; 9];
            answer[..8].copy_from_slice(&got.to_le_bytes());
            answer[8] = if intact { b'1' } else { b'0' };
            let _ = conn.write_all(&answer);
        }
        _ => {}
    }
}

/// An I/O error on a TCP socket (timeouts [`STALL`]) for a message.
fn io_error(e: &std::io::Error) -> String {
    io_error_after(e, STALL)
}

/// An I/O error for a message; a socket timeout (`wait`) says what it means.
fn io_error_after(e: &std::io::Error, wait: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("nothing moved for {} s", wait.as_secs())
        }
        _ => e.to_string(),
    }
}

fn send_stream(conn: &mut TcpStream, stream: &Stream, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).expect("fits");
        stream.fill(at, &mut buf[..n]);
        conn.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Reads until end of stream (or `len` bytes, or an error); returns the byte count and whether
/// every byte read matched the stream.
fn receive_stream(conn: &mut TcpStream, stream: &Stream, len: u64) -> (u64, bool) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut scratch = Vec::new();
    let mut got = 0;
    let mut intact = true;
    while got < len {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                intact &= stream.matches(got, &buf[..n], &mut scratch);
                got += n as u64;
            }
        }
    }
    (got, intact)
}

/// Connects from `ns` to `to` (the socket lives in `ns`).
fn connect(ns: &NetNs, to: SocketAddr) -> Result<TcpStream, String> {
    let conn = ns
        .run(|| TcpStream::connect_timeout(&to, STALL))
        .map_err(|e| format!("connect to {to}: {e}"))?;
    conn.set_read_timeout(Some(STALL)).expect("timeout");
    conn.set_write_timeout(Some(STALL)).expect("timeout");
    Ok(conn)
}

/// Downloads `len` bytes of the stream from a [`BulkServer`] at `to`, from inside `ns`, and
/// checks each of them. `Err` says what went wrong and how far the transfer got.
pub fn download(ns: &NetNs, to: SocketAddr, len: u64) -> Result<(), String> {
    let mut conn = connect(ns, to)?;
    let mut head = [OP_DOWNLOAD; 9];
    head[1..].copy_from_slice(&len.to_le_bytes());
    conn.write_all(&head)
        .map_err(|e| format!("send request to {to}: {e}"))?;
    let stream = Stream::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut scratch = Vec::new();
    let mut got = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !stream.matches(got, &buf[..n], &mut scratch) {
                    return Err(format!("corrupt bytes at offset {got} (a read of {n})"));
                }
                got += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "stalled after {} of {}: {}",
                    mib(got),
                    mib(len),
                    io_error(&e)
                ));
            }
        }
    }
    if got == len {
        Ok(())
    } else {
        Err(format!(
            "connection closed after {} of {}",
            mib(got),
            mib(len)
        ))
    }
}

/// Uploads `len` bytes of the stream to a [`BulkServer`] at `to`, from inside `ns`; `Ok` when
/// the server received every byte intact.
pub fn upload(ns: &NetNs, to: SocketAddr, len: u64) -> Result<(), String> {
    let mut conn = connect(ns, to)?;
    let mut head = [OP_UPLOAD; 9];
    head[1..].copy_from_slice(&len.to_le_bytes());
    conn.write_all(&head)
        .map_err(|e| format!("send request to {to}: {e}"))?;
    let stream = Stream::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).expect("fits");
        stream.fill(at, &mut buf[..n]);
        conn.write_all(&buf[..n]).map_err(|e| {
            format!(
                "stalled after sending {} of {}: {}",
                mib(at),
                mib(len),
                io_error(&e)
            )
        })?;
        at += n as u64;
    }
    conn.shutdown(Shutdown::Write)
        .map_err(|e| format!("half-close: {e}"))?;
    let mut answer = [0u8; 9];
    conn.read_exact(&mut answer)
        .map_err(|e| format!("no answer from the server: {}", io_error(&e)))?;
    let got = u64::from_le_bytes(answer[..8].try_into().expect("8 bytes"));
    match (got == len, answer[8] == b'1') {
        (true, true) => Ok(()),
        (_, false) => Err("the server received corrupt bytes".to_owned()),
        (false, true) => Err(format!("the server received {} of {}", mib(got), mib(len))),
    }
}

/// Opens `count` connections from `ns` to a [`BulkServer`] at `to`, all at once, then sends
/// each a download request of `len` bytes and reads every answer. Returns the errors, one line
/// per failed connection.
pub fn concurrent_requests(ns: &NetNs, to: SocketAddr, count: usize, len: u64) -> Vec<String> {
    let mut errors = Vec::new();
    let mut conns = Vec::new();
    for i in 0..count {
        match connect(ns, to) {
            Ok(c) => conns.push((i, c)),
            Err(e) => errors.push(format!("connection {i}: {e}")),
        }
    }
    let mut head = [OP_DOWNLOAD; 9];
    head[1..].copy_from_slice(&len.to_le_bytes());
    conns.retain_mut(|(i, c)| match c.write_all(&head) {
        Ok(()) => true,
        Err(e) => {
            errors.push(format!("connection {i}: send request: {e}"));
            false
        }
    });
    let stream = Stream::new();
    let mut scratch = Vec::new();
    let mut stalled = false;
    for (i, mut c) in conns {
        if stalled {
            // Every answer was sent at once and the others have waited as long as the one that
            // stalled: what has not arrived by now is not coming.
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
        }
        let mut body = Vec::new();
        let read = c.read_to_end(&mut body);
        stalled |= matches!(&read, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        match read {
            Ok(_) if body.len() as u64 == len && stream.matches(0, &body, &mut scratch) => {}
            Ok(_) => errors.push(format!(
                "connection {i}: answer of {} bytes, not the {len} expected ones",
                body.len()
            )),
            Err(e) => errors.push(format!("connection {i}: read answer: {}", io_error(&e))),
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------------------------

/// A UDP server in a namespace, answering each datagram with `answer(datagram)` (no answer for
/// `None`), until dropped.
pub struct UdpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpServer {
    pub fn start(
        ns: &NetNs,
        addr: SocketAddr,
        answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        Self::start_with(ns, addr, None, answer)
    }

    /// [`UdpServer::start`], with `UDP_SEGMENT` set to `gso_segment` on the socket when given.
    pub fn start_with(
        ns: &NetNs,
        addr: SocketAddr,
        gso_segment: Option<u16>,
        answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        let sock = ns.run(|| UdpSocket::bind(addr).expect("bind udp server"));
        if let Some(segment) = gso_segment {
            nix::sys::socket::setsockopt(
                &sock,
                nix::sys::socket::sockopt::UdpGsoSegment,
                &i32::from(segment),
            )
            .expect("setsockopt UDP_SEGMENT");
        }
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf)
                    && let Some(reply) = answer(&buf[..n])
                {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Answers each request (a little-endian `u32`, a byte count) with that many bytes of the
    /// [`Stream`] in one `send` on a socket with `UDP_SEGMENT` set to `segment`: the kernel
    /// hands the interface one GSO packet that is cut into datagrams of `segment` bytes only
    /// at the receiving end, as QUIC servers send.
    pub fn gso_burst(ns: &NetNs, addr: SocketAddr, segment: u16) -> Self {
        let stream = Stream::new();
        Self::start_with(ns, addr, Some(segment), move |q| {
            let len = u32::from_le_bytes(q.try_into().ok()?);
            let mut out = vec![0u8; usize::try_from(len).ok()?];
            stream.fill(0, &mut out);
            Some(out)
        })
    }

    /// Echoes every datagram back as it came.
    pub fn echo(ns: &NetNs, addr: SocketAddr) -> Self {
        Self::start(ns, addr, |d| Some(d.to_vec()))
    }

    /// Answers DNS queries for `name` (type A or AAAA, class IN) with `v4` or `v6`; anything
    /// else gets no answer.
    pub fn dns(ns: &NetNs, addr: SocketAddr, name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Self {
        let name = name.to_owned();
        Self::start(ns, addr, move |q| dns_answer(q, &name, v4, v6))
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `count` datagrams of `size` bytes (each a different piece of the stream) from `ns`
/// to the echo server at `to`, one at a time, and checks that each comes back whole and
/// unchanged. `Err` lists what went wrong.
pub fn udp_echo_checked(ns: &NetNs, to: SocketAddr, count: u64, size: usize) -> Result<(), String> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = ns.run(|| UdpSocket::bind(SocketAddr::new(any, 0)).expect("bind udp client"));
    sock.connect(to).expect("connect udp");
    sock.set_read_timeout(Some(UDP_WAIT)).expect("timeout");
    let stream = Stream::new();
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size + 1];
    let mut scratch = Vec::new();
    let mut failures = Vec::new();
    for i in 0..count {
        let offset = i * size as u64;
        stream.fill(offset, &mut out);
        sock.send(&out).map_err(|e| format!("send to {to}: {e}"))?;
        match sock.recv(&mut back) {
            Ok(n) if n == size && stream.matches(offset, &back[..n], &mut scratch) => {}
            Ok(n) => failures.push(format!("datagram {i}: {n} bytes back, changed")),
            Err(e) => failures.push(format!("datagram {i}: no echo: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {count} datagrams of {size} bytes to {to} failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}

/// Asks the [`UdpServer::gso_burst`] server at `to` (from inside `ns`) for `total` bytes and
/// checks that they arrive as consecutive datagrams of `segment` bytes (the last one shorter),
/// each exactly its piece of the stream.
pub fn udp_gso_download(
    ns: &NetNs,
    to: SocketAddr,
    total: u32,
    segment: u16,
) -> Result<(), String> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = ns.run(|| UdpSocket::bind(SocketAddr::new(any, 0)).expect("bind udp client"));
    sock.connect(to).expect("connect udp");
    sock.set_read_timeout(Some(UDP_WAIT)).expect("timeout");
    // The whole burst lands at once: room for it, so that only the datapath can lose any.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &(4 << 20))
        .expect("setsockopt SO_RCVBUF");
    sock.send(&total.to_le_bytes())
        .map_err(|e| format!("send request to {to}: {e}"))?;
    let stream = Stream::new();
    let mut scratch = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let (total, segment) = (u64::from(total), u64::from(segment));
    let mut got = 0u64;
    while got < total {
        let n = sock.recv(&mut buf).map_err(|e| {
            format!(
                "{} of {total} bytes arrived, then nothing: {}",
                got,
                io_error_after(&e, UDP_WAIT)
            )
        })?;
        let want = segment.min(total - got);
        if n as u64 != want || !stream.matches(got, &buf[..n], &mut scratch) {
            return Err(format!(
                "datagram at offset {got}: {n} bytes, expected {want} bytes of the stream"
            ));
        }
        got += n as u64;
    }
    Ok(())
}

/// A DNS query (RFC 1035 section 4) for `name`, type `qtype` (1 = A, 28 = AAAA), class IN.
pub fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // standard query, recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("label below 64 bytes"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    q
}

fn dns_answer(q: &[u8], name: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Option<Vec<u8>> {
    let id = q.get(..2)?;
    let question = q.get(12..)?;
    let end = 12 + question.iter().position(|&b| b == 0)? + 1;
    let qtype = u16::from_be_bytes(q.get(end..end + 2)?.try_into().ok()?);
    let wanted = dns_query(0, name, 0);
    if q.get(4..6)? != [0, 1] || q.get(12..end)? != &wanted[12..wanted.len() - 4] {
        return None;
    }
    let rdata: Vec<u8> = match qtype {
        1 => v4.octets().to_vec(),
        28 => v6.octets().to_vec(),
        _ => return None,
    };
    let mut a = Vec::new();
    a.extend_from_slice(id);
    a.extend_from_slice(&0x8180u16.to_be_bytes()); // response, recursion available, no error
    a.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]); // one question, one answer
    a.extend_from_slice(q.get(12..end + 4)?); // the question, as asked
    a.extend_from_slice(&0xc00cu16.to_be_bytes()); // the name: a pointer to the question's
    a.extend_from_slice(&qtype.to_be_bytes());
    a.extend_from_slice(&1u16.to_be_bytes());
    a.extend_from_slice(&60u32.to_be_bytes()); // TTL
    a.extend_from_slice(&u16::try_from(rdata.len()).expect("fits").to_be_bytes());
    a.extend_from_slice(&rdata);
    Some(a)
}

/// Asks the DNS server at `to` (from inside `ns`) for `name`'s A record (`v6 == false`) or
/// AAAA record, and returns the address in the answer.
pub fn dns_lookup(ns: &NetNs, to: SocketAddr, name: &str, v6: bool) -> Result<IpAddr, String> {
    let any: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = ns.run(|| UdpSocket::bind(SocketAddr::new(any, 0)).expect("bind udp client"));
    sock.connect(to).expect("connect udp");
    sock.set_read_timeout(Some(UDP_WAIT)).expect("timeout");
    let id = 0x4242;
    let qtype = if v6 { 28 } else { 1 };
    let query = dns_query(id, name, qtype);
    sock.send(&query).map_err(|e| format!("send query: {e}"))?;
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .map_err(|e| format!("no answer from {to}: {e}"))?;
    let a = &buf[..n];
    let bad = || format!("malformed answer from {to}: {a:02x?}");
    if a.get(..2) != Some(&id.to_be_bytes()[..]) || a.get(6..8) != Some(&[0, 1][..]) {
        return Err(bad());
    }
    let rdata = a.get(query.len() + 12..).ok_or_else(bad)?;
    match (v6, rdata.len()) {
        (false, 4) => Ok(IpAddr::from(<[u8; 4]>::try_from(rdata).expect("4 bytes"))),
        (true, 16) => Ok(IpAddr::from(<[u8; 16]>::try_from(rdata).expect("16 bytes"))),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: Python's HTTP server, curl, ethtool
// ---------------------------------------------------------------------------------------------

/// A child process in a namespace (`nsenter --net` execs the program, so the child's PID is
/// the program's), stopped by that PID on drop: SIGTERM, then SIGKILL.
pub struct NsChild {
    child: Option<Child>,
    what: String,
}

impl NsChild {
    pub fn spawn(ns: &NetNs, program: &str, args: &[&str]) -> Self {
        let child = ns_command(ns, program, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", ns.name()));
        Self {
            child: Some(child),
            what: format!("{program} {}", args.join(" ")),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with the process's stderr if it has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{} exited with {status}: {err}", self.what);
        }
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        #[expect(clippy::cast_possible_wrap, reason = "PIDs fit in i32")]
        let pid = Pid::from_raw(child.id() as i32);
        if let Ok(None) = child.try_wait() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nsenter --net=<ns> -- program args...`.
fn ns_command(ns: &NetNs, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(program)
        .args(args);
    cmd
}

/// Runs `program args...` inside `ns` and returns its output.
pub fn ns_output(ns: &NetNs, program: &str, args: &[&str]) -> Output {
    ns_command(ns, program, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} in {}: {e}", ns.name()))
}

/// The Python interpreter: Debian's own when it is there, else whatever `python3` is on PATH.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// `python3 -m http.server` serving `dir` on `port` of every address in `ns` (IPv4 and IPv6:
/// it binds `::` dual-stack), until dropped.
pub struct HttpServer {
    process: NsChild,
    pub port: u16,
}

impl HttpServer {
    /// Starts the server and waits until it accepts connections (from inside `ns`, over
    /// loopback, so the wait does not depend on the policy).
    pub fn start(ns: &NetNs, dir: &Path, port: u16) -> Self {
        let dir = dir.display().to_string();
        let port_s = port.to_string();
        let mut process = NsChild::spawn(
            ns,
            python(),
            &[
                "-m",
                "http.server",
                &port_s,
                "--bind",
                "::",
                "--directory",
                &dir,
            ],
        );
        let local = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
        for _ in 0..100 {
            process.assert_running();
            let up = ns.run(|| TcpStream::connect_timeout(&local, Duration::from_millis(200)));
            if up.is_ok() {
                return Self { process, port };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("python3 -m http.server on port {port} did not accept connections within 10 s");
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

/// What a curl run did.
#[derive(Debug)]
pub struct CurlResult {
    pub code: Option<i32>,
    pub stderr: String,
}

impl CurlResult {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// `curl` from inside `ns`: GET `url` into `out`. A transfer that moves less than one byte a
/// second for `stall` seconds is abandoned (exit code 28), as is a connect that takes longer.
pub fn curl(ns: &NetNs, url: &str, out: &Path, stall: Duration) -> CurlResult {
    let secs = stall.as_secs().max(1).to_string();
    let out_s = out.display().to_string();
    let o = ns_output(
        ns,
        "curl",
        &[
            "--silent",
            "--show-error",
            "--fail",
            "--globoff", // [v6]:port URLs
            "--connect-timeout",
            &secs,
            "--speed-limit",
            "1",
            "--speed-time",
            &secs,
            "--output",
            &out_s,
            url,
        ],
    );
    CurlResult {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
    }
}

/// `http://addr:port/path`, with brackets around an IPv6 address.
pub fn http_url(addr: IpAddr, port: u16, path: &str) -> String {
    format!("http://{}{path}", SocketAddr::new(addr, port))
}

/// Turns TSO, GSO and GRO on or off on `ifname` in `ns` (`ethtool -K`).
pub fn set_offloads(ns: &NetNs, ifname: &str, on: bool) {
    let v = if on { "on" } else { "off" };
    let o = ns_output(ns, "ethtool", &["-K", ifname, "tso", v, "gso", v, "gro", v]);
    assert!(
        o.status.success(),
        "ethtool -K {ifname} tso/gso/gro {v} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Sets the MTU of `ifname` in `ns`.
pub fn set_mtu(ns: &NetNs, ifname: &str, mtu: u32) {
    ns.ip(&["link", "set", ifname, "mtu", &mtu.to_string()]);
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(crate::netns::unique_name(&format!("boundary-{tag}")));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
