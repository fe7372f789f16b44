use std::{path::PathBuf, time::Duration};

use super::CliError;
use crate::{
    agent::confirm::{self, ConfirmState},
    config::AgentConfig,
    policy::{self, Policy, SlotTable},
};

/// Install a policy file as the agent's, checked first. With `--confirm`, it rolls back to the
/// policy before unless `boundary-agent confirm` comes in time: a policy that locks you out
/// undoes itself.
///
/// The file is checked (parsed and compiled) before anything changes, then written over the
/// policy file the agent config names; the running agent applies it within 2 s. Works whether
/// or not the agent is running: the confirmation state is kept under the config's `stateDir`.
///
/// Example: boundary-agent apply --config /etc/boundary/agent.yaml --confirm 60s new.yaml
#[derive(Debug, clap::Args)]
pub struct Apply {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Roll back unless confirmed within this time (`90s`, `5m`, or seconds).
    #[arg(long, value_parser = parse_duration)]
    pub confirm: Option<Duration>,
    /// The policy file to install.
    pub file: PathBuf,
}

/// `90s`, `5m`, `1h` or a number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: a duration is a number and s, m or h (90s, 5m)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    if secs == 0 {
        return Err("a confirmation window of 0 rolls back at once".into());
    }
    Ok(Duration::from_secs(secs))
}

impl Apply {
    pub fn execute(self) -> Result<(), CliError> {
        let config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        let bytes = std::fs::read(&self.file)
            .map_err(|e| CliError::bad_input(format!("{}: {e}", self.file.display())))?;
        let text = String::from_utf8(bytes.clone())
            .map_err(|_| CliError::bad_input(format!("{}: not UTF-8", self.file.display())))?;
        let p = Policy::from_str(&self.file.display().to_string(), &text)
            .map_err(CliError::bad_input)?;
        policy::compile(&p, &SlotTable::new(), config.max_workloads)
            .map_err(CliError::bad_input)?;
        let state = ConfirmState::new(&config.state_dir);
        let state_err =
            |e: std::io::Error| CliError::failed(format!("{}: {e}", config.state_dir.display()));
        let file = std::fs::read_to_string(&config.policy).map_err(|e| {
            CliError::failed(format!(
                "reading the policy in force, {}: {e}",
                config.policy.display()
            ))
        })?;
        // The policy in force: the file's, unless a rollback put another one back.
        let previous = match state.rolled_back().map_err(state_err)? {
            Some(r) if r.digest == confirm::digest(file.as_bytes()) => r.policy,
            _ => file,
        };
        // Applying is the operator's word: a rolled-back file applied again is meant.
        state.clear_rollback().map_err(state_err)?;
        if let Some(window) = self.confirm {
            state
                .set_pending(confirm::digest(&bytes), previous, window)
                .map_err(state_err)?;
        }
        write_atomically(&config.policy, &bytes)
            .map_err(|e| CliError::failed(format!("writing {}: {e}", config.policy.display())))?;
        match self.confirm {
            Some(window) => println!(
                "applied {} (the agent takes it within 2 s); confirm within {} s with `boundary-agent confirm --config {}`, or it rolls back",
                self.file.display(),
                window.as_secs(),
                self.config.display()
            ),
            None => println!("applied {}", self.file.display()),
        }
        Ok(())
    }
}

/// Writes `path` as a whole: a temporary file beside it, renamed over it.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "policy".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.boundary-tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
