//! Map names, sizes, keys and values: the layouts both sides of the kernel/user line read,
//! one file per family, the way Cilium keeps its `*_types.h` apart. Everything is re-exported
//! here, so every item has the one path `boundary_common::maps::Item`.
//!
//! ## Generations
//! Every map the policy compiler fills carries a generation byte in its key. The datapath reads
//! the live generation once per packet from [`DatapathConfig::generation`] and uses it in every
//! lookup, so a packet sees one policy or the other, never a mix. The agent writes a new policy
//! under the other generation, flips the config entry (one map update: the switch), then
//! deletes the old generation's entries. Maps therefore hold two generations at once during a
//! swap and are sized for it.

mod binding;
mod bucket;
mod cache;
mod catalog;
mod config;
mod conntrack;
mod counters;
mod endpoint;
mod events;
mod fragments;
#[cfg(feature = "user")]
mod pod;
mod policy;
mod prefixes;
mod table;

// The files are how the source is read, not how the ABI is named: one flat namespace.
pub use self::{
    binding::*, bucket::*, cache::*, catalog::*, config::*, conntrack::*, counters::*, endpoint::*,
    events::*, fragments::*, policy::*, prefixes::*, table::*,
};
