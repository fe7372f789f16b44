//! Per-CPU packet and byte counters by (workload slot, direction, reason).

use core::mem::size_of;

use crate::reason::REASON_SLOTS;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::COUNTERS_MAP;

/// `REASON_SLOTS - 1`: masks a reason code into a counter row (`REASON_SLOTS` is a power of two).
pub const REASON_SLOTS_MASK: usize = REASON_SLOTS - 1;

/// Index into [`COUNTERS_MAP`] for a workload slot and a direction (0 ingress, 1 egress).
pub const fn counter_index(slot: u16, direction: u8) -> u32 {
    (slot as u32) * 2 + (direction as u32 & 1)
}

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Value of [`COUNTERS_MAP`]: one counter per reason code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub counters: [Counter; REASON_SLOTS],
}

impl Default for CounterRow {
    fn default() -> Self {
        Self {
            counters: [Counter::default(); REASON_SLOTS],
        }
    }
}

const _: () = {
    assert!(REASON_SLOTS.is_power_of_two());
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<CounterRow>() == 16 * REASON_SLOTS);
    // Per-CPU values are limited to 32 KiB by the kernel (PCPU_MIN_UNIT_SIZE).
    assert!(size_of::<CounterRow>() <= 32 * 1024);
};
