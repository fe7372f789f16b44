//! Which rule holds which id (`BND_RULE_IDS`: fingerprint -> id), so that a rule's
//! counters stay its own across reloads and restarts. The compiler keeps the ids this table
//! gives (`policy::compile_keeping`); a swap records the new policy's ids before the switch
//! (zeroing the hits of any id that changes hands) and forgets the removed rules' after it.

use aya::maps::PerCpuValues;
use boundary_common::maps::{RULE_HITS_MAP, RULE_IDS_MAP, RULE_LIMITED_MAP, rule_hits_index};

use crate::{datapath::batch, policy::RuleTable, policy::Tables};

use super::{Maps, MapsError, map_err};

impl Maps {
    /// The installed rules' ids by fingerprint: what this process last installed, else read
    /// from the map (a restarted agent).
    pub fn rule_table(&self) -> Result<RuleTable, MapsError> {
        if let Some(known) = &self.rule_ids_known {
            return Ok(known.clone());
        }
        self.scan_rule_ids()
    }

    fn scan_rule_ids(&self) -> Result<RuleTable, MapsError> {
        self.rule_ids
            .iter()
            .map(|r| r.map_err(map_err(RULE_IDS_MAP)))
            .collect()
    }

    /// Before a switch: records the ids `tables` gives its rules, and zeroes the hits of every
    /// id that now names another rule than `live` says (or none), so a new rule starts from
    /// zero. Returns what was live, for [`Maps::retire_rule_ids`].
    pub(super) fn record_rule_ids(&mut self, tables: &Tables) -> Result<RuleTable, MapsError> {
        let live = self.rule_table()?;
        let changed: Vec<(u64, u32)> = tables
            .rules
            .iter()
            .filter(|(id, r)| live.get(&r.fingerprint) != Some(*id))
            .map(|(&id, r)| (r.fingerprint, id))
            .collect();
        if changed.is_empty() {
            return Ok(live);
        }
        // One batch read tells which of them hold counts (an id a removed rule left behind).
        let rows = changed.iter().map(|c| c.1 + 1).max().unwrap_or(0);
        let hits = self.rule_hit_totals(rows)?;
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))?;
        for &(_, id) in &changed {
            if hits.get(id as usize).is_some_and(|&h| h != 0) {
                let zero = || {
                    PerCpuValues::try_from(vec![0u64; cpus.get() as usize])
                        .map_err(|e| MapsError::Cpus(e.to_string()))
                };
                for cpu in 0..self.rule_hit_cpus() {
                    self.rule_hits
                        .set(rule_hits_index(cpu, id), &0, 0)
                        .map_err(map_err(RULE_HITS_MAP))?;
                }
                // What the limit refused is a part of the hits: zero with them.
                self.rule_limited
                    .set(id, zero()?, 0)
                    .map_err(map_err(RULE_LIMITED_MAP))?;
            }
        }
        // The map may hold more than one policy's ids until the swap ends: what is not known
        // exactly is read again next time.
        self.rule_ids_known = None;
        let (keys, values): (Vec<u64>, Vec<u32>) = changed.into_iter().unzip();
        batch::update(&mut self.rule_ids, &keys, &values).map_err(|source| MapsError::Write {
            name: RULE_IDS_MAP,
            source,
        })?;
        Ok(live)
    }

    /// After a switch (and its grace period): forgets the rules of `live` that `tables` does
    /// not hold, whose ids are free again.
    pub(super) fn retire_rule_ids(&mut self, live: &RuleTable, tables: &Tables) {
        let kept: RuleTable = tables
            .rules
            .iter()
            .map(|(&id, r)| (r.fingerprint, id))
            .collect();
        let gone: Vec<u64> = live
            .keys()
            .filter(|f| !kept.contains_key(f))
            .copied()
            .collect();
        match batch::delete(&mut self.rule_ids, &gone) {
            Ok(_) => self.rule_ids_known = Some(kept),
            Err(error) => {
                tracing::warn!(map = RULE_IDS_MAP, %error, "removed rules' ids left behind; the next swap reads the map again");
            }
        }
    }
}
