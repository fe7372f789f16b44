//! The policy file as written: the shapes serde reads, unknown fields refused. Values inside
//! them are checked as they are read ([`super::values`]); the document as a whole is checked
//! by [`super::validate`], which turns it into the model.
//!
//! ```yaml
//! apiVersion: boundary.dev/v1
//! trustDomain: example.org            # optional: SPIFFE IDs must then belong to it
//! defaults: { ingress: deny, egress: allow, mode: enforce }
//! failsafe: ["tcp:10.0.0.0/8:22"]     # default: SSH from anywhere (tcp:0.0.0.0/0:22, tcp:::/0:22)
//! identities:
//!   - id: spiffe://example.org/ns/orders/sa/api
//!     addresses: [10.1.2.7]
//! workloads:
//!   - name: payments-api
//!     addresses: [10.1.2.3, "fd00:1::3"]
//!     interfaces: [eth0]                # optional: only there (default: every interface)
//!     ingress:
//!       - from: { spiffe: "spiffe://example.org/ns/orders/*" }
//!         ports: ["8443/tcp"]
//!         rateLimit: { packetsPerSecond: 5000, burst: 500 }   # see `ratelimit.rs`
//!       - from: { cidr: 192.168.0.0/16 }
//!         ports: ["9090/tcp", "30000-30100/udp"]
//!       - from: { any: true }
//!         icmp: [echo-request]
//!       - from: { cidr: 192.168.7.0/24 }
//!         action: deny
//!     egress:
//!       - to: { cidr: 10.0.0.53/32 }
//!         ports: ["53"]
//! ```
//!
//! The struct names are part of serde's error messages (`expected struct RawPolicy`), so
//! renaming one changes what an operator reads.

use boundary_common::Direction;
use serde::Deserialize;

use super::ratelimit::{self, RateLimit};
use super::values::{
    DefaultAction, Failsafe, HostAddr, IcmpName, PortSpec, ProtocolName, RuleAction, Selector,
    WorkloadInterface, WorkloadMode,
};

pub const API_VERSION: &str = "boundary.dev/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// Ingress packets no rule decides. Default `deny`.
    #[serde(default = "deny")]
    pub ingress: DefaultAction,
    /// Egress packets no rule decides. Default `allow`.
    #[serde(default = "allow")]
    pub egress: DefaultAction,
    /// Default `enforce`.
    #[serde(default = "enforce")]
    pub mode: WorkloadMode,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            ingress: DefaultAction::Deny,
            egress: DefaultAction::Allow,
            mode: WorkloadMode::Enforce,
        }
    }
}

fn allow() -> DefaultAction {
    DefaultAction::Allow
}
fn deny() -> DefaultAction {
    DefaultAction::Deny
}
fn enforce() -> WorkloadMode {
    WorkloadMode::Enforce
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPolicy {
    pub api_version: String,
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub defaults: Defaults,
    pub failsafe: Option<Vec<Failsafe>>,
    #[serde(default)]
    pub identities: Vec<RawIdentity>,
    #[serde(default)]
    pub workloads: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawIdentity {
    pub id: String,
    pub addresses: Vec<HostAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawWorkload {
    pub name: String,
    pub addresses: Vec<HostAddr>,
    /// The interfaces the workload is protected on; absent: every protected interface.
    pub interfaces: Option<Vec<WorkloadInterface>>,
    pub mode: Option<WorkloadMode>,
    /// Overrides of the policy-wide defaults for this workload.
    #[serde(default)]
    pub defaults: RawWorkloadDefaults,
    #[serde(default)]
    pub ingress: Vec<Directed<RawIngressRule>>,
    #[serde(default)]
    pub egress: Vec<Directed<RawEgressRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawWorkloadDefaults {
    pub ingress: Option<DefaultAction>,
    pub egress: Option<DefaultAction>,
}

// Ingress and egress rules differ only in the peer's key (`from` / `to`). They are two
// structs rather than one flattened one because serde cannot refuse unknown fields through
// `flatten`. Both become a `RawRule`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawIngressRule {
    name: Option<String>,
    from: Selector,
    #[serde(default, deserialize_with = "present")]
    ports: Option<Vec<PortSpec>>,
    #[serde(default, deserialize_with = "present")]
    icmp: Option<Vec<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    icmpv6: Option<Vec<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    protocols: Option<Vec<ProtocolName>>,
    #[serde(default, deserialize_with = "ratelimit::rule_action")]
    action: RuleAction,
    rate_limit: Option<RateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawEgressRule {
    name: Option<String>,
    to: Selector,
    #[serde(default, deserialize_with = "present")]
    ports: Option<Vec<PortSpec>>,
    #[serde(default, deserialize_with = "present")]
    icmp: Option<Vec<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    icmpv6: Option<Vec<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    protocols: Option<Vec<ProtocolName>>,
    #[serde(default, deserialize_with = "ratelimit::rule_action")]
    action: RuleAction,
    rate_limit: Option<RateLimit>,
}

/// A rule of `R`'s direction, read while its rate limit can see the direction and the rule's
/// action (`ratelimit::reading_rule`): a limit that does not suit its rule is refused where it
/// is written.
#[derive(Debug)]
pub(super) struct Directed<R>(R);

/// The direction of a rule's shape.
pub(super) trait RuleShape {
    const DIRECTION: Direction;
}

impl RuleShape for RawIngressRule {
    const DIRECTION: Direction = Direction::Ingress;
}

impl RuleShape for RawEgressRule {
    const DIRECTION: Direction = Direction::Egress;
}

impl<'de, R: RuleShape + Deserialize<'de>> Deserialize<'de> for Directed<R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ratelimit::reading_rule(R::DIRECTION, || R::deserialize(d)).map(Directed)
    }
}

impl<R: Into<RawRule>> From<Directed<R>> for RawRule {
    fn from(r: Directed<R>) -> Self {
        r.0.into()
    }
}

/// A rule of either direction, its peer taken from `from` or `to`.
pub(super) struct RawRule {
    pub name: Option<String>,
    pub peer: Selector,
    pub traffic: RawTraffic,
    pub action: RuleAction,
    pub rate_limit: Option<RateLimit>,
}

/// What a rule says about traffic, before expansion: each list as written, `None` when the
/// key is absent. A key with no value (`ports:`, as a template renders an empty one) is
/// refused while reading, and an empty list by validation: neither may widen a rule to all
/// traffic, which is what a rule with none of the keys covers.
pub(super) struct RawTraffic {
    pub ports: Option<Vec<PortSpec>>,
    pub icmp: Option<Vec<IcmpName>>,
    pub icmpv6: Option<Vec<IcmpName>>,
    pub protocols: Option<Vec<ProtocolName>>,
}

/// A list that is there: a key with a null value is an error, not an absent key.
fn present<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Vec::<T>::deserialize(d).map(Some)
}

impl From<RawIngressRule> for RawRule {
    fn from(r: RawIngressRule) -> Self {
        Self {
            name: r.name,
            peer: r.from,
            traffic: RawTraffic {
                ports: r.ports,
                icmp: r.icmp,
                icmpv6: r.icmpv6,
                protocols: r.protocols,
            },
            action: r.action,
            rate_limit: r.rate_limit,
        }
    }
}

impl From<RawEgressRule> for RawRule {
    fn from(r: RawEgressRule) -> Self {
        Self {
            name: r.name,
            peer: r.to,
            traffic: RawTraffic {
                ports: r.ports,
                icmp: r.icmp,
                icmpv6: r.icmpv6,
                protocols: r.protocols,
            },
            action: r.action,
            rate_limit: r.rate_limit,
        }
    }
}
