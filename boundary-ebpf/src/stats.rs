//! Per-CPU packet and byte counters by (workload slot, direction, reason).

use aya_ebpf::helpers::bpf_get_smp_processor_id;
use boundary_common::{
    Direction, Reason,
    maps::{MAX_RULES, REASON_SLOTS_MASK, counter_index, rule_hits_index},
};

use crate::maps::{COUNTERS, RULE_HITS, RULE_LIMITED};

#[inline(always)]
pub fn count(slot: u16, direction: Direction, reason: Reason, packets: u64, bytes: u64) {
    let Some(row) = COUNTERS.get_ptr_mut(counter_index(slot, direction as u8)) else {
        // A slot past the map's end: the agent never installs one, so this cannot be counted
        // anywhere more truthful than nowhere.
        return;
    };
    // The mask is redundant for the compiler (codes are below REASON_SLOTS) but it is what
    // lets the verifier prove the index in bounds: the code is read back through a volatile
    // load so that LLVM, which knows a `Reason`'s range, cannot drop the mask when the reason
    // came from memory (the verdict cache, a subprogram's answer).
    let code = reason as u8;
    // SAFETY: reading a local.
    let code = unsafe { core::ptr::read_volatile(&raw const code) };
    let idx = usize::from(code) & REASON_SLOTS_MASK;
    // SAFETY: `row` points into this CPU's value of a per-CPU array; nothing else runs on this
    // CPU while we hold it (BPF programs are not preempted on the same CPU by each other in
    // XDP/TC context), so a plain read-modify-write is race free.
    unsafe {
        let counter = &mut (*row).counters[idx];
        counter.packets += packets;
        counter.bytes += bytes;
    }
}

/// `packets` more decided by `rule`, and refused by its rate limit if `limited`. Ids past the
/// maps' end are not counted.
#[inline(always)]
pub fn count_rule(rule: u32, packets: u64, limited: bool) {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if rule < MAX_RULES
        && let Some(hits) = RULE_HITS.get_ptr_mut(rule_hits_index(cpu, rule))
    {
        // SAFETY: this CPU's block of the array: no other CPU writes it, and nothing else
        // runs on this CPU while we hold it, as in `count`.
        unsafe { *hits += packets };
    }
    if limited && let Some(n) = RULE_LIMITED.get_ptr_mut(rule) {
        // SAFETY: as above.
        unsafe { *n += packets };
    }
}
