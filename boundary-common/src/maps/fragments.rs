//! The verdicts first fragments leave for the later ones.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::FRAGMENTS_MAP;

/// Key of [`FRAGMENTS_MAP`]: one datagram being fragmented.
// Aligned as `AddrKey` is (endpoint.rs), for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub direction: u8,
    /// The IPv4 protocol, or the Next Header of the IPv6 Fragment header (the same in every
    /// fragment of a datagram; not the transport protocol, which AH or Destination Options may
    /// hide behind in the first fragment).
    pub proto: u8,
    pub family: u8,
    pub pad: u8,
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Value of [`FRAGMENTS_MAP`]: what the first fragment got, and under which epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragValue {
    /// The first fragment's reason code; later fragments get the same.
    pub reason: u8,
    pub pad: u8,
    pub slot: u16,
    pub rule: u32,
    /// The config's epoch when the first fragment was decided: a verdict is followed only
    /// while that epoch is live, so it does not outlive the policy (or flow state) that made
    /// it, as cached verdicts do not.
    pub epoch: u32,
    /// With `CFG_EARNED`: the peer's bind sequence then (see `BIND_SEQ_MAP`): a binding that
    /// appears or goes ends the verdict, as it does a cached one.
    pub bind_seq: u32,
}

const _: () = {
    assert!(size_of::<FragKey>() == 40);
    assert!(size_of::<FragValue>() == 16);
};
