//! What every pinned map must be, checked before aya reuses a pin blindly (it compares
//! nothing, and a map of another layout would be corrupted), and what an upgrade does with
//! pins of another agent.
//!
//! The shapes are the object's own map definitions (parsed with aya-obj, as aya loads them):
//! type, key and value sizes, entries and flags, with the names and counters maps sized for
//! the configured workloads. They cannot drift from what a load creates.
//!
//! An upgrade keeps every map whose shape and meaning ([`ABI_VERSION`], or a version from
//! [`ABI_ADOPTS_FROM`] on) are unchanged, with its state (counters, flows, rule ids). A map that differs is *replaced*: its pin is
//! removed and the load creates a new one. The programs attached keep using the old map until
//! the agent updates their links to the new programs, so enforcement has no gap; the
//! replaced map's state starts afresh, and the log says which. Pins of a newer ABI are
//! refused: an older agent cannot know what they mean.

use aya::maps::MapInfo;
use boundary_common::maps::{
    ABI_ADOPTS_FROM, ABI_MAP, ABI_VERSION, ALL_MAPS, COUNTERS_MAP, NAMES_MAP, RULE_HITS_MAP,
    rule_hits_entries,
};
use tracing::warn;

use crate::datapath::{object::OBJECT, pins::PinLayout};

use super::{MapsError, map_err};

/// A map's shape, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub map_type: u32,
    pub key: u32,
    pub value: u32,
    pub entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, key {}B, value {}B, {} entries, flags {:#x}",
            self.map_type, self.key, self.value, self.entries, self.flags
        )
    }
}

impl Shape {
    fn of(info: &MapInfo) -> Result<Self, aya::maps::MapError> {
        Ok(Self {
            map_type: info.map_type()? as u32,
            key: info.key_size(),
            value: info.value_size(),
            entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }
}

/// Every map of the object, with the shape a load with `max_workloads` slots and the maps
/// of `capacities` given those entries (`LoadOptions::capacities`) creates.
pub fn expected_shapes(
    max_workloads: u32,
    capacities: &[(&'static str, u32)],
) -> Result<Vec<(&'static str, Shape)>, MapsError> {
    let object = aya_obj::Object::parse(OBJECT).map_err(|e| MapsError::Object(e.to_string()))?;
    ALL_MAPS
        .iter()
        .map(|&name| {
            let m = object.maps.get(name).ok_or(MapsError::Missing { name })?;
            let raised = capacities.iter().find(|(n, _)| *n == name);
            let entries = match (name, raised) {
                (_, Some(&(_, entries))) => entries,
                (NAMES_MAP, None) => max_workloads,
                (COUNTERS_MAP, None) => max_workloads * 2,
                (RULE_HITS_MAP, None) => rule_hits_entries(super::possible_cpus()?),
                _ => m.max_entries(),
            };
            Ok((
                name,
                Shape {
                    map_type: m.map_type(),
                    key: m.key_size(),
                    value: m.value_size(),
                    entries,
                    flags: m.map_flags(),
                },
            ))
        })
        .collect()
}

/// The ABI version of the pins under `layout`: `None` when nothing is pinned, 1 for pins
/// made before the version was kept.
fn pinned_abi(layout: &PinLayout) -> Result<Option<u32>, MapsError> {
    let path = layout.map(ABI_MAP);
    if !path.exists() {
        let any = ALL_MAPS.iter().any(|name| layout.map(name).exists());
        return Ok(any.then_some(1));
    }
    let data = aya::maps::MapData::from_pin(&path).map_err(map_err(ABI_MAP))?;
    let array: aya::maps::Array<_, u32> = aya::maps::Map::from_map_data(data)
        .and_then(TryInto::try_into)
        .map_err(map_err(ABI_MAP))?;
    // A map made but never written (an agent that died before it could) reads 0: older.
    Ok(Some(array.get(&0, 0).map_err(map_err(ABI_MAP))?))
}

/// Makes the pins under `layout` fit this agent: keeps the maps it can adopt as they are,
/// removes the pins of those it must replace (see the module doc), refuses pins of a newer
/// agent. Returns the names of the replaced maps.
pub fn prepare_pinned(
    layout: &PinLayout,
    max_workloads: u32,
    capacities: &[(&'static str, u32)],
) -> Result<Vec<&'static str>, MapsError> {
    let abi = pinned_abi(layout)?;
    if let Some(found) = abi
        && found > ABI_VERSION
    {
        return Err(MapsError::NewerAbi {
            path: layout.root().display().to_string(),
            found,
            ours: ABI_VERSION,
        });
    }
    // Pins this agent can read as they are, map by map (see `ABI_ADOPTS_FROM`).
    let same_abi = abi.is_some_and(|v| (ABI_ADOPTS_FROM..=ABI_VERSION).contains(&v));
    let mut replaced = Vec::new();
    for (name, wanted) in expected_shapes(max_workloads, capacities)? {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let found = Shape::of(&info).map_err(map_err(name))?;
        if same_abi && found == wanted {
            continue;
        }
        if same_abi {
            warn!(map = name, %found, %wanted, "a pinned map has another shape: replacing it; its state starts afresh");
        }
        std::fs::remove_file(&path).map_err(|source| MapsError::Replace {
            path: path.display().to_string(),
            source,
        })?;
        replaced.push(name);
    }
    if !same_abi && !replaced.is_empty() {
        warn!(
            found = abi.unwrap_or(0),
            ours = ABI_VERSION,
            maps = replaced.len(),
            "pins of another agent version: every map replaced; counters, tracked flows and rule ids start afresh (the programs attached keep enforcing until their links are updated)"
        );
    }
    Ok(replaced)
}
