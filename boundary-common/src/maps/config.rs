//! The datapath's one configuration entry, and the actions and modes it and the endpoints
//! are written in.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::CONFIG_MAP;

/// The two things the datapath can do with a packet when nothing more specific decides.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// The live policy generation (0 or 1).
    pub generation: u8,
    /// `CFG_*` bits describing the live generation, so the datapath skips empty maps.
    pub flags: u8,
    pub pad: u8,
    /// Bumped by every write that changes what a flow's verdict could be (a new generation,
    /// conntrack flushed). Verdict cache entries of another epoch
    /// are misses; 0 means "no policy yet" and disables the cache.
    pub epoch: u32,
}

/// [`DatapathConfig::flags`]: the live generation has exact-address identity bindings.
pub const CFG_HAS_BINDINGS: u8 = 1;
/// ... CIDR identities.
pub const CFG_HAS_CIDRS: u8 = 2;
/// ... failsafe entries.
pub const CFG_HAS_FAILSAFE: u8 = 4;
/// ... endpoints of workloads that list `interfaces:` (keys with an interface index): the
/// datapath looks (address, packet's interface) up before (address, any interface). Without
/// it, one lookup, as if the interface did not exist.
pub const CFG_HAS_IFACE_ENDPOINTS: u8 = 8;
/// ... earned (mTLS) bindings can appear and go without a new generation: a cached verdict
/// holds only while its peer's bind sequence stands (see `BIND_SEQ_MAP`) and, for a peer bound
/// so, until its binding's deadline.
pub const CFG_EARNED: u8 = 16;

impl DatapathConfig {
    pub const fn new(non_ip: Action, generation: u8, flags: u8) -> Self {
        Self {
            non_ip: non_ip as u8,
            generation,
            flags,
            pad: 0,
            epoch: 0,
        }
    }

    /// The same config with `epoch`.
    #[must_use]
    pub const fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch after this one (never 0, which disables the cache).
    pub const fn next_epoch(&self) -> u32 {
        match self.epoch.wrapping_add(1) {
            0 => 1,
            e => e,
        }
    }
}

const _: () = {
    assert!(size_of::<DatapathConfig>() == 8);
};
