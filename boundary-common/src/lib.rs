//! The ABI between Boundary's eBPF programs and its userspace agent.
//!
//! Everything that crosses the kernel/user line is defined here and only here: map names and
//! sizes, `#[repr(C)]` keys and values with explicit padding and compile-time size checks, and
//! the numbered reason codes. `aya::Pod` impls live behind the `user` feature.
//!
//! Beside the ABI, [`wire`]: the protocol numbers and header lengths the datapath parses by,
//! for the agent and the bench to name them the same way.
#![no_std]
#![deny(unsafe_code)]

pub mod bucket;
pub mod diag;
pub mod maps;
pub mod name;
pub mod reason;
pub mod wire;

pub use reason::{Reason, Verdict};

/// Traffic direction, as seen from the protected host.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Packets arriving at an interface (XDP).
    Ingress = 0,
    /// Packets leaving through an interface (TC egress).
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}
