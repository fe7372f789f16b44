//! Passes 4 and 5: policy entries. Every identity gets the entries of every rule in its set,
//! rules on `any` peer get theirs under [`IDENTITY_ANY`]. A single port, a whole protocol or
//! an ICMP type is one exact-match entry; a port range is the few prefixes that cover it, in
//! the range trie. Where rules meet at one entry, [`merge`] decides.

use std::collections::BTreeMap;

use boundary_common::maps::{
    IDENTITY_ANY, PORT_ANY, PolicyValue, RULE_ALLOW, RULE_DENY, icmp_port,
};

use super::{RangeKey, RuleKey, identities::Identities, rules::Placed};
use crate::policy::{
    ports::range_prefixes,
    values::{RuleAction, Traffic},
};

/// The exact-match entries and the range-trie entries of `rules`, for `identities`.
pub(super) fn expand(
    rules: &[Placed],
    identities: &Identities,
) -> (
    BTreeMap<RuleKey, PolicyValue>,
    BTreeMap<RangeKey, PolicyValue>,
) {
    let mut entries: Vec<(u32, u32)> = Vec::new();
    for (set, id) in &identities.ids {
        entries.extend(set.iter().map(|r| (*id, *r)));
    }
    entries.extend(identities.any_rules.iter().map(|r| (IDENTITY_ANY, *r)));
    expand_pairs(entries, |position| rules[position as usize])
}

/// The entries of each (identity, rule position) pair; `rule` finds a rule by position.
pub(super) fn expand_pairs<'a>(
    pairs: impl IntoIterator<Item = (u32, u32)>,
    rule: impl Fn(u32) -> Placed<'a>,
) -> (
    BTreeMap<RuleKey, PolicyValue>,
    BTreeMap<RangeKey, PolicyValue>,
) {
    let mut policy = BTreeMap::new();
    let mut ranges = BTreeMap::new();
    for (identity, rule_id) in pairs {
        let r = &rule(rule_id);
        for traffic in &r.rule.traffic {
            let key = |proto, port| RuleKey {
                slot: r.slot,
                direction: r.direction as u8,
                proto,
                identity,
                port,
            };
            match *traffic {
                Traffic::Ports { proto, lo, hi } if lo == hi => {
                    merge_into(&mut policy, key(proto, lo), r.rule.action, rule_id);
                }
                Traffic::Ports { proto, lo, hi } => {
                    for (port, bits) in range_prefixes(lo, hi) {
                        let k = RangeKey {
                            slot: r.slot,
                            direction: r.direction as u8,
                            proto,
                            identity,
                            port,
                            bits,
                        };
                        merge_into(&mut ranges, k, r.rule.action, rule_id);
                    }
                }
                Traffic::Proto(proto) => {
                    merge_into(&mut policy, key(proto, PORT_ANY), r.rule.action, rule_id);
                }
                Traffic::Icmp { proto, icmp_type } => {
                    merge_into(
                        &mut policy,
                        key(proto, icmp_port(icmp_type)),
                        r.rule.action,
                        rule_id,
                    );
                }
            }
        }
    }
    (policy, ranges)
}

/// Nested range prefixes: the trie returns only the longest, so it must carry the verdict of
/// every range that covers it.
pub(super) fn inherit_covering_ranges(ranges: &mut BTreeMap<RangeKey, PolicyValue>) {
    let snapshot = ranges.clone();
    for (k, v) in ranges {
        for bits in 0..k.bits {
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            let ancestor = RangeKey {
                port: k.port & mask,
                bits,
                ..*k
            };
            if let Some(a) = snapshot.get(&ancestor) {
                let mut merged = Some(*v);
                merge(
                    &mut merged,
                    if a.action == RULE_DENY {
                        RuleAction::Deny
                    } else {
                        RuleAction::Allow
                    },
                    a.rule,
                );
                *v = merged.expect("set");
            }
        }
    }
}

/// Merges a rule into an entry: deny beats allow; among equal actions the first rule wins.
fn merge(slot: &mut Option<PolicyValue>, action: RuleAction, rule: u32) {
    let new = PolicyValue {
        action: match action {
            RuleAction::Allow => RULE_ALLOW,
            RuleAction::Deny => RULE_DENY,
        },
        flags: 0,
        pad: [0; 2],
        rule,
    };
    *slot = Some(match *slot {
        None => new,
        Some(old)
            if new.action > old.action || (new.action == old.action && new.rule < old.rule) =>
        {
            new
        }
        Some(old) => old,
    });
}

fn merge_into<K: Ord>(map: &mut BTreeMap<K, PolicyValue>, key: K, action: RuleAction, rule: u32) {
    let mut v = map.remove(&key);
    merge(&mut v, action, rule);
    map.insert(key, v.expect("merge always sets"));
}

#[cfg(test)]
mod tests {
    use boundary_common::Direction;

    use super::*;
    use crate::policy::{
        compile::{identities, rules, tests::parse},
        values::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    };

    fn value(action: u8, rule: u32) -> PolicyValue {
        PolicyValue {
            action,
            flags: 0,
            pad: [0; 2],
            rule,
        }
    }

    #[test]
    fn deny_beats_allow_and_then_the_first_rule_wins() {
        for (merges, want) in [
            (
                vec![(RuleAction::Allow, 0), (RuleAction::Deny, 1)],
                (RULE_DENY, 1),
            ),
            (
                vec![(RuleAction::Deny, 1), (RuleAction::Allow, 0)],
                (RULE_DENY, 1),
            ),
            (
                vec![(RuleAction::Allow, 2), (RuleAction::Allow, 0)],
                (RULE_ALLOW, 0),
            ),
            (
                vec![(RuleAction::Deny, 0), (RuleAction::Deny, 2)],
                (RULE_DENY, 0),
            ),
        ] {
            let mut slot = None;
            for &(action, rule) in &merges {
                merge(&mut slot, action, rule);
            }
            assert_eq!(slot, Some(value(want.0, want.1)), "{merges:?}");
        }
    }

    #[test]
    fn each_kind_of_traffic_has_its_entry() {
        let p = parse(
            "apiVersion: boundary.dev/v1
workloads:
  - name: w
    addresses: [10.9.9.9]
    ingress:
      - { from: { any: true }, ports: [22/tcp, 1024-2047/udp] }
      - { from: { world: true }, protocols: [gre], icmp: [3], action: deny }
",
        );
        let (placed, _) = rules::number(&p, &BTreeMap::from([("w", 7)])).expect("fits");
        let (policy, ranges) = expand(
            &placed,
            &identities::classify(&p, &placed, &BTreeMap::new()),
        );
        let key = |identity, proto, port| RuleKey {
            slot: 7,
            direction: Direction::Ingress as u8,
            proto,
            identity,
            port,
        };
        let world = boundary_common::maps::IDENTITY_WORLD;
        assert_eq!(
            policy,
            BTreeMap::from([
                (key(IDENTITY_ANY, IPPROTO_TCP, 22), value(RULE_ALLOW, 0)),
                (key(world, IPPROTO_ICMP, icmp_port(3)), value(RULE_DENY, 1)),
                (key(world, 47, PORT_ANY), value(RULE_DENY, 1)),
            ])
        );
        let range = RangeKey {
            slot: 7,
            direction: Direction::Ingress as u8,
            proto: IPPROTO_UDP,
            identity: IDENTITY_ANY,
            port: 1024,
            bits: 6,
        };
        assert_eq!(ranges, BTreeMap::from([(range, value(RULE_ALLOW, 0))]));
    }

    #[test]
    fn a_range_prefix_carries_the_verdict_of_the_ranges_around_it() {
        let at = |identity, port, bits| RangeKey {
            slot: 1,
            direction: 0,
            proto: IPPROTO_TCP,
            identity,
            port,
            bits,
        };
        let mut ranges = BTreeMap::from([
            (at(0, 1024, 6), value(RULE_DENY, 3)),
            (at(0, 1536, 8), value(RULE_ALLOW, 1)),
            (at(0, 2048, 8), value(RULE_ALLOW, 2)),
            (at(5, 1536, 8), value(RULE_ALLOW, 4)),
        ]);
        inherit_covering_ranges(&mut ranges);
        let verdicts: Vec<(u32, u16, u8, u32)> = ranges
            .iter()
            .map(|(k, v)| (k.identity, k.port, v.action, v.rule))
            .collect();
        assert_eq!(
            verdicts,
            [
                (0, 1024, RULE_DENY, 3),
                // Inside 1024-2047: the deny around it wins.
                (0, 1536, RULE_DENY, 3),
                // Outside it, and another identity's: unchanged.
                (0, 2048, RULE_ALLOW, 2),
                (5, 1536, RULE_ALLOW, 4),
            ]
        );
    }
}
