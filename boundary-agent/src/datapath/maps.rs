//! Typed handles on the datapath's maps, from a freshly loaded object or from the pins, and the
//! generation swap that installs a compiled policy.

use std::{collections::BTreeMap, mem::size_of, net::IpAddr, path::Path};

use aya::{
    Pod,
    maps::{
        Array, HashMap, IterableMap, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues,
        lpm_trie::{Key, LpmTrie},
    },
};
use boundary_common::maps::{
    self as abi, AddrKey, CIDR_KEY_FIXED_BITS, CIDR_KEY_LEN, CIDRS_MAP, CONFIG_MAP, CONNTRACK_MAP,
    COUNTERS_MAP, CounterRow, DatapathConfig, ENDPOINTS_MAP, EVENT_BUDGET_MAP, EVENTS_MAP,
    Endpoint, EventBudget, FAILSAFE_KEY_FIXED_BITS, FAILSAFE_KEY_LEN, FAILSAFE_MAP, FAMILY_IPV4,
    FAMILY_IPV6, FRAGMENTS_MAP, FlowKey, FlowValue, FragKey, FragValue, IDENTITIES_MAP, NAMES_MAP,
    POLICY_MAP, PolicyKey, PolicyValue, RANGE_KEY_FIXED_BITS, RANGE_KEY_LEN, RANGES_MAP,
    RULE_HITS_MAP, WorkloadName, cidr_key_data, failsafe_key_data, range_key_data,
};
use ipnet::IpNet;
use tracing::warn;

use super::{batch, pins::PinLayout};
use crate::{
    policy::{
        SlotTable, Tables,
        compile::{RangeKey, RuleKey, decode_name, encode_name},
    },
    reference::Lookup,
};

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
        "pinned map {path} has {found}, this agent needs {wanted}; remove the old state with `boundary-agent detach` (enforcement stops until the agent runs again)"
    )]
    Incompatible {
        path: String,
        found: String,
        wanted: String,
    },
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
    #[error("reading map {name}: {source}")]
    Read {
        name: &'static str,
        #[source]
        source: batch::Error,
    },
}

/// One CPU-summed counter row out of each CPU's.
fn summed(per_cpu: &[CounterRow]) -> CounterRow {
    let mut sum = CounterRow::default();
    for row in per_cpu {
        for (acc, c) in sum.counters.iter_mut().zip(row.counters.iter()) {
            acc.packets += c.packets;
            acc.bytes += c.bytes;
        }
    }
    sum
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "ABI sizes are small and asserted in boundary-common"
)]
const fn size(n: usize) -> u32 {
    n as u32
}

/// What every map must look like: (name, key size, value size, max entries).
pub fn expected_shapes(max_workloads: u32) -> [(&'static str, u32, u32, u32); 17] {
    [
        (CONFIG_MAP, 4, size(size_of::<DatapathConfig>()), 1),
        (
            ENDPOINTS_MAP,
            size(size_of::<AddrKey>()),
            size(size_of::<Endpoint>()),
            abi::MAX_ENDPOINTS,
        ),
        (NAMES_MAP, 4, size(size_of::<WorkloadName>()), max_workloads),
        (
            COUNTERS_MAP,
            4,
            size(size_of::<CounterRow>()),
            max_workloads * 2,
        ),
        (
            IDENTITIES_MAP,
            size(size_of::<AddrKey>()),
            4,
            abi::MAX_IDENTITIES,
        ),
        (CIDRS_MAP, 4 + size(CIDR_KEY_LEN), 4, abi::MAX_CIDRS),
        (
            POLICY_MAP,
            size(size_of::<PolicyKey>()),
            size(size_of::<PolicyValue>()),
            abi::MAX_POLICY,
        ),
        (
            RANGES_MAP,
            4 + size(RANGE_KEY_LEN),
            size(size_of::<PolicyValue>()),
            abi::MAX_RANGES,
        ),
        (
            FAILSAFE_MAP,
            4 + size(FAILSAFE_KEY_LEN),
            4,
            abi::MAX_FAILSAFE,
        ),
        (
            CONNTRACK_MAP,
            size(size_of::<FlowKey>()),
            size(size_of::<FlowValue>()),
            abi::MAX_FLOWS,
        ),
        (
            FRAGMENTS_MAP,
            size(size_of::<FragKey>()),
            size(size_of::<FragValue>()),
            abi::MAX_FRAGMENTS,
        ),
        (RULE_HITS_MAP, 4, 8, abi::MAX_RULES),
        (EVENTS_MAP, 0, 0, abi::EVENTS_RING_BYTES),
        (EVENT_BUDGET_MAP, 4, size(size_of::<EventBudget>()), 1),
        (abi::PORTS_MAP, 4, 8, abi::PORTS_ENTRIES),
        (abi::CT_INSERTS_MAP, 4, 8, 1),
        (abi::PROGS_MAP, 4, 4, abi::PROGS_ENTRIES),
    ]
}

/// Checks that maps already pinned under `layout` have the shapes this agent needs: aya reuses
/// a pinned map without comparing its attributes, and a mismatch would corrupt it.
pub fn check_pinned(layout: &PinLayout, max_workloads: u32) -> Result<(), MapsError> {
    for (name, key, value, entries) in expected_shapes(max_workloads) {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if found != (key, value, entries) {
            return Err(MapsError::Incompatible {
                path: path.display().to_string(),
                found: format!("key {}B, value {}B, {} entries", found.0, found.1, found.2),
                wanted: format!("key {key}B, value {value}B, {entries} entries"),
            });
        }
    }
    Ok(())
}

fn family_addr(addr: IpAddr) -> (u8, [u8; 16]) {
    match addr {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            (FAMILY_IPV4, out)
        }
        IpAddr::V6(a) => (FAMILY_IPV6, a.octets()),
    }
}

fn addr_bits(addr: IpAddr) -> u32 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn addr_key(generation: u8, addr: IpAddr) -> AddrKey {
    let (family, a) = family_addr(addr);
    AddrKey::new(generation, family, a)
}

fn cidr_key(generation: u8, net: IpNet) -> Key<[u8; CIDR_KEY_LEN]> {
    let (family, a) = family_addr(net.network());
    Key::new(
        CIDR_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        cidr_key_data(generation, family, a),
    )
}

fn policy_key(generation: u8, k: &RuleKey) -> PolicyKey {
    PolicyKey {
        generation,
        direction: k.direction,
        proto: k.proto,
        pad: 0,
        slot: k.slot,
        port: k.port,
        identity: k.identity,
    }
}

fn range_key(generation: u8, k: &RangeKey) -> Key<[u8; RANGE_KEY_LEN]> {
    Key::new(
        RANGE_KEY_FIXED_BITS + u32::from(k.bits),
        range_key_data(generation, k.direction, k.proto, k.slot, k.identity, k.port),
    )
}

fn failsafe_key(generation: u8, proto: u8, port: u16, net: IpNet) -> Key<[u8; FAILSAFE_KEY_LEN]> {
    let (family, a) = family_addr(net.network());
    Key::new(
        FAILSAFE_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        failsafe_key_data(generation, family, proto, port, a),
    )
}

/// A port bitmap (1024 words) with a bit for each port but `PORT_ANY`.
fn port_bitmap(ports: impl Iterator<Item = u16>) -> Vec<u64> {
    let mut words = vec![0u64; abi::PORT_WORDS as usize];
    for p in ports.filter(|p| *p != abi::PORT_ANY) {
        words[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    words
}

/// The `CFG_*` bits of a generation: which maps the datapath may skip.
fn config_flags(t: &Tables) -> u8 {
    let mut f = 0;
    if !t.identities.is_empty() {
        f |= abi::CFG_HAS_BINDINGS;
    }
    if !t.cidrs.is_empty() {
        f |= abi::CFG_HAS_CIDRS;
    }
    if !t.failsafe.is_empty() {
        f |= abi::CFG_HAS_FAILSAFE;
    }
    f
}

/// The datapath's maps.
pub struct Maps {
    pub config: Array<MapData, DatapathConfig>,
    pub endpoints: HashMap<MapData, AddrKey, Endpoint>,
    pub names: Array<MapData, WorkloadName>,
    pub counters: PerCpuArray<MapData, CounterRow>,
    pub identities: HashMap<MapData, AddrKey, u32>,
    pub cidrs: LpmTrie<MapData, [u8; CIDR_KEY_LEN], u32>,
    pub policy: HashMap<MapData, PolicyKey, PolicyValue>,
    pub ranges: LpmTrie<MapData, [u8; RANGE_KEY_LEN], PolicyValue>,
    pub failsafe: LpmTrie<MapData, [u8; FAILSAFE_KEY_LEN], u32>,
    pub conntrack: HashMap<MapData, FlowKey, FlowValue>,
    pub fragments: HashMap<MapData, FragKey, FragValue>,
    pub rule_hits: PerCpuArray<MapData, u64>,
    pub event_budget: PerCpuArray<MapData, EventBudget>,
    pub ports: Array<MapData, u64>,
    /// The port bitmaps this process wrote, per generation.
    port_words: [Option<[Vec<u64>; 2]>; 2],
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

macro_rules! open_all {
    ($open:expr) => {{
        #[allow(
            unused_mut,
            reason = "one caller's closure needs mut, the other's does not"
        )]
        let mut open = $open;
        Ok(Self {
            config: open(CONFIG_MAP)?.try_into().map_err(map_err(CONFIG_MAP))?,
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
            cidrs: open(CIDRS_MAP)?.try_into().map_err(map_err(CIDRS_MAP))?,
            policy: open(POLICY_MAP)?.try_into().map_err(map_err(POLICY_MAP))?,
            ranges: open(RANGES_MAP)?.try_into().map_err(map_err(RANGES_MAP))?,
            failsafe: open(FAILSAFE_MAP)?
                .try_into()
                .map_err(map_err(FAILSAFE_MAP))?,
            conntrack: open(CONNTRACK_MAP)?
                .try_into()
                .map_err(map_err(CONNTRACK_MAP))?,
            fragments: open(FRAGMENTS_MAP)?
                .try_into()
                .map_err(map_err(FRAGMENTS_MAP))?,
            rule_hits: open(RULE_HITS_MAP)?
                .try_into()
                .map_err(map_err(RULE_HITS_MAP))?,
            event_budget: open(EVENT_BUDGET_MAP)?
                .try_into()
                .map_err(map_err(EVENT_BUDGET_MAP))?,
            ports: open(abi::PORTS_MAP)?
                .try_into()
                .map_err(map_err(abi::PORTS_MAP))?,
            port_words: [None, None],
            installed: None,
        })
    }};
}

/// One generation's keys in the keyed maps, serialized as the kernel holds them: contiguous
/// arrays of the ABI types, which is what a batch call takes. A few bytes per entry, where the
/// compiled tables they come from take several times that.
#[derive(Default)]
struct GenerationKeys {
    endpoints: Vec<AddrKey>,
    identities: Vec<AddrKey>,
    cidrs: Vec<Key<[u8; CIDR_KEY_LEN]>>,
    policy: Vec<PolicyKey>,
    ranges: Vec<Key<[u8; RANGE_KEY_LEN]>>,
    failsafe: Vec<Key<[u8; FAILSAFE_KEY_LEN]>>,
}

impl GenerationKeys {
    /// The keys `t` has in generation `g`, in the tables' order.
    fn of(g: u8, t: &Tables) -> Self {
        Self {
            endpoints: t.endpoints.keys().map(|a| addr_key(g, *a)).collect(),
            identities: t.identities.keys().map(|a| addr_key(g, *a)).collect(),
            cidrs: t.cidrs.keys().map(|n| cidr_key(g, *n)).collect(),
            policy: t.policy.keys().map(|k| policy_key(g, k)).collect(),
            ranges: t.ranges.keys().map(|k| range_key(g, k)).collect(),
            failsafe: t
                .failsafe
                .iter()
                .map(|&(proto, port, net)| failsafe_key(g, proto, port, net))
                .collect(),
        }
    }

    /// Keeps the keys `w` says were written.
    fn truncate(&mut self, w: &Written) {
        self.endpoints.truncate(w.endpoints);
        self.identities.truncate(w.identities);
        self.cidrs.truncate(w.cidrs);
        self.policy.truncate(w.policy);
        self.ranges.truncate(w.ranges);
        self.failsafe.truncate(w.failsafe);
    }
}

/// How many entries of each map a swap wrote so far (a prefix of its keys), to take back if a
/// later write fails.
#[derive(Default)]
struct Written {
    endpoints: usize,
    identities: usize,
    cidrs: usize,
    policy: usize,
    ranges: usize,
    failsafe: usize,
}

/// Writes one map's entries of a generation in one batch call; counts in `written` how many
/// went in, also when it fails part way.
fn write_map<K: Pod, V: Pod>(
    map: &mut impl IterableMap<K, V>,
    name: &'static str,
    keys: &[K],
    values: &[V],
    written: &mut usize,
) -> Result<(), MapsError> {
    match batch::update(map, keys, values) {
        Ok(()) => {
            *written = keys.len();
            Ok(())
        }
        Err(source) => {
            *written = source.done;
            Err(if source.is_full() {
                MapsError::Full { name, source }
            } else {
                MapsError::Write { name, source }
            })
        }
    }
}

/// Deletes one map's keys of a generation in one batch call; false (and a warning) when one
/// could not be deleted.
fn remove_map<K: Pod, V>(map: &mut impl IterableMap<K, V>, name: &'static str, keys: &[K]) -> bool {
    match batch::delete(map, keys) {
        Ok(_) => true,
        Err(error) => {
            warn!(map = name, %error, "entries of an unused generation left behind; the next swap looks for them");
            false
        }
    }
}

/// A map's keys (`keys()`, one `BPF_MAP_GET_NEXT_KEY` each) by generation, 0 and 1.
fn by_generation<K>(
    keys: impl Iterator<Item = Result<K, MapError>>,
    generation: impl Fn(&K) -> u8,
) -> [Vec<K>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for k in keys.filter_map(Result::ok) {
        if let Some(v) = out.get_mut(usize::from(generation(&k))) {
            v.push(k);
        }
    }
    out
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

    pub fn datapath_config(&self) -> Result<DatapathConfig, MapsError> {
        self.config.get(&0, 0).map_err(map_err(CONFIG_MAP))
    }

    /// Makes every cached flow verdict stale: for writes outside a generation swap that can
    /// change a verdict (conntrack flushed, a binding attested).
    pub fn invalidate_verdicts(&mut self) -> Result<(), MapsError> {
        let config = self.datapath_config()?;
        self.config
            .set(0, &config.with_epoch(config.next_epoch()), 0)
            .map_err(map_err(CONFIG_MAP))
    }

    /// Installs compiled tables as a new generation and switches to it atomically.
    ///
    /// 1. Entries of the new generation are written beside the live ones, one batch call per
    ///    map. If one write fails (a map is full), those written are removed and nothing
    ///    changed: the live generation stays.
    /// 2. One update of the config entry makes the new generation live. The datapath reads the
    ///    generation once per packet, so no packet sees a mix.
    /// 3. The old generation's entries are removed, one batch call per map.
    pub fn apply(&mut self, tables: &Tables, non_ip: abi::Action) -> Result<(), MapsError> {
        let old_config = self.datapath_config()?;
        let live = old_config.generation & 1;
        let next = live ^ 1;
        self.know_live(live);

        let current = self.names()?;
        for (&slot, name) in &tables.names {
            if current.get(&slot) != Some(name) {
                // A slot changing hands starts from zero, or the new workload inherits counts.
                self.zero_counters(slot)?;
                let value = WorkloadName {
                    name: encode_name(name),
                };
                self.names
                    .set(u32::from(slot), &value, 0)
                    .map_err(map_err(NAMES_MAP))?;
            }
        }

        let mut keys = GenerationKeys::of(next, tables);
        self.set_other_empty(false);
        let mut written = Written::default();
        if let Err(e) = self.write_generation(next, tables, &keys, &mut written) {
            keys.truncate(&written);
            let clean = self.remove_keys(&keys);
            self.set_other_empty(clean);
            return Err(e);
        }
        self.config
            .set(
                0,
                &DatapathConfig::new(non_ip, next, config_flags(tables))
                    .with_epoch(old_config.next_epoch()),
                0,
            )
            .map_err(map_err(CONFIG_MAP))?;

        let old = self.installed.take().map(|i| i.keys).unwrap_or_default();
        let clean = self.remove_keys(&old);
        drop(old);
        self.installed = Some(Installed {
            generation: next,
            keys,
            other_empty: clean,
        });

        for (&slot, _) in current
            .iter()
            .filter(|(s, _)| !tables.names.contains_key(s))
        {
            let empty = WorkloadName {
                name: [0; abi::WORKLOAD_NAME_LEN],
            };
            self.names
                .set(u32::from(slot), &empty, 0)
                .map_err(map_err(NAMES_MAP))?;
        }
        Ok(())
    }

    /// Makes `self.installed` describe generation `live` with the other generation empty.
    /// Without that knowledge (a process that did not write what the maps hold, as after a
    /// restart, or a removal that failed) the maps are scanned: the other generation's entries
    /// (residue of an interrupted swap) are removed, the live one's kept for the swap's end.
    fn know_live(&mut self, live: u8) {
        if self
            .installed
            .as_ref()
            .is_some_and(|i| i.generation == live && i.other_empty)
        {
            return;
        }
        let mut scanned = self.scan_generations();
        let residue = std::mem::take(&mut scanned[usize::from(live ^ 1)]);
        let other_empty = self.remove_keys(&residue);
        let [a, b] = scanned;
        self.installed = Some(Installed {
            generation: live,
            keys: if live == 0 { a } else { b },
            other_empty,
        });
    }

    fn set_other_empty(&mut self, empty: bool) {
        if let Some(i) = &mut self.installed {
            i.other_empty = empty;
        }
    }

    /// Writes generation `g` of `t`: `keys` (its keys, from `GenerationKeys::of`) and the
    /// values beside them, then its port bitmaps. Stops at the first failure; `w` says what
    /// went in.
    fn write_generation(
        &mut self,
        g: u8,
        t: &Tables,
        keys: &GenerationKeys,
        w: &mut Written,
    ) -> Result<(), MapsError> {
        let values: Vec<Endpoint> = t.endpoints.values().copied().collect();
        write_map(
            &mut self.endpoints,
            ENDPOINTS_MAP,
            &keys.endpoints,
            &values,
            &mut w.endpoints,
        )?;
        let values: Vec<u32> = t.identities.values().copied().collect();
        write_map(
            &mut self.identities,
            IDENTITIES_MAP,
            &keys.identities,
            &values,
            &mut w.identities,
        )?;
        let values: Vec<u32> = t.cidrs.values().copied().collect();
        write_map(
            &mut self.cidrs,
            CIDRS_MAP,
            &keys.cidrs,
            &values,
            &mut w.cidrs,
        )?;
        let values: Vec<PolicyValue> = t.policy.values().copied().collect();
        write_map(
            &mut self.policy,
            POLICY_MAP,
            &keys.policy,
            &values,
            &mut w.policy,
        )?;
        let values: Vec<PolicyValue> = t.ranges.values().copied().collect();
        write_map(
            &mut self.ranges,
            RANGES_MAP,
            &keys.ranges,
            &values,
            &mut w.ranges,
        )?;
        let values = vec![1u32; keys.failsafe.len()];
        write_map(
            &mut self.failsafe,
            FAILSAFE_MAP,
            &keys.failsafe,
            &values,
            &mut w.failsafe,
        )?;
        self.write_port_bitmaps(g, t)
    }

    /// The port bitmaps of generation `g`: only that generation reads them, so a failed swap
    /// leaves nothing to take back. Words this process already wrote for that generation are
    /// skipped when unchanged.
    fn write_port_bitmaps(&mut self, g: u8, t: &Tables) -> Result<(), MapsError> {
        let bitmaps = [
            port_bitmap(t.policy.keys().map(|k| k.port)),
            port_bitmap(t.failsafe.iter().map(|f| f.1)),
        ];
        let known = self.port_words[usize::from(g)].take();
        let (mut indices, mut words) = (Vec::new(), Vec::new());
        for (kind, bits) in [abi::PORTS_POLICY, abi::PORTS_FAILSAFE]
            .into_iter()
            .zip(&bitmaps)
        {
            for (word, value) in bits.iter().enumerate() {
                if known
                    .as_ref()
                    .is_some_and(|k| k[kind as usize][word] == *value)
                {
                    continue;
                }
                #[expect(clippy::cast_possible_truncation, reason = "1024 words, 64 ports each")]
                let port = (word as u16) << 6;
                indices.push(abi::port_word_index(g, kind, port));
                words.push(*value);
            }
        }
        let mut written = 0;
        write_map(
            &mut self.ports,
            abi::PORTS_MAP,
            &indices,
            &words,
            &mut written,
        )?;
        self.port_words[usize::from(g)] = Some(bitmaps);
        Ok(())
    }

    /// Deletes `k` from the keyed maps, one batch call per map. Keys already gone count as
    /// deleted; true when every key is gone.
    fn remove_keys(&mut self, k: &GenerationKeys) -> bool {
        // `&` rather than `&&`: a failure in one map must not leave the others' keys behind.
        remove_map(&mut self.endpoints, ENDPOINTS_MAP, &k.endpoints)
            & remove_map(&mut self.identities, IDENTITIES_MAP, &k.identities)
            & remove_map(&mut self.cidrs, CIDRS_MAP, &k.cidrs)
            & remove_map(&mut self.policy, POLICY_MAP, &k.policy)
            & remove_map(&mut self.ranges, RANGES_MAP, &k.ranges)
            & remove_map(&mut self.failsafe, FAILSAFE_MAP, &k.failsafe)
    }

    /// The keys of both generations, read from the keyed maps entry by entry.
    fn scan_generations(&self) -> [GenerationKeys; 2] {
        let [e0, e1] = by_generation(self.endpoints.keys(), |k: &AddrKey| k.generation);
        let [i0, i1] = by_generation(self.identities.keys(), |k: &AddrKey| k.generation);
        let [c0, c1] = by_generation(self.cidrs.keys(), |k: &Key<_>| k.data()[0]);
        let [p0, p1] = by_generation(self.policy.keys(), |k: &PolicyKey| k.generation);
        let [r0, r1] = by_generation(self.ranges.keys(), |k: &Key<_>| k.data()[0]);
        let [f0, f1] = by_generation(self.failsafe.keys(), |k: &Key<_>| k.data()[0]);
        [
            GenerationKeys {
                endpoints: e0,
                identities: i0,
                cidrs: c0,
                policy: p0,
                ranges: r0,
                failsafe: f0,
            },
            GenerationKeys {
                endpoints: e1,
                identities: i1,
                cidrs: c1,
                policy: p1,
                ranges: r1,
                failsafe: f1,
            },
        ]
    }

    fn zero_counters(&mut self, slot: u16) -> Result<(), MapsError> {
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))?;
        for dir in 0..2u8 {
            let zero = PerCpuValues::try_from(vec![CounterRow::default(); cpus.get() as usize])
                .map_err(|e| MapsError::Cpus(e.to_string()))?;
            self.counters
                .set(abi::counter_index(slot, dir), zero, 0)
                .map_err(map_err(COUNTERS_MAP))?;
        }
        Ok(())
    }

    /// Every counter row, summed over CPUs, indexed by `counter_index(slot, direction)`: one
    /// batch read for all workloads.
    pub fn counter_rows(&self) -> Result<Vec<CounterRow>, MapsError> {
        let mut rows = vec![CounterRow::default(); self.max_workloads() as usize * 2];
        batch::read_per_cpu(&self.counters, self.max_workloads() * 2, |i, per_cpu| {
            if let Some(sum) = rows.get_mut(i as usize) {
                *sum = summed(per_cpu);
            }
        })
        .map_err(|source| MapsError::Read {
            name: COUNTERS_MAP,
            source,
        })?;
        Ok(rows)
    }

    /// Packets decided by rules `0..rules`, summed over CPUs: one batch read.
    pub fn rule_hit_totals(&self, rules: u32) -> Result<Vec<u64>, MapsError> {
        let mut hits = vec![0; rules as usize];
        batch::read_per_cpu(&self.rule_hits, rules, |i, per_cpu| {
            if let Some(h) = hits.get_mut(i as usize) {
                *h = per_cpu.iter().sum();
            }
        })
        .map_err(|source| MapsError::Read {
            name: RULE_HITS_MAP,
            source,
        })?;
        Ok(hits)
    }

    /// The counter row of (slot, direction), summed over CPUs.
    pub fn counter_row(&self, slot: u16, direction: u8) -> Result<CounterRow, MapsError> {
        let per_cpu = self
            .counters
            .get(&abi::counter_index(slot, direction), 0)
            .map_err(map_err(COUNTERS_MAP))?;
        Ok(summed(&per_cpu))
    }

    /// Packets decided by `rule`, summed over CPUs.
    pub fn rule_hits(&self, rule: u32) -> Result<u64, MapsError> {
        let per_cpu = self
            .rule_hits
            .get(&rule, 0)
            .map_err(map_err(RULE_HITS_MAP))?;
        Ok(per_cpu.iter().sum())
    }

    /// Drop events (sent, lost to sampling or a full ring), summed over CPUs.
    pub fn event_totals(&self) -> Result<(u64, u64), MapsError> {
        let per_cpu = self
            .event_budget
            .get(&0, 0)
            .map_err(map_err(EVENT_BUDGET_MAP))?;
        Ok(per_cpu
            .iter()
            .fold((0, 0), |(s, l), b| (s + b.sent, l + b.lost)))
    }

    /// Number of workload slots the maps were sized for.
    pub fn max_workloads(&self) -> u32 {
        self.names.len()
    }

    fn generation(&self) -> u8 {
        self.datapath_config().map_or(0, |c| c.generation)
    }
}

/// The live maps answer the same questions as compiled tables (`trace` on a running host).
/// LPM lookups through the syscall are longest-prefix matches, as in the datapath.
impl Lookup for Maps {
    fn endpoint(&self, addr: IpAddr) -> Option<Endpoint> {
        self.endpoints
            .get(&addr_key(self.generation(), addr), 0)
            .ok()
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.identities
            .get(&addr_key(self.generation(), addr), 0)
            .ok()
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        let (family, a) = family_addr(addr);
        let key = Key::new(
            CIDR_KEY_FIXED_BITS + addr_bits(addr),
            cidr_key_data(self.generation(), family, a),
        );
        self.cidrs.get(&key, 0).ok()
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.policy.get(&policy_key(self.generation(), key), 0).ok()
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        self.ranges.get(&range_key(self.generation(), key), 0).ok()
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        let (family, a) = family_addr(peer);
        let key = Key::new(
            FAILSAFE_KEY_FIXED_BITS + addr_bits(peer),
            failsafe_key_data(self.generation(), family, proto, port, a),
        );
        self.failsafe.get(&key, 0).is_ok()
    }
}
