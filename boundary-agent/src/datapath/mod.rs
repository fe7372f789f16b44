//! The kernel side as the agent sees it: the embedded object, the pin layout, loading and
//! attaching, the maps and what is read back out of them.

mod attach;
pub mod batch;
pub mod bpffs;
pub mod counters;
mod error;
pub mod events;
pub mod grace;
pub mod kernel_log;
pub mod linkinfo;
mod loader;
mod lock;
pub mod maps;
pub mod netdev;
pub mod object;
pub mod pins;
pub mod rtnetlink;
mod syscall;

pub use attach::{IngressAttach, require_ethernet, resolve_ingress};
pub use error::DatapathError;
pub use loader::{Datapath, LoadOptions, ProgramStats};
pub use lock::{Holder as LockHolder, PinLock};
pub use maps::Maps;
pub use pins::PinLayout;
