//! What makes a rule the same rule across reloads: its workload, its direction and its name.
//! An unnamed rule is named after what it says (peer, traffic, action), so inserting,
//! removing or reordering other rules changes neither its name nor its fingerprint; its
//! counters and its `rule` label in the metrics stay its own.
//!
//! The digest is 64-bit FNV-1a over a canonical text: written here, not taken from `Debug`
//! or a hasher whose output may change between Rust releases, because fingerprints outlive
//! the agent that wrote them (they are kept in the pinned `BND_RULE_IDS` map).

use std::fmt::Write as _;

use boundary_common::Direction;

use super::values::{RuleAction, Selector, Traffic};

/// 64-bit FNV-1a.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// What a rule says, as canonical text: peer, action, then its traffic (already sorted and
/// deduplicated by validation).
fn content(peer: &Selector, traffic: &[Traffic], action: RuleAction) -> String {
    let mut out = format!(
        "{peer}|{}",
        match action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        }
    );
    for t in traffic {
        let _ = match *t {
            Traffic::Ports { proto, lo, hi } => write!(out, "|p{proto}:{lo}-{hi}"),
            Traffic::Proto(proto) => write!(out, "|P{proto}"),
            Traffic::Icmp { proto, icmp_type } => write!(out, "|i{proto}:{icmp_type}"),
        };
    }
    out
}

/// The name of an unnamed rule: `<workload>/<direction>/<8 hex digits of its content>`, and
/// `~N` after the N-th (from 1) earlier rule of the same workload and direction saying the
/// same thing.
pub(super) fn unnamed_rule_name(
    workload: &str,
    direction: Direction,
    peer: &Selector,
    traffic: &[Traffic],
    action: RuleAction,
    repeat: usize,
) -> String {
    let digest = fnv1a(content(peer, traffic, action).as_bytes());
    let short = digest >> 32;
    let dir = direction.as_str();
    if repeat == 0 {
        format!("{workload}/{dir}/{short:08x}")
    } else {
        format!("{workload}/{dir}/{short:08x}~{repeat}")
    }
}

/// A rule's fingerprint: its workload, direction and name. Never 0.
pub fn rule_fingerprint(workload: &str, direction: Direction, name: &str) -> u64 {
    let text = format!("{workload}\0{}\0{name}", direction.as_str());
    fnv1a(text.as_bytes()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn an_unnamed_rule_is_named_by_what_it_says() {
        let tcp = [Traffic::Ports {
            proto: 6,
            lo: 443,
            hi: 443,
        }];
        let name = |peer: &Selector, traffic: &[Traffic], action, repeat| {
            unnamed_rule_name("web", Direction::Ingress, peer, traffic, action, repeat)
        };
        let a = name(&Selector::World, &tcp, RuleAction::Allow, 0);
        assert!(
            a.starts_with("web/ingress/") && a.len() == "web/ingress/".len() + 8,
            "{a}"
        );
        assert_eq!(a, name(&Selector::World, &tcp, RuleAction::Allow, 0));
        assert_ne!(a, name(&Selector::Any, &tcp, RuleAction::Allow, 0));
        assert_ne!(a, name(&Selector::World, &tcp, RuleAction::Deny, 0));
        assert_ne!(
            a,
            name(&Selector::World, &[Traffic::Proto(6)], RuleAction::Allow, 0)
        );
        assert_eq!(
            name(&Selector::World, &tcp, RuleAction::Allow, 2),
            format!("{a}~2")
        );
    }

    #[test]
    fn fingerprints_tell_workloads_directions_and_names_apart() {
        let f = rule_fingerprint("web", Direction::Ingress, "https");
        assert_eq!(f, rule_fingerprint("web", Direction::Ingress, "https"));
        assert_ne!(f, rule_fingerprint("web", Direction::Egress, "https"));
        assert_ne!(f, rule_fingerprint("api", Direction::Ingress, "https"));
        assert_ne!(f, rule_fingerprint("web", Direction::Ingress, "http"));
        assert_ne!(f, 0);
    }
}
