//! The validated policy, which is all the compiler ever reads. Only [`super::validate`] builds
//! one (`Policy::from_file`, `Policy::from_str`), so every name, address and selector in it has
//! been checked.

use std::{collections::BTreeMap, net::IpAddr};

use super::{
    ratelimit::RateLimit,
    spiffe::SpiffeId,
    values::{DefaultAction, Failsafe, RuleAction, Selector, Traffic, WorkloadMode},
};

/// A rule, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The operator's name for it, or one made of what it says
    /// (`<workload>/<direction>/<digest>`, see `fingerprint.rs`): unique in its list.
    pub name: String,
    pub peer: Selector,
    pub traffic: Vec<Traffic>,
    pub action: RuleAction,
    /// What the rule admits may pass at this rate (allow rules only).
    pub limit: Option<RateLimit>,
}

/// A statically bound identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticIdentity {
    pub id: SpiffeId,
    pub addresses: Vec<IpAddr>,
}

/// A protected workload, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    /// The interfaces it is protected on, each listed once; empty: every interface the agent
    /// protects. Elsewhere its addresses are judged as any other address.
    pub interfaces: Vec<String>,
    pub mode: WorkloadMode,
    pub ingress_default: DefaultAction,
    pub egress_default: DefaultAction,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// A validated policy: names unique, addresses owned once on each interface, selectors
/// well-formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub trust_domain: Option<String>,
    /// Every interface a workload lists -> the index it stands for in the endpoint keys: its
    /// interface index when the policy was read against the agent's interfaces, else a
    /// stand-in (see `super::Interfaces`).
    pub interfaces: BTreeMap<String, u32>,
    /// Whether those names were checked against the interfaces an agent protects.
    pub interfaces_checked: bool,
    pub failsafe: Vec<Failsafe>,
    pub identities: Vec<StaticIdentity>,
    pub workloads: Vec<Workload>,
}

impl Policy {
    /// Keys the datapath's address table is sized for: the static bindings' addresses and
    /// the regions of the prefix levels the rules' CIDRs are laid out in (a family of few
    /// prefixes stays in the trie and has none; one of several lengths may expand to many).
    pub fn address_keys(&self) -> usize {
        let bindings: usize = self.identities.iter().map(|i| i.addresses.len()).sum();
        // The layout of the CIDRs, each an identity of its own (the compiled ids do not
        // change how many regions there are).
        let cidrs: BTreeMap<ipnet::IpNet, u32> = self
            .workloads
            .iter()
            .flat_map(|w| w.ingress.iter().chain(&w.egress))
            .filter_map(|r| match &r.peer {
                Selector::Cidr(net) => Some(*net),
                _ => None,
            })
            .zip(1u32..)
            .collect();
        let room = boundary_common::maps::MAX_PREFIXES as usize / 2;
        let regions = super::compile::prefixes::PrefixLayout::of(&cidrs, room)
            .regions
            .len();
        bindings + regions
    }
}
