//! The kernel side as the agent sees it: the embedded object, the pin layout, loading and
//! attaching, the maps and what is read back out of them.

pub mod batch;
pub mod bpffs;
pub mod counters;
pub mod events;
pub mod loader;
pub mod maps;
pub mod netdev;
pub mod object;
pub mod pins;

pub use loader::{Datapath, DatapathError, ProgramStats, require_ethernet};
pub use maps::Maps;
pub use pins::PinLayout;
