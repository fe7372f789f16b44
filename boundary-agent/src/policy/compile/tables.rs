//! What the compiler produces: every map entry of one policy, without generations, and the
//! names `trace`, `check` and metrics show for rules and identities.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use boundary_common::{
    Direction,
    maps::{Endpoint, PolicyValue},
};
use ipnet::IpNet;

use super::Bucket;
use crate::policy::{
    ratelimit::RateLimit,
    values::{RuleAction, Selector},
};

/// A policy-map key without its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub slot: u16,
    pub direction: u8,
    pub proto: u8,
    pub identity: u32,
    pub port: u16,
}

/// A range-trie key without its generation: the first `bits` bits of `port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeKey {
    pub slot: u16,
    pub direction: u8,
    pub proto: u8,
    pub identity: u32,
    pub port: u16,
    pub bits: u8,
}

/// A compiled rule, for names in `trace`, `check` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    /// What makes it the same rule across reloads (`policy::rule_fingerprint`).
    pub fingerprint: u64,
    /// Its place in the file (workloads in order, each one's ingress rules, then egress).
    pub position: u32,
    pub workload: String,
    pub direction: Direction,
    pub peer: Selector,
    pub action: RuleAction,
    pub limit: Option<RateLimit>,
}

impl fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        };
        let word = if self.direction == Direction::Ingress {
            "from"
        } else {
            "to"
        };
        write!(f, "{} ({action} {word} {})", self.name, self.peer)
    }
}

/// Who an identity id stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityInfo {
    /// SPIFFE IDs bound to addresses of this identity.
    pub spiffe: BTreeSet<String>,
    /// CIDR prefixes of this identity.
    pub cidrs: BTreeSet<IpNet>,
    /// The ids of the rules whose peer selector matches it.
    pub rules: BTreeSet<u32>,
}

/// The compiled form of a policy: every map entry, without generations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Slot -> workload name, for every slot in use (never slot 0).
    pub names: BTreeMap<u16, String>,
    /// Local address -> its workload, on every protected interface.
    pub endpoints: BTreeMap<IpAddr, Endpoint>,
    /// (local address, interface index) -> its workload on that interface only: workloads
    /// that list `interfaces:`.
    pub interface_endpoints: BTreeMap<(IpAddr, u32), Endpoint>,
    /// Exact peer address -> identity.
    pub identities: BTreeMap<IpAddr, u32>,
    /// Peer prefix -> identity.
    pub cidrs: BTreeMap<IpNet, u32>,
    pub policy: BTreeMap<RuleKey, PolicyValue>,
    pub ranges: BTreeMap<RangeKey, PolicyValue>,
    /// (protocol, local port, peer prefix).
    pub failsafe: BTreeSet<(u8, u16, IpNet)>,
    /// Rule id -> rule. Ids are kept across reloads for rules with the same fingerprint
    /// (see [`super::RuleTable`]); without a previous table they follow the file's order.
    pub rules: BTreeMap<u32, RuleInfo>,
    pub identity_info: BTreeMap<u32, IdentityInfo>,
    /// Rule id -> the bucket its rate limit pays into (rules with a limit only).
    pub buckets: BTreeMap<u32, Bucket>,
    /// Addresses of `identities` bound by mTLS (not statically) -> their deadline.
    pub earned: BTreeMap<IpAddr, u64>,
    /// Bindings can be earned while this is live (see [`super::Earned::enabled`]).
    pub attestable: bool,
}

impl Tables {
    /// Entries one generation of these tables puts in each map the compiler fills.
    pub fn entry_counts(&self) -> Vec<(&'static str, u64)> {
        use boundary_common::maps as abi;
        vec![
            (
                abi::ENDPOINTS_MAP,
                (self.endpoints.len() + self.interface_endpoints.len()) as u64,
            ),
            (abi::IDENTITIES_MAP, self.identities.len() as u64),
            (abi::CIDRS_MAP, self.cidrs.len() as u64),
            (abi::POLICY_MAP, self.policy.len() as u64),
            (abi::RANGES_MAP, self.ranges.len() as u64),
            (abi::FAILSAFE_MAP, self.failsafe.len() as u64),
        ]
    }
}
