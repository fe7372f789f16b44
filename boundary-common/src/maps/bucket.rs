//! Rate-limit buckets: the shared half of each bucket, each CPU's credit in it, and which rule
//! of a generation pays into which bucket. The arithmetic is in [`crate::bucket`].

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{BUCKET_IDS_MAP, BUCKETS_MAP, CREDITS_MAP, MAX_RULES, RULE_BUCKETS_MAP};
use crate::bucket::Credit;

/// Buckets, both generations' together. Bucket 0 is "no limit" in [`RULE_BUCKETS_MAP`].
pub const MAX_BUCKETS: u32 = 16_384;
/// [`RULE_BUCKETS_MAP`] value of a rule with no limit.
pub const NO_BUCKET: u32 = 0;

/// Value of [`BUCKETS_MAP`]: one bucket as every CPU shares it. `tat` is updated by
/// compare-and-swap; the rest is written by the agent before any generation names the bucket,
/// and never while one does. 64 bytes, a cache line: two buckets' updates do not fight over
/// one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketState {
    /// Theoretical arrival time, in ticks, of packets (0) and bytes (1).
    pub tat: [u64; 2],
    /// Depth (the burst), in ticks; 0 for a dimension the bucket does not limit.
    pub depth: [u64; 2],
    /// The configured rates per second (0: not limited), for `trace` and the metrics.
    pub rate: [u64; 2],
    /// The configured bursts (packets, bytes).
    pub burst: [u64; 2],
}

/// Value of [`CREDITS_MAP`]: a CPU's share of a bucket (see [`crate::bucket`]).
pub type BucketCredit = Credit;

/// Index of [`RULE_BUCKETS_MAP`]: the bucket that `rule` pays into in `generation`.
pub const fn rule_bucket_index(generation: u8, rule: u32) -> u32 {
    (generation as u32 & 1) * MAX_RULES_PER_GENERATION + rule
}

/// Rules per generation in [`RULE_BUCKETS_MAP`] (as [`MAX_RULES`]).
pub const MAX_RULES_PER_GENERATION: u32 = super::MAX_RULES;

const _: () = {
    assert!(size_of::<BucketState>() == 64);
    assert!(size_of::<BucketCredit>() == 64);
};
