//! The datapath config entry (`BND_CONFIG`): which generation is live, what non-IP frames get,
//! which maps a packet may skip, and the epoch that keeps cached verdicts fresh.
//!
//! Every write of the entry is here, and each is a read-modify-write: a generation switch
//! (`switch`) or an epoch bump (`bump_epoch`). Only [`super::Maps`] holds a [`ConfigEntry`],
//! and only through `&mut` (which the [`crate::datapath::Datapath`] owning the maps hands out
//! to nobody), so in one agent two writers cannot interleave: an epoch bump cannot put back a
//! generation whose keys a swap just deleted. Across processes, `run` holds the pin
//! directory's lock (`datapath/lock.rs`): a second agent cannot start on the same pins.

use aya::maps::{Array, MapData};
use boundary_common::maps::{self as abi, CONFIG_MAP, DatapathConfig};

use super::{MapsError, map_err};

/// The one handle that writes `BND_CONFIG`.
pub(super) struct ConfigEntry(Array<MapData, DatapathConfig>);

impl ConfigEntry {
    pub(super) fn new(map: Array<MapData, DatapathConfig>) -> Self {
        Self(map)
    }

    pub(super) fn read(&self) -> Result<DatapathConfig, MapsError> {
        self.0.get(&0, 0).map_err(map_err(CONFIG_MAP))
    }

    /// Makes generation `next` live, with what it says of non-IP frames and of its maps
    /// (`flags`), and a new epoch: no verdict cached under the old generation is used again.
    pub(super) fn switch(
        &mut self,
        next: u8,
        non_ip: abi::Action,
        flags: u8,
    ) -> Result<(), MapsError> {
        let old = self.read()?;
        self.write(DatapathConfig::new(non_ip, next, flags).with_epoch(old.next_epoch()))
    }

    /// Makes every cached flow verdict stale, the live generation unchanged.
    pub(super) fn bump_epoch(&mut self) -> Result<(), MapsError> {
        let config = self.read()?;
        self.write(config.with_epoch(config.next_epoch()))
    }

    fn write(&mut self, config: DatapathConfig) -> Result<(), MapsError> {
        self.0.set(0, &config, 0).map_err(map_err(CONFIG_MAP))
    }
}
