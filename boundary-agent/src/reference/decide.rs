//! The decision, in the order of the policy's semantics (module documentation, `super`).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use boundary_common::{Direction, Reason, Verdict, maps::Action, maps::UNPROTECTED_SLOT};
use etherparse::{IpNumber, icmpv6};

use super::{
    frame::{Echo, Fragment, Packet, Parsed, Quote, echo_types, is_error, parse},
    limits::Limits,
    view::{Compiled, Lookup, PolicyView, Subject, WorkloadInfo},
};

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The workload it is counted under (0: none).
    pub slot: u16,
    pub reason: Reason,
    /// The rule the policy matched (kept when a rescue passes what it would drop); for a later
    /// fragment, its first fragment's.
    pub rule: Option<u32>,
    /// The peer's identity, when the policy was consulted.
    pub identity: Option<u32>,
}

impl Outcome {
    fn plain(slot: u16, reason: Reason) -> Self {
        Self {
            slot,
            reason,
            rule: None,
            identity: None,
        }
    }
}

/// A packet as conntrack and the fragment table see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    direction: Direction,
    proto: u8,
    sport: u16,
    dport: u16,
    src: IpAddr,
    dst: IpAddr,
}

impl Flow {
    /// The packet that answers this one: the other way, addresses and ports swapped.
    fn answer(self) -> Self {
        Self {
            direction: other(self.direction),
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
            src: self.dst,
            dst: self.src,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Datagram {
    direction: Direction,
    proto: u8,
    id: u32,
    src: IpAddr,
    dst: IpAddr,
}

/// Conntrack and fragment memory. Nothing expires and nothing is evicted: a test clears the
/// datapath's maps whenever it starts a new `State`.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Packets expected as answers of allowed flows.
    expected: HashSet<Flow>,
    /// First fragments' (reason, rule).
    firsts: HashMap<Datagram, (Reason, Option<u32>)>,
    /// Rate-limit buckets, and the clock they are paid on.
    pub limits: Limits,
}

fn other(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// (local address, peer address) of a packet crossing in `direction`.
fn sides(direction: Direction, src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match direction {
        Direction::Ingress => (dst, src),
        Direction::Egress => (src, dst),
    }
}

/// Whether the packet is ICMP or ICMPv6 of its own family (so it has a type).
fn own_icmp(pkt: &Packet) -> Option<u8> {
    let family_icmp = if pkt.src.is_ipv6() {
        IpNumber::IPV6_ICMP
    } else {
        IpNumber::ICMP
    };
    if pkt.proto == family_icmp.0 {
        pkt.icmp_type
    } else {
        None
    }
}

/// What conntrack keys a packet by: TCP and UDP by their ports, ICMP echo by its identifier
/// (requests open a flow, replies answer one), protocols without ports the datapath reads by
/// addresses and protocol; other ICMP messages are not flows. `opening` asks for an echo
/// request, else for an echo reply.
fn flow(direction: Direction, pkt: &Packet, opening: bool) -> Option<Flow> {
    let (sport, dport) = if pkt.proto == IpNumber::ICMP.0 || pkt.proto == IpNumber::IPV6_ICMP.0 {
        let (request, reply) = echo_types(pkt.src.is_ipv6());
        let wanted = if opening { request } else { reply };
        if own_icmp(pkt) != Some(wanted) {
            return None;
        }
        (pkt.icmp_id, pkt.icmp_id)
    } else {
        (pkt.sport, pkt.dport)
    };
    Some(Flow {
        direction,
        proto: pkt.proto,
        sport,
        dport,
        src: pkt.src,
        dst: pkt.dst,
    })
}

/// Decides a raw frame crossing interface `ifindex` in `direction`, from compiled entries
/// (tables or live maps).
pub fn decide_frame(
    l: &impl Lookup,
    non_ip: Action,
    state: &mut State,
    direction: Direction,
    ifindex: u32,
    frame: &[u8],
) -> Outcome {
    decide_frame_with(&Compiled(l), non_ip, state, direction, ifindex, frame)
}

/// Decides a raw frame crossing interface `ifindex` in `direction`, from any view of the
/// policy.
pub fn decide_frame_with(
    view: &impl PolicyView,
    non_ip: Action,
    state: &mut State,
    direction: Direction,
    ifindex: u32,
    frame: &[u8],
) -> Outcome {
    match parse(frame) {
        Parsed::NonIp => Outcome::plain(
            UNPROTECTED_SLOT,
            match non_ip {
                Action::Pass => Reason::NonIpPass,
                Action::Drop => Reason::NonIpDrop,
            },
        ),
        // A frame refused for its shape is dropped, never audited or rescued: no policy is
        // about it. It is counted under the workload whose address it carries, if readable.
        Parsed::Malformed { reason, addrs } => {
            let slot = addrs
                .and_then(|(src, dst)| view.workload(sides(direction, src, dst).0, ifindex))
                .map_or(UNPROTECTED_SLOT, |w| w.slot);
            Outcome::plain(slot, reason)
        }
        Parsed::Ip(mut pkt) => {
            pkt.wire_len = frame.len() as u64;
            decide_with(view, state, direction, ifindex, &pkt)
        }
    }
}

/// Decides a decoded packet crossing interface `ifindex` in `direction`, from compiled
/// entries.
pub fn decide(
    l: &impl Lookup,
    state: &mut State,
    direction: Direction,
    ifindex: u32,
    pkt: &Packet,
) -> Outcome {
    decide_with(&Compiled(l), state, direction, ifindex, pkt)
}

/// Decides a decoded packet crossing interface `ifindex` in `direction`, from any view of the
/// policy.
pub fn decide_with(
    view: &impl PolicyView,
    state: &mut State,
    direction: Direction,
    ifindex: u32,
    pkt: &Packet,
) -> Outcome {
    let (local, peer) = sides(direction, pkt.src, pkt.dst);
    // 1. Only a protected workload's traffic is judged: the workload that owns the local
    //    address on this interface.
    let Some(w) = view.workload(local, ifindex) else {
        return Outcome::plain(UNPROTECTED_SLOT, Reason::Unprotected);
    };
    let datagram = Datagram {
        direction,
        proto: pkt.frag_proto,
        id: pkt.frag_id,
        src: pkt.src,
        dst: pkt.dst,
    };
    // 2. A later fragment has no transport header: it shares its first fragment's fate.
    if pkt.fragment == Fragment::Later {
        return match state.firsts.get(&datagram).copied() {
            Some((reason, rule)) => {
                // Every fragment pays its rule's limit (step 5b), not the first alone.
                let over = reason == Reason::PolicyAllow
                    && rule
                        .and_then(|r| view.bucket(r))
                        .is_some_and(|b| !state.limits.admit(&b, peer, 1, pkt.wire_len));
                Outcome {
                    slot: w.slot,
                    reason: if over {
                        audited(w, Reason::RateLimited)
                    } else {
                        reason
                    },
                    rule,
                    identity: None,
                }
            }
            None => Outcome::plain(w.slot, audited(w, Reason::FragmentUnknown)),
        };
    }
    let outcome = judge(view, state, direction, pkt, w, peer);
    // 7. A first fragment's fate is kept for the rest of its datagram.
    if pkt.fragment == Fragment::First {
        state
            .firsts
            .insert(datagram, (outcome.reason, outcome.rule));
    }
    outcome
}

fn audited(w: WorkloadInfo, reason: Reason) -> Reason {
    if w.audit { Reason::Audit } else { reason }
}

fn judge(
    view: &impl PolicyView,
    state: &mut State,
    direction: Direction,
    pkt: &Packet,
    w: WorkloadInfo,
    peer: IpAddr,
) -> Outcome {
    // 3. Neighbour discovery (RFC 4861: router and neighbour solicitation and advertisement,
    //    redirect) always passes: IPv6 stops working without it. Not in a fragment: RFC 6980
    //    has hosts ignore fragmented ND, so a fragmented one is judged like any ICMPv6.
    if own_icmp(pkt).is_some_and(|t| {
        (icmpv6::TYPE_ROUTER_SOLICITATION..=icmpv6::TYPE_REDIRECT_MESSAGE).contains(&t)
    }) && pkt.src.is_ipv6()
        && pkt.fragment == Fragment::None
    {
        return Outcome::plain(w.slot, Reason::NeighborDiscovery);
    }
    // 4. The policy: the peer's identity, the deciding rule, else the default.
    let identity = view.identity(peer);
    let subject = if pkt.proto == IpNumber::TCP.0 || pkt.proto == IpNumber::UDP.0 {
        Subject::Port(pkt.dport)
    } else if let Some(t) = own_icmp(pkt) {
        Subject::IcmpType(t)
    } else {
        Subject::Protocol
    };
    let matched = view.rule(&w, direction, peer, identity, pkt.proto, subject);
    let policy = match matched {
        Some(m) if m.deny => Reason::PolicyDeny,
        Some(_) => Reason::PolicyAllow,
        None if w.denies_by_default(direction) => Reason::DefaultDeny,
        None => Reason::DefaultAllow,
    };
    // 5. A drop is rescued by the first of: failsafe, established, related, audit.
    let mut reason = if policy.verdict() == Verdict::Drop {
        rescue(view, state, direction, pkt, w, peer).unwrap_or(policy)
    } else {
        policy
    };
    // 5b. What a rule with a rate limit allows pays into its bucket (see `limits.rs`); over
    //     the limit: failsafe, else audit, else `rate_limited`, and no flow is opened.
    let mut limited = false;
    if reason == Reason::PolicyAllow
        && let Some(bucket) = matched.and_then(|m| view.bucket(m.rule))
        && !state.limits.admit(&bucket, peer, 1, pkt.wire_len)
    {
        limited = true;
        let local_port = match direction {
            Direction::Ingress => pkt.dport,
            Direction::Egress => pkt.sport,
        };
        let tcp_or_udp = pkt.proto == IpNumber::TCP.0 || pkt.proto == IpNumber::UDP.0;
        reason = if tcp_or_udp && view.failsafe(pkt.proto, local_port, peer) {
            Reason::Failsafe
        } else if w.audit {
            Reason::Audit
        } else {
            Reason::RateLimited
        };
    }
    // 6. An allowed packet opens (or keeps open) its flow: its answer will be `established`.
    if !limited
        && matches!(
            reason,
            Reason::PolicyAllow | Reason::DefaultAllow | Reason::Failsafe
        )
        && let Some(f) = flow(direction, pkt, true)
    {
        state.expected.insert(f.answer());
    }
    Outcome {
        slot: w.slot,
        reason,
        rule: matched.map(|m| m.rule),
        identity: Some(identity),
    }
}

fn rescue(
    view: &impl PolicyView,
    state: &State,
    direction: Direction,
    pkt: &Packet,
    w: WorkloadInfo,
    peer: IpAddr,
) -> Option<Reason> {
    let tcp_or_udp = pkt.proto == IpNumber::TCP.0 || pkt.proto == IpNumber::UDP.0;
    let local_port = match direction {
        Direction::Ingress => pkt.dport,
        Direction::Egress => pkt.sport,
    };
    if tcp_or_udp && view.failsafe(pkt.proto, local_port, peer) {
        return Some(Reason::Failsafe);
    }
    if flow(direction, pkt, false).is_some_and(|f| state.expected.contains(&f)) {
        return Some(Reason::Established);
    }
    if related(state, direction, pkt) {
        return Some(Reason::Related);
    }
    w.audit.then_some(Reason::Audit)
}

/// Whether `pkt` is an ICMP error about a tracked flow: its quote is a packet the workload
/// sent (ingress: the quote's source is the local address) or received (egress: the quote's
/// destination is the local address, and the error goes to the quote's source), and conntrack expects the quote's answer (a flow the
/// workload opened) or the quote itself as an answer (a flow it let in). Conntrack expects
/// answers to echo requests only, so a quoted echo request can only have an answer expected,
/// and a quoted echo reply can only be an expected answer.
fn related(state: &State, direction: Direction, pkt: &Packet) -> bool {
    let Some(t) = own_icmp(pkt) else {
        return false;
    };
    let Some(q) = pkt.quote.filter(|_| is_error(pkt.src.is_ipv6(), t)) else {
        return false;
    };
    let Quote {
        src,
        dst,
        proto,
        sport,
        dport,
        echo,
    } = q;
    // RFC 792 / RFC 4443 2.2: an error goes back to the source of the packet it is about. The
    // workload's own errors must, or any tracked flow would carry data to anyone.
    let about_us = match direction {
        Direction::Ingress => src == pkt.dst,
        Direction::Egress => dst == pkt.src && src == pkt.dst,
    };
    if !about_us {
        return false;
    }
    // The quote travelled the other way from the error.
    let quoted = Flow {
        direction: other(direction),
        proto,
        sport,
        dport,
        src,
        dst,
    };
    let (answer_expected, expected_itself) = match echo {
        Some(Echo::Request) => (true, false),
        Some(Echo::Reply) => (false, true),
        None => (true, true),
    };
    (answer_expected && state.expected.contains(&quoted.answer()))
        || (expected_itself && state.expected.contains(&quoted))
}
