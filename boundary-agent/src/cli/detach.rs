use super::{CliError, PinDirArg};
use crate::datapath::PinLayout;

/// Stop enforcing: remove the pinned links, programs and maps.
///
/// The links are removed first, which detaches the programs from their interfaces; then the
/// programs and maps. Counters are lost. A running agent keeps its loaded programs but they are
/// no longer attached; stop it first.
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
        if !layout.root().exists() {
            println!("nothing pinned at {}", layout.root().display());
            return Ok(());
        }
        let removed = layout.remove_all().map_err(CliError::failed)?;
        for p in &removed {
            println!("removed {}", p.display());
        }
        println!(
            "detached: {} pins removed from {}",
            removed.len(),
            layout.root().display()
        );
        Ok(())
    }
}
