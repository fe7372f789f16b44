//! Policy syntax (serde, unknown fields refused, values validated as they are read so errors
//! carry their line and column) and its validated form.
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
//!     ingress:
//!       - from: { spiffe: "spiffe://example.org/ns/orders/*" }
//!         ports: ["8443/tcp"]
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

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::Path,
    str::FromStr,
};

use boundary_common::maps::WORKLOAD_NAME_LEN;
use ipnet::IpNet;
use serde::Deserialize;

use super::spiffe::{SpiffeId, SpiffePattern};
use crate::yaml::{self, YamlError};

pub const API_VERSION: &str = "boundary.dev/v1";

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        /// Where in the document, e.g. `workloads[2].addresses[0]`.
        path: String,
        message: String,
    },
}

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

/// A single host address: `10.1.2.3`, `10.1.2.3/32`, `fd00::3` or `fd00::3/128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct HostAddr(pub IpAddr);

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
    spiffe: Option<String>,
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
        if let Some(s) = r.spiffe {
            return SpiffePattern::from_str(&s)
                .map(Selector::Spiffe)
                .map_err(|e| e.to_string());
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

/// `"8443/tcp"`, `"30000-30100/udp"`, `"53"` (tcp and udp), `"5000/sctp"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringOrNumber")]
struct PortSpec(Vec<Traffic>);

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Number(u64),
    String(String),
}

impl StringOrNumber {
    fn into_string(self) -> String {
        match self {
            StringOrNumber::Number(n) => n.to_string(),
            StringOrNumber::String(s) => s,
        }
    }
}

fn port(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{whole:?}: {s:?} is not a port (1-65535)")),
    }
}

impl TryFrom<StringOrNumber> for PortSpec {
    type Error = String;
    fn try_from(v: StringOrNumber) -> Result<Self, String> {
        let s = v.into_string();
        let (range, protos): (&str, &[u8]) = match s.split_once('/') {
            None => (s.as_str(), &[IPPROTO_TCP, IPPROTO_UDP]),
            Some((r, "tcp")) => (r, &[IPPROTO_TCP]),
            Some((r, "udp")) => (r, &[IPPROTO_UDP]),
            Some((r, "sctp")) => (r, &[IPPROTO_SCTP]),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringOrNumber")]
struct IcmpName {
    v4: Option<u8>,
    v6: Option<u8>,
}

const ICMP_NAMES: &[(&str, Option<u8>, Option<u8>)] = &[
    ("echo-request", Some(8), Some(128)),
    ("echo-reply", Some(0), Some(129)),
    ("destination-unreachable", Some(3), Some(1)),
    ("time-exceeded", Some(11), Some(3)),
    ("parameter-problem", Some(12), Some(4)),
    ("packet-too-big", None, Some(2)),
    ("redirect", Some(5), None),
];

impl TryFrom<StringOrNumber> for IcmpName {
    type Error = String;
    fn try_from(v: StringOrNumber) -> Result<Self, String> {
        let s = v.into_string();
        if let Ok(n) = s.parse::<u8>() {
            // A number is the type of whichever list it is in; `icmp_types` below decides.
            return Ok(Self {
                v4: Some(n),
                v6: Some(n),
            });
        }
        ICMP_NAMES
            .iter()
            .find(|(name, ..)| *name == s)
            .map(|&(_, v4, v6)| Self { v4, v6 })
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "StringOrNumber")]
struct ProtocolName(u8);

impl TryFrom<StringOrNumber> for ProtocolName {
    type Error = String;
    fn try_from(v: StringOrNumber) -> Result<Self, String> {
        let s = v.into_string();
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
struct RawPolicy {
    api_version: String,
    trust_domain: Option<String>,
    #[serde(default)]
    defaults: Defaults,
    failsafe: Option<Vec<Failsafe>>,
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    workloads: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    id: String,
    addresses: Vec<HostAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkload {
    name: String,
    addresses: Vec<HostAddr>,
    mode: Option<WorkloadMode>,
    /// Overrides of the policy-wide defaults for this workload.
    #[serde(default)]
    defaults: RawWorkloadDefaults,
    #[serde(default)]
    ingress: Vec<RawIngressRule>,
    #[serde(default)]
    egress: Vec<RawEgressRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkloadDefaults {
    ingress: Option<DefaultAction>,
    egress: Option<DefaultAction>,
}

// Ingress and egress rules differ only in the peer's key (`from` / `to`). They are two
// structs rather than one flattened one because serde cannot refuse unknown fields through
// `flatten`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIngressRule {
    name: Option<String>,
    from: Selector,
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    icmp: Vec<IcmpName>,
    #[serde(default)]
    icmpv6: Vec<IcmpName>,
    #[serde(default)]
    protocols: Vec<ProtocolName>,
    #[serde(default)]
    action: RuleAction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEgressRule {
    name: Option<String>,
    to: Selector,
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    icmp: Vec<IcmpName>,
    #[serde(default)]
    icmpv6: Vec<IcmpName>,
    #[serde(default)]
    protocols: Vec<ProtocolName>,
    #[serde(default)]
    action: RuleAction,
}

#[derive(Clone)]
struct RawTraffic {
    ports: Vec<PortSpec>,
    icmp: Vec<IcmpName>,
    icmpv6: Vec<IcmpName>,
    protocols: Vec<ProtocolName>,
    action: RuleAction,
}

impl RawIngressRule {
    fn split(self) -> (Option<String>, Selector, RawTraffic) {
        let t = RawTraffic {
            ports: self.ports,
            icmp: self.icmp,
            icmpv6: self.icmpv6,
            protocols: self.protocols,
            action: self.action,
        };
        (self.name, self.from, t)
    }
}

impl RawEgressRule {
    fn split(self) -> (Option<String>, Selector, RawTraffic) {
        let t = RawTraffic {
            ports: self.ports,
            icmp: self.icmp,
            icmpv6: self.icmpv6,
            protocols: self.protocols,
            action: self.action,
        };
        (self.name, self.to, t)
    }
}

/// A rule, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The operator's name for it, or `<workload>/<direction>[<index>]`.
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

/// Everything a rule without ports, ICMP types or protocols covers.
const ALL_TRAFFIC: [u8; 5] = [
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_SCTP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
];

fn traffic(raw: RawTraffic) -> (Vec<Traffic>, RuleAction) {
    let mut out: BTreeSet<Traffic> = BTreeSet::new();
    for p in raw.ports {
        out.extend(p.0);
    }
    for t in raw.icmp {
        if let Some(icmp_type) = t.v4 {
            out.insert(Traffic::Icmp {
                proto: IPPROTO_ICMP,
                icmp_type,
            });
        }
        // A name covers both families; a number in `icmp:` is an ICMPv4 type only.
        if let (Some(v6), Some(v4)) = (t.v6, t.v4)
            && v6 != v4
        {
            out.insert(Traffic::Icmp {
                proto: IPPROTO_ICMPV6,
                icmp_type: v6,
            });
        } else if let (Some(v6), None) = (t.v6, t.v4) {
            out.insert(Traffic::Icmp {
                proto: IPPROTO_ICMPV6,
                icmp_type: v6,
            });
        }
    }
    for t in raw.icmpv6 {
        if let Some(icmp_type) = t.v6 {
            out.insert(Traffic::Icmp {
                proto: IPPROTO_ICMPV6,
                icmp_type,
            });
        }
    }
    for p in raw.protocols {
        out.insert(Traffic::Proto(p.0));
    }
    if out.is_empty() {
        out.extend(ALL_TRAFFIC.map(Traffic::Proto));
    }
    (out.into_iter().collect(), raw.action)
}

impl Policy {
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let raw: RawPolicy = yaml::from_file(path)?;
        Self::validate(raw, &path.display().to_string())
    }

    pub fn from_str(file: &str, text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = yaml::from_str(file, text)?;
        Self::validate(raw, file)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the document, in document order"
    )]
    fn validate(raw: RawPolicy, file: &str) -> Result<Self, PolicyError> {
        let invalid = |path: String, message: String| PolicyError::Invalid {
            file: file.to_owned(),
            path,
            message,
        };
        if raw.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion".into(),
                format!(
                    "{:?} is not supported; this agent reads {API_VERSION:?}",
                    raw.api_version
                ),
            ));
        }
        let trust_domain = match raw.trust_domain {
            Some(td) => {
                let probe = format!("spiffe://{td}");
                let id: SpiffeId = probe.parse().map_err(|e: super::spiffe::SpiffeError| {
                    invalid("trustDomain".into(), e.why.into())
                })?;
                if !id.path().is_empty() {
                    return Err(invalid(
                        "trustDomain".into(),
                        format!("{td:?} is a trust domain name, without a path"),
                    ));
                }
                Some(td)
            }
            None => None,
        };
        let in_domain = |td: &str, at: String| -> Result<(), PolicyError> {
            match &trust_domain {
                Some(ours) if ours != td => Err(invalid(
                    at,
                    format!("trust domain {td:?} is not this policy's trustDomain {ours:?}"),
                )),
                _ => Ok(()),
            }
        };

        let mut bound: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut identities = Vec::new();
        for (i, r) in raw.identities.into_iter().enumerate() {
            let at = format!("identities[{i}]");
            let id: SpiffeId = r.id.parse().map_err(|e: super::spiffe::SpiffeError| {
                invalid(format!("{at}.id"), e.to_string())
            })?;
            in_domain(id.trust_domain(), format!("{at}.id"))?;
            if r.addresses.is_empty() {
                return Err(invalid(
                    format!("{at}.addresses"),
                    "list at least one address".into(),
                ));
            }
            for (j, a) in r.addresses.iter().enumerate() {
                if let Some(other) = bound.insert(a.0, id.to_string()) {
                    return Err(invalid(
                        format!("{at}.addresses[{j}]"),
                        format!("{} is already bound to {other}", a.0),
                    ));
                }
            }
            identities.push(StaticIdentity {
                id,
                addresses: r.addresses.into_iter().map(|a| a.0).collect(),
            });
        }

        let mut names = BTreeSet::new();
        let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut workloads = Vec::with_capacity(raw.workloads.len());
        for (i, w) in raw.workloads.into_iter().enumerate() {
            let at = format!("workloads[{i}]");
            if w.name.is_empty()
                || w.name.len() >= WORKLOAD_NAME_LEN
                || !w
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    format!("{at}.name"),
                    format!(
                        "{:?}: names are 1 to {} characters of [A-Za-z0-9._-]",
                        w.name,
                        WORKLOAD_NAME_LEN - 1
                    ),
                ));
            }
            if !names.insert(w.name.clone()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("{:?} is used by an earlier workload", w.name),
                ));
            }
            if w.addresses.is_empty() {
                return Err(invalid(
                    format!("{at}.addresses"),
                    "list at least one address".into(),
                ));
            }
            for (j, a) in w.addresses.iter().enumerate() {
                if let Some(other) = owners.insert(a.0, w.name.clone()) {
                    return Err(invalid(
                        format!("{at}.addresses[{j}]"),
                        format!("{} already belongs to workload {other:?}", a.0),
                    ));
                }
            }
            let mut rules = [Vec::new(), Vec::new()];
            let raw_rules = [
                w.ingress
                    .into_iter()
                    .map(RawIngressRule::split)
                    .collect::<Vec<_>>(),
                w.egress
                    .into_iter()
                    .map(RawEgressRule::split)
                    .collect::<Vec<_>>(),
            ];
            for (d, (dir, key)) in [("ingress", "from"), ("egress", "to")]
                .into_iter()
                .enumerate()
            {
                for (j, (name, peer, raw_traffic)) in raw_rules[d].iter().cloned().enumerate() {
                    if let Selector::Spiffe(p) = &peer {
                        in_domain(p.trust_domain(), format!("{at}.{dir}[{j}].{key}"))?;
                    }
                    let (traffic, action) = traffic(raw_traffic);
                    rules[d].push(Rule {
                        name: name.unwrap_or_else(|| format!("{}/{dir}[{j}]", w.name)),
                        peer,
                        traffic,
                        action,
                    });
                }
            }
            let [ingress, egress] = rules;
            workloads.push(Workload {
                name: w.name,
                addresses: w.addresses.into_iter().map(|a| a.0).collect(),
                mode: w.mode.unwrap_or(raw.defaults.mode),
                ingress_default: w.defaults.ingress.unwrap_or(raw.defaults.ingress),
                egress_default: w.defaults.egress.unwrap_or(raw.defaults.egress),
                ingress,
                egress,
            });
        }
        Ok(Self {
            trust_domain,
            failsafe: raw.failsafe.unwrap_or_else(default_failsafe),
            identities,
            workloads,
        })
    }
}
