//! The agent configuration file (`boundary-agent run --config agent.yaml`): interfaces, the
//! ingress hook and XDP mode, pin directory, the non-IP default and the policy file's path. It changes rarely; the
//! policy file changes often.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::Deserialize;

pub use self::pattern::InterfacePattern;
use crate::{
    identity::IdentityConfig,
    policy::spiffe::SpiffeId,
    yaml::{self, YamlError},
};

mod pattern;

/// Where pins live unless the config says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/boundary";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum XdpMode {
    /// In the driver, before an skb exists: the fast path.
    Native,
    /// In the core stack, after the skb is built (`xdpgeneric`): works everywhere, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Where a protected interface's ingress is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "camelCase")]
pub enum IngressHook {
    /// TC (tcx) on veth interfaces, XDP on the rest. With a native XDP program attached, the
    /// veth driver stops passing its peer's GSO aggregates and hands the program every
    /// MTU-sized frame (measured: 0.41x the throughput of no filter); a tcx program sees the
    /// aggregates. Physical NICs have XDP before any skb is built: the fastest drop there is.
    Auto,
    /// XDP, in `xdpMode`.
    Xdp,
    /// TC (tcx) ingress.
    Tc,
}

impl fmt::Display for IngressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IngressHook::Auto => "auto",
            IngressHook::Xdp => "xdp",
            IngressHook::Tc => "tc",
        })
    }
}

/// The most verbose kernel-side diagnostics the datapath logs (`kernelLog`): its rare events
/// (a map update that failed, an impossible state, a parse limit hit), drained into the
/// agent's log under the target `boundary::kernel`. Sites above the level are removed by the
/// verifier at load, so `off` costs nothing. Changes without a restart (SIGHUP, or an edit of
/// the config file): the programs are loaded again and replaced in their pinned links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KernelLog {
    /// Nothing (the default).
    #[default]
    Off,
    /// Impossible states (the packet was judged `internal_error`).
    Error,
    /// And map updates that failed in the datapath.
    Warn,
    /// The same as `warn` today (no site logs at info).
    Info,
    /// And every parse limit hit (attacker-chosen packets: one record each).
    Debug,
}

impl fmt::Display for KernelLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelLog::Off => "off",
            KernelLog::Error => "error",
            KernelLog::Warn => "warn",
            KernelLog::Info => "info",
            KernelLog::Debug => "debug",
        })
    }
}

/// What happens to frames that are neither IPv4 nor IPv6 (ARP, LLDP, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NonIpAction {
    Pass,
    Drop,
}

/// An interface name as the kernel accepts it (1-15 bytes, no '/', no whitespace).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!("interface name {s:?} must be 1 to 15 bytes"));
        }
        if s.contains(['/', ':']) || s.chars().any(char::is_whitespace) || s == "." || s == ".." {
            return Err(format!(
                "interface name {s:?} contains a character Linux refuses"
            ));
        }
        Ok(Self(s))
    }
}

impl FromStr for InterfaceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where `/metrics`, `/healthz` and `/readyz` listen: an address, or `""` for nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MetricsAddress(pub Option<std::net::SocketAddr>);

impl TryFrom<String> for MetricsAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("{s:?} is not an address:port (like 127.0.0.1:9477), nor \"\" to turn the endpoints off"))
    }
}

/// The default metrics address: loopback only.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9477";

/// An entry of `interfaces:`: a name or pattern, or `{ name, ingress }`.
#[derive(Debug)]
struct RawInterface {
    name: InterfacePattern,
    ingress: Option<IngressHook>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DetailedInterface {
    #[serde(deserialize_with = "pattern_from_str")]
    name: InterfacePattern,
    #[serde(default)]
    ingress: Option<IngressHook>,
}

impl<'de> Deserialize<'de> for RawInterface {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawInterface;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an interface name or pattern, or { name: NAME, ingress: auto | xdp | tc }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawInterface, E> {
                Ok(RawInterface {
                    name: InterfacePattern::try_from(v.to_owned()).map_err(E::custom)?,
                    ingress: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawInterface, A::Error> {
                let d = DetailedInterface::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawInterface {
                    name: d.name,
                    ingress: d.ingress,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn pattern_from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<InterfacePattern, D::Error> {
    let s = String::deserialize(d)?;
    InterfacePattern::try_from(s).map_err(serde::de::Error::custom)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    interfaces: Vec<RawInterface>,
    #[serde(default = "default_ingress")]
    ingress: IngressHook,
    #[serde(default = "default_xdp_mode")]
    xdp_mode: XdpMode,
    #[serde(default)]
    allow_generic_fallback: bool,
    #[serde(default = "default_pin_dir")]
    pin_dir: PathBuf,
    #[serde(default = "default_non_ip")]
    non_ip: NonIpAction,
    policy: PathBuf,
    #[serde(default = "default_max_workloads")]
    max_workloads: u32,
    #[serde(default = "default_metrics_address")]
    metrics_address: MetricsAddress,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default)]
    kernel_log: KernelLog,
    #[serde(default)]
    identity: Option<IdentityConfig>,
}

/// Where the agent keeps what must outlive it besides the pins: a policy awaiting
/// confirmation, one that was rolled back.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/boundary";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_metrics_address() -> MetricsAddress {
    MetricsAddress::try_from(DEFAULT_METRICS_ADDRESS.to_owned()).expect("valid default")
}

fn default_ingress() -> IngressHook {
    IngressHook::Auto
}

fn default_xdp_mode() -> XdpMode {
    XdpMode::Native
}
fn default_pin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PIN_DIR)
}
fn default_non_ip() -> NonIpAction {
    NonIpAction::Pass
}
/// The most workload slots `maxWorkloads` may ask for (slots are 16-bit).
pub const MAX_CONFIGURABLE_WORKLOADS: u32 = 65_535;

fn default_max_workloads() -> u32 {
    boundary_common::maps::MAX_WORKLOADS
}

/// A validated agent configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Interfaces to protect, by name or pattern: XDP or TC (tcx) on ingress and TC on egress
    /// on each that exists, attached as they appear.
    pub interfaces: Vec<InterfacePattern>,
    /// Where ingress is enforced, for interfaces that do not say. Default `auto`.
    pub ingress: IngressHook,
    /// Entries that say where their interfaces' ingress is enforced.
    pub ingress_overrides: Vec<(InterfacePattern, IngressHook)>,
    /// Default `native`; never silently downgraded.
    pub xdp_mode: XdpMode,
    /// When native attach fails: try generic instead of exiting. Default false.
    pub allow_generic_fallback: bool,
    /// Default `/sys/fs/bpf/boundary`; must be on a bpffs.
    pub pin_dir: PathBuf,
    /// Default `pass`, so ARP and neighbour discovery keep working.
    pub non_ip: NonIpAction,
    /// The policy file, relative paths resolved against the config file's directory.
    pub policy: PathBuf,
    /// Workload slots (the unprotected slot 0 included); sizes the counter maps. Default 256.
    pub max_workloads: u32,
    /// Where the HTTP endpoints listen; default 127.0.0.1:9477, `""` for nowhere.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Default `/var/lib/boundary` (relative paths against the config file's directory): a
    /// policy awaiting confirmation, and one that was rolled back.
    pub state_dir: PathBuf,
    /// Kernel-side diagnostics; default `off`. The one field applied without a restart.
    pub kernel_log: KernelLog,
    /// The file this was read from: re-read for `kernelLog` on SIGHUP and when it changes.
    pub file: PathBuf,
    /// The mTLS identity endpoint and its trust, when `identity.listen` is set (paths resolved
    /// against the config file's directory).
    pub identity: Option<IdentityConfig>,
}

impl AgentConfig {
    /// The entry that governs the interface `name`: an exact entry for it, else the first
    /// pattern (in the file's order) that matches it; `None`: not configured.
    pub fn entry_for(&self, name: &str) -> Option<&InterfacePattern> {
        self.interfaces
            .iter()
            .find(|e| e.exact().is_some_and(|n| n.as_str() == name))
            .or_else(|| self.interfaces.iter().find(|e| e.matches(name)))
    }

    /// Where the interface `name`'s ingress is enforced, as its entry says (`auto` is
    /// resolved at attach).
    pub fn ingress_for(&self, name: &str) -> IngressHook {
        let Some(entry) = self.entry_for(name) else {
            return self.ingress;
        };
        self.ingress_overrides
            .iter()
            .find(|(i, _)| i == entry)
            .map_or(self.ingress, |(_, h)| *h)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = yaml::from_file(path)?;
        Self::validate(raw, path)
    }

    pub fn from_str(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = yaml::from_str(&file.display().to_string(), text)?;
        Self::validate(raw, file)
    }

    fn validate(raw: RawConfig, file: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            file: file.display().to_string(),
            message,
        };
        if raw.interfaces.is_empty() {
            return Err(invalid(
                "interfaces: list at least one interface to protect".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for i in raw.interfaces.iter().map(|i| &i.name) {
            if !seen.insert(i) {
                return Err(invalid(format!("interfaces: {i} is listed twice")));
            }
        }
        if !raw.pin_dir.is_absolute() {
            return Err(invalid(format!(
                "pinDir: {} must be an absolute path on a bpffs",
                raw.pin_dir.display()
            )));
        }
        if !(2..=MAX_CONFIGURABLE_WORKLOADS).contains(&raw.max_workloads) {
            return Err(invalid(format!(
                "maxWorkloads: {} must be between 2 and 65535",
                raw.max_workloads
            )));
        }
        let beside = |p: PathBuf| {
            if p.is_absolute() {
                p
            } else {
                file.parent().unwrap_or(Path::new(".")).join(p)
            }
        };
        let policy = beside(raw.policy);
        let state_dir = beside(raw.state_dir);
        let identity = match raw.identity {
            Some(i) if i.listen.is_some() => {
                for admin in &i.admins {
                    admin
                        .parse::<SpiffeId>()
                        .map_err(|e| invalid(format!("identity.admins: {e}")))?;
                }
                if let Some(td) = &i.trust_domain {
                    format!("spiffe://{td}")
                        .parse::<SpiffeId>()
                        .map_err(|e| invalid(format!("identity.trustDomain: {e}")))?;
                }
                if i.lease.is_zero() {
                    return Err(invalid("identity.lease: must be longer than 0s".into()));
                }
                Some(IdentityConfig {
                    trust_bundle: beside(i.trust_bundle),
                    crl: i.crl.map(beside),
                    certificate: beside(i.certificate),
                    key: beside(i.key),
                    ..i
                })
            }
            _ => None,
        };
        let ingress_overrides = raw
            .interfaces
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.ingress?)))
            .collect();
        Ok(Self {
            interfaces: raw.interfaces.into_iter().map(|i| i.name).collect(),
            ingress: raw.ingress,
            ingress_overrides,
            xdp_mode: raw.xdp_mode,
            allow_generic_fallback: raw.allow_generic_fallback,
            pin_dir: raw.pin_dir,
            non_ip: raw.non_ip,
            policy,
            max_workloads: raw.max_workloads,
            metrics_address: raw.metrics_address.0,
            state_dir,
            kernel_log: raw.kernel_log,
            file: file.to_path_buf(),
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_str(Path::new("/etc/boundary/agent.yaml"), text)
    }

    #[test]
    fn shipped_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let c = AgentConfig::from_file(&dir.join("agent.yaml")).expect("examples/agent.yaml");
        assert_eq!(c.interfaces[0].as_str(), "eth0");
        // Its interface names are the example config's.
        let interfaces = crate::policy::Interfaces::named(c.interfaces.iter().cloned());
        let p = crate::policy::Policy::from_file_on(&c.policy, &interfaces)
            .expect("examples/policy.yaml");
        assert_eq!(p.workloads.len(), 2);
        assert!(p.interfaces_checked && p.interfaces.contains_key("eth0"));
    }

    #[test]
    fn defaults_fill_in() {
        let c = parse("interfaces: [eth0]\npolicy: policy.yaml\n").unwrap();
        assert_eq!(c.xdp_mode, XdpMode::Native);
        assert!(!c.allow_generic_fallback);
        assert_eq!(c.pin_dir, Path::new(DEFAULT_PIN_DIR));
        assert_eq!(c.non_ip, NonIpAction::Pass);
        assert_eq!(c.policy, Path::new("/etc/boundary/policy.yaml"));
        assert_eq!(c.kernel_log, KernelLog::Off);
    }

    #[test]
    fn kernel_log_levels() {
        for (text, level) in [
            ("off", KernelLog::Off),
            ("error", KernelLog::Error),
            ("warn", KernelLog::Warn),
            ("info", KernelLog::Info),
            ("debug", KernelLog::Debug),
        ] {
            let c = parse(&format!(
                "interfaces: [eth0]\npolicy: p\nkernelLog: {text}\n"
            ))
            .unwrap();
            assert_eq!(c.kernel_log, level);
            assert_eq!(c.kernel_log.to_string(), text);
        }
        let e = parse("interfaces: [eth0]\npolicy: p\nkernelLog: trace\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(":3:12: kernelLog: unknown variant `trace`"),
            "{e}"
        );
    }

    #[test]
    fn ingress_hooks_default_and_override() {
        let c = parse("interfaces: [eth0]\npolicy: p\n").unwrap();
        assert_eq!(c.ingress_for("eth0"), IngressHook::Auto);
        let c =
            parse("interfaces: [eth0, { name: veth1, ingress: xdp }]\ningress: tc\npolicy: p\n")
                .unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.ingress_for("eth0"), IngressHook::Tc);
        assert_eq!(c.ingress_for("veth1"), IngressHook::Xdp);
        // Patterns: an exact entry wins over a pattern, the first pattern over later ones.
        let c = parse(
            "interfaces: [{ name: \"veth*\", ingress: xdp }, { name: \"ve*\", ingress: tc }, veth7]\npolicy: p\n",
        )
        .unwrap();
        assert_eq!(c.ingress_for("veth1"), IngressHook::Xdp);
        assert_eq!(c.ingress_for("vex"), IngressHook::Tc);
        assert_eq!(c.ingress_for("veth7"), IngressHook::Auto);
        assert_eq!(
            c.entry_for("veth7").map(ToString::to_string).as_deref(),
            Some("veth7")
        );
        assert_eq!(c.entry_for("eth0"), None);
        let e = parse("interfaces: [\"eth[01]\"]\npolicy: p\n").unwrap_err();
        assert!(
            e.to_string().contains(":1:14:") && e.to_string().contains("character classes"),
            "{e}"
        );
        let e = parse("interfaces: [{ name: \"*\" }]\npolicy: p\n").unwrap_err();
        assert!(e.to_string().contains("matches every interface"), "{e}");
        let e = parse("interfaces: [{ name: eth0, ingres: tc }]\npolicy: p\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `ingres`"), "{e}");
        let e = parse("interfaces: [{ name: eth0, ingress: bpf }]\npolicy: p\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `bpf`"), "{e}");
        let e = parse("interfaces: [eth0, { name: eth0 }]\npolicy: p\n").unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }

    #[test]
    fn unknown_field_is_refused_with_location() {
        let e = parse("interfaces: [eth0]\npolicy: p.yaml\nxdpMod: native\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/boundary/agent.yaml:3:1: unknown field `xdpMod`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_location() {
        let e = parse("interfaces: [eth0]\npolicy: p.yaml\nxdpMode: turbo\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(":3:10: xdpMode: unknown variant `turbo`"),
            "{e}"
        );
        let e = parse("interfaces: [\"this-name-is-too-long\"]\npolicy: p.yaml\n").unwrap_err();
        assert!(e.to_string().contains(":1:"), "{e}");
        assert!(e.to_string().contains("1 to 15 bytes"), "{e}");
    }

    #[test]
    fn semantic_errors_are_refused() {
        for (text, needle) in [
            ("interfaces: []\npolicy: p\n", "at least one interface"),
            ("interfaces: [a, a]\npolicy: p\n", "listed twice"),
            ("interfaces: [a]\npolicy: p\npinDir: rel\n", "absolute"),
            (
                "interfaces: [a]\npolicy: p\nmaxWorkloads: 1\n",
                "maxWorkloads",
            ),
            ("interfaces: [a]\n", "missing field `policy`"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
