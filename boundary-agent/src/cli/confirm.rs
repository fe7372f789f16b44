use std::path::PathBuf;

use super::CliError;
use crate::{
    agent::confirm::{ConfirmState, now_ms},
    config::AgentConfig,
};

/// Confirm the policy installed with `boundary-agent apply --confirm`, so it stays.
///
/// Example: boundary-agent confirm --config /etc/boundary/agent.yaml
#[derive(Debug, clap::Args)]
pub struct Confirm {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
}

impl Confirm {
    pub fn execute(self) -> Result<(), CliError> {
        let config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        let state = ConfirmState::new(&config.state_dir);
        let failed =
            |e: std::io::Error| CliError::failed(format!("{}: {e}", config.state_dir.display()));
        match state.pending().map_err(failed)? {
            Some(p) if now_ms() >= p.deadline_ms => Err(CliError::failed(
                "too late: the confirmation window has closed and the policy is being rolled back",
            )),
            Some(_) => {
                state.confirm().map_err(failed)?;
                println!("confirmed: the policy stays");
                Ok(())
            }
            None if state.rolled_back().map_err(failed)?.is_some() => Err(CliError::failed(
                "nothing to confirm: the policy was rolled back (apply it again to retry)",
            )),
            None => Err(CliError::failed("nothing to confirm: no policy is pending")),
        }
    }
}
