//! Rate limits: the bucket a rule pays into, and paying for a packet. The arithmetic, and why
//! it is a per-CPU credit drawn in batches from one shared word, is in
//! `boundary_common::bucket`; this file only gives it the kernel's memory, atomics and clock.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use boundary_common::{
    bucket::{Shared, SharedWord, ticks},
    maps::{NO_BUCKET, rule_bucket_index},
};

use crate::maps::{BUCKETS, CREDITS, RULE_BUCKETS};

/// The bucket `rule` pays into in `generation`, or [`NO_BUCKET`].
#[inline(always)]
pub fn bucket_of(generation: u8, rule: u32) -> u32 {
    RULE_BUCKETS
        .get(rule_bucket_index(generation, rule))
        .copied()
        .unwrap_or(NO_BUCKET)
}

/// Whether a packet of `packets` segments and `bytes` bytes is within `bucket`'s limit, paying
/// for it if so. A bucket the maps do not have admits nothing: the agent installs every bucket
/// a generation names before the generation goes live, so this is an impossible state.
#[inline(always)]
pub fn admit(bucket: u32, packets: u64, bytes: u64) -> bool {
    let Some(credit) = CREDITS.get_ptr_mut(bucket) else {
        return false;
    };
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU while a
    // program holds it (see `stats::count`).
    let credit = unsafe { &mut *credit };
    credit.admit(
        packets,
        bytes,
        || {
            let s = BUCKETS.get_ptr_mut(bucket)?;
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
        // SAFETY: an aligned u64 in a map value (see `admit`).
        unsafe { core::ptr::read_volatile(self.0) }
    }

    #[inline(always)]
    fn compare_exchange(&self, old: u64, new: u64) -> bool {
        let mut r0 = old;
        // SAFETY: an aligned u64 in a map value (see `admit`); `cmpxchg_64` compares it with
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
