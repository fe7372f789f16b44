//! Syntax -> model. Each value was checked as it was read ([`super::values`]; interface names
//! against the agent's interfaces when they are known, see [`Interfaces`]; a rate limit
//! against its rule and the per-source tables before it, see [`super::ratelimit`]; names,
//! addresses and SPIFFE IDs against the values read before them, see [`super::document`]),
//! so its error names the file, line and column, and the first one in document order is
//! reported. What is left is filling in defaults, naming unnamed rules and expanding each
//! rule's traffic. A name made for an unnamed rule can still be another rule's: that one
//! refusal names the place in the document (`workloads[2].ingress[1]`) without a line and
//! column, since the name exists only once the whole rule and its workload's name (which may
//! come after the rules) are read, and the reader is past both.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use boundary_common::Direction;

use super::{
    document, fingerprint,
    interfaces::Interfaces,
    model::{Policy, Rule, StaticIdentity, Workload},
    ratelimit::counting_sources,
    syntax::{Defaults, IdentityEntry, RawPolicy, RawRule, RawTraffic, WorkloadEntry},
    values::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Traffic,
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
        /// Where in the document, e.g. `workloads[2].ingress[1]`.
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
        let raw = read(interfaces, || yaml::from_file(path))?;
        validate(raw, &path.display().to_string(), interfaces)
    }

    /// Reads a policy (`text`, from `file`) for a host protecting `interfaces`.
    pub fn from_str_on(
        file: &str,
        text: &str,
        interfaces: &Interfaces,
    ) -> Result<Self, PolicyError> {
        let raw = read(interfaces, || yaml::from_str(file, text))?;
        validate(raw, file, interfaces)
    }
}

/// Runs `read` with what the checks of its values need beside the reader: the agent's
/// interfaces, the per-source tables counted so far and the document read so far.
fn read(
    interfaces: &Interfaces,
    read: impl FnOnce() -> Result<RawPolicy, YamlError>,
) -> Result<RawPolicy, YamlError> {
    checking_interfaces(interfaces.names(), || {
        counting_sources(|| document::reading(read))
    })
}

fn validate(raw: RawPolicy, file: &str, interfaces: &Interfaces) -> Result<Policy, PolicyError> {
    let identities = raw.identities.into_iter().map(identity).collect();
    let workloads = workloads(raw.workloads, raw.defaults, file)?;
    let mut table = BTreeMap::new();
    for name in workloads.iter().flat_map(|w| &w.interfaces) {
        let index = interfaces.index(name, &table);
        table.insert(name.clone(), index);
    }
    Ok(Policy {
        trust_domain: raw.trust_domain.map(|td| td.0),
        interfaces: table,
        interfaces_checked: interfaces.checked(),
        failsafe: raw.failsafe.unwrap_or_else(default_failsafe),
        identities,
        workloads,
    })
}

/// A static binding: a SPIFFE ID of the trust domain, its addresses bound to no other.
fn identity(raw: IdentityEntry) -> StaticIdentity {
    let raw = raw.0;
    StaticIdentity {
        id: raw.id.0,
        addresses: raw.addresses.0.into_iter().map(|a| a.0).collect(),
    }
}

/// Workloads, the policy's defaults filled in where the workload does not override them.
fn workloads(
    raw: Vec<WorkloadEntry>,
    defaults: Defaults,
    file: &str,
) -> Result<Vec<Workload>, PolicyError> {
    let mut workloads = Vec::with_capacity(raw.len());
    for (i, w) in raw.into_iter().enumerate() {
        let w = w.0;
        let at = format!("workloads[{i}]");
        let name = w.name.0;
        let ingress = rules(&name, &at, Direction::Ingress, w.ingress, file)?;
        let egress = rules(&name, &at, Direction::Egress, w.egress, file)?;
        workloads.push(Workload {
            addresses: w.addresses.0.into_iter().map(|a| a.0).collect(),
            interfaces: w
                .interfaces
                .map(|l| l.0.into_iter().map(|i| i.0.as_str().to_owned()).collect())
                .unwrap_or_default(),
            name,
            mode: w.mode.unwrap_or(defaults.mode),
            ingress_default: w.defaults.ingress.unwrap_or(defaults.ingress),
            egress_default: w.defaults.egress.unwrap_or(defaults.egress),
            ingress,
            egress,
        });
    }
    Ok(workloads)
}

/// One direction's rules: a rule without a name is called
/// `<workload>/<direction>/<digest>`, traffic is expanded.
fn rules(
    workload: &str,
    at: &str,
    direction: Direction,
    raw: Vec<impl Into<RawRule>>,
    file: &str,
) -> Result<Vec<Rule>, PolicyError> {
    let dir = direction.as_str();
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    // Names taken so far in this list, and how often each unnamed rule's content was seen.
    let mut names = BTreeSet::new();
    let mut repeats: BTreeMap<String, usize> = BTreeMap::new();
    for (j, r) in raw.into_iter().map(Into::into).enumerate() {
        let traffic = traffic(r.traffic);
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
        // Two names written alike were refused at the second one (`document::rule_name`);
        // what is left is a made name equal to another rule's.
        if !names.insert(name.clone()) {
            return Err(PolicyError::Invalid {
                file: file.to_owned(),
                path: format!("{at}.{dir}[{j}]"),
                message: format!(
                    "{name:?} names two {dir} rules of {workload}: a rule's name is what its counters are kept by, so it must be unique in its list"
                ),
            });
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
/// traffic when it has none of the keys. (An empty list, or an ICMPv6 name with no ICMPv6
/// type, was refused as it was read: either would otherwise narrow nothing and, alone, widen
/// the rule to everything.)
fn traffic(raw: RawTraffic) -> Vec<Traffic> {
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
        out.insert(Traffic::Icmp {
            proto: IPPROTO_ICMPV6,
            icmp_type: t.0,
        });
    }
    for p in raw.protocols.unwrap_or_default() {
        out.insert(Traffic::Proto(p.0));
    }
    if out.is_empty() {
        out.extend(ALL_TRAFFIC.map(Traffic::Proto));
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use boundary_common::maps::WORKLOAD_NAME_LEN;

    use super::*;
    use crate::policy::{
        syntax::API_VERSION,
        values::{api_version, trust_domain, workload_name},
    };

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
            "p.yaml:1:13: apiVersion: \"v2\" is not supported; this agent reads \"boundary.dev/v1\""
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
        assert!(
            e.starts_with("p.yaml:5:72: workloads[0].ingress[1].name: ")
                && e.contains("\"web\" names two ingress rules of a"),
            "{e}"
        );
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
            e.starts_with("p.yaml:6:41: workloads[0].ingress[0].icmpv6[0]: ")
                && e.contains("has no ICMPv6 type"),
            "{e}"
        );
        let e = refusal(
            "apiVersion: boundary.dev/v1\nworkloads:
  - name: a
    addresses: [10.0.0.1]
    ingress:
      - { from: { any: true }, ports: [] }\n",
        );
        assert!(
            e.starts_with("p.yaml:6:39: workloads[0].ingress[0].ports: ")
                && e.contains("an empty list matches nothing"),
            "{e}"
        );
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
