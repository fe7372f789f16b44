//! Rate limits: the bucket a rule pays into, and paying for a packet. The arithmetic, and why
//! a shared bucket is a per-CPU credit drawn in batches from one word, is in
//! `boundary_common::bucket`; this file only gives it the kernel's memory, atomics and clock.
//!
//! A bucket kept per peer (`per: source` / `per: destination`) is one entry of its own LRU map
//! per peer address, paid into exactly with a compare-and-swap; a new peer starts with a full
//! burst, so such a limit may name a rule-wide ceiling that every peer's packets pay into too.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use boundary_common::{
    Direction,
    bucket::{Shared, SharedWord, cost, pay, ticks},
    maps::{BUCKET_INDEX_MASK, BUCKET_PER_PEER, NO_BUCKET, PeerBucket, PeerKey, rule_bucket_index},
};

use crate::{
    maps::{BUCKETS, CREDITS, PEER_BUCKETS, PEER_INSERTS, RULE_BUCKETS},
    packet::Packet,
    verdict::Wire,
};

/// The bucket `rule` pays into in `generation` (its index, with `BUCKET_PER_PEER` when it is
/// kept per peer), or [`NO_BUCKET`].
#[inline(always)]
pub fn bucket_of(generation: u8, rule: u32) -> u32 {
    RULE_BUCKETS
        .get(rule_bucket_index(generation, rule))
        .copied()
        .unwrap_or(NO_BUCKET)
}

/// Whether `pkt` is within the limit of `bucket` (as [`bucket_of`] gives it), paying for it if
/// so. A bucket the maps do not have admits nothing: the agent installs every bucket a
/// generation names before the generation goes live, so that is an impossible state.
#[inline(always)]
pub fn admit(bucket: u32, pkt: &Packet, direction: Direction, wire: Wire) -> bool {
    let index = bucket & BUCKET_INDEX_MASK;
    if bucket & BUCKET_PER_PEER == 0 {
        return shared(index, wire.packets, wire.bytes);
    }
    let peer = match direction {
        Direction::Ingress => &pkt.src,
        Direction::Egress => &pkt.dst,
    };
    let Some(ceiling) = per_peer(index, peer, pkt.family, wire) else {
        return false;
    };
    ceiling == NO_BUCKET || shared(ceiling, wire.packets, 0)
}

/// Pays into the peer's own bucket of per-peer bucket `index`; returns the ceiling to pay into
/// next (or [`NO_BUCKET`]), or `None` when the peer is over its limit.
#[inline(always)]
fn per_peer(index: u32, peer: &[u8; 16], family: u8, wire: Wire) -> Option<u32> {
    let s = BUCKETS.get(index)?;
    let peers = PEER_BUCKETS.get(index)?;
    // SAFETY: a helper with no arguments.
    let now = ticks(unsafe { bpf_ktime_get_ns() });
    let key = PeerKey {
        addr: *peer,
        family,
        pad: [0; 7],
    };
    let entry = match peers.get_ptr_mut(&key) {
        Some(entry) => entry,
        None => {
            // A new peer, with a full bucket. BPF_NOEXIST: when another CPU inserted it first,
            // its entry stands and is the one paid into.
            let fresh = PeerBucket { tat: [now, now] };
            if peers.insert(&key, &fresh, u64::from(BPF_NOEXIST)).is_ok()
                && let Some(n) = PEER_INSERTS.get_ptr_mut(index)
            {
                // SAFETY: this CPU's slot of a per-CPU array (see `stats::count`).
                unsafe { *n += 1 };
            }
            peers.get_ptr_mut(&key)?
        }
    };
    let units = [wire.packets, wire.bytes];
    for d in 0..2 {
        if s.depth[d] == 0 {
            continue;
        }
        let c = cost(units[d], s.interval[d], s.max_units[d]);
        // SAFETY: an aligned u64 in an LRU map value, valid for the program's run (an evicted
        // entry's memory is not reused before the RCU grace period ends).
        let tat = Word(unsafe { &raw mut (*entry).tat[d] });
        if !pay(&tat, c, s.depth[d], now) {
            return None;
        }
    }
    Some(s.ceiling)
}

/// Pays into shared bucket `index` from this CPU's credit (see `boundary_common::bucket`).
#[inline(always)]
fn shared(index: u32, packets: u64, bytes: u64) -> bool {
    let Some(credit) = CREDITS.get_ptr_mut(index) else {
        return false;
    };
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU while a
    // program holds it (see `stats::count`).
    let credit = unsafe { &mut *credit };
    credit.admit(
        packets,
        bytes,
        || {
            let s = BUCKETS.get_ptr_mut(index)?;
            // SAFETY: an entry of an array map, valid for the program's run; `tat` is only
            // ever touched through `Word`, `depth` only written while no generation names it.
            unsafe {
                Some(Shared {
                    tat: [Word(&raw mut (*s).tat[0]), Word(&raw mut (*s).tat[1])],
                    depth: (*s).depth,
                })
            }
        },
        // SAFETY: a helper with no arguments.
        || ticks(unsafe { bpf_ktime_get_ns() }),
    )
}

/// A bucket's `tat`, shared by every CPU.
struct Word(*mut u64);

impl SharedWord for Word {
    #[inline(always)]
    fn load(&self) -> u64 {
        // SAFETY: an aligned u64 in a map value (see the callers).
        unsafe { core::ptr::read_volatile(self.0) }
    }

    #[inline(always)]
    fn compare_exchange(&self, old: u64, new: u64) -> bool {
        let mut r0 = old;
        // SAFETY: an aligned u64 in a map value (see the callers); `cmpxchg_64` compares it with
        // r0, stores `new` if equal, and leaves the value it found in r0.
        unsafe {
            core::arch::asm!(
                "r0 = cmpxchg_64({p} + 0, r0, {new})",
                p = in(reg) self.0,
                new = in(reg) new,
                inout("r0") r0,
                options(nostack, preserves_flags),
            );
        }
        r0 == old
    }
}
