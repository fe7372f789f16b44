//! A naive per-CPU split against the design, in userspace with a simulated clock (the issue: "a
//! naive per-CPU split fails this"): each of two CPUs keeps a bucket of its own at rate / 2 and
//! burst / 2 (GCRA, `bucket::take`), against the design's per-CPU credits drawn from one shared
//! word (`bucket::Credit::admit`, the datapath's own code, on a plain word: the simulation takes
//! one packet at a time, so no compare-and-swap ever loses a race). Traffic as the skew step
//! offers it: CPU 0 sends 90 % and CPU 1 10 % of `times` x the rate, packet `i` of a CPU at
//! exactly `i / its rate`, for the same number of 1-second windows; admitted packets are counted
//! per window of their time. No jitter and no test-run overhead: what each scheme does by
//! construction.
//!
//! By construction the naive split caps CPU 0 at rate / 2 and admits CPU 1's share up to rate / 2,
//! so it admits `rate x (0.5 + min(0.1 x times, 0.5))` a second: right from 5x the rate up (CPU
//! 1 then offers its whole half), 0.7 of the rate at 2x. The skew step's 5x cannot tell the two
//! apart; 2x can.

use std::cell::Cell;

use boundary_common::bucket::{
    self, Credit, Dimension, NS_PER_SEC, Shared, SharedWord, cost, max_units, take,
};

use crate::results::Skew;

/// How the two CPUs share the rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Each CPU a bucket of rate / 2 and burst / 2.
    Naive,
    /// The datapath's: per-CPU credits drawn in batches from one shared bucket.
    Design,
}

impl Scheme {
    pub fn label(self) -> &'static str {
        match self {
            Scheme::Naive => "simulated: naive per-CPU split (each CPU rate/2, burst/2)",
            Scheme::Design => "simulated: the design (per-CPU credits from one shared word)",
        }
    }
}

/// A shared word for one thread.
struct Word(Cell<u64>);

impl SharedWord for Word {
    fn load(&self) -> u64 {
        self.0.get()
    }
    fn compare_exchange(&self, old: u64, new: u64) -> bool {
        let ok = self.0.get() == old;
        if ok {
            self.0.set(new);
        }
        ok
    }
    fn give_back(&self, amount: u64) {
        self.0.set(self.0.get().wrapping_sub(amount));
    }
    fn fetch_add(&self, amount: u64) -> u64 {
        let old = self.0.get();
        self.0.set(old.wrapping_add(amount));
        old
    }
}

/// `secs` seconds of two CPUs offering `times` x `rate` 90/10 to a bucket of `rate` a second
/// and `burst` deep, shared as `scheme` says.
pub fn simulate(scheme: Scheme, rate: u64, burst: u64, times: u64, secs: u64) -> Skew {
    // The clock at the start (any time but zero), the bucket full then.
    let start = NS_PER_SEC;
    let per_sec = [rate * times * 9 / 10, rate * times / 10];
    // Naive: a bucket per CPU.
    let half = bucket::interval(rate / 2);
    let half_depth = bucket::depth(rate / 2, burst / 2);
    let one = cost(1, half, max_units(half));
    let mut own = [bucket::ticks(start); 2];
    // The design: a credit per CPU, one shared word (bytes not limited).
    let depth = bucket::depth(rate, burst);
    let mut credits = [Credit {
        packets: Dimension::new(rate, depth),
        bytes: Dimension::default(),
    }; 2];
    let shared = [Word(Cell::new(bucket::ticks(start))), Word(Cell::new(0))];
    let mut sent = [0u64; 2];
    let mut windows = vec![0u64; usize::try_from(secs).unwrap_or(0)];
    loop {
        // The next packet is the CPU whose next send time comes first.
        let at = |c: usize| {
            u64::try_from(u128::from(sent[c]) * u128::from(NS_PER_SEC) / u128::from(per_sec[c]))
                .unwrap_or(u64::MAX)
        };
        let cpu = usize::from(at(1) < at(0));
        let t = at(cpu);
        if t >= secs * NS_PER_SEC {
            break;
        }
        let now = bucket::ticks(start + t);
        let admitted = match scheme {
            Scheme::Naive => take(own[cpu], now, one, half_depth)
                .map(|n| own[cpu] = n)
                .is_some(),
            Scheme::Design => credits[cpu].admit(
                1,
                0,
                || {
                    Some(Shared {
                        tat: [&shared[0], &shared[1]],
                        depth: [depth, 0],
                    })
                },
                || now,
            ),
        };
        if admitted && let Ok(w) = usize::try_from(t / NS_PER_SEC) {
            windows[w] += 1;
        }
        sent[cpu] += 1;
    }
    Skew {
        how: scheme.label(),
        rate,
        burst,
        times,
        offered: sent,
        windows,
    }
}

#[cfg(test)]
mod tests {
    use super::{Scheme, simulate};

    fn worst(scheme: Scheme, times: u64) -> f64 {
        simulate(scheme, 20_000, 2_000, times, 4)
            .worst()
            .expect("windows after the first")
            .1
    }

    #[test]
    fn a_naive_split_falls_short_at_twice_the_rate_where_the_design_holds() {
        let naive = worst(Scheme::Naive, 2);
        assert!((naive - 0.7).abs() < 0.01, "naive split at 2x: {naive}");
        let design = worst(Scheme::Design, 2);
        assert!((design - 1.0).abs() < 0.01, "the design at 2x: {design}");
        // At 5x the 10 % CPU offers its whole half: the naive split cannot be told apart.
        let naive = worst(Scheme::Naive, 5);
        assert!((naive - 1.0).abs() < 0.01, "naive split at 5x: {naive}");
    }
}
