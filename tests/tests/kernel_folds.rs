//! Tier 2, folded identities: an identity the policy names in one entry carries that entry in
//! its own value (an exact binding, a prefix region, the trie, `world`), so a flow's first
//! packet is judged without the policy lookup (issue #15). The real programs through
//! `BPF_PROG_TEST_RUN`, XDP, TC ingress and TC egress, CIDR identities in the trie and in the
//! prefix levels.
//!
//! The proof that a fold is read, and read only where it answers: the identities' own policy
//! entries are removed behind the agent's back (no epoch moves). A folded identity's new flows
//! are still judged by its rule; an identity of two entries falls to its default (its
//! entries are gone); a folded identity's packets its entry does not match still find the
//! `any`-peer rule and nothing else.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{HashMap, IterableMap as _, MapData};
use boundary_agent::datapath::LoadOptions;
use boundary_common::{
    Direction, Reason,
    maps::{Action, IDENTITY_ANY, PolicyKey, PolicyValue},
};
use boundary_tests::{
    packets::{self, L4},
    require_root,
};
use support::Kernel;

const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 206, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x206, 0, 0, 0, 0, 0, 1);

const POLICY: &str = r#"apiVersion: boundary.dev/v1
failsafe: []
identities:
  - { id: "spiffe://example.org/db", addresses: [10.3.0.5] }
workloads:
  - name: api
    addresses: [10.206.0.1, "fd00:206::1"]
    ingress:
      - { name: one-v4, from: { cidr: 10.1.0.0/16 }, ports: ["80/udp"] }
      - { name: one-v6, from: { cidr: "fd00:1::/32" }, ports: ["80/udp"] }
      - { name: two, from: { cidr: 10.2.0.0/16 }, ports: ["80/udp", "81/udp"] }
      - { name: bound, from: { spiffe: "spiffe://example.org/db" }, ports: ["80/udp"] }
      - { name: any, from: { any: true }, ports: ["22/udp"] }
    egress:
      - { name: out, to: { cidr: 10.7.0.0/16 }, ports: ["443/udp"] }
      - { name: out-any, to: { any: true }, ports: ["53/udp"] }
"#;

/// `world`'s rules apply to CIDR peers too: here `world` has one entry and the prefix's
/// identity two.
const WORLD_POLICY: &str = r#"apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: api
    addresses: [10.206.0.1, "fd00:206::1"]
    ingress:
      - { name: world, from: { world: true }, ports: ["90/udp"] }
      - { name: lan, from: { cidr: 10.1.0.0/16 }, ports: ["80/udp"] }
      - { name: any, from: { any: true }, ports: ["22/udp"] }
"#;

type Probe = (IpAddr, u16, Reason, Reason);

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// An ingress UDP frame from `src` to the workload, from a source port no earlier frame used
/// (a new flow: judged by the policy, not the verdict cache).
fn to_server(src: IpAddr, dport: u16, sport: u16) -> Vec<u8> {
    let l4 = L4::Udp { sport, dport };
    match src {
        IpAddr::V4(a) => packets::v4(a, SERVER4, l4, b"x"),
        IpAddr::V6(a) => packets::v6(a, SERVER6, l4, b"x"),
    }
}

fn from_server(dst: Ipv4Addr, dport: u16, sport: u16) -> Vec<u8> {
    packets::v4(SERVER4, dst, L4::Udp { sport, dport }, b"x")
}

/// The ingress probes of [`POLICY`]: (peer, port, verdict with every entry, verdict once the
/// identities' own entries are gone).
fn ingress_probes() -> Vec<Probe> {
    use Reason::{DefaultDeny as Deny, PolicyAllow as Allow};
    vec![
        // Folded: one entry each.
        (addr("10.1.2.3"), 80, Allow, Allow),
        (addr("fd00:1::5"), 80, Allow, Allow),
        (addr("10.3.0.5"), 80, Allow, Allow),
        // Folded, another port: the `any` rule, or nothing.
        (addr("10.1.2.3"), 22, Allow, Allow),
        (addr("10.1.2.3"), 81, Deny, Deny),
        (addr("fd00:1::5"), 81, Deny, Deny),
        (addr("fd00:1::5"), 22, Allow, Allow),
        (addr("10.3.0.5"), 22, Allow, Allow),
        (addr("10.3.0.5"), 81, Deny, Deny),
        // `world`, no entry of its own: the `any` rule, or nothing.
        (addr("8.8.8.8"), 22, Allow, Allow),
        (addr("8.8.8.8"), 80, Deny, Deny),
        (addr("fe80::1"), 80, Deny, Deny),
        // Two entries: looked up, so gone with them.
        (addr("10.2.2.3"), 80, Allow, Deny),
        (addr("10.2.2.3"), 81, Allow, Deny),
        (addr("10.2.2.3"), 22, Allow, Allow),
    ]
}

/// The probes of [`WORLD_POLICY`].
fn world_probes() -> Vec<Probe> {
    use Reason::{DefaultDeny as Deny, PolicyAllow as Allow};
    vec![
        (addr("8.8.8.8"), 90, Allow, Allow),
        (addr("fe80::1"), 90, Allow, Allow),
        (addr("8.8.8.8"), 80, Deny, Deny),
        (addr("8.8.8.8"), 22, Allow, Allow),
        (addr("10.1.2.3"), 80, Allow, Deny),
        (addr("10.1.2.3"), 90, Allow, Deny),
        (addr("10.1.2.3"), 22, Allow, Allow),
    ]
}

/// Removes every policy entry of a peer identity (not `any`'s) behind the agent's back.
fn forget_identities_entries(k: &Kernel) -> usize {
    let mut policy: HashMap<MapData, PolicyKey, PolicyValue> =
        support::writable(k.dp.maps().policy_map().map());
    let keys: Vec<PolicyKey> = policy
        .keys()
        .filter_map(Result::ok)
        .filter(|key| key.identity != IDENTITY_ANY)
        .collect();
    for key in &keys {
        policy.remove(key).expect("remove");
    }
    keys.len()
}

/// Every probe on every hook, each a new flow; returns what came out unlike `want`.
fn wrong_verdicts(k: &mut Kernel, probes: &[Probe], sport: &mut u16, after: bool) -> Vec<String> {
    let mut wrong = Vec::new();
    for tc_ingress in [false, true] {
        k.tc_ingress = tc_ingress;
        for &(peer, port, before_removal, after_removal) in probes {
            let want = if after { after_removal } else { before_removal };
            *sport += 1;
            let got = k.xdp(&to_server(peer, port, *sport)).reason;
            if got != want {
                let hook = if tc_ingress { "tc ingress" } else { "xdp" };
                wrong.push(format!("{hook}: {peer} -> {port}: {got:?}, want {want:?}"));
            }
        }
    }
    if probes != ingress_probes() {
        return wrong;
    }
    // Egress: the workload's default there is allow, so a lost entry shows as default_allow.
    for (peer, port, want) in [
        (Ipv4Addr::new(10, 7, 1, 1), 443, Reason::PolicyAllow),
        (Ipv4Addr::new(10, 7, 1, 1), 53, Reason::PolicyAllow),
        (Ipv4Addr::new(10, 7, 1, 1), 444, Reason::DefaultAllow),
        (Ipv4Addr::new(10, 8, 1, 1), 443, Reason::DefaultAllow),
    ] {
        *sport += 1;
        let got = k
            .run(Direction::Egress, &from_server(peer, port, *sport))
            .reason;
        if got != want {
            wrong.push(format!(
                "tc egress: -> {peer}:{port}: {got:?}, want {want:?}"
            ));
        }
    }
    wrong
}

#[test]
fn a_folded_identity_is_judged_by_its_rule_without_its_policy_entry() {
    if !require_root("a_folded_identity_is_judged_by_its_rule_without_its_policy_entry") {
        return;
    }
    let trie = LoadOptions::default();
    let levels = LoadOptions {
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    // POLICY: one-v4, one-v6, two (2), bound, out: 6 entries of peer identities.
    // WORLD_POLICY: world's, and lan's two (its own and world's).
    let cases = [
        (POLICY, ingress_probes(), 6),
        (WORLD_POLICY, world_probes(), 3),
    ];
    for (policy, probes, entries) in &cases {
        for (layout, options) in [("trie", &trie), ("prefix levels", &levels)] {
            let mut k = Kernel::loaded_with(policy, Action::Pass, options);
            let mut sport = 10_000;
            let wrong = wrong_verdicts(&mut k, probes, &mut sport, false);
            assert!(wrong.is_empty(), "{layout}, every entry there: {wrong:#?}");
            assert_eq!(forget_identities_entries(&k), *entries, "{layout}");
            let wrong = wrong_verdicts(&mut k, probes, &mut sport, true);
            assert!(
                wrong.is_empty(),
                "{layout}, identities' entries removed: {wrong:#?}"
            );
        }
    }
}
