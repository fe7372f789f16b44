//! What a policy means, checked through the compiler and the reference evaluator (no root):
//! precedence, nested CIDRs, identities, ranges, failsafe, conntrack, fragments, slots.

use std::{fmt::Write as _, net::IpAddr};

use boundary_agent::{
    policy::{self, Interfaces, Policy, SlotTable, Tables},
    reference::{self, Echo, Fragment, ModelView, Packet, Quote, State},
};
use boundary_common::{Direction, Reason};

fn compile(text: &str) -> Tables {
    let p = Policy::from_str("p.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    policy::compile(&p, &SlotTable::new(), 64).unwrap_or_else(|e| panic!("{e}"))
}

/// The interface the packets here cross: most policies here list none, so any would do.
const IF: u32 = 1;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    let mut p = Packet::new(ip(src), ip(dst), 6);
    p.sport = 40_000;
    p.dport = dport;
    p
}

fn udp(src: &str, dst: &str, dport: u16) -> Packet {
    let mut p = Packet::new(ip(src), ip(dst), 17);
    p.sport = 40_000;
    p.dport = dport;
    p
}

/// (reason, rule name) of an ingress packet.
fn ingress(t: &Tables, p: &Packet) -> (Reason, Option<String>) {
    let out = reference::decide(t, &mut State::default(), Direction::Ingress, IF, p);
    (out.reason, out.rule.map(|r| t.rules[&r].name.clone()))
}

const HEAD: &str = "apiVersion: boundary.dev/v1\nfailsafe: []\n";

#[test]
fn nested_cidrs_all_apply() {
    let t = compile(&format!(
        "{HEAD}workloads:
  - name: w
    addresses: [10.9.0.1]
    ingress:
      - name: wide
        from: {{ cidr: 10.0.0.0/8 }}
        ports: [\"80/tcp\"]
      - name: narrow
        from: {{ cidr: 10.1.0.0/16 }}
        ports: [\"443/tcp\"]
"
    ));
    // 10.1.2.3 is in both prefixes: the longest match must still carry the /8 rule.
    assert_eq!(
        ingress(&t, &tcp("10.1.2.3", "10.9.0.1", 80)),
        (Reason::PolicyAllow, Some("wide".into()))
    );
    assert_eq!(
        ingress(&t, &tcp("10.1.2.3", "10.9.0.1", 443)),
        (Reason::PolicyAllow, Some("narrow".into()))
    );
    assert_eq!(
        ingress(&t, &tcp("10.2.0.1", "10.9.0.1", 443)).0,
        Reason::DefaultDeny
    );
    assert_eq!(
        ingress(&t, &tcp("11.0.0.1", "10.9.0.1", 80)).0,
        Reason::DefaultDeny
    );
}

#[test]
fn deny_beats_allow_at_equal_specificity_and_specific_beats_general() {
    let t = compile(&format!(
        "{HEAD}defaults: {{ ingress: allow }}
workloads:
  - name: w
    addresses: [10.9.0.1]
    ingress:
      - name: allow-office
        from: {{ cidr: 192.168.0.0/16 }}
        ports: [\"22/tcp\"]
      - name: deny-lab
        from: {{ cidr: 192.168.66.0/24 }}
        ports: [\"22/tcp\"]
        action: deny
      - name: deny-any-9000
        from: {{ any: true }}
        ports: [\"9000/tcp\"]
        action: deny
      - name: allow-office-9000
        from: {{ cidr: 192.168.0.0/16 }}
        ports: [\"9000/tcp\"]
"
    ));
    assert_eq!(
        ingress(&t, &tcp("192.168.66.7", "10.9.0.1", 22)),
        (Reason::PolicyDeny, Some("deny-lab".into()))
    );
    assert_eq!(
        ingress(&t, &tcp("192.168.1.7", "10.9.0.1", 22)),
        (Reason::PolicyAllow, Some("allow-office".into()))
    );
    // A rule about this peer beats a rule about any peer.
    assert_eq!(
        ingress(&t, &tcp("192.168.1.7", "10.9.0.1", 9000)).0,
        Reason::PolicyAllow
    );
    assert_eq!(
        ingress(&t, &tcp("8.8.8.8", "10.9.0.1", 9000)).0,
        Reason::PolicyDeny
    );
    // Nothing matches: the workload's default.
    assert_eq!(
        ingress(&t, &tcp("8.8.8.8", "10.9.0.1", 1234)).0,
        Reason::DefaultAllow
    );
}

#[test]
fn ranges_exact_ports_and_nested_ranges() {
    let t = compile(&format!(
        "{HEAD}workloads:
  - name: w
    addresses: [10.9.0.1]
    ingress:
      - name: range
        from: {{ any: true }}
        ports: [\"30000-30100/udp\"]
      - name: hole
        from: {{ any: true }}
        ports: [\"30010-30019/udp\"]
        action: deny
      - name: exact
        from: {{ any: true }}
        ports: [\"30015/udp\"]
"
    ));
    let d = |port| ingress(&t, &udp("1.2.3.4", "10.9.0.1", port));
    assert_eq!(d(30_000), (Reason::PolicyAllow, Some("range".into())));
    assert_eq!(d(30_100), (Reason::PolicyAllow, Some("range".into())));
    assert_eq!(d(30_101).0, Reason::DefaultDeny);
    assert_eq!(d(29_999).0, Reason::DefaultDeny);
    assert_eq!(d(30_012), (Reason::PolicyDeny, Some("hole".into())));
    // An exact port beats any range.
    assert_eq!(d(30_015), (Reason::PolicyAllow, Some("exact".into())));
    // Per-port blow-up is avoided: 101 ports are a handful of prefixes.
    assert!(t.ranges.len() < 20, "{} range entries", t.ranges.len());
}

#[test]
fn identities_spiffe_world_and_any() {
    let t = compile(&format!(
        "{HEAD}identities:
  - id: spiffe://example.org/ns/orders/sa/api
    addresses: [10.1.2.7]
  - id: spiffe://example.org/ns/billing/sa/api
    addresses: [10.1.2.8]
workloads:
  - name: w
    addresses: [10.9.0.1]
    ingress:
      - name: orders
        from: {{ spiffe: \"spiffe://example.org/ns/orders/*\" }}
        ports: [\"8443/tcp\"]
      - name: world
        from: {{ world: true }}
        ports: [\"80/tcp\"]
      - name: ping
        from: {{ any: true }}
        icmp: [echo-request]
"
    ));
    assert_eq!(
        ingress(&t, &tcp("10.1.2.7", "10.9.0.1", 8443)),
        (Reason::PolicyAllow, Some("orders".into()))
    );
    assert_eq!(
        ingress(&t, &tcp("10.1.2.8", "10.9.0.1", 8443)).0,
        Reason::DefaultDeny
    );
    assert_eq!(
        ingress(&t, &tcp("10.1.2.9", "10.9.0.1", 8443)).0,
        Reason::DefaultDeny
    );
    // `world` is every peer without a SPIFFE identity.
    assert_eq!(
        ingress(&t, &tcp("10.1.2.9", "10.9.0.1", 80)).0,
        Reason::PolicyAllow
    );
    assert_eq!(
        ingress(&t, &tcp("10.1.2.7", "10.9.0.1", 80)).0,
        Reason::DefaultDeny
    );
    let mut echo = Packet::new(ip("10.1.2.7"), ip("10.9.0.1"), 1);
    echo.icmp_type = Some(8);
    assert_eq!(
        ingress(&t, &echo),
        (Reason::PolicyAllow, Some("ping".into()))
    );
    echo.icmp_type = Some(0);
    assert_eq!(ingress(&t, &echo).0, Reason::DefaultDeny);
}

#[test]
fn failsafe_conntrack_fragments_and_audit() {
    let t = compile(
        "apiVersion: boundary.dev/v1
failsafe: [\"tcp:10.0.0.0/8:22\"]
workloads:
  - name: w
    addresses: [10.9.0.1]
    defaults: { egress: deny }
    ingress:
      - name: dns-in
        from: { any: true }
        ports: [\"53/udp\"]
    egress:
      - name: web-out
        to: { any: true }
        ports: [\"443/tcp\"]
  - name: quiet
    addresses: [10.9.0.2]
    mode: audit
",
    );
    assert_eq!(
        ingress(&t, &tcp("10.5.5.5", "10.9.0.1", 22)).0,
        Reason::Failsafe
    );
    assert_eq!(
        ingress(&t, &tcp("11.5.5.5", "10.9.0.1", 22)).0,
        Reason::DefaultDeny
    );
    // Egress failsafe: replies from local port 22 go out though egress denies by default.
    let mut state = State::default();
    let mut reply = tcp("10.9.0.1", "10.5.5.5", 40_000);
    reply.sport = 22;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Egress, IF, &reply).reason,
        Reason::Failsafe
    );

    // The workload connects out; the reply comes back in as established.
    let out = tcp("10.9.0.1", "1.1.1.1", 443);
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Egress, IF, &out).reason,
        Reason::PolicyAllow
    );
    let mut back = tcp("1.1.1.1", "10.9.0.1", 40_000);
    back.sport = 443;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &back).reason,
        Reason::Established
    );
    // Same peer, other port: not the reply.
    back.sport = 444;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &back).reason,
        Reason::DefaultDeny
    );

    // Allowed in, reply out though egress is default deny.
    let q = udp("8.8.4.4", "10.9.0.1", 53);
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &q).reason,
        Reason::PolicyAllow
    );
    let mut a = udp("10.9.0.1", "8.8.4.4", 40_000);
    a.sport = 53;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Egress, IF, &a).reason,
        Reason::Established
    );

    // Fragments follow their first.
    let mut first = udp("8.8.4.4", "10.9.0.1", 53);
    first.fragment = Fragment::First;
    first.frag_id = 7;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &first).reason,
        Reason::PolicyAllow
    );
    let mut later = Packet::new(ip("8.8.4.4"), ip("10.9.0.1"), 17);
    later.fragment = Fragment::Later;
    later.frag_id = 7;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &later).reason,
        Reason::PolicyAllow
    );
    later.frag_id = 8;
    assert_eq!(
        reference::decide(&t, &mut state, Direction::Ingress, IF, &later).reason,
        Reason::FragmentUnknown
    );

    // Audit: would-be drops pass as audit.
    assert_eq!(
        ingress(&t, &tcp("11.5.5.5", "10.9.0.2", 80)).0,
        Reason::Audit
    );
}

#[test]
fn slots_are_stable_across_reorder_and_removal() {
    let names = |ws: &[&str]| {
        let mut text = String::from("apiVersion: boundary.dev/v1\nworkloads:\n");
        for (i, n) in ws.iter().enumerate() {
            let _ = writeln!(text, "- name: {n}\n  addresses: [10.0.0.{}]", i + 1);
        }
        Policy::from_str("p.yaml", &text).expect("valid")
    };
    let first = policy::compile(&names(&["a", "b", "c"]), &SlotTable::new(), 16).expect("compiles");
    let table: SlotTable = first.names.iter().map(|(s, n)| (n.clone(), *s)).collect();
    let second = policy::compile(&names(&["c", "d", "a"]), &table, 16).expect("compiles");
    assert_eq!(second.names[&1], "a");
    assert_eq!(second.names[&3], "c");
    assert_eq!(
        second.names[&4], "d",
        "d takes a slot nobody live holds, not the one b still counts into until the swap ends"
    );
    assert!(!second.names.contains_key(&2));
    let e = policy::compile(&names(&["a", "b", "c"]), &SlotTable::new(), 3).unwrap_err();
    assert!(
        e.to_string().contains("3 workloads do not fit in 3 slots"),
        "{e}"
    );
}

#[test]
fn compile_is_deterministic() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy.yaml"
    ))
    .expect("example");
    let a = compile(&text);
    let b = compile(&text);
    assert_eq!(a, b);
}

#[test]
fn icmp_errors_about_tracked_flows_are_related() {
    let t = compile(&format!(
        "{HEAD}workloads:
  - name: w
    addresses: [10.9.0.1]
    defaults: {{ ingress: deny, egress: allow }}
    ingress:
      - name: dns
        from: {{ any: true }}
        ports: [\"53/udp\"]
"
    ));
    let mut state = State::default();
    let error = |quote: Quote| {
        let mut p = Packet::new(ip("192.0.2.1"), ip("10.9.0.1"), 1);
        p.icmp_type = Some(3);
        p.quote = Some(quote);
        p
    };
    let sent = Quote {
        src: ip("10.9.0.1"),
        dst: ip("8.8.8.8"),
        proto: 17,
        sport: 40_000,
        dport: 443,
        echo: None,
    };
    // Before the workload sends anything, an error quoting it is just ICMP.
    let decide = |state: &mut State, direction, p: &Packet| {
        reference::decide(&t, state, direction, IF, p).reason
    };
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(sent)),
        Reason::DefaultDeny
    );
    // The workload opens the flow; a router's error about it is related.
    let out = udp("10.9.0.1", "8.8.8.8", 443);
    assert_eq!(
        decide(&mut state, Direction::Egress, &out),
        Reason::DefaultAllow
    );
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(sent)),
        Reason::Related
    );
    // Another port, or a packet the workload did not send: not related.
    let other_port = Quote { dport: 444, ..sent };
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(other_port)),
        Reason::DefaultDeny
    );
    let not_ours = Quote {
        src: ip("10.9.0.2"),
        ..sent
    };
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(not_ours)),
        Reason::DefaultDeny
    );
    // A flow let in: an error about the workload's answer is related too.
    let q = udp("8.8.4.4", "10.9.0.1", 53);
    assert_eq!(
        decide(&mut state, Direction::Ingress, &q),
        Reason::PolicyAllow
    );
    let answer = Quote {
        src: ip("10.9.0.1"),
        dst: ip("8.8.4.4"),
        proto: 17,
        sport: 53,
        dport: 40_000,
        echo: None,
    };
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(answer)),
        Reason::Related
    );
    // An echo reply quoted where only its request's answer is expected: not related.
    let ping = {
        let mut p = Packet::new(ip("10.9.0.1"), ip("8.8.8.8"), 1);
        p.icmp_type = Some(8);
        p.icmp_id = 9;
        p
    };
    assert_eq!(
        decide(&mut state, Direction::Egress, &ping),
        Reason::DefaultAllow
    );
    let echo = |e| Quote {
        src: ip("10.9.0.1"),
        dst: ip("8.8.8.8"),
        proto: 1,
        sport: 9,
        dport: 9,
        echo: Some(e),
    };
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(echo(Echo::Request))),
        Reason::Related
    );
    assert_eq!(
        decide(&mut state, Direction::Ingress, &error(echo(Echo::Reply))),
        Reason::DefaultDeny
    );
}

#[test]
fn a_workload_listed_on_interfaces_is_protected_there_only() {
    // web owns 10.0.0.1 on eth0 and eth1, edge owns it on eth2; db owns 10.0.0.2 on every
    // interface. Interface indexes past 65535, as a long-lived container host has them.
    let text = format!(
        "{HEAD}defaults: {{ ingress: deny }}
workloads:
  - name: web
    addresses: [10.0.0.1]
    interfaces: [eth0, eth1]
    ingress: [{{ from: {{ any: true }}, ports: [\"80/tcp\"] }}]
  - name: edge
    addresses: [10.0.0.1]
    interfaces: [eth2]
    defaults: {{ ingress: allow }}
  - name: db
    addresses: [10.0.0.2]
"
    );
    let (eth0, eth1, eth2, eth3) = (7, 70_000, 70_001, 70_002);
    let interfaces = Interfaces::protected([
        ("eth0".to_owned(), eth0),
        ("eth1".to_owned(), eth1),
        ("eth2".to_owned(), eth2),
        ("eth3".to_owned(), eth3),
    ]);
    let p = Policy::from_str_on("p.yaml", &text, &interfaces).unwrap_or_else(|e| panic!("{e}"));
    let t = policy::compile(&p, &SlotTable::new(), 64).unwrap_or_else(|e| panic!("{e}"));
    let slot = |name: &str| *t.names.iter().find(|(_, n)| *n == name).expect("a slot").0;
    let model = ModelView::new(&p, &t);
    let decide = |ifindex: u32, pkt: &Packet| {
        let compiled =
            reference::decide(&t, &mut State::default(), Direction::Ingress, ifindex, pkt);
        let from_model = reference::decide_with(
            &model,
            &mut State::default(),
            Direction::Ingress,
            ifindex,
            pkt,
        );
        assert_eq!(compiled, from_model, "on interface {ifindex}");
        (compiled.slot, compiled.reason)
    };
    let http = tcp("192.168.1.9", "10.0.0.1", 80);
    let ssh = tcp("192.168.1.9", "10.0.0.1", 22);
    for ifindex in [eth0, eth1] {
        assert_eq!(decide(ifindex, &http), (slot("web"), Reason::PolicyAllow));
        assert_eq!(decide(ifindex, &ssh), (slot("web"), Reason::DefaultDeny));
    }
    // On eth2 the address is edge's; on eth3 nobody's.
    assert_eq!(decide(eth2, &ssh), (slot("edge"), Reason::DefaultAllow));
    assert_eq!(decide(eth3, &ssh), (0, Reason::Unprotected));
    // A workload that lists no interface is on all of them.
    for ifindex in [eth0, eth2, eth3] {
        let to_db = tcp("192.168.1.9", "10.0.0.2", 22);
        assert_eq!(decide(ifindex, &to_db), (slot("db"), Reason::DefaultDeny));
    }
}
