//! Earned bindings added to a live generation one at a time, without compiling the policy
//! again: what a full compile with the binding would give the address, and only the entries
//! that compile would add for it.
//!
//! A bound address's identity is the set of rules about it: the CIDR rules whose prefix
//! contains it and the SPIFFE rules its ID matches (pass 3). When a live identity already has
//! that set, binding the address is one identity-map entry. When none does, the set becomes a
//! new identity, with the policy and range entries of its rules (passes 4 and 5 for that one
//! identity) written before the address is bound to it. A later full compile numbers
//! identities afresh; the verdicts are the same (`tests` checks both against each other).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use boundary_common::{
    Direction,
    maps::{FIRST_IDENTITY, Fold, PolicyValue},
};
use ipnet::IpNet;

use super::{
    RangeKey, RuleKey, Tables, entries,
    folds::{Folds, written},
    rules::Placed,
};
use crate::policy::{
    model::{Policy, Rule},
    spiffe::{SpiffeId, SpiffePattern},
    values::Selector,
};

/// A rule a bound peer can have (its selector is a prefix or a SPIFFE pattern), owned.
struct BindRule {
    slot: u16,
    direction: Direction,
    rule: Rule,
}

/// The live generation's identities, as far as binding one more address needs them.
pub struct Binder {
    /// Rules by position (their place in the file, which is the order `merge` breaks ties by).
    rules: BTreeMap<u32, BindRule>,
    spiffe: Vec<(u32, SpiffePattern)>,
    by_cidr: HashMap<IpNet, Vec<u32>>,
    /// Position -> rule id.
    ids: Vec<u32>,
    /// Rule set (positions) -> identity and its fold, every identity of the generation.
    sets: BTreeMap<BTreeSet<u32>, (u32, Fold)>,
    /// Ids of the rules with a rate limit.
    limited: BTreeSet<u32>,
    next: u32,
    /// Statically bound addresses: an earned binding never replaces one.
    statics: BTreeMap<IpAddr, SpiffeId>,
}

/// What binding an address takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub identity: u32,
    /// The entries of a new identity, to write before the address is bound to it (empty when
    /// the identity was live already), as the agent writes them (`folds::written`).
    pub policy: BTreeMap<RuleKey, PolicyValue>,
    pub ranges: BTreeMap<RangeKey, PolicyValue>,
    /// The identity's fold, for the address's identity-map value.
    pub fold: Fold,
}

impl Binder {
    /// The binder of `tables`, compiled from `policy` (the same one).
    pub fn new(policy: &Policy, tables: &Tables) -> Self {
        let slot_of: BTreeMap<&str, u16> =
            tables.names.iter().map(|(s, n)| (n.as_str(), *s)).collect();
        let mut ids = vec![u32::MAX; tables.rules.len()];
        for (id, info) in &tables.rules {
            if let Some(slot) = ids.get_mut(info.position as usize) {
                *slot = *id;
            }
        }
        let position: HashMap<u32, u32> = tables
            .rules
            .iter()
            .map(|(id, info)| (*id, info.position))
            .collect();
        let mut b = Self {
            rules: BTreeMap::new(),
            spiffe: Vec::new(),
            by_cidr: HashMap::new(),
            ids,
            sets: BTreeMap::new(),
            limited: tables.buckets.keys().copied().collect(),
            next: FIRST_IDENTITY,
            statics: policy
                .identities
                .iter()
                .flat_map(|i| i.addresses.iter().map(|a| (*a, i.id.clone())))
                .collect(),
        };
        let mut at = 0u32;
        for w in &policy.workloads {
            let Some(&slot) = slot_of.get(w.name.as_str()) else {
                continue;
            };
            for (direction, list) in [
                (Direction::Ingress, &w.ingress),
                (Direction::Egress, &w.egress),
            ] {
                for rule in list {
                    match &rule.peer {
                        Selector::Cidr(n) => b.by_cidr.entry(*n).or_default().push(at),
                        Selector::Spiffe(p) => b.spiffe.push((at, p.clone())),
                        Selector::World | Selector::Any => {}
                    }
                    if matches!(rule.peer, Selector::Cidr(_) | Selector::Spiffe(_)) {
                        b.rules.insert(
                            at,
                            BindRule {
                                slot,
                                direction,
                                rule: rule.clone(),
                            },
                        );
                    }
                    at += 1;
                }
            }
        }
        let folds = Folds::of(tables);
        for (id, info) in &tables.identity_info {
            let set = info
                .rules
                .iter()
                .filter_map(|r| position.get(r).copied())
                .collect();
            b.sets.insert(set, (*id, folds.get(*id)));
            b.next = b.next.max(id + 1);
        }
        b
    }

    /// The static binding of `addr`, if the policy has one.
    pub fn static_binding(&self, addr: IpAddr) -> Option<&SpiffeId> {
        self.statics.get(&addr)
    }

    /// Binds `addr` to `id`: its identity, and the entries to write first if it is new. The
    /// binder then counts the identity as live.
    pub fn bind(&mut self, addr: IpAddr, id: &SpiffeId) -> Binding {
        let mut set = self.cidr_rules_containing(addr);
        set.extend(
            self.spiffe
                .iter()
                .filter(|(_, p)| p.matches(id))
                .map(|(i, _)| *i),
        );
        if let Some(&(identity, fold)) = self.sets.get(&set) {
            return Binding {
                identity,
                policy: BTreeMap::new(),
                ranges: BTreeMap::new(),
                fold,
            };
        }
        let identity = self.next;
        self.next += 1;
        let rules = &self.rules;
        let (mut policy, mut ranges) =
            entries::expand_pairs(set.iter().map(|r| (identity, *r)), |position| {
                let r = &rules[&position];
                Placed {
                    slot: r.slot,
                    direction: r.direction,
                    rule: &r.rule,
                }
            });
        entries::inherit_covering_ranges(&mut ranges);
        for v in policy.values_mut().chain(ranges.values_mut()) {
            v.rule = self.ids.get(v.rule as usize).copied().unwrap_or(u32::MAX);
            *v = written(*v, self.limited.contains(&v.rule));
        }
        let fold =
            Folds::of_entries(&policy, &ranges, |rule| self.limited.contains(&rule)).get(identity);
        self.sets.insert(set, (identity, fold));
        Binding {
            identity,
            policy,
            ranges,
            fold,
        }
    }

    /// The CIDR rules whose prefix contains `addr`.
    fn cidr_rules_containing(&self, addr: IpAddr) -> BTreeSet<u32> {
        let max = if addr.is_ipv4() { 32u8 } else { 128 };
        let mut out = BTreeSet::new();
        for len in 0..=max {
            let net = IpNet::new(addr, len).expect("valid length").trunc();
            if let Some(v) = self.by_cidr.get(&net) {
                out.extend(v.iter().copied());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use boundary_common::Reason;

    use super::*;
    use crate::{
        policy::{
            compile::{Earned, SlotTable, compile, compile_with, tests::parse},
            values::IPPROTO_TCP,
        },
        reference::{self, Packet, State},
    };

    const POLICY: &str = "apiVersion: boundary.dev/v1
identities:
  - { id: \"spiffe://example.org/static\", addresses: [10.0.0.9] }
workloads:
  - name: w
    addresses: [10.9.9.9]
    ingress:
      - { from: { spiffe: \"spiffe://example.org/a/*\" }, ports: [\"80/tcp\", \"1000-2000/tcp\"] }
      - { from: { spiffe: \"spiffe://example.org/a/b\" }, ports: [\"81/tcp\"], action: deny }
      - { from: { cidr: 10.1.0.0/16 }, ports: [\"82/tcp\", \"1500-1600/tcp\"] }
      - { from: { spiffe: \"spiffe://example.org/static\" }, ports: [\"83/tcp\"] }
      - { from: { world: true }, ports: [\"84/tcp\"] }
";

    fn id(s: &str) -> SpiffeId {
        s.parse().expect("SPIFFE ID")
    }

    /// Binding addresses one at a time into the live tables gives every packet the verdict a
    /// full compile with those bindings gives it.
    #[test]
    fn a_binding_added_live_judges_as_a_full_compile_with_it() {
        let p = parse(POLICY);
        let mut live = compile(&p, &SlotTable::new(), 4).expect("compiles");
        let mut binder = Binder::new(&p, &live);
        let bindings = [
            ("10.1.2.3", "spiffe://example.org/a/b"),
            ("10.1.2.4", "spiffe://example.org/a/c"),
            ("10.2.0.1", "spiffe://example.org/a/b"),
            ("10.2.0.2", "spiffe://example.org/other"),
            ("10.1.2.5", "spiffe://example.org/other"),
            ("10.2.0.3", "spiffe://example.org/a/c"),
        ];
        let mut earned = Earned {
            enabled: true,
            bindings: BTreeMap::new(),
            endpoint: None,
        };
        for (addr, spiffe) in bindings {
            let addr: IpAddr = addr.parse().expect("address");
            let b = binder.bind(addr, &id(spiffe));
            live.policy.extend(b.policy);
            live.ranges.extend(b.ranges);
            live.identities.insert(addr, b.identity);
            earned.bindings.insert(addr, (id(spiffe), 0));
        }
        let full = compile_with(
            &p,
            &SlotTable::new(),
            &BTreeMap::default(),
            &BTreeMap::default(),
            4,
            &earned,
        )
        .expect("compiles");
        for (addr, _) in bindings {
            let src: Ipv4Addr = addr.parse().expect("address");
            for port in [80, 81, 82, 83, 84, 999, 1000, 1499, 1550, 1700, 2000, 2001] {
                let mut pkt =
                    Packet::new(src.into(), Ipv4Addr::new(10, 9, 9, 9).into(), IPPROTO_TCP);
                (pkt.sport, pkt.dport) = (40000, port);
                let judge = |t: &Tables| {
                    let o =
                        reference::decide(t, &mut State::default(), Direction::Ingress, 0, &pkt);
                    (o.slot, o.reason, o.rule)
                };
                assert_eq!(judge(&live), judge(&full), "{addr} -> port {port}");
            }
        }
        // And what those verdicts are, for one peer: its SPIFFE rules and its prefix's, not
        // the world's.
        let verdict = |port| {
            let mut pkt = Packet::new(
                Ipv4Addr::new(10, 1, 2, 3).into(),
                Ipv4Addr::new(10, 9, 9, 9).into(),
                IPPROTO_TCP,
            );
            (pkt.sport, pkt.dport) = (40000, port);
            reference::decide(&live, &mut State::default(), Direction::Ingress, 0, &pkt).reason
        };
        assert_eq!(verdict(80), Reason::PolicyAllow);
        assert_eq!(verdict(1234), Reason::PolicyAllow);
        assert_eq!(verdict(81), Reason::PolicyDeny);
        assert_eq!(verdict(82), Reason::PolicyAllow);
        assert_eq!(verdict(84), Reason::DefaultDeny);
        // The peers of one class share an identity: no new entries the second time.
        assert!(
            binder
                .bind(
                    "10.2.0.9".parse().expect("address"),
                    &id("spiffe://example.org/a/c")
                )
                .policy
                .is_empty()
        );
    }

    #[test]
    fn a_static_binding_is_known() {
        let p = parse(POLICY);
        let t = compile(&p, &SlotTable::new(), 4).expect("compiles");
        let b = Binder::new(&p, &t);
        assert_eq!(
            b.static_binding("10.0.0.9".parse().expect("address")),
            Some(&id("spiffe://example.org/static"))
        );
        assert_eq!(b.static_binding("10.0.0.8".parse().expect("address")), None);
    }
}
