use std::{fmt::Write as _, path::PathBuf};

use boundary_common::{Direction, maps::MAX_WORKLOADS};

use super::CliError;
use crate::policy::{self, DefaultAction, Policy, SlotTable};

/// Validate a policy file and show what it compiles to. Needs no root and touches nothing.
///
/// Prints the number of entries per map (for one generation) and the rules per workload.
/// Exits 0 when the file is valid, 64 with the error's file, line and column when not.
///
/// Example: boundary-agent check /etc/boundary/policy.yaml
#[derive(Debug, clap::Args)]
pub struct Check {
    /// The policy file.
    pub file: PathBuf,
    /// Workload slots of the datapath it would be loaded into (the agent's maxWorkloads).
    #[arg(long, default_value_t = MAX_WORKLOADS)]
    pub max_workloads: u32,
}

impl Check {
    pub fn execute(self) -> Result<(), CliError> {
        let policy = Policy::from_file(&self.file).map_err(CliError::bad_input)?;
        let t = policy::compile(&policy, &SlotTable::new(), self.max_workloads)
            .map_err(CliError::bad_input)?;
        let mut out = String::new();
        let _ = writeln!(out, "{}: valid", self.file.display());
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
            ("endpoints", t.endpoints.len()),
            ("identities", t.identities.len()),
            ("cidrs", t.cidrs.len()),
            ("policy", t.policy.len()),
            ("ranges", t.ranges.len()),
            ("failsafe", t.failsafe.len()),
        ] {
            let _ = writeln!(out, "  {name:<11}{n:>8}");
        }
        let _ = writeln!(out, "workloads:");
        let word = |d: DefaultAction| match d {
            DefaultAction::Allow => "allow",
            DefaultAction::Deny => "deny",
        };
        for w in &policy.workloads {
            let _ = writeln!(
                out,
                "  {} ({}, {} addresses): ingress default {}, {} rules; egress default {}, {} rules",
                w.name,
                w.mode,
                w.addresses.len(),
                word(w.ingress_default),
                w.ingress.len(),
                word(w.egress_default),
                w.egress.len()
            );
            for (id, r) in t.rules.iter().filter(|(_, r)| r.workload == w.name) {
                let dir = if r.direction == Direction::Ingress {
                    "in "
                } else {
                    "out"
                };
                let _ = writeln!(out, "    #{id:<4} {dir} {r}");
            }
        }
        print!("{out}");
        Ok(())
    }
}
