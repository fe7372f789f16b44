//! Pass 2: rule ids. Rules are numbered in document order (workloads in order, each one's
//! ingress rules, then its egress rules); the id is a rule's index in [`Tables::rules`], its
//! row in the rule-hit counters, and the tie-break when rules meet at one entry.
//!
//! [`Tables::rules`]: super::Tables::rules

use std::collections::BTreeMap;

use boundary_common::{Direction, maps::MAX_RULES};

use super::{CompileError, RuleInfo};
use crate::policy::model::{Policy, Rule};

/// A rule with where it applies. Its id is its index in the list [`number`] returns.
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
                rules.push(Placed {
                    slot: slot_of[w.name.as_str()],
                    direction,
                    rule,
                });
                info.push(RuleInfo {
                    name: rule.name.clone(),
                    workload: w.name.clone(),
                    direction,
                    peer: rule.peer.clone(),
                    action: rule.action,
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
}
