//! Boundary's real eBPF object, loaded for `BPF_PROG_TEST_RUN` with the endpoint map sized for
//! the prefix count under test.
//!
//! `Datapath::load_unpinned` sizes `BND_ENDPOINTS` at `MAX_ENDPOINTS` (65,536), too small for
//! 100k and 1M entries. Rather than change the agent, the harness loads the same embedded object
//! itself and raises the capacity with `EbpfLoader::map_max_entries`, then hands the maps to the
//! agent's own `Maps` (so filling goes through `Maps::apply`, the agent's code path).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aya::{
    Ebpf, EbpfLoader,
    programs::{Program, Xdp},
};
use boundary_agent::{
    datapath::{
        Maps,
        object::{OBJECT, TC_PROGRAM, XDP_PROGRAM},
    },
    policy::Compiled,
};
use boundary_common::{
    Reason,
    maps::{
        Action, COUNTERS_MAP, DatapathConfig, ENDPOINTS_MAP, Endpoint, MAX_ENDPOINTS, Mode,
        NAMES_MAP,
    },
};

use super::{
    paths::{Family, KeySpace, WORKLOADS},
    testrun::Target,
};

/// Workload slots of the per-packet datapath (its counters are read across all of them).
pub const SLOTS: u32 = 64;

pub struct BenchDatapath {
    ebpf: Ebpf,
    pub maps: Maps,
    pub capacity: u32,
}

impl BenchDatapath {
    /// Loads both programs with room for `entries` endpoints (never less than the shipped
    /// `MAX_ENDPOINTS`, so that small fills see the map the agent really creates) and `slots`
    /// workload slots.
    pub fn load(entries: usize, slots: u32) -> anyhow::Result<Self> {
        let capacity = u32::try_from(entries)
            .context("capacity fits u32")?
            .max(MAX_ENDPOINTS);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(NAMES_MAP, slots)
            .map_max_entries(COUNTERS_MAP, slots * 2)
            .map_max_entries(ENDPOINTS_MAP, capacity);
        let mut ebpf = loader.load(OBJECT).context("load the eBPF object")?;
        for name in [XDP_PROGRAM, TC_PROGRAM] {
            match ebpf.program_mut(name) {
                Some(Program::Xdp(p)) => p.load().with_context(|| format!("load {name}"))?,
                Some(Program::SchedClassifier(p)) => {
                    p.load().with_context(|| format!("load {name}"))?;
                }
                _ => bail!("program {name} missing from the object"),
            }
        }
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            capacity,
        })
    }

    pub fn xdp(&self) -> &Xdp {
        self.ebpf
            .program(XDP_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("loaded in BenchDatapath::load")
    }

    /// Installs the key space (see `paths`) through the agent's `Maps::apply`; returns how
    /// long that took.
    pub fn fill(&mut self, space: KeySpace) -> anyhow::Result<Duration> {
        let compiled = compiled_for(space);
        let start = Instant::now();
        self.maps
            .apply(&compiled, DatapathConfig::new(Action::Pass))
            .context("apply the filled endpoint table")?;
        Ok(start.elapsed())
    }

    /// Every (slot, reason) counter of the ingress direction, flattened.
    fn snapshot(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for slot in 0..=WORKLOADS {
            let row = self.maps.counter_row(slot, 0)?;
            out.extend(row.counters.iter().map(|c| c.packets));
        }
        Ok(out)
    }

    /// Runs `frame` once and checks the action and that exactly one counter moved, under
    /// `reason`: the row measures the path it names.
    pub fn verify(&self, frame: &[u8], action: u32, reason: Reason) -> anyhow::Result<()> {
        let before = self.snapshot()?;
        let out = self.xdp().run(frame, 1)?;
        let after = self.snapshot()?;
        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        ensure!(
            out.retval == action,
            "expected XDP action {action}, got {}",
            out.retval
        );
        ensure!(
            moved.len() == 1,
            "expected one counter to move, got {moved:?}"
        );
        let code = moved[0] % boundary_common::reason::REASON_SLOTS;
        ensure!(
            usize::from(reason.code()) == code,
            "expected reason {}, counted under code {code}",
            reason.label()
        );
        Ok(())
    }
}

/// The compiled form of a key space, built directly (the per-packet step measures the
/// datapath, not the YAML parser; `control_plane` times the parser and compiler).
pub fn compiled_for(space: KeySpace) -> Compiled {
    let names = (1..=WORKLOADS)
        .map(|slot| {
            let kind = if (slot - 1) % 2 == 0 { "allow" } else { "deny" };
            (slot, format!("{kind}-{:02}", slot - 1))
        })
        .collect();
    let mut endpoints = Vec::with_capacity(space.entries);
    for family in [Family::V4, Family::V6] {
        for j in 0..space.per_family() {
            let key = boundary_agent::policy::compile::endpoint_key(KeySpace::addr(family, j));
            let ingress = if KeySpace::allows(j) {
                Action::Pass
            } else {
                Action::Drop
            };
            endpoints.push((
                key,
                Endpoint {
                    slot: KeySpace::slot(j),
                    mode: Mode::Enforce as u8,
                    ingress_default: ingress as u8,
                    egress_default: Action::Pass as u8,
                    pad: [0; 3],
                },
            ));
        }
    }
    Compiled { names, endpoints }
}
