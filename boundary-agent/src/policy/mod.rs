//! The policy file and its compiler: workloads, identities, rules, failsafe entries.

pub mod compile;
mod model;
mod ports;
pub mod spiffe;

pub use compile::{CompileError, RuleInfo, SlotTable, Tables, compile};
pub use model::{
    API_VERSION, Cidr, DefaultAction, Defaults, Failsafe, HostAddr, Policy, PolicyError, Rule,
    RuleAction, Selector, StaticIdentity, Traffic, Workload, WorkloadMode, default_failsafe,
};
