//! Explaining a verdict (`boundary-agent trace`): a flow's first packet, run through the
//! reference evaluator against compiled tables or the live maps, with names for what decided.
//! Conntrack and fragment state are not consulted. A rate limit on the deciding rule is
//! described in `limit.rs`.

pub mod limit;

use std::net::IpAddr;

use boundary_common::{
    Direction, Verdict,
    maps::{IDENTITY_ANY, IDENTITY_WORLD, UNPROTECTED_NAME},
    wire,
};
use serde::Serialize;

use crate::{
    policy::{Tables, spiffe::SpiffeId},
    reference::{self, Fragment, Lookup, Packet, State},
};

/// What decided a packet, in words.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    pub verdict: &'static str,
    pub reason: &'static str,
    /// The interface it crosses, when one was named.
    pub interface: Option<String>,
    pub workload: String,
    pub identity: Option<String>,
    pub rule: Option<String>,
    /// The deciding rule's id.
    pub rule_id: Option<u32>,
    /// The deciding rule's rate limit, if it has one (with its bucket now, from the live maps).
    pub limit: Option<limit::Limit>,
}

/// A flow's first packet: unfragmented, with ports for TCP and UDP, a type for ICMP.
pub fn first_packet(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    (sport, dport): (u16, u16),
    icmp_type: u8,
) -> Packet {
    let mut pkt = Packet::new(src, dst, proto);
    pkt.fragment = Fragment::None;
    match proto {
        wire::IPPROTO_TCP | wire::IPPROTO_UDP => {
            pkt.sport = sport;
            pkt.dport = dport;
        }
        wire::IPPROTO_ICMP | wire::IPPROTO_ICMPV6 => pkt.icmp_type = Some(icmp_type),
        _ => {}
    }
    pkt
}

/// An address of the wanted family (IPv4 or not) bound to `id` in `tables`.
pub fn bound_address(tables: &Tables, id: &SpiffeId, ipv4: bool) -> Option<IpAddr> {
    let wanted = id.to_string();
    tables
        .identities
        .iter()
        .find(|(a, i)| {
            a.is_ipv4() == ipv4
                && tables
                    .identity_info
                    .get(i)
                    .is_some_and(|info| info.spiffe.contains(&wanted))
        })
        .map(|(a, _)| *a)
}

/// The verdict for `pkt`, a flow's first packet crossing the host in `direction` on the
/// interface numbered `ifindex`, with the names `names` knows for its workload, identity and
/// rule.
pub fn explain(
    l: &impl Lookup,
    names: &Tables,
    direction: Direction,
    ifindex: u32,
    pkt: &Packet,
) -> Answer {
    let mut state = State::default();
    let out = reference::decide(l, &mut state, direction, ifindex, pkt);
    let workload = names.names.get(&out.slot).cloned().unwrap_or_else(|| {
        if out.slot == 0 {
            UNPROTECTED_NAME.into()
        } else {
            format!("slot {}", out.slot)
        }
    });
    let identity = out.identity.map(|id| {
        let what = match id {
            IDENTITY_WORLD => "world".to_owned(),
            IDENTITY_ANY => "any".to_owned(),
            _ => names.identity_info.get(&id).map_or_else(String::new, |i| {
                let mut parts: Vec<String> = i.spiffe.iter().cloned().collect();
                parts.extend(i.cidrs.iter().map(ToString::to_string));
                parts.join(", ")
            }),
        };
        if what.is_empty() {
            format!("{id}")
        } else {
            format!("{id} ({what})")
        }
    });
    let limit = out.rule.and_then(|r| {
        names
            .rules
            .get(&r)?
            .limit
            .as_ref()
            .map(limit::Limit::configured)
    });
    let rule = out.rule.map(|r| match names.rules.get(&r) {
        Some(info) => format!("#{r} {info}"),
        None => format!("#{r}"),
    });
    Answer {
        verdict: match out.reason.verdict() {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        },
        reason: out.reason.label(),
        interface: None,
        workload,
        identity,
        rule,
        rule_id: out.rule,
        limit,
    }
}
