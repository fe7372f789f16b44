//! Hostile and unusual senders, from a red-team review of the real-traffic datapath: frames
//! whose headers are not linear (the pull and tail call), ICMP errors used to carry data past
//! the egress policy, and interfaces without an Ethernet header. Each failed on the code the
//! review read.

use std::{net::Ipv4Addr, time::Duration};

use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    netns::addr::{CLIENT, CLIENT_IF, CLIENT6, SERVER, SERVER_IF, SERVER6},
    packets::{self, L4},
    require_root, traffic,
};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
defaults: { ingress: deny, egress: deny }
workloads:
  - name: web
    addresses: [10.203.0.1, \"fd00:203::1\"]
    ingress:
      - from: { any: true }
        ports: [\"7000/udp\"]
    egress:
      - to: { cidr: 10.203.0.2/32 }
        ports: [\"9000/udp\"]
";

/// A destination on the client that the egress policy denies.
const DENIED: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 9);

fn setup(tag: &str) -> (Lab, AgentFiles, AgentProcess) {
    let lab = Lab::new(tag);
    // Jumbo MTU: AF_PACKET frames of a page or more keep only their Ethernet header linear.
    lab.client.ip(&["link", "set", CLIENT_IF, "mtu", "9000"]);
    lab.server.ip(&["link", "set", SERVER_IF, "mtu", "9000"]);
    lab.client
        .ip(&["addr", "add", "10.203.0.9/24", "dev", CLIENT_IF]);
    let files = AgentFiles::new(tag, SERVER_IF, POLICY, "metricsAddress: \"\"\n");
    let agent = AgentProcess::start(&lab.server, &files.config());
    (lab, files, agent)
}

/// Frames of 5000 bytes sent with `AF_PACKET` reach tcx ingress with 14 linear bytes: the program
/// pulls the headers and tail-calls itself; they must be judged by the policy, never dropped as
/// truncated (they are, if `BND_PROGS` is empty, as in loaders that do not fill it).
#[test]
fn nonlinear_frames_are_pulled_and_judged() {
    if !require_root("nonlinear_frames_are_pulled_and_judged") {
        return;
    }
    let (lab, files, _agent) = setup("nonlin");
    let big = vec![b'x'; 5000];
    let allowed = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 4000,
            dport: 7000,
        },
        &big,
    );
    let denied = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 4000,
            dport: 7001,
        },
        &big,
    );
    let allowed6 = packets::v6(
        CLIENT6,
        SERVER6,
        L4::Udp {
            sport: 4000,
            dport: 7000,
        },
        &big,
    );
    let tagged = packets::v4_tagged(
        &[0],
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 4000,
            dport: 7000,
        },
        &big,
    );
    traffic::inject(&lab.client, CLIENT_IF, &[allowed, denied, allowed6, tagged]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        files.packets("web", "ingress", "policy_allow"),
        3,
        "{}",
        files.counters_json()
    );
    assert_eq!(
        files.packets("web", "ingress", "default_deny"),
        1,
        "{}",
        files.counters_json()
    );
    let json = files.counters_json();
    assert!(!json.contains("truncated"), "{json}");
}

/// An ICMP error the workload sends must go to the source of the packet it quotes (the kernel's
/// `icmp_send` always answers the offending packet's source). Sent anywhere else it is data
/// dressed up as an error: a process with `CAP_NET_RAW` can carry arbitrary bytes to any
/// destination the egress policy denies, as long as it quotes any tracked flow.
#[test]
fn an_icmp_error_the_workload_sends_elsewhere_than_the_quoted_source_is_not_related() {
    if !require_root(
        "an_icmp_error_the_workload_sends_elsewhere_than_the_quoted_source_is_not_related",
    ) {
        return;
    }
    let (lab, files, _agent) = setup("icmpx");
    // A tracked flow: web 10.203.0.1:50123 -> 10.203.0.2:9000/udp (egress allowed).
    lab.server.run(|| {
        let s = std::net::UdpSocket::bind((SERVER, 50123)).expect("bind");
        s.send_to(b"hi", (CLIENT, 9000)).expect("send");
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = files.packets("web", "egress", "related");
    // The quoted packet: 10.203.0.2:9000 -> 10.203.0.1:50123 (the expected reply).
    let about = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 9000,
            dport: 50123,
        },
        b"",
    );
    let frame = packets::icmp4_port_unreachable(SERVER, DENIED, &about);
    let mut ip = frame[packets::ETH_LEN..].to_vec();
    ip.extend_from_slice(&[b'Z'; 1000]); // the payload being exfiltrated
    let len = u16::try_from(ip.len()).expect("fits").to_be_bytes();
    ip[2..4].copy_from_slice(&len);
    // A raw IP socket (IP_HDRINCL) in the server namespace: the packet leaves through tcx egress.
    lab.server.run(move || send_raw_ipv4(&ip, DENIED));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        files.packets("web", "egress", "related"),
        before,
        "an ICMP error to {DENIED}, which does not appear in its quote, passed as related: {}",
        files.counters_json()
    );
}

/// Sends `ip` (a whole IPv4 packet; its checksum is filled in by the kernel) to `to`, twice (the
/// first may wait for ARP). A send `TC_ACT_SHOT` refuses fails with ENOBUFS: not an error here.
fn send_raw_ipv4(ip: &[u8], to: Ipv4Addr) {
    #[expect(unsafe_code, reason = "raw sockets have no safe wrapper")]
    // SAFETY: plain socket calls on a socket we own; sockaddr_in fully initialised.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = u16::try_from(libc::AF_INET).expect("fits");
        sin.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
        for _ in 0..2 {
            libc::sendto(
                fd,
                ip.as_ptr().cast(),
                ip.len(),
                0,
                (&raw const sin).cast(),
                u32::try_from(size_of::<libc::sockaddr_in>()).expect("size"),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        libc::close(fd);
    }
}

/// An L3 interface (tun, `WireGuard`, ipip, GRE: no Ethernet header) given to the agent: the
/// programs would read the IPv4 header as an Ethernet header, so a packet from a source whose
/// first two bytes are not an ethertype the parser knows would pass as `non_ip`, whatever the
/// policy says (seen in review: a denied UDP datagram and a SYN to a denied port reached the
/// stack). The agent refuses such an interface, naming it and why.
#[test]
fn interfaces_without_an_ethernet_header_are_refused() {
    if !require_root("interfaces_without_an_ethernet_header_are_refused") {
        return;
    }
    let lab = Lab::new("l3");
    lab.server
        .ip(&["tuntap", "add", "dev", "t0", "mode", "tun"]);
    lab.server.ip(&["addr", "add", "10.88.0.1/24", "dev", "t0"]);
    lab.server.ip(&["link", "set", "t0", "up"]);
    let files = AgentFiles::new(
        "l3",
        "s0, { name: t0, ingress: tc }",
        POLICY,
        "metricsAddress: \"\"\n",
    );
    let (code, log) = match AgentProcess::try_start(&lab.server, &files.config(), &[]) {
        Ok(mut agent) => {
            agent.stop();
            panic!("the agent attached to a tun device:\n{}", agent.log());
        }
        Err(e) => e,
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("t0 has no Ethernet header (link type 65534"),
        "the refusal names the interface and why: {log}"
    );
    // Refused before anything was loaded or attached: no pins, s0 untouched.
    assert!(
        !files.pin_dir.exists(),
        "a refused start left pins at {}",
        files.pin_dir.display()
    );
}
