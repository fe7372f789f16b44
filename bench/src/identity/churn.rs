//! The datapath's per-packet cost and verdict-cache hit rate for cached flows while bindings
//! churn, in-process: the real object loaded unpinned, a policy with an `orders/*` SPIFFE rule
//! and a CIDR rule compiled with bindings earnable (`CFG_EARNED`), installed by `Maps::apply`.
//!
//! [`FLOWS`] UDP flows, each from a source of its own in the CIDR rule's prefix (allowed,
//! cached), are run one single-run `BPF_PROG_TEST_RUN` call each, pass after pass, on one
//! pinned CPU; the kernel times each call, the empty XDP program run over the same frames in
//! a pass of its own is subtracted (net ns per packet = pass mean minus floor pass mean).
//! Meanwhile a thread pinned to the other CPU writes bindings of new addresses (10.70.0.0/16,
//! `orders` IDs) through `Datapath::bind`, the agent's own write path, paced at
//! [`BIND_RATE`] a second, in three scenarios taken in turn, `plan.runs` times:
//!
//! - **idle**: no bindings;
//! - **bind**: bindings, each moving the bind sequence of its address's slot (what the agent
//!   does): only cached verdicts of peers in that slot (1 of 4,096) become misses;
//! - **bind + flush**: the same, and `Datapath::invalidate_verdicts()` after every binding
//!   (the global epoch the issue rules out): every CPU's whole cache is stale at each one.
//!
//! Hit rate, two ways: **measured** with the harness's probe (`cache`: the CPU's whole cache
//! read before and after one untimed call; a rewritten slot proves a miss), [`PROBES`] flows
//! after every pass; and **derived** from the costs, (miss - observed) / (miss - hit), with
//! "miss" the same flows with the cache emptied before every call and "hit" one cached flow
//! called again and again, both measured in the same run. The cache is direct-mapped (2,048
//! slots per CPU, keyed by a secret hash): [`FLOWS`] flows collide in some slots, so even idle
//! some of them miss on every pass.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use boundary_agent::{
    datapath::{Datapath, LoadOptions, maps::EarnedBinding, maps::monotonic_ns},
    policy::{self, Binder, Earned, Policy, spiffe::SpiffeId},
};
use boundary_common::maps::Action;
use boundary_tests::packets::{self, L4};

use crate::{
    Plan,
    cache::VerdictCache,
    env::CpuPin,
    results::{Churn, ChurnCell},
    sys::{RawProgram, XDP_PASS},
    testrun::Target,
};

/// Cached flows, each from its own source.
pub const FLOWS: usize = 1_000;
/// Bindings written per second in the churn scenarios.
pub const BIND_RATE: u32 = 1_000;
/// Untimed probe calls after every pass.
pub const PROBES: usize = 4;
/// Addresses the churn binds, in turn (below the earned map's 65,536 records).
const POOL: u32 = 50_000;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 204, 0, 1);
const PORT: u16 = 53;
const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: api
    addresses: [10.204.0.1]
    ingress:
      - { name: orders, from: { spiffe: \"spiffe://example.org/orders/*\" }, ports: [\"8443/tcp\"] }
      - { name: lan, from: { cidr: 10.60.0.0/16 }, ports: [\"53/udp\"] }
";

const IDLE: u8 = 0;
const BIND: u8 = 1;
const FLUSH: u8 = 2;
const STOP: u8 = 3;

fn flow_source(i: usize) -> Ipv4Addr {
    let i = u16::try_from(i + 1).expect("few flows").to_be_bytes();
    Ipv4Addr::new(10, 60, i[0], i[1])
}

fn churn_addr(n: u32) -> Ipv4Addr {
    let n = n % POOL + 1;
    let [_, _, hi, lo] = n.to_be_bytes();
    Ipv4Addr::new(10, 70, hi, lo)
}

fn frame(src: Ipv4Addr) -> Vec<u8> {
    packets::v4(
        src,
        SERVER,
        L4::Udp {
            sport: 40_000,
            dport: PORT,
        },
        &[0; 22],
    )
}

/// The datapath, its policy live with bindings earnable, and its binder.
fn load() -> anyhow::Result<(Datapath, Binder)> {
    let mut dp = Datapath::load_with(
        None,
        &LoadOptions {
            max_workloads: 4,
            ..LoadOptions::default()
        },
    )?;
    let p = Policy::from_str("churn.yaml", POLICY)?;
    let t = policy::compile_with(
        &p,
        &dp.maps().slot_table()?,
        &BTreeMap::new(),
        &BTreeMap::new(),
        4,
        &Earned {
            enabled: true,
            bindings: BTreeMap::new(),
            endpoint: None,
        },
    )?;
    dp.apply(&t, Action::Pass).context("apply")?;
    let binder = Binder::new(&p, &t);
    Ok((dp, binder))
}

/// Binds `addr` to an `orders` ID for an hour through the agent's write path.
fn bind(dp: &mut Datapath, binder: &mut Binder, addr: Ipv4Addr) -> anyhow::Result<()> {
    let id: SpiffeId = "spiffe://example.org/orders/churn".parse()?;
    let e = EarnedBinding {
        addr: IpAddr::V4(addr),
        id: id.to_string(),
        expires: monotonic_ns() + 3_600_000_000_000,
        not_after: 0,
        renewed: 0,
        issuer: 1,
        serial: vec![1],
        chain: Vec::new(),
        anchor: 1,
    };
    let b = binder.bind(e.addr, &id);
    dp.bind(&e, &b).context("Datapath::bind")?;
    Ok(())
}

/// The churn thread: binds at `BIND_RATE` while the mode says so, flushing too in `FLUSH`.
fn churn(
    dp: &mut Datapath,
    binder: &mut Binder,
    mode: &AtomicU8,
    binds: &AtomicU64,
    error: &Mutex<Option<anyhow::Error>>,
) {
    let _cpu = CpuPin::to(0);
    let every = Duration::from_secs(1) / BIND_RATE;
    let mut n = 1u32;
    let mut next = Instant::now();
    loop {
        let m = mode.load(Ordering::Acquire);
        if m == STOP {
            return;
        }
        if m == IDLE {
            std::thread::sleep(Duration::from_millis(1));
            next = Instant::now();
            continue;
        }
        let r = bind(dp, binder, churn_addr(n)).and_then(|()| {
            if m == FLUSH {
                dp.invalidate_verdicts()
                    .context("Datapath::invalidate_verdicts")?;
            }
            Ok(())
        });
        if let Err(e) = r {
            *error.lock().expect("error") = Some(e);
            mode.store(STOP, Ordering::Release);
            return;
        }
        n = n.wrapping_add(1);
        binds.fetch_add(1, Ordering::Relaxed);
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// One pass: every frame once, single-run calls; mean kernel-timed ns per call.
fn pass(prog: &dyn Target, frames: &[Vec<u8>], check: bool) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for f in frames {
        let out = prog.run(f, 1)?;
        ensure!(
            !check || out.retval == XDP_PASS,
            "a cached flow was not passed ({})",
            out.retval
        );
        total += out.per_run.as_secs_f64() * 1e9;
    }
    #[expect(clippy::cast_precision_loss, reason = "few frames")]
    Ok(total / frames.len() as f64)
}

struct Measure<'a> {
    prog: &'a RawProgram,
    floor: &'a RawProgram,
    cache: VerdictCache,
    frames: Vec<Vec<u8>>,
    rounds: usize,
    floors: Vec<f64>,
}

impl Measure<'_> {
    /// `rounds` passes of the flows (floor pass, pass, probes), in the current mode.
    fn flows(&mut self, cell: &mut ChurnCell, round0: usize) -> anyhow::Result<()> {
        for r in 0..self.rounds {
            let floor = pass(self.floor, &self.frames, false)?;
            let gross = pass(self.prog, &self.frames, true)?;
            self.floors.push(floor);
            cell.net.push(gross - floor);
            for k in 0..PROBES {
                let i = (round0 + r * 7 + k * (FLOWS / PROBES)) % FLOWS;
                cell.hits.add(self.cache.probe(self.prog, &self.frames[i])?);
            }
        }
        Ok(())
    }

    /// The flows with the cache emptied before every call: all misses.
    fn misses(&mut self, cell: &mut ChurnCell) -> anyhow::Result<()> {
        self.cache.reread()?;
        for _ in 0..self.rounds {
            let (mut floor, mut gross) = (0.0, 0.0);
            for f in &self.frames {
                self.cache.empty()?;
                floor += self.floor.run(f, 1)?.per_run.as_secs_f64() * 1e9;
                self.cache.empty()?;
                let out = self.prog.run(f, 1)?;
                ensure!(out.retval == XDP_PASS, "a flow was not passed");
                gross += out.per_run.as_secs_f64() * 1e9;
            }
            #[expect(clippy::cast_precision_loss, reason = "few frames")]
            let n = self.frames.len() as f64;
            cell.net.push((gross - floor) / n);
        }
        Ok(())
    }

    /// One cached flow, called again and again: all hits.
    fn hits(&mut self, cell: &mut ChurnCell) -> anyhow::Result<()> {
        let one = vec![self.frames[0].clone(); self.frames.len()];
        self.prog.run(&one[0], 1)?;
        for _ in 0..self.rounds {
            let floor = pass(self.floor, &one, false)?;
            let gross = pass(self.prog, &one, true)?;
            cell.net.push(gross - floor);
        }
        cell.hits.add(self.cache.probe(self.prog, &one[0])?);
        Ok(())
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the scenarios' sequence, read top to bottom"
)]
pub fn run(plan: &Plan, floor: &RawProgram) -> anyhow::Result<Churn> {
    let (mut dp, mut binder) = load()?;
    let prog_id = dp.xdp_program().info()?.id();
    let prog = RawProgram::from_id(prog_id).context("open the loaded XDP program")?;
    let map_ids = dp.xdp_program().info()?.map_ids()?.unwrap_or_default();
    let frames: Vec<Vec<u8>> = (0..FLOWS).map(|i| frame(flow_source(i))).collect();
    // A bound peer is admitted by its ID (the binding works here), an unbound one is not.
    let bound = Ipv4Addr::new(10, 71, 0, 1);
    let to_orders = |src| {
        packets::v4(
            src,
            SERVER,
            L4::Tcp {
                sport: 40_000,
                dport: 8443,
            },
            b"",
        )
    };
    ensure!(
        prog.run(&to_orders(bound), 1)?.retval != XDP_PASS,
        "an unbound peer passed"
    );
    bind(&mut dp, &mut binder, bound)?;
    ensure!(
        prog.run(&to_orders(bound), 1)?.retval == XDP_PASS,
        "a bound peer was not passed"
    );

    let mut m = Measure {
        prog: &prog,
        floor,
        cache: VerdictCache::open(&map_ids)?,
        frames,
        rounds: plan.id_rounds,
        floors: Vec::new(),
    };
    let mut out = Churn {
        flows: FLOWS,
        idle: ChurnCell {
            what: "idle (no bindings)",
            ..ChurnCell::default()
        },
        bind_seq: ChurnCell {
            what: "1,000 bindings/s (bind sequence per slot)",
            ..ChurnCell::default()
        },
        epoch: ChurnCell {
            what: "1,000 bindings/s + invalidate_verdicts() each",
            ..ChurnCell::default()
        },
        all_miss: ChurnCell {
            what: "bound: every call a miss (cache emptied)",
            ..ChurnCell::default()
        },
        all_hit: ChurnCell {
            what: "bound: every call a hit (one flow)",
            ..ChurnCell::default()
        },
        ..Churn::default()
    };
    let mode = AtomicU8::new(IDLE);
    let binds = AtomicU64::new(0);
    let error = Mutex::new(None);
    let measured = std::thread::scope(|s| -> anyhow::Result<()> {
        let churner = s.spawn(|| churn(&mut dp, &mut binder, &mode, &binds, &error));
        let r = (|| -> anyhow::Result<()> {
            let _cpu = CpuPin::last_allowed()?;
            // Warm: every flow cached once.
            pass(m.prog, &m.frames, true)?;
            let mut round0 = 0;
            let mut secs = [0.0f64; 3];
            let mut counts = [0u64; 3];
            for _ in 0..plan.runs {
                for (i, which) in [IDLE, BIND, FLUSH].into_iter().enumerate() {
                    mode.store(which, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(50));
                    let (b0, t0) = (binds.load(Ordering::Relaxed), Instant::now());
                    let cell = match which {
                        IDLE => &mut out.idle,
                        BIND => &mut out.bind_seq,
                        _ => &mut out.epoch,
                    };
                    m.flows(cell, round0)?;
                    secs[i] += t0.elapsed().as_secs_f64();
                    counts[i] += binds.load(Ordering::Relaxed) - b0;
                    round0 += m.rounds;
                    ensure!(
                        mode.load(Ordering::Acquire) != STOP,
                        "the churn thread stopped: {:?}",
                        error.lock().expect("error").as_ref()
                    );
                }
                mode.store(IDLE, Ordering::Release);
                std::thread::sleep(Duration::from_millis(5));
                m.misses(&mut out.all_miss)?;
                m.hits(&mut out.all_hit)?;
                // Back to every flow cached before the next idle pass.
                pass(m.prog, &m.frames, true)?;
            }
            #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            for (cell, (n, t)) in [&mut out.idle, &mut out.bind_seq, &mut out.epoch]
                .into_iter()
                .zip(counts.into_iter().zip(secs))
            {
                cell.binds_per_sec = n as f64 / t;
            }
            Ok(())
        })();
        mode.store(STOP, Ordering::Release);
        churner.join().expect("churn thread");
        r
    });
    measured?;
    if let Some(e) = error.lock().expect("error").take() {
        return Err(e.context("the churn thread"));
    }
    out.passes = out.idle.net.len();
    out.floor = crate::testrun::Samples(m.floors).median();
    Ok(out)
}
