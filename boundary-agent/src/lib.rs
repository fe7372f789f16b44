//! Boundary's agent: configuration, policy, and the datapath it loads, pins and reads.
//!
//! The binary (`main.rs`) only parses arguments and calls into these modules; everything here
//! is usable from tests.
#![deny(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod explain;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod reference;
pub mod report;
pub mod slots;
pub mod timefmt;
pub mod yaml;

/// Exit code for bad configuration or policy input (`EX_USAGE`, as linkerd and ztunnel do).
pub const EXIT_CONFIG: i32 = 64;
