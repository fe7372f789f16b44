//! Every map the datapath shares with the agent: its name, what it holds, how big it is, and
//! the order the agent pins them in. The keys and values are in the files beside this one.
//!
//! Map names are kept under 16 bytes: the kernel truncates object names to `BPF_OBJ_NAME_LEN`
//! (16, NUL included) and the pinned files carry the same names.
//!
//! Capacities, chosen for the largest policy, are here; sizes a layout fixes (the port
//! bitmaps, the verdict cache, the event ring) are beside the layout.

// What the docs below link to, in other files of this module.
#[cfg(doc)]
use super::{
    AddrKey, BIND_SEQ_SLOTS, BOUND_WORDS, BucketState, CFG_EARNED, DropEvent, EVENTS_PER_SEC,
    EarnedRecord, NO_BUCKET, PREFIX_LEVELS_TRIE, VerdictCacheEntry, bind_seq_slot, bound_bit,
    bound_word_index, counter_index, port_word_index, rule_bucket_index,
};

/// `Array<DatapathConfig>` with one entry: settings that hold for every interface.
pub const CONFIG_MAP: &str = "BND_CONFIG";
/// `HashMap<EndpointKey, Endpoint>`: (local address, interface or any) -> the workload that
/// owns it there.
pub const ENDPOINTS_MAP: &str = "BND_ENDPOINTS";
/// `Array<WorkloadName>`: slot -> name, so pinned counters explain themselves with no agent.
pub const NAMES_MAP: &str = "BND_NAMES";
/// `PerCpuArray<CounterRow>`: one row per (workload slot, direction), see [`counter_index`].
pub const COUNTERS_MAP: &str = "BND_COUNTERS";
/// `HashMap<AddrKey, IdentityValue>`: exact peer address -> identity (static and earned
/// bindings, the earned ones with their deadline).
pub const IDENTITIES_MAP: &str = "BND_IDENTITIES";
/// `Array<u32>` of [`BIND_SEQ_SLOTS`]: a sequence per slot of addresses ([`bind_seq_slot`]),
/// bumped by the agent after every earned binding that appears, changes identity or goes
/// (not after a renewal). A cached verdict keeps the sequence of its peer's slot
/// ([`VerdictCacheEntry::bind_seq`]) and is a miss once it moved: a binding invalidates the
/// verdicts of the peers in its slot alone, not every CPU's whole cache (at a thousand
/// handshakes a second a global bump would leave the cache nothing to hit). Read only when
/// [`CFG_EARNED`] is set.
pub const BIND_SEQ_MAP: &str = "BND_BIND_SEQ";
/// `Array<u64>` of 2 x [`BOUND_WORDS`]: per generation, a bit per hash of an address
/// ([`bound_bit`], [`bound_word_index`]) set for every address [`IDENTITIES_MAP`] binds in
/// it. A clear bit means no binding, and the datapath skips the identity-map probe: a CIDR or
/// `world` peer's first packet saves a hash probe, a dependent cache miss or two at scale. A
/// set bit may be another address's (or a binding gone since): the probe then decides. The
/// agent writes a generation's bits before switching to it, and an earned binding's bit
/// before its identity-map entry; bits are cleared only by the next write of that generation.
pub const BOUND_MAP: &str = "BND_BOUND";
/// `HashMap<AddrKey, EarnedRecord>` (keys of generation 0): every earned binding, as the agent
/// keeps it across restarts. The agent's alone, as `RULE_IDS_MAP`: a restarted agent compiles
/// its policy with these, so a binding outlives the process that made it.
pub const EARNED_MAP: &str = "BND_EARNED";
/// `LpmTrie<CidrKey, PrefixValue>`: peer prefix -> identity (and its fold), consulted when the exact map misses, for
/// a family whose prefixes the compiler could not lay out in levels ([`PREFIX_LEVELS_TRIE`]).
pub const CIDRS_MAP: &str = "BND_CIDRS";
/// `HashMap<PrefixKey, PrefixValue>`: the regions of the prefix levels (see `prefixes.rs`),
/// consulted when the exact map misses.
pub const PREFIXES_MAP: &str = "BND_PREFIXES";
/// `Array<TableBucket>`: the address table (see `table.rs`), a region of buckets per
/// generation holding its static bindings and prefix-level regions, each found in one cache
/// line; [`IDENTITIES_MAP`] and [`PREFIXES_MAP`] hold them too, for a full bucket's keys.
pub const TABLE_MAP: &str = "BND_ADDR_TABLE";
/// `Array<PrefixLevels>` with one entry per generation: each family's level lengths.
pub const PREFIX_LEVELS_MAP: &str = "BND_PREFIX_LVL";
/// `HashMap<PolicyKey, PolicyValue>`: rules for exact ports and for any port.
pub const POLICY_MAP: &str = "BND_POLICY";
/// `LpmTrie<RangeKey, PolicyValue>`: rules for port ranges, as prefixes of the port.
pub const RANGES_MAP: &str = "BND_RANGES";
/// `LpmTrie<FailsafeKey, u32>`: (protocol, local port, peer prefix) never dropped.
pub const FAILSAFE_MAP: &str = "BND_FAILSAFE";
/// `LruHashMap<FlowKey, FlowValue>`: flows the workloads opened (keys of direction ingress:
/// their replies are `established` on the way in).
pub const CONNTRACK_MAP: &str = "BND_CONNTRACK";
/// `LruHashMap<FlowKey, FlowValue>`: flows the workloads accepted (keys of direction egress).
/// Apart from [`CONNTRACK_MAP`], so that a flood of new connections to an open port evicts
/// accepted flows only, never the ones a workload opened.
pub const CONNTRACK_ACCEPTED_MAP: &str = "BND_CT_ACCEPTED";
/// `Array<u64>` with one entry: [`CT_INSERTS_MAP`] for [`CONNTRACK_ACCEPTED_MAP`].
pub const CT_ACCEPTED_INSERTS_MAP: &str = "BND_CT_ACC_INS";
/// `Array<u64>` with one entry: how many flows [`CONNTRACK_MAP`] has recorded anew (inserted,
/// or re-inserted after expiring). A flow that was not a reply stays not a reply until this moves,
/// so a cached drop skips the conntrack lookup while it stands still.
pub const CT_INSERTS_MAP: &str = "BND_CT_INSERTS";
/// `LruHashMap<FragKey, FragValue>`: first-fragment verdicts for the later fragments.
pub const FRAGMENTS_MAP: &str = "BND_FRAGMENTS";

/// `Array<u64>`: packets decided by each rule (by compiled rule id), a block of
/// [`MAX_RULES`] counters per possible CPU ([`rule_hits_index`]), sized at load
/// ([`rule_hits_entries`]). Not a `PerCpuArray`: its lookup reads a pointer per rule (a
/// megabyte of them) before the counter, two dependent cache misses on a flow's first
/// packet at scale where this is one (issue #15).
pub const RULE_HITS_MAP: &str = "BND_RULE_HITS";

/// [`RULE_HITS_MAP`]'s entries for `cpus` possible CPUs.
pub const fn rule_hits_entries(cpus: u32) -> u32 {
    MAX_RULES * cpus
}

/// [`RULE_HITS_MAP`]'s index of `rule`'s counter on `cpu`.
#[inline(always)]
#[expect(clippy::inline_always, reason = "on every packet a rule decides")]
pub const fn rule_hits_index(cpu: u32, rule: u32) -> u32 {
    cpu * MAX_RULES + rule
}
/// `HashMap<u64, u32>`: rule fingerprint -> rule id, for the rules installed. The agent's
/// alone (the datapath never reads it): a restarted agent keeps every rule's id, and so its
/// counts, from it.
pub const RULE_IDS_MAP: &str = "BND_RULE_IDS";
/// `Array<BucketState>`: rate-limit buckets as every CPU shares them (see `crate::bucket`).
pub const BUCKETS_MAP: &str = "BND_BUCKETS";
/// `PerCpuArray<BucketCredit>`: each CPU's credit in each bucket, and the rate's terms.
pub const CREDITS_MAP: &str = "BND_CREDITS";
/// `Array<u32>`: (generation, rule id) -> the bucket the rule's packets pay into, or
/// [`NO_BUCKET`]; see [`rule_bucket_index`].
pub const RULE_BUCKETS_MAP: &str = "BND_RULE_BUCKET";
/// `PerCpuArray<u64>`: packets each rule matched and its limit refused (by rule id). Rule hits
/// count them too: admitted = hits - limited.
pub const RULE_LIMITED_MAP: &str = "BND_RULE_LIMIT";
/// `ArrayOfMaps<LruHashMap<PeerKey, PeerBucket>>`: per-peer buckets, one LRU map per bucket
/// kept per peer (sized by its `maxSources`, so a flood of sources at one rule washes only that
/// rule's buckets). Indexed as [`BUCKETS_MAP`].
pub const PEER_BUCKETS_MAP: &str = "BND_PEER_BUCKETS";
/// `PerCpuArray<u64>`: peers' buckets each per-peer bucket's map took in (inserts): minus the
/// entries it holds, the peers it evicted.
pub const PEER_INSERTS_MAP: &str = "BND_PEER_INSERTS";
/// `HashMap<u64, u32>`: bucket fingerprint (rule fingerprint and limit) -> bucket. The agent's
/// alone, as [`RULE_IDS_MAP`]: a restarted agent keeps every bucket, its fill included.
pub const BUCKET_IDS_MAP: &str = "BND_BUCKET_IDS";
/// `Array<u32>` with one entry: the [`ABI_VERSION`] of the agent that made the pins. The
/// agent's alone, as [`RULE_IDS_MAP`].
pub const ABI_MAP: &str = "BND_ABI";

/// What the pinned maps mean, beyond their shapes (which are checked one by one): an agent
/// that finds pins of a version older than [`ABI_ADOPTS_FROM`] replaces every map (the
/// attached programs keep the old ones until their links are updated), and refuses pins of a
/// newer one. Pins made before this existed have no [`ABI_MAP`] and count as version 1.
///
/// 3: CIDR identities moved to the prefix levels ([`PREFIXES_MAP`], [`PREFIX_LEVELS_MAP`]);
/// [`CIDRS_MAP`] holds only a family the compiler left in the trie. The programs of a
/// version-2 agent read the trie alone: adopting their maps, this agent's first swap would
/// switch them (still attached until their links are updated, after the swap) to a
/// generation whose CIDR identities they cannot see, every CIDR peer `world` meanwhile, a
/// CIDR deny rule lifted. Replaced maps keep the old programs on the old policy instead.
///
/// 4: identity values carry their identity's fold ([`Fold`](super::Fold)), the trie's
/// values are [`PrefixValue`](super::PrefixValue)s, and policy values say when a rule has no
/// limit: every value of those maps changed size or meaning. [`RULE_HITS_MAP`] became a
/// plain array with a block per CPU (a pinned per-CPU one is replaced by its shape).
///
/// 5: [`BOUND_MAP`]: a zeroed one says "no binding" to programs that skip the identity map
/// on a clear bit, so the maps of an agent without it are replaced, not adopted.
///
/// 6: [`TABLE_MAP`]: a zeroed bucket says "not bound, not a region" to programs that stop
/// at a free slot, so the maps of an agent without it are replaced, not adopted.
pub const ABI_VERSION: u32 = 6;
/// The oldest version whose pins this agent adopts map by map (by shape): a version that only
/// adds maps whose zeroed entries mean what the older agent's maps meant can be adopted. Not
/// version 2, 3, 4 or 5 (see [`ABI_VERSION`]).
pub const ABI_ADOPTS_FROM: u32 = 6;

/// `RingBuf` of [`DropEvent`]s, sampled (see [`EVENTS_PER_SEC`]).
pub const EVENTS_MAP: &str = "BND_EVENTS";
/// `PerCpuArray<EventBudget>` with one entry: each CPU's sampling state.
pub const EVENT_BUDGET_MAP: &str = "BND_EVT_BUDGET";

/// `PerCpuArray<VerdictCacheEntry>`: each CPU's direct-mapped cache of recent flow verdicts,
/// see [`VerdictCacheEntry`]. Not pinned: a program loaded anew starts with an empty cache, so
/// no entry outlives the code that wrote it.
pub const VERDICT_CACHE_MAP: &str = "BND_VCACHE";

/// `Array<u64>`: port bitmaps per generation, so the datapath skips lookups that cannot hit:
/// kind 0 has a bit for every port with an exact-port policy entry, kind 1 for every failsafe
/// port. See [`port_word_index`].
pub const PORTS_MAP: &str = "BND_PORTS";

/// `ProgramArray`: the TC programs by [`PROG_TC_INGRESS`] / [`PROG_TC_EGRESS`], for the tail
/// call that restarts one after it pulled non-linear headers into the skb's linear part.
/// Pinned: a program array loses its entries when no process or pin holds it any more.
pub const PROGS_MAP: &str = "BND_PROGS";
pub const PROG_TC_INGRESS: u32 = 0;
pub const PROG_TC_EGRESS: u32 = 1;
pub const PROGS_ENTRIES: u32 = 2;

/// All maps, in the order the agent pins and checks them.
pub const ALL_MAPS: [&str; 34] = [
    CONFIG_MAP,
    ENDPOINTS_MAP,
    NAMES_MAP,
    COUNTERS_MAP,
    IDENTITIES_MAP,
    EARNED_MAP,
    BIND_SEQ_MAP,
    CIDRS_MAP,
    POLICY_MAP,
    RANGES_MAP,
    FAILSAFE_MAP,
    CONNTRACK_MAP,
    FRAGMENTS_MAP,
    RULE_HITS_MAP,
    EVENTS_MAP,
    EVENT_BUDGET_MAP,
    PORTS_MAP,
    CT_INSERTS_MAP,
    PROGS_MAP,
    CONNTRACK_ACCEPTED_MAP,
    CT_ACCEPTED_INSERTS_MAP,
    RULE_IDS_MAP,
    ABI_MAP,
    BUCKETS_MAP,
    CREDITS_MAP,
    RULE_BUCKETS_MAP,
    RULE_LIMITED_MAP,
    BUCKET_IDS_MAP,
    PEER_BUCKETS_MAP,
    PEER_INSERTS_MAP,
    PREFIXES_MAP,
    PREFIX_LEVELS_MAP,
    BOUND_MAP,
    TABLE_MAP,
];

/// Default number of workload slots, slot 0 included. The agent may resize the maps at load.
pub const MAX_WORKLOADS: u32 = 256;
/// Capacities. Maps written by the compiler hold two generations during a swap, so each is
/// twice what one policy may use.
pub const MAX_ENDPOINTS: u32 = 2 * 32_768;
pub const MAX_IDENTITIES: u32 = 2 * 262_144;
/// Earned bindings at most (addresses, each with one identity).
pub const MAX_EARNED: u32 = 65_536;
pub const MAX_CIDRS: u32 = 2 * 1_048_576;
/// Regions of the prefix levels: as many as the trie's prefixes (a layout that would expand
/// past half of it, one generation's share, leaves its family in the trie).
pub const MAX_PREFIXES: u32 = 2 * 1_048_576;
pub const MAX_POLICY: u32 = 2 * 1_048_576;
pub const MAX_RANGES: u32 = 2 * 262_144;
pub const MAX_FAILSAFE: u32 = 2 * 1024;
pub const MAX_FLOWS: u32 = 65_536;
pub const MAX_FRAGMENTS: u32 = 16_384;
/// Rules in one policy (all workloads, both directions). Rule ids index [`RULE_HITS_MAP`].
pub const MAX_RULES: u32 = 131_072;
