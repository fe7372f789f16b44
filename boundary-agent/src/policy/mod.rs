//! The policy file: workloads to protect and their defaults.
//!
//! This is the foundation's subset — workloads, addresses, mode and per-direction defaults.
//! Identities, rules, failsafe entries and rate limits join it in later issues; unknown fields
//! are refused, so a file written for a newer agent fails loudly rather than half-applies.

pub mod compile;
mod model;

pub use compile::{Compiled, SlotTable, compile};
pub use model::{DefaultAction, Defaults, Policy, PolicyError, Workload, WorkloadMode};
