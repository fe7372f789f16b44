//! IP fragments: the first fragment (which carries the transport header) is decided like any
//! packet and its decision remembered; later fragments, which have no ports, get the same
//! decision, or are dropped as `fragment_unknown` when the first was never seen. A datagram is
//! keyed by what all its fragments carry alike: addresses, identification, and the IPv4
//! protocol or the IPv6 Fragment header's Next Header (RFC 8200 4.5) — not the transport
//! protocol, which a first fragment may reach only through AH or Destination Options.

use boundary_common::{
    Direction, Reason,
    maps::{FRAGMENTS_MAP, FragKey, FragValue},
};

use crate::{diag, maps::FRAGMENTS, packet::Packet};

#[inline(always)]
fn key(pkt: &Packet, direction: Direction) -> FragKey {
    FragKey {
        direction: direction as u8,
        proto: pkt.frag_proto,
        family: pkt.family,
        pad: 0,
        id: pkt.frag_id,
        saddr: pkt.src,
        daddr: pkt.dst,
    }
}

/// Remembers the first fragment's decision, made under `epoch` and the peer's `bind_seq`.
#[inline(always)]
pub fn remember(
    pkt: &Packet,
    direction: Direction,
    (slot, reason, rule): (u16, Reason, u32),
    (epoch, bind_seq): (u32, u32),
) {
    let value = FragValue {
        reason: reason as u8,
        pad: 0,
        slot,
        rule,
        epoch,
        bind_seq,
    };
    // A full LRU evicts; a failure costs the later fragments their verdict (fragment_unknown).
    let result = FRAGMENTS.insert(&key(pkt, direction), &value, 0);
    diag::map_update(
        FRAGMENTS_MAP,
        result.map_err(i64::from),
        slot,
        direction as u8,
    );
}

/// The first fragment's (slot, reason code, rule), if it was seen under the live `epoch` and
/// the peer's current `bind_seq`.
#[inline(always)]
pub fn follow(pkt: &Packet, direction: Direction, epoch: u32, bind_seq: u32) -> Option<FragValue> {
    // SAFETY: a 16-byte value copied out at once.
    unsafe { FRAGMENTS.get(&key(pkt, direction)) }
        .copied()
        .filter(|v| v.epoch == epoch && v.bind_seq == bind_seq)
}
