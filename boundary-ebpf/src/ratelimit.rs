//! Rate limits: the bucket a rule pays into, and paying for a packet. The arithmetic, and why
//! a shared bucket is a per-CPU credit drawn in batches from one word, is in
//! `boundary_common::bucket`; this file only gives it the kernel's memory, atomics and clock.
//!
//! A bucket kept per peer (`per: source` / `per: destination`) is one entry of its own LRU map
//! per peer address, paid into exactly with a compare-and-swap; a new peer starts with a full
//! burst, so such a limit may name a rule-wide ceiling that every peer's packets pay into too.
//!
//! The clock is `bpf_ktime_get_ns` (33-37 ns here), not the coarse clock (17-19 ns, but it
//! moves in ticks of a few milliseconds). A shared bucket reads it only when a CPU's credit
//! runs out, once a batch (about 1 ms of the rate), so its cost is spread over the batch: the
//! contended row of the bench (a read every 6th packet) adds 16.5 ns a packet in all. The
//! coarse clock would save half of a read per batch, but a tick is longer than the batch:
//! refills would come in steps of several milliseconds of the rate, and a burst worth less
//! than one tick would have to be refused. A per-peer bucket reads the clock on every packet
//! (82.5 ns added in the bench, with its compare-and-swap); the coarse clock is the lever
//! there, at the price of that burst floor.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use boundary_common::{
    Direction,
    bucket::{Shared, SharedWord, cost, pay_both, ticks},
    maps::{
        BUCKET_INDEX_MASK, BUCKET_PER_PEER, BucketState, FAMILY_IPV6, NO_BUCKET, PeerBucket,
        PeerKey, rule_bucket_index,
    },
};

use crate::{
    maps::{BUCKETS, CREDITS, PEER_BUCKETS, PEER_INSERTS, RULE_BUCKETS},
    packet::Packet,
    verdict::Wire,
};

/// A clock that stands still, in ns, for the tests that compare the datapath with the
/// reference evaluator packet by packet (`boundary_common::maps::FROZEN_CLOCK_GLOBAL`). A
/// `.rodata` global the agent's loader leaves at zero: the verifier reads it as a constant and
/// removes the branch, so a production load always reads `bpf_ktime_get_ns`.
#[unsafe(no_mangle)]
static BND_FROZEN_CLOCK_NS: u64 = 0;

/// Now, in ticks.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a read of a global, volatile so LLVM does not fold the zero it was compiled with.
    let frozen = unsafe { core::ptr::read_volatile(&raw const BND_FROZEN_CLOCK_NS) };
    if frozen != 0 {
        return ticks(frozen);
    }
    // SAFETY: a helper with no arguments.
    ticks(unsafe { bpf_ktime_get_ns() })
}

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
    let Some(s) = BUCKETS.get(index) else {
        return false;
    };
    // The ceiling first: when it is spent (a spoofed-source flood), the packet is refused
    // before a new source's bucket is made, so the flood neither washes the table nor costs
    // an insert a frame. What the ceiling took is given back when the source cannot pay.
    let ceiling = s.ceiling;
    if ceiling != NO_BUCKET && !shared(ceiling, wire.packets, 0) {
        return false;
    }
    let peer = match direction {
        Direction::Ingress => &pkt.src,
        Direction::Egress => &pkt.dst,
    };
    if per_peer(index, s, peer, pkt.family, wire) {
        return true;
    }
    if ceiling != NO_BUCKET
        && let Some(credit) = CREDITS.get_ptr_mut(ceiling)
    {
        // SAFETY: this CPU's entry of a per-CPU array (see `shared`).
        unsafe { (*credit).refund(wire.packets, 0) };
    }
    false
}

/// Pays into the peer's own bucket of per-peer bucket `index` (terms `s`), both dimensions or
/// neither. An IPv6 peer is its /64: a host holds a whole /64, and a bucket per address would
/// let one host through with a fresh burst from every address it takes.
#[inline(always)]
fn per_peer(index: u32, s: &BucketState, peer: &[u8; 16], family: u8, wire: Wire) -> bool {
    let Some(peers) = PEER_BUCKETS.get(index) else {
        return false;
    };
    let now = now();
    let mut key = PeerKey {
        addr: *peer,
        family,
        pad: [0; 7],
    };
    if family == FAMILY_IPV6 {
        key.addr[8..].fill(0);
    }
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
            let Some(entry) = peers.get_ptr_mut(&key) else {
                return false;
            };
            entry
        }
    };
    let costs = [
        cost(wire.packets, s.interval[0], s.max_units[0]),
        cost(wire.bytes, s.interval[1], s.max_units[1]),
    ];
    // SAFETY: aligned u64s in an LRU map value, valid for the program's run (an evicted
    // entry's memory is not reused before the RCU grace period ends).
    let tat = unsafe {
        [
            Word(&raw mut (*entry).tat[0]),
            Word(&raw mut (*entry).tat[1]),
        ]
    };
    pay_both([&tat[0], &tat[1]], costs, s.depth, now)
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
        now,
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

    #[inline(always)]
    fn give_back(&self, amount: u64) {
        // SAFETY: as above; an atomic add whose result is unused (the one the generic BPF CPU
        // has, see `conntrack::record`), of the amount's two's complement.
        unsafe {
            core::arch::asm!(
                "lock *(u64 *)({p} + 0) += {v}",
                p = in(reg) self.0,
                v = in(reg) amount.wrapping_neg(),
                options(nostack, preserves_flags),
            );
        }
    }

    #[inline(always)]
    fn fetch_add(&self, amount: u64) -> u64 {
        let mut v = amount;
        // SAFETY: as above; `atomic_fetch_add` adds the register to the word and leaves the
        // value it found in the register.
        unsafe {
            core::arch::asm!(
                "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
                p = in(reg) self.0,
                v = inout(reg) v,
                options(nostack, preserves_flags),
            );
        }
        v
    }
}
