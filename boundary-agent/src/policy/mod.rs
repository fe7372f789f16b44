//! The policy file and its compiler: workloads, identities, rules, failsafe entries.
//!
//! A file is read in two steps: `syntax` is its shape as serde reads it, with the `values`
//! inside checked as they are read (against the values before them through `document`), so
//! that an error names the line and column where the reader found it; `validate` builds the
//! `model`, which is all [`compile()`] ever sees.

pub mod compile;
mod document;
pub(crate) mod fingerprint;
mod interfaces;
mod model;
mod ports;
pub mod ratelimit;
pub mod spiffe;
mod syntax;
mod validate;
mod values;

pub use compile::{
    Binder, Binding, Bucket, BucketTable, CompileError, Earned, RuleInfo, RuleTable, SlotTable,
    Tables, compile, compile_keeping, compile_with,
};
pub use fingerprint::rule_fingerprint;
pub use interfaces::{Interfaces, STAND_IN_ABSENT, STAND_IN_UNLISTED};
pub use model::{Policy, Rule, StaticIdentity, Workload};
pub use syntax::{API_VERSION, Defaults};
pub use validate::PolicyError;
pub use values::{
    Cidr, DefaultAction, Failsafe, HostAddr, RuleAction, Selector, Traffic, WorkloadMode,
    default_failsafe,
};
