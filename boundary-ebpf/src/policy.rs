//! Who the peer is, and what the policy says about it.
//!
//! Identity: the exact-address map first, the CIDR prefixes on a miss (a few hash probes down
//! the prefix levels, see `boundary_common::maps::prefixes`; the trie for a family the
//! compiler left there), `world` otherwise. Policy:
//! a fixed sequence of lookups from most to least specific — (identity, port), (identity, port
//! range), (identity, any port), then the same three for any identity — stopping at the first
//! hit. The compiler has already folded every rule that could apply at one key into that key
//! (deny beats allow at equal specificity), so the cost is at most six lookups whatever the
//! number of rules, and usually one.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use boundary_common::maps::{
    AddrKey, CFG_EARNED, CFG_HAS_BINDINGS, CFG_HAS_CIDRS, CIDR_KEY_FIXED_BITS,
    FAILSAFE_KEY_FIXED_BITS, FAMILY_IPV4, FOLD_NONE, Fold, IDENTITY_ANY, IDENTITY_WORLD, NEVER,
    PORT_ANY, PORTS_FAILSAFE, PORTS_POLICY, PREFIX_LEVELS_NONE, PREFIX_LEVELS_TRIE, PolicyKey,
    PolicyValue, PrefixKey, PrefixValue, RANGE_KEY_FIXED_BITS, TABLE_BINDING, TABLE_REGION,
    TableSlot, bind_seq_slot, bound_bit, bound_word_index, cidr_key_data, failsafe_key_data,
    family_index, mask_into, port_word_index, range_key_data,
};

use crate::{
    maps::{
        BIND_SEQ, BOUND, CIDRS, FAILSAFE, IDENTITIES, POLICY, PORTS, PREFIX_LEVELS, PREFIXES,
        RANGES,
    },
    table,
};

#[inline(always)]
fn addr_bits(family: u8) -> u32 {
    if family == FAMILY_IPV4 { 32 } else { 128 }
}

/// Whether `port` has a bit in the `kind` bitmap of `generation`: a clear bit means no entry
/// of that kind can match, and the hash or trie lookup is skipped (an array read is a few ns,
/// a lookup tens). A word that cannot be read (it always can) counts as listed: the lookup
/// then decides, as if there were no bitmap.
#[inline(always)]
pub fn port_listed(generation: u8, kind: u32, port: u16) -> bool {
    PORTS
        .get(port_word_index(generation, kind, port))
        .is_none_or(|w| w & (1u64 << (port & 63)) != 0)
}

/// Who a peer is: its identity, the deadline of the earned binding it came from (`NEVER` for
/// any other), and what the policy holds for the identity (its [`Fold`]).
#[derive(Clone, Copy)]
pub struct Peer {
    pub id: u32,
    pub expires: u64,
    pub fold: Fold,
}

/// Who `addr` is. `cfg_flags` says which identity maps hold anything. A binding past its
/// deadline is no binding: the peer is whatever the prefixes make it.
#[inline(always)]
pub fn identity(generation: u8, cfg_flags: u8, family: u8, addr: &[u8; 16]) -> Peer {
    if cfg_flags & CFG_HAS_BINDINGS != 0 && maybe_bound(generation, addr) {
        // The table holds the static bindings (a full bucket's in the identity map too); the
        // identity map alone holds earned ones.
        let tag = TableSlot::tag(TABLE_BINDING, family, addr_bits(family) as u8);
        let mut v = PrefixValue::WORLD;
        // SAFETY: a packet's addresses are 8-aligned (`Packet`).
        match unsafe { table::probe(generation, tag, addr, &mut v) } {
            table::FOUND => {
                return Peer {
                    id: v.id,
                    expires: NEVER,
                    fold: v.fold.unpack(),
                };
            }
            table::ABSENT if cfg_flags & CFG_EARNED == 0 => {}
            _ => {
                if let Some(p) = hashed_identity(generation, family, addr) {
                    return p;
                }
            }
        }
    }
    if cfg_flags & CFG_HAS_CIDRS == 0 {
        return Peer {
            id: IDENTITY_WORLD,
            expires: NEVER,
            fold: Fold::NONE,
        };
    }
    let mut v = PrefixValue::WORLD;
    if cidr_identity(generation, family, addr, &mut v) == IN_TRIE {
        trie_identity(generation, family, addr, &mut v);
    }
    Peer {
        id: v.id,
        expires: NEVER,
        fold: v.fold.unpack(),
    }
}

/// `addr`'s binding in the identity map, if it has one still live.
#[inline(always)]
fn hashed_identity(generation: u8, family: u8, addr: &[u8; 16]) -> Option<Peer> {
    let key = AddrKey::new(generation, family, *addr);
    // SAFETY: copied out at once. An earned binding's value is rewritten in place on a
    // renewal; a torn read of its deadline is the old or the new one, both live then.
    let v = unsafe { IDENTITIES.get(&key) }.copied()?;
    (v.expires == NEVER || v.live_at(coarse_now())).then_some(Peer {
        id: v.id,
        expires: v.expires,
        fold: v.fold.unpack(),
    })
}

/// Whether `addr` may have a binding in `generation`: its bit in the bound-address bitmap
/// (`BOUND_MAP`), a cached line where the identity map's probe is a miss or two. A word that
/// cannot be read (it always can) counts as set: the probe then decides.
#[inline(always)]
fn maybe_bound(generation: u8, addr: &[u8; 16]) -> bool {
    let bit = bound_bit(addr);
    BOUND
        .get(bound_word_index(generation, bit))
        .is_none_or(|w| w & (1u64 << (bit & 63)) != 0)
}

/// [`cidr_identity`]: `addr`'s family is in the trie; [`trie_identity`] has the answer.
const IN_TRIE: u8 = 1;

/// The identity the prefix levels give `addr` (`world` if none covers it), with its fold,
/// into `out`: down the levels of `generation`, shortest first, until a region is missing
/// (the answer so far) or has nothing deeper (its own answer). One table probe per level
/// walked, a cache miss at most (and a hash probe more for a key its bucket had no room for),
/// against one miss per trie level. [`IN_TRIE`] for a family the compiler left in the trie,
/// which the caller then asks.
///
/// A function of its own, not inlined: its exits meet at one return, and the verifier goes
/// on from there once rather than once per exit (inlined, the walk took the XDP program past
/// the 1M-instruction limit). Its frame must stay small: with the table's probe under it, it
/// adds to the caller's 392 bytes, and the limit is 512 (the trie's key, built byte by byte,
/// is in [`trie_identity`]'s frame for that reason). Every answer it gives is read from a map
/// (`world` from the levels entry), so the states at its exits look alike to the verifier.
#[inline(never)]
fn cidr_identity(generation: u8, family: u8, addr: &[u8; 16], out: &mut PrefixValue) -> u8 {
    let levels = PREFIX_LEVELS.get(u32::from(generation & 1));
    if let Some(l) = levels {
        out.id = l.world;
        out.fold = l.world_fold;
    }
    let count = levels.map_or(PREFIX_LEVELS_TRIE, |l| l.count[family_index(family)]);
    if count == PREFIX_LEVELS_NONE {
        return 0;
    }
    let Some(l) = levels.filter(|_| count != PREFIX_LEVELS_TRIE) else {
        return IN_TRIE;
    };
    let lens = if family == FAMILY_IPV4 { &l.v4 } else { &l.v6 };
    let mut key = PrefixKey {
        generation,
        family,
        len: 0,
        pad: 0,
        addr: [0; 16],
    };
    // No check against `count` (a branch the verifier would explore at every level): the
    // last level's regions never have anything deeper, so the walk ends there at the latest.
    for &len in lens {
        key.len = len;
        mask_into(&mut key.addr, addr, len);
        // The table first (it writes `out` when it has the region); the hash map for a
        // region its bucket had no room for.
        let tag = TableSlot::tag(TABLE_REGION, family, len);
        // SAFETY: a `PrefixKey`'s address is 4-aligned.
        match unsafe { table::probe(generation, tag, &key.addr, out) } {
            table::FOUND => {}
            table::ABSENT => break,
            // SAFETY: read at once; entries are never updated in place (a new generation
            // gets new keys).
            // Field by field, as the probe writes them: the verifier then finds the two
            // paths' states alike at the next level and walks it once.
            _ => match unsafe { PREFIXES.get(&key) } {
                None => break,
                Some(v) => {
                    out.id = v.id;
                    out.deeper = v.deeper;
                    out.fold = v.fold;
                }
            },
        }
        if out.deeper == 0 {
            break;
        }
    }
    0
}

/// The identity the trie gives `addr` (for a family the compiler left there) into `out`,
/// which holds `world` when it has none. Not inlined, as [`cidr_identity`]: the trie's key
/// is built on its frame, which would not fit under that walk's.
#[inline(never)]
fn trie_identity(generation: u8, family: u8, addr: &[u8; 16], out: &mut PrefixValue) {
    let key = Key::new(
        CIDR_KEY_FIXED_BITS + addr_bits(family),
        cidr_key_data(generation, family, *addr),
    );
    if let Some(v) = CIDRS.get(&key) {
        out.id = v.id;
        out.fold = v.fold;
    }
}

/// The clock of binding deadlines: `CLOCK_MONOTONIC`, coarse (a tick's resolution, half the
/// cost of the precise one), read only for earned bindings.
#[inline(always)]
pub fn coarse_now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The bind sequence of `addr`'s slot (see `BIND_SEQ_MAP`); 0 if it cannot be read (it
/// always can).
#[inline(always)]
pub fn bind_seq(addr: &[u8; 16]) -> u32 {
    BIND_SEQ.get(bind_seq_slot(addr)).copied().unwrap_or(0)
}

/// The most specific policy entry for the packet, if any. `fold` is what the policy holds
/// for `identity` (see [`Fold`]): the answer itself, or that the identity has no entry this
/// packet can find, so only the `any`-peer entries are looked up.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the lookup key's parts, kept as scalars for the verifier"
)]
pub fn lookup(
    generation: u8,
    direction: u8,
    proto: u8,
    slot: u16,
    (identity, fold): (u32, &Fold),
    port: u16,
    has_ranges: bool,
) -> Option<PolicyValue> {
    if fold.answers(direction, proto, slot, port) {
        return Some(fold.value);
    }
    let listed = port != PORT_ANY && port_listed(generation, PORTS_POLICY, port);
    let identity = if fold.kind == FOLD_NONE {
        identity
    } else {
        IDENTITY_ANY
    };
    for id in [identity, IDENTITY_ANY] {
        if port != PORT_ANY {
            if listed && let Some(v) = exact(generation, direction, proto, slot, id, port) {
                return Some(v);
            }
            if has_ranges && let Some(v) = range(generation, direction, proto, slot, id, port) {
                return Some(v);
            }
        }
        if let Some(v) = exact(generation, direction, proto, slot, id, PORT_ANY) {
            return Some(v);
        }
        if identity == IDENTITY_ANY {
            break;
        }
    }
    None
}

#[inline(always)]
fn exact(
    generation: u8,
    direction: u8,
    proto: u8,
    slot: u16,
    identity: u32,
    port: u16,
) -> Option<PolicyValue> {
    let key = PolicyKey {
        generation,
        direction,
        proto,
        pad: 0,
        slot,
        port,
        identity,
    };
    // SAFETY: a 4-byte value copied out at once.
    unsafe { POLICY.get(&key) }.copied()
}

#[inline(always)]
fn range(
    generation: u8,
    direction: u8,
    proto: u8,
    slot: u16,
    identity: u32,
    port: u16,
) -> Option<PolicyValue> {
    let key = Key::new(
        RANGE_KEY_FIXED_BITS + 16,
        range_key_data(generation, direction, proto, slot, identity, port),
    );
    RANGES.get(&key).copied()
}

/// Whether a failsafe entry covers (protocol, local port, peer).
#[inline(always)]
pub fn failsafe(generation: u8, family: u8, proto: u8, local_port: u16, peer: &[u8; 16]) -> bool {
    if !port_listed(generation, PORTS_FAILSAFE, local_port) {
        return false;
    }
    let key = Key::new(
        FAILSAFE_KEY_FIXED_BITS + addr_bits(family),
        failsafe_key_data(generation, family, proto, local_port, *peer),
    );
    FAILSAFE.get(&key).is_some()
}
