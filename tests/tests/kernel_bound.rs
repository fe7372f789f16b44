//! Tier 2, the bound-address bitmap (`BOUND_MAP`): a clear bit skips the identity-map probe,
//! so a bound peer whose bit is clear would be judged as a CIDR or `world` peer. Through
//! swaps that add, drop and bring back static bindings, earned bindings made, taken out and
//! made again between swaps, IPv4, IPv6 and IPv4-mapped IPv6 peers: every peer's verdict with
//! the agent's bitmap is the one it gets with its bit forced set (the probe always made), and
//! bound peers are admitted by their rule.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::maps::{Array, IterableMap as _, MapData};
use boundary_agent::policy::Policy;
use boundary_common::{
    Reason,
    maps::{bound_bit, bound_word_index},
};
use boundary_tests::require_root;
use support::{Kernel, bind_live, earned, swap_earned};

const ORDERS_API: &str = "spiffe://example.org/orders/api";

const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 209, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x209, 0, 0, 0, 0, 0, 1);

/// With the static bindings; [`without_statics`] drops them.
const POLICY: &str = r#"apiVersion: boundary.dev/v1
failsafe: []
identities:
  - { id: "spiffe://example.org/db", addresses: [10.209.3.5, "fd00:209:3::5", "::ffff:10.209.3.6"] }
workloads:
  - name: api
    addresses: [10.209.0.1, "fd00:209::1"]
    ingress:
      - { name: db, from: { spiffe: "spiffe://example.org/db" }, ports: ["80/udp"] }
      - { name: orders, from: { spiffe: "spiffe://example.org/orders/*" }, ports: ["81/udp"] }
      - { name: lan, from: { cidr: 10.209.9.0/24 }, ports: ["90/udp"] }
"#;

fn without_statics() -> String {
    POLICY.replace(
        "[10.209.3.5, \"fd00:209:3::5\", \"::ffff:10.209.3.6\"]",
        "[10.209.3.99]",
    )
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The peers probed, each on the ports of the three rules.
fn peers() -> Vec<IpAddr> {
    [
        "10.209.3.5",
        "fd00:209:3::5",
        "::ffff:10.209.3.6",
        "10.209.3.6",
        "10.209.1.7",
        "fd00:209:1::7",
        "::ffff:10.209.1.7",
        "10.209.9.4",
        "8.8.8.8",
        "fe80::1",
    ]
    .into_iter()
    .map(addr)
    .collect()
}

fn to_server(src: IpAddr, dport: u16, sport: u16) -> Vec<u8> {
    support::udp_to(src, (SERVER4, SERVER6), dport, sport)
}

/// The 16 bytes the datapath keys `a` by.
fn key_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&a.octets());
            out
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Each peer's reason on each port, each a new flow.
fn verdicts(k: &mut Kernel, sport: &mut u16) -> BTreeMap<(IpAddr, u16), Reason> {
    let mut out = BTreeMap::new();
    for peer in peers() {
        for port in [80, 81, 90] {
            *sport += 1;
            out.insert((peer, port), k.xdp(&to_server(peer, port, *sport)).reason);
        }
    }
    out
}

/// The verdicts as they are, then with every probed peer's bit set in the live generation
/// (behind the agent's back, put back after): they must agree. Returns them.
fn checked(k: &mut Kernel, sport: &mut u16, step: &str) -> BTreeMap<(IpAddr, u16), Reason> {
    let got = verdicts(k, sport);
    let g = k.dp.maps().datapath_config().expect("config").generation;
    let mut bound: Array<MapData, u64> = support::writable(k.dp.maps().bound_map().map());
    let mut saved = BTreeMap::new();
    for peer in peers() {
        let bit = bound_bit(&key_bytes(peer));
        let index = bound_word_index(g, bit);
        let word = bound.get(&index, 0).expect("word");
        saved.entry(index).or_insert(word);
        bound
            .set(index, &(word | (1u64 << (bit & 63))), 0)
            .expect("set");
    }
    let probed = verdicts(k, sport);
    for (index, word) in saved {
        bound.set(index, &word, 0).expect("restore");
    }
    let wrong: Vec<String> = got
        .iter()
        .filter(|(p, r)| probed[*p] != **r)
        .map(|((peer, port), r)| {
            format!(
                "{peer} -> {port}: {r:?} with the bitmap, {:?} with the probe",
                probed[&(*peer, *port)]
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{step}: {wrong:#?}");
    got
}

#[test]
fn a_bound_peer_is_never_judged_unbound_by_the_bitmap() {
    use Reason::{DefaultDeny as Deny, PolicyAllow as Allow};
    if !require_root("a_bound_peer_is_never_judged_unbound_by_the_bitmap") {
        return;
    }
    let with = Policy::from_str("p.yaml", POLICY).expect("valid");
    let without = Policy::from_str("p.yaml", &without_statics()).expect("valid");
    let mut k = Kernel::empty();
    let mut sport = 20_000;
    let v4 = earned(addr("10.209.1.7"), ORDERS_API, Duration::from_secs(600));
    let v6 = earned(addr("fd00:209:1::7"), ORDERS_API, Duration::from_secs(600));

    let t = swap_earned(&mut k, &with, &[]);
    let v = checked(&mut k, &mut sport, "statics");
    for peer in ["10.209.3.5", "fd00:209:3::5"] {
        assert_eq!(v[&(addr(peer), 80)], Allow, "{peer}: bound, static");
        assert_eq!(v[&(addr(peer), 81)], Deny, "{peer}");
    }
    assert_eq!(v[&(addr("10.209.9.4"), 90)], Allow, "CIDR peer");
    assert_eq!(v[&(addr("10.209.1.7"), 81)], Deny, "not bound yet");

    // Earned in the live generation, then carried by the next swaps.
    bind_live(&mut k, &with, &t, &v4);
    bind_live(&mut k, &with, &t, &v6);
    let v = checked(&mut k, &mut sport, "earned, live");
    assert_eq!(v[&(v4.addr, 81)], Allow);
    assert_eq!(v[&(v6.addr, 81)], Allow);
    for step in ["earned, swapped once", "earned, swapped twice"] {
        swap_earned(&mut k, &with, &[&v4, &v6]);
        let v = checked(&mut k, &mut sport, step);
        assert_eq!(v[&(v4.addr, 81)], Allow, "{step}");
        assert_eq!(v[&(v6.addr, 81)], Allow, "{step}");
    }

    // The statics gone (their bits cleared in each generation), the earned ones taken out...
    swap_earned(&mut k, &without, &[&v4, &v6]);
    k.dp.unbind(v4.addr).expect("unbind");
    let t2 = swap_earned(&mut k, &without, &[&v6]);
    let v = checked(&mut k, &mut sport, "statics dropped, v4 unbound");
    assert_eq!(v[&(addr("10.209.3.5"), 80)], Deny);
    assert_eq!(v[&(v4.addr, 81)], Deny);
    assert_eq!(v[&(v6.addr, 81)], Allow);
    // ... and made again: in the live generation, then through both generations.
    bind_live(&mut k, &without, &t2, &v4);
    let v = checked(&mut k, &mut sport, "v4 earned again");
    assert_eq!(v[&(v4.addr, 81)], Allow);
    for step in ["statics back", "statics back, swapped twice"] {
        swap_earned(&mut k, &with, &[&v4, &v6]);
        let v = checked(&mut k, &mut sport, step);
        for peer in ["10.209.3.5", "fd00:209:3::5"] {
            assert_eq!(v[&(addr(peer), 80)], Allow, "{step}: {peer}");
        }
        assert_eq!(v[&(v4.addr, 81)], Allow, "{step}");
        assert_eq!(v[&(v6.addr, 81)], Allow, "{step}");
    }
}
