//! What the map writer puts beside the compiled entries so that a flow's first packet does
//! fewer lookups: each identity's fold (see `boundary_common::maps::Fold`), and the flag that
//! says a rule has no rate limit. Derived from the tables as they are written, not kept in
//! them: the tables stay what the policy says, these are how the datapath reads it faster.
//!
//! Measured by the bench (issue #15): at 100k and 1M identities the policy entry of a new
//! flow (a hash probe: bucket and element, two dependent cache misses) and its rule's bucket
//! index (an array line per rule) were most of the first packet's misses once the prefix
//! levels had made the identity itself a probe or two.

use std::collections::{BTreeMap, HashMap};

use boundary_common::maps::{Fold, IDENTITY_ANY, POLICY_NO_LIMIT, PolicyValue};

use super::{RangeKey, RuleKey, Tables};

/// The fold of every identity of one generation.
#[derive(Debug, Default)]
pub struct Folds {
    /// Identities with entries of their own: [`Fold::one`] or, with more than one (or any
    /// range), [`Fold::NONE`]. Every other identity has none: [`Fold::EMPTY`].
    by_identity: HashMap<u32, Fold>,
}

impl Folds {
    /// The folds of `t`'s identities, their values as [`written`] writes them.
    pub fn of(t: &Tables) -> Self {
        Self::of_entries(&t.policy, &t.ranges, |rule| t.buckets.contains_key(&rule))
    }

    /// The folds of the identities that have entries in `policy` and `ranges`; `limited` says
    /// which rules have a rate limit (see [`written`]).
    pub fn of_entries(
        policy: &BTreeMap<RuleKey, PolicyValue>,
        ranges: &BTreeMap<RangeKey, PolicyValue>,
        limited: impl Fn(u32) -> bool,
    ) -> Self {
        let mut by_identity: HashMap<u32, Fold> = HashMap::new();
        for (k, v) in policy {
            if k.identity == IDENTITY_ANY {
                continue;
            }
            by_identity
                .entry(k.identity)
                .and_modify(|f| *f = Fold::NONE)
                .or_insert_with(|| {
                    Fold::one(
                        k.direction,
                        k.proto,
                        k.slot,
                        k.port,
                        written(*v, limited(v.rule)),
                    )
                });
        }
        for k in ranges.keys() {
            if k.identity != IDENTITY_ANY {
                by_identity.insert(k.identity, Fold::NONE);
            }
        }
        Self { by_identity }
    }

    /// The fold of `identity`: it must be one of the generation the folds were made of (an
    /// identity with no entry there has [`Fold::EMPTY`]).
    pub fn get(&self, identity: u32) -> Fold {
        self.by_identity
            .get(&identity)
            .copied()
            .unwrap_or(Fold::EMPTY)
    }
}

/// `v` as the agent writes it: with [`POLICY_NO_LIMIT`] when its rule has no rate limit
/// (`limited` false), so the datapath skips reading the rule's bucket.
pub fn written(v: PolicyValue, limited: bool) -> PolicyValue {
    PolicyValue {
        flags: if limited { 0 } else { POLICY_NO_LIMIT },
        ..v
    }
}

#[cfg(test)]
mod tests {
    use boundary_common::maps::{FOLD_EMPTY, FOLD_NONE, FOLD_ONE, IDENTITY_WORLD, PORT_ANY};

    use super::*;
    use crate::policy::compile::{SlotTable, compile, tests::parse};

    #[test]
    fn an_identity_with_one_entry_folds_it_and_others_do_not() {
        let p = parse(
            "apiVersion: boundary.dev/v1
workloads:
  - name: w
    addresses: [10.9.9.9]
    ingress:
      - { from: { cidr: 10.1.0.0/16 }, ports: [\"80/tcp\"] }
      - { from: { cidr: 10.2.0.0/16 }, ports: [\"80/tcp\", \"81/tcp\"] }
      - { from: { cidr: 10.3.0.0/16 }, ports: [\"1000-2000/tcp\"] }
      - { from: { cidr: 10.4.0.0/16 }, ports: [\"53/udp\"], rateLimit: { packetsPerSecond: 100, burst: 10 } }
      - { from: { cidr: 10.5.0.0/16 }, protocols: [gre], action: deny }
      - { from: { cidr: 10.6.0.0/16 }, action: deny }
      - { from: { any: true }, ports: [\"22/tcp\"] }
",
        );
        let t = compile(&p, &SlotTable::new(), 4).expect("compiles");
        let folds = Folds::of(&t);
        let id_of = |net: &str| t.cidrs[&net.parse().expect("prefix")];
        let one = folds.get(id_of("10.1.0.0/16"));
        assert_eq!(one.kind, FOLD_ONE);
        assert_eq!((one.direction, one.proto, one.port), (0, 6, 80));
        assert_eq!(one.slot, *t.names.keys().next().expect("a slot"));
        assert_eq!(
            one.value.flags, POLICY_NO_LIMIT,
            "no limit: the bucket is not read"
        );
        // The fold's value is the entry's, as written.
        let key = RuleKey {
            slot: one.slot,
            direction: 0,
            proto: 6,
            identity: id_of("10.1.0.0/16"),
            port: 80,
        };
        assert_eq!(one.value, written(t.policy[&key], false));
        assert_eq!(folds.get(id_of("10.2.0.0/16")).kind, FOLD_NONE, "two ports");
        assert_eq!(folds.get(id_of("10.3.0.0/16")).kind, FOLD_NONE, "a range");
        let limited = folds.get(id_of("10.4.0.0/16"));
        assert_eq!(
            (limited.kind, limited.proto, limited.port),
            (FOLD_ONE, 17, 53)
        );
        assert_eq!(limited.value.flags, 0, "a limit: the bucket is read");
        let deny = folds.get(id_of("10.5.0.0/16"));
        assert_eq!((deny.kind, deny.proto, deny.port), (FOLD_ONE, 47, PORT_ANY));
        // No protocol named: an entry for each protocol.
        assert_eq!(folds.get(id_of("10.6.0.0/16")).kind, FOLD_NONE);
        // `world` has no rule of its own here, and `any`'s entries are nobody's fold.
        assert_eq!(folds.get(IDENTITY_WORLD).kind, FOLD_EMPTY);
    }
}
