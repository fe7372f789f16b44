//! Timing programs with `BPF_PROG_TEST_RUN`, two ways, always against the empty program of the
//! same type (XDP, or TC for the egress program) measured the same way and interleaved with it
//! (so drift on a noisy VM hits both alike).
//!
//! - **Hot single flow**: one frame, `repeat` (>= 10^6) runs in one call. After the first run
//!   every map bucket and element the path touches is in L1: this is the path's best case and
//!   its instruction cost.
//! - **Random key** (Boundary: a flow's *first packet*): the test-run command takes one frame
//!   per call and a repeated frame is a hot frame again, so the random-key variant makes many
//!   calls with `repeat = 1`, each with a key (the peer address; the destination on the
//!   unprotected path) drawn at random from the path's key set (written into the frame between
//!   calls, outside the timed region; for Boundary the verdict cache is emptied there too, see
//!   `cache`, so that no call is answered from it). The kernel times each call's single run;
//!   the floor is
//!   the empty program timed the same way (per-call timer overhead included in both, then
//!   subtracted). Between calls the syscall path evicts part of the cache, as other work would
//!   between packets on a real host, so lookups into a large table pay their cache misses.
//!   The kernel reports whole nanoseconds per call; the mean over many calls smooths that.
//!   Its limit: a single short run between two clock reads can partly overlap them (the TSC
//!   read does not serialize), so for paths of a few tens of nanoseconds the per-call figure
//!   can come out some nanoseconds below the hot one. Compare random-key figures with each
//!   other, and hot with hot.

use std::{os::fd::AsFd as _, time::Duration};

use anyhow::{Context as _, ensure};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};

use super::{
    Plan,
    cache::{HitRate, VerdictCache},
    sys::{self, RawProgram, TestRunExtra, TestRunOutput},
};

/// One untimed probe call (hit or miss, see `cache`) every this many timed calls.
pub const PROBE_EVERY: usize = 250;

/// A program that can be run with `BPF_PROG_TEST_RUN`.
pub trait Target {
    fn run(&self, frame: &[u8], repeat: u32) -> anyhow::Result<TestRunOutput>;
}

/// Boundary's programs, loaded by aya: aya's `TestRun`.
impl Target for Xdp {
    fn run(&self, frame: &[u8], repeat: u32) -> anyhow::Result<TestRunOutput> {
        let out = self
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        Ok(TestRunOutput {
            retval: out.return_value,
            per_run: out.duration,
        })
    }
}

/// The TC egress program: the kernel builds an skb around the frame once per call.
impl Target for SchedClassifier {
    fn run(&self, frame: &[u8], repeat: u32) -> anyhow::Result<TestRunOutput> {
        let out = self
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        Ok(TestRunOutput {
            retval: out.return_value,
            per_run: out.duration,
        })
    }
}

/// Programs aya did not load (the floor, xdp-filter): the raw command.
impl Target for RawProgram {
    fn run(&self, frame: &[u8], repeat: u32) -> anyhow::Result<TestRunOutput> {
        sys::test_run(self.as_fd(), frame, repeat, TestRunExtra::default())
            .context("BPF_PROG_TEST_RUN (raw)")
    }
}

/// Per-run figures in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
        }
    }

    /// Half the range of the runs: the "±" printed after a median.
    pub fn spread(&self) -> f64 {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max - min) / 2.0
    }
}

/// A path's runs and the floor's runs interleaved with them.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub gross: Samples,
    pub floor: Samples,
    /// Every call's ns, of all runs (the random-key variant only): the path's, the floor's.
    pub gross_calls: Samples,
    pub floor_calls: Samples,
    /// Verdict-cache hits among probe calls (no probes: a program without the cache).
    pub hits: HitRate,
}

impl Cell {
    /// Median of the path minus median of the floor.
    pub fn net(&self) -> f64 {
        self.gross.median() - self.floor.median()
    }

    /// The median call of the path minus the floor's (random-key variant): the typical
    /// first packet, without the tail a mean pays (evictions, interrupts, preemption).
    pub fn net_median_call(&self) -> f64 {
        self.gross_calls.median() - self.floor_calls.median()
    }
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// The hot single flow: `plan.runs` calls of `plan.repeat` runs each, for the floor and the
/// target alternately. Every run must return `action`. With `cache`, one probe call after
/// each timed call says whether the frame is answered from the verdict cache.
pub fn hot(
    target: &dyn Target,
    floor: &dyn Target,
    frame: &[u8],
    action: u32,
    cache: Option<&VerdictCache>,
    plan: &Plan,
) -> anyhow::Result<Cell> {
    let mut cell = Cell::default();
    for _ in 0..plan.runs {
        cell.floor
            .0
            .push(ns(floor.run(frame, plan.repeat)?.per_run));
        let out = target.run(frame, plan.repeat)?;
        ensure!(
            out.retval == action,
            "expected action {action}, got {}",
            out.retval
        );
        cell.gross.0.push(ns(out.per_run));
        if let Some(c) = cache {
            cell.hits.add(c.probe(target, frame)?);
        }
    }
    Ok(cell)
}

/// How the random-key variant changes the frame between calls.
pub trait Rekey {
    /// Writes a freshly drawn key into `frame`, and readies the program for it (Boundary:
    /// empties the verdict cache). Called before every call, floor and target alike, so both
    /// pay the same work between calls.
    fn rekey(&mut self, frame: &mut [u8]) -> anyhow::Result<()>;

    /// Runs `frame` once, untimed: whether the verdict cache answered it; `None` for a program
    /// without one.
    fn probe(&mut self, _target: &dyn Target, _frame: &[u8]) -> anyhow::Result<Option<bool>> {
        Ok(None)
    }
}

/// A plain key writer (a program without a cache).
impl<F: FnMut(&mut [u8])> Rekey for F {
    fn rekey(&mut self, frame: &mut [u8]) -> anyhow::Result<()> {
        self(frame);
        Ok(())
    }
}

/// The random-key variant: `plan.runs` runs of `plan.calls` single-run calls; before each
/// call `keys` writes a freshly drawn key into the frame. Every call must return `action`.
/// Every `PROBE_EVERY` target calls, one more (untimed) call with a fresh key probes the cache.
pub fn random(
    target: &dyn Target,
    floor: &dyn Target,
    template: &[u8],
    keys: &mut dyn Rekey,
    action: u32,
    plan: &Plan,
) -> anyhow::Result<Cell> {
    let mut frame = template.to_vec();
    let mut cell = Cell::default();
    let mut mean_of = |t: &dyn Target,
                       check: bool,
                       hits: &mut HitRate,
                       calls: &mut Samples|
     -> anyhow::Result<f64> {
        let mut total = 0.0;
        for i in 0..plan.calls {
            keys.rekey(&mut frame)?;
            let out = t.run(&frame, 1)?;
            ensure!(
                !check || out.retval == action,
                "expected action {action}, got {}",
                out.retval
            );
            total += ns(out.per_run);
            calls.0.push(ns(out.per_run));
            if check && i % PROBE_EVERY == PROBE_EVERY - 1 {
                keys.rekey(&mut frame)?;
                if let Some(hit) = keys.probe(t, &frame)? {
                    hits.add(hit);
                }
            }
        }
        #[expect(clippy::cast_precision_loss, reason = "call counts are small")]
        Ok(total / plan.calls as f64)
    };
    for _ in 0..plan.runs {
        cell.floor.0.push(mean_of(
            floor,
            false,
            &mut cell.hits,
            &mut cell.floor_calls,
        )?);
        cell.gross.0.push(mean_of(
            target,
            true,
            &mut cell.hits,
            &mut cell.gross_calls,
        )?);
    }
    Ok(cell)
}
