//! The decision for one packet: parse; find the local workload; later fragments follow their
//! first; neighbour discovery passes; the policy decides, or the workload's default; a drop is
//! rescued by a failsafe entry, then by connection tracking, then by audit mode. Allowed flows
//! are recorded for their replies, first fragments for their followers.

use core::ops::ControlFlow;

use boundary_common::{
    Direction, Reason, Verdict,
    maps::{
        Action, CFG_EARNED, CFG_HAS_FAILSAFE, CFG_HAS_IFACE_ENDPOINTS, CT_NOT_ASKED,
        DatapathConfig, EP_PEERS_EGRESS, EP_PEERS_INGRESS, EP_RANGES_EGRESS, EP_RANGES_INGRESS,
        EP_RULES_EGRESS, EP_RULES_INGRESS, EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint,
        EndpointKey, FAMILY_IPV4, FAMILY_IPV6, FLOW_WORDS, Fold, IDENTITY_ANY, IFINDEX_ANY, Mode,
        NEVER, NO_BUCKET, POLICY_NO_LIMIT, PORT_ANY, RULE_ALLOW, UNPROTECTED_SLOT, VC_AUDIT,
        VC_LIMITED, VC_REPLY, VC_TRACK, VerdictCacheEntry, icmp_port,
    },
    wire::{
        ICMP_HLEN, ICMP_QUOTE_L4_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        IPV4_MAX_HLEN, TCP_MAX_HLEN, is_neighbor_discovery,
    },
};

use crate::{
    cache, conntrack, delay, diag, fragments,
    maps::{CONFIG, ENDPOINTS},
    packet::{Fragment, Packet},
    parse::{self, L3},
    policy, ratelimit,
};

/// How much of an skb the TC programs pull into its linear part when the headers are not all
/// there: the transport header starts within `MAX_L4_OFFSET`; after it come at most a TCP
/// header with options (60 bytes) or an ICMP header (8) and the IPv4 header (60) and 8
/// transport bytes of the packet it quotes.
pub const HEADERS_MAX: usize = parse::MAX_L4_OFFSET + 80;
// The sums the comment above names (the ICMP one is 76 bytes) fit.
const _: () = assert!(
    HEADERS_MAX >= parse::MAX_L4_OFFSET + TCP_MAX_HLEN
        && HEADERS_MAX >= parse::MAX_L4_OFFSET + ICMP_HLEN + IPV4_MAX_HLEN + ICMP_QUOTE_L4_LEN
);

/// `rule` when no rule decided.
pub const NO_RULE: u32 = u32::MAX;

pub struct Decision {
    /// Workload slot the packet is counted under.
    pub slot: u16,
    pub reason: Reason,
    pub rule: u32,
    /// The peer's identity, 0 when the policy was not consulted.
    pub identity: u32,
    /// The rule's rate limit refused the packet (dropped as `rate_limited`, or passed as
    /// `audit`).
    pub limited: bool,
}

/// What a packet weighs on the wire: its segments and their bytes (a GSO super-packet counts
/// as the segments it stands for). Rate limits are paid in these.
#[derive(Clone, Copy)]
pub struct Wire {
    pub packets: u64,
    pub bytes: u64,
}

#[inline(always)]
fn config() -> Option<DatapathConfig> {
    CONFIG.get(0).copied()
}

#[inline(always)]
pub fn decide(
    parsed: Result<L3, Reason>,
    direction: Direction,
    pkt: &mut Packet,
    wire: Wire,
) -> Decision {
    // The config is one array entry, always there: without it nothing can be judged, and an
    // unjudged packet does not cross.
    let Some(cfg) = config() else {
        diag::impossible("no datapath config entry", direction as u8);
        return Decision {
            slot: UNPROTECTED_SLOT,
            reason: Reason::Internal,
            rule: NO_RULE,
            identity: 0,
            limited: false,
        };
    };
    match parsed {
        Ok(L3::NonIp) => Decision {
            slot: UNPROTECTED_SLOT,
            reason: if cfg.non_ip == Action::Drop as u8 {
                Reason::NonIpDrop
            } else {
                Reason::NonIpPass
            },
            rule: NO_RULE,
            identity: 0,
            limited: false,
        },
        Ok(L3::Ip) => ip(pkt, direction, &cfg, wire),
        // Malformed packets are dropped whatever the workload's mode: audit is about policy,
        // and a packet the parser refuses is not one a policy can be about. They are counted
        // under the workload when its address was readable.
        Err(reason) => Decision {
            slot: if pkt.family == 0 {
                UNPROTECTED_SLOT
            } else {
                endpoint(pkt, direction, &cfg).map_or(UNPROTECTED_SLOT, |ep| ep.slot)
            },
            reason,
            rule: NO_RULE,
            identity: 0,
            limited: false,
        },
    }
}

/// The workload that owns the local address (the destination on ingress, the source on
/// egress) on the packet's interface: a workload listed on that interface, else one on every
/// interface. The first lookup only when the policy lists interfaces at all.
#[inline(always)]
fn endpoint(pkt: &Packet, direction: Direction, cfg: &DatapathConfig) -> Option<Endpoint> {
    let local = match direction {
        Direction::Ingress => &pkt.dst,
        Direction::Egress => &pkt.src,
    };
    let mut key = EndpointKey::new(cfg.generation, pkt.family, pkt.ifindex, *local);
    if cfg.flags & CFG_HAS_IFACE_ENDPOINTS != 0 {
        // SAFETY: as below.
        if let Some(ep) = unsafe { ENDPOINTS.get(&key) } {
            return Some(*ep);
        }
    }
    key.ifindex = IFINDEX_ANY;
    // SAFETY: the 8-byte value is copied out at once; the agent never updates it in place
    // (a new generation gets new keys).
    unsafe { ENDPOINTS.get(&key) }.copied()
}

/// What the policy says of a flow: a pure function of the flow (its interface included) and
/// the live epoch, so it is what the verdict cache holds.
#[derive(Clone, Copy)]
struct Judged {
    slot: u16,
    reason: Reason,
    rule: u32,
    identity: u32,
    /// The deadline of the earned binding `identity` came from, or `NEVER`.
    expires: u64,
    /// `VC_*` bits.
    flags: u8,
    /// The bucket the rule pays into, or `NO_BUCKET`.
    bucket: u32,
}

#[inline(always)]
fn ip(pkt: &Packet, direction: Direction, cfg: &DatapathConfig, wire: Wire) -> Decision {
    let cacheable = cfg.epoch != 0
        && (pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP)
        && pkt.fragment == Fragment::None;
    // Zeros when not cacheable rather than an `Option`, which cost XDP 6 % more verified
    // instructions when measured.
    let flow = if cacheable {
        cache::flow(pkt, direction as u8)
    } else {
        [0; FLOW_WORDS]
    };
    // The peer's bind sequence, read before its identity is (see `BIND_SEQ_MAP`): a binding
    // written after this read moves it, so the verdict cached below is a miss next time.
    let bind_seq = if cfg.flags & CFG_EARNED != 0 && (cacheable || pkt.fragment != Fragment::None) {
        policy::bind_seq(match direction {
            Direction::Ingress => &pkt.src,
            Direction::Egress => &pkt.dst,
        })
    } else {
        0
    };
    // This flow's cache entry, found or just filled.
    let mut cached = if cacheable {
        cache::get(&flow, cfg.epoch, bind_seq)
    } else {
        None
    };
    let j = if let Some(entry) = cached {
        // SAFETY: this CPU's cache entry (see `cache`).
        let e = unsafe { &*entry };
        Judged {
            slot: e.slot,
            reason: Reason::from_code(e.reason)
                .unwrap_or_else(|| diag::unknown_reason("verdict cache", e.reason, e.slot)),
            rule: e.rule,
            identity: e.identity,
            expires: e.expires,
            flags: e.flags,
            // The rule's bucket in this generation: the entry's epoch is the live one, so the
            // generation is the one it was judged in.
            bucket: if e.flags & VC_LIMITED != 0 {
                ratelimit::bucket_of(cfg.generation, e.rule)
            } else {
                NO_BUCKET
            },
        }
    } else {
        let j = match judge(pkt, direction, cfg, wire, bind_seq) {
            ControlFlow::Continue(j) => j,
            ControlFlow::Break(d) => return d,
        };
        if cacheable {
            cached = cache::put(&VerdictCacheEntry {
                flow,
                epoch: cfg.epoch,
                slot: j.slot,
                reason: j.reason as u8,
                flags: j.flags,
                rule: j.rule,
                identity: j.identity,
                bind_seq,
                pad: 0,
                expires: j.expires,
                // An allow's conntrack refresh is due at once (`finish` records the flow now);
                // a drop has not asked conntrack yet.
                ct: if j.reason.verdict() == Verdict::Pass {
                    0
                } else {
                    CT_NOT_ASKED
                },
            });
        }
        j
    };
    finish(pkt, direction, &j, cached, cfg, (wire, bind_seq))
}

/// The policy's verdict, before conntrack and audit, or (`Break`) the decision for a packet
/// decided on the way (later fragments, neighbour discovery).
#[inline(always)]
fn judge(
    pkt: &Packet,
    direction: Direction,
    cfg: &DatapathConfig,
    wire: Wire,
    bind_seq: u32,
) -> ControlFlow<Decision, Judged> {
    let generation = cfg.generation;
    delay::pause();
    let Some(ep) = endpoint(pkt, direction, cfg) else {
        return ControlFlow::Continue(Judged {
            slot: UNPROTECTED_SLOT,
            reason: Reason::Unprotected,
            rule: NO_RULE,
            identity: 0,
            expires: NEVER,
            flags: 0,
            bucket: NO_BUCKET,
        });
    };
    if pkt.fragment == Fragment::Later {
        let (reason, rule) = match fragments::follow(pkt, direction, cfg.epoch, bind_seq) {
            Some(first) => (
                Reason::from_code(first.reason).unwrap_or_else(|| {
                    diag::unknown_reason("fragment table", first.reason, first.slot)
                }),
                first.rule,
            ),
            None => (audited(&ep, Reason::FragmentUnknown), NO_RULE),
        };
        // Every fragment pays its rule's limit, not the first alone: else a datagram cut in
        // 45 fragments would pay for one packet and 1/45 of its bytes.
        let mut reason = reason;
        let mut limited = false;
        if reason == Reason::PolicyAllow {
            let bucket = ratelimit::bucket_of(cfg.generation, rule);
            if bucket != NO_BUCKET && !ratelimit::admit(bucket, pkt, direction, wire) {
                limited = true;
                reason = audited(&ep, Reason::RateLimited);
            }
        }
        return ControlFlow::Break(Decision {
            slot: ep.slot,
            reason,
            rule,
            identity: 0,
            limited,
        });
    }
    // Not in a fragment: hosts ignore fragmented ND (RFC 6980), so no pass is owed to it.
    if pkt.proto == IPPROTO_ICMPV6
        && is_neighbor_discovery(pkt.icmp_type)
        && pkt.fragment == Fragment::None
    {
        return ControlFlow::Break(Decision {
            slot: ep.slot,
            reason: Reason::NeighborDiscovery,
            rule: NO_RULE,
            identity: 0,
            limited: false,
        });
    }

    let (local_port, remote) = match direction {
        Direction::Ingress => (pkt.dport, &pkt.src),
        Direction::Egress => (pkt.sport, &pkt.dst),
    };
    // ICMP types only where the parser read them: ICMP in IPv4, ICMPv6 in IPv6. Protocol 1 in
    // IPv6 (or 58 in IPv4) is some other protocol, with no type to match a rule by.
    let port = match pkt.proto {
        IPPROTO_TCP | IPPROTO_UDP => pkt.dport,
        IPPROTO_ICMP if pkt.family == FAMILY_IPV4 => icmp_port(pkt.icmp_type),
        IPPROTO_ICMPV6 if pkt.family == FAMILY_IPV6 => icmp_port(pkt.icmp_type),
        _ => PORT_ANY,
    };
    let (ranges, rules, peers, track) = match direction {
        Direction::Ingress => (
            EP_RANGES_INGRESS,
            EP_RULES_INGRESS,
            EP_PEERS_INGRESS,
            EP_TRACK_INGRESS,
        ),
        Direction::Egress => (
            EP_RANGES_EGRESS,
            EP_RULES_EGRESS,
            EP_PEERS_EGRESS,
            EP_TRACK_EGRESS,
        ),
    };
    // Lookups the compiled policy says cannot match are skipped: no rules, no identity.
    let peer = if ep.flags & peers != 0 {
        policy::identity(generation, cfg.flags, pkt.family, remote)
    } else {
        policy::Peer {
            id: IDENTITY_ANY,
            expires: NEVER,
            fold: Fold::NONE,
        }
    };
    let (identity, expires) = (peer.id, peer.expires);
    let hit = if ep.flags & rules != 0 {
        policy::lookup(
            generation,
            direction as u8,
            pkt.proto,
            ep.slot,
            (identity, &peer.fold),
            port,
            ep.flags & ranges != 0,
        )
    } else {
        None
    };
    let (mut reason, rule, rule_flags) = match hit {
        Some(v) if v.action == RULE_ALLOW => (Reason::PolicyAllow, v.rule, v.flags),
        Some(v) => (Reason::PolicyDeny, v.rule, v.flags),
        None => (default_reason(&ep, direction), NO_RULE, 0),
    };
    if reason.verdict() == Verdict::Drop
        && (pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP)
        && cfg.flags & CFG_HAS_FAILSAFE != 0
        && policy::failsafe(generation, pkt.family, pkt.proto, local_port, remote)
    {
        reason = Reason::Failsafe;
    }
    let mut flags = 0;
    // A rule the agent wrote as having no limit has no bucket to read (a cache miss at scale).
    let bucket = if reason == Reason::PolicyAllow && rule_flags & POLICY_NO_LIMIT == 0 {
        ratelimit::bucket_of(generation, rule)
    } else {
        NO_BUCKET
    };
    if bucket != NO_BUCKET {
        flags |= VC_LIMITED;
    }
    if ep.flags & track != 0 {
        flags |= VC_TRACK;
    }
    if ep.mode == Mode::Audit as u8 {
        flags |= VC_AUDIT;
    }
    ControlFlow::Continue(Judged {
        slot: ep.slot,
        reason,
        rule,
        identity,
        expires,
        flags,
        bucket,
    })
}

/// What changes under a cached verdict: a drop may be the reply of an established flow, an
/// ICMP error about a tracked flow (never cached: ICMP is not), or audited; an allow records (or, from the cache, now and then refreshes) its flow for the
/// replies; a rate-limited rule's bucket pays for every packet it admits (a packet over the
/// limit is dropped as `rate_limited`, unless a failsafe entry covers it or the workload is in
/// audit mode); a first fragment is remembered for the later ones. `cached` is the flow's
/// cache entry (found, or filled for this packet).
#[inline(always)]
fn finish(
    pkt: &Packet,
    direction: Direction,
    j: &Judged,
    cached: Option<*mut VerdictCacheEntry>,
    cfg: &DatapathConfig,
    (wire, bind_seq): (Wire, u32),
) -> Decision {
    let epoch = cfg.epoch;
    let mut reason = j.reason;
    let mut limited = false;
    if reason == Reason::Unprotected {
        return Decision {
            slot: UNPROTECTED_SLOT,
            reason,
            rule: NO_RULE,
            identity: 0,
            limited: false,
        };
    }
    if reason.verdict() == Verdict::Drop {
        if reply(pkt, direction, cached) {
            reason = Reason::Established;
        } else if pkt.quoted && conntrack::related(pkt, direction) {
            reason = Reason::Related;
        } else if j.flags & VC_AUDIT != 0 {
            reason = Reason::Audit;
        }
    } else if j.bucket != NO_BUCKET && !ratelimit::admit(j.bucket, pkt, direction, wire) {
        limited = true;
        reason = if failsafe(pkt, direction, cfg) {
            Reason::Failsafe
        } else if j.flags & VC_AUDIT != 0 {
            Reason::Audit
        } else {
            Reason::RateLimited
        };
    }
    // Only what the policy itself passed, within its limit, opens a flow: not a drop rescued
    // (established, related, audit) nor a packet over its limit.
    if j.reason.verdict() == Verdict::Pass
        && !limited
        && j.flags & VC_TRACK != 0
        && cached.is_none_or(cache::conntrack_due)
    {
        conntrack::record(pkt, direction, j.slot);
    }
    if pkt.fragment == Fragment::First {
        fragments::remember(pkt, direction, (j.slot, reason, j.rule), (epoch, bind_seq));
    }
    Decision {
        slot: j.slot,
        reason,
        rule: j.rule,
        identity: j.identity,
        limited,
    }
}

/// Whether a failsafe entry covers the packet (TCP and UDP only, as in `judge`).
#[inline(always)]
fn failsafe(pkt: &Packet, direction: Direction, cfg: &DatapathConfig) -> bool {
    let (local_port, remote) = match direction {
        Direction::Ingress => (pkt.dport, &pkt.src),
        Direction::Egress => (pkt.sport, &pkt.dst),
    };
    (pkt.proto == IPPROTO_TCP || pkt.proto == IPPROTO_UDP)
        && cfg.flags & CFG_HAS_FAILSAFE != 0
        && policy::failsafe(cfg.generation, pkt.family, pkt.proto, local_port, remote)
}

/// Whether a packet the policy drops is the reply of a recorded flow. The cache entry keeps
/// conntrack's last answer: a "no" with the conntrack insert count it was given at, standing
/// until a flow is recorded anywhere (which saves a denied flood the lookup); a "yes" for
/// `CT_REFRESH_JIFFIES` (which saves the replies of a connection the workload opened).
#[inline(always)]
fn reply(pkt: &Packet, direction: Direction, cached: Option<*mut VerdictCacheEntry>) -> bool {
    let Some(entry) = cached else {
        return conntrack::established(pkt, direction);
    };
    // SAFETY: this CPU's cache entry (see `cache`).
    let e = unsafe { &mut *entry };
    if e.flags & VC_REPLY != 0 {
        if cache::now() < e.ct {
            return true;
        }
        e.flags &= !VC_REPLY;
        e.ct = CT_NOT_ASKED;
    }
    // Read before the lookup (see `conntrack::record`).
    let inserts = conntrack::inserts(direction);
    if e.ct == inserts {
        return false;
    }
    if conntrack::established(pkt, direction) {
        e.flags |= VC_REPLY;
        e.ct = cache::refresh_due();
        return true;
    }
    e.ct = inserts;
    false
}

#[inline(always)]
fn default_reason(ep: &Endpoint, direction: Direction) -> Reason {
    let action = match direction {
        Direction::Ingress => ep.ingress_default,
        Direction::Egress => ep.egress_default,
    };
    if action == Action::Drop as u8 {
        Reason::DefaultDeny
    } else {
        Reason::DefaultAllow
    }
}

/// A would-be drop in an audit-mode workload passes as `audit`.
#[inline(always)]
fn audited(ep: &Endpoint, reason: Reason) -> Reason {
    if ep.mode == Mode::Audit as u8 {
        Reason::Audit
    } else {
        reason
    }
}
