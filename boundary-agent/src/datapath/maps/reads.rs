//! Counters and rule hits, summed over CPUs.

use boundary_common::maps::{
    self as abi, COUNTERS_MAP, CounterRow, EVENT_BUDGET_MAP, RULE_HITS_MAP,
};

use crate::datapath::batch;

use super::{Maps, MapsError, map_err};

/// How full a map is.
#[derive(Clone, Debug)]
pub struct Occupancy {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// One CPU-summed counter row out of each CPU's.
fn summed(per_cpu: &[CounterRow]) -> CounterRow {
    let mut sum = CounterRow::default();
    for row in per_cpu {
        for (acc, c) in sum.counters.iter_mut().zip(row.counters.iter()) {
            acc.packets += c.packets;
            acc.bytes += c.bytes;
        }
    }
    sum
}

impl Maps {
    /// Every counter row, summed over CPUs, indexed by `counter_index(slot, direction)`: one
    /// batch read for all workloads.
    pub fn counter_rows(&self) -> Result<Vec<CounterRow>, MapsError> {
        let mut rows = vec![CounterRow::default(); self.max_workloads() as usize * 2];
        batch::read_per_cpu(&self.counters, self.max_workloads() * 2, |i, per_cpu| {
            if let Some(sum) = rows.get_mut(i as usize) {
                *sum = summed(per_cpu);
            }
        })
        .map_err(|source| MapsError::Read {
            name: COUNTERS_MAP,
            source,
        })?;
        Ok(rows)
    }

    /// Packets decided by rules `0..rules`, summed over CPUs: a batch read of each CPU's
    /// block.
    pub fn rule_hit_totals(&self, rules: u32) -> Result<Vec<u64>, MapsError> {
        let rules = rules.min(abi::MAX_RULES);
        let mut hits = vec![0; rules as usize];
        for cpu in 0..self.rule_hit_cpus() {
            let block = batch::read_array(&self.rule_hits, abi::rule_hits_index(cpu, 0), rules)
                .map_err(|source| MapsError::Read {
                    name: RULE_HITS_MAP,
                    source,
                })?;
            for (sum, n) in hits.iter_mut().zip(block) {
                *sum += n;
            }
        }
        Ok(hits)
    }

    /// The CPUs [`RULE_HITS_MAP`] has a block for (as the loader sized it).
    pub(super) fn rule_hit_cpus(&self) -> u32 {
        self.rule_hits.len() / abi::MAX_RULES
    }

    /// Packets rules `0..rules` matched and their rate limits refused, summed over CPUs: one
    /// batch read.
    pub fn rule_limited_totals(&self, rules: u32) -> Result<Vec<u64>, MapsError> {
        let mut limited = vec![0; rules as usize];
        batch::read_per_cpu(&self.rule_limited, rules, |i, per_cpu| {
            if let Some(n) = limited.get_mut(i as usize) {
                *n = per_cpu.iter().sum();
            }
        })
        .map_err(|source| MapsError::Read {
            name: abi::RULE_LIMITED_MAP,
            source,
        })?;
        Ok(limited)
    }

    /// The counter row of (slot, direction), summed over CPUs.
    pub fn counter_row(&self, slot: u16, direction: u8) -> Result<CounterRow, MapsError> {
        let per_cpu = self
            .counters
            .get(&abi::counter_index(slot, direction), 0)
            .map_err(map_err(COUNTERS_MAP))?;
        Ok(summed(&per_cpu))
    }

    /// Packets decided by `rule`, summed over CPUs.
    pub fn rule_hits(&self, rule: u32) -> Result<u64, MapsError> {
        (0..self.rule_hit_cpus()).try_fold(0u64, |sum, cpu| {
            let n = self
                .rule_hits
                .get(&abi::rule_hits_index(cpu, rule), 0)
                .map_err(map_err(RULE_HITS_MAP))?;
            Ok(sum + n)
        })
    }

    /// Packets `rule` matched and its rate limit refused, summed over CPUs.
    pub fn rule_limited(&self, rule: u32) -> Result<u64, MapsError> {
        let per_cpu = self
            .rule_limited
            .get(&rule, 0)
            .map_err(map_err(abi::RULE_LIMITED_MAP))?;
        Ok(per_cpu.iter().sum())
    }

    /// Drop events (sent, lost to sampling or a full ring), summed over CPUs.
    pub fn event_totals(&self) -> Result<(u64, u64), MapsError> {
        let per_cpu = self
            .event_budget
            .get(&0, 0)
            .map_err(map_err(EVENT_BUDGET_MAP))?;
        Ok(per_cpu
            .iter()
            .fold((0, 0), |(s, l), b| (s + b.sent, l + b.lost)))
    }

    /// Entries per map: the live generation's for the policy maps, all for the LRU maps.
    pub fn occupancy(&self, generation: u8) -> Vec<Occupancy> {
        let live = |g: u8| g == generation;
        vec![
            Occupancy {
                map: abi::ENDPOINTS_MAP,
                entries: self
                    .endpoints
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.generation))
                    .count(),
                capacity: abi::MAX_ENDPOINTS / 2,
            },
            Occupancy {
                map: abi::IDENTITIES_MAP,
                entries: self
                    .identities
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.generation))
                    .count(),
                capacity: abi::MAX_IDENTITIES / 2,
            },
            Occupancy {
                map: abi::CIDRS_MAP,
                entries: self
                    .cidrs
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.data()[0]))
                    .count(),
                capacity: abi::MAX_CIDRS / 2,
            },
            Occupancy {
                map: abi::PREFIXES_MAP,
                entries: self
                    .prefixes
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.generation))
                    .count(),
                capacity: u32::try_from(self.prefix_room).unwrap_or(u32::MAX),
            },
            Occupancy {
                map: abi::POLICY_MAP,
                entries: self
                    .policy
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.generation))
                    .count(),
                capacity: abi::MAX_POLICY / 2,
            },
            Occupancy {
                map: abi::RANGES_MAP,
                entries: self
                    .ranges
                    .keys()
                    .filter_map(Result::ok)
                    .filter(|k| live(k.data()[0]))
                    .count(),
                capacity: abi::MAX_RANGES / 2,
            },
            Occupancy {
                map: abi::CONNTRACK_MAP,
                entries: self.conntrack.keys().filter_map(Result::ok).count(),
                capacity: abi::MAX_FLOWS,
            },
            Occupancy {
                map: abi::CONNTRACK_ACCEPTED_MAP,
                entries: self
                    .conntrack_accepted
                    .keys()
                    .filter_map(Result::ok)
                    .count(),
                capacity: abi::MAX_FLOWS,
            },
            Occupancy {
                map: abi::FRAGMENTS_MAP,
                entries: self.fragments.keys().filter_map(Result::ok).count(),
                capacity: abi::MAX_FRAGMENTS,
            },
        ]
    }
}
