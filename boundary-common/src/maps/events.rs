//! Sampled drop events: the event `monitor` reads, and each CPU's sampling budget.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::EVENT_BUDGET_MAP;

/// Drop events each CPU may send per second; past that they are counted as lost, so a flood
/// cannot starve the agent (or fill the ring) with events.
pub const EVENTS_PER_SEC: u64 = 1000;
/// Events a CPU may send at once after a quiet spell.
pub const EVENTS_BURST: u32 = 200;
/// Size of the event ring, in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Value of [`EVENT_BUDGET_MAP`]: a token bucket of events, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub last_refill_ns: u64,
    pub tokens: u32,
    /// Drops still to count as lost before the clock is read again (while the bucket is empty).
    pub skip: u32,
    /// Events sent.
    pub sent: u64,
    /// Events not sent: over budget, or the ring was full.
    pub lost: u64,
}

/// A dropped (or, in audit mode, would-be dropped) packet, as `monitor` shows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_coarse_ns` (monotonic since boot).
    pub timestamp_ns: u64,
    /// The peer's identity, 0 when the policy was not consulted.
    pub identity: u32,
    /// Frame length.
    pub len: u32,
    /// The deciding rule, `u32::MAX` when none.
    pub rule: u32,
    pub slot: u16,
    pub sport: u16,
    pub dport: u16,
    pub reason: u8,
    pub direction: u8,
    /// 0 when the addresses could not be read.
    pub family: u8,
    pub proto: u8,
    pub icmp_type: u8,
    pub pad: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

const _: () = {
    assert!(size_of::<EventBudget>() == 32);
    assert!(size_of::<DropEvent>() == 64);
};
