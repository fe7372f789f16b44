use std::time::Duration;

use nix::{sys::signal, unistd::Pid};

use super::{CliError, PinDirArg};
use crate::datapath::{LockHolder, PinLayout};

/// How long a running agent is given to stop once asked.
const AGENT_STOP: Duration = Duration::from_secs(15);

/// Stop enforcing: remove the pinned links, programs and maps, and stop the agent running on
/// them.
///
/// Break glass: works with or without a running agent, whatever state it is in. The links
/// are removed first, which detaches the programs from their interfaces at once; then the
/// programs and maps. Counters are lost. An agent holding the pin directory is then asked to
/// stop (SIGTERM; under systemd the unit ends as stopped, not failed, and is not restarted),
/// and whatever it pinned meanwhile is removed once it has gone. Under Kubernetes the kubelet
/// restarts the agent's container: take the `DaemonSet` off the node first.
///
/// Example: boundary-agent detach
#[derive(Debug, clap::Args)]
pub struct Detach {
    #[command(flatten)]
    pub pins: PinDirArg,
}

impl Detach {
    pub fn execute(self) -> Result<(), CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        let root = layout.root().display().to_string();
        let Some(holder) = LockHolder::open(layout.root()).map_err(CliError::failed)? else {
            println!("nothing pinned at {root}");
            return Ok(());
        };
        let agent = holder.held().map_err(CliError::failed)?;
        let pid = if agent {
            holder.pid().map_err(CliError::failed)?
        } else {
            None
        };
        // Enforcement ends here, before anything is asked of an agent that may not answer.
        let mut removed = layout.remove_all().map_err(CliError::failed)?;
        for p in &removed {
            println!("removed {}", p.display());
        }
        if agent {
            let Some(pid) = pid else {
                return Err(CliError::failed(format!(
                    "pins removed, but an agent this PID namespace cannot see holds {root} and \
                     may attach again: stop it where it runs, then run detach again"
                )));
            };
            println!("stopping the agent running on these pins (pid {pid})");
            let target = Pid::from_raw(i32::try_from(pid).map_err(CliError::failed)?);
            if let Err(e) = signal::kill(target, signal::Signal::SIGTERM) {
                // It may have gone between the look and the signal.
                println!("could not signal pid {pid}: {e}");
            }
            if !holder.wait_released(AGENT_STOP).map_err(CliError::failed)? {
                return Err(CliError::failed(format!(
                    "pins removed, but the agent (pid {pid}) did not stop within {}s and may \
                     attach again: kill -9 {pid}, then run detach again",
                    AGENT_STOP.as_secs()
                )));
            }
            // What the agent pinned while it was stopping.
            let late = layout.remove_all().map_err(CliError::failed)?;
            for p in &late {
                println!("removed {}", p.display());
            }
            removed.extend(late);
            println!("the agent (pid {pid}) stopped");
        }
        println!("detached: {} pins removed from {root}", removed.len());
        Ok(())
    }
}
