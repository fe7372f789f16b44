//! Rate-limit buckets in the maps: which bucket fingerprint holds which bucket
//! (`BND_BUCKET_IDS`, so a restarted agent keeps every bucket and its fill), new buckets made
//! full before any generation names them, and each generation's rule -> bucket half of
//! `BND_RULE_BUCKET`, written before the switch to it like every other table.

use std::{collections::BTreeSet, net::IpAddr, os::fd::AsFd as _};

use aya::maps::{MapData, PerCpuValues};
use boundary_common::{
    bucket::{Credit, Dimension, depth, ticks},
    maps::{
        BUCKET_IDS_MAP, BUCKET_INDEX_MASK, BUCKET_PER_PEER, BUCKETS_MAP, BucketState, CREDITS_MAP,
        FAMILY_IPV6, MAX_RULES, NO_BUCKET, PEER_BUCKETS_MAP, PEER_INSERTS_MAP, PeerBucket, PeerKey,
        RULE_BUCKETS_MAP, rule_bucket_index,
    },
};
use nix::time::{ClockId, clock_gettime};

use super::{Maps, MapsError, batch, keys::family_addr, map_err};
use crate::{
    datapath::syscall,
    policy::{
        Bucket, BucketTable, Tables,
        ratelimit::{MAX_SOURCES_DEFAULT, Per, Rate, RateLimit},
    },
};

/// A bucket's shared state and each CPU's share, full at `now` (ticks).
pub fn fresh_bucket(limit: &RateLimit, now: u64) -> (BucketState, Credit) {
    let mut state = BucketState {
        tat: [now, now],
        max_peers: limit.max_sources,
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
            state.interval[i] = dim.interval;
            state.max_units[i] = dim.max_units;
        }
    }
    (state, credit)
}

/// The limit of a ceiling: packets only, rule-wide.
fn ceiling_limit(rate: Rate) -> RateLimit {
    RateLimit {
        packets: Some(rate),
        bytes: None,
        per: Per::Rule,
        max_sources: MAX_SOURCES_DEFAULT,
        ceiling: None,
    }
}

/// What a generation's entry in `BND_RULE_BUCKET` says of `b`.
fn rule_bucket_value(b: &Bucket) -> u32 {
    if b.limit.per == Per::Rule {
        b.index
    } else {
        b.index | BUCKET_PER_PEER
    }
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
        let is_new = |f: u64, i: u32| live.get(&f) != Some(&i);
        // Ceilings first: a bucket kept per peer names its ceiling.
        let mut fresh: Vec<(u64, u32, RateLimit, u32)> = Vec::new();
        for b in tables.buckets.values() {
            if let (Some((index, f)), Some(rate)) = (b.ceiling, b.limit.ceiling)
                && is_new(f, index)
            {
                fresh.push((f, index, ceiling_limit(rate), NO_BUCKET));
            }
        }
        for b in tables.buckets.values() {
            if is_new(b.fingerprint, b.index) {
                let ceiling = b.ceiling.map_or(NO_BUCKET, |(index, _)| index);
                fresh.push((b.fingerprint, b.index, b.limit, ceiling));
            }
        }
        if !fresh.is_empty() {
            let now = now_ticks()?;
            let cpus = aya::util::nr_cpus()
                .map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))?;
            let per_cpu = |credit: Credit| {
                PerCpuValues::try_from(vec![credit; cpus.get() as usize])
                    .map_err(|e| MapsError::Cpus(e.to_string()))
            };
            for &(_, index, limit, ceiling) in &fresh {
                let (mut state, credit) = fresh_bucket(&limit, now);
                if limit.per == Per::Rule {
                    self.credits
                        .set(index, per_cpu(credit)?, 0)
                        .map_err(map_err(CREDITS_MAP))?;
                } else {
                    state.ceiling = ceiling;
                    self.make_peer_map(index, limit.max_sources)?;
                    let zero = PerCpuValues::try_from(vec![0u64; cpus.get() as usize])
                        .map_err(|e| MapsError::Cpus(e.to_string()))?;
                    self.peer_inserts
                        .set(index, zero, 0)
                        .map_err(map_err(PEER_INSERTS_MAP))?;
                }
                self.buckets
                    .set(index, &state, 0)
                    .map_err(map_err(BUCKETS_MAP))?;
            }
            let (keys, values): (Vec<u64>, Vec<u32>) =
                fresh.iter().map(|&(f, i, _, _)| (f, i)).unzip();
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
                .set(rule_bucket_index(next, rule), &rule_bucket_value(b), 0)
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
        let half = batch::read_array(&self.rule_buckets, rule_bucket_index(g, 0), MAX_RULES)
            .map_err(|source| MapsError::Read {
                name: RULE_BUCKETS_MAP,
                source,
            })?;
        let set: BTreeSet<u32> = (0..MAX_RULES)
            .zip(half)
            .filter(|&(_, bucket)| bucket != NO_BUCKET)
            .map(|(rule, _)| rule)
            .collect();
        Ok(set)
    }

    /// A new LRU map of `max_peers` peers' buckets for per-peer bucket `index`, in place of
    /// whatever map a bucket of that index had before.
    fn make_peer_map(&mut self, index: u32, max_peers: u32) -> Result<(), MapsError> {
        const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
        #[expect(clippy::cast_possible_truncation, reason = "24 and 16 bytes")]
        let obj = aya_obj::Map::new_from_params(
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<PeerKey>() as u32,
            size_of::<PeerBucket>() as u32,
            max_peers,
            0,
        );
        let inner = MapData::create(obj, "BND_PEERS", None).map_err(map_err(PEER_BUCKETS_MAP))?;
        self.peer_buckets
            .set(index, &inner, 0)
            .map_err(map_err(PEER_BUCKETS_MAP))
    }

    /// After a switch (and its grace period): forgets the buckets of `live` that `tables` does
    /// not hold, whose indexes are free again (a bucket is made anew when next given out), and
    /// lets go of their peers' maps.
    pub(super) fn retire_buckets(&mut self, live: &BucketTable, tables: &Tables) {
        let kept: BTreeSet<u64> = tables
            .buckets
            .values()
            .flat_map(|b| b.held().map(|h| h.0))
            .collect();
        let gone: Vec<(u64, u32)> = live
            .iter()
            .filter(|(f, _)| !kept.contains(f))
            .map(|(&f, &i)| (f, i))
            .collect();
        // An index given to another bucket of `tables` keeps the map that bucket made.
        let held: BTreeSet<u32> = tables
            .buckets
            .values()
            .flat_map(|b| b.held().map(|h| h.1))
            .collect();
        for &(_, index) in gone.iter().filter(|g| !held.contains(&g.1)) {
            let fd = self.peer_buckets_fd();
            if let Err(error) = syscall::delete_elem(fd, &index) {
                tracing::warn!(map = PEER_BUCKETS_MAP, index, %error, "a removed limit's peer map stays until its index is given out again");
            }
        }
        let keys: Vec<u64> = gone.iter().map(|g| g.0).collect();
        if let Err(error) = batch::delete(&mut self.bucket_ids, &keys) {
            tracing::warn!(map = BUCKET_IDS_MAP, %error, "removed limits' buckets left recorded; their indexes stay taken until the next swap");
        }
    }

    fn peer_buckets_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.peer_buckets_fd.as_fd()
    }

    /// The LRU table of per-peer bucket `index`.
    fn peer_table(
        &self,
        index: u32,
    ) -> Result<aya::maps::HashMap<MapData, PeerKey, PeerBucket>, MapsError> {
        let data = self
            .peer_buckets
            .get(&index, 0)
            .map_err(map_err(PEER_BUCKETS_MAP))?;
        aya::maps::Map::from_map_data(data)
            .map_err(map_err(PEER_BUCKETS_MAP))?
            .try_into()
            .map_err(map_err(PEER_BUCKETS_MAP))
    }

    /// Peers' buckets per-peer bucket `index` took in, and holds now: their difference is the
    /// peers it evicted (the kernel's LRU evicts in batches and counts nothing).
    pub fn peer_counts(&self, index: u32) -> Result<(u64, u64), MapsError> {
        let inserts: u64 = self
            .peer_inserts
            .get(&index, 0)
            .map_err(map_err(PEER_INSERTS_MAP))?
            .iter()
            .sum();
        let peers = self.peer_table(index)?;
        let live = peers.keys().count() as u64;
        Ok((inserts, live))
    }

    /// The bucket that per-peer bucket `index` keeps for `peer` (an IPv6 peer by its /64, as
    /// the datapath keys it), or `None` when it keeps none (never seen, or evicted). A lookup
    /// from userspace leaves the LRU's order alone (the kernel's `htab_lru_map_lookup_elem_sys`
    /// does not mark the entry used).
    pub fn peer_bucket(&self, index: u32, peer: IpAddr) -> Result<Option<PeerBucket>, MapsError> {
        let peers = self.peer_table(index)?;
        let (family, mut addr) = family_addr(peer);
        if family == FAMILY_IPV6 {
            addr[8..].fill(0);
        }
        let key = PeerKey {
            addr,
            family,
            pad: [0; 7],
        };
        match peers.get(&key, 0) {
            Ok(b) => Ok(Some(b)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(PEER_BUCKETS_MAP)(e)),
        }
    }

    /// The bucket `rule` pays into under `generation`, as the maps hold it: its number, its
    /// fingerprint (from `BND_BUCKET_IDS`), and the limit its state says. A bucket kept per
    /// peer reads as `per: source` (the maps do not say which direction's peer).
    pub fn live_bucket(&self, generation: u8, rule: u32) -> Option<Bucket> {
        let value = self
            .rule_buckets
            .get(&rule_bucket_index(generation, rule), 0)
            .ok()?;
        let index = value & BUCKET_INDEX_MASK;
        if index == NO_BUCKET {
            return None;
        }
        let table = self.bucket_table().ok()?;
        let fingerprint_of = |i: u32| table.iter().find(|e| *e.1 == i).map(|e| *e.0);
        let state = self.buckets.get(&index, 0).ok()?;
        let rate = |d: usize| {
            (state.rate[d] != 0).then_some(Rate {
                per_second: state.rate[d],
                burst: state.burst[d],
            })
        };
        let per_peer = value & BUCKET_PER_PEER != 0;
        let ceiling = if per_peer && state.ceiling != NO_BUCKET {
            let c = self.buckets.get(&state.ceiling, 0).ok()?;
            Some((
                state.ceiling,
                fingerprint_of(state.ceiling)?,
                Rate {
                    per_second: c.rate[0],
                    burst: c.burst[0],
                },
            ))
        } else {
            None
        };
        Some(Bucket {
            index,
            fingerprint: fingerprint_of(index)?,
            limit: RateLimit {
                packets: rate(0),
                bytes: rate(1),
                per: if per_peer { Per::Source } else { Per::Rule },
                max_sources: if per_peer {
                    state.max_peers
                } else {
                    MAX_SOURCES_DEFAULT
                },
                ceiling: ceiling.map(|c| c.2),
            },
            ceiling: ceiling.map(|c| (c.0, c.1)),
        })
    }

    /// A bucket as every CPU shares it, and the credit each CPU holds in it (for `trace` and
    /// the metrics).
    pub fn bucket(&self, index: u32) -> Result<(BucketState, Vec<Credit>), MapsError> {
        let state = self.buckets.get(&index, 0).map_err(map_err(BUCKETS_MAP))?;
        let credits = self.credits.get(&index, 0).map_err(map_err(CREDITS_MAP))?;
        Ok((state, credits.iter().copied().collect()))
    }
}
