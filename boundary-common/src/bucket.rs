//! Token-bucket arithmetic, shared by the datapath (which runs it on every packet a limited
//! rule admits) and the agent (which sizes the buckets, and tests the arithmetic here).
//!
//! ## One bucket as one number (GCRA)
//! A bucket of depth `burst` refilled at `rate` is kept as the time at which it would be full
//! again, its *theoretical arrival time* (`tat`, the Generic Cell Rate Algorithm of ATM,
//! ITU-T I.371): a unit costs `interval = 1/rate` of time, taking `n` units moves `tat` on by
//! `n * interval` from `max(tat, now)`, and is allowed while `tat` stays within
//! `depth = burst * interval` of now. Refill needs no arithmetic of its own (time passing is
//! the refill), a bucket idle for days is full without overflow (`max(tat, now)`), and a clock
//! that stands still or steps back only refills nothing. Being one word, a shared bucket is
//! updated with one compare-and-swap.
//!
//! Time is counted in ticks of 2^-8 ns ([`TICK_SHIFT`]) and intervals carry 16 more fraction
//! bits ([`INTERVAL_SHIFT`]), so the rounding of `1/rate` is below 10^-5 of it for every rate
//! the policy accepts (1/s to 10^11/s, bytes included). Ticks wrap (every 2.3 years of uptime)
//! and are compared as wrapping differences, like TCP sequence numbers: right while a bucket
//! is touched at least once every 2^55 ns (417 days).
//!
//! ## Shared by every CPU, paid for per CPU
//! A compare-and-swap on the shared word on every packet costs 85 ns more than no limit in
//! the datapath with both CPUs on one bucket (`cargo xtask bench`, step 9; the atomic itself is
//! a few ns of that, a spin lock's update about 50); the budget is 25. So each CPU keeps a *credit* of time already taken
//! from the shared bucket ([`Dimension::credit`]) and pays packets from it with no atomic and no
//! clock read: the common case is one per-CPU array read, a multiply and a subtract. When the
//! credit runs short the CPU takes a *batch* (about 1 ms of the rate, at most an eighth of the
//! burst) from the shared bucket with a compare-and-swap; when the shared bucket cannot give a
//! batch it gives exactly what the packet needs, and when it cannot give that the packet is
//! over the limit. A naive per-CPU split (each CPU a bucket of `rate / cpus`) caps the CPU
//! that gets 90 % of a 90/10 split at half the rate while the other leaves its half unused:
//! under twice the rate offered it admits 70 % of the rate (measured in the bench, step 9),
//! and it is right only once every CPU is offered more than its share. Here every CPU draws
//! from the one bucket, and what is held in credits at any moment is at most a batch and a
//! packet per CPU, so a 1-second window is off by at most `cpus * 1 ms` of the rate, and
//! nothing is lost or made up over time.
//!
//! A batch smaller than one packet (a burst under 16 packets, or under 2,000 packets a
//! second) means a compare-and-swap on every packet. And a CPU whose clock reading is older
//! than the other CPU's last draw by more than the bucket's depth sees that draw as debt: a
//! bucket only a few hundred nanoseconds deep (the bench's 10^8/s with a burst of 40) refused
//! 17 of 5.24 million packets within its rate that way; a bucket of a millisecond or more
//! never did.

/// Ticks per nanosecond, as a shift: time in the buckets is `ns << TICK_SHIFT`.
pub const TICK_SHIFT: u32 = 8;
/// Fraction bits of an interval (ticks per unit).
pub const INTERVAL_SHIFT: u32 = 16;
pub const NS_PER_SEC: u64 = 1_000_000_000;
/// What a cost too large to compute costs, and the deepest bucket: 2^56 ticks (3.3 days),
/// far less than the 2^63 within which wrapping comparisons are right. Reached only by absurd
/// packets (megabytes at a rate of bytes per second), which then wait out their debt.
pub const COST_MAX: u64 = 1 << 56;
/// Rates a bucket accepts, per second (packets or bytes).
pub const RATE_MIN: u64 = 1;
pub const RATE_MAX: u64 = 100_000_000_000;
/// Batch a CPU takes from a shared bucket when its credit runs short: 1 ms of time.
pub const BATCH_TICKS: u64 = 1_000_000 << TICK_SHIFT;

/// A monotonic clock reading (ns, `CLOCK_MONOTONIC` = `bpf_ktime_get_ns`) in ticks. Wraps.
pub const fn ticks(ns: u64) -> u64 {
    ns << TICK_SHIFT
}

/// Ticks per unit, with [`INTERVAL_SHIFT`] fraction bits, for `rate` units a second (rounded
/// to nearest). `rate` must be in [`RATE_MIN`]..=[`RATE_MAX`].
pub const fn interval(rate: u64) -> u64 {
    let unit = (NS_PER_SEC as u128) << (TICK_SHIFT + INTERVAL_SHIFT);
    #[expect(
        clippy::cast_possible_truncation,
        reason = "at most 2^24 * 10^9 (rate 1), below 2^54"
    )]
    let interval = ((unit + rate as u128 / 2) / rate as u128) as u64;
    interval
}

/// The depth, in ticks, of a bucket of `burst` units at `rate` a second (`rate` as for
/// [`interval`]; at most [`COST_MAX`]).
pub const fn depth(rate: u64, burst: u64) -> u64 {
    let ticks = (burst as u128 * interval(rate) as u128) >> INTERVAL_SHIFT;
    if ticks > COST_MAX as u128 {
        COST_MAX
    } else {
        #[expect(clippy::cast_possible_truncation, reason = "at most COST_MAX")]
        let ticks = ticks as u64;
        ticks
    }
}

/// The most units whose cost [`cost`] computes exactly at `interval`.
pub const fn max_units(interval: u64) -> u64 {
    match u64::MAX.checked_div(interval) {
        Some(n) => n,
        None => u64::MAX,
    }
}

/// Ticks that `units` cost at `interval` ([`COST_MAX`] past `max_units`).
#[inline]
pub const fn cost(units: u64, interval: u64, max_units: u64) -> u64 {
    if units > max_units {
        COST_MAX
    } else {
        (units * interval) >> INTERVAL_SHIFT
    }
}

/// The bucket's new `tat` after taking `amount` ticks at `now`, or `None` when that would
/// overdraw it: allowed while `max(tat, now) + amount` stays within `depth` of `now`, or
/// whenever the bucket is full (so one packet larger than the whole burst, as a GSO
/// super-packet can be, is let through into debt rather than never; the debt is paid before
/// anything else passes).
#[inline]
pub const fn take(tat: u64, now: u64, amount: u64, depth: u64) -> Option<u64> {
    let ahead = ahead(tat, now, depth);
    if ahead == 0 || (ahead <= depth && amount <= depth - ahead) {
        Some(now.wrapping_add(ahead).wrapping_add(amount))
    } else {
        None
    }
}

/// What a full bucket of `depth` ticks holds at `now` given its `tat`, in ticks (what `trace`
/// shows as the fill).
pub const fn available(tat: u64, now: u64, depth: u64) -> u64 {
    depth.saturating_sub(ahead(tat, now, depth))
}

/// How far `tat` is ahead of `now`: 0 when it is in the past (the bucket is full, and the
/// time it spent full is not saved up), and 0 too when it is further ahead than any bucket of
/// `depth` can be (its depth and one packet's debt): that is a bucket left untouched so long
/// (2^55 ns, 417 days) that the wrapping difference reads its past as future. A bucket idle
/// within 2^57 ticks (6.5 days) of a multiple of 2^64 ticks (2.3 years) still reads as in
/// debt, for at most those 6.5 days.
#[inline]
pub const fn ahead(tat: u64, now: u64, depth: u64) -> u64 {
    let ahead = tat.wrapping_sub(now);
    if ahead.cast_signed() > 0 && ahead <= depth.saturating_add(COST_MAX) {
        ahead
    } else {
        0
    }
}

/// One word shared by every CPU, read and compare-and-swapped: the kernel's `cmpxchg` on a map
/// value, an `AtomicU64` in tests.
pub trait SharedWord {
    fn load(&self) -> u64;
    /// Stores `new` if the word is `old`; returns whether it did.
    fn compare_exchange(&self, old: u64, new: u64) -> bool;
    /// Takes `amount` off the word atomically (gives back a payment).
    fn give_back(&self, amount: u64);
    /// Adds `amount` to the word atomically; returns what it held before.
    fn fetch_add(&self, amount: u64) -> u64;
}

impl<T: SharedWord> SharedWord for &T {
    fn load(&self) -> u64 {
        (**self).load()
    }
    fn compare_exchange(&self, old: u64, new: u64) -> bool {
        (**self).compare_exchange(old, new)
    }
    fn give_back(&self, amount: u64) {
        (**self).give_back(amount);
    }
    fn fetch_add(&self, amount: u64) -> u64 {
        (**self).fetch_add(amount)
    }
}

/// How many times a CPU retries a compare-and-swap that another CPU won. Losing every try
/// means other CPUs kept paying into a bucket that had room (an empty one is refused without
/// a write); the payment is then [`reserve`]d with an atomic add, which cannot lose. The
/// bound is for the verifier.
pub const CAS_TRIES: usize = 8;

/// Pays `amount` ticks into `tat` (a bucket `depth` ticks deep) at `now` with one atomic add,
/// after losing every compare-and-swap: kept when the word it added to had room for it,
/// given back (and refused) when not, so it neither admits a token twice nor refuses one the
/// bucket had. An add cannot do `take`'s `max(tat, now)`: when the word it added to was in
/// the past (the bucket full), one more compare-and-swap moves it to `now + amount`; if that
/// one loses too, a CPU that read the word after the add has set it from its own `now`, and
/// this payment is lost (one packet's worth, never a refill).
#[inline]
pub fn reserve<W: SharedWord>(tat: &W, amount: u64, depth: u64, now: u64) -> bool {
    let old = tat.fetch_add(amount);
    if ahead(old, now, depth) == 0 {
        tat.compare_exchange(old.wrapping_add(amount), now.wrapping_add(amount));
        true
    } else if take(old, now, amount, depth).is_some() {
        true
    } else {
        tat.give_back(amount);
        false
    }
}

/// One dimension (packets or bytes) of a CPU's share of a bucket: the rate's terms, which the
/// agent writes, and the credit, which the CPU keeps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dimension {
    /// Ticks per unit ([`interval`]); 0 when this dimension is not limited.
    pub interval: u64,
    /// [`max_units`] of `interval`.
    pub max_units: u64,
    /// Ticks taken beyond what a packet needs when the credit runs short (0: exactly what it
    /// needs, for rates too low for batching to matter).
    pub batch: u64,
    /// Ticks this CPU has taken from the shared bucket and not spent.
    pub credit: u64,
}

impl Dimension {
    /// The terms for `rate` units a second in a bucket of `depth` ticks.
    pub const fn new(rate: u64, depth: u64) -> Self {
        let interval = interval(rate);
        // A batch worth less than two units saves no compare-and-swap and holds back credit.
        let whole = interval >> INTERVAL_SHIFT;
        let mut batch = BATCH_TICKS;
        if batch > depth / 8 {
            batch = depth / 8;
        }
        if batch < 2 * whole {
            batch = 0;
        }
        Self {
            interval,
            max_units: max_units(interval),
            batch,
            credit: 0,
        }
    }

    /// Ticks that `units` cost here.
    #[inline]
    pub const fn cost(&self, units: u64) -> u64 {
        if self.interval == 0 {
            0
        } else {
            cost(units, self.interval, self.max_units)
        }
    }

    /// Makes the credit cover `cost` ticks, taking from the shared `tat` (of a bucket `depth`
    /// ticks deep) at `now`: a batch more when the bucket has it, else exactly what is missing.
    /// Returns false, taking nothing, when the bucket cannot cover it.
    #[inline]
    pub fn cover<W: SharedWord>(&mut self, cost: u64, tat: &W, depth: u64, now: u64) -> bool {
        if self.credit >= cost {
            return true;
        }
        let need = cost - self.credit;
        for _ in 0..CAS_TRIES {
            let old = tat.load();
            // A batch only when it fits: a full bucket lets one packet larger than it through
            // (`take`), and that packet alone must be what goes into debt.
            let batched = need + self.batch;
            let (new, got) = if batched <= depth
                && let Some(new) = take(old, now, batched, depth)
            {
                (new, batched)
            } else if let Some(new) = take(old, now, need, depth) {
                (new, need)
            } else {
                return false;
            };
            if tat.compare_exchange(old, new) {
                self.credit += got;
                return true;
            }
        }
        // Lost every race to CPUs that found room (see `CAS_TRIES`).
        if reserve(tat, need, depth, now) {
            self.credit += need;
            true
        } else {
            false
        }
    }
}

/// Pays `cost` ticks from the shared `tat` of a bucket `depth` ticks deep at `now`, exactly (no
/// credit: a bucket kept per peer is paid straight into). Returns whether it could.
#[inline]
pub fn pay<W: SharedWord>(tat: &W, cost: u64, depth: u64, now: u64) -> bool {
    for _ in 0..CAS_TRIES {
        let old = tat.load();
        let Some(new) = take(old, now, cost, depth) else {
            return false;
        };
        if tat.compare_exchange(old, new) {
            return true;
        }
    }
    // Lost every race to CPUs that found room (see `CAS_TRIES`).
    reserve(tat, cost, depth, now)
}

/// Pays `costs` into both dimensions of a bucket kept per peer (`tat`, `depth`), exactly: both
/// or neither (a dimension that paid is given back when the other cannot).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "the BPF target passes at most five arguments in registers: not inlined, this one needs the stack, which the verifier refuses"
)]
pub fn pay_both<W: SharedWord>(tat: [&W; 2], costs: [u64; 2], depth: [u64; 2], now: u64) -> bool {
    let packets = depth[0] == 0 || pay(tat[0], costs[0], depth[0], now);
    if !packets {
        return false;
    }
    if depth[1] == 0 || pay(tat[1], costs[1], depth[1], now) {
        return true;
    }
    if depth[0] != 0 {
        tat[0].give_back(costs[0]);
    }
    false
}

/// A bucket's two dimensions, what one CPU keeps of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credit {
    pub packets: Dimension,
    pub bytes: Dimension,
}

/// A bucket as every CPU shares it: each dimension's `tat` and depth (ticks; a depth of 0 with
/// an interval of 0 for a dimension not limited).
pub struct Shared<W> {
    pub tat: [W; 2],
    pub depth: [u64; 2],
}

impl Credit {
    /// Gives back what a packet of `packets` segments and `bytes` bytes paid (a packet that a
    /// second bucket then refused).
    #[inline]
    pub fn refund(&mut self, packets: u64, bytes: u64) {
        self.packets.credit += self.packets.cost(packets);
        self.bytes.credit += self.bytes.cost(bytes);
    }

    /// Whether a packet of `packets` segments and `bytes` bytes is within the limit, paying for
    /// it if so. `now` is read only when the credit runs short (it costs a third of the
    /// budget), hence a closure; `shared` likewise.
    #[inline]
    pub fn admit<W: SharedWord>(
        &mut self,
        packets: u64,
        bytes: u64,
        shared: impl FnOnce() -> Option<Shared<W>>,
        now: impl FnOnce() -> u64,
    ) -> bool {
        let (cp, cb) = (self.packets.cost(packets), self.bytes.cost(bytes));
        if self.packets.credit < cp || self.bytes.credit < cb {
            let Some(s) = shared() else {
                return false;
            };
            let now = now();
            // Packets first, then bytes. What packets took stays in the credit when bytes
            // cannot pay: it pays for the next packet, so nothing is taken twice or lost.
            if !self.packets.cover(cp, &s.tat[0], s.depth[0], now)
                || !self.bytes.cover(cb, &s.tat[1], s.depth[1], now)
            {
                return false;
            }
        }
        self.packets.credit -= cp;
        self.bytes.credit -= cb;
        true
    }
}

#[cfg(test)]
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "test arithmetic on counts far below 2^52"
)]
mod tests {
    extern crate std;
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::{sync::Arc, thread, vec::Vec};

    use super::*;

    impl SharedWord for AtomicU64 {
        fn load(&self) -> u64 {
            self.load(Ordering::Acquire)
        }
        fn compare_exchange(&self, old: u64, new: u64) -> bool {
            AtomicU64::compare_exchange(self, old, new, Ordering::AcqRel, Ordering::Acquire).is_ok()
        }
        fn give_back(&self, amount: u64) {
            self.fetch_sub(amount, Ordering::AcqRel);
        }
        fn fetch_add(&self, amount: u64) -> u64 {
            AtomicU64::fetch_add(self, amount, Ordering::AcqRel)
        }
    }

    #[test]
    fn a_bucket_kept_per_peer_pays_both_dimensions_or_neither() {
        let (pr, br) = (10, 100_000);
        let d = [depth(pr, 5), depth(br, 3_000)];
        let (ip, ib) = (interval(pr), interval(br));
        let costs = |bytes| [cost(1, ip, max_units(ip)), cost(bytes, ib, max_units(ib))];
        let t = tats(SEC);
        let tat = [&t[0], &t[1]];
        assert!(pay_both(tat, costs(2_000), d, ticks(SEC)));
        // Bytes cannot pay 2000 more: packets are given back.
        let before = t[0].load(Ordering::Acquire);
        assert!(!pay_both(tat, costs(2_000), d, ticks(SEC)));
        assert_eq!(t[0].load(Ordering::Acquire), before);
        // Four more small packets fit the packet burst of 5, the fifth does not.
        let n = (0..5)
            .filter(|_| pay_both(tat, costs(100), d, ticks(SEC)))
            .count();
        assert_eq!(n, 4);
    }

    const SEC: u64 = NS_PER_SEC;

    /// A bucket limited in packets: `rate`/s, `burst` deep.
    fn packets(rate: u64, burst: u64) -> (Credit, u64) {
        let depth = depth(rate, burst);
        let credit = Credit {
            packets: Dimension::new(rate, depth),
            bytes: Dimension::default(),
        };
        (credit, depth)
    }

    fn admit(
        c: &mut Credit,
        tat: &[AtomicU64; 2],
        depth: [u64; 2],
        ns: u64,
        p: u64,
        b: u64,
    ) -> bool {
        c.admit(
            p,
            b,
            || {
                Some(Shared {
                    tat: [&tat[0], &tat[1]],
                    depth,
                })
            },
            || ticks(ns),
        )
    }

    fn tats(ns: u64) -> [AtomicU64; 2] {
        [AtomicU64::new(ticks(ns)), AtomicU64::new(ticks(ns))]
    }

    #[test]
    fn a_clock_that_stands_still_admits_exactly_the_burst() {
        for (rate, burst) in [
            (1, 1),
            (1, 10),
            (10, 10),
            (5_000, 500),
            (100_000_000, 1_000),
        ] {
            let (mut c, depth) = packets(rate, burst);
            let tat = tats(SEC);
            let admitted = (0..burst * 3)
                .filter(|_| admit(&mut c, &tat, [depth, 0], SEC, 1, 0))
                .count() as u64;
            assert_eq!(admitted, burst, "rate {rate} burst {burst}");
        }
    }

    #[test]
    fn rates_from_one_per_second_to_a_billion_admit_burst_plus_rate_times_time() {
        for rate in [1, 7, 1_000, 33_333, 1_000_000, 100_000_000, 1_000_000_000] {
            // Deep enough that the bucket is never full while offered 3x (a bucket of 1 wastes
            // what refills while it is full, as it should).
            // Offer 3x the rate, evenly spaced, for 10 s or 3 million packets.
            let n = (3 * rate * 10).min(3_000_000);
            let burst = (rate / 100).max(4).min(n / 10);
            let (mut c, depth) = packets(rate, burst);
            let start = 1_000 * SEC;
            let tat = tats(start);
            let elapsed = (10 * SEC).min(n * SEC / (3 * rate));
            let mut admitted = 0u64;
            for i in 0..n {
                let ns = (u128::from(i) * u128::from(elapsed) / u128::from(n)) as u64;
                if admit(&mut c, &tat, [depth, 0], start + ns, 1, 0) {
                    admitted += 1;
                }
            }
            let expected = burst as f64 + rate as f64 * elapsed as f64 / SEC as f64;
            // Within 0.2 %, or one unit where the run's edge decides it.
            let err = (admitted as f64 - expected).abs();
            assert!(
                err <= 1.0 + 0.002 * expected,
                "rate {rate}: admitted {admitted}, expected {expected}"
            );
        }
    }

    #[test]
    fn a_bucket_idle_for_days_is_full_not_overflowing() {
        let (mut c, depth) = packets(1_000, 100);
        let tat = tats(SEC);
        let later = SEC + 30 * 86_400 * SEC;
        let admitted = (0..1_000)
            .filter(|_| admit(&mut c, &tat, [depth, 0], later, 1, 0))
            .count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn a_clock_that_steps_back_refills_nothing() {
        let (mut c, depth) = packets(1_000, 10);
        let tat = tats(100 * SEC);
        assert_eq!(
            (0..20)
                .filter(|_| admit(&mut c, &tat, [depth, 0], 100 * SEC, 1, 0))
                .count(),
            10
        );
        assert_eq!(
            (0..20)
                .filter(|_| admit(&mut c, &tat, [depth, 0], 50 * SEC, 1, 0))
                .count(),
            0
        );
    }

    #[test]
    fn ticks_wrapping_around_change_nothing() {
        // Uptime at the wrap of the tick counter (2^56 ns).
        let wrap = 1u64 << (64 - TICK_SHIFT);
        let (mut c, depth) = packets(1_000, 10);
        let tat = tats(wrap - SEC / 1_000);
        let mut admitted = 0;
        for ms in 0..2_000u64 {
            let now = (wrap - SEC / 1_000).wrapping_add(ms * SEC / 1_000 / 2);
            admitted += usize::from(admit(&mut c, &tat, [depth, 0], now, 1, 0));
        }
        // 1 s at 1000/s after a full burst of 10: 1010, give or take the edges.
        assert!((1_005..=1_011).contains(&admitted), "{admitted}");
    }

    #[test]
    fn bytes_are_counted_and_a_gso_packet_pays_for_its_bytes() {
        let rate = 1_000_000; // bytes/s
        let depth = depth(rate, 100_000);
        let mut c = Credit {
            packets: Dimension::default(),
            bytes: Dimension::new(rate, depth),
        };
        let tat = tats(SEC);
        // A still clock: 100,000 bytes of burst, 64 KiB packets: the second goes into debt
        // only because the bucket is... not full: it is refused.
        assert!(admit(&mut c, &tat, [0, depth], SEC, 45, 65_536));
        assert!(!admit(&mut c, &tat, [0, depth], SEC, 45, 65_536));
        assert!(admit(&mut c, &tat, [0, depth], SEC, 1, 30_000));
        // 34,464 bytes left, so after 0.1 s (100,000 bytes more) one more 64 KiB packet fits.
        assert!(admit(&mut c, &tat, [0, depth], SEC + SEC / 10, 45, 65_536));
        assert!(!admit(&mut c, &tat, [0, depth], SEC + SEC / 10, 1, 65_536));
    }

    #[test]
    fn a_packet_larger_than_the_burst_passes_a_full_bucket_into_debt() {
        let rate = 10_000; // bytes/s
        let depth = depth(rate, 1_500);
        let mut c = Credit {
            packets: Dimension::default(),
            bytes: Dimension::new(rate, depth),
        };
        let tat = tats(SEC);
        assert!(admit(&mut c, &tat, [0, depth], SEC, 45, 65_536));
        // 6.5 s of debt at 10,000 B/s.
        assert!(!admit(&mut c, &tat, [0, depth], SEC + 6 * SEC, 1, 100));
        assert!(admit(&mut c, &tat, [0, depth], SEC + 7 * SEC, 1, 100));
    }

    #[test]
    fn a_packet_larger_than_the_burst_takes_no_batch_into_debt_with_it() {
        let rate = 1_000_000; // bytes/s: a batch of 1 ms is 1000 bytes
        let depth = depth(rate, 10_000);
        let mut c = Credit {
            packets: Dimension::default(),
            bytes: Dimension::new(rate, depth),
        };
        assert!(c.bytes.batch > 0);
        let tat = tats(SEC);
        assert!(admit(&mut c, &tat, [0, depth], SEC, 45, 65_536));
        assert_eq!(c.bytes.credit, 0, "no credit beyond the packet");
        assert!(!admit(&mut c, &tat, [0, depth], SEC, 1, 100));
    }

    #[test]
    fn costs_never_overflow() {
        let i = interval(RATE_MIN);
        assert_eq!(cost(u64::MAX, i, max_units(i)), COST_MAX);
        assert!(cost(max_units(i), i, max_units(i)) > 0);
        let i = interval(RATE_MAX);
        // Rounding of 1/rate within 10^-5 at the top rate (800 Gbit/s in bytes).
        let exact = (NS_PER_SEC << (TICK_SHIFT + INTERVAL_SHIFT)) as f64 / RATE_MAX as f64;
        assert!(((i as f64 - exact) / exact).abs() < 1e-5);
    }

    #[test]
    fn both_limits_must_allow_and_neither_loses_what_it_took() {
        let (pr, br) = (100, 100_000);
        let pdepth = depth(pr, 10);
        let bdepth = depth(br, 10_000);
        let mut c = Credit {
            packets: Dimension::new(pr, pdepth),
            bytes: Dimension::new(br, bdepth),
        };
        let tat = tats(SEC);
        // Bytes run out first: 10 KB of burst in 1000-byte packets, while packets allow 10.
        let n = (0..20)
            .filter(|_| admit(&mut c, &tat, [pdepth, bdepth], SEC, 1, 1_000))
            .count();
        assert_eq!(n, 10);
        // Packets run out first: 10 packets of 100 bytes after a second of refill.
        let n = (0..20)
            .filter(|_| admit(&mut c, &tat, [pdepth, bdepth], 3 * SEC, 1, 100))
            .count();
        assert_eq!(n, 10);
    }

    /// Two CPUs, 90/10, at 5x a rate (interleaved in one thread, so the clock is one): every
    /// 1 s window admits the rate within 5 %, and the whole run burst + rate x time. The
    /// kernel test (`kernel_ratelimit.rs`) does the same with the datapath on two real CPUs.
    #[test]
    fn skewed_cpus_share_one_rate() {
        let rate = 200_000u64;
        let burst = 2_000;
        let (credit, depth) = packets(rate, burst);
        let mut cpus = [credit, credit];
        let tat = tats(SEC);
        let secs = 5u64;
        let offered = 5 * rate * secs;
        let mut windows = std::vec![0u64; secs as usize];
        for i in 0..offered {
            let ns = i * secs * SEC / offered;
            let cpu = usize::from(i % 10 == 0);
            if admit(&mut cpus[cpu], &tat, [depth, 0], SEC + ns, 1, 0) {
                windows[(ns / SEC) as usize] += 1;
            }
        }
        for (s, w) in windows.iter().enumerate().skip(1) {
            let err = (*w as f64 - rate as f64).abs() / rate as f64;
            assert!(err < 0.05, "window {s}: {w} of {rate}");
        }
        let all: u64 = windows.iter().sum();
        let expected = (burst + rate * secs) as f64;
        assert!(
            ((all as f64 - expected) / expected).abs() < 0.01,
            "{all} of {expected}"
        );
    }

    /// A word on which every compare-and-swap loses (as if other CPUs always won the race)
    /// except the first after an add (the one [`reserve`] makes when it finds the bucket full).
    struct Contended(AtomicU64, core::sync::atomic::AtomicBool);

    impl SharedWord for Contended {
        fn load(&self) -> u64 {
            self.0.load(Ordering::Acquire)
        }
        fn compare_exchange(&self, old: u64, new: u64) -> bool {
            self.1.swap(false, Ordering::AcqRel)
                && self
                    .0
                    .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
        }
        fn give_back(&self, amount: u64) {
            self.0.fetch_sub(amount, Ordering::AcqRel);
        }
        fn fetch_add(&self, amount: u64) -> u64 {
            self.1.store(true, Ordering::Release);
            self.0.fetch_add(amount, Ordering::AcqRel)
        }
    }

    /// Losing every race neither admits beyond the burst (it once did: the packet was let
    /// through unpaid) nor refuses within it, per CPU credit and per peer alike.
    #[test]
    fn losing_every_race_still_pays_exactly() {
        let (rate, burst) = (1_000u64, 50u64);
        let (credit, depth) = packets(rate, burst);
        let tat = Contended(AtomicU64::new(ticks(SEC)), false.into());
        let mut c = credit;
        let admitted = (0..10 * burst)
            .filter(|_| {
                c.admit(
                    1,
                    0,
                    || {
                        Some(Shared {
                            tat: [&tat, &tat],
                            depth: [depth, 0],
                        })
                    },
                    || ticks(SEC),
                )
            })
            .count() as u64;
        assert_eq!(admitted, burst);
        // A second later the rate has refilled exactly `rate` more.
        let later = (0..10 * rate)
            .filter(|_| {
                c.admit(
                    1,
                    0,
                    || {
                        Some(Shared {
                            tat: [&tat, &tat],
                            depth: [depth, 0],
                        })
                    },
                    || ticks(2 * SEC),
                )
            })
            .count() as u64;
        assert_eq!(later, burst.min(rate));

        let peer = Contended(AtomicU64::new(ticks(SEC)), false.into());
        let one = Dimension::new(rate, depth).cost(1);
        let paid = (0..10 * burst)
            .filter(|_| pay(&peer, one, depth, ticks(SEC)))
            .count() as u64;
        assert_eq!(paid, burst);
        // What was refused was given back: the word holds exactly the burst's payments.
        assert_eq!(peer.0.load(Ordering::Acquire), ticks(SEC) + burst * one);
    }

    /// Real threads racing on one bucket with a clock that stands still: no token is taken
    /// twice (never more than the burst) and at most a batch per thread is left in credits.
    #[test]
    fn racing_threads_never_take_a_token_twice() {
        let rate = 10_000_000u64;
        let burst = 200_000;
        let (credit, depth) = packets(rate, burst);
        let tat = Arc::new(tats(SEC));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let tat = Arc::clone(&tat);
                thread::spawn(move || {
                    let mut c = credit;
                    (0..burst)
                        .filter(|_| admit(&mut c, &tat, [depth, 0], SEC, 1, 0))
                        .count() as u64
                })
            })
            .collect();
        let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        let per_batch = credit.packets.batch / (credit.packets.interval >> INTERVAL_SHIFT) + 1;
        assert!(admitted <= burst, "{admitted} > {burst}");
        assert!(
            admitted + 4 * per_batch >= burst,
            "{admitted}, batches of {per_batch}"
        );
    }
}
