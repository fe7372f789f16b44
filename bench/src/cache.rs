//! The verdict cache, seen from the harness: emptying it before a call (so that the call is a
//! flow's first packet), and finding out whether a call was answered from it (the hit rate
//! printed beside every per-packet figure).
//!
//! Both go through the kernel objects of the loaded program, found by name among the maps its
//! XDP program uses, so they work whichever loader made them and need no knowledge of how the
//! cache picks a slot (that index may be keyed by a secret the loader draws at load time).
//!
//! - **Emptying**: the datapath config's epoch is bumped (what `Maps::invalidate_verdicts` and
//!   every policy swap do): entries of another epoch are misses. One array write.
//! - **Hit or miss** of one probe call: this CPU's whole cache is read before and after the
//!   call (one `BPF_MAP_LOOKUP_BATCH` each). A miss writes its flow's entry (`put`), which
//!   changes that slot's flow, epoch or bind sequence (a verdict made stale by a binding in its
//!   peer's slot is written again with the same flow and epoch but the new sequence); a hit
//!   changes none (it may only update the entry's conntrack bookkeeping). So "some slot's
//!   (flow, epoch, bind sequence) changed" proves a miss. The other
//!   answer counts as a hit, which makes the hit rate an upper bound: a packet the cache does
//!   not consider at all would count as a hit too. Only TCP/UDP rows are probed.

use std::mem::{offset_of, size_of};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{Array, Map, MapData, PerCpuArray};
use boundary_agent::datapath::batch;
use boundary_common::maps::{
    CONFIG_MAP, DatapathConfig, FLOW_WORDS, VERDICT_CACHE_MAP, VERDICT_CACHE_SLOTS,
    VerdictCacheEntry,
};

use super::testrun::Target;

/// One cache entry as raw words (`VerdictCacheEntry` is not `Pod` outside the agent).
type Entry = [u64; size_of::<VerdictCacheEntry>() / 8];
const _: () = assert!(size_of::<VerdictCacheEntry>() == size_of::<Entry>());

/// (flow words, epoch, bind sequence) of one slot: what a miss rewrites and a hit leaves alone.
type Identity = [u64; FLOW_WORDS + 2];

/// The `u32` field at byte `offset` of an entry.
fn field32(e: &Entry, offset: usize) -> u64 {
    (e[offset / 8] >> ((offset % 8) * 8)) & u64::from(u32::MAX)
}

fn identity(e: &Entry) -> Identity {
    let flow_at = offset_of!(VerdictCacheEntry, flow) / 8;
    let mut out = [0; FLOW_WORDS + 2];
    out[..FLOW_WORDS].copy_from_slice(&e[flow_at..flow_at + FLOW_WORDS]);
    out[FLOW_WORDS] = field32(e, offset_of!(VerdictCacheEntry, epoch));
    out[FLOW_WORDS + 1] = field32(e, offset_of!(VerdictCacheEntry, bind_seq));
    out
}

/// Finds the map called `name` among those a program's `map_ids` list.
pub fn maps_by_name(map_ids: &[u32], name: &str) -> anyhow::Result<MapData> {
    for &id in map_ids {
        let data = MapData::from_id(id)?;
        if data.info()?.name_as_str() == Some(name) {
            return Ok(data);
        }
    }
    bail!("no map {name} among the program's maps")
}

/// Handles on the cache and the config of one loaded datapath.
pub struct VerdictCache {
    cache: PerCpuArray<MapData, Entry>,
    config: Array<MapData, DatapathConfig>,
    /// The config as last written: the epoch is bumped from it without a read.
    current: DatapathConfig,
}

impl VerdictCache {
    /// Opens the cache and config maps of the program whose map ids are `map_ids`.
    pub fn open(map_ids: &[u32]) -> anyhow::Result<Self> {
        let cache =
            PerCpuArray::try_from(Map::PerCpuArray(maps_by_name(map_ids, VERDICT_CACHE_MAP)?))
                .context("open the verdict cache")?;
        let config: Array<MapData, DatapathConfig> =
            Array::try_from(Map::Array(maps_by_name(map_ids, CONFIG_MAP)?))
                .context("open the datapath config")?;
        let current = config.get(&0, 0).context("read the datapath config")?;
        Ok(Self {
            cache,
            config,
            current,
        })
    }

    /// Whether the datapath caches verdicts at all (epoch 0 disables the cache).
    pub fn enabled(&self) -> bool {
        self.current.epoch != 0
    }

    /// Reads the config again: after someone else (the agent's `Maps`) moved the epoch,
    /// [`Self::empty`] must start from the epoch in the map.
    pub fn reread(&mut self) -> anyhow::Result<()> {
        self.current = self.config.get(&0, 0).context("read the datapath config")?;
        Ok(())
    }

    /// Invalidates every cached verdict: the next packet of any flow is its first again.
    pub fn empty(&mut self) -> anyhow::Result<()> {
        ensure!(self.enabled(), "the verdict cache is disabled (epoch 0)");
        let next = self.current.with_epoch(self.current.next_epoch());
        self.config
            .set(0, &next, 0)
            .context("bump the verdict-cache epoch")?;
        self.current = next;
        Ok(())
    }

    /// (flow, epoch) of every slot of the calling thread's CPU.
    fn snapshot(&self) -> anyhow::Result<Vec<Identity>> {
        // SAFETY: no arguments; returns the CPU the calling thread runs on.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu).context("sched_getcpu")?;
        let mut out = vec![[0; FLOW_WORDS + 2]; VERDICT_CACHE_SLOTS as usize];
        batch::read_per_cpu(&self.cache, VERDICT_CACHE_SLOTS, |i, per_cpu| {
            if let (Some(slot), Some(e)) = (out.get_mut(i as usize), per_cpu.get(cpu)) {
                *slot = identity(e);
            }
        })
        .context("read the verdict cache")?;
        Ok(out)
    }

    /// Runs `frame` once through `prog` on this CPU; whether the cache answered it (see the
    /// module doc: `false` is proven, `true` is "no entry was written").
    pub fn probe(&self, prog: &dyn Target, frame: &[u8]) -> anyhow::Result<bool> {
        let before = self.snapshot()?;
        prog.run(frame, 1)?;
        let after = self.snapshot()?;
        Ok(before == after)
    }
}

/// Hits among probe calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitRate {
    pub hits: u32,
    pub probes: u32,
}

impl HitRate {
    pub fn add(&mut self, hit: bool) {
        self.probes += 1;
        self.hits += u32::from(hit);
    }

    pub fn percent(self) -> Option<f64> {
        (self.probes > 0).then(|| f64::from(self.hits) * 100.0 / f64::from(self.probes))
    }
}
