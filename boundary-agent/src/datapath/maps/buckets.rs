//! Rate-limit buckets in the maps: which bucket fingerprint holds which bucket
//! (`BND_BUCKET_IDS`, so a restarted agent keeps every bucket and its fill), new buckets made
//! full before any generation names them, and each generation's rule -> bucket half of
//! `BND_RULE_BUCKET`, written before the switch to it like every other table.

use std::collections::BTreeSet;

use aya::maps::PerCpuValues;
use boundary_common::{
    bucket::{Credit, Dimension, depth, ticks},
    maps::{
        BUCKET_IDS_MAP, BUCKETS_MAP, BucketState, CREDITS_MAP, MAX_RULES, NO_BUCKET,
        RULE_BUCKETS_MAP, rule_bucket_index,
    },
};
use nix::time::{ClockId, clock_gettime};

use super::{Maps, MapsError, batch, map_err};
use crate::policy::{BucketTable, Tables, ratelimit::RateLimit};

/// A bucket's shared state and each CPU's share, full at `now` (ticks).
pub fn fresh_bucket(limit: &RateLimit, now: u64) -> (BucketState, Credit) {
    let mut state = BucketState {
        tat: [now, now],
        ..BucketState::default()
    };
    let mut credit = Credit::default();
    for (i, rate, dim) in [
        (0, limit.packets, &mut credit.packets),
        (1, limit.bytes, &mut credit.bytes),
    ] {
        if let Some(r) = rate {
            state.depth[i] = depth(r.per_second, r.burst);
            state.rate[i] = r.per_second;
            state.burst[i] = r.burst;
            *dim = Dimension::new(r.per_second, state.depth[i]);
        }
    }
    (state, credit)
}

/// Now on the datapath's clock (`bpf_ktime_get_ns` is `CLOCK_MONOTONIC`), in ticks.
pub fn now_ticks() -> Result<u64, MapsError> {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_err(|e| MapsError::Cpus(format!("reading CLOCK_MONOTONIC: {e}")))?;
    let ns = u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(t.tv_nsec()).unwrap_or(0);
    Ok(ticks(ns))
}

impl Maps {
    /// Bucket fingerprint -> bucket, as installed.
    pub fn bucket_table(&self) -> Result<BucketTable, MapsError> {
        self.bucket_ids
            .iter()
            .map(|r| r.map_err(map_err(BUCKET_IDS_MAP)))
            .collect()
    }

    /// Before the switch to generation `next`: makes every bucket `tables` has and the live
    /// table does not (full, every CPU's credit empty), records them, and writes `next`'s
    /// rule -> bucket entries (and clears the ones an older policy left there). Returns what
    /// was live, for [`Maps::retire_buckets`].
    pub(super) fn install_buckets(
        &mut self,
        next: u8,
        tables: &Tables,
    ) -> Result<BucketTable, MapsError> {
        let live = self.bucket_table()?;
        let fresh: Vec<_> = tables
            .buckets
            .values()
            .filter(|b| live.get(&b.fingerprint) != Some(&b.index))
            .collect();
        if !fresh.is_empty() {
            let now = now_ticks()?;
            let cpus = aya::util::nr_cpus()
                .map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))?;
            for b in &fresh {
                let (state, credit) = fresh_bucket(&b.limit, now);
                let credits = PerCpuValues::try_from(vec![credit; cpus.get() as usize])
                    .map_err(|e| MapsError::Cpus(e.to_string()))?;
                self.credits
                    .set(b.index, credits, 0)
                    .map_err(map_err(CREDITS_MAP))?;
                self.buckets
                    .set(b.index, &state, 0)
                    .map_err(map_err(BUCKETS_MAP))?;
            }
            let (keys, values): (Vec<u64>, Vec<u32>) =
                fresh.iter().map(|b| (b.fingerprint, b.index)).unzip();
            batch::update(&mut self.bucket_ids, &keys, &values).map_err(|source| {
                MapsError::Write {
                    name: BUCKET_IDS_MAP,
                    source,
                }
            })?;
        }
        let set_before = self.rule_buckets_set(next)?;
        let mut set_now = BTreeSet::new();
        for (&rule, b) in &tables.buckets {
            self.rule_buckets
                .set(rule_bucket_index(next, rule), &b.index, 0)
                .map_err(map_err(RULE_BUCKETS_MAP))?;
            set_now.insert(rule);
        }
        for &rule in set_before.difference(&set_now) {
            self.rule_buckets
                .set(rule_bucket_index(next, rule), &NO_BUCKET, 0)
                .map_err(map_err(RULE_BUCKETS_MAP))?;
        }
        self.rule_buckets_known[usize::from(next & 1)] = Some(set_now);
        Ok(live)
    }

    /// The rules of generation `g` that pay into a bucket: as this process wrote them, or read
    /// from the map (once per process).
    fn rule_buckets_set(&mut self, g: u8) -> Result<BTreeSet<u32>, MapsError> {
        if let Some(known) = &self.rule_buckets_known[usize::from(g & 1)] {
            return Ok(known.clone());
        }
        let mut set = BTreeSet::new();
        for rule in 0..MAX_RULES {
            let bucket = self
                .rule_buckets
                .get(&rule_bucket_index(g, rule), 0)
                .map_err(map_err(RULE_BUCKETS_MAP))?;
            if bucket != NO_BUCKET {
                set.insert(rule);
            }
        }
        Ok(set)
    }

    /// After a switch (and its grace period): forgets the buckets of `live` that `tables` does
    /// not hold, whose indexes are free again (a bucket is made anew when next given out).
    pub(super) fn retire_buckets(&mut self, live: &BucketTable, tables: &Tables) {
        let kept: BTreeSet<u64> = tables.buckets.values().map(|b| b.fingerprint).collect();
        let gone: Vec<u64> = live.keys().filter(|f| !kept.contains(f)).copied().collect();
        if let Err(error) = batch::delete(&mut self.bucket_ids, &gone) {
            tracing::warn!(map = BUCKET_IDS_MAP, %error, "removed limits' buckets left recorded; their indexes stay taken until the next swap");
        }
    }

    /// A bucket as every CPU shares it, and the credit each CPU holds in it (for `trace` and
    /// the metrics).
    pub fn bucket(&self, index: u32) -> Result<(BucketState, Vec<Credit>), MapsError> {
        let state = self.buckets.get(&index, 0).map_err(map_err(BUCKETS_MAP))?;
        let credits = self.credits.get(&index, 0).map_err(map_err(CREDITS_MAP))?;
        Ok((state, credits.iter().copied().collect()))
    }
}
