//! What `trace` says of a rate limit on the deciding rule: the limit as configured and, from
//! the live maps, its bucket now (the fill of the shared bucket and the credit CPUs hold) and
//! what that means for the flow's next packet.
//!
//! The reference evaluator's buckets start full (it cannot know what the datapath's hold, which
//! changes with every packet): this reads the live state and applies the arithmetic of
//! `boundary_common::bucket`, the way a CPU running the datapath would for one more packet. A
//! limit kept per source shows the traced source's own bucket (or that it has none yet: its
//! first packet makes one, full) and the rule-wide ceiling every source also pays into.

use std::net::IpAddr;

use boundary_common::{
    Direction,
    bucket::{self, Dimension, INTERVAL_SHIFT},
    maps::{BUCKET_INDEX_MASK, BUCKET_PER_PEER, BucketState, NO_BUCKET, PeerBucket},
};
use serde::Serialize;

use crate::{
    datapath::{
        Maps,
        maps::{MapsError, now_ticks},
    },
    policy::ratelimit::{MAX_SOURCES_DEFAULT, Per, Rate, RateLimit},
};

/// The size `trace` assumes for the next packet where a limit counts bytes (a full-size
/// Ethernet frame's IP packet).
pub const NEXT_PACKET_BYTES: u64 = 1_500;

/// A rate limit on the packet's rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// As configured, e.g. `200 pkt/s burst 50 per rule`.
    pub configured: String,
    /// Its bucket now (from the live maps only; a limit kept per rule).
    pub bucket: Option<Fill>,
    /// The traced peer's own bucket now (from the live maps only; a limit kept per source or
    /// destination).
    pub peer: Option<PeerFill>,
    /// The rule-wide ceiling every peer's packets also pay into, now (from the live maps only;
    /// a limit kept per peer that has one).
    pub ceiling: Option<Fill>,
}

impl Limit {
    /// A limit from a policy file: no bucket to read.
    pub fn configured(limit: &RateLimit) -> Self {
        Self {
            configured: limit.to_string(),
            bucket: None,
            peer: None,
            ceiling: None,
        }
    }
}

/// A peer's own bucket under a limit kept per peer, as read from the live maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerFill {
    /// `source` (ingress) or `destination` (egress).
    pub role: &'static str,
    /// The peer the bucket is kept for: an address, or an IPv6 peer's /64.
    pub peer: String,
    /// Whether the maps keep a bucket for it. Not (never seen, or evicted): its next packet
    /// makes one, full, which is what `packets` and `bytes` then show.
    pub kept: bool,
    pub packets: Option<Level>,
    pub bytes: Option<Level>,
    /// The flow's next packet (of [`NEXT_PACKET_BYTES`] where bytes count): `pass`, `over the
    /// limit` (the peer's own bucket cannot pay), `over the ceiling` (its own could, the
    /// rule-wide ceiling cannot, on any CPU), or `pass on a CPU holding credit` (of the
    /// ceiling). Over either is dropped as `rate_limited` (passed as `audit` in audit mode).
    pub next: &'static str,
}

/// A bucket as read from the live maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fill {
    pub packets: Option<Level>,
    pub bytes: Option<Level>,
    /// The flow's next packet (of [`NEXT_PACKET_BYTES`] where bytes count), on every CPU:
    /// `pass`, `over the limit` (dropped as `rate_limited`; passed as `audit` in audit mode),
    /// or, when some CPUs hold enough credit and the shared bucket cannot pay, `pass on a CPU
    /// holding credit`.
    pub next: &'static str,
    /// CPUs on which the next packet would pass, of `cpus`.
    pub cpus_passing: usize,
    pub cpus: usize,
}

/// One dimension (packets or bytes) of a bucket, in whole units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Level {
    /// What the shared bucket holds now (its burst when full).
    pub available: u64,
    pub burst: u64,
    /// Taken from the shared bucket by CPUs in batches and not spent yet, summed (0 for a
    /// peer's own bucket, which is paid straight into).
    pub held_by_cpus: u64,
}

/// The limit on `rule` in the live `generation`, and its bucket now; `None` when the rule has
/// no limit. A limit kept per peer shows the bucket of the packet's peer in `direction` (its
/// source on ingress, its destination on egress) and the rule's ceiling.
pub fn live(
    maps: &Maps,
    generation: u8,
    rule: u32,
    direction: Direction,
    peer: IpAddr,
) -> Result<Option<Limit>, MapsError> {
    let Some(value) = maps.live_rule_bucket(generation, rule) else {
        return Ok(None);
    };
    let now = now_ticks()?;
    if value & BUCKET_PER_PEER == 0 {
        let (state, credits) = maps.bucket(value & BUCKET_INDEX_MASK)?;
        return Ok(Some(from_bucket(&state, &credits, now)));
    }
    let Some(mut b) = maps.live_bucket(generation, rule) else {
        return Ok(None);
    };
    // The maps do not say which direction's peer a bucket is kept per; the packet does.
    if direction == Direction::Egress {
        b.limit.per = Per::Destination;
    }
    let index = value & BUCKET_INDEX_MASK;
    let (state, _) = maps.bucket(index)?;
    let own = maps.peer_bucket(index, peer)?;
    let ceiling = if state.ceiling == NO_BUCKET {
        None
    } else {
        let (c, credits) = maps.bucket(state.ceiling)?;
        from_bucket(&c, &credits, now).bucket
    };
    Ok(Some(Limit {
        configured: b.limit.to_string(),
        bucket: None,
        peer: Some(peer_fill(
            &state,
            own,
            ceiling.as_ref(),
            direction,
            peer,
            now,
        )),
        ceiling,
    }))
}

/// A peer's own bucket at `now` (ticks) under per-peer terms `state`: `own` as the maps keep
/// it (`None`: not yet, so full), and what its next packet meets given the `ceiling`'s fill.
pub fn peer_fill(
    state: &BucketState,
    own: Option<PeerBucket>,
    ceiling: Option<&Fill>,
    direction: Direction,
    peer: IpAddr,
    now: u64,
) -> PeerFill {
    // A new peer's bucket is made full (`tat` now), as the datapath makes it.
    let tat = own.map_or([now, now], |b| b.tat);
    let level = |i: usize| {
        (state.depth[i] != 0).then(|| Level {
            available: units(
                bucket::available(tat[i], now, state.depth[i]),
                state.interval[i],
            ),
            burst: state.burst[i],
            held_by_cpus: 0,
        })
    };
    // Paid exactly, both dimensions or neither (`bucket::pay_both`).
    let own_passes = [(0, 1), (1, NEXT_PACKET_BYTES)].into_iter().all(|(i, n)| {
        state.depth[i] == 0
            || bucket::take(
                tat[i],
                now,
                bucket::cost(n, state.interval[i], state.max_units[i]),
                state.depth[i],
            )
            .is_some()
    });
    let next = match (own_passes, ceiling.map(|c| c.next)) {
        (false, _) => "over the limit",
        (true, None | Some("pass")) => "pass",
        (true, Some("over the limit")) => "over the ceiling",
        (true, Some(_)) => "pass on a CPU holding credit",
    };
    let role = match direction {
        Direction::Ingress => "source",
        Direction::Egress => "destination",
    };
    let peer = match peer {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let prefix = u128::from(a) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
    };
    PeerFill {
        role,
        peer,
        kept: own.is_some(),
        packets: level(0),
        bytes: level(1),
        next,
    }
}

/// A bucket's limit and fill at `now` (ticks), given the shared state and each CPU's credit.
pub fn from_bucket(state: &BucketState, credits: &[bucket::Credit], now: u64) -> Limit {
    let rate = |i: usize| {
        (state.rate[i] != 0).then_some(Rate {
            per_second: state.rate[i],
            burst: state.burst[i],
        })
    };
    // Buckets of `BND_RULE_BUCKET` are a rule's own: per rule.
    let configured = RateLimit {
        packets: rate(0),
        bytes: rate(1),
        per: Per::Rule,
        max_sources: MAX_SOURCES_DEFAULT,
        ceiling: None,
    }
    .to_string();
    let level = |i: usize, dim: fn(&bucket::Credit) -> &Dimension| {
        let r = rate(i)?;
        let interval = bucket::interval(r.per_second);
        let available = bucket::available(state.tat[i], now, state.depth[i]);
        Some(Level {
            available: units(available, interval),
            burst: r.burst,
            held_by_cpus: credits.iter().map(|c| units(dim(c).credit, interval)).sum(),
        })
    };
    let packets = level(0, |c| &c.packets);
    let bytes = level(1, |c| &c.bytes);
    // A CPU passes the packet when, in every dimension limited, its credit covers the cost or
    // the shared bucket can give what is missing (`Dimension::cover`).
    let passes = |c: &bucket::Credit| {
        [(0, &c.packets, 1), (1, &c.bytes, NEXT_PACKET_BYTES)]
            .into_iter()
            .all(|(i, d, n)| {
                let cost = d.cost(n);
                d.credit >= cost
                    || bucket::take(state.tat[i], now, cost - d.credit, state.depth[i]).is_some()
            })
    };
    let cpus_passing = credits.iter().filter(|c| passes(c)).count();
    let next = if cpus_passing == credits.len() {
        "pass"
    } else if cpus_passing == 0 {
        "over the limit"
    } else {
        "pass on a CPU holding credit"
    };
    Limit {
        configured,
        bucket: Some(Fill {
            packets,
            bytes,
            next,
            cpus_passing,
            cpus: credits.len(),
        }),
        peer: None,
        ceiling: None,
    }
}

/// Whole units that `ticks` pay for at `interval` (the most `n` whose `bucket::cost` fits).
fn units(ticks: u64, interval: u64) -> u64 {
    let n = ((u128::from(ticks) + 1) << INTERVAL_SHIFT).saturating_sub(1) / u128::from(interval);
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl std::fmt::Display for Fill {
    /// `holds 12 of 50 packets now (CPUs hold 3 more); the next packet would pass`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut held = Vec::new();
        let mut cpus = Vec::new();
        for (level, unit) in [(self.packets, "packets"), (self.bytes, "bytes")] {
            if let Some(l) = level {
                held.push(format!("{} of {} {unit}", l.available, l.burst));
                cpus.push(format!("{} {unit}", l.held_by_cpus));
            }
        }
        let size = if self.bytes.is_some() {
            format!(" ({NEXT_PACKET_BYTES} bytes)")
        } else {
            String::new()
        };
        write!(
            f,
            "holds {} now (CPUs hold {} more); the next packet{size} would ",
            held.join(" and "),
            cpus.join(" and ")
        )?;
        match self.next {
            "pass" => f.write_str("pass"),
            "over the limit" => f.write_str("be over the limit (rate_limited)"),
            _ => write!(
                f,
                "pass only on a CPU holding credit ({} of {})",
                self.cpus_passing, self.cpus
            ),
        }
    }
}

impl std::fmt::Display for PeerFill {
    /// `source 10.1.2.3: holds 2 of 5 packets now; the next packet would pass`, or, with no
    /// bucket yet, `source 10.1.2.3: no bucket yet (its first packet makes one, full: 5 of 5
    /// packets); the next packet would pass`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<String> = [(self.packets, "packets"), (self.bytes, "bytes")]
            .into_iter()
            .filter_map(|(level, unit)| {
                Some(format!("{} of {} {unit}", level?.available, level?.burst))
            })
            .collect();
        let held = held.join(" and ");
        write!(f, "{} {}: ", self.role, self.peer)?;
        if self.kept {
            write!(f, "holds {held} now")?;
        } else {
            write!(
                f,
                "no bucket yet (its first packet makes one, full: {held})"
            )?;
        }
        let size = if self.bytes.is_some() {
            format!(" ({NEXT_PACKET_BYTES} bytes)")
        } else {
            String::new()
        };
        write!(f, "; the next packet{size} would ")?;
        match self.next {
            "pass" => f.write_str("pass"),
            "over the limit" => f.write_str("be over the limit (rate_limited)"),
            "over the ceiling" => f.write_str("be over the rule's ceiling (rate_limited)"),
            _ => f.write_str("pass only on a CPU holding credit in the ceiling"),
        }
    }
}

#[cfg(test)]
mod tests {
    use boundary_common::bucket::{Credit, depth, ticks};

    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// A bucket of `rate` packets a second, `burst` deep, full at `at` (ns), and `cpus` CPUs'
    /// credits, none held.
    fn packets(rate: u64, burst: u64, at: u64, cpus: usize) -> (BucketState, Vec<Credit>) {
        let d = depth(rate, burst);
        let state = BucketState {
            tat: [ticks(at), ticks(at)],
            depth: [d, 0],
            rate: [rate, 0],
            burst: [burst, 0],
            ..BucketState::default()
        };
        let credit = Credit {
            packets: Dimension::new(rate, d),
            bytes: Dimension::default(),
        };
        (state, vec![credit; cpus])
    }

    fn fill(l: &Limit) -> &Fill {
        l.bucket.as_ref().expect("a bucket")
    }

    #[test]
    fn a_full_bucket_holds_its_burst_and_passes_the_next_packet() {
        let (state, credits) = packets(200, 50, SEC, 2);
        let l = from_bucket(&state, &credits, ticks(5 * SEC));
        assert_eq!(l.configured, "200 pkt/s burst 50 per rule");
        assert_eq!(
            fill(&l).to_string(),
            "holds 50 of 50 packets now (CPUs hold 0 packets more); the next packet would pass"
        );
    }

    #[test]
    fn a_drained_bucket_refills_at_the_rate_and_credit_held_counts() {
        let (mut state, mut credits) = packets(200, 50, SEC, 2);
        // Drained at 1 s: 50 packets of 5 ms each ahead of now; CPU 1 holds 3 packets' worth.
        let per_packet = depth(200, 1);
        state.tat[0] = ticks(SEC) + depth(200, 50);
        credits[1].packets.credit = 3 * per_packet;
        let l = from_bucket(&state, &credits, ticks(SEC));
        let f = fill(&l);
        assert_eq!(
            f.packets.map(|p| (p.available, p.held_by_cpus)),
            Some((0, 3))
        );
        assert_eq!(
            (f.next, f.cpus_passing, f.cpus),
            ("pass on a CPU holding credit", 1, 2)
        );
        assert_eq!(
            f.to_string(),
            "holds 0 of 50 packets now (CPUs hold 3 packets more); the next packet would pass only on a CPU holding credit (1 of 2)"
        );
        // 100 ms later, 20 packets have come back.
        let l = from_bucket(&state, &credits, ticks(SEC + SEC / 10));
        assert_eq!(fill(&l).packets.map(|p| p.available), Some(20));
        assert_eq!(fill(&l).next, "pass");
        // With no credit anywhere, the next packet is over the limit.
        credits[1].packets.credit = 0;
        let l = from_bucket(&state, &credits, ticks(SEC));
        assert!(
            fill(&l)
                .to_string()
                .ends_with("would be over the limit (rate_limited)"),
            "{}",
            fill(&l)
        );
    }

    #[test]
    fn a_byte_limit_is_shown_in_bytes_and_judged_for_a_full_size_packet() {
        let rate = 1_000_000;
        let d = depth(rate, 10_000);
        let state = BucketState {
            // 9,000 bytes' worth ahead: 1,000 bytes left, less than one full-size packet.
            tat: [0, ticks(SEC) + depth(rate, 9_000)],
            depth: [0, d],
            rate: [0, rate],
            burst: [0, 10_000],
            ..BucketState::default()
        };
        let credits = vec![
            Credit {
                packets: Dimension::default(),
                bytes: Dimension::new(rate, d),
            };
            2
        ];
        let l = from_bucket(&state, &credits, ticks(SEC));
        assert_eq!(l.configured, "1000000 B/s burst 10000 B per rule");
        assert_eq!(
            fill(&l).to_string(),
            "holds 1000 of 10000 bytes now (CPUs hold 0 bytes more); the next packet (1500 bytes) would be over the limit (rate_limited)"
        );
    }

    #[test]
    fn trace_from_a_policy_file_shows_the_deciding_rules_limit_only() {
        let p = crate::policy::Policy::from_str(
            "p.yaml",
            "apiVersion: boundary.dev/v1
workloads:
  - name: web
    addresses: [10.0.0.1]
    ingress:
      - { name: dns, from: { cidr: 10.0.0.0/8 }, ports: [\"53/udp\"], rateLimit: { packetsPerSecond: 200, burst: 50 } }
      - { name: ssh, from: { cidr: 10.0.0.0/8 }, ports: [\"22/tcp\"] }
",
        )
        .expect("valid");
        let t = crate::policy::compile(&p, &crate::policy::SlotTable::new(), 16).expect("compiles");
        let ask = |proto, port| {
            let pkt = crate::explain::first_packet(
                "10.1.1.1".parse().expect("addr"),
                "10.0.0.1".parse().expect("addr"),
                proto,
                (40_000, port),
                8,
            );
            crate::explain::explain(
                &t,
                &t,
                Direction::Ingress,
                crate::policy::STAND_IN_UNLISTED,
                &pkt,
            )
        };
        let a = ask(boundary_common::wire::IPPROTO_UDP, 53);
        assert_eq!(a.reason, "policy_allow");
        assert_eq!(
            a.limit,
            Some(Limit {
                configured: "200 pkt/s burst 50 per rule".into(),
                bucket: None,
                peer: None,
                ceiling: None,
            })
        );
        assert_eq!(ask(boundary_common::wire::IPPROTO_TCP, 22).limit, None);
        assert_eq!(ask(boundary_common::wire::IPPROTO_TCP, 23).limit, None);
    }

    /// Per-peer terms of `rate` packets a second, `burst` deep (and `bytes` per second, a
    /// second deep, when not 0).
    fn per_peer(rate: u64, burst: u64, bytes: u64) -> BucketState {
        let mut s = BucketState::default();
        for (i, rate, burst) in [(0, rate, burst), (1, bytes, bytes)] {
            if rate != 0 {
                s.depth[i] = depth(rate, burst);
                s.rate[i] = rate;
                s.burst[i] = burst;
                s.interval[i] = bucket::interval(rate);
                s.max_units[i] = bucket::max_units(s.interval[i]);
            }
        }
        s
    }

    #[test]
    fn a_peer_never_seen_would_start_full_and_a_drained_one_is_over_its_limit() {
        let state = per_peer(1, 5, 0);
        let now = ticks(100 * SEC);
        let src: IpAddr = "10.9.0.1".parse().expect("addr");
        let fresh = peer_fill(&state, None, None, Direction::Ingress, src, now);
        assert!(!fresh.kept);
        assert_eq!(fresh.packets.map(|p| (p.available, p.burst)), Some((5, 5)));
        assert_eq!(
            fresh.to_string(),
            "source 10.9.0.1: no bucket yet (its first packet makes one, full: 5 of 5 packets); the next packet would pass"
        );
        // Drained (its tat a whole burst ahead of now): nothing left, over its limit.
        let drained = PeerBucket {
            tat: [now + state.depth[0], 0],
        };
        let f = peer_fill(&state, Some(drained), None, Direction::Ingress, src, now);
        assert!(f.kept);
        assert_eq!(f.packets.map(|p| p.available), Some(0));
        assert_eq!(
            f.to_string(),
            "source 10.9.0.1: holds 0 of 5 packets now; the next packet would be over the limit (rate_limited)"
        );
        // Two seconds later, two packets have come back.
        let f = peer_fill(
            &state,
            Some(drained),
            None,
            Direction::Ingress,
            src,
            now + ticks(2 * SEC),
        );
        assert_eq!((f.packets.map(|p| p.available), f.next), (Some(2), "pass"));
    }

    #[test]
    fn a_spent_ceiling_refuses_a_peer_with_room_and_egress_peers_are_destinations() {
        let state = per_peer(10, 10, 0);
        let (ceiling, mut credits) = packets(100, 50, SEC, 2);
        let now = ticks(SEC);
        // The ceiling drained at 1 s, no CPU holding credit.
        let mut spent = ceiling;
        spent.tat[0] = now + depth(100, 50);
        let c = from_bucket(&spent, &credits, now).bucket.expect("fill");
        let dst: IpAddr = "fd00:9::1234".parse().expect("addr");
        let f = peer_fill(&state, None, Some(&c), Direction::Egress, dst, now);
        assert_eq!(f.next, "over the ceiling");
        assert_eq!(
            f.to_string(),
            "destination fd00:9::/64: no bucket yet (its first packet makes one, full: 10 of 10 packets); the next packet would be over the rule's ceiling (rate_limited)"
        );
        // One CPU holds credit in the ceiling: it alone would pass the packet.
        credits[0].packets.credit = depth(100, 1);
        let c = from_bucket(&spent, &credits, now).bucket.expect("fill");
        let f = peer_fill(&state, None, Some(&c), Direction::Egress, dst, now);
        assert_eq!(f.next, "pass on a CPU holding credit");
        // A full ceiling passes it.
        let c = from_bucket(&ceiling, &credits, now).bucket.expect("fill");
        let f = peer_fill(&state, None, Some(&c), Direction::Egress, dst, now);
        assert_eq!(f.next, "pass");
    }

    #[test]
    fn a_peers_byte_limit_is_judged_for_a_full_size_packet() {
        let state = per_peer(1_000, 1_000, 10_000);
        let now = ticks(SEC);
        // 9,000 bytes ahead: 1,000 left, less than a full-size packet.
        let own = PeerBucket {
            tat: [now, now + depth(10_000, 9_000)],
        };
        let src: IpAddr = "10.9.0.2".parse().expect("addr");
        let f = peer_fill(&state, Some(own), None, Direction::Ingress, src, now);
        assert_eq!(
            f.to_string(),
            "source 10.9.0.2: holds 1000 of 1000 packets and 1000 of 10000 bytes now; the next packet (1500 bytes) would be over the limit (rate_limited)"
        );
    }

    #[test]
    fn whole_units_are_exact_at_the_edges() {
        for rate in [1, 7, 200, 1_000_000, 1_000_000_000, bucket::RATE_MAX] {
            let i = bucket::interval(rate);
            for burst in [1, 3, 50, 10_000] {
                assert_eq!(
                    units(depth(rate, burst), i),
                    burst,
                    "rate {rate} burst {burst}"
                );
            }
        }
        assert_eq!(units(0, bucket::interval(200)), 0);
    }
}
