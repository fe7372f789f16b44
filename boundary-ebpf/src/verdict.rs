//! The decision for one packet. In this skeleton: parse, find the local workload, apply its
//! default for the direction (audit mode passes would-be drops). The policy engine slots in
//! between the workload lookup and the default.

use boundary_common::{
    Direction, Reason,
    maps::{Action, Endpoint, EndpointKey, FAMILY_IPV4, Mode, UNPROTECTED_SLOT},
};

use crate::{
    maps::{CONFIG, ENDPOINTS},
    parse::{self, L3, Packet},
};

/// How much of an skb the TC program wants in its linear part: the transport header must
/// start within `MAX_L4_OFFSET`, and a TCP header with options is at most 60 bytes.
pub const HEADERS_MAX: usize = parse::MAX_L4_OFFSET + 64;

pub struct Decision {
    /// Workload slot the packet is counted under.
    pub slot: u16,
    pub reason: Reason,
}

#[inline(always)]
pub fn decide(data: usize, end: usize, direction: Direction) -> Decision {
    let mut pkt = Packet::new();
    match parse::parse(data, end, &mut pkt) {
        Ok(L3::NonIp) => Decision {
            slot: UNPROTECTED_SLOT,
            reason: non_ip_reason(),
        },
        Ok(L3::Ip) => match endpoint(&pkt, direction) {
            None => Decision {
                slot: UNPROTECTED_SLOT,
                reason: Reason::Unprotected,
            },
            Some(ep) => Decision {
                slot: ep.slot,
                reason: default_reason(ep, direction),
            },
        },
        // Malformed packets are dropped whatever the workload's mode: audit is about policy,
        // and a packet the parser refuses is not one a policy can be about. They are counted
        // under the workload when its address was readable.
        Err(reason) => Decision {
            slot: if pkt.family == 0 {
                UNPROTECTED_SLOT
            } else {
                endpoint(&pkt, direction).map_or(UNPROTECTED_SLOT, |ep| ep.slot)
            },
            reason,
        },
    }
}

#[inline(always)]
fn non_ip_reason() -> Reason {
    match CONFIG.get(0) {
        Some(cfg) if cfg.non_ip == Action::Drop as u8 => Reason::NonIpDrop,
        _ => Reason::NonIpPass,
    }
}

/// The workload that owns the local address: the destination on ingress, the source on egress.
#[inline(always)]
fn endpoint(pkt: &Packet, direction: Direction) -> Option<Endpoint> {
    let addr = match direction {
        Direction::Ingress => &pkt.dst,
        Direction::Egress => &pkt.src,
    };
    let key = if pkt.family == FAMILY_IPV4 {
        EndpointKey::v4([addr[0], addr[1], addr[2], addr[3]])
    } else {
        EndpointKey::v6(*addr)
    };
    // SAFETY: the value is copied out at once; a concurrent update can at worst give us a
    // torn copy of an 8-byte value, which the agent avoids by never updating in place.
    unsafe { ENDPOINTS.get(&key) }.copied()
}

#[inline(always)]
fn default_reason(ep: Endpoint, direction: Direction) -> Reason {
    let action = match direction {
        Direction::Ingress => ep.ingress_default,
        Direction::Egress => ep.egress_default,
    };
    if action != Action::Drop as u8 {
        Reason::DefaultAllow
    } else if ep.mode == Mode::Audit as u8 {
        Reason::Audit
    } else {
        Reason::DefaultDeny
    }
}
