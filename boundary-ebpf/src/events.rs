//! Sampled drop events for `monitor`: a per-CPU token bucket bounds how many a CPU sends per
//! second; the rest are counted as lost. Only drops (and audited would-be drops) are sent.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use boundary_common::{
    Direction,
    maps::{DropEvent, EVENTS_BURST, EVENTS_PER_SEC},
};

use crate::{
    maps::{EVENT_BUDGET, EVENTS},
    packet::Packet,
    verdict::Decision,
};

const NS_PER_EVENT: u64 = 1_000_000_000 / EVENTS_PER_SEC;

#[inline(always)]
pub fn emit(pkt: &Packet, d: &Decision, direction: Direction, len: u32) {
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array; nothing else runs on this CPU meanwhile.
    let b = unsafe { &mut *budget };
    // Under a flood the bucket is empty and nearly every drop ends here: the clock is read
    // only every 64th time, so the flood pays an increment, not a helper call.
    if b.tokens == 0 && b.skip > 0 {
        b.skip -= 1;
        b.lost += 1;
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let earned = now.wrapping_sub(b.last_refill_ns) / NS_PER_EVENT;
    if earned > 0 {
        let tokens = u64::from(b.tokens) + earned;
        b.tokens = if tokens > u64::from(EVENTS_BURST) {
            EVENTS_BURST
        } else {
            tokens as u32
        };
        b.last_refill_ns = now;
    }
    if b.tokens == 0 {
        b.skip = 63;
        b.lost += 1;
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        // The ring is full (nobody reads it): back off like an empty bucket, or every drop
        // would read the clock and try again.
        b.tokens = 0;
        b.skip = 63;
        b.lost += 1;
        return;
    };
    b.tokens -= 1;
    b.sent += 1;
    entry.write(DropEvent {
        timestamp_ns: now,
        identity: d.identity,
        len,
        slot: d.slot,
        rule: d.rule,
        sport: pkt.sport,
        dport: pkt.dport,
        reason: d.reason as u8,
        direction: direction as u8,
        family: pkt.family,
        proto: pkt.proto,
        icmp_type: pkt.icmp_type,
        pad: 0,
        src: pkt.src,
        dst: pkt.dst,
    });
    entry.submit(0);
}
