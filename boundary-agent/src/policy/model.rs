//! Policy syntax (serde, unknown fields refused) and its validated form.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::Path,
};

use boundary_common::maps::WORKLOAD_NAME_LEN;
use serde::Deserialize;

use crate::yaml::{self, YamlError};

pub const API_VERSION: &str = "boundary.dev/v1";

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
                "{s:?}: a workload address is a single host (/{full}); CIDR ranges belong in identities"
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(format!("{s:?} cannot be a workload's own address"));
        }
        Ok(Self(addr))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Defaults {
    /// Ingress packets no rule decides. Default `allow` until rules exist.
    #[serde(default = "allow")]
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
            ingress: DefaultAction::Allow,
            egress: DefaultAction::Allow,
            mode: WorkloadMode::Enforce,
        }
    }
}

fn allow() -> DefaultAction {
    DefaultAction::Allow
}
fn enforce() -> WorkloadMode {
    WorkloadMode::Enforce
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPolicy {
    api_version: String,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    workloads: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWorkload {
    name: String,
    addresses: Vec<HostAddr>,
    mode: Option<WorkloadMode>,
    ingress: Option<RawDirectionDefaults>,
    egress: Option<RawDirectionDefaults>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDirectionDefaults {
    default: DefaultAction,
}

/// A protected workload, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub mode: WorkloadMode,
    pub ingress_default: DefaultAction,
    pub egress_default: DefaultAction,
}

/// A validated policy: names unique, addresses owned by one workload each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub workloads: Vec<Workload>,
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
            workloads.push(Workload {
                name: w.name,
                addresses: w.addresses.into_iter().map(|a| a.0).collect(),
                mode: w.mode.unwrap_or(raw.defaults.mode),
                ingress_default: w.ingress.map_or(raw.defaults.ingress, |d| d.default),
                egress_default: w.egress.map_or(raw.defaults.egress, |d| d.default),
            });
        }
        Ok(Self { workloads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_str("policy.yaml", text)
    }

    #[test]
    fn workload_inherits_and_overrides_defaults() {
        let p = parse(
            "apiVersion: boundary.dev/v1\n\
             defaults: { ingress: deny, mode: audit }\n\
             workloads:\n\
             - name: api\n  addresses: [10.1.2.3, \"fd00::3/128\"]\n\
             - name: db\n  addresses: [10.1.2.4/32]\n  mode: enforce\n  ingress: { default: allow }\n",
        )
        .unwrap();
        let api = &p.workloads[0];
        assert_eq!(api.mode, WorkloadMode::Audit);
        assert_eq!(api.ingress_default, DefaultAction::Deny);
        assert_eq!(api.egress_default, DefaultAction::Allow);
        assert_eq!(api.addresses.len(), 2);
        let db = &p.workloads[1];
        assert_eq!(db.mode, WorkloadMode::Enforce);
        assert_eq!(db.ingress_default, DefaultAction::Allow);
    }

    #[test]
    fn errors_name_the_place() {
        let head = "apiVersion: boundary.dev/v1\nworkloads:\n";
        for (body, needle) in [
            ("- name: a\n  addresses: [10.0.0.0/8]\n", "policy.yaml:4:"),
            ("- name: a\n  addresses: [10.0.0.0/8]\n", "single host"),
            (
                "- name: a\n  addresses: [nope]\n",
                "not an IPv4 or IPv6 address",
            ),
            (
                "- name: a\n  adresses: [10.0.0.1]\n",
                "policy.yaml:4:3: workloads[0]: unknown field `adresses`",
            ),
            (
                "- name: a\n  addresses: [10.0.0.1]\n- name: a\n  addresses: [10.0.0.2]\n",
                "workloads[1].name: \"a\" is used by an earlier workload",
            ),
            (
                "- name: a\n  addresses: [10.0.0.1]\n- name: b\n  addresses: [10.0.0.1]\n",
                "workloads[1].addresses[0]: 10.0.0.1 already belongs to workload \"a\"",
            ),
            (
                "- name: \"a b\"\n  addresses: [10.0.0.1]\n",
                "workloads[0].name",
            ),
            ("- name: a\n  addresses: []\n", "at least one address"),
            (
                "- name: a\n  addresses: [0.0.0.0]\n",
                "cannot be a workload",
            ),
        ] {
            let e = parse(&format!("{head}{body}")).unwrap_err().to_string();
            assert!(e.contains(needle), "{body:?}: {e}");
        }
        let e = parse("apiVersion: v0\n").unwrap_err().to_string();
        assert!(e.contains("apiVersion"), "{e}");
    }
}
