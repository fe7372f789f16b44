//! Accuracy under skew, as the kernel test `two_cpus_skewed_90_10_share_one_rate` measures it:
//! two threads pinned to CPUs 0 and 1 offer the `skew` rule of [`super::POLICY`] (20,000
//! packets/s, a burst of 2,000) 90/10 at five times its rate (the case) and at twice
//! it (where a naive per-CPU split falls short, see `split`) for a few seconds, paced (packet
//! `i` of a CPU goes at `i / its rate`; behind, it catches up at full speed), each packet a
//! single-run `BPF_PROG_TEST_RUN` call of one flow. Packets admitted are counted per 1-second
//! window of the time they were sent; the report gives admitted / configured per window (the
//! first window: rate + burst) and over the whole run (burst + rate x seconds).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::ensure;

use super::{Lab, PORT_SKEW, cost::frame, on_both_cpus};
use crate::{Plan, results::Skew, sys::XDP_PASS, testrun::Target as _};

pub const RATE: u64 = 20_000;
pub const BURST: u64 = 2_000;
/// The offered loads, in multiples of the rate.
pub const TIMES: [u64; 2] = [5, 2];

/// Seconds (1-second windows) of a run: four, three in quick mode.
pub fn secs(plan: &Plan) -> u64 {
    if plan.runs >= 5 { 4 } else { 3 }
}

/// Two CPUs offering `times` x the rate 90/10. The bucket is left to refill for a second
/// first, so that each run starts from a full one.
pub fn run(lab: &Lab, plan: &Plan, times: u64) -> anyhow::Result<Skew> {
    let secs = secs(plan);
    std::thread::sleep(Duration::from_secs(1));
    let frame = frame(PORT_SKEW);
    let xdp = lab.dp.xdp();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let per_cpu = on_both_cpus(|cpu| {
        // CPU 0 offers 90 % of `times` x the rate, CPU 1 10 %.
        let per_sec = RATE * times * if cpu == 0 { 9 } else { 1 } / 10;
        let mut windows = vec![0u64; usize::try_from(secs)?];
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let t = start.elapsed();
            if t >= Duration::from_secs(secs) {
                break;
            }
            let due = u128::from(sent) * 1_000_000 / u128::from(per_sec);
            if due > t.as_micros() {
                std::hint::spin_loop();
                continue;
            }
            let out = xdp.run(&frame, 1);
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            sent += 1;
            if out.retval == XDP_PASS {
                windows[usize::try_from(t.as_secs())?] += 1;
            }
        }
        Ok((windows, sent))
    })?;
    let [(a, sent_a), (b, sent_b)] = per_cpu;
    ensure!(
        sent_a > 5 * sent_b,
        "the split was not skewed: CPU 0 offered {sent_a}, CPU 1 {sent_b}"
    );
    Ok(Skew {
        how: "kernel: the design (BPF_PROG_TEST_RUN, two pinned threads)",
        times,
        rate: RATE,
        burst: BURST,
        offered: [sent_a, sent_b],
        windows: a.iter().zip(&b).map(|(x, y)| x + y).collect(),
    })
}
