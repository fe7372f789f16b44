//! Syntax -> model. Each value was checked as it was read ([`super::values`]; interface names
//! against the agent's interfaces when they are known, see [`Interfaces`]; a rate limit
//! against its rule and the per-source tables before it, see [`super::ratelimit`]); what is
//! left are
//! the checks about the document as a whole: the API version, the trust domain every SPIFFE ID
//! must belong to, unique workload names, an address bound once and owned once on each
//! interface, interfaces listed once. Then defaults are
//! filled in, unnamed rules named and each rule's traffic expanded. Errors name the file and
//! the place in the document (`workloads[2].addresses[0]`); the first one found is reported,
//! in document order.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use boundary_common::{Direction, maps::WORKLOAD_NAME_LEN};

use super::{
    fingerprint,
    interfaces::{self, Interfaces, Owners},
    model::{Policy, Rule, StaticIdentity, Workload},
    ratelimit::counting_sources,
    spiffe::{SpiffeError, SpiffeId},
    syntax::{API_VERSION, Defaults, RawIdentity, RawPolicy, RawRule, RawTraffic, RawWorkload},
    values::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Selector, Traffic,
        checking_interfaces, default_failsafe,
    },
};
use crate::yaml::{self, YamlError};

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

impl Policy {
    /// Reads a policy whose interface names are not checked (see [`Interfaces::unchecked`]).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        Self::from_file_on(path, &Interfaces::unchecked())
    }

    /// Reads a policy whose interface names are not checked (see [`Interfaces::unchecked`]).
    pub fn from_str(file: &str, text: &str) -> Result<Self, PolicyError> {
        Self::from_str_on(file, text, &Interfaces::unchecked())
    }

    /// Reads a policy for a host protecting `interfaces`.
    pub fn from_file_on(path: &Path, interfaces: &Interfaces) -> Result<Self, PolicyError> {
        let raw: RawPolicy = checking_interfaces(interfaces.names(), || {
            counting_sources(|| yaml::from_file(path))
        })?;
        validate(raw, &path.display().to_string(), interfaces)
    }

    /// Reads a policy (`text`, from `file`) for a host protecting `interfaces`.
    pub fn from_str_on(
        file: &str,
        text: &str,
        interfaces: &Interfaces,
    ) -> Result<Self, PolicyError> {
        let raw: RawPolicy = checking_interfaces(interfaces.names(), || {
            counting_sources(|| yaml::from_str(file, text))
        })?;
        validate(raw, file, interfaces)
    }
}

/// The document being checked: the file its errors name, and the trust domain its SPIFFE IDs
/// must belong to (if it names one).
struct Document<'a> {
    file: &'a str,
    trust_domain: Option<&'a str>,
}

impl Document<'_> {
    fn invalid(&self, path: String, message: String) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_owned(),
            path,
            message,
        }
    }

    fn in_domain(&self, td: &str, at: String) -> Result<(), PolicyError> {
        match self.trust_domain {
            Some(ours) if ours != td => Err(self.invalid(
                at,
                format!("trust domain {td:?} is not this policy's trustDomain {ours:?}"),
            )),
            _ => Ok(()),
        }
    }
}

fn validate(raw: RawPolicy, file: &str, interfaces: &Interfaces) -> Result<Policy, PolicyError> {
    let top = Document {
        file,
        trust_domain: None,
    };
    api_version(&raw.api_version).map_err(|m| top.invalid("apiVersion".into(), m))?;
    let trust_domain = raw
        .trust_domain
        .map(trust_domain)
        .transpose()
        .map_err(|m| top.invalid("trustDomain".into(), m))?;
    let doc = Document {
        file,
        trust_domain: trust_domain.as_deref(),
    };
    let identities = identities(raw.identities, &doc)?;
    let workloads = workloads(raw.workloads, raw.defaults, &doc)?;
    let mut table = BTreeMap::new();
    for name in workloads.iter().flat_map(|w| &w.interfaces) {
        let index = interfaces.index(name, &table);
        table.insert(name.clone(), index);
    }
    Ok(Policy {
        trust_domain,
        interfaces: table,
        interfaces_checked: interfaces.checked(),
        failsafe: raw.failsafe.unwrap_or_else(default_failsafe),
        identities,
        workloads,
    })
}

fn api_version(version: &str) -> Result<(), String> {
    if version == API_VERSION {
        Ok(())
    } else {
        Err(format!(
            "{version:?} is not supported; this agent reads {API_VERSION:?}"
        ))
    }
}

/// A trust domain is what a SPIFFE ID holds between `spiffe://` and its path.
fn trust_domain(td: String) -> Result<String, String> {
    let id: SpiffeId = format!("spiffe://{td}")
        .parse()
        .map_err(|e: SpiffeError| e.why.to_owned())?;
    if !id.path().is_empty() {
        return Err(format!("{td:?} is a trust domain name, without a path"));
    }
    Ok(td)
}

/// Static bindings: SPIFFE IDs of the trust domain, each address bound to one of them.
fn identities(raw: Vec<RawIdentity>, doc: &Document) -> Result<Vec<StaticIdentity>, PolicyError> {
    let mut bound: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut identities = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = format!("identities[{i}]");
        let id: SpiffeId =
            r.id.parse()
                .map_err(|e: SpiffeError| doc.invalid(format!("{at}.id"), e.to_string()))?;
        doc.in_domain(id.trust_domain(), format!("{at}.id"))?;
        if r.addresses.is_empty() {
            return Err(doc.invalid(
                format!("{at}.addresses"),
                "list at least one address".into(),
            ));
        }
        for (j, a) in r.addresses.iter().enumerate() {
            if let Some(other) = bound.insert(a.0, id.to_string()) {
                return Err(doc.invalid(
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
    Ok(identities)
}

/// Workloads: names unique, each address owned by one workload on each interface, the
/// policy's defaults filled in where the workload does not override them.
fn workloads(
    raw: Vec<RawWorkload>,
    defaults: Defaults,
    doc: &Document,
) -> Result<Vec<Workload>, PolicyError> {
    let mut names = BTreeSet::new();
    let mut owners = Owners::default();
    let mut workloads = Vec::with_capacity(raw.len());
    for (i, w) in raw.into_iter().enumerate() {
        let at = format!("workloads[{i}]");
        workload_name(&w.name).map_err(|m| doc.invalid(format!("{at}.name"), m))?;
        if !names.insert(w.name.clone()) {
            return Err(doc.invalid(
                format!("{at}.name"),
                format!("{:?} is used by an earlier workload", w.name),
            ));
        }
        if w.addresses.is_empty() {
            return Err(doc.invalid(
                format!("{at}.addresses"),
                "list at least one address".into(),
            ));
        }
        let interfaces = interfaces::listed(w.interfaces).map_err(|(k, m)| {
            let at = match k {
                Some(k) => format!("{at}.interfaces[{k}]"),
                None => format!("{at}.interfaces"),
            };
            doc.invalid(at, m)
        })?;
        for (j, a) in w.addresses.iter().enumerate() {
            owners
                .claim(a.0, &w.name, &interfaces)
                .map_err(|m| doc.invalid(format!("{at}.addresses[{j}]"), m))?;
        }
        let ingress = rules(&w.name, &at, Direction::Ingress, w.ingress, doc)?;
        let egress = rules(&w.name, &at, Direction::Egress, w.egress, doc)?;
        workloads.push(Workload {
            name: w.name,
            addresses: w.addresses.into_iter().map(|a| a.0).collect(),
            interfaces,
            mode: w.mode.unwrap_or(defaults.mode),
            ingress_default: w.defaults.ingress.unwrap_or(defaults.ingress),
            egress_default: w.defaults.egress.unwrap_or(defaults.egress),
            ingress,
            egress,
        });
    }
    Ok(workloads)
}

/// 1 to 63 characters of `[A-Za-z0-9._-]`: the name fits the names map with its NUL.
fn workload_name(name: &str) -> Result<(), String> {
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

/// One direction's rules: a SPIFFE peer must be of the trust domain, a rule without a name is
/// called `<workload>/<direction>[<index>]`, traffic is expanded.
fn rules(
    workload: &str,
    at: &str,
    direction: Direction,
    raw: Vec<impl Into<RawRule>>,
    doc: &Document,
) -> Result<Vec<Rule>, PolicyError> {
    let dir = direction.as_str();
    let key = match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    // Names taken so far in this list, and how often each unnamed rule's content was seen.
    let mut names = BTreeSet::new();
    let mut repeats: BTreeMap<String, usize> = BTreeMap::new();
    for (j, r) in raw.into_iter().map(Into::into).enumerate() {
        if let Selector::Spiffe(p) = &r.peer {
            doc.in_domain(p.trust_domain(), format!("{at}.{dir}[{j}].{key}"))?;
        }
        let traffic = traffic(r.traffic)
            .map_err(|message| doc.invalid(format!("{at}.{dir}[{j}]"), message))?;
        let name = if let Some(name) = r.name {
            name
        } else {
            let base =
                fingerprint::unnamed_rule_name(workload, direction, &r.peer, &traffic, r.action, 0);
            let seen = repeats.entry(base).or_default();
            let name = fingerprint::unnamed_rule_name(
                workload, direction, &r.peer, &traffic, r.action, *seen,
            );
            *seen += 1;
            name
        };
        // A rule's name is what its counters and its `rule` label are kept by across reloads.
        if !names.insert(name.clone()) {
            return Err(doc.invalid(
                format!("{at}.{dir}[{j}].name"),
                format!(
                    "{name:?} names two {dir} rules of {workload}: a rule's name is what its counters are kept by, so it must be unique in its list"
                ),
            ));
        }
        rules.push(Rule {
            name,
            peer: r.peer,
            traffic,
            action: r.action,
            limit: r.rate_limit,
        });
    }
    Ok(rules)
}

/// Everything a rule without ports, ICMP types or protocols covers.
const ALL_TRAFFIC: [u8; 5] = [
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_SCTP,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
];

/// A rule's ports, ICMP types and protocols as one sorted, deduplicated list; every kind of
/// traffic when it has none of the keys. An empty list, or an ICMP name with no type in its
/// list's family, is refused: either would otherwise narrow nothing and, alone, widen the
/// rule to everything.
fn traffic(raw: RawTraffic) -> Result<Vec<Traffic>, String> {
    let lists = [
        ("ports", raw.ports.as_ref().map(Vec::len)),
        ("icmp", raw.icmp.as_ref().map(Vec::len)),
        ("icmpv6", raw.icmpv6.as_ref().map(Vec::len)),
        ("protocols", raw.protocols.as_ref().map(Vec::len)),
    ];
    if let Some((key, _)) = lists.iter().find(|(_, len)| *len == Some(0)) {
        return Err(format!(
            "`{key}: []`: an empty list matches nothing; remove the key (a rule without ports, ICMP types or protocols covers all traffic) or list what the rule is about"
        ));
    }
    let mut out: BTreeSet<Traffic> = BTreeSet::new();
    for p in raw.ports.unwrap_or_default() {
        out.extend(p.0);
    }
    for t in raw.icmp.unwrap_or_default() {
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
    for t in raw.icmpv6.unwrap_or_default() {
        let Some(icmp_type) = t.v6 else {
            return Err(format!(
                "`icmpv6`: {} has no ICMPv6 type (ICMPv6 redirects are neighbour discovery, which always passes); list it under `icmp:`",
                t.name.as_deref().unwrap_or("this name")
            ));
        };
        out.insert(Traffic::Icmp {
            proto: IPPROTO_ICMPV6,
            icmp_type,
        });
    }
    for p in raw.protocols.unwrap_or_default() {
        out.insert(Traffic::Proto(p.0));
    }
    if out.is_empty() {
        out.extend(ALL_TRAFFIC.map(Traffic::Proto));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        Policy::from_str("p.yaml", text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn api_version_and_trust_domain_are_checked_first() {
        assert_eq!(api_version(API_VERSION), Ok(()));
        assert_eq!(
            refusal("apiVersion: v2\ntrustDomain: a/b\n"),
            "p.yaml: apiVersion: \"v2\" is not supported; this agent reads \"boundary.dev/v1\""
        );
        assert_eq!(trust_domain("example.org".into()), Ok("example.org".into()));
        assert_eq!(
            trust_domain("example.org/ns".into()),
            Err("\"example.org/ns\" is a trust domain name, without a path".into())
        );
    }

    #[test]
    fn workload_names_fit_the_names_map() {
        assert_eq!(workload_name("payments-api_v1.2"), Ok(()));
        let longest = "a".repeat(WORKLOAD_NAME_LEN - 1);
        assert_eq!(workload_name(&longest), Ok(()));
        for bad in ["", "a b", "ünï", &"a".repeat(WORKLOAD_NAME_LEN)] {
            assert!(workload_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_rule_without_a_name_is_named_by_what_it_says_not_its_place() {
        let names = |text: &str| -> Vec<String> {
            let p = Policy::from_str("p.yaml", text).expect("valid");
            p.workloads[0]
                .ingress
                .iter()
                .map(|r| r.name.clone())
                .collect()
        };
        let head =
            "apiVersion: boundary.dev/v1\nworkloads:\n  - name: a\n    addresses: [10.0.0.1]\n";
        let before = names(&format!(
            "{head}    ingress: [{{ from: {{ any: true }} }}, {{ name: ssh, from: {{ world: true }}, ports: [22] }}]\n"
        ));
        assert!(before[0].starts_with("a/ingress/"), "{before:?}");
        assert_eq!(before[1], "ssh");
        // A rule inserted before it, and the same rule again: the first keeps its name, the
        // repeat is told apart.
        let after = names(&format!(
            "{head}    ingress: [{{ from: {{ world: true }}, ports: [80] }}, {{ from: {{ any: true }} }}, {{ from: {{ any: true }} }}]\n"
        ));
        assert_eq!(after[1], before[0]);
        assert_eq!(after[2], format!("{}~1", before[0]));
    }

    #[test]
    fn rule_names_are_unique_in_their_list() {
        let e = refusal(
            "apiVersion: boundary.dev/v1\nworkloads:
  - name: a
    addresses: [10.0.0.1]
    ingress: [{ name: web, from: { any: true }, ports: [80] }, { name: web, from: { any: true }, ports: [443] }]
    egress: [{ name: web, to: { any: true } }]\n",
        );
        assert!(e.contains("\"web\" names two ingress rules of a"), "{e}");
    }

    #[test]
    fn a_traffic_list_that_expands_to_nothing_is_refused_not_everything() {
        let e = refusal(
            "apiVersion: boundary.dev/v1\nworkloads:
  - name: a
    addresses: [10.0.0.1]
    ingress:
      - { from: { any: true }, icmpv6: [redirect], action: deny }\n",
        );
        assert!(
            e.starts_with("p.yaml: workloads[0].ingress[0]") && e.contains("has no ICMPv6 type"),
            "{e}"
        );
        let e = refusal(
            "apiVersion: boundary.dev/v1\nworkloads:
  - name: a
    addresses: [10.0.0.1]
    ingress:
      - { from: { any: true }, ports: [] }\n",
        );
        assert!(e.contains("an empty list matches nothing"), "{e}");
    }

    #[test]
    fn traffic_is_expanded_and_a_rule_without_any_covers_everything() {
        let p = Policy::from_str(
            "p.yaml",
            "apiVersion: boundary.dev/v1\nworkloads:
  - name: a
    addresses: [10.0.0.1]
    ingress:
      - { from: { any: true }, icmp: [echo-request, 3], ports: [\"53\"] }
      - { from: { any: true } }\n",
        )
        .expect("valid");
        let rules = &p.workloads[0].ingress;
        let icmp = |proto, icmp_type| Traffic::Icmp { proto, icmp_type };
        let port = |proto| Traffic::Ports {
            proto,
            lo: 53,
            hi: 53,
        };
        assert_eq!(
            rules[0].traffic,
            [
                port(IPPROTO_TCP),
                port(IPPROTO_UDP),
                icmp(IPPROTO_ICMP, 3),
                icmp(IPPROTO_ICMP, 8),
                icmp(IPPROTO_ICMPV6, 128),
            ]
        );
        let mut all = ALL_TRAFFIC.map(Traffic::Proto);
        all.sort();
        assert_eq!(rules[1].traffic, all);
    }
}
