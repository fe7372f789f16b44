//! The decision (see boundary-ebpf/src/verdict.rs), over any [`Lookup`].

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use boundary_common::{
    Direction, Reason, Verdict,
    maps::{
        Action, EP_RANGES_EGRESS, EP_RANGES_INGRESS, EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint,
        IDENTITY_ANY, IDENTITY_WORLD, Mode, PORT_ANY, PolicyValue, RULE_ALLOW, UNPROTECTED_SLOT,
        icmp_port,
    },
};

use super::parse::{Fragment, Packet, Parsed, parse};
use crate::policy::compile::{RangeKey, RuleKey, Tables};

/// Read access to a policy's entries: compiled tables, or the live maps.
pub trait Lookup {
    fn endpoint(&self, addr: IpAddr) -> Option<Endpoint>;
    fn exact_identity(&self, addr: IpAddr) -> Option<u32>;
    /// Longest-prefix match.
    fn cidr_identity(&self, addr: IpAddr) -> Option<u32>;
    fn policy(&self, key: &RuleKey) -> Option<PolicyValue>;
    /// Longest-prefix match on the port (`key.bits` is 16).
    fn range(&self, key: &RangeKey) -> Option<PolicyValue>;
    /// Whether (protocol, local port, peer) is a failsafe entry.
    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool;
}

impl Lookup for Tables {
    fn endpoint(&self, addr: IpAddr) -> Option<Endpoint> {
        self.endpoints.get(&addr).copied()
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.identities.get(&addr).copied()
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let net = ipnet::IpNet::new(addr, len).expect("valid length").trunc();
            self.cidrs.get(&net).copied()
        })
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.policy.get(key).copied()
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        (0..=16u8).rev().find_map(|bits| {
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            self.ranges
                .get(&RangeKey {
                    port: key.port & mask,
                    bits,
                    ..*key
                })
                .copied()
        })
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        self.failsafe
            .iter()
            .any(|(p, lp, net)| *p == proto && *lp == port && net.contains(&peer))
    }
}

/// What the datapath does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub slot: u16,
    pub reason: Reason,
    /// The deciding rule.
    pub rule: Option<u16>,
    /// The peer's identity, when the policy was consulted.
    pub identity: Option<u32>,
}

/// Conntrack and fragment state, as the datapath's LRU maps would hold it (no eviction, no
/// clock: nothing expires within a test).
#[derive(Clone, Debug, Default)]
pub struct State {
    flows: HashSet<FlowId>,
    fragments: HashMap<FragId, (Reason, u16, Option<u16>)>,
}

/// (direction, protocol, source port, destination port, source, destination).
type FlowId = (u8, u8, u16, u16, IpAddr, IpAddr);
/// (direction, protocol, identification, source, destination).
type FragId = (u8, u8, u32, IpAddr, IpAddr);

/// Decides a raw frame.
pub fn decide_frame(
    l: &impl Lookup,
    non_ip: Action,
    state: &mut State,
    direction: Direction,
    frame: &[u8],
) -> Outcome {
    let outcome = |slot, reason| Outcome {
        slot,
        reason,
        rule: None,
        identity: None,
    };
    match parse(frame) {
        Parsed::NonIp => outcome(
            UNPROTECTED_SLOT,
            if non_ip == Action::Drop {
                Reason::NonIpDrop
            } else {
                Reason::NonIpPass
            },
        ),
        Parsed::Malformed { reason, addrs } => {
            let slot = addrs
                .and_then(|(src, dst)| l.endpoint(local(direction, src, dst)))
                .map_or(UNPROTECTED_SLOT, |e| e.slot);
            outcome(slot, reason)
        }
        Parsed::Ip(pkt) => decide(l, state, direction, &pkt),
    }
}

fn local(direction: Direction, src: IpAddr, dst: IpAddr) -> IpAddr {
    match direction {
        Direction::Ingress => dst,
        Direction::Egress => src,
    }
}

fn flow_ports(pkt: &Packet, as_request: bool) -> Option<(u16, u16)> {
    match pkt.proto {
        1 | 58 => {
            let (request, reply) = if pkt.proto == 1 { (8, 0) } else { (128, 129) };
            let wanted = if as_request { request } else { reply };
            (pkt.icmp_type == wanted).then_some((pkt.icmp_id, pkt.icmp_id))
        }
        _ => Some((pkt.sport, pkt.dport)),
    }
}

/// Decides a parsed IP packet.
#[expect(
    clippy::too_many_lines,
    reason = "mirrors verdict.rs step by step, easier to compare whole"
)]
pub fn decide(l: &impl Lookup, state: &mut State, direction: Direction, pkt: &Packet) -> Outcome {
    let Some(ep) = l.endpoint(local(direction, pkt.src, pkt.dst)) else {
        return Outcome {
            slot: UNPROTECTED_SLOT,
            reason: Reason::Unprotected,
            rule: None,
            identity: None,
        };
    };
    let audited = |r| {
        if ep.mode == Mode::Audit as u8 {
            Reason::Audit
        } else {
            r
        }
    };
    let frag_key = (direction as u8, pkt.proto, pkt.frag_id, pkt.src, pkt.dst);
    if pkt.fragment == Fragment::Later {
        let (reason, rule) = match state.fragments.get(&frag_key) {
            Some(&(reason, _, rule)) => (reason, rule),
            None => (audited(Reason::FragmentUnknown), None),
        };
        return Outcome {
            slot: ep.slot,
            reason,
            rule,
            identity: None,
        };
    }
    if pkt.proto == 58 && (133..=137).contains(&pkt.icmp_type) {
        return Outcome {
            slot: ep.slot,
            reason: Reason::NeighborDiscovery,
            rule: None,
            identity: None,
        };
    }
    let (local_port, remote) = match direction {
        Direction::Ingress => (pkt.dport, pkt.src),
        Direction::Egress => (pkt.sport, pkt.dst),
    };
    let port = match pkt.proto {
        6 | 17 => pkt.dport,
        1 | 58 => icmp_port(pkt.icmp_type),
        _ => PORT_ANY,
    };
    let ranges = ep.flags
        & match direction {
            Direction::Ingress => EP_RANGES_INGRESS,
            Direction::Egress => EP_RANGES_EGRESS,
        }
        != 0;
    let identity = l
        .exact_identity(remote)
        .or_else(|| l.cidr_identity(remote))
        .unwrap_or(IDENTITY_WORLD);
    let hit = lookup(
        l,
        ep.slot,
        direction as u8,
        pkt.proto,
        identity,
        port,
        ranges,
    );
    let (mut reason, rule) = match hit {
        Some(v) if v.action == RULE_ALLOW => (Reason::PolicyAllow, Some(v.rule)),
        Some(v) => (Reason::PolicyDeny, Some(v.rule)),
        None => {
            let default = match direction {
                Direction::Ingress => ep.ingress_default,
                Direction::Egress => ep.egress_default,
            };
            let r = if default == Action::Drop as u8 {
                Reason::DefaultDeny
            } else {
                Reason::DefaultAllow
            };
            (r, None)
        }
    };
    if reason.verdict() == Verdict::Drop {
        let ct_key = flow_ports(pkt, false)
            .map(|(s, d)| (direction as u8, pkt.proto, s, d, pkt.src, pkt.dst));
        if matches!(pkt.proto, 6 | 17) && l.failsafe(pkt.proto, local_port, remote) {
            reason = Reason::Failsafe;
        } else if ct_key.is_some_and(|k| state.flows.contains(&k)) {
            reason = Reason::Established;
        } else {
            reason = audited(reason);
        }
    }
    if matches!(
        reason,
        Reason::PolicyAllow | Reason::DefaultAllow | Reason::Failsafe
    ) {
        let (track, reply_dir) = match direction {
            Direction::Ingress => (EP_TRACK_INGRESS, Direction::Egress),
            Direction::Egress => (EP_TRACK_EGRESS, Direction::Ingress),
        };
        if ep.flags & track != 0
            && let Some((s, d)) = flow_ports(pkt, true)
        {
            state
                .flows
                .insert((reply_dir as u8, pkt.proto, d, s, pkt.dst, pkt.src));
        }
    }
    if pkt.fragment == Fragment::First {
        state.fragments.insert(frag_key, (reason, ep.slot, rule));
    }
    Outcome {
        slot: ep.slot,
        reason,
        rule,
        identity: Some(identity),
    }
}

fn lookup(
    l: &impl Lookup,
    slot: u16,
    direction: u8,
    proto: u8,
    identity: u32,
    port: u16,
    ranges: bool,
) -> Option<PolicyValue> {
    let ids: &[u32] = if identity == IDENTITY_ANY {
        &[IDENTITY_ANY]
    } else {
        &[identity, IDENTITY_ANY]
    };
    for &id in ids {
        let key = |port| RuleKey {
            slot,
            direction,
            proto,
            identity: id,
            port,
        };
        if port != PORT_ANY {
            if let Some(v) = l.policy(&key(port)) {
                return Some(v);
            }
            if ranges {
                let rk = RangeKey {
                    slot,
                    direction,
                    proto,
                    identity: id,
                    port,
                    bits: 16,
                };
                if let Some(v) = l.range(&rk) {
                    return Some(v);
                }
            }
        }
        if let Some(v) = l.policy(&key(PORT_ANY)) {
            return Some(v);
        }
    }
    None
}
