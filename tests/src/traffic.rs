//! Real traffic between lab namespaces: UDP echo, TCP connects, raw frames.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::NetNs;

/// A UDP echo server and a TCP server answering "ok\n", inside a namespace, until dropped.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
}

impl Servers {
    /// Listens on `addr` (port `udp_port` for UDP echo, `tcp_port` for TCP) in `ns`.
    pub fn start(ns: &NetNs, addr: IpAddr, udp_port: u16, tcp_port: u16) -> Self {
        let udp_addr = SocketAddr::new(addr, udp_port);
        let tcp_addr = SocketAddr::new(addr, tcp_port);
        // Bind inside the namespace; the sockets stay there.
        let (udp, tcp) = ns.run(|| {
            let udp = UdpSocket::bind(udp_addr).expect("bind udp");
            let tcp = TcpListener::bind(tcp_addr).expect("bind tcp");
            (udp, tcp)
        });
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let s1 = Arc::clone(&stop);
        let t1 = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        let s2 = Arc::clone(&stop);
        let t2 = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.write_all(b"ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            stop,
            threads: vec![t1, t2],
            udp: udp_addr,
            tcp: tcp_addr,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends `count` UDP datagrams of `size` bytes from `ns` to `to`, one at a time, and returns
/// how many echoes came back (each waited for up to `wait`).
pub fn udp_echo(ns: &NetNs, to: SocketAddr, count: usize, size: usize, wait: Duration) -> usize {
    let bind: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("addr");
    let sock = ns.run(|| UdpSocket::bind(bind).expect("bind client udp"));
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let payload = vec![0x5a; size];
    let mut buf = [0u8; 2048];
    let mut got = 0;
    for _ in 0..count {
        sock.send_to(&payload, to).expect("send udp");
        if sock.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    got
}

/// Connects from `ns` to `to` and reads the server's greeting. True when it arrived.
pub fn tcp_hello(ns: &NetNs, to: SocketAddr, wait: Duration) -> bool {
    let stream = ns.run(|| {
        // The socket is created (and the handshake made) inside the namespace.
        TcpStream::connect_timeout(&to, wait)
    });
    let Ok(mut stream) = stream else { return false };
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
}

/// Sends raw Ethernet frames out of `ifname` in `ns` (`AF_PACKET`), as they are: this is how
/// malformed packets reach the wire.
pub fn inject(ns: &NetNs, ifname: &str, frames: &[Vec<u8>]) {
    let ifname = ifname.to_owned();
    ns.run(move || {
        #[expect(unsafe_code, reason = "AF_PACKET sockets have no safe wrapper")]
        // SAFETY: plain socket calls on a socket we own; sockaddr_ll is fully initialised.
        unsafe {
            let proto = u16::try_from(libc::ETH_P_ALL).expect("fits").to_be();
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let cname = std::ffi::CString::new(ifname).expect("ifname");
            let ifindex = libc::if_nametoindex(cname.as_ptr());
            assert!(ifindex != 0, "no interface");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = u16::try_from(libc::AF_PACKET).expect("fits");
            sll.sll_protocol = proto;
            #[expect(clippy::cast_possible_wrap, reason = "ifindex fits in i32")]
            {
                sll.sll_ifindex = ifindex as i32;
            }
            sll.sll_halen = 6;
            for f in frames {
                let rc = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).expect("size"),
                );
                assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
    });
}

/// One ICMP echo from `ns` to `to` (`ping -c 1`), true when the reply came back.
pub fn ping(ns: &NetNs, to: IpAddr, wait: Duration) -> bool {
    let secs = wait.as_secs().max(1).to_string();
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "ping",
            "-c",
            "1",
            "-W",
            &secs,
            "-q",
        ])
        .arg(to.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run ping (package iputils-ping)")
        .success()
}

/// A TCP connect from `ns`, with the socket bound to `from` first (so the connection leaves
/// from that workload address), then reads the greeting.
pub fn tcp_hello_from(ns: &NetNs, from: IpAddr, to: SocketAddr, wait: Duration) -> bool {
    let stream = ns.run(|| -> std::io::Result<TcpStream> {
        let domain = if to.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // std has no bind-then-connect for TcpStream: use the socket calls directly.
        #[expect(unsafe_code, reason = "bind before connect needs the socket API")]
        // SAFETY: plain socket calls on a socket we own; addresses are valid sockaddr values.
        unsafe {
            use std::os::fd::FromRawFd as _;
            let fd = libc::socket(domain, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let stream = TcpStream::from_raw_fd(fd);
            let (addr, len) = sockaddr(SocketAddr::new(from, 0));
            if libc::bind(fd, (&raw const addr).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let (addr, len) = sockaddr(to);
            stream.set_write_timeout(Some(wait))?;
            if libc::connect(fd, (&raw const addr).cast(), len) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(stream)
        }
    });
    let Ok(mut stream) = stream else { return false };
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).is_ok() && &buf == b"ok\n"
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    #[expect(unsafe_code, reason = "building a C socket address")]
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: u16::try_from(libc::AF_INET).expect("fits"),
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            #[expect(unsafe_code, reason = "building a C socket address")]
            unsafe {
                std::ptr::write((&raw mut storage).cast(), sin);
            }
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: u16::try_from(libc::AF_INET6).expect("fits"),
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            #[expect(unsafe_code, reason = "building a C socket address")]
            unsafe {
                std::ptr::write((&raw mut storage).cast(), sin6);
            }
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, libc::socklen_t::try_from(len).expect("fits"))
}

/// Sends one UDP datagram of `size` bytes from `ns` (bound to `from`, when given) to `to` and
/// waits for the echo; true when the whole datagram came back. Datagrams above the MTU are
/// fragmented by the sender's stack.
pub fn udp_echo_sized(
    ns: &NetNs,
    from: Option<IpAddr>,
    to: SocketAddr,
    size: usize,
    wait: Duration,
) -> bool {
    let bind = match from {
        Some(a) => SocketAddr::new(a, 0),
        None if to.is_ipv4() => "0.0.0.0:0".parse().expect("addr"),
        None => "[::]:0".parse().expect("addr"),
    };
    let sock = ns.run(|| UdpSocket::bind(bind).expect("bind client udp"));
    sock.set_read_timeout(Some(wait)).expect("timeout");
    let payload = vec![0x5a; size];
    sock.send_to(&payload, to).expect("send udp");
    let mut buf = vec![0u8; size + 16];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n == size)
}

/// A plain HTTP/1.0 GET to `addr` from inside `ns`; returns (status code, body).
pub fn http_get(ns: &NetNs, addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = ns
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
        .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}
