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
            let mut buf = [0u8; 2048];
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
