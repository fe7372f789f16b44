//! Validated policy + identity bindings -> the exact map entries the datapath needs. Pure and
//! deterministic: the same inputs give the same tables, whatever the order of the file.
//!
//! ## Passes
//! [`compile`] runs them in order; each lives in the module named, beside its tests.
//! 1. `slots`: a slot per workload, kept across reloads.
//! 2. `rules`: rule ids, in document order.
//! 3. `identities`: peers classed by the rules that select them.
//! 4. `entries`: each identity's rules as policy-map and range-trie entries.
//! 5. `entries`: each range prefix inherits the verdicts of the ranges around it.
//! 6. `endpoints`: per-address workload entries (per address and interface for workloads
//!    that list interfaces), with flags for what the datapath may skip.
//! 7. here: the failsafe entries, as written.
//! 8. `rules`: rule ids, kept across reloads by fingerprint; the entries and the tables
//!    written in positions until then are given them here.
//! 9. `limits`: a rate-limit bucket for every rule with a limit, kept across reloads while
//!    the rule and its limit stay the same.
//!
//! Beside the passes, the map writer calls two with the tables it writes: `prefixes` lays
//! the CIDR identities of [`Tables::cidrs`] out as the datapath looks them up (prefix levels,
//! or the trie), with the room the loaded map has; `folds` gives each identity's value the
//! one policy entry the identity has (if so) and each entry its no-limit flag.
//!
//! ## Identities
//! An identity is a class of peers the policy cannot tell apart: the set of rules whose peer
//! selector matches them. Peers are bound addresses (static now, mTLS-attested later), CIDR
//! prefixes named by rules, and `world` (everything else). A prefix's identity includes every
//! CIDR rule whose prefix contains it, so the longest-prefix match in the datapath finds every
//! CIDR rule that applies, not just the most specific one. Rules on `any` peer are compiled
//! once, under identity 0, and looked up after the peer's own identity.
//!
//! ## Precedence (documented in README)
//! The datapath takes the first hit of: (identity, port), (identity, port range), (identity,
//! any port), then the same for `any` peer. So a rule about this peer beats a rule about any
//! peer, and an exact port beats a range, which beats any port. Where several rules meet at one
//! entry, deny beats allow, and among equals the rule written first wins.

mod binder;
mod endpoints;
mod entries;
pub mod folds;
mod identities;
mod limits;
pub mod prefixes;
mod rules;
mod slots;
mod tables;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

pub use self::{
    binder::{Binder, Binding},
    limits::{Bucket, BucketTable},
    rules::RuleTable,
    slots::SlotTable,
    tables::{IdentityInfo, RangeKey, RuleInfo, RuleKey, Tables},
};
use super::{model::Policy, spiffe::SpiffeId, values::IPPROTO_TCP};

/// Bindings peers earned over mTLS, which a compile includes beside the static ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Earned {
    /// Whether bindings can be earned at all (the identity endpoint is on): the datapath then
    /// checks bind sequences and deadlines (`CFG_EARNED`).
    pub enabled: bool,
    /// Address -> the ID it proved and the binding's deadline (`IdentityValue::expires`).
    pub bindings: BTreeMap<IpAddr, (SpiffeId, u64)>,
    /// The identity endpoint's address: reachable from anywhere whatever the policy says (a
    /// failsafe entry for its TCP port), or a peer could never prove who it is. Failsafe
    /// entries have no local address: when the endpoint listens on a workload's address (or
    /// on every address), its port is open on every workload address; when it listens on an
    /// address no workload has, no entry is needed (the datapath judges workloads' traffic
    /// only).
    pub endpoint: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "{count} workloads do not fit in {slots} slots (slot 0 is reserved); raise maxWorkloads in the agent config"
    )]
    TooManyWorkloads { count: usize, slots: u32 },
    #[error("{count} rules exceed the datapath's {max}")]
    TooManyRules { count: usize, max: u32 },
    #[error(
        "{count} rate limits do not fit beside the {live} of the live policy in the datapath's {max} buckets"
    )]
    TooManyBuckets { count: usize, live: usize, max: u32 },
}

/// Compiles `policy` for a datapath with `max_workloads` slots, keeping the slots of `previous`
/// for workloads that are still there; rule ids follow the file's order.
pub fn compile(
    policy: &Policy,
    previous: &SlotTable,
    max_workloads: u32,
) -> Result<Tables, CompileError> {
    compile_keeping(
        policy,
        previous,
        &RuleTable::new(),
        &BucketTable::new(),
        max_workloads,
    )
}

/// As [`compile_keeping`], with no earned bindings.
pub fn compile_keeping(
    policy: &Policy,
    previous: &SlotTable,
    rules: &RuleTable,
    buckets: &BucketTable,
    max_workloads: u32,
) -> Result<Tables, CompileError> {
    compile_with(
        policy,
        previous,
        rules,
        buckets,
        max_workloads,
        &Earned::default(),
    )
}

/// As [`compile`], keeping also the ids `rules` gives rules that are still there and the
/// buckets of limits that are unchanged (what the agent does on every reload: a rule's
/// counters and its bucket's fill stay its own), with the `earned` bindings.
pub fn compile_with(
    policy: &Policy,
    previous: &SlotTable,
    rules: &RuleTable,
    buckets: &BucketTable,
    max_workloads: u32,
    earned: &Earned,
) -> Result<Tables, CompileError> {
    let live_rules = rules;
    let names = slots::assign(policy, previous, max_workloads)?;
    let slot_of: BTreeMap<&str, u16> = names.iter().map(|(s, n)| (n.as_str(), *s)).collect();
    let (placed, rules) = rules::number(policy, &slot_of)?;
    let statics: BTreeSet<IpAddr> = policy
        .identities
        .iter()
        .flat_map(|i| i.addresses.iter().copied())
        .collect();
    let earned_ids: BTreeMap<IpAddr, SpiffeId> = earned
        .bindings
        .iter()
        .filter(|(a, _)| !statics.contains(a))
        .map(|(a, (id, _))| (*a, id.clone()))
        .collect();
    let peers = identities::classify(policy, &placed, &earned_ids);
    let (entries, mut ranges) = entries::expand(&placed, &peers);
    entries::inherit_covering_ranges(&mut ranges);
    let (endpoints, interface_endpoints) = endpoints::build(policy, &slot_of, &ranges);
    let mut t = Tables {
        names,
        endpoints,
        interface_endpoints,
        identities: peers.exact,
        cidrs: peers.cidrs,
        policy: entries,
        ranges,
        failsafe: failsafe(policy, endpoint_port(policy, earned.endpoint)),
        rules: BTreeMap::new(),
        identity_info: peers.info,
        buckets: BTreeMap::new(),
        earned: earned
            .bindings
            .iter()
            .filter(|(a, _)| !statics.contains(a))
            .map(|(a, (_, expires))| (*a, *expires))
            .collect(),
        attestable: earned.enabled,
    };
    let ids = rules::assign_ids(&rules, live_rules);
    give_ids(&mut t, rules, &ids);
    t.buckets = limits::assign(&t.rules, buckets)?;
    Ok(t)
}

/// Pass 8's rewrite: every rule position in `t` becomes the rule's id (`ids[position]`).
fn give_ids(t: &mut Tables, rules: Vec<RuleInfo>, ids: &[u32]) {
    let id = |position: u32| ids.get(position as usize).copied().unwrap_or(u32::MAX);
    for v in t.policy.values_mut().chain(t.ranges.values_mut()) {
        v.rule = id(v.rule);
    }
    for info in t.identity_info.values_mut() {
        info.rules = info.rules.iter().map(|&r| id(r)).collect();
    }
    t.rules = rules.into_iter().map(|r| (id(r.position), r)).collect();
}

/// The identity endpoint's port, when a workload address can receive its connections.
fn endpoint_port(policy: &Policy, endpoint: Option<std::net::SocketAddr>) -> Option<u16> {
    let e = endpoint?;
    (e.ip().is_unspecified()
        || policy
            .workloads
            .iter()
            .any(|w| w.addresses.contains(&e.ip().to_canonical())))
    .then_some(e.port())
}

/// Failsafe entries as (protocol, local port, peer prefix): the policy's, and the identity
/// endpoint's port from anywhere.
fn failsafe(policy: &Policy, endpoint_port: Option<u16>) -> BTreeSet<(u8, u16, IpNet)> {
    let anywhere = ["0.0.0.0/0", "::/0"].map(|n| n.parse::<IpNet>().expect("prefix"));
    policy
        .failsafe
        .iter()
        .map(|f| (f.proto, f.port, f.net))
        .chain(
            endpoint_port
                .into_iter()
                .flat_map(|port| anywhere.map(|net| (IPPROTO_TCP, port, net))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy the passes' tests compile; it must be valid.
    pub(super) fn parse(text: &str) -> Policy {
        Policy::from_str("test.yaml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn failsafe_entries_are_the_policys_or_ssh_from_anywhere() {
        let net = |s: &str| -> IpNet { s.parse().expect("prefix") };
        let written = parse(
            "apiVersion: boundary.dev/v1\nfailsafe: [\"udp:10.0.0.0/8:53\", \"tcp:::/0:22\"]\n",
        );
        assert_eq!(
            failsafe(&written, None),
            BTreeSet::from([(6, 22, net("::/0")), (17, 53, net("10.0.0.0/8"))])
        );
        let default = parse("apiVersion: boundary.dev/v1\n");
        assert_eq!(
            failsafe(&default, None),
            BTreeSet::from([(6, 22, net("0.0.0.0/0")), (6, 22, net("::/0"))])
        );
    }
}
