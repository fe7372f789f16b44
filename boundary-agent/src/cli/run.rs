use std::path::PathBuf;

use super::CliError;
use crate::{
    agent::Agent,
    config::{AgentConfig, XdpMode},
};

/// Load the datapath, attach it to the configured interfaces and enforce the policy.
///
/// On every configured interface, XDP or tcx takes ingress (`ingress: auto` picks tcx on
/// veths, XDP elsewhere) and tcx takes egress. Maps, programs and links are pinned under the
/// pin directory, so enforcement continues after the agent exits (SIGTERM/SIGINT);
/// `boundary-agent detach` removes it. SIGHUP reloads the policy file; a bad file is reported
/// and the running policy stays. SIGHUP (or an edit of the config file) also applies a new
/// `kernelLog` level, by replacing the programs in their pinned links; other config fields
/// apply at the next start. The policy file is also re-read every two seconds and
/// reloaded when it changed. A previous agent's pins are adopted: maps keep their contents and
/// counters, links are switched to the new programs in place.
///
/// Example: boundary-agent run --config /etc/boundary/agent.yaml
#[derive(Debug, clap::Args)]
pub struct Run {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Override the config's XDP mode. Native never falls back silently.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
}

impl Run {
    pub fn execute(self) -> Result<(), CliError> {
        let mut config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        if let Some(mode) = self.xdp_mode {
            config.xdp_mode = mode;
        }
        let agent_error = |e: crate::agent::AgentError| {
            if e.is_bad_input() {
                CliError::bad_input(e)
            } else {
                CliError::failed(e)
            }
        };
        Agent::start(config)
            .map_err(agent_error)?
            .run_until_signal()
            .map_err(agent_error)
    }
}
