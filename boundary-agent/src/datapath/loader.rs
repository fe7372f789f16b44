//! Loading the object, pinning its programs, and the handle on what was loaded. Attaching is
//! in `attach.rs`.

use std::path::PathBuf;

use aya::{
    Ebpf, EbpfLoader,
    maps::ProgramArray,
    programs::{ProgramError, ProgramFd, SchedClassifier, Xdp},
};
use boundary_common::{
    diag::{LOG_LEVEL_GLOBAL, LOG_MAP},
    maps::{
        ABI_MAP, ABI_VERSION, ALL_MAPS, Action, COUNTERS_MAP, FROZEN_CLOCK_GLOBAL, NAMES_MAP,
        PROG_TC_EGRESS, PROG_TC_INGRESS, PROGS_MAP, READER_DELAY_GLOBAL, RULE_HITS_MAP,
        TABLE_BUCKETS_LOG2, TABLE_BUCKETS_LOG2_GLOBAL, TABLE_MAP, rule_hits_entries,
    },
};

use super::{
    DatapathError,
    attach::remove_if_present,
    bpffs, kernel_log,
    maps::{self, Maps, MapsError},
    object::{OBJECT, TC_INGRESS_PROGRAM, TC_PROGRAM, XDP_PROGRAM, cache_key, set_cache_key},
    pins::PinLayout,
};
use crate::{config::KernelLog, policy::Tables};

/// Every program in the object, with the name of its pin under `programs/`.
pub(super) const PROGRAMS: [(&str, &str); 3] = [
    (XDP_PROGRAM, "xdp"),
    (TC_INGRESS_PROGRAM, "tc-ingress"),
    (TC_PROGRAM, "tc"),
];

/// Verifier and JIT figures of a loaded program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: &'static str,
    pub id: u32,
    pub verified_insns: Option<u32>,
    /// The program as the verifier left it (dead code removed), before the JIT.
    pub xlated_bytes: Option<u32>,
    pub jited_bytes: u32,
}

impl ProgramStats {
    fn from_info(name: &'static str, info: &aya::programs::ProgramInfo) -> Self {
        Self {
            name,
            id: info.id(),
            verified_insns: info.verified_instruction_count(),
            xlated_bytes: info.size_translated(),
            jited_bytes: info.size_jitted(),
        }
    }
}

/// How to load the object, beyond what every load does.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Workload slots: the names and counters maps are sized for them.
    pub max_workloads: u32,
    /// Maps given more entries than shipped, `(map, max_entries)`: for the benchmark's tables
    /// larger than a host's.
    pub capacities: &'a [(&'static str, u32)],
    /// A pause between a packet's read of the config and its first lookup under it
    /// (boundary-ebpf's `delay.rs`): only for the test of the generation swap's grace period.
    pub reader_delay_ns: u64,
    /// A rate-limit clock that stands still at this many ns (boundary-ebpf's `ratelimit.rs`):
    /// only for the tests that compare the datapath with the reference evaluator.
    pub frozen_clock_ns: u64,
    /// Kernel-side diagnostics compiled in at load (`datapath/kernel_log.rs`); default off.
    pub kernel_log: KernelLog,
    /// Prefixes a family needs to be laid out in prefix levels (`None`: the compiler's
    /// `LEVELS_FROM`): tests lay small sets out in levels with `Some(0)`.
    pub prefix_levels_from: Option<usize>,
}

/// A loaded datapath: programs in the kernel, maps pinned (new or adopted).
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    /// None for a datapath loaded only to be run with `BPF_PROG_TEST_RUN` (tests, bench).
    layout: Option<PinLayout>,
    /// The maps' one writer: every write goes through the methods below.
    maps: Maps,
}

impl Datapath {
    /// Loads the programs, creating the pinned maps or adopting the ones already pinned.
    pub fn load(layout: PinLayout, max_workloads: u32) -> Result<Self, DatapathError> {
        Self::load_with(
            Some(layout),
            &LoadOptions {
                max_workloads,
                ..LoadOptions::default()
            },
        )
    }

    /// Loads the programs with fresh, unpinned maps, attached nowhere: for running them with
    /// `BPF_PROG_TEST_RUN` (kernel tests, benchmarks, `trace`).
    pub fn load_unpinned(max_workloads: u32) -> Result<Self, DatapathError> {
        Self::load_with(
            None,
            &LoadOptions {
                max_workloads,
                ..LoadOptions::default()
            },
        )
    }

    /// Loads the programs as `options` say, with the maps pinned under `layout` (created or
    /// adopted) or, without one, fresh and unpinned.
    pub fn load_with(
        layout: Option<PinLayout>,
        options: &LoadOptions<'_>,
    ) -> Result<Self, DatapathError> {
        if let Some(layout) = &layout {
            Self::prepare_pins(layout, options)?;
        }
        Self::load_object(layout, options)
    }

    fn prepare_pins(layout: &PinLayout, options: &LoadOptions<'_>) -> Result<(), DatapathError> {
        let pin_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| DatapathError::PinDir { path, source }
        };
        bpffs::ensure(layout.root()).map_err(pin_err(layout.root()))?;
        for dir in [layout.maps_dir(), layout.programs_dir(), layout.links_dir()] {
            std::fs::create_dir_all(&dir).map_err(pin_err(&dir))?;
        }
        maps::prepare_pinned(layout, options.max_workloads, options.capacities)?;
        kernel_log::prepare_pinned(layout)?;
        Ok(())
    }

    fn load_object(
        layout: Option<PinLayout>,
        options: &LoadOptions<'_>,
    ) -> Result<Self, DatapathError> {
        let mut ebpf = Self::load_programs(layout.as_ref(), options)?;
        if layout.is_none() {
            // Nothing attached here, nothing to keep consistent: ready for test runs at once.
            fill_program_array(&mut ebpf)?;
        }
        if layout.is_some() {
            record_abi(&mut ebpf)?;
        }
        let mut maps = Maps::take(&mut ebpf)?;
        if let Some(from) = options.prefix_levels_from {
            maps.prefix_levels_from = from;
        }
        Ok(Self { ebpf, layout, maps })
    }

    /// Loads the object's programs into the kernel, with the maps pinned under `layout`
    /// (created or adopted) or fresh and unpinned.
    pub(super) fn load_programs(
        layout: Option<&PinLayout>,
        options: &LoadOptions<'_>,
    ) -> Result<Ebpf, DatapathError> {
        let max_workloads = options.max_workloads;
        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&str, PathBuf)> = layout
            .iter()
            .flat_map(|l| {
                ALL_MAPS
                    .iter()
                    .chain([&LOG_MAP])
                    .map(move |&n| (n, l.map(n)))
            })
            .collect();
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(NAMES_MAP, max_workloads)
            .map_max_entries(COUNTERS_MAP, max_workloads * 2)
            .map_max_entries(RULE_HITS_MAP, rule_hits_entries(maps::possible_cpus()?));
        for &(map, entries) in options.capacities {
            loader.map_max_entries(map, entries);
        }
        // The table's size as asked, else the pinned table's (a reload of the programs alone,
        // `reload_programs`, adopts it as it is), else the shipped one. The datapath's probe
        // reads it from this global.
        let table_entries = match options.capacities.iter().find(|(m, _)| *m == TABLE_MAP) {
            Some(&(_, entries)) => entries,
            None => layout.map_or(2 << TABLE_BUCKETS_LOG2, |l| maps::table_entries(l, 0)),
        };
        loader.map_max_entries(TABLE_MAP, table_entries);
        let table_log2 = maps::buckets_log2(table_entries)?;
        loader.override_global(TABLE_BUCKETS_LOG2_GLOBAL, &table_log2, true);
        let key = cache_key().map_err(DatapathError::Random)?;
        set_cache_key(&mut loader, &key);
        if options.reader_delay_ns != 0 {
            loader.override_global(READER_DELAY_GLOBAL, &options.reader_delay_ns, true);
        }
        if options.frozen_clock_ns != 0 {
            loader.override_global(FROZEN_CLOCK_GLOBAL, &options.frozen_clock_ns, true);
        }
        let log_level = kernel_log::global_value(options.kernel_log);
        loader.override_global(LOG_LEVEL_GLOBAL, &log_level, true);
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(Box::new(e)))?;

        for (program, _) in PROGRAMS {
            let p = ebpf
                .program_mut(program)
                .ok_or(DatapathError::MissingProgram { program })?;
            let prog_err = |source| DatapathError::Program { program, source };
            match p {
                aya::programs::Program::Xdp(x) => x.load().map_err(prog_err)?,
                aya::programs::Program::SchedClassifier(t) => t.load().map_err(prog_err)?,
                _ => return Err(DatapathError::MissingProgram { program }),
            }
        }
        Ok(ebpf)
    }

    /// The maps, to read.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Installs compiled tables as the next generation and makes it live atomically; on
    /// failure the live generation stays (see [`Maps`]'s `apply` in `maps/swap.rs`).
    pub fn apply(&mut self, tables: &Tables, non_ip: Action) -> Result<(), MapsError> {
        self.maps.apply(tables, non_ip)
    }

    /// Records an earned binding and binds (or renews) its address in the live generation
    /// (see `maps/bindings.rs`).
    pub fn bind(
        &mut self,
        earned: &maps::EarnedBinding,
        binding: &crate::policy::Binding,
    ) -> Result<(), MapsError> {
        self.maps.bind_live(earned, binding)
    }

    /// Takes an address's earned binding out of the live generation and the record.
    pub fn unbind(&mut self, addr: std::net::IpAddr) -> Result<(), MapsError> {
        self.maps.unbind_live(addr)
    }

    /// Makes every cached flow verdict stale.
    pub fn invalidate_verdicts(&mut self) -> Result<(), MapsError> {
        self.maps.invalidate_verdicts()
    }

    /// Makes swaps delete the old generation right after the switch, without waiting out the
    /// packets in flight: only for the test that shows what the wait prevents.
    #[doc(hidden)]
    pub fn skip_grace_period_for_tests(&mut self) {
        self.maps.skip_grace = true;
    }

    /// Forgets every tracked flow and fragment; returns how many entries were removed.
    pub fn forget_flows(&mut self) -> Result<usize, MapsError> {
        self.maps.forget_flows()
    }

    pub(super) fn layout(&self) -> Result<&PinLayout, DatapathError> {
        self.layout.as_ref().ok_or(DatapathError::Unpinned)
    }

    /// Points the pinned program array the TC programs tail-call through (after pulling
    /// non-linear headers in) at this load's programs. Called once every interface is attached:
    /// until then the programs attached before (a previous agent's) keep calling their own.
    pub fn enable_tail_calls(&mut self) -> Result<(), DatapathError> {
        fill_program_array(&mut self.ebpf)
    }

    /// The loaded XDP program (for `BPF_PROG_TEST_RUN` and attach).
    pub fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// The loaded XDP program, to read or test-run.
    pub fn xdp_program(&self) -> &Xdp {
        self.ebpf
            .program(XDP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// The loaded TC egress program, to read or test-run.
    pub fn tc_program(&self) -> &SchedClassifier {
        self.ebpf
            .program(TC_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// The loaded TC egress program.
    pub fn tc(&mut self) -> &mut SchedClassifier {
        self.classifier(TC_PROGRAM)
    }

    /// The loaded TC ingress program.
    pub fn tc_ingress(&mut self) -> &mut SchedClassifier {
        self.classifier(TC_INGRESS_PROGRAM)
    }

    pub(super) fn classifier(&mut self, name: &str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// What the verifier and the JIT made of each program: (name, id, instructions the
    /// verifier processed, JIT image bytes). The verifier count is the budget to watch.
    pub fn program_stats(&mut self) -> Vec<ProgramStats> {
        let mut out = Vec::new();
        for (name, _) in PROGRAMS {
            let info = match self.ebpf.program(name) {
                Some(aya::programs::Program::Xdp(p)) => p.info(),
                Some(aya::programs::Program::SchedClassifier(p)) => p.info(),
                _ => continue,
            };
            if let Ok(info) = info {
                out.push(ProgramStats::from_info(name, &info));
            }
        }
        out
    }

    /// Pins the programs under `programs/`, replacing earlier pins.
    pub fn pin_programs(&mut self) -> Result<(), DatapathError> {
        let layout = self.layout()?.clone();
        for (name, pin) in PROGRAMS {
            let path = layout.program(pin);
            remove_if_present(&path)?;
            let pinned = match self.ebpf.program_mut(name) {
                Some(aya::programs::Program::Xdp(p)) => p.pin(&path),
                Some(aya::programs::Program::SchedClassifier(p)) => p.pin(&path),
                _ => return Err(DatapathError::MissingProgram { program: name }),
            };
            pinned.map_err(|source| DatapathError::PinObject {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Writes this agent's [`ABI_VERSION`] into the pinned `BND_ABI` map (see
/// `maps/shapes.rs`).
fn record_abi(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let map_err = |source| {
        DatapathError::Maps(MapsError::Map {
            name: ABI_MAP,
            source,
        })
    };
    let map = ebpf
        .map_mut(ABI_MAP)
        .ok_or(DatapathError::Maps(MapsError::Missing { name: ABI_MAP }))?;
    let mut abi: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map).map_err(map_err)?;
    abi.set(0, &ABI_VERSION, 0).map_err(map_err)
}

/// Puts the TC programs into `BND_PROGS`, which they tail-call after pulling non-linear
/// headers in (see boundary-ebpf's `main.rs`). An adopted, pinned array is overwritten: its
/// entries pointed at the previous agent's programs.
pub(super) fn fill_program_array(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let fd = |ebpf: &Ebpf, program: &'static str| -> Result<ProgramFd, DatapathError> {
        let p: &SchedClassifier = ebpf
            .program(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingProgram { program })?;
        p.fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
            .map_err(|source| DatapathError::Program { program, source })
    };
    let ingress = fd(ebpf, TC_INGRESS_PROGRAM)?;
    let egress = fd(ebpf, TC_PROGRAM)?;
    let map_err = |source| {
        DatapathError::Maps(MapsError::Map {
            name: PROGS_MAP,
            source,
        })
    };
    let map = ebpf
        .map_mut(PROGS_MAP)
        .ok_or(DatapathError::Maps(MapsError::Missing { name: PROGS_MAP }))?;
    let mut progs = ProgramArray::try_from(map).map_err(map_err)?;
    progs.set(PROG_TC_INGRESS, &ingress, 0).map_err(map_err)?;
    progs.set(PROG_TC_EGRESS, &egress, 0).map_err(map_err)?;
    Ok(())
}
