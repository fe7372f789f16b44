//! The validated policy, which is all the compiler ever reads. Only [`super::validate`] builds
//! one (`Policy::from_file`, `Policy::from_str`), so every name, address and selector in it has
//! been checked.

use std::net::IpAddr;

use super::{
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
    pub mode: WorkloadMode,
    pub ingress_default: DefaultAction,
    pub egress_default: DefaultAction,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// A validated policy: names unique, addresses owned once, selectors well-formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub trust_domain: Option<String>,
    pub failsafe: Vec<Failsafe>,
    pub identities: Vec<StaticIdentity>,
    pub workloads: Vec<Workload>,
}
