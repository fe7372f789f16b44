//! The address table: static bindings and prefix-level regions in an open-addressed array,
//! so that a flow's first packet finds its peer's identity in one cache line.
//!
//! ## Why
//! A kernel hash map costs two dependent cache misses per probe at scale: the bucket array's
//! line (16 MiB of heads at a million entries, in 4 KiB pages), then the element it points
//! to. At a million bindings that was most of the first packet's cost over a small policy's.
//! Here the key's hash picks a [`TableBucket`], one 128-byte block of four [`TableSlot`]s
//! that hold the key and its answer side by side: one miss (the block's two lines are
//! adjacent, which the hardware's adjacent-line prefetch fetches as a pair).
//!
//! ## The rules
//! - Each generation has its own region of [`TABLE_MAP`]: buckets
//!   `[g * n, (g + 1) * n)` where `n` is the buckets per generation, a power of two the
//!   loader sets ([`TABLE_BUCKETS_LOG2_GLOBAL`]).
//! - The agent writes a generation's region whole before it switches to it, and never
//!   while it is live: a bucket is never read half-written.
//! - A key goes to the first free slot of its bucket. A bucket with a free slot and no match
//!   is a definitive miss; a full bucket without a match sends the reader to the hash map
//!   the key would be in without the table ([`IDENTITIES_MAP`] or [`PREFIXES_MAP`]), which
//!   holds every key the table holds and the ones a full bucket left out.
//! - Earned bindings are never in the table (they come and go inside a generation): a peer
//!   the table does not bind is looked up in the identity map as well when
//!   [`CFG_EARNED`] is set. A static binding wins over an earned one, so the table's answer
//!   for an address is the final one.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{CFG_EARNED, IDENTITIES_MAP, PREFIXES_MAP, TABLE_MAP};
use super::{PackedFold, words_hash};

/// Slots per bucket.
pub const TABLE_SLOTS: usize = 4;

/// [`TableSlot::kind`] of a free slot (a zeroed one).
pub const TABLE_FREE: u8 = 0;
/// ... of a static binding: `len` is the family's address length.
pub const TABLE_BINDING: u8 = 1;
/// ... of a region of the prefix levels: `len` is its level's length, `addr` masked to it.
pub const TABLE_REGION: u8 = 2;

/// One key and its answer.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableSlot {
    /// The address (IPv4 in the first four bytes), as in `AddrKey`.
    pub addr: [u8; 16],
    /// [`TABLE_FREE`], [`TABLE_BINDING`] or [`TABLE_REGION`].
    pub kind: u8,
    pub family: u8,
    pub len: u8,
    /// A region's `deeper` (see `PrefixValue`); 0 for a binding.
    pub deeper: u8,
    pub id: u32,
    /// The fold of `id` (see `Fold`).
    pub fold: PackedFold,
}

impl TableSlot {
    /// The slot of `kind`, `family`, `len` and `addr` (masked already for a region).
    pub const fn new(kind: u8, family: u8, len: u8, addr: [u8; 16]) -> Self {
        Self {
            addr,
            kind,
            family,
            len,
            deeper: 0,
            id: 0,
            fold: PackedFold::NONE,
        }
    }

    /// `kind`, `family` and `len` as one word (a zero fourth byte): what the datapath compares
    /// a slot's first three tag bytes with, and what seeds the key's hash.
    #[inline(always)]
    #[expect(
        clippy::inline_always,
        reason = "the datapath's probe; a call would cost the verifier per level"
    )]
    pub const fn tag(kind: u8, family: u8, len: u8) -> u32 {
        u32::from_ne_bytes([kind, family, len, 0])
    }
}

/// One bucket: the 128-byte block a key's hash picks.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TableBucket {
    pub slots: [TableSlot; TABLE_SLOTS],
}

impl TableBucket {
    /// The slot holding the key of `probe` (`kind`, `family`, `len`, `addr`), or where it
    /// would go.
    pub fn find(&self, probe: &TableSlot) -> TableFind {
        for (i, s) in self.slots.iter().enumerate() {
            if s.kind == TABLE_FREE {
                return TableFind::Free(i);
            }
            if s.kind == probe.kind
                && s.family == probe.family
                && s.len == probe.len
                && s.addr == probe.addr
            {
                return TableFind::Found(i);
            }
        }
        TableFind::Full
    }
}

/// What a bucket says about a key ([`TableBucket::find`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFind {
    /// In this slot.
    Found(usize),
    /// Not in the table: this slot is free (a definitive miss).
    Free(usize),
    /// Not in the bucket, which is full: in the hash map, if anywhere.
    Full,
}

/// The `.rodata` global of the datapath holding `log2` of the buckets per generation, which
/// the loader sets from the map's size.
pub const TABLE_BUCKETS_LOG2_GLOBAL: &str = "BND_TABLE_LOG2";
/// Buckets per generation of a map loaded as shipped: 16,384 (2 MiB per generation), room
/// for about 32,000 keys at half load, where a bucket is full about one time in twenty. The
/// agent loads a larger one for a policy with more (`table_buckets_for`); past what the
/// table holds, keys are found in the hash maps, a probe more.
pub const TABLE_BUCKETS_LOG2: u32 = 14;

/// The bucket (within its generation's region of `buckets_log2` bits) of a key: its tag
/// (`TableSlot::tag`) and its address's words (`addr_words`).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "the datapath's probe; a call would cost the verifier per level"
)]
#[must_use]
pub fn table_bucket(tag: u32, words: &[u32; 4], buckets_log2: u32) -> u32 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the top `buckets_log2` bits, at most 30"
    )]
    let bucket =
        (words_hash(u64::from(tag), words, 0xff51_afd7_ed55_8ccd) >> (64 - buckets_log2)) as u32;
    bucket
}

/// The [`TABLE_MAP`] index of `bucket` in `generation`.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "the datapath's probe; a call would cost the verifier per level"
)]
#[must_use]
pub const fn table_index(generation: u8, bucket: u32, buckets_log2: u32) -> u32 {
    (((generation & 1) as u32) << buckets_log2) | bucket
}

const _: () = {
    assert!(size_of::<TableSlot>() == 32);
    assert!(size_of::<TableBucket>() == 128);
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::addr_words;

    #[test]
    fn a_bucket_finds_its_keys_and_stops_at_the_first_free_slot() {
        let mut b = TableBucket::default();
        let a = TableSlot::new(
            TABLE_BINDING,
            4,
            32,
            [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(b.find(&a), TableFind::Free(0));
        b.slots[0] = a;
        assert_eq!(b.find(&a), TableFind::Found(0));
        // The same address as a /32 region is another key.
        let r = TableSlot {
            kind: TABLE_REGION,
            ..a
        };
        assert_eq!(b.find(&r), TableFind::Free(1));
        for (len, s) in (1u8..).zip(1..TABLE_SLOTS) {
            b.slots[s] = TableSlot { len, ..r };
        }
        assert_eq!(b.find(&r), TableFind::Full);
    }

    #[test]
    fn buckets_stay_in_their_generation() {
        let addr = [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for log2 in [1, 10, 16, 20, 24] {
            let b = table_bucket(
                TableSlot::tag(TABLE_BINDING, 4, 32),
                &addr_words(&addr),
                log2,
            );
            assert!(b < 1 << log2);
            assert_eq!(table_index(0, b, log2), b);
            assert_eq!(table_index(1, b, log2), b + (1 << log2));
        }
    }
}
