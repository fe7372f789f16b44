//! Each CPU's verdict cache: the entry, its flags, its size, and its hash key's global.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{CT_INSERTS_MAP, DatapathConfig, VERDICT_CACHE_MAP};

/// Entries of each CPU's verdict cache (a power of two: the index is the top bits of a hash).
pub const VERDICT_CACHE_SLOTS: u32 = 2_048;
/// `log2(VERDICT_CACHE_SLOTS)`.
pub const VERDICT_CACHE_BITS: u32 = 11;
/// The global (`[u64; CACHE_KEY_WORDS]`, in the object's .rodata) holding the verdict cache's
/// per-load hash key: a random multiplier per 32-bit half of a flow's [`FLOW_WORDS`] words,
/// then a random addend. The loader sets it.
pub const CACHE_KEY_GLOBAL: &str = "BND_CACHE_KEY";
pub const CACHE_KEY_WORDS: usize = 2 * FLOW_WORDS + 1;
/// Words of [`VerdictCacheEntry::flow`].
pub const FLOW_WORDS: usize = 6;

/// The global (`u64`, in the object's .rodata) holding a pause, in nanoseconds, between a
/// packet's read of the config and its first lookup under it. Zero (no pause, and no code:
/// the verifier removes the branch) except in the test of the generation swap's grace period.
pub const READER_DELAY_GLOBAL: &str = "BND_READER_DELAY_NS";
/// The `.rodata` global that stands the rate-limit clock still at its value in ns (0, the
/// default, reads the real clock): for the tests that compare the datapath with the reference
/// evaluator packet by packet.
pub const FROZEN_CLOCK_GLOBAL: &str = "BND_FROZEN_CLOCK_NS";

/// One entry of [`VERDICT_CACHE_MAP`]: the policy's verdict for one TCP/UDP flow in one
/// direction, valid while [`DatapathConfig::epoch`] is `epoch`.
///
/// It holds what is a pure function of the flow, the interface it crosses and the live policy
/// (workload, identity, rule, the policy reason after failsafe). The interface is part of the
/// flow: with per-workload `interfaces:` one flow may belong to a workload on one interface
/// and to none (or another) on the next, and a verdict cached on one must not answer the
/// other. What can change under it is not cached but checked cheaply: a cached allow
/// refreshes its conntrack entry every [`CT_REFRESH_JIFFIES`]; a cached drop asks conntrack
/// whether the packet is an established reply unless no flow has been recorded since it last
/// said no (see [`CT_INSERTS_MAP`]), or it said yes less than [`CT_REFRESH_JIFFIES`] ago (see
/// [`VC_REPLY`]).
/// Fragments, ICMP and other protocols never use the cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictCacheEntry {
    /// The flow as [`FLOW_WORDS`] words: (direction, proto, family, 0, sport, dport), source,
    /// destination (two words each), the interface index.
    pub flow: [u64; FLOW_WORDS],
    pub epoch: u32,
    pub slot: u16,
    /// `Reason` code decided by the policy (or failsafe, or "unprotected").
    pub reason: u8,
    /// `VC_*` bits.
    pub flags: u8,
    pub rule: u32,
    pub identity: u32,
    /// With `CFG_EARNED`: the peer's bind sequence when the verdict was made (see
    /// `BIND_SEQ_MAP`); the entry is a miss once it moved.
    pub bind_seq: u32,
    pub pad: u32,
    /// The deadline of the earned binding the peer's identity came from (`IdentityValue::expires`),
    /// or `NEVER`: the entry is a miss from then on, agent or not.
    pub expires: u64,
    /// For an allow: the `bpf_jiffies64` after which it refreshes its conntrack entry. For a
    /// drop: with [`VC_REPLY`], the `bpf_jiffies64` until which conntrack's last "a reply"
    /// stands; without, the [`CT_INSERTS_MAP`] count when conntrack last said "not a reply"
    /// ([`CT_NOT_ASKED`] before it was asked).
    pub ct: u64,
}

/// [`VerdictCacheEntry::ct`] of a drop whose flow conntrack has not been asked about.
pub const CT_NOT_ASKED: u64 = u64::MAX;

/// [`VerdictCacheEntry::flags`]: the workload tracks this direction's allowed flows.
pub const VC_TRACK: u8 = 1;
/// ... the workload is in audit mode.
pub const VC_AUDIT: u8 = 2;
/// ... a drop that conntrack last found to be an established reply: the answer stands for
/// [`CT_REFRESH_JIFFIES`] (so a flow that expires or is evicted meanwhile has its replies
/// admitted that much longer, 64-640 ms against timeouts of a minute and more).
pub const VC_REPLY: u8 = 4;
/// [`VerdictCacheEntry::flags`]: the rule pays into a rate-limit bucket (which one depends on
/// the generation, see `RULE_BUCKETS_MAP`), on every packet, cached or not.
pub const VC_LIMITED: u8 = 8;
/// A cached allow rewrites its conntrack entry at most this often (64 ms at HZ=1000, 640 ms at
/// HZ=100: well inside every conntrack timeout, and the entry is re-created this quickly if
/// the LRU evicted it).
pub const CT_REFRESH_JIFFIES: u64 = 64;

const _: () = {
    assert!(size_of::<VerdictCacheEntry>() == 88);
    assert!(VERDICT_CACHE_SLOTS == 1 << VERDICT_CACHE_BITS);
};
