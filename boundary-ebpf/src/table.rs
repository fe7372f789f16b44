//! The address table's probe (see `boundary_common::maps::table`): one bucket, one cache
//! line pair, for a static binding or a prefix-level region.

use boundary_common::maps::{
    PrefixValue, TABLE_BUCKETS_LOG2, TABLE_FREE, table_bucket, table_index,
};

use crate::maps::TABLE;

/// `log2` of the buckets per generation (see `TABLE_BUCKETS_LOG2_GLOBAL`): the loader sets it
/// from the map's size; the verifier reads the frozen value as a constant.
#[unsafe(no_mangle)]
static BND_TABLE_LOG2: u32 = TABLE_BUCKETS_LOG2;

/// [`probe`]: the key is not there (its bucket has a free slot), final for a key the table
/// takes.
pub const ABSENT: u8 = 0;
/// ... the key's answer is in `out`.
pub const FOUND: u8 = 1;
/// ... its bucket is full (or could not be read): the hash map decides.
pub const FULL: u8 = 2;

/// The four words of `addr`, read as words.
///
/// # Safety
/// `addr` is 4-byte aligned.
#[inline(always)]
unsafe fn words(addr: &[u8; 16]) -> [u32; 4] {
    let p = addr.as_ptr().cast::<u32>();
    // SAFETY: in bounds, and aligned as the caller promises.
    unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] }
}

/// Looks up the key `tag` (`TableSlot::tag`) and `addr` (masked already for a region) in
/// `generation`'s region: [`FOUND`] with its identity, `deeper` and fold in `out`, or
/// [`ABSENT`] or [`FULL`].
///
/// # Safety
/// `addr` is 4-byte aligned (a packet's addresses are 8-aligned, a `PrefixKey`'s 4): it is
/// read as words, as the slots are.
#[inline(always)]
pub unsafe fn probe(generation: u8, tag: u32, addr: &[u8; 16], out: &mut PrefixValue) -> u8 {
    // The tag's fourth byte is 0 (`TableSlot::tag`, little-endian as the target is): the
    // generation goes there.
    let key = (u32::from(generation) << 24) | tag;
    // SAFETY: `addr` is 4-aligned (the caller's promise), so it is an `AddrWords`; `out` is
    // valid.
    unsafe { bnd_table_probe(key, addr.as_ptr().cast::<AddrWords>(), out) }
}

/// An address as its four words: what a global function may take a pointer to (the kernel
/// wants a pointer to a scalar or to a struct of scalars).
#[repr(C)]
pub struct AddrWords {
    pub w: [u32; 4],
}

/// [`probe`], as a global function: the verifier checks it once, on its own, and every call
/// returns an unknown scalar (a static function is checked again at every call, with the
/// caller's state, and its outcomes multiplied what the verifier walked after it: about
/// 200k instructions more per program). `key` is the tag with the generation in its top
/// byte. Null pointers (which the verifier makes it check for) give [`FULL`].
///
/// # Safety
/// `addr` and `out` are null or valid for their types (the verifier checks every call).
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn bnd_table_probe(
    key: u32,
    addr: *const AddrWords,
    out: *mut PrefixValue,
) -> u8 {
    if addr.is_null() || out.is_null() {
        return FULL;
    }
    let generation = (key >> 24) as u8;
    let tag = key & 0x00ff_ffff;
    // SAFETY: a read of a global. Volatile, or LLVM folds the value it was compiled with.
    let log2 = unsafe { core::ptr::read_volatile(&raw const BND_TABLE_LOG2) };
    // SAFETY: checked for null; the caller passes a valid address.
    let a = unsafe { &*addr };
    let bucket = table_bucket(tag, &a.w, log2);
    let Some(b) = TABLE.get(table_index(generation, bucket, log2)) else {
        return FULL;
    };
    let w = a.w;
    for s in &b.slots {
        if s.kind == TABLE_FREE {
            return ABSENT;
        }
        let t = u32::from_ne_bytes([s.kind, s.family, s.len, 0]);
        // SAFETY: a slot is 8-aligned.
        let sw = unsafe { words(&s.addr) };
        if t == tag && sw == w {
            // SAFETY: checked for null.
            let out = unsafe { &mut *out };
            out.id = s.id;
            out.deeper = s.deeper;
            out.fold = s.fold;
            return FOUND;
        }
    }
    FULL
}
