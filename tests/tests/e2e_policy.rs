//! Tier 3, policy: the agent enforcing rules on real traffic between namespaces — TCP, UDP
//! and ICMP allowed and denied, replies to connections the workload starts, fragmented UDP,
//! IPv6 extension headers matched on their real ports, audit mode, and reloads under traffic.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    netns::addr::{CLIENT, CLIENT6, SERVER, SERVER_B, SERVER_IF, SERVER6},
    packets::{self, Ext, L4},
    require_root,
    traffic::{self, Servers},
};

const WAIT: Duration = Duration::from_millis(1500);
const SHORT: Duration = Duration::from_millis(300);

/// web (SERVER, SERVER6): default deny in, UDP 7000 and TCP 8080 from the client's /24,
/// ping from anyone, IPv6 UDP 7000. admin (`SERVER_B`): audit mode, default deny.
const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1, \"fd00:203::1\"]
    ingress:
      - name: clients
        from: { cidr: 10.203.0.0/24 }
        ports: [\"7000/udp\", \"8080/tcp\"]
      - name: clients6
        from: { cidr: \"fd00:203::/64\" }
        ports: [\"7000/udp\"]
      - name: ping
        from: { any: true }
        icmp: [echo-request]
  - name: admin
    addresses: [10.203.0.3]
    mode: audit
";

fn at(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

struct Setup {
    lab: Lab,
    files: AgentFiles,
    agent: AgentProcess,
    _servers: Vec<Servers>,
}

fn setup(tag: &str) -> Setup {
    let lab = Lab::new(tag);
    let files = AgentFiles::new(tag, SERVER_IF, POLICY, "");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let servers = vec![
        Servers::start(&lab.server, SERVER.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER.into(), 7001, 8081),
        Servers::start(&lab.server, SERVER6.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER6.into(), 7001, 8081),
        Servers::start(&lab.server, SERVER_B.into(), 7000, 8080),
    ];
    Setup {
        lab,
        files,
        agent,
        _servers: servers,
    }
}

#[test]
fn rules_allow_and_deny_tcp_udp_icmp() {
    if !require_root("rules_allow_and_deny_tcp_udp_icmp") {
        return;
    }
    let s = setup("rules");
    let c = &s.lab.client;
    assert_eq!(
        traffic::udp_echo(c, at(SERVER, 7000), 5, 64, WAIT),
        5,
        "UDP 7000 allowed"
    );
    assert_eq!(
        traffic::udp_echo(c, at(SERVER, 7001), 3, 64, SHORT),
        0,
        "UDP 7001 denied"
    );
    assert!(
        traffic::tcp_hello(c, at(SERVER, 8080), WAIT),
        "TCP 8080 allowed"
    );
    assert!(
        !traffic::tcp_hello(c, at(SERVER, 8081), SHORT),
        "TCP 8081 denied"
    );
    assert!(traffic::ping(c, SERVER.into(), WAIT), "ping allowed");
    assert_eq!(
        traffic::udp_echo(c, at(SERVER6, 7000), 3, 64, WAIT),
        3,
        "IPv6 UDP 7000 allowed"
    );
    assert_eq!(
        traffic::udp_echo(c, at(SERVER6, 7001), 2, 64, SHORT),
        0,
        "IPv6 UDP 7001 denied"
    );
    assert!(traffic::ping(c, SERVER6.into(), WAIT), "IPv6 ping allowed");
    // 5 UDP, 3 TCP (handshake), 1 ping, 3 IPv6 UDP, 1 IPv6 ping.
    assert!(s.files.packets("web", "ingress", "policy_allow") >= 13);
    // 3 UDP, at least 1 TCP SYN, 2 IPv6 UDP.
    assert!(s.files.packets("web", "ingress", "default_deny") >= 6);
    // Neighbour discovery kept IPv6 working under default deny.
    // `trace` explains verdicts from the live pinned maps.
    let pin = s.files.pin_dir.display().to_string();
    for (port, reason) in [("7000", "policy_allow"), ("7001", "default_deny")] {
        let (code, out, err) = s.files.cli(&[
            "trace",
            "--src",
            "10.203.0.2",
            "--dst",
            "10.203.0.1",
            "--proto",
            "udp",
            "--dport",
            port,
            "--pin-dir",
            &pin,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("trace json");
        assert_eq!(v["reason"], reason, "{out}");
        assert_eq!(v["workload"], "web", "{out}");
    }
    // (Solicitations go to a multicast address, no workload's; the advertisements leave from
    // the workload's address.)
    assert!(s.files.packets("web", "egress", "neighbor_discovery") >= 1);
}

#[test]
fn replies_to_connections_the_workload_starts_pass_default_deny() {
    if !require_root("replies_to_connections_the_workload_starts_pass_default_deny") {
        return;
    }
    let s = setup("ct");
    // The client runs the servers now; the protected workload connects out.
    let _client_servers = Servers::start(&s.lab.client, CLIENT.into(), 9000, 9001);
    let from = Some(IpAddr::from(SERVER));
    assert!(
        traffic::udp_echo_sized(&s.lab.server, from, at(CLIENT, 9000), 100, WAIT),
        "UDP reply to the workload's own query is established"
    );
    assert!(
        traffic::tcp_hello_from(&s.lab.server, SERVER.into(), at(CLIENT, 9001), WAIT),
        "TCP handshake and data from a server the workload called"
    );
    assert!(s.files.packets("web", "ingress", "established") >= 3);
    // Unsolicited traffic from the same peer and port is still dropped.
    let _ = s.agent.pid();
    let before = s.files.packets("web", "ingress", "default_deny");
    let frame = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 9000,
            dport: 45_000,
        },
        b"unsolicited",
    );
    traffic::inject(&s.lab.client, "c0", &[frame]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.files.packets("web", "ingress", "default_deny"),
        before + 1
    );
}

#[test]
fn fragmented_udp_follows_its_first_fragment() {
    if !require_root("fragmented_udp_follows_its_first_fragment") {
        return;
    }
    let s = setup("frag");
    let c = &s.lab.client;
    // 4000 bytes over a 1500-byte MTU: three fragments each way.
    assert!(
        traffic::udp_echo_sized(c, None, at(SERVER, 7000), 4000, WAIT),
        "allowed port: reassembled and echoed"
    );
    assert!(
        !traffic::udp_echo_sized(c, None, at(SERVER, 7001), 4000, SHORT),
        "denied port: nothing"
    );
    assert!(
        traffic::udp_echo_sized(c, None, at(SERVER6, 7000), 4000, WAIT),
        "IPv6 fragments too"
    );
    assert_eq!(s.files.packets("web", "ingress", "fragment_unknown"), 0);
    // Every fragment of the allowed datagrams counted as allowed by the rule.
    assert!(s.files.packets("web", "ingress", "policy_allow") >= 6);
    // The denied datagram's later fragments followed the first into the drop.
    assert!(s.files.packets("web", "ingress", "default_deny") >= 3);
}

#[test]
fn ipv6_extension_headers_are_matched_on_their_real_ports() {
    if !require_root("ipv6_extension_headers_are_matched_on_their_real_ports") {
        return;
    }
    let s = setup("exthdr");
    let exts = [Ext::HopByHop, Ext::DestOpts, Ext::Routing];
    let allowed = packets::with_ipv6_exts(
        &packets::v6(
            CLIENT6,
            SERVER6,
            L4::Udp {
                sport: 5555,
                dport: 7000,
            },
            b"x",
        ),
        &exts,
    );
    let denied = packets::with_ipv6_exts(
        &packets::v6(
            CLIENT6,
            SERVER6,
            L4::Udp {
                sport: 5555,
                dport: 7001,
            },
            b"x",
        ),
        &exts,
    );
    let allow_before = s.files.packets("web", "ingress", "policy_allow");
    let deny_before = s.files.packets("web", "ingress", "default_deny");
    traffic::inject(&s.lab.client, "c0", &[allowed.clone(), allowed, denied]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.files.packets("web", "ingress", "policy_allow"),
        allow_before + 2
    );
    assert_eq!(
        s.files.packets("web", "ingress", "default_deny"),
        deny_before + 1
    );
}

#[test]
fn audit_mode_passes_and_counts() {
    if !require_root("audit_mode_passes_and_counts") {
        return;
    }
    let s = setup("audit");
    // Four flows (a new socket, so a new source port, each time): each first packet would be
    // dropped and is audited instead. (Later packets of a flow the workload answered are
    // `established`, as in enforce mode.)
    for _ in 0..4 {
        assert_eq!(
            traffic::udp_echo(&s.lab.client, at(SERVER_B, 7000), 1, 64, WAIT),
            1,
            "audit passes"
        );
    }
    assert!(
        s.files.packets("admin", "ingress", "audit") >= 4,
        "{}",
        s.files.counters_json()
    );
    assert_eq!(s.files.packets("admin", "ingress", "default_deny"), 0);
}

#[test]
fn reload_under_traffic_loses_nothing_allowed_and_admits_nothing_denied() {
    if !require_root("reload_under_traffic_loses_nothing_allowed_and_admits_nothing_denied") {
        return;
    }
    let s = setup("swap");
    let stop = Arc::new(AtomicBool::new(false));
    let (lost, denied_through) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sent = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|scope| {
        let c = &s.lab.client;
        let (stop2, lost2, sent2) = (Arc::clone(&stop), Arc::clone(&lost), Arc::clone(&sent));
        scope.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                sent2.fetch_add(1, Ordering::Relaxed);
                if traffic::udp_echo(c, at(SERVER, 7000), 1, 64, WAIT) != 1 {
                    lost2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let (stop3, through3) = (Arc::clone(&stop), Arc::clone(&denied_through));
        scope.spawn(move || {
            while !stop3.load(Ordering::Relaxed) {
                through3.fetch_add(
                    traffic::udp_echo(c, at(SERVER, 7001), 1, 64, Duration::from_millis(50)),
                    Ordering::Relaxed,
                );
            }
        });
        // Twenty swaps: each policy differs (a new unrelated rule), so every one is a real
        // generation switch with entries written and removed.
        for i in 0..20 {
            let policy = POLICY.replace(
                "      - name: ping\n",
                &format!("      - name: extra{i}\n        from: {{ cidr: 172.16.{i}.0/24 }}\n        ports: [\"{}/tcp\"]\n      - name: ping\n", 1000 + i),
            );
            std::fs::write(s.files.policy(), policy).expect("write policy");
            s.agent.signal(nix::sys::signal::Signal::SIGHUP);
            // One swap at a time: signals sent while a reload runs are merged into one.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while s.agent.log().matches("policy reloaded").count() < i + 1
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let log = s.agent.log();
    assert!(log.matches("policy reloaded").count() >= 20, "{log}");
    assert!(
        sent.load(Ordering::Relaxed) > 20,
        "traffic ran during the swaps"
    );
    assert_eq!(
        lost.load(Ordering::Relaxed),
        0,
        "allowed echoes lost during swaps"
    );
    assert_eq!(
        denied_through.load(Ordering::Relaxed),
        0,
        "denied echoes that got through"
    );
}
