//! Tier 2, CIDR identities as the datapath finds them: the real programs through
//! `BPF_PROG_TEST_RUN`, with nested and overlapping prefixes of many lengths, IPv4 and IPv6
//! (IPv4-mapped included), laid out in prefix levels, left in the trie (a map too small for
//! the levels), and split (IPv4 in levels, IPv6 in the trie). Each CIDR rule opens a port of
//! its own, so a peer is admitted on exactly the ports of the prefixes that hold it: a walk
//! that stopped a level short, went a level too far or answered for a neighbour's region
//! opens or closes a port it should not. `trace`'s reading of the live maps must agree.

mod support;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use boundary_agent::{
    datapath::LoadOptions,
    policy::{self, Policy, SlotTable, compile::prefixes::PrefixLayout},
};
use boundary_common::{
    Reason,
    maps::{Action, IDENTITY_WORLD, MAX_PREFIX_LEVELS, PREFIX_LEVELS_TRIE, PREFIXES_MAP},
};
use boundary_tests::{
    packets::{self, L4},
    require_root,
};
use ipnet::IpNet;
use support::Kernel;

const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 205, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x205, 0, 0, 0, 0, 0, 1);
const FIRST_PORT: u16 = 20_000;

/// Nested, overlapping and sibling prefixes, 0 to 32 and 0 to 128 bits long.
const PREFIXES: [&str; 22] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.128.0/17",
    "10.1.2.0/24",
    "10.1.2.128/25",
    "10.1.2.192/26",
    "10.1.2.200/32",
    "10.1.3.0/24",
    "172.16.0.0/12",
    "172.16.5.0/24",
    "192.168.0.0/16",
    "192.168.66.64/27",
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1:2::/56",
    "fd00:1:2:3::/64",
    "fd00:1:2:3::8/125",
    "fd00:1:2:3::9/128",
    "2001:db8::/32",
    "2001:db8:0:1::/64",
    "::ffff:10.1.2.0/120",
];

fn policy_yaml() -> String {
    let mut y = format!(
        "apiVersion: boundary.dev/v1\nfailsafe: []\nworkloads:\n  - name: api\n    addresses: [{SERVER4}, \"{SERVER6}\"]\n    ingress:\n"
    );
    for (i, p) in PREFIXES.iter().enumerate() {
        let _ = writeln!(
            y,
            "      - {{ from: {{ cidr: \"{p}\" }}, ports: [\"{}/udp\"] }}",
            port(i)
        );
    }
    y
}

fn port(i: usize) -> u16 {
    FIRST_PORT + u16::try_from(i).expect("few rules")
}

fn nets() -> Vec<IpNet> {
    PREFIXES.iter().map(|p| p.parse().expect("valid")).collect()
}

/// The edges of every prefix and their neighbours, a middle address, and a few strangers.
fn probes() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![
        "8.8.8.8".parse().expect("valid"),
        "fe80::1".parse().expect("valid"),
        "::ffff:10.1.3.1".parse().expect("valid"),
    ];
    for n in nets() {
        match n {
            IpNet::V4(v) => {
                let (lo, hi) = (u32::from(v.network()), u32::from(v.broadcast()));
                for a in [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo + (hi - lo) / 2,
                ] {
                    out.push(Ipv4Addr::from(a).into());
                }
            }
            IpNet::V6(v) => {
                let (lo, hi) = (u128::from(v.network()), u128::from(v.broadcast()));
                for a in [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo + (hi - lo) / 2,
                ] {
                    out.push(Ipv6Addr::from(a).into());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn frame(src: IpAddr, dport: u16) -> Vec<u8> {
    let l4 = L4::Udp {
        sport: 40_000,
        dport,
    };
    match src {
        IpAddr::V4(a) => packets::v4(a, SERVER4, l4, b"x"),
        IpAddr::V6(a) => packets::v6(a, SERVER6, l4, b"x"),
    }
}

/// The longest prefix of the compiled tables holding `addr`, as the trie would find it.
fn longest(cidrs: &BTreeMap<IpNet, u32>, addr: IpAddr) -> Option<u32> {
    cidrs
        .iter()
        .filter(|(n, _)| n.contains(&addr))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, id)| *id)
        .filter(|id| *id != IDENTITY_WORLD)
}

/// Every probe on every rule's port: admitted exactly where the rule's prefix holds it.
/// Returns the levels of each family the generation was written with.
fn check(k: &mut Kernel) -> [u8; 2] {
    let policy = Policy::from_str("test-policy.yaml", &policy_yaml()).expect("valid policy");
    let tables = policy::compile(&policy, &SlotTable::new(), 8).expect("compiles");
    let generation = k.dp.maps().datapath_config().expect("config").generation;
    let mut wrong = Vec::new();
    for addr in probes() {
        for (i, net) in nets().iter().enumerate() {
            let got = k.xdp(&frame(addr, port(i))).reason;
            let want = if net.contains(&addr) {
                Reason::PolicyAllow
            } else {
                Reason::DefaultDeny
            };
            if got != want {
                wrong.push(format!("{addr} -> {} ({net}): {got:?}", port(i)));
            }
        }
        assert_eq!(
            k.dp.maps().live_cidr_identity(generation, addr),
            longest(&tables.cidrs, addr),
            "trace's reading of the live maps for {addr}"
        );
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts: {wrong:#?}",
        wrong.len()
    );
    k.dp.maps()
        .prefix_levels(generation)
        .expect("levels entry")
        .count
}

/// The smallest room (regions per generation) in which this policy's IPv4 prefixes take
/// levels and its IPv6 prefixes do not fit after them.
fn split_room() -> u32 {
    let policy = Policy::from_str("test-policy.yaml", &policy_yaml()).expect("valid policy");
    let tables = policy::compile(&policy, &SlotTable::new(), 8).expect("compiles");
    (1..10_000)
        .find(|&room| {
            let l = PrefixLayout::of_with(&tables.cidrs, room, 0);
            l.levels.count[0] != PREFIX_LEVELS_TRIE && l.levels.count[1] == PREFIX_LEVELS_TRIE
        })
        .map(|room| u32::try_from(room).expect("small"))
        .expect("a room that splits the families")
}

#[test]
fn nested_prefixes_of_many_lengths_find_their_longest_match_in_levels() {
    if !require_root("nested_prefixes_of_many_lengths_find_their_longest_match_in_levels") {
        return;
    }
    let options = LoadOptions {
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    let [v4, v6] = check(&mut k);
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v4)),
        "IPv4 in levels: {v4}"
    );
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v6)),
        "IPv6 in levels: {v6}"
    );
}

#[test]
fn a_small_policy_keeps_its_prefixes_in_the_trie_by_default() {
    if !require_root("a_small_policy_keeps_its_prefixes_in_the_trie_by_default") {
        return;
    }
    let mut k = Kernel::new(&policy_yaml(), Action::Pass);
    assert_eq!(check(&mut k), [PREFIX_LEVELS_TRIE; 2]);
}

#[test]
fn prefixes_the_levels_have_no_room_for_stay_in_the_trie_with_the_same_verdicts() {
    if !require_root("prefixes_the_levels_have_no_room_for_stay_in_the_trie_with_the_same_verdicts")
    {
        return;
    }
    let options = LoadOptions {
        capacities: &[(PREFIXES_MAP, 2)],
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    assert_eq!(check(&mut k), [PREFIX_LEVELS_TRIE; 2]);
}

#[test]
fn one_family_in_levels_and_the_other_in_the_trie_in_one_generation() {
    if !require_root("one_family_in_levels_and_the_other_in_the_trie_in_one_generation") {
        return;
    }
    let room = 2 * split_room();
    let capacities = [(PREFIXES_MAP, room)];
    let options = LoadOptions {
        capacities: &capacities,
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    let [v4, v6] = check(&mut k);
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v4)),
        "IPv4 in levels: {v4}"
    );
    assert_eq!(v6, PREFIX_LEVELS_TRIE);
}
