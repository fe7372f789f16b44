//! CIDR identities as prefix levels: the layout that gives a peer's identity in a few hash
//! probes, however many prefixes the policy has.
//!
//! ## Why not the LPM trie
//! The kernel's LPM trie costs one dependent cache miss per trie level it walks: about 17 at
//! 100k random prefixes, 20 at 1M (measured: a first packet at 100k prefixes paid about
//! 2 us more than at 1k). A hash probe costs about two (bucket, element), whatever the size.
//!
//! ## The layout
//! The compiler picks, per family, a few *level* lengths `L1 < L2 < ... < Lk` (k at most
//! [`MAX_PREFIX_LEVELS`], the last the longest prefix length used) and expands every prefix
//! to the next level at or below it in length (a /20 under levels 16 and 24 becomes 16 /24
//! regions): controlled prefix expansion. Every region of every level is one entry of
//! [`PREFIXES_MAP`], keyed by the region's masked address and its level's length, and holds:
//!
//! - `id`: the identity of the longest prefix of the policy, at most the level's length
//!   long, that covers the whole region (leaf pushing: shorter levels' answers are folded
//!   in), or `IDENTITY_WORLD` if none does;
//! - `deeper`: whether a longer prefix lies inside the region (a *marker*: the region exists
//!   for it alone if nothing of its own length covers it).
//!
//! The datapath probes the levels shortest first: a miss ends the walk with the last hit's
//! answer (world if none), a hit without `deeper` ends it with its own. A peer covered only
//! by a /24 under levels 16 and 24 costs two probes, one in no prefix at all one. Most real
//! policies use a handful of lengths, and a policy of one length (a blocklist of /32s, a set
//! of /24s) is one probe. The compiler chooses the fewest levels whose expansion stays
//! within a budget of entries; a prefix set that cannot be laid out so (lengths so spread
//! that every choice expands past the budget) stays in the trie, [`CIDRS_MAP`], for that
//! family: [`PREFIX_LEVELS_TRIE`].

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{CIDRS_MAP, PREFIX_LEVELS_MAP, PREFIXES_MAP};
use super::{FAMILY_IPV4, FAMILY_IPV6, Fold, IDENTITY_WORLD, PackedFold};

/// Levels per family at most: the datapath's walk is unrolled this many times. Each level
/// costs the verifier about 13k instructions in XDP and 26k in each TC program (its walk is
/// checked at every call): five keep all three below what they took with the trie alone
/// (328k, 481k, 485k against 360k, 571k, 495k), and leave a policy of six or more lengths
/// far apart to the trie.
pub const MAX_PREFIX_LEVELS: usize = 5;

/// [`PrefixLevels::count`] of a family whose prefixes are in the trie ([`CIDRS_MAP`]). Zero,
/// so that a levels entry no agent wrote yet sends the lookup where an agent that knew no
/// levels put the prefixes. (An upgrade from such an agent replaces every map all the same,
/// see `ABI_VERSION`: its programs, attached until the new ones take their links, read the
/// trie alone.)
pub const PREFIX_LEVELS_TRIE: u8 = 0;
/// ... of a family with no prefix at all: every peer of it is `world`, no lookup.
pub const PREFIX_LEVELS_NONE: u8 = 0xff;

/// Value of [`PREFIX_LEVELS_MAP`] (one per generation): each family's level lengths, shortest
/// first.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixLevels {
    /// Levels of IPv4 and of IPv6, or [`PREFIX_LEVELS_TRIE`] / [`PREFIX_LEVELS_NONE`].
    pub count: [u8; 2],
    pub pad: [u8; 2],
    /// `IDENTITY_WORLD`, always: the datapath's walk starts from this field rather than
    /// from the constant, so that the verifier sees the same unknown value on every exit of
    /// the walk and checks what follows once, not once per exit. A zeroed entry (0 here is
    /// the `any` identity) is never read: the agent writes a generation's entry before it
    /// switches to it, and the datapath reads it only under `CFG_HAS_CIDRS`, which the switch
    /// writes.
    pub world: u32,
    /// Lengths (in bits of the address) of the levels in use, shortest first.
    pub v4: [u8; MAX_PREFIX_LEVELS],
    pub v6: [u8; MAX_PREFIX_LEVELS],
    pub tail: [u8; 2],
    /// The fold of `world` (see [`Fold`]): a peer in no prefix finds it here.
    pub world_fold: PackedFold,
}

impl PrefixLevels {
    /// Both families in the trie (what a zeroed entry says).
    pub const TRIE: Self = Self {
        count: [PREFIX_LEVELS_TRIE; 2],
        pad: [0; 2],
        world: IDENTITY_WORLD,
        v4: [0; MAX_PREFIX_LEVELS],
        v6: [0; MAX_PREFIX_LEVELS],
        tail: [0; 2],
        world_fold: PackedFold::NONE,
    };
}

impl Default for PrefixLevels {
    fn default() -> Self {
        Self::TRIE
    }
}

/// The index of `family` in [`PrefixLevels::count`].
#[inline]
pub const fn family_index(family: u8) -> usize {
    if family == FAMILY_IPV6 { 1 } else { 0 }
}

/// Key of [`PREFIXES_MAP`]: one region of a level, its address masked to the level's length.
// Aligned as `AddrKey` is (endpoint.rs), for the same reason.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrefixKey {
    pub generation: u8,
    pub family: u8,
    /// The level's length in bits.
    pub len: u8,
    pub pad: u8,
    pub addr: [u8; 16],
}

impl PrefixKey {
    /// The key of the region of level `len` that holds `addr` (IPv4 in the first 4 bytes).
    #[inline(always)]
    #[expect(
        clippy::inline_always,
        reason = "called, not inlined, LLVM keeps a register across the call that the verifier counts as clobbered (R2 !read_ok)"
    )]
    pub fn new(generation: u8, family: u8, len: u8, addr: &[u8; 16]) -> Self {
        Self {
            generation,
            family,
            len,
            pad: 0,
            addr: masked(addr, len),
        }
    }
}

/// `addr` with every bit past the first `len` cleared.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called, not inlined, LLVM keeps a register across the call that the verifier counts as clobbered (R2 !read_ok)"
)]
pub fn masked(addr: &[u8; 16], len: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    mask_into(&mut out, addr, len);
    out
}

/// Writes `addr` with every bit past the first `len` cleared into `out`, a word at a time (in
/// place: the datapath's walk has little stack to spare).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "called, not inlined, LLVM keeps a register across the call that the verifier counts as clobbered (R2 !read_ok)"
)]
pub fn mask_into(out: &mut [u8; 16], addr: &[u8; 16], len: u8) {
    let len = u32::from(len);
    let mut i = 0usize;
    let mut start = 0u32;
    while i < 4 {
        let mask = if len >= start + 32 {
            u32::MAX
        } else if len <= start {
            0
        } else {
            u32::MAX << (32 - (len - start))
        };
        let w = u32::from_be_bytes([
            addr[4 * i],
            addr[4 * i + 1],
            addr[4 * i + 2],
            addr[4 * i + 3],
        ]) & mask;
        let b = w.to_be_bytes();
        out[4 * i] = b[0];
        out[4 * i + 1] = b[1];
        out[4 * i + 2] = b[2];
        out[4 * i + 3] = b[3];
        i += 1;
        start += 32;
    }
}

/// Value of [`PREFIXES_MAP`] (see the module doc) and of [`CIDRS_MAP`] (where `deeper` is
/// not read).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixValue {
    pub id: u32,
    /// 1 when a longer prefix lies inside the region: the walk goes on to the next level.
    pub deeper: u8,
    pub pad: u8,
    /// The fold of `id` (see [`Fold`]).
    pub fold: PackedFold,
    pub tail: [u8; 2],
}

impl PrefixValue {
    /// `id`'s region, with nothing folded.
    pub const fn new(id: u32, deeper: bool) -> Self {
        Self {
            id,
            deeper: deeper as u8,
            pad: 0,
            fold: PackedFold::NONE,
            tail: [0; 2],
        }
    }

    /// With `fold` for its identity.
    #[must_use]
    pub const fn with_fold(self, fold: Fold) -> Self {
        Self {
            fold: fold.pack(),
            ..self
        }
    }

    /// `world`, with nothing folded: where the datapath's identity starts.
    pub const WORLD: Self = Self::new(IDENTITY_WORLD, false);
}

/// Address bits of `family`.
pub const fn family_bits(family: u8) -> u8 {
    if family == FAMILY_IPV4 { 32 } else { 128 }
}

const _: () = {
    assert!(size_of::<PrefixKey>() == 20);
    assert!(size_of::<PrefixValue>() == 16);
    assert!(size_of::<PrefixLevels>() == 10 + 2 * MAX_PREFIX_LEVELS + 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_exactly_the_prefix() {
        let a = [0xffu8; 16];
        for len in 0..=128u8 {
            let m = masked(&a, len);
            let ones: u32 = m.iter().map(|b| b.count_ones()).sum();
            assert_eq!(ones, u32::from(len), "len {len}");
            // The ones are the leading bits.
            let v = u128::from_be_bytes(m);
            assert_eq!(v.leading_ones(), u32::from(len), "len {len}");
        }
        let v4 = [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(masked(&v4, 20)[..4], [10, 1, 0, 0]);
        assert_eq!(masked(&v4, 23)[..4], [10, 1, 2, 0]);
        assert_eq!(masked(&v4, 31)[..4], [10, 1, 2, 2]);
        assert_eq!(masked(&v4, 32)[..4], [10, 1, 2, 3]);
    }
}
