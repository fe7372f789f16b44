//! Pass 2: rule positions, and (pass 8) rule ids.
//!
//! Rules are numbered in document order (workloads in order, each one's ingress rules, then
//! its egress rules). The passes in between work with these positions: a position is the
//! tie-break when rules meet at one entry. The last pass gives each rule its id: its row in
//! the rule-hit counters and what the datapath reports. A rule keeps its id across reloads
//! while its fingerprint (workload, direction, name) stays; a new rule takes an id no rule
//! of the live policy holds, so the counts it starts from (zeroed when installed) are its
//! own, and a removed rule's id is retired with it.

use std::collections::{BTreeMap, BTreeSet};

use boundary_common::{Direction, maps::MAX_RULES};

use super::{CompileError, RuleInfo};
use crate::policy::{
    fingerprint::rule_fingerprint,
    model::{Policy, Rule},
};

/// Rule fingerprint -> id, as installed: what [`assign_ids`] keeps.
pub type RuleTable = BTreeMap<u64, u32>;

/// A rule with where it applies. Its position is its index in the list [`number`] returns.
#[derive(Clone, Copy)]
pub(super) struct Placed<'a> {
    pub slot: u16,
    pub direction: Direction,
    pub rule: &'a Rule,
}

/// Every rule of `policy`, placed and described, in id order.
pub(super) fn number<'a>(
    policy: &'a Policy,
    slot_of: &BTreeMap<&str, u16>,
) -> Result<(Vec<Placed<'a>>, Vec<RuleInfo>), CompileError> {
    let mut rules = Vec::new();
    let mut info = Vec::new();
    for w in &policy.workloads {
        for (direction, list) in [
            (Direction::Ingress, &w.ingress),
            (Direction::Egress, &w.egress),
        ] {
            for rule in list {
                let position = u32::try_from(info.len()).unwrap_or(u32::MAX);
                rules.push(Placed {
                    slot: slot_of[w.name.as_str()],
                    direction,
                    rule,
                });
                info.push(RuleInfo {
                    name: rule.name.clone(),
                    fingerprint: rule_fingerprint(&w.name, direction, &rule.name),
                    position,
                    workload: w.name.clone(),
                    direction,
                    peer: rule.peer.clone(),
                    action: rule.action,
                    limit: rule.limit,
                });
            }
        }
    }
    if rules.len() > MAX_RULES as usize {
        return Err(CompileError::TooManyRules {
            count: rules.len(),
            max: MAX_RULES,
        });
    }
    Ok((rules, info))
}

/// Each rule's id, by position: the id `previous` gives its fingerprint, else the lowest id
/// neither `previous` nor another rule of this policy holds. When the live and the new
/// policy together need more ids than there are, a new rule may take the id of a removed
/// one (its counts are zeroed when installed; hits of the old policy's packets still in
/// flight could then be counted for it).
pub(super) fn assign_ids(info: &[RuleInfo], previous: &RuleTable) -> Vec<u32> {
    let mut ids: Vec<Option<u32>> = info
        .iter()
        .map(|r| previous.get(&r.fingerprint).copied())
        .collect();
    let mut taken: BTreeSet<u32> = ids.iter().flatten().copied().collect();
    let live: BTreeSet<u32> = previous.values().copied().collect();
    let mut next = 0u32;
    let mut fallback = 0u32;
    for id in &mut ids {
        if id.is_some() {
            continue;
        }
        while next < MAX_RULES && (taken.contains(&next) || live.contains(&next)) {
            next += 1;
        }
        let fresh = if next < MAX_RULES {
            next
        } else {
            while taken.contains(&fallback) {
                fallback += 1;
            }
            fallback
        };
        taken.insert(fresh);
        *id = Some(fresh);
    }
    ids.into_iter().map(|id| id.unwrap_or(u32::MAX)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::tests::parse;

    #[test]
    fn rules_are_numbered_by_workload_then_ingress_before_egress() {
        let p = parse(
            "apiVersion: boundary.dev/v1
workloads:
  - name: a
    addresses: [10.0.0.1]
    egress: [{ name: a-out, to: { any: true } }]
    ingress: [{ name: a-in1, from: { world: true } }, { name: a-in2, from: { any: true } }]
  - name: b
    addresses: [10.0.0.2]
    ingress: [{ name: b-in, from: { cidr: 10.0.0.0/8 }, action: deny }]
",
        );
        let slot_of = BTreeMap::from([("a", 5), ("b", 2)]);
        let (placed, info) = number(&p, &slot_of).expect("fits");
        let names: Vec<&str> = info.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a-in1", "a-in2", "a-out", "b-in"]);
        let applies_to: Vec<(u16, Direction, &str)> = placed
            .iter()
            .map(|r| (r.slot, r.direction, r.rule.name.as_str()))
            .collect();
        assert_eq!(
            applies_to,
            [
                (5, Direction::Ingress, "a-in1"),
                (5, Direction::Ingress, "a-in2"),
                (5, Direction::Egress, "a-out"),
                (2, Direction::Ingress, "b-in"),
            ]
        );
        assert_eq!(info[3].to_string(), "b-in (deny from cidr 10.0.0.0/8)");
    }

    fn info(fingerprints: &[u64]) -> Vec<RuleInfo> {
        fingerprints
            .iter()
            .zip(0..)
            .map(|(&fingerprint, position)| RuleInfo {
                name: format!("r{fingerprint}"),
                fingerprint,
                position,
                workload: "w".into(),
                direction: Direction::Ingress,
                peer: crate::policy::Selector::Any,
                action: crate::policy::RuleAction::Allow,
                limit: None,
            })
            .collect()
    }

    #[test]
    fn without_a_previous_table_ids_follow_the_file() {
        assert_eq!(
            assign_ids(&info(&[30, 10, 20]), &RuleTable::new()),
            [0, 1, 2]
        );
    }

    #[test]
    fn rules_keep_their_ids_and_new_ones_take_ids_nobody_live_holds() {
        // Live: fingerprints 10, 20, 30 at ids 0, 1, 2.
        let live = RuleTable::from([(10, 0), (20, 1), (30, 2)]);
        // A rule inserted first, one removed (20), the rest reordered.
        let ids = assign_ids(&info(&[40, 30, 10]), &live);
        assert_eq!(
            ids,
            [3, 2, 0],
            "30 and 10 keep theirs; 40 takes neither 1 nor 0..2"
        );
        // Renamed is new: 10 -> 11 gets a fresh id, not 10's.
        let ids = assign_ids(&info(&[11, 20, 30]), &live);
        assert_eq!(ids, [3, 1, 2]);
    }

    #[test]
    fn when_ids_run_out_a_new_rule_takes_a_removed_ones() {
        let max = MAX_RULES as usize;
        // Every id live; the new policy keeps all but the rule at id 5 and adds one.
        let live: RuleTable = (0..MAX_RULES).map(|i| (u64::from(i) + 1, i)).collect();
        let mut fingerprints: Vec<u64> = (1..=max as u64).filter(|&f| f != 6).collect();
        fingerprints.push(u64::MAX);
        let ids = assign_ids(&info(&fingerprints), &live);
        assert_eq!(ids.last(), Some(&5));
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>().len(),
            max,
            "no id given twice"
        );
    }
}
