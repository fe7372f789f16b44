//! Typed handles on the datapath's maps, from a freshly loaded object or from the pins.

use std::{collections::BTreeMap, mem::size_of, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues};
use boundary_common::maps::{
    self as abi, CONFIG_MAP, COUNTERS_MAP, CounterRow, DatapathConfig, ENDPOINTS_MAP, Endpoint,
    EndpointKey, NAMES_MAP, WorkloadName,
};

use super::pins::PinLayout;
use crate::policy::{
    Compiled, SlotTable,
    compile::{decode_name, encode_name},
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
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// What a map must look like: (name, key size, value size, max entries).
pub fn expected_shapes(max_workloads: u32) -> [(&'static str, u32, u32, u32); 4] {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ABI sizes are small and asserted in boundary-common"
    )]
    let size = |n: usize| n as u32;
    [
        (CONFIG_MAP, 4, size(size_of::<DatapathConfig>()), 1),
        (
            ENDPOINTS_MAP,
            size(size_of::<EndpointKey>()),
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

/// The datapath's maps.
pub struct Maps {
    pub config: Array<MapData, DatapathConfig>,
    pub endpoints: HashMap<MapData, EndpointKey, Endpoint>,
    pub names: Array<MapData, WorkloadName>,
    pub counters: PerCpuArray<MapData, CounterRow>,
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing { name });
        Ok(Self {
            config: take(CONFIG_MAP)?.try_into().map_err(map_err(CONFIG_MAP))?,
            endpoints: take(ENDPOINTS_MAP)?
                .try_into()
                .map_err(map_err(ENDPOINTS_MAP))?,
            names: take(NAMES_MAP)?.try_into().map_err(map_err(NAMES_MAP))?,
            counters: take(COUNTERS_MAP)?
                .try_into()
                .map_err(map_err(COUNTERS_MAP))?,
        })
    }

    /// Opens the pinned maps (the agent need not be running).
    pub fn from_pins(layout: &PinLayout) -> Result<Self, MapsError> {
        let open = |name: &'static str| -> Result<Map, MapsError> {
            let path = layout.map(name);
            if !Path::new(&path).exists() {
                return Err(MapsError::Missing { name });
            }
            let data = MapData::from_pin(&path).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Ok(Self {
            config: open(CONFIG_MAP)?.try_into().map_err(map_err(CONFIG_MAP))?,
            endpoints: open(ENDPOINTS_MAP)?
                .try_into()
                .map_err(map_err(ENDPOINTS_MAP))?,
            names: open(NAMES_MAP)?.try_into().map_err(map_err(NAMES_MAP))?,
            counters: open(COUNTERS_MAP)?
                .try_into()
                .map_err(map_err(COUNTERS_MAP))?,
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

    /// Installs a compiled policy.
    ///
    /// Order matters to a packet in flight: names and counters of new slots first, then the
    /// endpoints that point at them, then stale endpoints removed, then freed names cleared.
    /// Every endpoint value is written whole by one map update, so no packet sees half an entry.
    /// (Generation-switched atomic swaps of whole rule sets come with the policy engine.)
    pub fn apply(&mut self, compiled: &Compiled, config: DatapathConfig) -> Result<(), MapsError> {
        self.config
            .set(0, &config, 0)
            .map_err(map_err(CONFIG_MAP))?;

        let current = self.names()?;
        for (&slot, name) in &compiled.names {
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

        let wanted: std::collections::HashSet<([u8; 16], u8)> = compiled
            .endpoints
            .iter()
            .map(|(k, _)| (k.addr, k.family))
            .collect();
        for (key, value) in &compiled.endpoints {
            self.endpoints
                .insert(key, value, 0)
                .map_err(map_err(ENDPOINTS_MAP))?;
        }
        let stale: Vec<EndpointKey> = self
            .endpoints
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(&(k.addr, k.family)))
            .collect();
        for key in stale {
            // Already gone is fine: the goal is its absence.
            match self.endpoints.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(ENDPOINTS_MAP)(e)),
            }
        }

        for (&slot, _) in current
            .iter()
            .filter(|(s, _)| !compiled.names.contains_key(s))
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

    /// Number of workload slots the maps were sized for.
    pub fn max_workloads(&self) -> u32 {
        self.names.len()
    }

    /// Resets the non-IP default and everything else in the config entry.
    pub fn datapath_config(&self) -> Result<DatapathConfig, MapsError> {
        self.config.get(&0, 0).map_err(map_err(CONFIG_MAP))
    }
}
