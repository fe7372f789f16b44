//! The address table (`TABLE_MAP`, see `boundary_common::maps::table`): a generation's static
//! bindings and prefix-level regions laid out in buckets, written whole before the switch to
//! that generation. The identity and prefix maps keep every key as well: a key its bucket had
//! no room for is found there, and the agent's own reads (`query.rs`) need nothing else.

use std::{collections::BTreeMap, mem::size_of};

use boundary_common::maps::{
    TABLE_BINDING, TABLE_BUCKETS_LOG2, TABLE_MAP, TABLE_REGION, TABLE_SLOTS, TableBucket,
    TableFind, TableSlot, addr_words, table_bucket, table_index,
};

use super::{Maps, MapsError, keys::family_addr, swap::write_map};
use crate::datapath::pins::PinLayout;
use crate::policy::{Tables, compile::folds::Folds, compile::prefixes::PrefixLayout};

/// Buckets written in one batch call (1 MiB).
const WRITE_CHUNK: usize = 8_192;

/// How a generation's keys fit in the table, as this process wrote them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableFill {
    /// Keys in their bucket.
    pub placed: u64,
    /// Keys whose bucket was full: found in the hash maps alone, a probe of each more.
    pub overflowed: u64,
    /// Slots per generation.
    pub slots: u64,
}

/// The buckets of one generation: bucket -> contents, and how the keys fit.
pub(super) fn lay_out(
    slots: impl Iterator<Item = TableSlot>,
    buckets_log2: u32,
) -> (BTreeMap<u32, TableBucket>, TableFill) {
    let mut out: BTreeMap<u32, TableBucket> = BTreeMap::new();
    let mut fill = TableFill {
        slots: (TABLE_SLOTS as u64) << buckets_log2,
        ..TableFill::default()
    };
    for s in slots {
        let tag = TableSlot::tag(s.kind, s.family, s.len);
        let b = out
            .entry(table_bucket(tag, &addr_words(&s.addr), buckets_log2))
            .or_default();
        match b.find(&s) {
            TableFind::Free(i) => {
                b.slots[i] = s;
                fill.placed += 1;
            }
            // Keys are unique; a second one would be the same answer.
            TableFind::Found(_) => {}
            TableFind::Full => fill.overflowed += 1,
        }
    }
    (out, fill)
}

/// The table's slots for `t`'s static bindings and `prefixes`' level regions, with their folds.
pub(super) fn slots_of<'a>(
    t: &'a Tables,
    prefixes: &'a PrefixLayout,
    folds: &'a Folds,
) -> impl Iterator<Item = TableSlot> + 'a {
    let bindings = t
        .identities
        .iter()
        .filter(|(a, _)| !t.earned.contains_key(a))
        .map(|(a, id)| {
            let (family, addr) = family_addr(*a);
            let len = if a.is_ipv4() { 32 } else { 128 };
            TableSlot {
                id: *id,
                fold: folds.get(*id).pack(),
                ..TableSlot::new(TABLE_BINDING, family, len, addr)
            }
        });
    let regions = prefixes.regions.iter().map(|(net, v)| {
        let (family, addr) = family_addr(net.network());
        TableSlot {
            id: v.id,
            deeper: v.deeper,
            fold: folds.get(v.id).pack(),
            ..TableSlot::new(TABLE_REGION, family, net.prefix_len(), addr)
        }
    });
    bindings.chain(regions)
}

impl Maps {
    /// Writes generation `g`'s region of the table: every bucket `slots` fill, and every
    /// bucket this process filled there before, emptied (all of them when it does not know
    /// what the region holds). Only generation `g` reads its region, and `g` is not live: a
    /// failed write leaves nothing to take back, and the next one writes the whole region.
    pub(super) fn write_table(
        &mut self,
        g: u8,
        slots: impl Iterator<Item = TableSlot>,
    ) -> Result<(), MapsError> {
        let log2 = self.table_log2;
        let (buckets, fill) = lay_out(slots, log2);
        let known = self.table_buckets[usize::from(g & 1)].take();
        let emptied: Vec<u32> = match &known {
            Some(before) => before
                .iter()
                .copied()
                .filter(|b| !buckets.contains_key(b))
                .collect(),
            None => (0..1u32 << log2)
                .filter(|b| !buckets.contains_key(b))
                .collect(),
        };
        // In chunks: a whole region is 64 MiB at a million keys.
        let empty = vec![TableBucket::default(); WRITE_CHUNK];
        let mut written = 0;
        for chunk in emptied.chunks(WRITE_CHUNK) {
            let indices: Vec<u32> = chunk.iter().map(|b| table_index(g, *b, log2)).collect();
            write_map(
                &mut self.table,
                TABLE_MAP,
                &indices,
                &empty[..chunk.len()],
                &mut written,
            )?;
        }
        let filled: Vec<(&u32, &TableBucket)> = buckets.iter().collect();
        for chunk in filled.chunks(WRITE_CHUNK) {
            let indices: Vec<u32> = chunk
                .iter()
                .map(|(b, _)| table_index(g, **b, log2))
                .collect();
            let values: Vec<TableBucket> = chunk.iter().map(|(_, v)| **v).collect();
            write_map(&mut self.table, TABLE_MAP, &indices, &values, &mut written)?;
        }
        self.table_buckets[usize::from(g & 1)] = Some(buckets.into_keys().collect());
        self.table_fill[usize::from(g & 1)] = Some(fill);
        Ok(())
    }

    /// How generation `g`'s keys fit in the table, as this process wrote them (`None` before
    /// it wrote that generation).
    pub fn table_fill(&self, g: u8) -> Option<TableFill> {
        self.table_fill[usize::from(g & 1)]
    }
}

/// Buckets per generation that hold `keys` bindings and regions at half load (where about
/// one bucket in twenty is full), at least the shipped count: a power of two.
pub fn table_buckets_for(keys: usize) -> u32 {
    let wanted = u32::try_from(keys.div_ceil(2)).unwrap_or(u32::MAX / 4);
    wanted
        .max(1 << TABLE_BUCKETS_LOG2)
        .checked_next_power_of_two()
        .unwrap_or(1 << 30)
        .min(1 << 30)
}

/// Entries (both generations' buckets) to load the table with, for a policy of `keys`: the
/// pinned table's when there is one, else [`table_buckets_for`] `keys`, twice.
///
/// A pinned table is never resized by a restart: the pin of a map of another size would be
/// replaced, and the programs still attached (until the new ones take their links, after the
/// first swap) would read the new generation from the old table, which does not hold it.
pub fn table_entries(layout: &PinLayout, keys: usize) -> u32 {
    let path = layout.map(TABLE_MAP);
    aya::maps::MapInfo::from_pin(&path)
        .ok()
        .filter(|info| info.value_size() as usize == size_of::<TableBucket>())
        .map(|info| info.max_entries())
        .filter(|e| buckets_log2(*e).is_ok())
        .unwrap_or_else(|| 2 * table_buckets_for(keys))
}

/// `log2` of the buckets per generation of a table map with `entries` buckets (both
/// generations): what the loader sets the datapath's global to.
pub fn buckets_log2(entries: u32) -> Result<u32, MapsError> {
    let per_generation = entries / 2;
    if per_generation < 2 || !per_generation.is_power_of_two() || !entries.is_multiple_of(2) {
        return Err(MapsError::TableSize {
            name: TABLE_MAP,
            entries,
        });
    }
    Ok(per_generation.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(i: u32) -> TableSlot {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&i.to_be_bytes());
        TableSlot {
            id: i,
            ..TableSlot::new(TABLE_BINDING, 4, 32, addr)
        }
    }

    #[test]
    fn every_key_is_placed_or_counted_as_overflow_and_found_where_placed() {
        // 3,000 keys in 1,024 slots: many buckets overflow.
        let (buckets, fill) = lay_out((0..3_000).map(binding), 8);
        assert_eq!(fill.placed + fill.overflowed, 3_000);
        assert_eq!(fill.placed, 1_024, "every slot taken");
        let mut found = 0;
        for i in 0..3_000 {
            let s = binding(i);
            let tag = TableSlot::tag(s.kind, s.family, s.len);
            let b = table_bucket(tag, &addr_words(&s.addr), 8);
            match buckets[&b].find(&s) {
                TableFind::Found(j) => {
                    assert_eq!(buckets[&b].slots[j].id, i);
                    found += 1;
                }
                TableFind::Full => {}
                TableFind::Free(_) => panic!("key {i} neither placed nor its bucket full"),
            }
        }
        assert_eq!(found, fill.placed);
    }

    #[test]
    fn at_half_load_few_keys_overflow() {
        let (_, fill) = lay_out((0..(1u32 << 17)).map(binding), 16);
        assert_eq!(fill.placed + fill.overflowed, 1 << 17);
        // Poisson(2) buckets of four: about 1.7 % of keys past their bucket.
        assert!(fill.overflowed * 100 < (1 << 17) * 4, "{fill:?}");
    }

    #[test]
    fn a_table_is_sized_for_half_load_and_never_below_the_shipped_size() {
        assert_eq!(table_buckets_for(0), 1 << TABLE_BUCKETS_LOG2);
        assert_eq!(table_buckets_for(1_000_000), 1 << 19);
        assert_eq!(table_buckets_for(1 << 20), 1 << 19);
        assert_eq!(table_buckets_for((1 << 20) + 1), 1 << 20);
    }

    #[test]
    fn sizes_must_be_two_powers_of_two() {
        assert_eq!(buckets_log2(2 << 16).ok(), Some(16));
        assert!(buckets_log2(3 << 16).is_err());
        assert!(buckets_log2(2).is_err());
    }
}
