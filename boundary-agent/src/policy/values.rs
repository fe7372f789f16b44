//! The values a policy is written with: the API version, the trust domain, SPIFFE IDs,
//! workload and rule names, addresses, prefixes, peer selectors, ports, ICMP types, protocols,
//! failsafe entries, actions and modes. Each is checked as serde reads it, so its error
//! carries the line and column it was written at; where the check is against values read
//! before it (a name used twice, an address owned twice, a SPIFFE ID of another trust domain),
//! its visitor asks [`super::document`]. The wire shapes only one value reads through
//! (`RawSelector`) stay private beside it.

use std::{cell::RefCell, fmt, net::IpAddr, str::FromStr};

use boundary_common::maps::WORKLOAD_NAME_LEN;
use ipnet::IpNet;
use serde::Deserialize;

use super::{
    document,
    ratelimit::reading_direction,
    spiffe::{SpiffeError, SpiffeId, SpiffePattern},
    syntax::API_VERSION,
};
use crate::config::{InterfaceName, InterfacePattern};

use boundary_common::wire::{
    ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PARAMETER_PROBLEM, ICMP_REDIRECT,
    ICMP_TIME_EXCEEDED, ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
    ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM, ICMPV6_TIME_EXCEEDED,
};
pub use boundary_common::wire::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
};

/// Allow or deny, for traffic no rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DefaultAction {
    Allow,
    Deny,
}

/// What a rule does with the traffic it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum RuleAction {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkloadMode {
    /// Drops are dropped.
    Enforce,
    /// Would-be drops are counted as `audit` and passed.
    Audit,
}

impl fmt::Display for WorkloadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadMode::Enforce => "enforce",
            WorkloadMode::Audit => "audit",
        })
    }
}

/// Reads a string and makes a `T` of it in the visitor, while the reader is at the value: a
/// refusal then carries the value's own line, column and place in the document (a
/// `try_from` runs once the value is read, and its error names the list or mapping around
/// it).
fn read_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    make: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    d.deserialize_str(TextVisitor(expecting, make))
}

/// [`read_str`] for a value written as a string or a number (`"53"` or `53`), made from its
/// text.
fn read_text<'de, D, T>(
    d: D,
    expecting: &'static str,
    make: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    d.deserialize_any(TextVisitor(expecting, make))
}

/// What [`read_str`] and [`read_text`] expect, and make of the text.
struct TextVisitor<F>(&'static str, F);

impl<T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'_> for TextVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// `apiVersion:`, which must be the one this agent reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ApiVersion;

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "an API version", |v| api_version(v).map(|()| ApiVersion))
    }
}

/// The one API version this agent reads.
pub(super) fn api_version(version: &str) -> Result<(), String> {
    if version == API_VERSION {
        Ok(())
    } else {
        Err(format!(
            "{version:?} is not supported; this agent reads {API_VERSION:?}"
        ))
    }
}

/// `trustDomain:`, the trust domain every SPIFFE ID of the policy must belong to: refused
/// here also when an ID read before it belongs to another ([`document::trust_domain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TrustDomain(pub(super) String);

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a trust domain", |v| {
            let td = trust_domain(v.to_owned())?;
            document::trust_domain(&td)?;
            Ok(TrustDomain(td))
        })
    }
}

/// A trust domain is what a SPIFFE ID holds between `spiffe://` and its path.
pub(super) fn trust_domain(td: String) -> Result<String, String> {
    let id: SpiffeId = format!("spiffe://{td}")
        .parse()
        .map_err(|e: SpiffeError| e.why.to_owned())?;
    if !id.path().is_empty() {
        return Err(format!("{td:?} is a trust domain name, without a path"));
    }
    Ok(td)
}

/// A SPIFFE ID (an identity's `id:`) or pattern (a peer's `spiffe:`), checked as it is read:
/// well-formed, and of the policy's trust domain when it names one
/// ([`document::spiffe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct InDomain<T>(pub(super) T);

/// A SPIFFE ID or pattern, and the trust domain it belongs to.
pub(super) trait OfTrustDomain: FromStr<Err = SpiffeError> {
    fn domain(&self) -> &str;
}

impl OfTrustDomain for SpiffeId {
    fn domain(&self) -> &str {
        self.trust_domain()
    }
}

impl OfTrustDomain for SpiffePattern {
    fn domain(&self) -> &str {
        self.trust_domain()
    }
}

impl<'de, T: OfTrustDomain> Deserialize<'de> for InDomain<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a SPIFFE ID", |v| {
            let t = T::from_str(v).map_err(|e| e.to_string())?;
            document::spiffe(t.domain(), v)?;
            Ok(InDomain(t))
        })
    }
}

/// A workload's `name:`: it fits the names map, and no earlier workload has it
/// ([`document::workload_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WorkloadName(pub(super) String);

impl<'de> Deserialize<'de> for WorkloadName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a workload name", |v| {
            workload_name(v)?;
            document::workload_name(v)?;
            Ok(WorkloadName(v.to_owned()))
        })
    }
}

/// 1 to 63 characters of `[A-Za-z0-9._-]`: the name fits the names map with its NUL.
pub(super) fn workload_name(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() < WORKLOAD_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: names are 1 to {} characters of [A-Za-z0-9._-]",
            WORKLOAD_NAME_LEN - 1
        ))
    }
}

/// A rule's `name:`, which no earlier rule of its list has ([`document::rule_name`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RuleName(pub(super) String);

impl<'de> Deserialize<'de> for RuleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "a rule name", |v| {
            if let Some(direction) = reading_direction() {
                document::rule_name(direction, v)?;
            }
            Ok(RuleName(v.to_owned()))
        })
    }
}

/// A single host address: `10.1.2.3`, `10.1.2.3/32`, `fd00::3` or `fd00::3/128`. In an
/// identity's or a workload's `addresses:`, checked against the addresses bound or owned
/// before it ([`document::address`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostAddr(pub IpAddr);

impl<'de> Deserialize<'de> for HostAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_str(d, "an IP address", |v| {
            let a = HostAddr::try_from(v.to_owned())?;
            document::address(a.0)?;
            Ok(a)
        })
    }
}

impl TryFrom<String> for HostAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.as_str(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))?;
        let full = if addr.is_ipv4() { "32" } else { "128" };
        if let Some(p) = prefix
            && p != full
        {
            return Err(format!(
                "{s:?}: a host address is a single host (/{full}); CIDR ranges belong in `from: {{ cidr: ... }}`"
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("{s:?} cannot be a host's own address"));
        }
        Ok(Self(addr))
    }
}

/// An interface a workload is protected on (`interfaces: [eth0]`): a name Linux accepts,
/// listed once and, while a policy is read against an agent's interfaces
/// ([`checking_interfaces`]), one of those. Checked as serde reads it, so a refusal names the
/// line and column of the name; so is an address of the workload that another workload owns
/// on it ([`document::interface`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct WorkloadInterface(pub(super) InterfaceName);

impl<'de> Deserialize<'de> for WorkloadInterface {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WorkloadInterface;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an interface name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WorkloadInterface, E> {
                let name = WorkloadInterface::try_from(v.to_owned()).map_err(E::custom)?;
                document::interface(name.0.as_str()).map_err(E::custom)?;
                Ok(name)
            }
        }
        // Checked in the visitor, while the reader is at the name: its error then carries the
        // name's own line, column and index (`try_from` would report the list's).
        d.deserialize_str(Visitor)
    }
}

impl TryFrom<String> for WorkloadInterface {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let name = InterfaceName::try_from(s)?;
        PROTECTED.with_borrow(|protected| match protected {
            Some(list) if !list.iter().any(|n| n.matches(name.as_str())) => Err(format!(
                "{:?} is not an interface the agent protects (its config lists {})",
                name.as_str(),
                list.iter()
                    .map(InterfacePattern::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Ok(Self(name)),
        })
    }
}

thread_local! {
    /// The interfaces the agent protects, while a policy is read against them. serde gives a
    /// value nothing but its text; this is how the check reaches the value, so that its error
    /// carries the value's place.
    static PROTECTED: RefCell<Option<Vec<InterfacePattern>>> = const { RefCell::new(None) };
}

/// Runs `read` (a policy's deserialization, on this thread) with `interfaces:` entries checked
/// against `protected`; `None` checks names only for what Linux accepts.
pub(super) fn checking_interfaces<T>(
    protected: Option<Vec<InterfacePattern>>,
    read: impl FnOnce() -> T,
) -> T {
    /// Puts the previous list back, also when `read` panics.
    struct Restore(Option<Vec<InterfacePattern>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PROTECTED.set(self.0.take());
        }
    }
    let _restore = Restore(PROTECTED.replace(protected));
    read()
}

/// A CIDR prefix with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr(pub IpNet);

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let net: IpNet = match s.parse() {
            Ok(n) => n,
            Err(_) => match s.parse::<IpAddr>() {
                Ok(a) => IpNet::from(a),
                Err(_) => {
                    return Err(format!(
                        "{s:?} is not a CIDR prefix (like 10.0.0.0/8 or fd00::/8)"
                    ));
                }
            },
        };
        if net.trunc() != net {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Self(net))
    }
}

/// Who a rule is about: the peer (source on ingress, destination on egress).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "RawSelector")]
pub enum Selector {
    /// Peers whose SPIFFE ID (static or attested binding) matches.
    Spiffe(SpiffePattern),
    /// Peers whose address is in the prefix, whatever their identity.
    Cidr(IpNet),
    /// Peers with no SPIFFE identity.
    World,
    /// Every peer.
    Any,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Spiffe(p) => write!(f, "spiffe {p}"),
            Selector::Cidr(n) => write!(f, "cidr {n}"),
            Selector::World => f.write_str("world"),
            Selector::Any => f.write_str("any"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    spiffe: Option<InDomain<SpiffePattern>>,
    cidr: Option<Cidr>,
    world: Option<bool>,
    any: Option<bool>,
}

impl TryFrom<RawSelector> for Selector {
    type Error = String;
    fn try_from(r: RawSelector) -> Result<Self, String> {
        let set = [
            r.spiffe.is_some(),
            r.cidr.is_some(),
            r.world.is_some(),
            r.any.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err(
                "a peer selector has exactly one of `spiffe`, `cidr`, `world: true`, `any: true`"
                    .into(),
            );
        }
        if let Some(p) = r.spiffe {
            return Ok(Selector::Spiffe(p.0));
        }
        if let Some(c) = r.cidr {
            return Ok(Selector::Cidr(c.0));
        }
        if r.world == Some(true) {
            return Ok(Selector::World);
        }
        if r.any == Some(true) {
            return Ok(Selector::Any);
        }
        Err("`world` and `any` take the value true".into())
    }
}

/// What traffic a rule covers, after expansion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Traffic {
    /// Destination ports `lo..=hi` of `proto`.
    Ports { proto: u8, lo: u16, hi: u16 },
    /// Any port (or none) of `proto`.
    Proto(u8),
    /// One ICMP (proto 1) or ICMPv6 (proto 58) type.
    Icmp { proto: u8, icmp_type: u8 },
}

/// `"8443/tcp"`, `"30000-30100/udp"`, `"53"` (tcp and udp). SCTP is matched as a whole
/// protocol (`protocols: [sctp]`): the datapath does not read its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PortSpec(pub(super) Vec<Traffic>);

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_text(
            d,
            "a port, a range or either with a protocol (8443/tcp)",
            |s| PortSpec::try_from(s.to_owned()),
        )
    }
}

fn port(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{whole:?}: {s:?} is not a port (1-65535)")),
    }
}

impl TryFrom<String> for PortSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (range, protos): (&str, &[u8]) = match s.split_once('/') {
            None => (s.as_str(), &[IPPROTO_TCP, IPPROTO_UDP]),
            Some((r, "tcp")) => (r, &[IPPROTO_TCP]),
            Some((r, "udp")) => (r, &[IPPROTO_UDP]),
            Some((_, "sctp")) => {
                return Err(format!(
                    "{s:?}: SCTP ports are not matched (the datapath reads the ports of TCP and UDP only); use `protocols: [sctp]` for all of SCTP"
                ));
            }
            Some((_, other)) => {
                return Err(format!(
                    "{s:?}: protocol {other:?} has no ports; use tcp, udp or sctp (or `protocols:` for others)"
                ));
            }
        };
        let (lo, hi) = if let Some((a, b)) = range.split_once('-') {
            (port(a, &s)?, port(b, &s)?)
        } else {
            let p = port(range, &s)?;
            (p, p)
        };
        if lo > hi {
            return Err(format!("{s:?}: the range is backwards ({lo} > {hi})"));
        }
        Ok(Self(
            protos
                .iter()
                .map(|&proto| Traffic::Ports { proto, lo, hi })
                .collect(),
        ))
    }
}

/// An ICMP type by name (both families) or number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct IcmpName {
    pub(super) v4: Option<u8>,
    pub(super) v6: Option<u8>,
    /// The name it was written as, if not a number.
    pub(super) name: Option<String>,
}

const ICMP_NAMES: &[(&str, Option<u8>, Option<u8>)] = &[
    (
        "echo-request",
        Some(ICMP_ECHO_REQUEST),
        Some(ICMPV6_ECHO_REQUEST),
    ),
    ("echo-reply", Some(ICMP_ECHO_REPLY), Some(ICMPV6_ECHO_REPLY)),
    (
        "destination-unreachable",
        Some(ICMP_DEST_UNREACH),
        Some(ICMPV6_DEST_UNREACH),
    ),
    (
        "time-exceeded",
        Some(ICMP_TIME_EXCEEDED),
        Some(ICMPV6_TIME_EXCEEDED),
    ),
    (
        "parameter-problem",
        Some(ICMP_PARAMETER_PROBLEM),
        Some(ICMPV6_PARAMETER_PROBLEM),
    ),
    ("packet-too-big", None, Some(ICMPV6_PACKET_TOO_BIG)),
    ("redirect", Some(ICMP_REDIRECT), None),
];

impl<'de> Deserialize<'de> for IcmpName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_text(d, "an ICMP type name or number", |s| {
            IcmpName::try_from(s.to_owned())
        })
    }
}

/// An ICMPv6 type (`icmpv6:`) by name or number: a name with no ICMPv6 type would match
/// nothing, and alone widen its rule to all traffic, so it is refused where it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Icmpv6Type(pub(super) u8);

impl<'de> Deserialize<'de> for Icmpv6Type {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_text(d, "an ICMPv6 type name or number", |s| {
            let t = IcmpName::try_from(s.to_owned())?;
            t.v6.map(Icmpv6Type).ok_or_else(|| {
                format!(
                    "`icmpv6`: {} has no ICMPv6 type (ICMPv6 redirects are neighbour discovery, which always passes); list it under `icmp:`",
                    t.name.as_deref().unwrap_or("this name")
                )
            })
        })
    }
}

impl TryFrom<String> for IcmpName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u8>() {
            // A number is the type of whichever list it is in (`Icmpv6Type`, `validate::traffic`).
            return Ok(Self {
                v4: Some(n),
                v6: Some(n),
                name: None,
            });
        }
        ICMP_NAMES
            .iter()
            .find(|(name, ..)| *name == s)
            .map(|&(name, v4, v6)| Self {
                v4,
                v6,
                name: Some(name.to_owned()),
            })
            .ok_or_else(|| {
                let names: Vec<&str> = ICMP_NAMES.iter().map(|n| n.0).collect();
                format!(
                    "{s:?} is not an ICMP type number or one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A protocol by name or number, for rules on whole protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ProtocolName(pub(super) u8);

impl<'de> Deserialize<'de> for ProtocolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_text(d, "a protocol name or number", |s| {
            ProtocolName::try_from(s.to_owned())
        })
    }
}

impl TryFrom<String> for ProtocolName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let n = match s.as_str() {
            "tcp" => IPPROTO_TCP,
            "udp" => IPPROTO_UDP,
            "icmp" => IPPROTO_ICMP,
            "icmpv6" => IPPROTO_ICMPV6,
            "sctp" => IPPROTO_SCTP,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            other => other.parse::<u8>().map_err(|_| {
                format!("{s:?} is not a protocol name (tcp, udp, icmp, icmpv6, sctp, gre, esp, ah) or number")
            })?,
        };
        Ok(Self(n))
    }
}

/// A failsafe entry: `proto:cidr:port`, e.g. `tcp:10.0.0.0/8:22` or `tcp:::/0:22`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Failsafe {
    pub proto: u8,
    pub net: IpNet,
    pub port: u16,
}

impl TryFrom<String> for Failsafe {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a failsafe entry; write proto:cidr:port, e.g. tcp:10.0.0.0/8:22")
        };
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let (cidr, port_s) = rest.rsplit_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => IPPROTO_TCP,
            "udp" => IPPROTO_UDP,
            _ => return Err(format!("{s:?}: failsafe entries are tcp or udp")),
        };
        let net = Cidr::try_from(cidr.to_owned())?.0;
        Ok(Self {
            proto,
            net,
            port: port(port_s, &s)?,
        })
    }
}

impl fmt::Display for Failsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.proto == IPPROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        write!(f, "{proto}:{}:{}", self.net, self.port)
    }
}

/// SSH from anywhere: the operator cannot lock themselves out unless they say so.
pub fn default_failsafe() -> Vec<Failsafe> {
    ["tcp:0.0.0.0/0:22", "tcp:::/0:22"]
        .into_iter()
        .map(|s| Failsafe::try_from(s.to_owned()).expect("valid default"))
        .collect()
}
