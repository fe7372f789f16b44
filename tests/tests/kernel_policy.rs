//! Tier 2, policy: the real programs through `BPF_PROG_TEST_RUN` on crafted frames, for the
//! stateful parts (conntrack, fragments), generation swaps and rule hit counters.

mod support;

use boundary_agent::policy::Policy;
use boundary_common::{Reason, maps::Action};
use boundary_tests::{
    netns::addr::{CLIENT, SERVER, SERVER_B},
    packets::{self, L4},
    require_root,
};
use support::{Kernel, Outcome, TC_NEXT, XDP_DROP, XDP_PASS};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: dns
        from: { any: true }
        ports: [\"53/udp\"]
  - name: admin
    addresses: [10.203.0.3]
    mode: audit
";

fn udp(src: std::net::Ipv4Addr, sport: u16, dst: std::net::Ipv4Addr, dport: u16) -> Vec<u8> {
    packets::v4(src, dst, L4::Udp { sport, dport }, b"x")
}

fn kernel() -> Kernel {
    let mut k = Kernel::empty();
    k.install(
        &Policy::from_str("p.yaml", POLICY).expect("valid"),
        Action::Pass,
    );
    k
}

#[test]
fn conntrack_admits_the_exact_reply_only() {
    if !require_root("conntrack_admits_the_exact_reply_only") {
        return;
    }
    let mut k = kernel();
    // web calls out from port 41000 to CLIENT:9000; the reply is established.
    let out = k.tc(&udp(SERVER, 41_000, CLIENT, 9000));
    assert_eq!((out.action, out.reason), (TC_NEXT, Reason::DefaultAllow));
    let back = k.xdp(&udp(CLIENT, 9000, SERVER, 41_000));
    assert_eq!((back.action, back.reason), (XDP_PASS, Reason::Established));
    // Another source port, another destination port: not replies.
    assert_eq!(
        k.xdp(&udp(CLIENT, 9001, SERVER, 41_000)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 9000, SERVER, 41_001)).reason,
        Reason::DefaultDeny
    );
}

#[test]
fn audit_flows_are_audited_per_flow() {
    if !require_root("audit_flows_are_audited_per_flow") {
        return;
    }
    let mut k = kernel();
    for sport in [50_001, 50_002, 50_003] {
        let first = k.xdp(&udp(CLIENT, sport, SERVER_B, 7000));
        assert_eq!(
            first,
            Outcome {
                action: XDP_PASS,
                slot: 2,
                reason: Reason::Audit
            },
            "port {sport}"
        );
        // The workload answers; later packets of that flow are established.
        assert_eq!(
            k.tc(&udp(SERVER_B, 7000, CLIENT, sport)).reason,
            Reason::DefaultAllow
        );
        assert_eq!(
            k.xdp(&udp(CLIENT, sport, SERVER_B, 7000)).reason,
            Reason::Established
        );
    }
}

#[test]
fn generation_swap_replaces_the_policy_and_removes_the_old_entries() {
    if !require_root("generation_swap_replaces_the_policy_and_removes_the_old_entries") {
        return;
    }
    let mut k = kernel();
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 53)).reason,
        Reason::PolicyAllow
    );
    let entries = |k: &Kernel| {
        (
            k.dp.maps.policy.keys().count(),
            k.dp.maps.endpoints.keys().count(),
        )
    };
    let before = entries(&k);
    let closed = POLICY.replace("ports: [\"53/udp\"]", "ports: [\"54/udp\"]");
    k.install(
        &Policy::from_str("p.yaml", &closed).expect("valid"),
        Action::Pass,
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 53)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 54)).reason,
        Reason::PolicyAllow
    );
    assert_eq!(entries(&k), before, "the old generation's entries are gone");
    assert_eq!(
        k.dp.maps.datapath_config().expect("config").generation,
        0,
        "two swaps from the initial 0"
    );
}

#[test]
fn rule_hits_count_per_rule() {
    if !require_root("rule_hits_count_per_rule") {
        return;
    }
    let mut k = kernel();
    for _ in 0..3 {
        let o = k.xdp(&udp(CLIENT, 5000, SERVER, 53));
        assert_eq!((o.action, o.reason), (XDP_PASS, Reason::PolicyAllow));
    }
    assert_eq!(k.xdp(&udp(CLIENT, 5000, SERVER, 80)).action, XDP_DROP);
    assert_eq!(k.dp.maps.rule_hits(0).expect("hits"), 3);
}
