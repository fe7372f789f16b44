//! Keys and values of the maps the policy compiler fills: identities (exact and CIDR), the
//! policy by exact port and by port range, failsafe entries, and the port bitmaps that let
//! the datapath skip lookups that cannot hit.

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{CIDRS_MAP, FAILSAFE_MAP, POLICY_MAP, PORTS_MAP, RANGES_MAP};

/// Identity ids with a fixed meaning. Compiled identities start at [`FIRST_IDENTITY`].
pub const IDENTITY_ANY: u32 = 0;
/// A peer no binding and no CIDR identifies.
pub const IDENTITY_WORLD: u32 = 1;
pub const FIRST_IDENTITY: u32 = 2;

/// The port value meaning "any port" in [`PolicyKey`]. Ports of ICMP rules are the ICMP type
/// plus one ([`icmp_port`]), so 0 is free for this.
pub const PORT_ANY: u16 = 0;

/// The policy port of an ICMP or ICMPv6 type.
pub const fn icmp_port(icmp_type: u8) -> u16 {
    icmp_type as u16 + 1
}

/// Key of [`CIDRS_MAP`]: `data` is generation, family, two zero bytes, then the address;
/// `prefix_len` is 32 + the CIDR's prefix length.
pub const CIDR_KEY_LEN: usize = 20;
pub const CIDR_KEY_FIXED_BITS: u32 = 32;

/// Builds the LPM data of a [`CIDRS_MAP`] key.
pub const fn cidr_key_data(generation: u8, family: u8, addr: [u8; 16]) -> [u8; CIDR_KEY_LEN] {
    let mut d = [0u8; CIDR_KEY_LEN];
    d[0] = generation;
    d[1] = family;
    let mut i = 0;
    while i < 16 {
        d[4 + i] = addr[i];
        i += 1;
    }
    d
}

/// Key of [`POLICY_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub generation: u8,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// IP protocol number.
    pub proto: u8,
    pub pad: u8,
    pub slot: u16,
    /// Destination port, ICMP type + 1, or [`PORT_ANY`].
    pub port: u16,
    /// Peer identity or [`IDENTITY_ANY`].
    pub identity: u32,
}

/// Rule actions as stored in [`PolicyValue::action`].
pub const RULE_ALLOW: u8 = 0;
pub const RULE_DENY: u8 = 1;

/// Value of [`POLICY_MAP`] and [`RANGES_MAP`]: what the most specific matching rules decided.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// [`RULE_ALLOW`] or [`RULE_DENY`].
    pub action: u8,
    /// `POLICY_*` bits, which the agent sets as it writes the entry (the compiler's tables
    /// leave them clear).
    pub flags: u8,
    pub pad: [u8; 2],
    /// The deciding rule's id (its index in the compiled rule list).
    pub rule: u32,
}

/// In [`PolicyValue::flags`]: the rule has no rate limit, so the datapath does not read its
/// bucket (`RULE_BUCKETS_MAP`, a cache miss per rule at scale). Clear means "read it": an
/// entry written without the flag costs that read and nothing else.
pub const POLICY_NO_LIMIT: u8 = 1;

/// [`Fold::kind`]: nothing is known; the datapath looks the identity's entries up.
pub const FOLD_NONE: u8 = 0;
/// ... the identity has exactly one entry of its own in the policy (none in the ranges): the
/// fold's key and value. A packet of that key needs no policy lookup; any other packet has no
/// entry of the identity's own and goes straight to the `any`-peer entries.
pub const FOLD_ONE: u8 = 1;
/// ... the identity has no entry of its own: straight to the `any`-peer entries.
pub const FOLD_EMPTY: u8 = 2;

/// What the policy holds for one identity, written into the value the identity is found in
/// (an exact binding, a prefix region, the trie, the `world` of the prefix levels) so that a
/// flow's first packet skips the identity's policy lookups: a hash probe, two dependent cache
/// misses at scale. Most peer identities of a real policy are named by one rule on one port
/// (a CIDR allowed to one service), which is [`FOLD_ONE`]. Entries of an identity never
/// change within a generation, so a fold is as current as the value that holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fold {
    /// [`FOLD_NONE`], [`FOLD_ONE`] or [`FOLD_EMPTY`].
    pub kind: u8,
    /// The one entry's key (with [`FOLD_ONE`]), as in [`PolicyKey`].
    pub direction: u8,
    pub proto: u8,
    pub pad: u8,
    pub slot: u16,
    pub port: u16,
    /// The one entry's value, as written in [`POLICY_MAP`].
    pub value: PolicyValue,
}

/// A [`Fold`] in 8 bytes, as the identity values of hash maps hold it: with the full 16, an
/// element of the identity map or of the prefix levels grew past the kernel allocator's
/// 96-byte class into the 128-byte one, where its key and value always span two cache lines
/// (in the 96-byte class half of them fit in one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PackedFold {
    /// The kind (bits 0-1), the direction (bit 2), the action (bit 3), [`POLICY_NO_LIMIT`]
    /// (bit 4) and bit 16 of the rule id (bit 5).
    pub bits: u8,
    pub proto: u8,
    pub slot: u16,
    pub port: u16,
    /// The rule id's low 16 bits.
    pub rule: u16,
}

/// Rule ids a [`PackedFold`] holds: below `MAX_RULES`, which every compiled id is.
pub const PACKED_RULE_LIMIT: u32 = 1 << 17;

impl PackedFold {
    /// Nothing known.
    pub const NONE: Self = Self {
        bits: FOLD_NONE,
        proto: 0,
        slot: 0,
        port: 0,
        rule: 0,
    };

    /// The fold it holds.
    #[inline(always)]
    #[expect(
        clippy::inline_always,
        reason = "on the datapath's first-packet path, a few shifts"
    )]
    pub const fn unpack(&self) -> Fold {
        let b = self.bits;
        Fold {
            kind: b & 3,
            direction: (b >> 2) & 1,
            proto: self.proto,
            pad: 0,
            slot: self.slot,
            port: self.port,
            value: PolicyValue {
                action: (b >> 3) & 1,
                flags: (b >> 4) & POLICY_NO_LIMIT,
                pad: [0; 2],
                rule: self.rule as u32 | (((b >> 5) & 1) as u32) << 16,
            },
        }
    }
}

impl Fold {
    /// This fold in 8 bytes, or [`PackedFold::NONE`] (which costs the lookup, nothing
    /// else) for one that does not fit: a rule id past [`PACKED_RULE_LIMIT`], or flags
    /// other than [`POLICY_NO_LIMIT`].
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the rule id is below PACKED_RULE_LIMIT: bit 16 and the low 16 bits"
    )]
    pub const fn pack(&self) -> PackedFold {
        let v = self.value;
        if self.kind > FOLD_EMPTY
            || self.direction > 1
            || v.action > 1
            || v.flags & !POLICY_NO_LIMIT != 0
            || v.rule >= PACKED_RULE_LIMIT
        {
            return PackedFold::NONE;
        }
        PackedFold {
            bits: self.kind
                | self.direction << 2
                | v.action << 3
                | v.flags << 4
                | ((v.rule >> 16) as u8) << 5,
            proto: self.proto,
            slot: self.slot,
            port: self.port,
            rule: v.rule as u16,
        }
    }

    /// Nothing known (what a zeroed value says).
    pub const NONE: Self = Self {
        kind: FOLD_NONE,
        direction: 0,
        proto: 0,
        pad: 0,
        slot: 0,
        port: 0,
        value: PolicyValue {
            action: 0,
            flags: 0,
            pad: [0; 2],
            rule: 0,
        },
    };
    /// No entry of the identity's own.
    pub const EMPTY: Self = Self {
        kind: FOLD_EMPTY,
        ..Self::NONE
    };

    /// The fold of an identity whose one entry is `key` (its identity aside) -> `value`.
    pub const fn one(direction: u8, proto: u8, slot: u16, port: u16, value: PolicyValue) -> Self {
        Self {
            kind: FOLD_ONE,
            direction,
            proto,
            pad: 0,
            slot,
            port,
            value,
        }
    }

    /// Whether the one entry is the one a packet of (direction, protocol, slot, policy port)
    /// finds first: its key, for that port or for any port (the identity has no other
    /// entry, so nothing more specific can come first).
    #[inline(always)]
    #[expect(
        clippy::inline_always,
        reason = "on the datapath's first-packet path, as the lookups it saves"
    )]
    pub const fn answers(&self, direction: u8, proto: u8, slot: u16, port: u16) -> bool {
        self.kind == FOLD_ONE
            && self.direction == direction
            && self.proto == proto
            && self.slot == slot
            && (self.port == port || self.port == PORT_ANY)
    }
}

/// Key of [`RANGES_MAP`]: `data` is generation, direction, protocol, a zero byte, slot (big
/// endian), identity (big endian), port (big endian); `prefix_len` is 80 + the bits of the
/// port prefix.
pub const RANGE_KEY_LEN: usize = 12;
pub const RANGE_KEY_FIXED_BITS: u32 = 80;

pub const fn range_key_data(
    generation: u8,
    direction: u8,
    proto: u8,
    slot: u16,
    identity: u32,
    port: u16,
) -> [u8; RANGE_KEY_LEN] {
    let s = slot.to_be_bytes();
    let i = identity.to_be_bytes();
    let p = port.to_be_bytes();
    [
        generation, direction, proto, 0, s[0], s[1], i[0], i[1], i[2], i[3], p[0], p[1],
    ]
}

/// Key of [`FAILSAFE_MAP`]: `data` is generation, family, protocol, a zero byte, local port
/// (big endian), two zero bytes, then the peer address; `prefix_len` is 64 + the prefix length.
pub const FAILSAFE_KEY_LEN: usize = 24;
pub const FAILSAFE_KEY_FIXED_BITS: u32 = 64;

pub const fn failsafe_key_data(
    generation: u8,
    family: u8,
    proto: u8,
    port: u16,
    addr: [u8; 16],
) -> [u8; FAILSAFE_KEY_LEN] {
    let mut d = [0u8; FAILSAFE_KEY_LEN];
    d[0] = generation;
    d[1] = family;
    d[2] = proto;
    let p = port.to_be_bytes();
    d[4] = p[0];
    d[5] = p[1];
    let mut i = 0;
    while i < 16 {
        d[8 + i] = addr[i];
        i += 1;
    }
    d
}

/// Bitmap kinds in [`PORTS_MAP`].
pub const PORTS_POLICY: u32 = 0;
pub const PORTS_FAILSAFE: u32 = 1;
/// Words of one bitmap (65,536 ports / 64).
pub const PORT_WORDS: u32 = 1024;
/// Entries of [`PORTS_MAP`]: two generations, two kinds.
pub const PORTS_ENTRIES: u32 = 2 * 2 * PORT_WORDS;

/// The [`PORTS_MAP`] index of the word holding `port`'s bit.
pub const fn port_word_index(generation: u8, kind: u32, port: u16) -> u32 {
    ((generation as u32 & 1) * 2 + (kind & 1)) * PORT_WORDS + (port as u32 >> 6)
}

const _: () = {
    assert!(size_of::<PolicyKey>() == 12);
    assert!(size_of::<PolicyValue>() == 8);
    assert!(size_of::<Fold>() == 16);
    assert!(size_of::<PackedFold>() == 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_fold_unpacks_to_itself_or_to_none() {
        let value = |action, flags, rule| PolicyValue {
            action,
            flags,
            pad: [0; 2],
            rule,
        };
        for f in [
            Fold::one(0, 6, 1, 80, value(RULE_ALLOW, POLICY_NO_LIMIT, 0)),
            Fold::one(
                1,
                17,
                65_535,
                53,
                value(RULE_DENY, 0, PACKED_RULE_LIMIT - 1),
            ),
            Fold::one(0, 1, 7, PORT_ANY, value(RULE_ALLOW, 0, 1 << 16)),
            Fold::one(1, 58, 2, icmp_port(255), value(RULE_DENY, 1, 65_535)),
            Fold::EMPTY,
            Fold::NONE,
        ] {
            assert_eq!(f.pack().unpack(), f, "{f:?}");
        }
        // What does not fit is not folded: the lookup answers instead.
        for f in [
            Fold::one(0, 6, 1, 80, value(RULE_ALLOW, 0, PACKED_RULE_LIMIT)),
            Fold::one(0, 6, 1, 80, value(RULE_ALLOW, 0, u32::MAX)),
            Fold::one(0, 6, 1, 80, value(RULE_ALLOW, 2, 5)),
            Fold::one(2, 6, 1, 80, value(RULE_ALLOW, 0, 5)),
        ] {
            assert_eq!(f.pack(), PackedFold::NONE, "{f:?}");
            assert_eq!(f.pack().unpack().kind, FOLD_NONE);
        }
    }
}
