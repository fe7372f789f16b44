//! Identity bindings: what an exact-address entry of the identity map holds (static from the
//! policy, or earned over mTLS with a deadline), the bind sequences cached verdicts are checked
//! against, and the agent's record of each earned binding.

use core::mem::size_of;

use super::{Fold, PackedFold};

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{BIND_SEQ_MAP, BOUND_MAP, EARNED_MAP, IDENTITIES_MAP};

/// Value of [`IDENTITIES_MAP`]: the identity an address has in a generation and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityValue {
    pub id: u32,
    /// [`BINDING_STATIC`] or [`BINDING_MTLS`].
    pub source: u8,
    pub pad: u8,
    /// The fold of `id` (see [`Fold`]).
    pub fold: PackedFold,
    pub tail: [u8; 2],
    /// `CLOCK_MONOTONIC` ns (as `bpf_ktime_get_coarse_ns` reads it) from which the binding
    /// counts as absent, or [`NEVER`]. The datapath checks it itself, so an expired binding
    /// stops admitting its peer while no agent runs.
    pub expires: u64,
}

/// [`IdentityValue::source`]: a binding from the policy's `identities:`.
pub const BINDING_STATIC: u8 = 0;
/// ... a binding a peer earned by presenting its X.509-SVID over mTLS.
pub const BINDING_MTLS: u8 = 1;
/// [`IdentityValue::expires`] of a binding that does not expire.
pub const NEVER: u64 = 0;

impl IdentityValue {
    pub const fn new(id: u32, source: u8, expires: u64) -> Self {
        Self {
            id,
            source,
            pad: 0,
            fold: PackedFold::NONE,
            tail: [0; 2],
            expires,
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

    /// Whether the binding counts at `now` (monotonic ns).
    #[inline]
    #[must_use]
    pub const fn live_at(&self, now: u64) -> bool {
        self.expires == NEVER || now < self.expires
    }
}

/// Slots of [`BIND_SEQ_MAP`]: addresses share a bind sequence by [`bind_seq_slot`].
pub const BIND_SEQ_SLOTS: u32 = 4_096;
/// `log2(BIND_SEQ_SLOTS)`.
pub const BIND_SEQ_BITS: u32 = 12;

/// The [`BIND_SEQ_MAP`] slot of an address (the 16 bytes of an `AddrKey`):
/// a multiplicative hash of its words. Not keyed: choosing addresses that share a slot gains
/// nothing but misses for one's own flows while bindings change.
#[inline]
#[must_use]
pub fn bind_seq_slot(addr: &[u8; 16]) -> u32 {
    // The top BIND_SEQ_BITS bits: they fit.
    (addr_hash(addr, 0x9e37_79b9_7f4a_7c15) >> (64 - BIND_SEQ_BITS)) as u32
}

/// A multiplicative hash of an address's four words with `multiplier` (odd): its top bits
/// are the ones to use.
#[inline]
#[must_use]
const fn addr_hash(addr: &[u8; 16], multiplier: u64) -> u64 {
    words_hash(0, &addr_words(addr), multiplier)
}

/// [`addr_hash`] of an address read as its four native-endian words ([`addr_words`]),
/// starting from `seed` rather than 0 (what else the key holds).
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "the datapath's table probe; a call would cost the verifier per level"
)]
#[must_use]
pub const fn words_hash(seed: u64, words: &[u32; 4], multiplier: u64) -> u64 {
    let mut h: u64 = seed;
    let mut i = 0;
    while i < 4 {
        h = (h ^ words[i] as u64).wrapping_mul(multiplier);
        i += 1;
    }
    h
}

/// The four native-endian words of an address.
#[inline]
#[must_use]
pub const fn addr_words(addr: &[u8; 16]) -> [u32; 4] {
    let mut words = [0u32; 4];
    let mut i = 0;
    while i < 4 {
        words[i] = u32::from_ne_bytes([
            addr[4 * i],
            addr[4 * i + 1],
            addr[4 * i + 2],
            addr[4 * i + 3],
        ]);
        i += 1;
    }
    words
}

/// `log2` of the bits per generation of [`BOUND_MAP`]: 2 MiB, so that at a million bindings
/// a peer without one finds its bit clear about 94 % of the time, and the bitmap of a
/// generation can stay in the last-level cache where the identity map's bucket array (32 MiB
/// and more) cannot.
pub const BOUND_BITS_LOG2: u32 = 24;
/// Words per generation of [`BOUND_MAP`].
pub const BOUND_WORDS: u32 = (1 << BOUND_BITS_LOG2) / 64;

/// The [`BOUND_MAP`] bit of an address (the 16 bytes of an `AddrKey`): a multiplicative hash
/// of its words, as [`bind_seq_slot`] with another multiplier.
#[inline]
#[must_use]
pub fn bound_bit(addr: &[u8; 16]) -> u32 {
    // The top BOUND_BITS_LOG2 bits: they fit.
    (addr_hash(addr, 0xc2b2_ae3d_27d4_eb4f) >> (64 - BOUND_BITS_LOG2)) as u32
}

/// The [`BOUND_MAP`] index of the word that holds `bit` in `generation`.
#[inline]
#[must_use]
pub const fn bound_word_index(generation: u8, bit: u32) -> u32 {
    (generation & 1) as u32 * BOUND_WORDS + (bit >> 6)
}

/// The longest SPIFFE ID (the SPIFFE specification's limit).
pub const SPIFFE_ID_MAX: usize = 2_048;
/// The longest certificate serial number (RFC 5280, 4.1.2.2), plus room for a DER sign byte.
pub const SERIAL_MAX: usize = 24;

/// Value of [`EARNED_MAP`]: one earned binding, what `identity list` shows of it and what a
/// revocation matches it by.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EarnedRecord {
    /// As [`IdentityValue::expires`].
    pub expires: u64,
    /// The certificate's notAfter, Unix seconds.
    pub not_after: i64,
    /// When the binding was made or last renewed, Unix seconds.
    pub renewed: i64,
    /// FNV-1a of the DER of the certificate's issuer name ([`issuer_hash`]).
    pub issuer: u64,
    /// [`issuer_hash`] of the issuer of the last certificate the peer presented: the bundle
    /// CA its chain ends at (a bundle without it ends the binding).
    pub anchor: u64,
    pub id_len: u16,
    pub serial_len: u8,
    /// Links of `chain` in use.
    pub chain_len: u8,
    pub pad: [u8; 4],
    pub serial: [u8; SERIAL_MAX],
    /// The certificates presented above the leaf (intermediates), as a CRL lists them.
    pub chain: [ChainLink; CHAIN_MAX],
    pub id: [u8; SPIFFE_ID_MAX],
}

/// Intermediates kept per earned binding (a longer chain is refused a binding).
pub const CHAIN_MAX: usize = 4;

/// A certificate of a chain as a CRL names it: its issuer's [`issuer_hash`] and its serial.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainLink {
    pub issuer: u64,
    pub serial_len: u8,
    pub pad: [u8; 7],
    pub serial: [u8; SERIAL_MAX],
}

/// FNV-1a (64 bits) of `der`, the issuer name a revocation is matched by beside the serial.
#[must_use]
pub fn issuer_hash(der: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in der {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

const _: () = {
    assert!(size_of::<IdentityValue>() == 24);
    assert!(size_of::<ChainLink>() == 16 + SERIAL_MAX);
    assert!(
        size_of::<EarnedRecord>()
            == 48 + SERIAL_MAX + CHAIN_MAX * size_of::<ChainLink>() + SPIFFE_ID_MAX
    );
};
