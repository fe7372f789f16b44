//! The generation swap: a compiled policy written beside the live one, switched on with one
//! config write, the old one deleted.

use std::collections::BTreeMap;

use aya::{
    Pod,
    maps::{IterableMap, MapError, PerCpuValues, lpm_trie::Key},
};
use boundary_common::maps::{
    self as abi, AddrKey, CIDR_KEY_LEN, CIDRS_MAP, COUNTERS_MAP, CounterRow, ENDPOINTS_MAP,
    Endpoint, EndpointKey, FAILSAFE_KEY_LEN, FAILSAFE_MAP, IDENTITIES_MAP, NAMES_MAP, POLICY_MAP,
    PolicyKey, PolicyValue, RANGE_KEY_LEN, RANGES_MAP, WorkloadName,
};
use boundary_common::name::encode_name;
use tracing::warn;

use crate::datapath::{batch, grace::Grace};
use crate::policy::{
    BucketTable, RuleTable, Tables,
    compile::{
        folds::{Folds, written},
        prefixes::PrefixLayout,
    },
};

use super::{
    Installed, Maps, MapsError,
    keys::{
        addr_key, cidr_key, endpoint_keys, failsafe_key, policy_key, port_bitmap, prefix_key,
        range_key,
    },
    map_err,
};

/// The `CFG_*` bits of a generation: which maps the datapath may skip.
fn config_flags(t: &Tables) -> u8 {
    let mut f = 0;
    if !t.identities.is_empty() || t.attestable {
        f |= abi::CFG_HAS_BINDINGS;
    }
    // Earned bindings are in the identity map alone: the datapath looks there past the
    // table only under this flag (see `boundary_common::maps::table`). Compiled earned
    // bindings come with it (`Earned::enabled`).
    if t.attestable {
        f |= abi::CFG_EARNED;
    }
    if !t.cidrs.is_empty() {
        f |= abi::CFG_HAS_CIDRS;
    }
    if !t.failsafe.is_empty() {
        f |= abi::CFG_HAS_FAILSAFE;
    }
    if !t.interface_endpoints.is_empty() {
        f |= abi::CFG_HAS_IFACE_ENDPOINTS;
    }
    f
}

/// One generation's keys in the keyed maps, serialized as the kernel holds them: contiguous
/// arrays of the ABI types, which is what a batch call takes. A few bytes per entry, where the
/// compiled tables they come from take several times that.
#[derive(Default)]
pub(super) struct GenerationKeys {
    endpoints: Vec<EndpointKey>,
    identities: Vec<AddrKey>,
    cidrs: Vec<Key<[u8; CIDR_KEY_LEN]>>,
    prefixes: Vec<abi::PrefixKey>,
    policy: Vec<PolicyKey>,
    ranges: Vec<Key<[u8; RANGE_KEY_LEN]>>,
    failsafe: Vec<Key<[u8; FAILSAFE_KEY_LEN]>>,
}

impl GenerationKeys {
    /// The keys `t` has in generation `g`, in the tables' order (the CIDR identities' in
    /// `prefixes`' order).
    fn of(g: u8, t: &Tables, prefixes: &PrefixLayout) -> Self {
        Self {
            endpoints: endpoint_keys(g, t),
            identities: t.identities.keys().map(|a| addr_key(g, *a)).collect(),
            cidrs: prefixes.trie.iter().map(|(n, _)| cidr_key(g, *n)).collect(),
            prefixes: prefixes
                .regions
                .iter()
                .map(|(n, _)| prefix_key(g, *n))
                .collect(),
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
        self.prefixes.truncate(w.prefixes);
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
    prefixes: usize,
    policy: usize,
    ranges: usize,
    failsafe: usize,
}

/// Writes one map's entries of a generation in one batch call; counts in `written` how many
/// went in, also when it fails part way.
pub(super) fn write_map<K: Pod, V: Pod>(
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
    /// Makes every cached flow verdict stale: for writes outside a generation swap that can
    /// change a verdict (conntrack flushed, a binding attested).
    pub(in crate::datapath) fn invalidate_verdicts(&mut self) -> Result<(), MapsError> {
        self.config.bump_epoch()
    }

    /// Installs compiled tables as a new generation and switches to it atomically.
    ///
    /// 1. Entries of the new generation are written beside the live ones, one batch call per
    ///    map. If one write fails (a map is full), those written are removed and nothing
    ///    changed: the live generation stays.
    /// 2. One update of the config entry makes the new generation live. The datapath reads the
    ///    generation once per packet, so no packet sees a mix.
    /// 3. The old generation's entries are removed, one batch call per map.
    pub(in crate::datapath) fn apply(
        &mut self,
        tables: &Tables,
        non_ip: abi::Action,
    ) -> Result<(), MapsError> {
        if self.grace.is_none() && !self.skip_grace {
            self.grace = Some(Grace::new().map_err(MapsError::Grace)?);
        }
        let live = self.datapath_config()?.generation & 1;
        let next = live ^ 1;
        self.know_live(live)?;

        let current = self.names()?;
        let renamed = match self.name_slots(&current, tables) {
            Ok(renamed) => renamed,
            Err((renamed, e)) => {
                self.restore_names(&renamed);
                return Err(e);
            }
        };
        let (live_rules, live_buckets, keys) = match self.install_generation(next, tables, non_ip) {
            Ok(installed) => installed,
            Err(e) => {
                // Nothing changed: the live policy keeps its slots' names.
                self.restore_names(&renamed);
                return Err(e);
            }
        };

        let old = self.installed.take().map(|i| i.keys).unwrap_or_default();
        // A packet that read the config before the switch may still be looking the old
        // generation up: its entries go only once no such packet can be in flight.
        let clean = match self.wait_for_readers() {
            Ok(()) => {
                self.retire_rule_ids(&live_rules, tables);
                self.retire_buckets(&live_buckets, tables);
                self.remove_keys(&old)
            }
            Err(error) => {
                warn!(%error, "cannot wait out the packets in flight; the old generation's entries stay until the next swap");
                false
            }
        };
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
            self.set_name(slot, None)?;
        }
        Ok(())
    }

    /// Names the slots `tables` gives a workload they did not name yet, zeroing their counters
    /// first (a slot changing hands starts from zero). Returns each renamed slot's previous
    /// name, to put back if the swap fails; on an error, those renamed so far.
    #[expect(
        clippy::type_complexity,
        reason = "the renamed slots, with or without an error"
    )]
    fn name_slots(
        &mut self,
        current: &BTreeMap<u16, String>,
        tables: &Tables,
    ) -> Result<Vec<(u16, Option<String>)>, (Vec<(u16, Option<String>)>, MapsError)> {
        let mut renamed = Vec::new();
        for (&slot, name) in &tables.names {
            if current.get(&slot) == Some(name) {
                continue;
            }
            if let Err(e) = self.zero_counters(slot) {
                return Err((renamed, e));
            }
            renamed.push((slot, current.get(&slot).cloned()));
            if let Err(e) = self.set_name(slot, Some(name)) {
                return Err((renamed, e));
            }
        }
        Ok(renamed)
    }

    /// Puts back the names [`Maps::name_slots`] replaced (best effort: the swap is failing).
    fn restore_names(&mut self, renamed: &[(u16, Option<String>)]) {
        for (slot, old) in renamed {
            if let Err(error) = self.set_name(*slot, old.as_deref()) {
                warn!(slot, %error, "could not put a workload name back after a failed swap");
            }
        }
    }

    fn set_name(&mut self, slot: u16, name: Option<&str>) -> Result<(), MapsError> {
        let value = WorkloadName {
            name: name.map_or([0; abi::WORKLOAD_NAME_LEN], encode_name),
        };
        self.names
            .set(u32::from(slot), &value, 0)
            .map_err(map_err(NAMES_MAP))
    }

    /// Records the rule ids, writes generation `next` beside the live one and switches to it.
    /// On an error nothing is live that was not before (a failed write takes its entries back).
    fn install_generation(
        &mut self,
        next: u8,
        tables: &Tables,
        non_ip: abi::Action,
    ) -> Result<(RuleTable, BucketTable, GenerationKeys), MapsError> {
        let live_rules = self.record_rule_ids(tables)?;
        let live_buckets = self.install_buckets(next, tables)?;
        let prefixes =
            PrefixLayout::of_with(&tables.cidrs, self.prefix_room, self.prefix_levels_from);
        let mut keys = GenerationKeys::of(next, tables, &prefixes);
        self.set_other_empty(false);
        let mut written = Written::default();
        if let Err(e) = self.write_generation(next, tables, (&keys, &prefixes), &mut written) {
            keys.truncate(&written);
            let clean = self.remove_keys(&keys);
            self.set_other_empty(clean);
            return Err(e);
        }
        if let Err(e) = self.config.switch(next, non_ip, config_flags(tables)) {
            let clean = self.remove_keys(&keys);
            self.set_other_empty(clean);
            return Err(e);
        }
        Ok((live_rules, live_buckets, keys))
    }

    /// Returns once no packet can still be reading a generation that was live before the
    /// last switch (see `datapath/grace.rs`). Skipped only when a test asked for it.
    fn wait_for_readers(&mut self) -> Result<(), std::io::Error> {
        match &self.grace {
            Some(grace) => grace.wait(),
            None => Ok(()),
        }
    }

    /// Makes `self.installed` describe generation `live` with the other generation empty.
    /// Without that knowledge (a process that did not write what the maps hold, as after a
    /// restart, or a removal that failed) the maps are scanned: the other generation's entries
    /// (residue of an interrupted swap) are removed, the live one's kept for the swap's end.
    fn know_live(&mut self, live: u8) -> Result<(), MapsError> {
        if self
            .installed
            .as_ref()
            .is_some_and(|i| i.generation == live && i.other_empty)
        {
            return Ok(());
        }
        // The residue may be a generation that was live a moment ago (a swap whose wait
        // failed): it goes only once no packet can still be reading it.
        self.wait_for_readers().map_err(MapsError::Grace)?;
        let mut scanned = self.scan_generations();
        let residue = std::mem::take(&mut scanned[usize::from(live ^ 1)]);
        let other_empty = self.remove_keys(&residue);
        let [a, b] = scanned;
        self.installed = Some(Installed {
            generation: live,
            keys: if live == 0 { a } else { b },
            other_empty,
        });
        Ok(())
    }

    /// Entries the live generation holds in the trie and in the prefix levels, as this process
    /// wrote them (`None` before it wrote one).
    pub fn prefix_entries(&self) -> Option<(u64, u64)> {
        self.installed
            .as_ref()
            .map(|i| (i.keys.cidrs.len() as u64, i.keys.prefixes.len() as u64))
    }

    fn set_other_empty(&mut self, empty: bool) {
        if let Some(i) = &mut self.installed {
            i.other_empty = empty;
        }
    }

    /// Writes generation `g` of `t`: `keys` (its keys, from `GenerationKeys::of`) and the
    /// values beside them (the CIDR identities' from `prefixes`), then its port bitmaps, its
    /// bound-address bitmap and its prefix levels. Stops at the first failure; `w` says what
    /// went in.
    fn write_generation(
        &mut self,
        g: u8,
        t: &Tables,
        (keys, prefixes): (&GenerationKeys, &PrefixLayout),
        w: &mut Written,
    ) -> Result<(), MapsError> {
        let values: Vec<Endpoint> = t
            .endpoints
            .values()
            .chain(t.interface_endpoints.values())
            .copied()
            .collect();
        write_map(
            &mut self.endpoints,
            ENDPOINTS_MAP,
            &keys.endpoints,
            &values,
            &mut w.endpoints,
        )?;
        let folds = Folds::of(t);
        let values: Vec<abi::IdentityValue> = t
            .identities
            .iter()
            .map(|(a, id)| {
                match t.earned.get(a) {
                    Some(&expires) => abi::IdentityValue::new(*id, abi::BINDING_MTLS, expires),
                    None => abi::IdentityValue::new(*id, abi::BINDING_STATIC, abi::NEVER),
                }
                .with_fold(folds.get(*id))
            })
            .collect();
        write_map(
            &mut self.identities,
            IDENTITIES_MAP,
            &keys.identities,
            &values,
            &mut w.identities,
        )?;
        let folded = |v: abi::PrefixValue| v.with_fold(folds.get(v.id));
        let values: Vec<abi::PrefixValue> = prefixes
            .trie
            .iter()
            .map(|(_, id)| folded(abi::PrefixValue::new(*id, false)))
            .collect();
        write_map(
            &mut self.cidrs,
            CIDRS_MAP,
            &keys.cidrs,
            &values,
            &mut w.cidrs,
        )?;
        let values: Vec<abi::PrefixValue> =
            prefixes.regions.iter().map(|(_, v)| folded(*v)).collect();
        write_map(
            &mut self.prefixes,
            abi::PREFIXES_MAP,
            &keys.prefixes,
            &values,
            &mut w.prefixes,
        )?;
        let limited = |v: &PolicyValue| written(*v, t.buckets.contains_key(&v.rule));
        let values: Vec<PolicyValue> = t.policy.values().map(limited).collect();
        write_map(
            &mut self.policy,
            POLICY_MAP,
            &keys.policy,
            &values,
            &mut w.policy,
        )?;
        let values: Vec<PolicyValue> = t.ranges.values().map(limited).collect();
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
        self.write_port_bitmaps(g, t)?;
        self.write_bound_bits(g, t)?;
        self.write_table(g, super::table::slots_of(t, prefixes, &folds))?;
        // Only generation `g` reads its levels, as its port bitmaps: nothing to take back.
        let levels = abi::PrefixLevels {
            world_fold: folds.get(abi::IDENTITY_WORLD).pack(),
            ..prefixes.levels
        };
        self.prefix_levels
            .set(u32::from(g & 1), &levels, 0)
            .map_err(map_err(abi::PREFIX_LEVELS_MAP))
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

    /// Counts keys an earned binding wrote into live generation `g` among its keys, so the
    /// swap that replaces it deletes them too.
    pub(super) fn record_live_keys(
        &mut self,
        g: u8,
        policy: Vec<PolicyKey>,
        ranges: Vec<Key<[u8; RANGE_KEY_LEN]>>,
        identity: AddrKey,
    ) {
        if let Some(i) = self.installed.as_mut().filter(|i| i.generation == g) {
            i.keys.policy.extend(policy);
            i.keys.ranges.extend(ranges);
            if !i.keys.identities.contains(&identity) {
                i.keys.identities.push(identity);
            }
        }
        // Without `installed` the next swap scans the maps, which finds them.
    }

    /// Sets the bits of `ports` in generation `g`'s policy port bitmap: an earned binding's
    /// new identity may have exact-port entries on ports no other entry has. Bits are only
    /// ever added to a live bitmap (a set bit with no entry costs a lookup, nothing more).
    pub(super) fn add_port_bits(
        &mut self,
        g: u8,
        ports: impl Iterator<Item = u16>,
    ) -> Result<(), MapsError> {
        for port in ports.filter(|p| *p != abi::PORT_ANY) {
            let index = abi::port_word_index(g, abi::PORTS_POLICY, port);
            let word = self.ports.get(&index, 0).map_err(map_err(abi::PORTS_MAP))?;
            let bit = 1u64 << (port & 63);
            if word & bit != 0 {
                continue;
            }
            self.ports
                .set(index, &(word | bit), 0)
                .map_err(map_err(abi::PORTS_MAP))?;
            if let Some(known) = &mut self.port_words[usize::from(g)] {
                known[abi::PORTS_POLICY as usize][usize::from(port >> 6)] |= bit;
            }
        }
        Ok(())
    }

    /// Deletes `k` from the keyed maps, one batch call per map. Keys already gone count as
    /// deleted; true when every key is gone.
    fn remove_keys(&mut self, k: &GenerationKeys) -> bool {
        // `&` rather than `&&`: a failure in one map must not leave the others' keys behind.
        remove_map(&mut self.endpoints, ENDPOINTS_MAP, &k.endpoints)
            & remove_map(&mut self.identities, IDENTITIES_MAP, &k.identities)
            & remove_map(&mut self.cidrs, CIDRS_MAP, &k.cidrs)
            & remove_map(&mut self.prefixes, abi::PREFIXES_MAP, &k.prefixes)
            & remove_map(&mut self.policy, POLICY_MAP, &k.policy)
            & remove_map(&mut self.ranges, RANGES_MAP, &k.ranges)
            & remove_map(&mut self.failsafe, FAILSAFE_MAP, &k.failsafe)
    }

    /// The keys of both generations, read from the keyed maps entry by entry.
    fn scan_generations(&self) -> [GenerationKeys; 2] {
        let [e0, e1] = by_generation(self.endpoints.keys(), |k: &EndpointKey| k.generation);
        let [i0, i1] = by_generation(self.identities.keys(), |k: &AddrKey| k.generation);
        let [c0, c1] = by_generation(self.cidrs.keys(), |k: &Key<_>| k.data()[0]);
        let [x0, x1] = by_generation(self.prefixes.keys(), |k: &abi::PrefixKey| k.generation);
        let [p0, p1] = by_generation(self.policy.keys(), |k: &PolicyKey| k.generation);
        let [r0, r1] = by_generation(self.ranges.keys(), |k: &Key<_>| k.data()[0]);
        let [f0, f1] = by_generation(self.failsafe.keys(), |k: &Key<_>| k.data()[0]);
        [
            GenerationKeys {
                endpoints: e0,
                identities: i0,
                cidrs: c0,
                prefixes: x0,
                policy: p0,
                ranges: r0,
                failsafe: f0,
            },
            GenerationKeys {
                endpoints: e1,
                identities: i1,
                cidrs: c1,
                prefixes: x1,
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
}
