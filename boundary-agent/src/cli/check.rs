use std::{fmt::Write as _, path::PathBuf};

use boundary_common::{Direction, maps::MAX_WORKLOADS};

use super::CliError;
use crate::{
    config::{AgentConfig, InterfacePattern},
    datapath::rtnetlink,
    policy::{self, DefaultAction, Interfaces, Policy, RuleInfo, SlotTable},
};

/// Validate a policy file and show what it compiles to. Needs no root and touches nothing.
///
/// Prints the number of entries per map (for one generation) and the rules per workload,
/// each with its rate limit if it has one.
/// Exits 0 when the file is valid, 64 with the error's file, line and column when not.
///
/// A workload's `interfaces:` may name only interfaces the agent protects: with `--config`,
/// names are checked against that agent config's `interfaces` (names and patterns such as
/// `veth*`; the interfaces themselves need not exist here), and what each entry matches in
/// this network namespace now is shown; without, any name Linux accepts passes and the ones
/// not checked are listed.
///
/// Example: boundary-agent check /etc/boundary/policy.yaml --config /etc/boundary/agent.yaml
#[derive(Debug, clap::Args)]
pub struct Check {
    /// The policy file.
    pub file: PathBuf,
    /// Workload slots of the datapath it would be loaded into (the agent's maxWorkloads;
    /// default: the config's with `--config`, else 256).
    #[arg(long)]
    pub max_workloads: Option<u32>,
    /// The agent config the policy is meant for: interface names are checked against it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl Check {
    pub fn execute(self) -> Result<(), CliError> {
        let config = self
            .config
            .as_deref()
            .map(AgentConfig::from_file)
            .transpose()
            .map_err(CliError::bad_input)?;
        let interfaces = config.as_ref().map_or_else(Interfaces::unchecked, |c| {
            Interfaces::named(c.interfaces.iter().cloned())
        });
        let max_workloads = self
            .max_workloads
            .or(config.as_ref().map(|c| c.max_workloads))
            .unwrap_or(MAX_WORKLOADS);
        let policy = Policy::from_file_on(&self.file, &interfaces).map_err(CliError::bad_input)?;
        let t = policy::compile(&policy, &SlotTable::new(), max_workloads)
            .map_err(CliError::bad_input)?;
        let mut out = String::new();
        let _ = writeln!(out, "{}: valid", self.file.display());
        if !policy.interfaces.is_empty() && !policy.interfaces_checked {
            let names: Vec<&str> = policy.interfaces.keys().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "interfaces not checked (give --config AGENT.yaml to check them against what the agent protects): {}",
                names.join(", ")
            );
        }
        if let Some(c) = &config {
            let _ = writeln!(out, "agent interfaces (here, now):");
            match rtnetlink::links() {
                Ok(links) => {
                    for entry in &c.interfaces {
                        let _ = writeln!(out, "  {}", matches_now(entry, &links));
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "  cannot list this host's interfaces: {e}");
                }
            }
        }
        let _ = writeln!(
            out,
            "{} workloads, {} rules, {} identities, {} failsafe entries",
            policy.workloads.len(),
            t.rules.len(),
            t.identity_info.len(),
            t.failsafe.len()
        );
        let _ = writeln!(out, "map entries (one generation):");
        for (name, n) in [
            ("endpoints", t.endpoints.len() + t.interface_endpoints.len()),
            ("identities", t.identities.len()),
            ("cidrs", t.cidrs.len()),
            ("policy", t.policy.len()),
            ("ranges", t.ranges.len()),
            ("failsafe", t.failsafe.len()),
            ("buckets", t.buckets.len()),
        ] {
            let _ = writeln!(out, "  {name:<11}{n:>8}");
        }
        let _ = writeln!(out, "workloads:");
        let word = |d: DefaultAction| match d {
            DefaultAction::Allow => "allow",
            DefaultAction::Deny => "deny",
        };
        for w in &policy.workloads {
            let on = if w.interfaces.is_empty() {
                String::new()
            } else {
                format!(" on {}", w.interfaces.join(", "))
            };
            let _ = writeln!(
                out,
                "  {} ({}, {} addresses{on}): ingress default {}, {} rules; egress default {}, {} rules",
                w.name,
                w.mode,
                w.addresses.len(),
                word(w.ingress_default),
                w.ingress.len(),
                word(w.egress_default),
                w.egress.len()
            );
            for (id, r) in t.rules.iter().filter(|(_, r)| r.workload == w.name) {
                let _ = writeln!(out, "    {}", rule_line(*id, r));
            }
        }
        print!("{out}");
        Ok(())
    }
}

/// One line on what a config entry selects among `links`.
fn matches_now(entry: &InterfacePattern, links: &[rtnetlink::Link]) -> String {
    let names: Vec<&str> = links
        .iter()
        .filter(|l| entry.matches(&l.name))
        .map(|l| l.name.as_str())
        .collect();
    match (entry.exact(), names.is_empty()) {
        (Some(_), false) => format!("{:<16} present", entry.as_str()),
        (Some(_), true) => format!("{:<16} absent (attached when it appears)", entry.as_str()),
        (None, true) => format!("{:<16} matches nothing yet", entry.as_str()),
        (None, false) => format!("{:<16} matches {}", entry.as_str(), names.join(", ")),
    }
}

/// A rule as `check` lists it: its id, direction, name, action and peer, and its limit.
fn rule_line(id: u32, r: &RuleInfo) -> String {
    let dir = if r.direction == Direction::Ingress {
        "in "
    } else {
        "out"
    };
    match &r.limit {
        Some(limit) => format!("#{id:<4} {dir} {r}; limit {limit}"),
        None => format!("#{id:<4} {dir} {r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(policy: &str) -> Vec<String> {
        let p = Policy::from_str("p.yaml", policy).expect("valid");
        let t = policy::compile(&p, &SlotTable::new(), 16).expect("compiles");
        t.rules.iter().map(|(id, r)| rule_line(*id, r)).collect()
    }

    #[test]
    fn each_rule_shows_its_limit() {
        let l = lines(
            "apiVersion: boundary.dev/v1
workloads:
  - name: web
    addresses: [10.0.0.1]
    ingress:
      - { name: dns, from: { cidr: 10.0.0.0/8 }, ports: [\"53/udp\"], rateLimit: { packetsPerSecond: 200, burst: 50 } }
      - { name: ssh, from: { cidr: 10.0.0.0/8 }, ports: [\"22/tcp\"] }
    egress:
      - { name: backup, to: { any: true }, rateLimit: { bytesPerSecond: 10000000 } }
",
        );
        assert_eq!(
            l,
            [
                "#0    in  dns (allow from cidr 10.0.0.0/8); limit 200 pkt/s burst 50 per rule",
                "#1    in  ssh (allow from cidr 10.0.0.0/8)",
                "#2    out backup (allow to any); limit 10000000 B/s burst 10000000 B per rule",
            ]
        );
    }
}
