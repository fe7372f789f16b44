use std::time::Duration;

use super::{CliError, PinDirArg};
use crate::datapath::{Maps, PinLayout, counters};

/// Show packet and byte counters per workload, direction and reason.
///
/// Reads the pinned maps directly: it works whether or not the agent is running. Only non-zero
/// counters are shown. Counters are cumulative since the maps were created.
///
/// Example: boundary-agent counters --workload payments-api --json
#[derive(Debug, clap::Args)]
pub struct Counters {
    #[command(flatten)]
    pub pins: PinDirArg,
    /// Only this workload (`(unprotected)` for traffic no workload claims).
    #[arg(long)]
    pub workload: Option<String>,
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds until interrupted.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<u64>,
}

impl Counters {
    pub fn execute(self) -> Result<(), CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        if !layout.exists() {
            return Err(CliError::failed(format!(
                "nothing is pinned at {}: is the agent deployed on this host (boundary-agent run)?",
                layout.root().display()
            )));
        }
        let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
        loop {
            let entries =
                counters::read(&maps, self.workload.as_deref()).map_err(CliError::failed)?;
            if self.json {
                println!(
                    "{}",
                    serde_json::to_string(&entries).map_err(CliError::failed)?
                );
            } else {
                print!("{}", counters::table(&entries));
            }
            match self.watch {
                Some(secs) => {
                    std::thread::sleep(Duration::from_secs(secs.max(1)));
                    if !self.json {
                        println!();
                    }
                }
                None => return Ok(()),
            }
        }
    }
}
