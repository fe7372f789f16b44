//! Rate-limit buckets: the shared half of each bucket, each CPU's credit in it, and which rule
//! of a generation pays into which bucket. The arithmetic is in [`crate::bucket`].

use core::mem::size_of;

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{
    BUCKET_IDS_MAP, BUCKETS_MAP, CREDITS_MAP, MAX_RULES, PEER_BUCKETS_MAP, RULE_BUCKETS_MAP,
};
use crate::bucket::Credit;

/// Buckets, both generations' together. Bucket 0 is "no limit" in [`RULE_BUCKETS_MAP`].
pub const MAX_BUCKETS: u32 = 16_384;
/// [`RULE_BUCKETS_MAP`] value of a rule with no limit.
pub const NO_BUCKET: u32 = 0;
/// In a [`RULE_BUCKETS_MAP`] value: the bucket is kept per peer address (the source on
/// ingress, the destination on egress), in its own LRU map in [`PEER_BUCKETS_MAP`].
pub const BUCKET_PER_PEER: u32 = 1 << 31;
/// The bucket's index in a [`RULE_BUCKETS_MAP`] value.
pub const BUCKET_INDEX_MASK: u32 = !BUCKET_PER_PEER;

/// Value of [`BUCKETS_MAP`]: one bucket as every CPU shares it, or the terms of a limit kept
/// per peer. `tat` is updated by compare-and-swap; the rest is written by the agent before any
/// generation names the bucket, and never while one does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BucketState {
    /// Theoretical arrival time, in ticks, of packets (0) and bytes (1). Unused per peer
    /// (each peer's is in its [`PeerBucket`]).
    pub tat: [u64; 2],
    /// Depth (the burst), in ticks; 0 for a dimension the bucket does not limit.
    pub depth: [u64; 2],
    /// The configured rates per second (0: not limited), for `trace` and the metrics.
    pub rate: [u64; 2],
    /// The configured bursts (packets, bytes).
    pub burst: [u64; 2],
    /// Ticks per unit and the most units costed exactly (`crate::bucket::interval`,
    /// `max_units`): per-peer buckets read them here (shared buckets from each CPU's credit).
    pub interval: [u64; 2],
    pub max_units: [u64; 2],
    /// Per peer: the rule-wide bucket every peer's packets also pay into, or [`NO_BUCKET`].
    pub ceiling: u32,
    /// Per peer: how many peers' buckets its LRU map keeps.
    pub max_peers: u32,
}

/// Key of a per-peer bucket's LRU map (an inner map of [`PEER_BUCKETS_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub pad: [u8; 7],
}

/// Value of a per-peer bucket's LRU map: that peer's `tat` of packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerBucket {
    pub tat: [u64; 2],
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
    assert!(size_of::<BucketState>() == 104);
    assert!(size_of::<BucketCredit>() == 64);
    assert!(size_of::<PeerKey>() == 24);
    assert!(size_of::<PeerBucket>() == 16);
};
