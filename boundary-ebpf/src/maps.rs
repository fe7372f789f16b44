//! Map definitions. Layouts come from `boundary_common::maps`; the agent sizes, pins and fills
//! these maps.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{ArrayOfMaps, LruHashMap as BtfLruHashMap},
    macros::{btf_map, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use boundary_common::maps::{
    AddrKey, BIND_SEQ_SLOTS, BOUND_WORDS, BucketCredit, BucketState, CIDR_KEY_LEN, CounterRow,
    DatapathConfig, EVENTS_RING_BYTES, EarnedRecord, Endpoint, EndpointKey, EventBudget,
    FAILSAFE_KEY_LEN, FlowKey, FlowValue, FragKey, FragValue, IdentityValue, MAX_BUCKETS,
    MAX_CIDRS, MAX_EARNED, MAX_ENDPOINTS, MAX_FAILSAFE, MAX_FLOWS, MAX_FRAGMENTS, MAX_IDENTITIES,
    MAX_POLICY, MAX_PREFIXES, MAX_RANGES, MAX_RULES, MAX_WORKLOADS, PORTS_ENTRIES, PROGS_ENTRIES,
    PeerBucket, PeerKey, PolicyKey, PolicyValue, PrefixKey, PrefixLevels, PrefixValue,
    RANGE_KEY_LEN, TABLE_BUCKETS_LOG2, TableBucket, VERDICT_CACHE_SLOTS, VerdictCacheEntry,
    WorkloadName,
};

#[map(name = "BND_CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

// Maps the compiler fills are not preallocated: they are sized for two generations of the
// largest policy, and most of that room is never used.
#[map(name = "BND_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint> =
    HashMap::with_max_entries(MAX_ENDPOINTS, BPF_F_NO_PREALLOC);

/// Read by the agent and the CLI only: it makes the pinned counters self-describing.
#[map(name = "BND_NAMES")]
pub static NAMES: Array<WorkloadName> = Array::with_max_entries(MAX_WORKLOADS, 0);

#[map(name = "BND_COUNTERS")]
pub static COUNTERS: PerCpuArray<CounterRow> = PerCpuArray::with_max_entries(MAX_WORKLOADS * 2, 0);

#[map(name = "BND_IDENTITIES")]
pub static IDENTITIES: HashMap<AddrKey, IdentityValue> =
    HashMap::with_max_entries(MAX_IDENTITIES, BPF_F_NO_PREALLOC);

#[map(name = "BND_BOUND")]
pub static BOUND: Array<u64> = Array::with_max_entries(2 * BOUND_WORDS, 0);

#[map(name = "BND_BIND_SEQ")]
pub static BIND_SEQ: Array<u32> = Array::with_max_entries(BIND_SEQ_SLOTS, 0);

/// The agent's record of earned bindings; no program reads it (see `EARNED_MAP`).
#[map(name = "BND_EARNED")]
pub static EARNED: HashMap<AddrKey, EarnedRecord> =
    HashMap::with_max_entries(MAX_EARNED, BPF_F_NO_PREALLOC);

#[map(name = "BND_CIDRS")]
pub static CIDRS: LpmTrie<[u8; CIDR_KEY_LEN], PrefixValue> =
    LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "BND_PREFIXES")]
pub static PREFIXES: HashMap<PrefixKey, PrefixValue> =
    HashMap::with_max_entries(MAX_PREFIXES, BPF_F_NO_PREALLOC);

/// A region of buckets per generation; the loader sizes it (and sets the datapath's
/// `BND_TABLE_LOG2` to match).
#[map(name = "BND_ADDR_TABLE")]
pub static TABLE: Array<TableBucket> = Array::with_max_entries(2 << TABLE_BUCKETS_LOG2, 0);

#[map(name = "BND_PREFIX_LVL")]
pub static PREFIX_LEVELS: Array<PrefixLevels> = Array::with_max_entries(2, 0);

#[map(name = "BND_POLICY")]
pub static POLICY: HashMap<PolicyKey, PolicyValue> =
    HashMap::with_max_entries(MAX_POLICY, BPF_F_NO_PREALLOC);

#[map(name = "BND_RANGES")]
pub static RANGES: LpmTrie<[u8; RANGE_KEY_LEN], PolicyValue> =
    LpmTrie::with_max_entries(MAX_RANGES, 0);

#[map(name = "BND_FAILSAFE")]
pub static FAILSAFE: LpmTrie<[u8; FAILSAFE_KEY_LEN], u32> =
    LpmTrie::with_max_entries(MAX_FAILSAFE, 0);

#[map(name = "BND_CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Written with atomic adds by every CPU; see `conntrack::record`.
#[map(name = "BND_CT_INSERTS")]
pub static CT_INSERTS: Array<u64> = Array::with_max_entries(1, 0);

/// Flows the workload accepted, apart from those it opened (`conntrack::table`).
#[map(name = "BND_CT_ACCEPTED")]
pub static CONNTRACK_ACCEPTED: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[map(name = "BND_CT_ACC_INS")]
pub static CT_ACCEPTED_INSERTS: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "BND_FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(MAX_FRAGMENTS, 0);

/// A block per possible CPU (`rule_hits_index`); the agent's loader sizes it for the host's
/// CPUs. Written by each CPU in its own block only.
#[map(name = "BND_RULE_HITS")]
pub static RULE_HITS: Array<u64> = Array::with_max_entries(MAX_RULES, 0);

/// The agent's record of which rule holds which id (see `RULE_IDS_MAP`); no program reads it.
#[map(name = "BND_RULE_IDS")]
pub static RULE_IDS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_RULES, BPF_F_NO_PREALLOC);

#[map(name = "BND_BUCKETS")]
pub static BUCKETS: Array<BucketState> = Array::with_max_entries(MAX_BUCKETS, 0);

#[map(name = "BND_CREDITS")]
pub static CREDITS: PerCpuArray<BucketCredit> = PerCpuArray::with_max_entries(MAX_BUCKETS, 0);

#[map(name = "BND_RULE_BUCKET")]
pub static RULE_BUCKETS: Array<u32> = Array::with_max_entries(2 * MAX_RULES, 0);

#[map(name = "BND_RULE_LIMIT")]
pub static RULE_LIMITED: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_RULES, 0);

/// One LRU map of peers' buckets per bucket kept per peer; the agent makes each (sized by its
/// rule's `maxSources`) and puts it here. The one entry in the template is not what they hold.
#[btf_map(name = "BND_PEER_BUCKETS")]
pub static PEER_BUCKETS: ArrayOfMaps<
    BtfLruHashMap<PeerKey, PeerBucket, 1>,
    { MAX_BUCKETS as usize },
> = ArrayOfMaps::new();

#[map(name = "BND_PEER_INSERTS")]
pub static PEER_INSERTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_BUCKETS, 0);

/// The agent's record of which bucket is which (see `BUCKET_IDS_MAP`); no program reads it.
#[map(name = "BND_BUCKET_IDS")]
pub static BUCKET_IDS: HashMap<u64, u32> =
    HashMap::with_max_entries(MAX_BUCKETS, BPF_F_NO_PREALLOC);

/// The pins' ABI version (see `ABI_MAP`); no program reads it.
#[map(name = "BND_ABI")]
pub static ABI: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "BND_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map(name = "BND_EVT_BUDGET")]
pub static EVENT_BUDGET: PerCpuArray<EventBudget> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "BND_PORTS")]
pub static PORTS: Array<u64> = Array::with_max_entries(PORTS_ENTRIES, 0);

#[map(name = "BND_VCACHE")]
pub static VERDICT_CACHE: PerCpuArray<VerdictCacheEntry> =
    PerCpuArray::with_max_entries(VERDICT_CACHE_SLOTS, 0);

/// The TC programs, for the tail call that restarts one after pulling its headers into the
/// linear part (see `main.rs`).
#[map(name = "BND_PROGS")]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(PROGS_ENTRIES, 0);
