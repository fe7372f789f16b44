//! Map names, sizes, keys and values.
//!
//! Map names are kept under 16 bytes: the kernel truncates object names to `BPF_OBJ_NAME_LEN`
//! (16, NUL included) and the pinned files carry the same names.

use core::mem::size_of;

use crate::reason::REASON_SLOTS;

/// `REASON_SLOTS - 1`: masks a reason code into a counter row (`REASON_SLOTS` is a power of two).
pub const REASON_SLOTS_MASK: usize = REASON_SLOTS - 1;

/// `Array<DatapathConfig>` with one entry: settings that hold for every interface.
pub const CONFIG_MAP: &str = "BND_CONFIG";
/// `HashMap<EndpointKey, Endpoint>`: local address -> the workload that owns it.
pub const ENDPOINTS_MAP: &str = "BND_ENDPOINTS";
/// `Array<WorkloadName>`: slot -> name, so pinned counters explain themselves with no agent.
pub const NAMES_MAP: &str = "BND_NAMES";
/// `PerCpuArray<CounterRow>`: one row per (workload slot, direction), see [`counter_index`].
pub const COUNTERS_MAP: &str = "BND_COUNTERS";

/// All maps, in the order the agent pins and checks them.
pub const ALL_MAPS: [&str; 4] = [CONFIG_MAP, ENDPOINTS_MAP, NAMES_MAP, COUNTERS_MAP];

/// Default number of workload slots, slot 0 included. The agent may resize the maps at load.
pub const MAX_WORKLOADS: u32 = 256;
/// Capacity of the endpoint (local address) map.
pub const MAX_ENDPOINTS: u32 = 65_536;

/// Slot 0 counts traffic for addresses no workload claims (and malformed packets whose
/// addresses could not be read).
pub const UNPROTECTED_SLOT: u16 = 0;
/// The name the counters show for slot 0.
pub const UNPROTECTED_NAME: &str = "(unprotected)";

/// Index into [`COUNTERS_MAP`] for a workload slot and a direction (0 ingress, 1 egress).
pub const fn counter_index(slot: u16, direction: u8) -> u32 {
    (slot as u32) * 2 + (direction as u32 & 1)
}

/// The two things the datapath can do with a packet when nothing more specific decides.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pass = 0,
    Drop = 1,
}

/// Enforce drops, or only count them (audit).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Enforce = 0,
    Audit = 1,
}

/// The single entry of [`CONFIG_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// [`Action`] for frames that are not IPv4 or IPv6 (ARP, LLDP, ...).
    pub non_ip: u8,
    pub pad: [u8; 7],
}

impl DatapathConfig {
    pub const fn new(non_ip: Action) -> Self {
        Self {
            non_ip: non_ip as u8,
            pad: [0; 7],
        }
    }
}

/// Address family tags used in keys.
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Key of [`ENDPOINTS_MAP`]: an address, IPv4 in the first four bytes and zeros after.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

impl EndpointKey {
    pub const fn v4(addr: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            family: FAMILY_IPV4,
            pad: [0; 3],
            addr: a,
        }
    }

    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            family: FAMILY_IPV6,
            pad: [0; 3],
            addr,
        }
    }
}

/// Value of [`ENDPOINTS_MAP`]: the workload an address belongs to and how it is enforced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Workload slot, 1..[`MAX_WORKLOADS`]; indexes [`NAMES_MAP`] and [`COUNTERS_MAP`].
    pub slot: u16,
    /// [`Mode`].
    pub mode: u8,
    /// [`Action`] for ingress packets no rule decides.
    pub ingress_default: u8,
    /// [`Action`] for egress packets no rule decides.
    pub egress_default: u8,
    pub pad: [u8; 3],
}

/// Longest workload name, in bytes.
pub const WORKLOAD_NAME_LEN: usize = 64;

/// Value of [`NAMES_MAP`]: a workload's name, NUL-padded UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName {
    pub name: [u8; WORKLOAD_NAME_LEN],
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
    assert!(size_of::<DatapathConfig>() == 8);
    assert!(size_of::<EndpointKey>() == 20);
    assert!(size_of::<Endpoint>() == 8);
    assert!(size_of::<WorkloadName>() == WORKLOAD_NAME_LEN);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<CounterRow>() == 16 * REASON_SLOTS);
    // Per-CPU values are limited to 32 KiB by the kernel (PCPU_MIN_UNIT_SIZE).
    assert!(size_of::<CounterRow>() <= 32 * 1024);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY (for every impl below): `#[repr(C)]`, only integer fields and arrays of them, and
    // every padding byte is an explicit field, so any bit pattern is valid and none is hidden.
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    use super::{Counter, CounterRow, DatapathConfig, Endpoint, EndpointKey, WorkloadName};

    unsafe impl aya::Pod for DatapathConfig {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for WorkloadName {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for CounterRow {}
}
