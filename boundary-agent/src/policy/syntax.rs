//! The policy file as written: the shapes serde reads, unknown fields refused. Values inside
//! them are checked as they are read ([`super::values`]), against the values read before them
//! where they must be ([`super::document`]), and lists that must hold something are refused
//! empty ([`NonEmpty`]), each in the visitor of its value, so that its error carries that
//! value's line and column. [`super::validate`] turns the document into the model.
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

use std::{fmt, marker::PhantomData};

use boundary_common::Direction;
use serde::{
    Deserialize,
    de::{Error as _, MapAccess, SeqAccess, value::MapAccessDeserializer},
};

use super::document;
use super::ratelimit::{self, RateLimit};
use super::spiffe::SpiffeId;
use super::values::{
    ApiVersion, DefaultAction, Failsafe, HostAddr, IcmpName, Icmpv6Type, InDomain, PortSpec,
    ProtocolName, RuleAction, RuleName, Selector, TrustDomain, WorkloadInterface, WorkloadMode,
    WorkloadName,
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
    #[expect(
        dead_code,
        reason = "required, and checked as it is read: nothing else is done with it"
    )]
    pub api_version: ApiVersion,
    pub trust_domain: Option<TrustDomain>,
    #[serde(default)]
    pub defaults: Defaults,
    pub failsafe: Option<Vec<Failsafe>>,
    #[serde(default)]
    pub identities: Vec<IdentityEntry>,
    #[serde(default)]
    pub workloads: Vec<WorkloadEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawIdentity {
    pub id: InDomain<SpiffeId>,
    pub addresses: NonEmpty<HostAddr>,
}

/// An identity, read while its addresses can see those bound before them
/// (`document::identity`).
#[derive(Debug)]
pub(super) struct IdentityEntry(pub RawIdentity);

impl<'de> Deserialize<'de> for IdentityEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        document::identity(|| RawIdentity::deserialize(d)).map(IdentityEntry)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawWorkload {
    pub name: WorkloadName,
    pub addresses: NonEmpty<HostAddr>,
    /// The interfaces the workload is protected on; absent: every protected interface.
    pub interfaces: Option<NonEmpty<WorkloadInterface>>,
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

/// A workload, read while its values can see the workloads before it (`document::workload`).
/// Read in the visitor of its mapping, so that what only its end tells (an address it shares
/// by listing no interfaces) is refused at the workload.
#[derive(Debug)]
pub(super) struct WorkloadEntry(pub RawWorkload);

impl<'de> Deserialize<'de> for WorkloadEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = WorkloadEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawWorkload")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WorkloadEntry, A::Error> {
                document::workload(|| RawWorkload::deserialize(MapAccessDeserializer::new(map)))
                    .map(WorkloadEntry)
            }
        }
        d.deserialize_map(Visitor)
    }
}

// Ingress and egress rules differ only in the peer's key (`from` / `to`). They are two
// structs rather than one flattened one because serde cannot refuse unknown fields through
// `flatten`. Both become a `RawRule`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawIngressRule {
    name: Option<RuleName>,
    from: Selector,
    #[serde(default, deserialize_with = "present")]
    ports: Option<NonEmpty<PortSpec>>,
    #[serde(default, deserialize_with = "present")]
    icmp: Option<NonEmpty<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    icmpv6: Option<NonEmpty<Icmpv6Type>>,
    #[serde(default, deserialize_with = "present")]
    protocols: Option<NonEmpty<ProtocolName>>,
    #[serde(default, deserialize_with = "ratelimit::rule_action")]
    action: RuleAction,
    rate_limit: Option<RateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawEgressRule {
    name: Option<RuleName>,
    to: Selector,
    #[serde(default, deserialize_with = "present")]
    ports: Option<NonEmpty<PortSpec>>,
    #[serde(default, deserialize_with = "present")]
    icmp: Option<NonEmpty<IcmpName>>,
    #[serde(default, deserialize_with = "present")]
    icmpv6: Option<NonEmpty<Icmpv6Type>>,
    #[serde(default, deserialize_with = "present")]
    protocols: Option<NonEmpty<ProtocolName>>,
    #[serde(default, deserialize_with = "ratelimit::rule_action")]
    action: RuleAction,
    rate_limit: Option<RateLimit>,
}

/// A rule of `R`'s direction, read while its rate limit can see the direction and the rule's
/// action (`ratelimit::reading_rule`), and its name the direction: a limit that does not suit
/// its rule, or a name an earlier rule of its list has, is refused where it is written.
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
/// key is absent. An empty list, or a key with no value (`ports:`, as a template renders an
/// empty one), is refused while reading: neither may widen a rule to all traffic, which is
/// what a rule with none of the keys covers.
pub(super) struct RawTraffic {
    pub ports: Option<Vec<PortSpec>>,
    pub icmp: Option<Vec<IcmpName>>,
    pub icmpv6: Option<Vec<Icmpv6Type>>,
    pub protocols: Option<Vec<ProtocolName>>,
}

/// A list that is there: a key with a null value is read as an empty list (refused), not as
/// an absent key.
fn present<'de, D, T>(d: D) -> Result<Option<NonEmpty<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Listed + Deserialize<'de>,
{
    NonEmpty::<T>::deserialize(d).map(Some)
}

/// A list of at least one `T`: an empty one (or a key with no value) is refused at the list.
#[derive(Debug)]
pub(super) struct NonEmpty<T>(pub Vec<T>);

/// What an empty list of these leaves unsaid.
pub(super) trait Listed {
    fn empty() -> String;
}

impl Listed for HostAddr {
    fn empty() -> String {
        "list at least one address".into()
    }
}

impl Listed for WorkloadInterface {
    fn empty() -> String {
        "list at least one interface, or leave the field out for every interface the agent protects"
            .into()
    }
}

/// An empty traffic list would narrow nothing and, alone, widen its rule to everything.
fn no_traffic(key: &str) -> String {
    format!(
        "`{key}: []`: an empty list matches nothing; remove the key (a rule without ports, ICMP types or protocols covers all traffic) or list what the rule is about"
    )
}

impl Listed for PortSpec {
    fn empty() -> String {
        no_traffic("ports")
    }
}

impl Listed for IcmpName {
    fn empty() -> String {
        no_traffic("icmp")
    }
}

impl Listed for Icmpv6Type {
    fn empty() -> String {
        no_traffic("icmpv6")
    }
}

impl Listed for ProtocolName {
    fn empty() -> String {
        no_traffic("protocols")
    }
}

impl<'de, T: Listed + Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(PhantomData<T>);
        impl<'de, T: Listed + Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = NonEmpty<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NonEmpty<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                if out.is_empty() {
                    // In the visitor, so that the error carries the list's place.
                    return Err(A::Error::custom(T::empty()));
                }
                Ok(NonEmpty(out))
            }
        }
        d.deserialize_seq(Visitor(PhantomData))
    }
}

impl From<RawIngressRule> for RawRule {
    fn from(r: RawIngressRule) -> Self {
        Self {
            name: r.name.map(|n| n.0),
            peer: r.from,
            traffic: RawTraffic {
                ports: r.ports.map(|l| l.0),
                icmp: r.icmp.map(|l| l.0),
                icmpv6: r.icmpv6.map(|l| l.0),
                protocols: r.protocols.map(|l| l.0),
            },
            action: r.action,
            rate_limit: r.rate_limit,
        }
    }
}

impl From<RawEgressRule> for RawRule {
    fn from(r: RawEgressRule) -> Self {
        Self {
            name: r.name.map(|n| n.0),
            peer: r.to,
            traffic: RawTraffic {
                ports: r.ports.map(|l| l.0),
                icmp: r.icmp.map(|l| l.0),
                icmpv6: r.icmpv6.map(|l| l.0),
                protocols: r.protocols.map(|l| l.0),
            },
            action: r.action,
            rate_limit: r.rate_limit,
        }
    }
}
