//! Map names, sizes, keys and values.
//!
//! Map names are kept under 16 bytes: the kernel truncates object names to `BPF_OBJ_NAME_LEN`
//! (16, NUL included) and the pinned files carry the same names.
//!
//! ## Generations
//! Every map the policy compiler fills carries a generation byte in its key. The datapath reads
//! the live generation once per packet from [`DatapathConfig::generation`] and uses it in every
//! lookup, so a packet sees one policy or the other, never a mix. The agent writes a new policy
//! under the other generation, flips the config entry (one map update: the switch), then
//! deletes the old generation's entries. Maps therefore hold two generations at once during a
//! swap and are sized for it.

use core::mem::size_of;

use crate::reason::REASON_SLOTS;

/// `REASON_SLOTS - 1`: masks a reason code into a counter row (`REASON_SLOTS` is a power of two).
pub const REASON_SLOTS_MASK: usize = REASON_SLOTS - 1;

/// `Array<DatapathConfig>` with one entry: settings that hold for every interface.
pub const CONFIG_MAP: &str = "BND_CONFIG";
/// `HashMap<AddrKey, Endpoint>`: local address -> the workload that owns it.
pub const ENDPOINTS_MAP: &str = "BND_ENDPOINTS";
/// `Array<WorkloadName>`: slot -> name, so pinned counters explain themselves with no agent.
pub const NAMES_MAP: &str = "BND_NAMES";
/// `PerCpuArray<CounterRow>`: one row per (workload slot, direction), see [`counter_index`].
pub const COUNTERS_MAP: &str = "BND_COUNTERS";
/// `HashMap<AddrKey, u32>`: exact peer address -> identity (static and attested bindings).
pub const IDENTITIES_MAP: &str = "BND_IDENTITIES";
/// `LpmTrie<CidrKey, u32>`: peer prefix -> identity, consulted when the exact map misses.
pub const CIDRS_MAP: &str = "BND_CIDRS";
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

/// `PerCpuArray<u64>`: packets decided by each rule (by compiled rule id).
pub const RULE_HITS_MAP: &str = "BND_RULE_HITS";

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

/// `ProgramArray`: the TC programs by [`PROG_TC_INGRESS`] / [`PROG_TC_EGRESS`], for the tail
/// call that restarts one after it pulled non-linear headers into the skb's linear part.
/// Pinned: a program array loses its entries when no process or pin holds it any more.
pub const PROGS_MAP: &str = "BND_PROGS";
pub const PROG_TC_INGRESS: u32 = 0;
pub const PROG_TC_EGRESS: u32 = 1;
pub const PROGS_ENTRIES: u32 = 2;

/// All maps, in the order the agent pins and checks them.
pub const ALL_MAPS: [&str; 19] = [
    CONFIG_MAP,
    ENDPOINTS_MAP,
    NAMES_MAP,
    COUNTERS_MAP,
    IDENTITIES_MAP,
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
];

/// Default number of workload slots, slot 0 included. The agent may resize the maps at load.
pub const MAX_WORKLOADS: u32 = 256;
/// Capacities. Maps written by the compiler hold two generations during a swap, so each is
/// twice what one policy may use.
pub const MAX_ENDPOINTS: u32 = 2 * 32_768;
pub const MAX_IDENTITIES: u32 = 2 * 262_144;
pub const MAX_CIDRS: u32 = 2 * 1_048_576;
pub const MAX_POLICY: u32 = 2 * 1_048_576;
pub const MAX_RANGES: u32 = 2 * 262_144;
pub const MAX_FAILSAFE: u32 = 2 * 1024;
pub const MAX_FLOWS: u32 = 65_536;
pub const MAX_FRAGMENTS: u32 = 16_384;
/// Entries of each CPU's verdict cache (a power of two: the index is the top bits of a hash).
pub const VERDICT_CACHE_SLOTS: u32 = 2_048;
/// `log2(VERDICT_CACHE_SLOTS)`.
pub const VERDICT_CACHE_BITS: u32 = 11;
/// The global (`[u64; CACHE_KEY_WORDS]`, in the object's .rodata) holding the verdict cache's
/// per-load hash key: a random multiplier per 32-bit half of a flow's five words, then a
/// random addend. The loader sets it.
pub const CACHE_KEY_GLOBAL: &str = "BND_CACHE_KEY";
pub const CACHE_KEY_WORDS: usize = 11;
/// Rules in one policy (all workloads, both directions). Rule ids index [`RULE_HITS_MAP`].
pub const MAX_RULES: u32 = 131_072;

/// Slot 0 counts traffic for addresses no workload claims (and malformed packets whose
/// addresses could not be read).
pub const UNPROTECTED_SLOT: u16 = 0;
/// The name the counters show for slot 0.
pub const UNPROTECTED_NAME: &str = "(unprotected)";

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

/// Conntrack idle timeouts: a reply is `established` while its flow was seen this recently.
pub const CT_TIMEOUT_TCP_NS: u64 = 3_600 * 1_000_000_000;
pub const CT_TIMEOUT_UDP_NS: u64 = 120 * 1_000_000_000;
pub const CT_TIMEOUT_OTHER_NS: u64 = 60 * 1_000_000_000;
/// A flow's timestamp is rewritten at most this often, to keep the fast path read-mostly.
pub const CT_REFRESH_NS: u64 = 1_000_000_000;

/// Index into [`COUNTERS_MAP`] for a workload slot and a direction (0 ingress, 1 egress).
pub const fn counter_index(slot: u16, direction: u8) -> u32 {
    (slot as u32) * 2 + (direction as u32 & 1)
}

/// The two things the datapath can do with a packet when nothing more specific decides.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pass = 0,
    Drop = 1,
}

/// Enforce drops, or only count them (audit).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Enforce = 0,
    Audit = 1,
}

/// The single entry of [`CONFIG_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// [`Action`] for frames that are not IPv4 or IPv6 (ARP, LLDP, ...).
    pub non_ip: u8,
    /// The live policy generation (0 or 1).
    pub generation: u8,
    /// `CFG_*` bits describing the live generation, so the datapath skips empty maps.
    pub flags: u8,
    pub pad: u8,
    /// Bumped by every write that changes what a flow's verdict could be (a new generation,
    /// conntrack flushed, later: a binding attested). Verdict cache entries of another epoch
    /// are misses; 0 means "no policy yet" and disables the cache.
    pub epoch: u32,
}

/// [`DatapathConfig::flags`]: the live generation has exact-address identity bindings.
pub const CFG_HAS_BINDINGS: u8 = 1;
/// ... CIDR identities.
pub const CFG_HAS_CIDRS: u8 = 2;
/// ... failsafe entries.
pub const CFG_HAS_FAILSAFE: u8 = 4;

impl DatapathConfig {
    pub const fn new(non_ip: Action, generation: u8, flags: u8) -> Self {
        Self {
            non_ip: non_ip as u8,
            generation,
            flags,
            pad: 0,
            epoch: 0,
        }
    }

    /// The same config with `epoch`.
    #[must_use]
    pub const fn with_epoch(mut self, epoch: u32) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch after this one (never 0, which disables the cache).
    pub const fn next_epoch(&self) -> u32 {
        match self.epoch.wrapping_add(1) {
            0 => 1,
            e => e,
        }
    }
}

/// Address family tags used in keys.
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// Key of [`ENDPOINTS_MAP`] and [`IDENTITIES_MAP`]: an address (IPv4 in the first four bytes,
/// zeros after) in a generation.
// Aligned so that the datapath copies an address into a key as words, not byte by byte
// (alignment changes no offset and no size: the ABI is the same).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    pub family: u8,
    pub generation: u8,
    pub pad: [u8; 2],
    pub addr: [u8; 16],
}

impl AddrKey {
    pub const fn new(generation: u8, family: u8, addr: [u8; 16]) -> Self {
        Self {
            family,
            generation,
            pad: [0; 2],
            addr,
        }
    }
}

/// [`Endpoint::flags`]: the workload has port-range rules in this direction (the datapath
/// then also consults [`RANGES_MAP`]).
pub const EP_RANGES_INGRESS: u8 = 1;
pub const EP_RANGES_EGRESS: u8 = 2;
/// Record flows the workload starts (egress) so their replies pass ingress as `established`.
pub const EP_TRACK_EGRESS: u8 = 4;
/// Record flows allowed in (ingress) so their replies pass egress as `established`.
pub const EP_TRACK_INGRESS: u8 = 8;
/// The workload has rules in this direction (without any, the datapath goes straight to the
/// default).
pub const EP_RULES_INGRESS: u8 = 16;
pub const EP_RULES_EGRESS: u8 = 32;
/// Some of those rules are about particular peers (not `any`): the peer's identity must be
/// looked up. Without, only the `any`-peer entries can match.
pub const EP_PEERS_INGRESS: u8 = 64;
pub const EP_PEERS_EGRESS: u8 = 128;

/// Value of [`ENDPOINTS_MAP`]: the workload an address belongs to and how it is enforced.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Workload slot, 1..[`MAX_WORKLOADS`]; indexes [`NAMES_MAP`] and [`COUNTERS_MAP`].
    pub slot: u16,
    /// [`Mode`].
    pub mode: u8,
    /// [`Action`] for ingress packets no rule decides.
    pub ingress_default: u8,
    /// [`Action`] for egress packets no rule decides.
    pub egress_default: u8,
    /// `EP_*` bits.
    pub flags: u8,
    pub pad: [u8; 2],
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// [`RULE_ALLOW`] or [`RULE_DENY`].
    pub action: u8,
    pub pad: [u8; 3],
    /// The deciding rule's id (its index in the compiled rule list).
    pub rule: u32,
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

/// Key of [`CONNTRACK_MAP`]: the packet expected back, as it will be seen, in the direction it
/// will be seen (0 ingress, 1 egress).
// Aligned as `AddrKey` is, for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub direction: u8,
    pub proto: u8,
    pub family: u8,
    pub pad: u8,
    /// Ports, or the ICMP echo identifier in both for echo flows.
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Value of [`CONNTRACK_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowValue {
    /// `bpf_ktime_get_coarse_ns` when the flow was last seen going out.
    pub last_seen_ns: u64,
}

/// One entry of [`VERDICT_CACHE_MAP`]: the policy's verdict for one TCP/UDP flow in one
/// direction, valid while [`DatapathConfig::epoch`] is `epoch`.
///
/// It holds what is a pure function of the flow and the live policy (workload, identity,
/// rule, the policy reason after failsafe). What can change under it is not cached but
/// checked cheaply: a cached allow refreshes its conntrack entry every
/// [`CT_REFRESH_JIFFIES`]; a cached drop asks conntrack whether the packet is an established
/// reply unless no flow has been recorded since it last said no (see [`CT_INSERTS_MAP`]), or
/// it said yes less than [`CT_REFRESH_JIFFIES`] ago (see [`VC_REPLY`]).
/// Fragments, ICMP and other protocols never use the cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictCacheEntry {
    /// The flow as 5 words: (direction, proto, family, 0, sport, dport), source, destination.
    pub flow: [u64; 5],
    pub epoch: u32,
    pub slot: u16,
    /// `Reason` code decided by the policy (or failsafe, or "unprotected").
    pub reason: u8,
    /// `VC_*` bits.
    pub flags: u8,
    pub rule: u32,
    pub identity: u32,
    /// For an allow: the `bpf_jiffies64` after which it refreshes its conntrack entry. For a
    /// drop: with [`VC_REPLY`], the `bpf_jiffies64` until which conntrack's last "a reply"
    /// stands; without, the [`CT_INSERTS_MAP`] count when conntrack last said "not a reply"
    /// ([`CT_NOT_ASKED`] before it was asked).
    pub ct: u64,
}

/// [`VerdictCacheEntry::ct`] of a drop whose flow conntrack has not been asked about.
pub const CT_NOT_ASKED: u64 = u64::MAX;

/// [`VerdictCacheEntry::flags`]: the workload tracks this direction's allowed flows.
pub const VC_TRACK: u8 = 1;
/// ... the workload is in audit mode.
pub const VC_AUDIT: u8 = 2;
/// ... a drop that conntrack last found to be an established reply: the answer stands for
/// [`CT_REFRESH_JIFFIES`] (so a flow that expires or is evicted meanwhile has its replies
/// admitted that much longer, 64-640 ms against timeouts of a minute and more).
pub const VC_REPLY: u8 = 4;
/// A cached allow rewrites its conntrack entry at most this often (64 ms at HZ=1000, 640 ms at
/// HZ=100: well inside every conntrack timeout, and the entry is re-created this quickly if
/// the LRU evicted it).
pub const CT_REFRESH_JIFFIES: u64 = 64;

/// Key of [`FRAGMENTS_MAP`]: one datagram being fragmented.
// Aligned as `AddrKey` is, for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub direction: u8,
    /// The IPv4 protocol, or the Next Header of the IPv6 Fragment header (the same in every
    /// fragment of a datagram; not the transport protocol, which AH or Destination Options may
    /// hide behind in the first fragment).
    pub proto: u8,
    pub family: u8,
    pub pad: u8,
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    pub id: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Value of [`FRAGMENTS_MAP`]: what the first fragment got.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragValue {
    /// The first fragment's reason code; later fragments get the same.
    pub reason: u8,
    pub pad: u8,
    pub slot: u16,
    pub rule: u32,
}

/// Drop events each CPU may send per second; past that they are counted as lost, so a flood
/// cannot starve the agent (or fill the ring) with events.
pub const EVENTS_PER_SEC: u64 = 1000;
/// Events a CPU may send at once after a quiet spell.
pub const EVENTS_BURST: u32 = 200;
/// Size of the event ring, in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Value of [`EVENT_BUDGET_MAP`]: a token bucket of events, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBudget {
    pub last_refill_ns: u64,
    pub tokens: u32,
    /// Drops still to count as lost before the clock is read again (while the bucket is empty).
    pub skip: u32,
    /// Events sent.
    pub sent: u64,
    /// Events not sent: over budget, or the ring was full.
    pub lost: u64,
}

/// A dropped (or, in audit mode, would-be dropped) packet, as `monitor` shows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_coarse_ns` (monotonic since boot).
    pub timestamp_ns: u64,
    /// The peer's identity, 0 when the policy was not consulted.
    pub identity: u32,
    /// Frame length.
    pub len: u32,
    /// The deciding rule, `u32::MAX` when none.
    pub rule: u32,
    pub slot: u16,
    pub sport: u16,
    pub dport: u16,
    pub reason: u8,
    pub direction: u8,
    /// 0 when the addresses could not be read.
    pub family: u8,
    pub proto: u8,
    pub icmp_type: u8,
    pub pad: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Longest workload name, in bytes.
pub const WORKLOAD_NAME_LEN: usize = 64;

/// Value of [`NAMES_MAP`]: a workload's name, NUL-padded UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadName {
    pub name: [u8; WORKLOAD_NAME_LEN],
}

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Value of [`COUNTERS_MAP`]: one counter per reason code.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub counters: [Counter; REASON_SLOTS],
}

impl Default for CounterRow {
    fn default() -> Self {
        Self {
            counters: [Counter::default(); REASON_SLOTS],
        }
    }
}

const _: () = {
    assert!(REASON_SLOTS.is_power_of_two());
    assert!(size_of::<DatapathConfig>() == 8);
    assert!(size_of::<AddrKey>() == 20);
    assert!(size_of::<Endpoint>() == 8);
    assert!(size_of::<PolicyKey>() == 12);
    assert!(size_of::<PolicyValue>() == 8);
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<FlowValue>() == 8);
    assert!(size_of::<FragKey>() == 40);
    assert!(size_of::<FragValue>() == 8);
    assert!(size_of::<VerdictCacheEntry>() == 64);
    assert!(VERDICT_CACHE_SLOTS == 1 << VERDICT_CACHE_BITS);
    assert!(size_of::<WorkloadName>() == WORKLOAD_NAME_LEN);
    assert!(size_of::<EventBudget>() == 32);
    assert!(size_of::<DropEvent>() == 64);
    assert!(size_of::<Counter>() == 16);
    assert!(size_of::<CounterRow>() == 16 * REASON_SLOTS);
    // Per-CPU values are limited to 32 KiB by the kernel (PCPU_MIN_UNIT_SIZE).
    assert!(size_of::<CounterRow>() <= 32 * 1024);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY (for every impl below): `#[repr(C)]`, only integer fields and arrays of them, and
    // every padding byte is an explicit field, so any bit pattern is valid and none is hidden.
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    use super::{
        AddrKey, Counter, CounterRow, DatapathConfig, DropEvent, Endpoint, EventBudget, FlowKey,
        FlowValue, FragKey, FragValue, PolicyKey, PolicyValue, WorkloadName,
    };

    unsafe impl aya::Pod for DatapathConfig {}
    unsafe impl aya::Pod for AddrKey {}
    unsafe impl aya::Pod for Endpoint {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for WorkloadName {}
    unsafe impl aya::Pod for EventBudget {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for CounterRow {}
}
