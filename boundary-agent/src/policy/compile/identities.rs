//! Pass 3: identities, as the [overview](super) defines them. A peer found by a prefix is not
//! bound, so it is `world` too: a prefix's set holds the CIDR rules containing it and `world`'s
//! rules. A bound address's set holds the CIDR rules containing it and the SPIFFE rules its ID
//! matches. Ids are handed out in a fixed order (`world`, then prefixes, then bound addresses,
//! each sorted) so the same policy always gets the same ids.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use boundary_common::maps::{FIRST_IDENTITY, IDENTITY_WORLD};
use ipnet::IpNet;

use super::{IdentityInfo, rules::Placed};
use crate::policy::{
    model::Policy,
    spiffe::{SpiffeId, SpiffePattern},
    values::Selector,
};

/// Every identity of a policy, and which peers have it.
pub(super) struct Identities {
    /// Rule set -> identity id, `world`'s included.
    pub ids: BTreeMap<BTreeSet<u32>, u32>,
    /// Rules on `any` peer.
    pub any_rules: Vec<u32>,
    /// Bound address -> identity.
    pub exact: BTreeMap<IpAddr, u32>,
    /// Rule prefix -> identity.
    pub cidrs: BTreeMap<IpNet, u32>,
    pub info: BTreeMap<u32, IdentityInfo>,
}

/// As the [overview](super) says, for `policy`'s static bindings and the `earned` ones (of
/// addresses no static binding names: a static binding wins).
pub(super) fn classify(
    policy: &Policy,
    rules: &[Placed],
    earned: &BTreeMap<IpAddr, SpiffeId>,
) -> Identities {
    let selected = Selected::index(rules);
    let mut ids = Interner::new(selected.world.clone());
    let mut exact = BTreeMap::new();
    let mut cidrs = BTreeMap::new();
    let mut info: BTreeMap<u32, IdentityInfo> = BTreeMap::new();
    selected
        .world
        .clone_into(&mut info.entry(IDENTITY_WORLD).or_default().rules);

    let mut prefixes: Vec<IpNet> = selected.by_cidr.keys().copied().collect();
    prefixes.sort();
    for net in prefixes {
        let mut set = selected.cidr_rules_containing(net);
        set.extend(selected.world.iter().copied());
        let id = ids.intern(set.clone());
        cidrs.insert(net, id);
        let info = info.entry(id).or_default();
        info.cidrs.insert(net);
        info.rules = set;
    }

    let mut bindings: Vec<(IpAddr, &SpiffeId)> = policy
        .identities
        .iter()
        .flat_map(|i| i.addresses.iter().map(move |a| (*a, &i.id)))
        .collect();
    let statics: BTreeSet<IpAddr> = bindings.iter().map(|(a, _)| *a).collect();
    bindings.extend(
        earned
            .iter()
            .filter(|(a, _)| !statics.contains(a))
            .map(|(a, id)| (*a, id)),
    );
    bindings.sort();
    for (addr, spiffe) in bindings {
        let mut set = selected.cidr_rules_containing(IpNet::from(addr));
        set.extend(
            selected
                .spiffe
                .iter()
                .filter(|(_, p)| p.matches(spiffe))
                .map(|(i, _)| *i),
        );
        let id = ids.intern(set.clone());
        exact.insert(addr, id);
        let info = info.entry(id).or_default();
        info.spiffe.insert(spiffe.to_string());
        info.rules = set;
    }

    Identities {
        ids: ids.ids,
        any_rules: selected.any,
        exact,
        cidrs,
        info,
    }
}

/// The rules each kind of selector picks, by rule id.
struct Selected<'a> {
    by_cidr: HashMap<IpNet, Vec<u32>>,
    spiffe: Vec<(u32, &'a SpiffePattern)>,
    world: BTreeSet<u32>,
    any: Vec<u32>,
}

impl<'a> Selected<'a> {
    fn index(rules: &[Placed<'a>]) -> Self {
        let mut s = Self {
            by_cidr: HashMap::new(),
            spiffe: Vec::new(),
            world: BTreeSet::new(),
            any: Vec::new(),
        };
        // Ids fit: `rules::number` refuses more than MAX_RULES.
        for (id, r) in (0u32..).zip(rules) {
            match &r.rule.peer {
                Selector::Cidr(n) => s.by_cidr.entry(*n).or_default().push(id),
                Selector::Spiffe(p) => s.spiffe.push((id, p)),
                Selector::World => {
                    s.world.insert(id);
                }
                Selector::Any => s.any.push(id),
            }
        }
        s
    }

    /// The CIDR rules whose prefix contains `net`.
    fn cidr_rules_containing(&self, net: IpNet) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for p in prefixes_of(net.addr()).filter(|p| p.prefix_len() <= net.prefix_len()) {
            if let Some(v) = self.by_cidr.get(&p) {
                out.extend(v.iter().copied());
            }
        }
        out
    }
}

/// Every prefix of `addr` from the longest to /0.
fn prefixes_of(addr: IpAddr) -> impl Iterator<Item = IpNet> {
    let max = if addr.is_ipv4() { 32u8 } else { 128 };
    (0..=max)
        .rev()
        .map(move |len| IpNet::new(addr, len).expect("valid length").trunc())
}

/// One id per distinct rule set: `world`'s set is [`IDENTITY_WORLD`], the others count up
/// from [`FIRST_IDENTITY`] as they are first seen.
struct Interner {
    ids: BTreeMap<BTreeSet<u32>, u32>,
    next: u32,
}

impl Interner {
    fn new(world: BTreeSet<u32>) -> Self {
        Self {
            ids: BTreeMap::from([(world, IDENTITY_WORLD)]),
            next: FIRST_IDENTITY,
        }
    }

    fn intern(&mut self, set: BTreeSet<u32>) -> u32 {
        *self.ids.entry(set).or_insert_with(|| {
            let id = self.next;
            self.next += 1;
            id
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::{rules, tests::parse};

    /// The identities of a policy whose one workload has `ingress` (a YAML flow list).
    fn classified(identities: &str, ingress: &str) -> Identities {
        let p = parse(&format!(
            "apiVersion: boundary.dev/v1
identities: {identities}
workloads:
  - {{ name: w, addresses: [10.9.9.9], ingress: {ingress} }}
"
        ));
        let (placed, _) = rules::number(&p, &BTreeMap::from([("w", 1)])).expect("fits");
        classify(&p, &placed, &BTreeMap::new())
    }

    fn set(rules: &[u32]) -> BTreeSet<u32> {
        rules.iter().copied().collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn a_prefix_carries_every_cidr_rule_containing_it_and_the_world_rules() {
        let i = classified(
            "[]",
            "[{ from: { cidr: 10.0.0.0/8 } }, { from: { cidr: 10.1.0.0/16 } },
              { from: { world: true } }, { from: { any: true } }]",
        );
        assert_eq!(i.info[&IDENTITY_WORLD].rules, set(&[2]));
        assert_eq!(
            i.cidrs,
            BTreeMap::from([(net("10.0.0.0/8"), 2), (net("10.1.0.0/16"), 3)])
        );
        assert_eq!(i.info[&3].rules, set(&[0, 1, 2]));
        assert_eq!(i.any_rules, [3]);
        assert_eq!(
            i.ids,
            BTreeMap::from([(set(&[2]), 1), (set(&[0, 2]), 2), (set(&[0, 1, 2]), 3)])
        );
    }

    #[test]
    fn a_bound_address_has_its_cidr_and_spiffe_rules_but_not_the_world_rules() {
        let i = classified(
            "[{ id: \"spiffe://example.org/a\", addresses: [10.1.2.3, 192.0.2.1] },
              { id: \"spiffe://example.org/b\", addresses: [10.1.2.4] }]",
            "[{ from: { cidr: 10.0.0.0/8 } }, { from: { spiffe: \"spiffe://example.org/a\" } },
              { from: { world: true } }]",
        );
        let addr = |s: &str| -> IpAddr { s.parse().expect("address") };
        // 10.0.0.0/8 takes id 2 first; then the bindings, in address order.
        assert_eq!(
            i.exact,
            BTreeMap::from([
                (addr("10.1.2.3"), 3),
                (addr("10.1.2.4"), 4),
                (addr("192.0.2.1"), 5)
            ])
        );
        assert_eq!(i.info[&3].rules, set(&[0, 1]));
        assert_eq!(i.info[&4].rules, set(&[0]));
        assert_eq!(i.info[&5].rules, set(&[1]));
        assert_eq!(
            i.info[&3].spiffe,
            BTreeSet::from(["spiffe://example.org/a".to_owned()])
        );
    }

    #[test]
    fn peers_no_rule_tells_apart_share_an_identity() {
        let i = classified(
            "[{ id: \"spiffe://example.org/a\", addresses: [10.1.2.3] },
              { id: \"spiffe://example.org/b\", addresses: [10.1.2.4] }]",
            "[{ from: { any: true } }]",
        );
        // No rule is about peers: every bound address is `world`.
        assert_eq!(i.exact.values().copied().collect::<Vec<_>>(), [1, 1]);
        assert_eq!(i.info[&IDENTITY_WORLD].spiffe.len(), 2);
    }
}
