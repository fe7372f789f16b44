//! Tier 2, earned bindings: the real programs through `BPF_PROG_TEST_RUN`. A binding written
//! into the live generation admits its peer under its SPIFFE ID at once, cached verdicts
//! included; the datapath drops it by itself at its deadline (no agent runs here); taking it
//! out ends it at once; and a binding moves the cached verdicts of its slot of addresses only,
//! not every flow's.

mod support;

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, IterableMap as _, MapData};
use boundary_agent::{
    datapath::maps::EarnedBinding,
    policy::{self, Binder, Earned, Policy, spiffe::SpiffeId},
};
use boundary_common::{
    Reason,
    maps::{Action, PolicyKey, PolicyValue, bind_seq_slot},
};
use boundary_tests::{
    packets::{self, L4},
    require_root,
};
use support::{Kernel, XDP_DROP, XDP_PASS, earned};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 204, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 7);

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: api
    addresses: [10.204.0.1]
    ingress:
      - { name: orders, from: { spiffe: \"spiffe://example.org/orders/*\" }, ports: [\"8443/tcp\", \"9000-9100/tcp\"] }
      - { name: lan, from: { cidr: 10.204.2.0/24 }, ports: [\"22/tcp\", \"2222/tcp\"] }
";

fn tcp(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    packets::v4(src, SERVER, L4::Tcp { sport, dport }, b"")
}

fn id(s: &str) -> SpiffeId {
    s.parse().expect("SPIFFE ID")
}

/// A kernel with the policy live and bindings earnable, and its binder.
fn attestable() -> (Kernel, Binder, Policy) {
    let mut k = Kernel::empty();
    let p = Policy::from_str("p.yaml", POLICY).expect("valid");
    let slots = k.dp.maps().slot_table().expect("slots");
    let t = policy::compile_with(
        &p,
        &slots,
        &std::collections::BTreeMap::new(),
        &std::collections::BTreeMap::new(),
        support::SLOTS,
        &Earned {
            enabled: true,
            bindings: std::collections::BTreeMap::new(),
            endpoint: None,
        },
    )
    .expect("compiles");
    k.dp.apply(&t, Action::Pass).expect("apply");
    let binder = Binder::new(&p, &t);
    (k, binder, p)
}

fn bind(k: &mut Kernel, b: &mut Binder, e: &EarnedBinding) {
    let binding = b.bind(e.addr, &id(&e.id));
    k.dp.bind(e, &binding).expect("bind");
}

#[test]
fn a_binding_admits_its_peer_at_once_even_with_its_drop_cached() {
    if !require_root("a_binding_admits_its_peer_at_once_even_with_its_drop_cached") {
        return;
    }
    let (mut k, mut b, _) = attestable();
    // Before: dropped, twice (the second from the cache), on the rule's port and range.
    for _ in 0..2 {
        assert_eq!(k.xdp(&tcp(PEER, 40_000, 8443)).action, XDP_DROP);
        assert_eq!(k.xdp(&tcp(PEER, 40_001, 9050)).action, XDP_DROP);
    }
    bind(
        &mut k,
        &mut b,
        &earned(
            PEER,
            "spiffe://example.org/orders/api",
            Duration::from_secs(60),
        ),
    );
    for _ in 0..2 {
        let o = k.xdp(&tcp(PEER, 40_000, 8443));
        assert_eq!((o.action, o.reason), (XDP_PASS, Reason::PolicyAllow));
        assert_eq!(k.xdp(&tcp(PEER, 40_001, 9050)).action, XDP_PASS);
    }
    // Not a port the rule names; not an ID the rule selects.
    assert_eq!(k.xdp(&tcp(PEER, 40_002, 8444)).action, XDP_DROP);
    let other = Ipv4Addr::new(10, 204, 1, 8);
    bind(
        &mut k,
        &mut b,
        &earned(
            other,
            "spiffe://example.org/billing/api",
            Duration::from_secs(60),
        ),
    );
    assert_eq!(k.xdp(&tcp(other, 40_000, 8443)).action, XDP_DROP);
    // A peer in the LAN prefix that earns an orders ID has both rules.
    let lan = Ipv4Addr::new(10, 204, 2, 9);
    assert_eq!(k.xdp(&tcp(lan, 40_000, 22)).action, XDP_PASS);
    assert_eq!(k.xdp(&tcp(lan, 40_000, 8443)).action, XDP_DROP);
    bind(
        &mut k,
        &mut b,
        &earned(
            lan,
            "spiffe://example.org/orders/db",
            Duration::from_secs(60),
        ),
    );
    assert_eq!(k.xdp(&tcp(lan, 40_000, 22)).action, XDP_PASS);
    assert_eq!(k.xdp(&tcp(lan, 40_000, 8443)).action, XDP_PASS);
}

#[test]
fn the_datapath_drops_an_expired_binding_by_itself_cached_or_not() {
    if !require_root("the_datapath_drops_an_expired_binding_by_itself_cached_or_not") {
        return;
    }
    let (mut k, mut b, _) = attestable();
    let lasts = Duration::from_millis(400);
    let e = earned(PEER, "spiffe://example.org/orders/api", lasts);
    let deadline = Instant::now() + lasts;
    bind(&mut k, &mut b, &e);
    // The cached flow and a new one each pass until the deadline, then neither does: nothing
    // but the datapath's own clock moved.
    assert_eq!(k.xdp(&tcp(PEER, 40_000, 8443)).action, XDP_PASS);
    std::thread::sleep(
        deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(20),
    );
    let cached = k.xdp(&tcp(PEER, 40_000, 8443));
    assert_eq!(
        (cached.action, cached.reason),
        (XDP_DROP, Reason::DefaultDeny)
    );
    assert_eq!(k.xdp(&tcp(PEER, 40_003, 8443)).action, XDP_DROP);
    // Renewed (the same identity with a new deadline): admitted again, the drop cached
    // meanwhile included.
    bind(
        &mut k,
        &mut b,
        &earned(
            PEER,
            "spiffe://example.org/orders/api",
            Duration::from_secs(60),
        ),
    );
    assert_eq!(k.xdp(&tcp(PEER, 40_000, 8443)).action, XDP_PASS);
}

#[test]
fn unbinding_ends_a_cached_allow_at_once_and_the_record_goes_too() {
    if !require_root("unbinding_ends_a_cached_allow_at_once_and_the_record_goes_too") {
        return;
    }
    let (mut k, mut b, _) = attestable();
    let e = earned(
        PEER,
        "spiffe://example.org/orders/api",
        Duration::from_secs(60),
    );
    bind(&mut k, &mut b, &e);
    assert_eq!(k.dp.maps().earned(), vec![e.clone()]);
    for _ in 0..2 {
        assert_eq!(k.xdp(&tcp(PEER, 40_000, 8443)).action, XDP_PASS);
    }
    k.dp.unbind(e.addr).expect("unbind");
    assert_eq!(k.xdp(&tcp(PEER, 40_000, 8443)).action, XDP_DROP);
    assert_eq!(k.dp.maps().earned(), Vec::new());
}

#[test]
fn a_binding_leaves_the_cached_verdicts_of_other_slots_alone() {
    if !require_root("a_binding_leaves_the_cached_verdicts_of_other_slots_alone") {
        return;
    }
    let (mut k, mut b, _) = attestable();
    // A LAN peer's flow, cached; then a binding of an address in another bind-sequence slot.
    let lan = Ipv4Addr::new(10, 204, 2, 9);
    let slot = |a: Ipv4Addr| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&a.octets());
        bind_seq_slot(&bytes)
    };
    let elsewhere = (1..=254u8)
        .map(|i| Ipv4Addr::new(10, 204, 1, i))
        .find(|a| slot(*a) != slot(lan))
        .expect("another slot");
    let same = (0..=u16::MAX)
        .map(|i: u16| {
            let [hi, lo] = i.to_be_bytes();
            Ipv4Addr::new(10, 205, hi, lo)
        })
        .find(|a| slot(*a) == slot(lan))
        .expect("an address in the same slot");
    let flow = tcp(lan, 40_000, 22);
    assert_eq!(k.xdp(&flow).action, XDP_PASS);
    // The LAN rule's entries go behind the agent's back (no epoch moves): a packet judged
    // again is dropped, one answered from the cache still passes. That tells them apart. (Its
    // two ports keep its identity unfolded: a fold would answer without the entries.)
    let mut policy: HashMap<MapData, PolicyKey, PolicyValue> =
        support::writable(k.dp.maps().policy_map().map());
    let lan_rule: Vec<PolicyKey> = policy
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.port == 22)
        .collect();
    assert!(
        !lan_rule.is_empty(),
        "the LAN rule has an entry for port 22"
    );
    for key in &lan_rule {
        policy.remove(key).expect("remove");
    }
    assert_eq!(k.xdp(&flow).action, XDP_PASS, "answered from the cache");
    bind(
        &mut k,
        &mut b,
        &earned(
            elsewhere,
            "spiffe://example.org/orders/x",
            Duration::from_secs(60),
        ),
    );
    assert_eq!(
        k.xdp(&flow).action,
        XDP_PASS,
        "a binding in another slot made the LAN flow's cached verdict a miss"
    );
    bind(
        &mut k,
        &mut b,
        &earned(
            same,
            "spiffe://example.org/orders/y",
            Duration::from_secs(60),
        ),
    );
    assert_eq!(
        k.xdp(&flow).action,
        XDP_DROP,
        "a binding in the LAN peer's slot left its cached verdict standing"
    );
}
