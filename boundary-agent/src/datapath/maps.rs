//! Typed handles on the datapath's maps, from a freshly loaded object or from the pins, and the
//! generation swap that installs a compiled policy.

use std::{collections::BTreeMap, mem::size_of, net::IpAddr, path::Path};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
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

use super::pins::PinLayout;
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
        source: MapError,
    },
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
pub fn expected_shapes(max_workloads: u32) -> [(&'static str, u32, u32, u32); 15] {
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
    /// The generation and tables this process installed last: the next swap deletes them by
    /// key instead of scanning the maps.
    installed: Option<(u8, Tables)>,
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

/// Keys written so far in a swap, to take back if a later write fails.
#[derive(Default)]
struct Written {
    endpoints: Vec<AddrKey>,
    identities: Vec<AddrKey>,
    cidrs: Vec<Key<[u8; CIDR_KEY_LEN]>>,
    policy: Vec<PolicyKey>,
    ranges: Vec<Key<[u8; RANGE_KEY_LEN]>>,
    failsafe: Vec<Key<[u8; FAILSAFE_KEY_LEN]>>,
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

    /// Installs compiled tables as a new generation and switches to it atomically.
    ///
    /// 1. Entries of the new generation are written beside the live ones. If one write fails
    ///    (a map is full), those written are removed and nothing changed.
    /// 2. One update of the config entry makes the new generation live. The datapath reads the
    ///    generation once per packet, so no packet sees a mix.
    /// 3. The old generation's entries are removed.
    pub fn apply(&mut self, tables: Tables, non_ip: abi::Action) -> Result<(), MapsError> {
        let old_config = self.datapath_config()?;
        let live = old_config.generation & 1;
        let next = live ^ 1;
        // Residue of an interrupted swap, or of an agent that never told us what it wrote.
        self.remove_generation_by_scan(next);

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

        let mut written = Written::default();
        if let Err(e) = self.write_generation(next, &tables, &mut written) {
            self.take_back(&written);
            return Err(e);
        }
        // The new generation's port bitmaps: only it reads them, so they need no rollback.
        // Words this process already wrote for that generation are skipped when unchanged.
        let bitmaps = [
            port_bitmap(tables.policy.keys().map(|k| k.port)),
            port_bitmap(tables.failsafe.iter().map(|f| f.1)),
        ];
        let known = self.port_words[usize::from(next)].take();
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
                self.ports
                    .set(abi::port_word_index(next, kind, port), value, 0)
                    .map_err(map_err(abi::PORTS_MAP))?;
            }
        }
        self.port_words[usize::from(next)] = Some(bitmaps);
        self.config
            .set(
                0,
                &DatapathConfig::new(non_ip, next, config_flags(&tables))
                    .with_epoch(old_config.next_epoch()),
                0,
            )
            .map_err(map_err(CONFIG_MAP))?;

        match self.installed.take() {
            Some((generation, old)) if generation == live => self.remove_tables(live, &old),
            _ => self.remove_generation_by_scan(live),
        }
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
        self.installed = Some((next, tables));
        Ok(())
    }

    /// Makes every cached flow verdict stale: for writes outside a generation swap that can
    /// change a verdict (conntrack flushed, a binding attested).
    pub fn invalidate_verdicts(&mut self) -> Result<(), MapsError> {
        let config = self.datapath_config()?;
        self.config
            .set(0, &config.with_epoch(config.next_epoch()), 0)
            .map_err(map_err(CONFIG_MAP))
    }

    /// The tables this process installed last.
    pub fn installed(&self) -> Option<&Tables> {
        self.installed.as_ref().map(|(_, t)| t)
    }

    fn write_generation(&mut self, g: u8, t: &Tables, w: &mut Written) -> Result<(), MapsError> {
        let full = |name| move |source| MapsError::Full { name, source };
        for (addr, ep) in &t.endpoints {
            let k = addr_key(g, *addr);
            self.endpoints
                .insert(&k, ep, 0)
                .map_err(full(ENDPOINTS_MAP))?;
            w.endpoints.push(k);
        }
        for (addr, id) in &t.identities {
            let k = addr_key(g, *addr);
            self.identities
                .insert(&k, id, 0)
                .map_err(full(IDENTITIES_MAP))?;
            w.identities.push(k);
        }
        for (net, id) in &t.cidrs {
            let k = cidr_key(g, *net);
            self.cidrs.insert(&k, id, 0).map_err(full(CIDRS_MAP))?;
            w.cidrs.push(k);
        }
        for (rk, v) in &t.policy {
            let k = policy_key(g, rk);
            self.policy.insert(&k, v, 0).map_err(full(POLICY_MAP))?;
            w.policy.push(k);
        }
        for (rk, v) in &t.ranges {
            let k = range_key(g, rk);
            self.ranges.insert(&k, v, 0).map_err(full(RANGES_MAP))?;
            w.ranges.push(k);
        }
        for &(proto, port, net) in &t.failsafe {
            let k = failsafe_key(g, proto, port, net);
            self.failsafe
                .insert(&k, &1, 0)
                .map_err(full(FAILSAFE_MAP))?;
            w.failsafe.push(k);
        }
        Ok(())
    }

    // Removals below ignore errors: an entry already gone is the goal, and a removal that
    // fails leaves an entry of a dead generation, which no packet reads.
    fn take_back(&mut self, w: &Written) {
        for k in &w.endpoints {
            let _ = self.endpoints.remove(k);
        }
        for k in &w.identities {
            let _ = self.identities.remove(k);
        }
        for k in &w.cidrs {
            let _ = self.cidrs.remove(k);
        }
        for k in &w.policy {
            let _ = self.policy.remove(k);
        }
        for k in &w.ranges {
            let _ = self.ranges.remove(k);
        }
        for k in &w.failsafe {
            let _ = self.failsafe.remove(k);
        }
    }

    fn remove_tables(&mut self, g: u8, t: &Tables) {
        for addr in t.endpoints.keys() {
            let _ = self.endpoints.remove(&addr_key(g, *addr));
        }
        for addr in t.identities.keys() {
            let _ = self.identities.remove(&addr_key(g, *addr));
        }
        for net in t.cidrs.keys() {
            let _ = self.cidrs.remove(&cidr_key(g, *net));
        }
        for rk in t.policy.keys() {
            let _ = self.policy.remove(&policy_key(g, rk));
        }
        for rk in t.ranges.keys() {
            let _ = self.ranges.remove(&range_key(g, rk));
        }
        for &(proto, port, net) in &t.failsafe {
            let _ = self.failsafe.remove(&failsafe_key(g, proto, port, net));
        }
    }

    fn remove_generation_by_scan(&mut self, g: u8) {
        let addr_keys = |m: &HashMap<MapData, AddrKey, _>| -> Vec<AddrKey> {
            m.keys()
                .filter_map(Result::ok)
                .filter(|k| k.generation == g)
                .collect()
        };
        for k in addr_keys(&self.endpoints) {
            let _ = self.endpoints.remove(&k);
        }
        let keys: Vec<AddrKey> = self
            .identities
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == g)
            .collect();
        for k in keys {
            let _ = self.identities.remove(&k);
        }
        let keys: Vec<_> = self
            .cidrs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data()[0] == g)
            .collect();
        for k in keys {
            let _ = self.cidrs.remove(&k);
        }
        let keys: Vec<PolicyKey> = self
            .policy
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.generation == g)
            .collect();
        for k in keys {
            let _ = self.policy.remove(&k);
        }
        let keys: Vec<_> = self
            .ranges
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data()[0] == g)
            .collect();
        for k in keys {
            let _ = self.ranges.remove(&k);
        }
        let keys: Vec<_> = self
            .failsafe
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.data()[0] == g)
            .collect();
        for k in keys {
            let _ = self.failsafe.remove(&k);
        }
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

    /// The counter row of (slot, direction), summed over CPUs.
    pub fn counter_row(&self, slot: u16, direction: u8) -> Result<CounterRow, MapsError> {
        let per_cpu = self
            .counters
            .get(&abi::counter_index(slot, direction), 0)
            .map_err(map_err(COUNTERS_MAP))?;
        let mut sum = CounterRow::default();
        for row in per_cpu.iter() {
            for (acc, c) in sum.counters.iter_mut().zip(row.counters.iter()) {
                acc.packets += c.packets;
                acc.bytes += c.bytes;
            }
        }
        Ok(sum)
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
