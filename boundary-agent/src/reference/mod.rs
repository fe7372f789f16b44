//! The datapath's decision, written again in plain Rust: a parser that mirrors
//! `boundary-ebpf/src/parse.rs` and a decision that mirrors `verdict.rs`, over any
//! [`Lookup`] (compiled tables, or the live pinned maps).
//!
//! `trace` uses it to explain a verdict without sending a packet; the differential tests run
//! it beside the real program on random policies and packets and require the same answer.

mod decide;
mod parse;

pub use decide::{Lookup, Outcome, State, decide, decide_frame};
pub use parse::{Fragment, Packet, Parsed, parse};
