//! Pass 6: endpoints. Each protected address gets its workload's slot, mode and defaults, and
//! flags that let the datapath skip what cannot apply: lookups in directions with no rules, or
//! no rules about peers, or no ranges, and conntrack where nothing could be dropped. A workload
//! that lists interfaces gets an entry per (address, interface) instead of one per address,
//! keyed by the index the policy gives each interface name.

use std::{collections::BTreeMap, net::IpAddr};

use boundary_common::{
    Direction,
    maps::{
        Action, EP_PEERS_EGRESS, EP_PEERS_INGRESS, EP_RANGES_EGRESS, EP_RANGES_INGRESS,
        EP_RULES_EGRESS, EP_RULES_INGRESS, EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint, Mode,
        PolicyValue,
    },
};

use super::RangeKey;
use crate::policy::{
    model::{Policy, Rule, Workload},
    values::{DefaultAction, RuleAction, Selector, Traffic, WorkloadMode},
};

/// Endpoints on every interface, and on one.
pub(super) type Built = (
    BTreeMap<IpAddr, Endpoint>,
    BTreeMap<(IpAddr, u32), Endpoint>,
);

/// Protected address -> endpoint, for every workload: on every interface for those that list
/// none, else (address, interface index) -> endpoint. `ranges` are the range-trie entries.
pub(super) fn build(
    policy: &Policy,
    slot_of: &BTreeMap<&str, u16>,
    ranges: &BTreeMap<RangeKey, PolicyValue>,
) -> Built {
    let mut endpoints = BTreeMap::new();
    let mut on_interfaces = BTreeMap::new();
    for w in &policy.workloads {
        let slot = slot_of[w.name.as_str()];
        let value = Endpoint {
            slot,
            mode: match w.mode {
                WorkloadMode::Enforce => Mode::Enforce as u8,
                WorkloadMode::Audit => Mode::Audit as u8,
            },
            ingress_default: action(w.ingress_default) as u8,
            egress_default: action(w.egress_default) as u8,
            flags: flags(w, slot, ranges),
            pad: [0; 2],
        };
        for a in &w.addresses {
            if w.interfaces.is_empty() {
                endpoints.insert(*a, value);
            }
            for name in &w.interfaces {
                on_interfaces.insert((*a, policy.interfaces[name]), value);
            }
        }
    }
    // Flows are not bound to an interface (nor is the host's own connection tracking): the
    // answer of a flow one workload opens on one interface may come back on another, where
    // another workload owns the same address and could drop it. So an address is tracked on
    // every interface as soon as one of its owners could drop anything.
    let track = EP_TRACK_EGRESS | EP_TRACK_INGRESS;
    let tracked: std::collections::BTreeSet<IpAddr> = endpoints
        .iter()
        .map(|(a, e)| (*a, e.flags))
        .chain(on_interfaces.iter().map(|((a, _), e)| (*a, e.flags)))
        .filter(|(_, f)| f & track != 0)
        .map(|(a, _)| a)
        .collect();
    for (a, e) in &mut endpoints {
        if tracked.contains(a) {
            e.flags |= track;
        }
    }
    for ((a, _), e) in &mut on_interfaces {
        if tracked.contains(a) {
            e.flags |= track;
        }
    }
    (endpoints, on_interfaces)
}

/// The `EP_*` bits of workload `w`, in `slot`.
fn flags(w: &Workload, slot: u16, ranges: &BTreeMap<RangeKey, PolicyValue>) -> u8 {
    // A SPIFFE rule with a port range has range entries only under the identities of peers
    // bound to a matching ID, which an earned binding can add to the live generation: the
    // flag cannot wait for them.
    let spiffe_range = |list: &[Rule]| {
        list.iter().any(|r| {
            matches!(r.peer, Selector::Spiffe(_))
                && r.traffic
                    .iter()
                    .any(|t| matches!(t, Traffic::Ports { lo, hi, .. } if lo != hi))
        })
    };
    let has_ranges = |d: Direction| {
        ranges
            .keys()
            .any(|k| k.slot == slot && k.direction == d as u8)
            || spiffe_range(match d {
                Direction::Ingress => &w.ingress,
                Direction::Egress => &w.egress,
            })
    };
    let has_deny = |list: &[Rule]| list.iter().any(|r| r.action == RuleAction::Deny);
    let mut flags = 0;
    if has_ranges(Direction::Ingress) {
        flags |= EP_RANGES_INGRESS;
    }
    if has_ranges(Direction::Egress) {
        flags |= EP_RANGES_EGRESS;
    }
    // Conntrack only where something could otherwise be dropped: the replies of a flow,
    // or the ICMP errors about it (`related`), which come back in either direction (a
    // router's "fragmentation needed" about a response the workload sends arrives on
    // ingress even though the flow came in on ingress). So either direction that can drop
    // makes the workload track its allowed flows both ways.
    let can_drop = w.ingress_default == DefaultAction::Deny
        || has_deny(&w.ingress)
        || w.egress_default == DefaultAction::Deny
        || has_deny(&w.egress);
    if can_drop {
        flags |= EP_TRACK_EGRESS | EP_TRACK_INGRESS;
    }
    let about_peers = |list: &[Rule]| list.iter().any(|r| r.peer != Selector::Any);
    if !w.ingress.is_empty() {
        flags |= EP_RULES_INGRESS;
    }
    if !w.egress.is_empty() {
        flags |= EP_RULES_EGRESS;
    }
    if about_peers(&w.ingress) {
        flags |= EP_PEERS_INGRESS;
    }
    if about_peers(&w.egress) {
        flags |= EP_PEERS_EGRESS;
    }
    flags
}

fn action(d: DefaultAction) -> Action {
    match d {
        DefaultAction::Allow => Action::Pass,
        DefaultAction::Deny => Action::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::tests::parse;

    fn only_workload(text: &str) -> Workload {
        parse(text).workloads.remove(0)
    }

    #[test]
    fn flags_name_what_the_datapath_may_skip() {
        let open = only_workload(
            "apiVersion: boundary.dev/v1
defaults: { ingress: allow, egress: allow }
workloads:
  - { name: w, addresses: [10.0.0.1], ingress: [{ from: { any: true }, ports: [80] }] }
",
        );
        // Nothing can be dropped, so nothing is tracked; no rule is about a peer.
        assert_eq!(flags(&open, 1, &BTreeMap::new()), EP_RULES_INGRESS);

        let guarded = only_workload(
            "apiVersion: boundary.dev/v1
defaults: { ingress: allow, egress: allow }
workloads:
  - name: w
    addresses: [10.0.0.1]
    egress: [{ to: { cidr: 10.0.0.0/8 }, ports: [1000-2000], action: deny }]
",
        );
        let range = |slot, direction: Direction| RangeKey {
            slot,
            direction: direction as u8,
            proto: 6,
            identity: 2,
            port: 1024,
            bits: 6,
        };
        let deny = PolicyValue {
            action: boundary_common::maps::RULE_DENY,
            flags: 0,
            pad: [0; 2],
            rule: 0,
        };
        let ranges = BTreeMap::from([
            (range(1, Direction::Egress), deny),
            (range(2, Direction::Ingress), deny),
        ]);
        // An egress deny makes both directions track; slot 2's ranges are not slot 1's.
        assert_eq!(
            flags(&guarded, 1, &ranges),
            EP_RULES_EGRESS
                | EP_PEERS_EGRESS
                | EP_RANGES_EGRESS
                | EP_TRACK_EGRESS
                | EP_TRACK_INGRESS
        );
    }

    #[test]
    fn an_address_shared_on_other_interfaces_is_tracked_wherever_one_owner_can_drop() {
        let mut p = parse(
            "apiVersion: boundary.dev/v1
defaults: { ingress: allow, egress: allow }
workloads:
  - { name: open, addresses: [10.0.0.1], interfaces: [lo] }
  - { name: guarded, addresses: [10.0.0.1], interfaces: [eth0], defaults: { ingress: deny } }
  - { name: other, addresses: [10.0.0.2], interfaces: [lo] }
",
        );
        p.interfaces = BTreeMap::from([("lo".into(), 1), ("eth0".into(), 2)]);
        let slot_of = BTreeMap::from([("open", 1), ("guarded", 2), ("other", 3)]);
        let (_, on) = build(&p, &slot_of, &BTreeMap::new());
        let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
        let track = EP_TRACK_EGRESS | EP_TRACK_INGRESS;
        // `open` cannot drop, but a flow it opens on lo may be answered on eth0.
        assert_eq!(on[&(ip("10.0.0.1"), 1)].flags & track, track);
        assert_eq!(on[&(ip("10.0.0.2"), 1)].flags & track, 0);
    }

    #[test]
    fn every_address_of_a_workload_gets_its_endpoint() {
        let p = parse(
            "apiVersion: boundary.dev/v1
workloads:
  - { name: w, addresses: [10.0.0.1, \"fd00::1\"], mode: audit, defaults: { egress: deny } }
",
        );
        let (endpoints, on_interfaces) = build(&p, &BTreeMap::from([("w", 3)]), &BTreeMap::new());
        assert!(on_interfaces.is_empty());
        let want = Endpoint {
            slot: 3,
            mode: Mode::Audit as u8,
            ingress_default: Action::Drop as u8,
            egress_default: Action::Drop as u8,
            flags: EP_TRACK_EGRESS | EP_TRACK_INGRESS,
            pad: [0; 2],
        };
        assert_eq!(endpoints.len(), 2);
        assert!(endpoints.values().all(|e| *e == want), "{endpoints:?}");
    }

    #[test]
    fn a_workload_on_some_interfaces_gets_an_entry_on_each_and_none_for_every_interface() {
        let p = parse(
            "apiVersion: boundary.dev/v1
workloads:
  - { name: w, addresses: [10.0.0.1, \"fd00::1\"], interfaces: [eth1, eth0] }
  - { name: v, addresses: [10.0.0.1], interfaces: [eth2] }
  - { name: u, addresses: [10.0.0.2] }
",
        );
        let (index, addr) = (
            |n: &str| p.interfaces[n],
            |s: &str| s.parse::<IpAddr>().expect("address"),
        );
        let slots = BTreeMap::from([("w", 1), ("v", 2), ("u", 3)]);
        let (everywhere, on_interfaces) = build(&p, &slots, &BTreeMap::new());
        assert_eq!(
            everywhere.keys().copied().collect::<Vec<_>>(),
            [addr("10.0.0.2")]
        );
        let placed: Vec<(IpAddr, u32, u16)> = on_interfaces
            .iter()
            .map(|(&(a, i), e)| (a, i, e.slot))
            .collect();
        let mut want = vec![
            (addr("10.0.0.1"), index("eth1"), 1),
            (addr("10.0.0.1"), index("eth0"), 1),
            (addr("fd00::1"), index("eth1"), 1),
            (addr("fd00::1"), index("eth0"), 1),
            (addr("10.0.0.1"), index("eth2"), 2),
        ];
        want.sort_unstable();
        assert_eq!(placed, want);
    }
}
