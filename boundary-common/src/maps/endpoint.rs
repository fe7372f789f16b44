//! Local addresses and the workloads that own them: the key of the endpoint (and identity)
//! map, the endpoint value and its flags, and the workload names the counters are read by.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{
    Action, CFG_HAS_IFACE_ENDPOINTS, COUNTERS_MAP, ENDPOINTS_MAP, IDENTITIES_MAP, MAX_WORKLOADS,
    Mode, NAMES_MAP, RANGES_MAP,
};

/// Slot 0 counts traffic for addresses no workload claims (and malformed packets whose
/// addresses could not be read).
pub const UNPROTECTED_SLOT: u16 = 0;
/// The name the counters show for slot 0.
pub const UNPROTECTED_NAME: &str = "(unprotected)";

/// Address family tags used in keys.
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Key of [`IDENTITIES_MAP`]: an address (IPv4 in the first four bytes, zeros after) in a
/// generation.
// Aligned so that the datapath copies an address into a key as words, not byte by byte
// (alignment changes no offset and no size: the ABI is the same).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    pub family: u8,
    pub generation: u8,
    pub pad: [u8; 2],
    pub addr: [u8; 16],
}

impl AddrKey {
    pub const fn new(generation: u8, family: u8, addr: [u8; 16]) -> Self {
        Self {
            family,
            generation,
            pad: [0; 2],
            addr,
        }
    }
}

/// [`EndpointKey::ifindex`] of an address a workload owns on every protected interface.
pub const IFINDEX_ANY: u32 = 0;

/// Key of [`ENDPOINTS_MAP`]: a local address (as in [`AddrKey`]) in a generation, on one
/// interface (`ifindex`, as the kernel numbers it in the agent's network namespace) or on
/// every protected interface ([`IFINDEX_ANY`]).
///
/// The interface is a whole `u32` rather than squeezed into `AddrKey`'s two pad bytes: a
/// long-running host that creates and deletes veths (containers) numbers its interfaces past
/// 65535. Only a policy with per-workload `interfaces:` has keys other than [`IFINDEX_ANY`]
/// ([`CFG_HAS_IFACE_ENDPOINTS`] says so), and only then does the datapath look a packet's
/// interface up first.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    pub family: u8,
    pub generation: u8,
    pub pad: [u8; 2],
    pub ifindex: u32,
    pub addr: [u8; 16],
}

impl EndpointKey {
    pub const fn new(generation: u8, family: u8, ifindex: u32, addr: [u8; 16]) -> Self {
        Self {
            family,
            generation,
            pad: [0; 2],
            ifindex,
            addr,
        }
    }
}

/// [`Endpoint::flags`]: the workload has port-range rules in this direction (the datapath
/// then also consults [`RANGES_MAP`]).
pub const EP_RANGES_INGRESS: u8 = 1;
pub const EP_RANGES_EGRESS: u8 = 2;
/// Record flows the workload starts (egress) so their replies pass ingress as `established`.
pub const EP_TRACK_EGRESS: u8 = 4;
/// Record flows allowed in (ingress) so their replies pass egress as `established`.
pub const EP_TRACK_INGRESS: u8 = 8;
/// The workload has rules in this direction (without any, the datapath goes straight to the
/// default).
pub const EP_RULES_INGRESS: u8 = 16;
pub const EP_RULES_EGRESS: u8 = 32;
/// Some of those rules are about particular peers (not `any`): the peer's identity must be
/// looked up. Without, only the `any`-peer entries can match.
pub const EP_PEERS_INGRESS: u8 = 64;
pub const EP_PEERS_EGRESS: u8 = 128;

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
    /// `EP_*` bits.
    pub flags: u8,
    pub pad: [u8; 2],
}

/// Longest workload name, in bytes.
pub const WORKLOAD_NAME_LEN: usize = 64;

/// Value of [`NAMES_MAP`]: a workload's name, NUL-padded UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName {
    pub name: [u8; WORKLOAD_NAME_LEN],
}

const _: () = {
    assert!(size_of::<AddrKey>() == 20);
    assert!(size_of::<EndpointKey>() == 24);
    assert!(size_of::<Endpoint>() == 8);
    assert!(size_of::<WorkloadName>() == WORKLOAD_NAME_LEN);
};
