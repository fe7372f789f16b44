//! Typed handles on the datapath's maps, from a freshly loaded object or from the pins.
//!
//! The handles are private: a caller reads through the methods here (or a `&` handle, which
//! cannot write), and writes only through the [`crate::datapath::Datapath`] that owns the maps,
//! whose writes all go through the generation swap or the config entry's one writer.
//!
//! One job a file: `shapes` (what a pinned map must look like), `keys` (ABI keys from compiled
//! entries), `config` (the one writer of the config entry), `swap` (the generation swap that
//! installs a compiled policy), `flows` (forgetting tracked flows), `reads` (counters and rule
//! hits summed over CPUs), `query` (point reads of the live generation, for `trace`).

mod bindings;
mod bound;
mod buckets;
mod config;
mod flows;
mod keys;
mod query;
mod reads;
mod rule_ids;
mod shapes;
mod swap;
mod table;

use config::ConfigEntry;

use swap::GenerationKeys;

pub use bindings::{EarnedBinding, monotonic_ns};
pub use buckets::now_ticks;
pub use reads::Occupancy;
pub use shapes::{Shape, expected_shapes, prepare_pinned};
pub use table::{TableFill, buckets_log2, table_buckets_for, table_entries};

use std::{collections::BTreeMap, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, lpm_trie::LpmTrie};
use boundary_common::maps::{
    self as abi, AddrKey, CIDR_KEY_LEN, CIDRS_MAP, CONFIG_MAP, CONNTRACK_MAP, COUNTERS_MAP,
    CounterRow, DatapathConfig, ENDPOINTS_MAP, EVENT_BUDGET_MAP, Endpoint, EndpointKey,
    EventBudget, FAILSAFE_KEY_LEN, FAILSAFE_MAP, FRAGMENTS_MAP, FlowKey, FlowValue, FragKey,
    FragValue, IDENTITIES_MAP, NAMES_MAP, POLICY_MAP, PolicyKey, PolicyValue, RANGE_KEY_LEN,
    RANGES_MAP, RULE_HITS_MAP, WorkloadName,
};
use boundary_common::name::decode_name;

use super::{batch, grace::Grace, pins::PinLayout};
use crate::policy::SlotTable;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name} is missing from the object or the pins")]
    Missing { name: &'static str },
    #[error(
        "the pins under {path} were made by a newer agent (ABI {found}; this one speaks {ours}): run that agent, or remove the old state with `boundary-agent detach` (enforcement stops until an agent runs again)"
    )]
    NewerAbi { path: String, found: u32, ours: u32 },
    #[error("replacing pinned map {path}: {source}")]
    Replace {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the map definitions of the embedded object: {0}")]
    Object(String),
    #[error("cannot count CPUs: {0}")]
    Cpus(String),
    #[error("the policy does not fit in map {name}: {source}; nothing was changed")]
    Full {
        name: &'static str,
        #[source]
        source: batch::Error,
    },
    #[error("writing map {name} failed: {source}; nothing was changed")]
    Write {
        name: &'static str,
        #[source]
        source: batch::Error,
    },
    #[error(
        "cannot wait out the packets in flight (an update of a BPF_MAP_TYPE_ARRAY_OF_MAPS entry): {0}; nothing was changed"
    )]
    Grace(#[source] std::io::Error),
    #[error("map {name} has {entries} entries: not twice a power of two, at least 4")]
    TableSize { name: &'static str, entries: u32 },
    #[error("reading map {name}: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: batch::Error,
    },
}

/// The blocks `RULE_HITS_MAP` needs, one per CPU id the datapath can run on: the highest
/// possible CPU's id plus one (the kernel's `nr_cpu_ids`, what `bpf_get_smp_processor_id`
/// stays below). Not the count of possible CPUs (`aya::util::nr_cpus`, as per-CPU maps are
/// sized): where the possible mask has holes, a CPU's id can be past that count, and its
/// hits would fall past the array's end, uncounted.
pub fn possible_cpus() -> Result<u32, MapsError> {
    const POSSIBLE: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(POSSIBLE)
        .map_err(|e| MapsError::Cpus(format!("{POSSIBLE}: {e}")))?;
    cpu_blocks(&text).ok_or_else(|| MapsError::Cpus(format!("{POSSIBLE}: {:?}", text.trim())))
}

/// The highest CPU id of a CPU list (`0-3,8-11`) plus one; `None` for an empty or malformed
/// list.
fn cpu_blocks(list: &str) -> Option<u32> {
    let mut blocks = None;
    for range in list.trim().split(',') {
        let highest = range.rsplit('-').next()?.trim().parse::<u32>().ok()?;
        blocks = blocks.max(Some(highest.checked_add(1)?));
    }
    blocks
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// The datapath's maps.
pub struct Maps {
    config: ConfigEntry,
    endpoints: HashMap<MapData, EndpointKey, Endpoint>,
    names: Array<MapData, WorkloadName>,
    counters: PerCpuArray<MapData, CounterRow>,
    identities: HashMap<MapData, AddrKey, abi::IdentityValue>,
    /// Earned bindings: the agent's record, and the sequences cached verdicts check (see
    /// `bindings.rs`).
    earned: HashMap<MapData, AddrKey, abi::EarnedRecord>,
    bind_seq: Array<MapData, u32>,
    cidrs: LpmTrie<MapData, [u8; CIDR_KEY_LEN], abi::PrefixValue>,
    /// The prefix levels' regions, each generation's level lengths, and the regions one
    /// generation may hold (half the map).
    prefixes: HashMap<MapData, abi::PrefixKey, abi::PrefixValue>,
    prefix_levels: Array<MapData, abi::PrefixLevels>,
    prefix_room: usize,
    /// Prefixes a family needs to be laid out in levels (see `LEVELS_FROM`).
    pub(in crate::datapath) prefix_levels_from: usize,
    policy: HashMap<MapData, PolicyKey, PolicyValue>,
    ranges: LpmTrie<MapData, [u8; RANGE_KEY_LEN], PolicyValue>,
    failsafe: LpmTrie<MapData, [u8; FAILSAFE_KEY_LEN], u32>,
    /// Flows the workloads opened.
    conntrack: HashMap<MapData, FlowKey, FlowValue>,
    /// Flows the workloads accepted.
    conntrack_accepted: HashMap<MapData, FlowKey, FlowValue>,
    fragments: HashMap<MapData, FragKey, FragValue>,
    /// A block of `MAX_RULES` counters per possible CPU.
    rule_hits: Array<MapData, u64>,
    /// Rule fingerprint -> id (see `rule_ids.rs`).
    rule_ids: HashMap<MapData, u64, u32>,
    /// What `rule_ids` holds, when this process knows it exactly.
    rule_ids_known: Option<crate::policy::RuleTable>,
    /// Packets each rule's limit refused.
    rule_limited: PerCpuArray<MapData, u64>,
    /// Rate-limit buckets, each CPU's credit in them, and which rule pays into which (see
    /// `buckets.rs`).
    buckets: Array<MapData, abi::BucketState>,
    credits: PerCpuArray<MapData, abi::BucketCredit>,
    rule_buckets: Array<MapData, u32>,
    bucket_ids: HashMap<MapData, u64, u32>,
    /// Each per-peer bucket's LRU map of peers, and how many peers each took in.
    peer_buckets: aya::maps::ArrayOfMaps<MapData, MapData>,
    /// The same map, for the deletes `ArrayOfMaps` does not offer.
    peer_buckets_fd: std::os::fd::OwnedFd,
    peer_inserts: PerCpuArray<MapData, u64>,
    /// The rules of each generation with a bucket, when this process knows them.
    rule_buckets_known: [Option<std::collections::BTreeSet<u32>>; 2],
    event_budget: PerCpuArray<MapData, EventBudget>,
    ports: Array<MapData, u64>,
    /// What waits out the packets in flight between a switch and the old generation's delete;
    /// made on the first swap.
    grace: Option<Grace>,
    /// A test asked to delete the old generation at once (to show what the wait prevents).
    pub(super) skip_grace: bool,
    /// The port bitmaps this process wrote, per generation.
    port_words: [Option<[Vec<u64>; 2]>; 2],
    /// The bound-address bitmap (see `bound.rs`), and each generation's words as this
    /// process last wrote them.
    bound: Array<MapData, u64>,
    bound_words: [Option<Vec<u64>>; 2],
    /// The address table (see `table.rs`), `log2` of its buckets per generation, and each
    /// generation's filled buckets and fill as this process last wrote them.
    table: Array<MapData, abi::TableBucket>,
    table_log2: u32,
    table_buckets: [Option<Vec<u32>>; 2],
    table_fill: [Option<TableFill>; 2],
    /// What the keyed maps hold, as far as this process knows: the next swap deletes the live
    /// generation by key and skips the scan when it knows the other one is empty.
    installed: Option<Installed>,
}

/// The live generation, as this process wrote it or last scanned it.
struct Installed {
    generation: u8,
    /// Every key of `generation` in the keyed maps.
    keys: GenerationKeys,
    /// The other generation has no entry: this process removed it and every removal went
    /// through. When false, the next swap scans the maps for residue first.
    other_empty: bool,
}

/// An array of maps, and a descriptor of it of its own.
fn of_maps(
    map: Map,
) -> Result<
    (
        aya::maps::ArrayOfMaps<MapData, MapData>,
        std::os::fd::OwnedFd,
    ),
    MapsError,
> {
    use std::os::fd::AsFd as _;
    let name = abi::PEER_BUCKETS_MAP;
    let Map::ArrayOfMaps(data) = &map else {
        return Err(MapsError::Missing { name });
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapsError::Cpus(format!("duplicating {name}: {e}")))?;
    Ok((map.try_into().map_err(map_err(name))?, fd))
}

/// The entries one generation of the prefix levels may take: half the map as loaded (a
/// larger policy may have raised it).
fn generation_room(map: &Map) -> Result<usize, MapsError> {
    let entries = match map {
        Map::HashMap(data) => data
            .info()
            .map_err(map_err(abi::PREFIXES_MAP))?
            .max_entries(),
        _ => abi::MAX_PREFIXES,
    };
    Ok(entries as usize / 2)
}

macro_rules! open_all {
    ($open:expr) => {{
        #[allow(
            unused_mut,
            reason = "one caller's closure needs mut, the other's does not"
        )]
        let mut open = $open;
        let (peer_buckets, peer_buckets_fd) = of_maps(open(abi::PEER_BUCKETS_MAP)?)?;
        let prefixes = open(abi::PREFIXES_MAP)?;
        let prefix_room = generation_room(&prefixes)?;
        let table_map = open(abi::TABLE_MAP)?;
        let table_log2 = buckets_log2(match &table_map {
            Map::Array(data) => data.info().map_err(map_err(abi::TABLE_MAP))?.max_entries(),
            _ => {
                return Err(MapsError::Missing {
                    name: abi::TABLE_MAP,
                });
            }
        })?;
        Ok(Self {
            config: ConfigEntry::new(open(CONFIG_MAP)?.try_into().map_err(map_err(CONFIG_MAP))?),
            endpoints: open(ENDPOINTS_MAP)?
                .try_into()
                .map_err(map_err(ENDPOINTS_MAP))?,
            names: open(NAMES_MAP)?.try_into().map_err(map_err(NAMES_MAP))?,
            counters: open(COUNTERS_MAP)?
                .try_into()
                .map_err(map_err(COUNTERS_MAP))?,
            identities: open(IDENTITIES_MAP)?
                .try_into()
                .map_err(map_err(IDENTITIES_MAP))?,
            earned: open(abi::EARNED_MAP)?
                .try_into()
                .map_err(map_err(abi::EARNED_MAP))?,
            bind_seq: open(abi::BIND_SEQ_MAP)?
                .try_into()
                .map_err(map_err(abi::BIND_SEQ_MAP))?,
            cidrs: open(CIDRS_MAP)?.try_into().map_err(map_err(CIDRS_MAP))?,
            prefixes: prefixes.try_into().map_err(map_err(abi::PREFIXES_MAP))?,
            prefix_levels: open(abi::PREFIX_LEVELS_MAP)?
                .try_into()
                .map_err(map_err(abi::PREFIX_LEVELS_MAP))?,
            prefix_room,
            prefix_levels_from: crate::policy::compile::prefixes::LEVELS_FROM,
            policy: open(POLICY_MAP)?.try_into().map_err(map_err(POLICY_MAP))?,
            ranges: open(RANGES_MAP)?.try_into().map_err(map_err(RANGES_MAP))?,
            failsafe: open(FAILSAFE_MAP)?
                .try_into()
                .map_err(map_err(FAILSAFE_MAP))?,
            conntrack: open(CONNTRACK_MAP)?
                .try_into()
                .map_err(map_err(CONNTRACK_MAP))?,
            conntrack_accepted: open(abi::CONNTRACK_ACCEPTED_MAP)?
                .try_into()
                .map_err(map_err(abi::CONNTRACK_ACCEPTED_MAP))?,
            fragments: open(FRAGMENTS_MAP)?
                .try_into()
                .map_err(map_err(FRAGMENTS_MAP))?,
            rule_hits: open(RULE_HITS_MAP)?
                .try_into()
                .map_err(map_err(RULE_HITS_MAP))?,
            rule_ids: open(abi::RULE_IDS_MAP)?
                .try_into()
                .map_err(map_err(abi::RULE_IDS_MAP))?,
            rule_ids_known: None,
            rule_limited: open(abi::RULE_LIMITED_MAP)?
                .try_into()
                .map_err(map_err(abi::RULE_LIMITED_MAP))?,
            buckets: open(abi::BUCKETS_MAP)?
                .try_into()
                .map_err(map_err(abi::BUCKETS_MAP))?,
            credits: open(abi::CREDITS_MAP)?
                .try_into()
                .map_err(map_err(abi::CREDITS_MAP))?,
            rule_buckets: open(abi::RULE_BUCKETS_MAP)?
                .try_into()
                .map_err(map_err(abi::RULE_BUCKETS_MAP))?,
            bucket_ids: open(abi::BUCKET_IDS_MAP)?
                .try_into()
                .map_err(map_err(abi::BUCKET_IDS_MAP))?,
            rule_buckets_known: [None, None],
            peer_buckets_fd,
            peer_buckets,
            peer_inserts: open(abi::PEER_INSERTS_MAP)?
                .try_into()
                .map_err(map_err(abi::PEER_INSERTS_MAP))?,
            event_budget: open(EVENT_BUDGET_MAP)?
                .try_into()
                .map_err(map_err(EVENT_BUDGET_MAP))?,
            ports: open(abi::PORTS_MAP)?
                .try_into()
                .map_err(map_err(abi::PORTS_MAP))?,
            grace: None,
            skip_grace: false,
            port_words: [None, None],
            bound: open(abi::BOUND_MAP)?
                .try_into()
                .map_err(map_err(abi::BOUND_MAP))?,
            bound_words: [None, None],
            table: table_map.try_into().map_err(map_err(abi::TABLE_MAP))?,
            table_log2,
            table_buckets: [None, None],
            table_fill: [None, None],
            installed: None,
        })
    }};
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, MapsError> {
        open_all!(|name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing { name }))
    }

    /// Opens the pinned maps (the agent need not be running).
    pub fn from_pins(layout: &PinLayout) -> Result<Self, MapsError> {
        open_all!(|name: &'static str| -> Result<Map, MapsError> {
            let path = layout.map(name);
            if !Path::new(&path).exists() {
                return Err(MapsError::Missing { name });
            }
            let data = MapData::from_pin(&path).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        })
    }

    /// Slot -> name for every named slot.
    pub fn names(&self) -> Result<BTreeMap<u16, String>, MapsError> {
        let mut out = BTreeMap::new();
        for slot in 0..self.names.len() {
            let raw = self.names.get(&slot, 0).map_err(map_err(NAMES_MAP))?;
            if let Some(name) = decode_name(&raw.name) {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "maxWorkloads is at most 65535"
                )]
                out.insert(slot as u16, name);
            }
        }
        Ok(out)
    }

    /// The installed name -> slot table, which the compiler keeps stable.
    pub fn slot_table(&self) -> Result<SlotTable, MapsError> {
        Ok(self.names()?.into_iter().map(|(s, n)| (n, s)).collect())
    }

    /// Number of workload slots the maps were sized for.
    pub fn max_workloads(&self) -> u32 {
        self.names.len()
    }

    /// The datapath config: the live generation, the non-IP action, the epoch.
    pub fn datapath_config(&self) -> Result<DatapathConfig, MapsError> {
        self.config.read()
    }

    /// Read-only handles, for inspection (`status`, tests, the bench): a `&` handle cannot
    /// insert or delete.
    pub fn endpoints_map(&self) -> &HashMap<MapData, EndpointKey, Endpoint> {
        &self.endpoints
    }

    pub fn cidrs_map(&self) -> &LpmTrie<MapData, [u8; CIDR_KEY_LEN], abi::PrefixValue> {
        &self.cidrs
    }

    pub fn prefixes_map(&self) -> &HashMap<MapData, abi::PrefixKey, abi::PrefixValue> {
        &self.prefixes
    }

    /// The prefix levels of generation `g` (what the datapath walks).
    pub fn prefix_levels(&self, g: u8) -> Result<abi::PrefixLevels, MapsError> {
        self.prefix_levels
            .get(&u32::from(g & 1), 0)
            .map_err(map_err(abi::PREFIX_LEVELS_MAP))
    }

    pub fn failsafe_map(&self) -> &LpmTrie<MapData, [u8; FAILSAFE_KEY_LEN], u32> {
        &self.failsafe
    }

    /// The bound-address bitmap (see `bound.rs`).
    pub fn bound_map(&self) -> &Array<MapData, u64> {
        &self.bound
    }

    pub fn policy_map(&self) -> &HashMap<MapData, PolicyKey, PolicyValue> {
        &self.policy
    }

    /// Flows the workloads opened.
    pub fn conntrack_map(&self) -> &HashMap<MapData, FlowKey, FlowValue> {
        &self.conntrack
    }

    /// Flows the workloads accepted.
    pub fn conntrack_accepted_map(&self) -> &HashMap<MapData, FlowKey, FlowValue> {
        &self.conntrack_accepted
    }

    pub fn event_budget_map(&self) -> &PerCpuArray<MapData, EventBudget> {
        &self.event_budget
    }

    pub fn fragments_map(&self) -> &HashMap<MapData, FragKey, FragValue> {
        &self.fragments
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_blocks;

    #[test]
    fn rule_hits_have_a_block_per_cpu_id_holes_included() {
        assert_eq!(cpu_blocks("0-3\n"), Some(4));
        assert_eq!(cpu_blocks("0\n"), Some(1));
        // A hole: CPUs 8-11 exist, and `bpf_get_smp_processor_id` says 8..=11 on them.
        assert_eq!(cpu_blocks("0-3,8-11\n"), Some(12));
        assert_eq!(cpu_blocks("0,2,5\n"), Some(6));
        assert_eq!(cpu_blocks(""), None);
        assert_eq!(cpu_blocks("0-x"), None);
    }
}
