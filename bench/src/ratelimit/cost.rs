//! What a rule's bucket adds per packet, with both CPUs paying into it at once.
//!
//! Rules of one workload, alike but for their limit ([`super::POLICY`]); every limited one
//! is far above what test runs offer, so none runs dry and every packet takes the allow path
//! (checked after the runs from each rule's `rate_limited` count):
//!
//! - `open`: no limit, the baseline;
//! - `contended`: 10^8 packets/s, a burst of 40. A CPU's credit batch is the smaller of 1 ms
//!   of the rate and an eighth of the burst (`boundary_common::bucket::Dimension::new`): here 5
//!   packets, what a rule of 5,000 packets/s (burst 500) gets. So each CPU pays 5 packets in 6
//!   from its credit and the sixth from the shared word (a clock read and a compare-and-swap,
//!   both CPUs on the one word): the design's contended path at the rate it has with a
//!   realistic rule, the row the issue's <= 25 ns target is judged on;
//! - `limited`: 10^9 packets/s, a burst of 10^9: a batch of 1 ms = 10^6 packets, so within a
//!   run each CPU touches the shared word about once: the per-CPU credit path alone;
//! - `cas`: the same limit with every CPU's credit batch rewritten to 0 after install through
//!   a second handle on `BND_CREDITS`, so that every packet pays the shared word with a
//!   compare-and-swap: the "CAS bucket" of the issue. A rule gets this path by itself
//!   itself when 1 ms of its rate or an eighth of its burst is under two packets (below
//!   2,000/s, or a burst under 16), so a fast rule with a small burst pays it on every packet;
//! - `source`: `per: source`, 10^8 packets/s per source, a burst of 10^6: every packet reads
//!   the clock and compare-and-swaps its source's entry of the rule's LRU map (no credit);
//!   hot, both CPUs send the same source; a first packet is a new source (an LRU insert);
//! - `over`: 1 packet/s, a burst of 1: empty, every packet takes the over-limit path,
//!   `rate_limited`.
//!
//! Every figure is the mean of two threads pinned to CPUs 0 and 1, released together, each
//! running the same frame through the XDP program with `BPF_PROG_TEST_RUN`:
//!
//! - **hot**: one call of `repeat` runs per CPU (a cached flow: both CPUs' verdict caches
//!   answer it, and both pay into the bucket on every run, at the same time);
//! - **first packet**: `calls` single-run calls per CPU, each with a new random source in
//!   10.0.0.0/8 and source port (2^40 flows: a cache miss, the full lookup), as the
//!   per-packet step's first packets. Between two calls each CPU spends a syscall (about a
//!   microsecond), so the two CPUs meet on the shared word far less often than hot.
//!
//! Rounds interleave the empty program and the rules (hot: `runs` rounds, one call each;
//! first packet: 3 x `runs` rounds, each taking `calls` per program in 16 chunks, the programs
//! in turn); a rule's added cost is the median over rounds of (rule - `open`) in the same
//! round, ± half the range of those differences.

use std::net::Ipv4Addr;

use anyhow::{Context as _, ensure};
use aya::maps::{Map, MapData, PerCpuArray, PerCpuValues};
use boundary_common::{
    Direction, Reason,
    maps::{BucketCredit, CREDITS_MAP},
};
use boundary_tests::packets::{self, ETH_LEN, IPV4_LEN, L4};

use super::{
    Lab, PORT_CAS, PORT_CONTENDED, PORT_LIMITED, PORT_OPEN, PORT_OVER, PORT_SOURCE, on_both_cpus,
};
use crate::{
    Plan,
    cache::maps_by_name,
    paths::{Expect, LOCAL4, SplitMix},
    per_packet::Floors,
    progress,
    results::{LimitDelta, LimitRow, RateLimits, Value},
    sys::{XDP_DROP, XDP_PASS},
    testrun::{Samples, Target},
};

/// First-packet rounds per hot round, and the chunks each round's calls are taken in.
pub const FIRST_ROUNDS: usize = 3;
pub const FIRST_CHUNKS: usize = 16;

/// Ticks a packet costs at 10^8 packets/s (the contended rule) and at 10^9 (the credit-only
/// one), and the contended rule's batch in packets: an eighth of its burst of 40.
const CONTENDED_PACKET_TICKS: u64 = 10 << boundary_common::bucket::TICK_SHIFT;
const LIMITED_PACKET_TICKS: u64 = 1 << boundary_common::bucket::TICK_SHIFT;
const CONTENDED_BATCH: u64 = 5;
/// At most one packet in this many of an allowed rule may be refused (at most 0.01 ns of drop
/// path in the mean): the contended rule is 400 ns deep (a burst of 40 at 10^8/s, for its
/// batch of 5), and a CPU held up between its clock read and the shared word for longer than
/// that (an interrupt, a preemption: test runs are preemptible, and this machine is shared;
/// the hypervisor taking the vCPU) finds the other CPU's draws further ahead of its stale clock
/// than the bucket is deep, and is refused. A rule that paces real traffic is milliseconds deep
/// or more; the other limited rules here are 10 ms deep or more.
const REFUSED_MAX: u64 = 10_000;

const SRC_OFFSET: usize = ETH_LEN + 12;
const SPORT_OFFSET: usize = ETH_LEN + IPV4_LEN;

/// A 64-byte UDP frame from 10.1.2.3 to the workload's `port`.
pub fn frame(port: u16) -> Vec<u8> {
    packets::v4(
        Ipv4Addr::new(10, 1, 2, 3),
        LOCAL4,
        L4::Udp {
            sport: 40_000,
            dport: port,
        },
        &[0; 22],
    )
}

struct Rule {
    config: &'static str,
    name: &'static str,
    port: u16,
    expect: Expect,
}

const RULES: [Rule; 6] = [
    Rule {
        config: "no limit",
        name: "open",
        port: PORT_OPEN,
        expect: Expect {
            action: XDP_PASS,
            reason: Reason::PolicyAllow,
        },
    },
    Rule {
        config: "bucket, contended (10^8/s, burst 40: batch 5)",
        name: "contended",
        port: PORT_CONTENDED,
        expect: Expect {
            action: XDP_PASS,
            reason: Reason::PolicyAllow,
        },
    },
    Rule {
        config: "bucket, credit only (10^9/s, burst 10^9)",
        name: "limited",
        port: PORT_LIMITED,
        expect: Expect {
            action: XDP_PASS,
            reason: Reason::PolicyAllow,
        },
    },
    Rule {
        config: "CAS bucket (batch 0: a CAS every packet)",
        name: "cas",
        port: PORT_CAS,
        expect: Expect {
            action: XDP_PASS,
            reason: Reason::PolicyAllow,
        },
    },
    Rule {
        config: "per source (10^8/s each, burst 10^6)",
        name: "source",
        port: PORT_SOURCE,
        expect: Expect {
            action: XDP_PASS,
            reason: Reason::PolicyAllow,
        },
    },
    Rule {
        config: "over the limit (1/s, burst 1: empty)",
        name: "over",
        port: PORT_OVER,
        expect: Expect {
            action: XDP_DROP,
            reason: Reason::RateLimited,
        },
    },
];

/// The index of the rule called `name` in [`RULES`].
fn at(name: &str) -> usize {
    RULES
        .iter()
        .position(|r| r.name == name)
        .expect("a rule of RULES")
}

/// Sets the credit batch of every CPU in bucket `index` to 0.
fn unbatch(lab: &Lab, index: u32) -> anyhow::Result<()> {
    let data: MapData = maps_by_name(&lab.dp.map_ids()?, CREDITS_MAP)?;
    let mut credits: PerCpuArray<MapData, BucketCredit> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).context("open BND_CREDITS")?;
    let now = credits.get(&index, 0).context("read the credits")?;
    let cas: Vec<BucketCredit> = now
        .iter()
        .map(|c| {
            let mut c = *c;
            c.packets.batch = 0;
            c
        })
        .collect();
    credits
        .set(index, PerCpuValues::try_from(cas)?, 0)
        .context("write the credits")?;
    Ok(())
}

/// Every CPU's credit in bucket `index`: (batch, credit) in ticks.
fn credits(lab: &Lab, index: u32) -> anyhow::Result<Vec<(u64, u64)>> {
    let (_, per_cpu) = lab.dp.maps().bucket(index)?;
    Ok(per_cpu
        .iter()
        .map(|c| (c.packets.batch, c.packets.credit))
        .collect())
}

fn mean(a: [f64; 2]) -> f64 {
    f64::midpoint(a[0], a[1])
}

/// One hot call of `repeat` runs on each CPU at once: the mean per-run time. Each call must
/// return one of `check` (anything when empty).
fn hot(
    target: &(dyn Target + Sync),
    frame: &[u8],
    check: &[u32],
    plan: &Plan,
) -> anyhow::Result<f64> {
    let per_cpu = on_both_cpus(|_| {
        let out = target.run(frame, plan.repeat)?;
        ensure!(
            check.is_empty() || check.contains(&out.retval),
            "expected one of {check:?}, got {}",
            out.retval
        );
        Ok(out.per_run.as_secs_f64() * 1e9)
    })?;
    Ok(mean(per_cpu))
}

/// `calls` single-run calls on each CPU at once, each a new flow: the mean per-call time.
fn first(
    target: &(dyn Target + Sync),
    template: &[u8],
    check: &[u32],
    seed: u64,
    calls: usize,
) -> anyhow::Result<f64> {
    let per_cpu = on_both_cpus(|cpu| {
        let mut rng = SplitMix::new(seed ^ (u64::try_from(cpu)? << 32));
        let mut frame = template.to_vec();
        let mut total = 0.0;
        for _ in 0..calls {
            let r = rng.next_u64().to_be_bytes();
            // A source in 10.0.0.0/8 and a source port, both random.
            frame[SRC_OFFSET] = 10;
            frame[SRC_OFFSET + 1..SRC_OFFSET + 4].copy_from_slice(&r[..3]);
            frame[SPORT_OFFSET..SPORT_OFFSET + 2].copy_from_slice(&r[3..5]);
            let out = target.run(&frame, 1)?;
            ensure!(
                check.is_empty() || check.contains(&out.retval),
                "expected one of {check:?}, got {}",
                out.retval
            );
            total += out.per_run.as_secs_f64() * 1e9;
        }
        #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
        Ok(total / calls as f64)
    })?;
    Ok(mean(per_cpu))
}

fn paired(a: &Samples, b: &Samples) -> (f64, f64) {
    let d = Samples(a.0.iter().zip(&b.0).map(|(x, y)| x - y).collect());
    (d.median(), d.spread())
}

fn value(gross: &Samples, floor: &Samples) -> Value {
    Value::Ns {
        net: gross.median() - floor.median(),
        gross: gross.median(),
        floor: floor.median(),
        spread: gross.spread(),
        hits: crate::cache::HitRate::default(),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one measurement, set up, run and checked"
)]
pub fn run(lab: &Lab, floors: &Floors, plan: &Plan) -> anyhow::Result<RateLimits> {
    let slot = *lab.tables.names.keys().next().context("one workload")?;
    let cas = lab.bucket("cas")?;
    unbatch(lab, cas)?;
    let frames: Vec<Vec<u8>> = RULES.iter().map(|r| frame(r.port)).collect();
    // The over rule's burst of 1 is spent first; then each rule must take its path.
    lab.dp.xdp().run(&frames[at("over")], 1)?;
    for (r, f) in RULES.iter().zip(&frames) {
        lab.dp
            .verify(
                Direction::Ingress,
                f,
                r.expect.action,
                Some(slot),
                r.expect.reason,
            )
            .with_context(|| format!("rule {}", r.name))?;
    }
    let ids: Vec<u32> = RULES
        .iter()
        .map(|r| lab.rule(r.name))
        .collect::<anyhow::Result<_>>()?;
    let counts = |lab: &Lab| -> anyhow::Result<Vec<(u64, u64)>> {
        ids.iter()
            .map(|&id| {
                Ok((
                    lab.dp.maps().rule_hits(id)?,
                    lab.dp.maps().rule_limited(id)?,
                ))
            })
            .collect()
    };
    let before = counts(lab)?;
    let xdp: &(dyn Target + Sync) = lab.dp.xdp();
    let floor: &(dyn Target + Sync) = &floors.xdp;
    // What a run may return: the rule without a limit passes; a limited rule that allows
    // passes, or is refused now and then (see `REFUSED_MAX`), which its counters bound after
    // the runs; the over rule admits one packet a second, which its counters show.
    let check = |i: usize| -> &'static [u32] {
        match (RULES[i].name, RULES[i].expect.action) {
            ("open", _) => &[XDP_PASS],
            (_, XDP_PASS) => &[XDP_PASS, XDP_DROP],
            _ => &[],
        }
    };
    let mut hot_floor = Samples::default();
    let mut call_floor = Samples::default();
    let mut hot_s = vec![Samples::default(); RULES.len()];
    let mut first_s = vec![Samples::default(); RULES.len()];
    for round in 0..plan.runs {
        progress::tick(&format!(
            "rate limits: hot, round {}/{}",
            round + 1,
            plan.runs
        ));
        hot_floor.0.push(hot(floor, &frames[0], &[], plan)?);
        for i in 0..RULES.len() {
            hot_s[i].0.push(hot(xdp, &frames[i], check(i), plan)?);
        }
    }
    let after_hot = counts(lab)?;
    // First packets are single calls, each about a microsecond of syscall around tens of
    // nanoseconds of program, on a machine whose other work comes and goes: more rounds, and
    // within a round the programs take turns by chunks of calls.
    let chunk = (plan.calls / FIRST_CHUNKS).max(1);
    let mut seed = 0x0b0c_4e75_u64;
    for round in 0..FIRST_ROUNDS * plan.runs {
        progress::tick(&format!(
            "rate limits: first packets, round {}/{}",
            round + 1,
            FIRST_ROUNDS * plan.runs
        ));
        let mut floor_sum = 0.0;
        let mut sums = [0.0; RULES.len()];
        for _ in 0..FIRST_CHUNKS {
            seed += 1;
            floor_sum += first(floor, &frames[0], &[], seed, chunk)?;
            for i in 0..RULES.len() {
                seed += 1;
                sums[i] += first(xdp, &frames[i], check(i), seed, chunk)?;
            }
        }
        #[expect(clippy::cast_precision_loss, reason = "a few chunks")]
        let n = FIRST_CHUNKS as f64;
        call_floor.0.push(floor_sum / n);
        for i in 0..RULES.len() {
            first_s[i].0.push(sums[i] / n);
        }
    }
    let after = counts(lab)?;
    let mut notes = Vec::new();
    for (i, r) in RULES.iter().enumerate() {
        let hits = after[i].0 - before[i].0;
        let limited = after[i].1 - before[i].1;
        if r.expect.reason == Reason::RateLimited {
            notes.push(format!(
                "{}: {limited} of {hits} packets over the limit (the rest: its 1/s refill)",
                r.name
            ));
        } else if r.name != "open" {
            ensure!(
                limited.saturating_mul(REFUSED_MAX) <= hits,
                "rule {}: {limited} of {hits} packets were over the limit: the bucket ran dry, the figure would mix in the drop path",
                r.name
            );
            let hot = after_hot[i].1 - before[i].1;
            notes.push(format!(
                "{}: {limited} of {hits} packets over the limit ({hot} hot, {} first packets; at most 1 in {REFUSED_MAX} allowed)",
                r.name,
                limited - hot
            ));
        }
    }
    let left = credits(lab, cas)?;
    ensure!(
        left.iter()
            .all(|&(batch, credit)| batch == 0 && credit == 0),
        "the CAS bucket's credits changed under the runs: (batch, credit) per CPU {left:?}"
    );
    notes.push(format!(
        "cas: after the runs every CPU's batch is 0 and its credit 0 ticks ({} CPUs): each packet took exactly its cost from the shared word",
        left.len()
    ));
    let batched = credits(lab, lab.bucket("limited")?)?;
    notes.push(format!(
        "limited: batch {} ticks (1 ms of the rate: {} packets) per CPU; credit left per CPU {:?} ticks",
        batched.first().map_or(0, |b| b.0),
        batched.first().map_or(0, |b| b.0 / LIMITED_PACKET_TICKS),
        batched.iter().map(|b| b.1).collect::<Vec<_>>()
    ));
    let contended = credits(lab, lab.bucket("contended")?)?;
    ensure!(
        contended
            .iter()
            .all(|&(batch, _)| batch == CONTENDED_BATCH * CONTENDED_PACKET_TICKS),
        "the contended bucket's batch is not {CONTENDED_BATCH} packets ({} ticks): (batch, credit) per CPU {contended:?}",
        CONTENDED_BATCH * CONTENDED_PACKET_TICKS
    );
    notes.push(format!(
        "contended: batch {} ticks = {CONTENDED_BATCH} packets per CPU: each CPU draws from the shared word (clock read, compare-and-swap) once every {} packets; credit left per CPU {:?} ticks",
        CONTENDED_BATCH * CONTENDED_PACKET_TICKS,
        CONTENDED_BATCH + 1,
        contended.iter().map(|b| b.1).collect::<Vec<_>>()
    ));
    let (inserts, held) = lab.dp.maps().peer_counts(lab.bucket("source")?)?;
    notes.push(format!(
        "source: {inserts} source buckets inserted (hot: one source for both CPUs; first packet: a new source a call), {held} held at the end"
    ));
    let rows = RULES
        .iter()
        .enumerate()
        .map(|(i, r)| LimitRow {
            config: r.config,
            verdict: r.expect.label(),
            hot: value(&hot_s[i], &hot_floor),
            first: value(&first_s[i], &call_floor),
        })
        .collect();
    let deltas = [
        ("contended", "contended bucket - no limit (judged)", true),
        ("limited", "credit-only bucket - no limit", false),
        ("cas", "CAS bucket - no limit", false),
        ("source", "per-source bucket - no limit", false),
        ("over", "over the limit (drop) - no limit (allow)", false),
    ]
    .into_iter()
    .map(|(name, what, judged)| LimitDelta {
        what,
        judged,
        hot: paired(&hot_s[at(name)], &hot_s[0]),
        first: paired(&first_s[at(name)], &first_s[0]),
    })
    .collect();
    Ok(RateLimits {
        rows,
        deltas,
        floor_hot: hot_floor.median(),
        floor_call: call_floor.median(),
        repeat: plan.repeat,
        calls: plan.calls,
        notes,
        ..RateLimits::default()
    })
}
