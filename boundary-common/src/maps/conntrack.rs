//! Connection tracking's key and value, and how long a flow stays established.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::CONNTRACK_MAP;

/// Conntrack idle timeouts: a reply is `established` while its flow was seen this recently.
pub const CT_TIMEOUT_TCP_NS: u64 = 3_600 * 1_000_000_000;
pub const CT_TIMEOUT_UDP_NS: u64 = 120 * 1_000_000_000;
pub const CT_TIMEOUT_OTHER_NS: u64 = 60 * 1_000_000_000;
/// A flow's timestamp is rewritten at most this often, to keep the fast path read-mostly.
pub const CT_REFRESH_NS: u64 = 1_000_000_000;

/// Key of [`CONNTRACK_MAP`]: the packet expected back, as it will be seen, in the direction it
/// will be seen (0 ingress, 1 egress).
// Aligned as `AddrKey` is (endpoint.rs), for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub direction: u8,
    pub proto: u8,
    pub family: u8,
    pub pad: u8,
    /// Ports, or the ICMP echo identifier in both for echo flows.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Value of [`CONNTRACK_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    /// `bpf_ktime_get_coarse_ns` when the flow was last seen going out.
    pub last_seen_ns: u64,
}

const _: () = {
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<FlowValue>() == 8);
};
