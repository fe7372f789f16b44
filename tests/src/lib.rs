//! The lab Boundary is tested and demonstrated in: network namespaces joined by veth pairs, the
//! agent as a real process, crafted packets. Everything here cleans up after itself on drop.

pub mod agent;
pub mod apps;
pub mod kubelet;
pub mod netns;
pub mod oci;
pub mod packets;
pub mod privilege;
pub mod routed;
pub mod traffic;

pub use agent::AgentProcess;
pub use netns::{Lab, NetNs};
pub use privilege::require_root;
