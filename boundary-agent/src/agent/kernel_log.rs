//! `kernelLog` without a restart. On SIGHUP (`systemctl reload`), and when the config file
//! changes (the same 2 s poll as the policy file, so an edited `ConfigMap` reaches a pod with
//! no signal), the agent re-reads its config and applies the one field that can change while
//! it runs: the kernel log level. It is fixed at load (the verifier prunes the log sites above
//! it), so the programs are loaded again and replaced in their pinned links
//! (`Datapath::reload_programs`); the maps and the policy in them stay as they are.
//!
//! SIGHUP is what operators of a host daemon expect to reload configuration (nginx, sshd,
//! haproxy; `ExecReload=` in the unit), and it already reloads the policy here. A CLI command
//! would need a control channel the agent does not have. Other fields still need a restart:
//! a change to them is reported, not applied.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Agent, confirm};
use crate::{
    config::AgentConfig,
    datapath::{
        LoadOptions,
        kernel_log::{TracingLog, drain},
    },
};

impl Agent {
    /// Re-reads the config file when `forced` (SIGHUP) or when it changed since the last read,
    /// and switches the kernel log level if `kernelLog` differs. A bad file changes nothing.
    pub(super) fn follow_kernel_log(&mut self, forced: bool) {
        let file = self.config.file.clone();
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                if forced {
                    warn!(config = %file.display(), error = %e, "cannot re-read the agent config; kernelLog stays {}", self.config.kernel_log);
                }
                return;
            }
        };
        let digest = confirm::digest(&bytes);
        if !forced && self.config_digest.as_deref() == Some(digest.as_str()) {
            return;
        }
        self.config_digest = Some(digest);
        let read = String::from_utf8(bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| AgentConfig::from_str(&file, &text).map_err(|e| e.to_string()));
        let new = match read {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "agent config refused; kernelLog stays {}", self.config.kernel_log);
                return;
            }
        };
        // The command line may override xdpMode: that is not a change of the file.
        let rest = AgentConfig {
            kernel_log: self.config.kernel_log,
            xdp_mode: self.config.xdp_mode,
            ..new.clone()
        };
        if rest != self.config {
            warn!(config = %file.display(), "the agent config changed beyond kernelLog: those changes apply at the next start");
        }
        if new.kernel_log != self.config.kernel_log {
            self.switch_kernel_log(&new);
        }
    }

    /// Loads the programs again at `new.kernel_log` and replaces the running ones.
    fn switch_kernel_log(&mut self, new: &AgentConfig) {
        let (from, to) = (self.config.kernel_log, new.kernel_log);
        let started = Instant::now();
        let options = LoadOptions {
            max_workloads: self.config.max_workloads,
            kernel_log: to,
            ..LoadOptions::default()
        };
        match self.datapath.reload_programs(&options) {
            Ok(links) => {
                self.config.kernel_log = to;
                info!(
                    %from,
                    %to,
                    links,
                    switch_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "kernel log level switched: programs replaced in their pinned links"
                );
                for p in self.datapath.program_stats() {
                    info!(
                        program = p.name,
                        id = p.id,
                        verified_insns = p.verified_insns,
                        xlated_bytes = p.xlated_bytes,
                        jited_bytes = p.jited_bytes,
                        "program loaded"
                    );
                }
            }
            Err(e) => {
                error!(%from, %to, error = %crate::report::chain(&e), "kernel log level not switched; the programs that were enforcing still are");
            }
        }
    }

    /// Starts draining the kernel log ring into this process's log (target
    /// `boundary::kernel`); on the agent's runtime, for its life. The ring is pinned and
    /// shared by every load, so one reader serves every switch.
    pub(super) fn spawn_kernel_log(&mut self) {
        match self.datapath.kernel_log(TracingLog) {
            Ok(reader) => {
                tokio::spawn(drain(reader));
            }
            Err(e) => {
                warn!(error = %crate::report::chain(&e), "cannot read the kernel log ring: kernel log records are not read");
            }
        }
    }
}
