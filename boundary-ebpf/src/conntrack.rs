//! Connection tracking, just enough for replies: a flow allowed one way records the packet
//! expected back; that packet is then `established` even where the policy would drop it.
//! Entries live in an LRU map and expire after an idle timeout per protocol.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    maps::{Array, LruHashMap},
};
use boundary_common::{
    Direction,
    maps::{
        CONNTRACK_ACCEPTED_MAP, CONNTRACK_MAP, CT_REFRESH_NS, CT_TIMEOUT_OTHER_NS,
        CT_TIMEOUT_TCP_NS, CT_TIMEOUT_UDP_NS, FlowKey, FlowValue,
    },
    wire::{
        ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    },
};

use crate::{
    diag,
    maps::{CONNTRACK, CONNTRACK_ACCEPTED, CT_ACCEPTED_INSERTS, CT_INSERTS},
    packet::{Packet, QUOTE_ECHO_REPLY, QUOTE_ECHO_REQUEST},
};

/// The ports a flow is keyed by: real ports, the echo identifier for ICMP echo, none for the
/// rest of ICMP (errors are not tracked), zero for portless protocols.
#[inline(always)]
fn flow_ports(pkt: &Packet, as_request: bool) -> Option<(u16, u16)> {
    match pkt.proto {
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let (request, reply) = if pkt.proto == IPPROTO_ICMP {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            } else {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            };
            let wanted = if as_request { request } else { reply };
            (pkt.icmp_type == wanted).then_some((pkt.icmp_id, pkt.icmp_id))
        }
        _ => Some((pkt.sport, pkt.dport)),
    }
}

#[inline(always)]
fn timeout(proto: u8) -> u64 {
    match proto {
        IPPROTO_TCP => CT_TIMEOUT_TCP_NS,
        IPPROTO_UDP => CT_TIMEOUT_UDP_NS,
        _ => CT_TIMEOUT_OTHER_NS,
    }
}

/// Whether `pkt`, seen in `direction`, is the reply of a recorded flow.
#[inline(always)]
pub fn established(pkt: &Packet, direction: Direction) -> bool {
    let Some((sport, dport)) = flow_ports(pkt, false) else {
        return false;
    };
    live(&FlowKey {
        direction: direction as u8,
        proto: pkt.proto,
        family: pkt.family,
        pad: 0,
        sport,
        dport,
        saddr: pkt.src,
        daddr: pkt.dst,
    })
}

/// The table a key lives in, by the direction its packet is expected in: replies arriving on
/// ingress belong to flows the workload opened, replies leaving on egress to flows it
/// accepted. Two LRUs, so that a flood of new connections to an open port (each accepted flow
/// is recorded, for its replies or the ICMP errors about them) evicts accepted flows only,
/// never the connections the workload itself opened.
#[inline(always)]
fn table(expected: u8) -> &'static LruHashMap<FlowKey, FlowValue> {
    if expected == Direction::Ingress as u8 {
        &CONNTRACK
    } else {
        &CONNTRACK_ACCEPTED
    }
}

/// The count of flows recorded anew in [`table`]`(expected)` (see `CT_INSERTS_MAP`).
#[inline(always)]
fn insert_count(expected: u8) -> &'static Array<u64> {
    if expected == Direction::Ingress as u8 {
        &CT_INSERTS
    } else {
        &CT_ACCEPTED_INSERTS
    }
}

/// Whether conntrack holds `key` and its flow has not gone idle.
#[inline(always)]
fn live(key: &FlowKey) -> bool {
    // SAFETY: an 8-byte value copied out at once.
    let Some(flow) = (unsafe { table(key.direction).get(key) }).copied() else {
        return false;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    now.wrapping_sub(flow.last_seen_ns) < timeout(key.proto)
}

/// Whether an ICMP error seen in `direction` is about a tracked flow (`related`): the packet it
/// quotes went the other way, from the local address the error is now addressed to (or, for an
/// error the workload sends, from the peer the error goes back to, to the address it comes
/// from), and conntrack expects either that packet's reply (a flow the workload started) or
/// that packet itself (the reply of a flow it let in).
#[inline(always)]
pub fn related(pkt: &Packet, direction: Direction) -> bool {
    let q = &pkt.quote;
    // An error goes back to the source of the packet it is about (RFC 792, RFC 4443 2.2): on
    // ingress the quote is one the workload sent; on egress, one it received, and the error
    // must go to that packet's sender, or any tracked flow would carry data anywhere.
    let local_matches = match direction {
        Direction::Ingress => q.src == pkt.dst,
        Direction::Egress => q.dst == pkt.src && q.src == pkt.dst,
    };
    if !local_matches {
        return false;
    }
    let quoted_direction = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    // The quoted packet's reply, expected in the error's direction.
    if q.kind != QUOTE_ECHO_REPLY
        && live(&FlowKey {
            direction: direction as u8,
            proto: q.proto,
            family: pkt.family,
            pad: 0,
            sport: q.dport,
            dport: q.sport,
            saddr: q.dst,
            daddr: q.src,
        })
    {
        return true;
    }
    // The quoted packet itself, expected as a reply in its own direction.
    q.kind != QUOTE_ECHO_REQUEST
        && live(&FlowKey {
            direction: quoted_direction as u8,
            proto: q.proto,
            family: pkt.family,
            pad: 0,
            sport: q.sport,
            dport: q.dport,
            saddr: q.src,
            daddr: q.dst,
        })
}

/// Records that `pkt`, passed in `direction` for workload `slot`, expects a reply in the other
/// direction.
#[inline(always)]
pub fn record(pkt: &Packet, direction: Direction, slot: u16) {
    let Some((sport, dport)) = flow_ports(pkt, true) else {
        return;
    };
    let reply_direction = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    let key = FlowKey {
        direction: reply_direction as u8,
        proto: pkt.proto,
        family: pkt.family,
        pad: 0,
        sport: dport,
        dport: sport,
        saddr: pkt.dst,
        daddr: pkt.src,
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let map = table(key.direction);
    // SAFETY: an 8-byte value copied out at once.
    let age = unsafe { map.get(&key) }.map(|flow| now.wrapping_sub(flow.last_seen_ns));
    if age.is_some_and(|age| age < CT_REFRESH_NS) {
        return;
    }
    // A full LRU evicts its oldest flow; failure here only costs a later reply its shortcut.
    let result = map.insert(&key, &FlowValue { last_seen_ns: now }, 0);
    let name = if key.direction == Direction::Ingress as u8 {
        CONNTRACK_MAP
    } else {
        CONNTRACK_ACCEPTED_MAP
    };
    diag::map_update(name, result.map_err(i64::from), slot, direction as u8);
    if age.is_none_or(|age| age >= timeout(pkt.proto)) {
        // A reply that was not one may be one now: cached "not a reply" answers are stale.
        // Counted after the insert, and read before the lookup in `verdict::reply`, so a
        // lookup that missed this flow always sees the count move after it.
        if let Some(count) = insert_count(key.direction).get_ptr_mut(0) {
            // SAFETY: an aligned u64 in a map value, shared by every CPU: one atomic add whose
            // result is unused (the one atomic the generic BPF CPU has; `core` offers no 64-bit
            // atomics on this target).
            unsafe {
                core::arch::asm!(
                    "lock *(u64 *)({p} + 0) += {one}",
                    p = in(reg) count,
                    one = in(reg) 1u64,
                    options(nostack, preserves_flags),
                );
            }
        }
    }
}

/// How many flows whose replies are seen in `direction` have been recorded anew so far (see
/// `CT_INSERTS_MAP`).
#[inline(always)]
pub fn inserts(direction: Direction) -> u64 {
    // SAFETY: a u64 read at once; a torn read cannot happen on a 64-bit aligned word.
    insert_count(direction as u8)
        .get_ptr(0)
        .map_or(0, |p| unsafe { core::ptr::read_volatile(p) })
}
