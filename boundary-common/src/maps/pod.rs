//! `aya::Pod` for every map key and value the agent reads or writes (feature `user`).

// SAFETY (for every impl below): `#[repr(C)]`, only integer fields and arrays of them, and
// every padding byte is an explicit field, so any bit pattern is valid and none is hidden.
#![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]

use super::{
    AddrKey, BucketCredit, BucketState, ChainLink, Counter, CounterRow, DatapathConfig, DropEvent,
    EarnedRecord, Endpoint, EndpointKey, EventBudget, FlowKey, FlowValue, FragKey, FragValue,
    IdentityValue, PeerBucket, PeerKey, PolicyKey, PolicyValue, PrefixKey, PrefixLevels,
    PrefixValue, TableBucket, WorkloadName,
};

unsafe impl aya::Pod for DatapathConfig {}
unsafe impl aya::Pod for AddrKey {}
unsafe impl aya::Pod for TableBucket {}
unsafe impl aya::Pod for IdentityValue {}
unsafe impl aya::Pod for EarnedRecord {}
unsafe impl aya::Pod for ChainLink {}
unsafe impl aya::Pod for Endpoint {}
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for PolicyKey {}
unsafe impl aya::Pod for PolicyValue {}
unsafe impl aya::Pod for PrefixKey {}
unsafe impl aya::Pod for PrefixValue {}
unsafe impl aya::Pod for PrefixLevels {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowValue {}
unsafe impl aya::Pod for FragKey {}
unsafe impl aya::Pod for FragValue {}
unsafe impl aya::Pod for BucketState {}
unsafe impl aya::Pod for BucketCredit {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for PeerBucket {}
unsafe impl aya::Pod for WorkloadName {}
unsafe impl aya::Pod for EventBudget {}
unsafe impl aya::Pod for DropEvent {}
unsafe impl aya::Pod for Counter {}
unsafe impl aya::Pod for CounterRow {}
