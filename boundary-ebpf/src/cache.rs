//! Each CPU's verdict cache: a direct-mapped array of recent TCP/UDP flows and what the policy
//! said about them, so that the second and later packets of a flow cost one array read and a
//! compare instead of the workload, identity and policy lookups (three hashes, or a trie at
//! every CIDR identity).
//!
//! An entry is valid while its epoch is the config's: the agent bumps the epoch with every new
//! generation and every other write that could change a verdict, except earned bindings,
//! which move the bind sequence of their peer's slot only (and expire by their deadline). A hash collision only costs
//! a miss: the whole flow is compared. Entries are per CPU and a CPU runs one program at a
//! time (XDP in softirq, TC egress with bottom halves off), so an entry is never seen half
//! written.

use aya_ebpf::helpers::bpf_jiffies64;
use boundary_common::maps::{
    CACHE_KEY_WORDS, CT_REFRESH_JIFFIES, FLOW_WORDS, NEVER, VERDICT_CACHE_BITS, VerdictCacheEntry,
};

use crate::{maps::VERDICT_CACHE, packet::Packet, policy};

/// The flow of `pkt` seen in `direction` on its interface, as the cache compares it.
#[inline(always)]
pub fn flow(pkt: &Packet, direction: u8) -> [u64; FLOW_WORDS] {
    let head = u64::from(direction)
        | u64::from(pkt.proto) << 8
        | u64::from(pkt.family) << 16
        | u64::from(pkt.sport) << 32
        | u64::from(pkt.dport) << 48;
    [
        head,
        word(&pkt.src, 0),
        word(&pkt.src, 8),
        word(&pkt.dst, 0),
        word(&pkt.dst, 8),
        u64::from(pkt.ifindex),
    ]
}

#[inline(always)]
fn word(addr: &[u8; 16], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&addr[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// The cache's hash key: random words the agent writes into the object before loading it
/// (`EbpfLoader::override_global`), new for every load. Zero here, which would put every flow
/// in slot 0: slow, never wrong.
#[unsafe(no_mangle)]
static BND_CACHE_KEY: [u64; CACHE_KEY_WORDS] = [0; CACHE_KEY_WORDS];

/// The slot a flow lives in: vector multiply-add-shift over the flow's 32-bit halves,
/// `((b + sum(a[i] * x[i])) mod 2^64) >> (64 - VERDICT_CACHE_BITS)`, keyed by the per-load
/// random `a` and `b`. With 64-bit arithmetic for 32-bit inputs this is strongly universal
/// (Thorup, "High Speed Hashing for Integers and Strings", 2015, 3.3): two given flows share a
/// slot with probability about 1/2048 over the key, so nobody who does not know the key can
/// choose flows that collide and push every packet onto the slow path. (Whole 64-bit words
/// multiplied mod 2^64 are not: two odd multipliers make every pair of flows that differs by
/// 2^63 in two words collide, whatever the key.)
#[inline(always)]
fn index(flow: &[u64; FLOW_WORDS]) -> u32 {
    let key = |i: usize| {
        // SAFETY: a read of a global. Volatile, or LLVM folds the zeros it was compiled with;
        // the verifier turns the read of the frozen .rodata map into a constant.
        unsafe { core::ptr::read_volatile(&raw const BND_CACHE_KEY[i]) }
    };
    let mut mixed = key(2 * FLOW_WORDS);
    for (i, w) in flow.iter().enumerate() {
        mixed = mixed
            .wrapping_add(key(2 * i).wrapping_mul(*w & 0xffff_ffff))
            .wrapping_add(key(2 * i + 1).wrapping_mul(*w >> 32));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "VERDICT_CACHE_BITS bits are kept"
    )]
    let idx = (mixed >> (64 - VERDICT_CACHE_BITS)) as u32;
    idx
}

/// This CPU's entry for `flow` if it holds `flow` for `epoch` and the peer's `bind_seq` (0
/// unless bindings are earned), and the earned binding it was judged with, if any, has not
/// expired.
#[inline(always)]
pub fn get(flow: &[u64; FLOW_WORDS], epoch: u32, bind_seq: u32) -> Option<*mut VerdictCacheEntry> {
    let entry = VERDICT_CACHE.get_ptr_mut(index(flow))?;
    // SAFETY: this CPU's entry of a per-CPU array; see the module comment.
    let e = unsafe { &*entry };
    (e.epoch == epoch
        && e.bind_seq == bind_seq
        && e.flow == *flow
        && (e.expires == NEVER || policy::coarse_now() < e.expires))
        .then_some(entry)
}

/// Stores `entry` in its flow's slot, replacing whatever shared it; returns the slot.
#[inline(always)]
pub fn put(entry: &VerdictCacheEntry) -> Option<*mut VerdictCacheEntry> {
    let slot = VERDICT_CACHE.get_ptr_mut(index(&entry.flow))?;
    // SAFETY: as in `get`.
    unsafe { *slot = *entry };
    Some(slot)
}

/// The clock of the cache's conntrack refreshes: jiffies (the verifier inlines the helper
/// into one load).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_jiffies64() }
}

/// `CT_REFRESH_JIFFIES` from now.
#[inline(always)]
pub fn refresh_due() -> u64 {
    now().wrapping_add(CT_REFRESH_JIFFIES)
}

/// Whether a cached allow should refresh its conntrack entry now; if so, the next refresh is
/// scheduled.
#[inline(always)]
pub fn conntrack_due(entry: *mut VerdictCacheEntry) -> bool {
    let now = now();
    // SAFETY: as in `get`.
    let e = unsafe { &mut *entry };
    if now < e.ct {
        return false;
    }
    e.ct = now + CT_REFRESH_JIFFIES;
    true
}
