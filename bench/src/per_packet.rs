//! Step 1: Boundary's programs, path by path, at each prefix count, hot (a flow's later
//! packets: answered from the verdict cache) and first packet (random key, the cache emptied
//! before every call), each with its measured cache hit rate (`cache`).

use anyhow::Context as _;
use aya::maps::{HashMap, Map, MapData};
use boundary_common::{
    Direction, Reason,
    maps::{CONNTRACK_ACCEPTED_MAP, CONNTRACK_MAP, FAMILY_IPV4, FlowKey, FlowValue, MAX_FLOWS},
    wire::IPPROTO_UDP,
};

use super::{
    Plan,
    cache::{VerdictCache, maps_by_name},
    chase,
    kernel::{self, BenchDatapath, SLOTS},
    paths::{self, CidrSet, KeySpace, Keys, Kind, PathDef, SLOT, SplitMix, set_addr},
    progress,
    results::{Miss, PacketRow, PerPacket, SIZES, Value},
    sys::{RawProgram, TC_NEXT, XDP_PASS},
    testrun::{self, Cell, Rekey, Samples, Target},
};

pub fn value(cell: &Cell) -> Value {
    Value::Ns {
        net: cell.net(),
        gross: cell.gross.median(),
        floor: cell.floor.median(),
        spread: cell.gross.spread(),
        hits: cell.hits,
    }
}

/// Boundary's random-key calls: a fresh peer address from the path's set, a fresh source
/// port, and the verdict cache emptied, before every call: each call is the first packet of
/// a new flow. The port matters for allowed flows: with the address alone, the small sets'
/// few hundred peers come back again and again, their flows already in conntrack (a lookup,
/// no insert), while the large sets' are new (an insert into a full LRU, which evicts): the
/// small set's figure would flatter itself by the insert.
pub(crate) struct FirstPackets<'a> {
    pub cache: &'a mut VerdictCache,
    pub rng: &'a mut SplitMix,
    pub space: KeySpace,
    pub keys: Keys,
    pub family: paths::Family,
    pub off: usize,
    /// Where the frame's source port is, for the rows whose flows are new (not the
    /// established rows, whose flows were recorded with fixed ports).
    pub sport: Option<usize>,
}

/// The offset of a TCP or UDP frame's source port (Ethernet, then IPv4 or IPv6 without
/// extension headers).
pub(crate) fn sport_offset(frame: &[u8]) -> Option<usize> {
    const ETH: usize = 14;
    let l4 = |proto: u8, at: usize| matches!(proto, 6 | 17).then_some(at);
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => l4(
            *frame.get(ETH + 9)?,
            ETH + usize::from(frame.get(ETH)? & 0x0f) * 4,
        ),
        0x86dd => l4(*frame.get(ETH + 6)?, ETH + 40),
        _ => None,
    }
}

impl Rekey for FirstPackets<'_> {
    fn rekey(&mut self, frame: &mut [u8]) -> anyhow::Result<()> {
        let key = self.space.pick(self.keys, self.family, self.rng.next_u64());
        set_addr(frame, self.off, key);
        if let Some(at) = self.sport {
            let port = 1024 + (self.rng.next_u64() % 64_000) as u16;
            frame[at..at + 2].copy_from_slice(&port.to_be_bytes());
        }
        self.cache.empty()
    }

    fn probe(&mut self, target: &dyn Target, frame: &[u8]) -> anyhow::Result<Option<bool>> {
        self.cache.probe(target, frame).map(Some)
    }
}

/// The empty programs every cost is measured against: XDP for ingress, TC for egress.
pub struct Floors {
    pub xdp: RawProgram,
    pub tc: RawProgram,
}

impl Floors {
    pub fn load() -> anyhow::Result<Self> {
        Ok(Self {
            xdp: RawProgram::xdp_returning(XDP_PASS, "bnd_bench_empty")
                .context("load the empty XDP program")?,
            tc: RawProgram::tc_returning(TC_NEXT, "bnd_bench_tcnop")
                .context("load the empty TC program")?,
        })
    }

    pub fn of(&self, direction: Direction) -> &RawProgram {
        match direction {
            Direction::Ingress => &self.xdp,
            Direction::Egress => &self.tc,
        }
    }
}

/// What the rows share as they are measured: floor samples by direction (hot and per call)
/// and the key generator.
struct Running {
    hot: [Samples; 2],
    call: [Samples; 2],
    rng: SplitMix,
}

/// Records the flows the established row's replies belong to: one egress packet each through
/// the TC program (no egress rule, default allow, tracked because ingress denies).
fn record_flows(dp: &BenchDatapath, space: KeySpace, def: &PathDef) -> anyhow::Result<()> {
    for i in 0..space.flows() {
        let frame = paths::flow_frame(space.flow_peer(def.family, i));
        if i == 0 {
            dp.verify(
                Direction::Egress,
                &frame,
                TC_NEXT,
                Some(SLOT),
                Reason::DefaultAllow,
            )
            .context("the egress packet that records a flow")?;
        } else {
            let out = dp.program(Direction::Egress).run(&frame, 1)?;
            anyhow::ensure!(out.retval == TC_NEXT, "egress packet {i} was not passed");
        }
    }
    Ok(())
}

/// Puts every allow row on the same conntrack footing: fills the table its allowed packets
/// record their flows in (ingress: `BND_CT_ACCEPTED`, the flows a workload accepted; egress:
/// `BND_CONNTRACK`, the flows it opened) with twice its capacity of flows no row ever looks up
/// (198.18.0.0/15 peers), written from userspace. The table is then full of old flows: every
/// insert the row makes evicts one, as on a busy host, whatever ran before it. Without this the
/// first allow row on each datapath (the exact-identity one) inserted its 40,000 flows into an
/// empty LRU and the later rows into a full one.
pub(crate) fn fill_conntrack(dp: &BenchDatapath, direction: Direction) -> anyhow::Result<()> {
    let (name, expected) = match direction {
        Direction::Ingress => (CONNTRACK_ACCEPTED_MAP, Direction::Egress),
        Direction::Egress => (CONNTRACK_MAP, Direction::Ingress),
    };
    let mut table: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::try_from(Map::LruHashMap(maps_by_name(&dp.map_ids()?, name)?))
            .with_context(|| format!("open {name}"))?;
    let base = u32::from_be_bytes([198, 18, 0, 0]);
    for i in 0..2 * MAX_FLOWS {
        let mut peer = [0; 16];
        peer[..4].copy_from_slice(&(base + i).to_be_bytes());
        let mut local = [0; 16];
        local[..4].copy_from_slice(&paths::LOCAL4.octets());
        let (saddr, daddr) = match expected {
            Direction::Egress => (local, peer),
            Direction::Ingress => (peer, local),
        };
        let key = FlowKey {
            direction: expected as u8,
            proto: IPPROTO_UDP,
            family: FAMILY_IPV4,
            pad: 0,
            sport: 1024,
            dport: 1024,
            saddr,
            daddr,
        };
        table
            .insert(&key, &FlowValue { last_seen_ns: 0 }, 0)
            .with_context(|| format!("fill {name}"))?;
    }
    Ok(())
}

#[expect(
    clippy::too_many_arguments,
    reason = "the step's state, passed down once"
)]
fn measure_row(
    dp: &BenchDatapath,
    cache: &mut VerdictCache,
    space: KeySpace,
    def: &PathDef,
    row: &mut PacketRow,
    floors: &Floors,
    fs: &mut Running,
    plan: &Plan,
) -> anyhow::Result<()> {
    let Kind::Measured {
        build,
        keys,
        expect,
    } = &def.kind
    else {
        row.hot.push(Value::Na("not implemented yet".into()));
        row.random.push(Value::Na("not implemented yet".into()));
        return Ok(());
    };
    let (keys, family, dir) = (*keys, def.family, def.direction);
    if keys == Keys::Flows {
        record_flows(dp, space, def)?;
    }
    if expect.reason == Reason::PolicyAllow {
        fill_conntrack(dp, dir)?;
    }
    let prog = dp.program(dir);
    let floor = floors.of(dir);
    let d = dir as usize;
    let frame = build(space.hot(keys, family));
    dp.verify(
        dir,
        &frame,
        expect.action,
        counted_under(keys),
        expect.reason,
    )?;
    // Only TCP/UDP frames with a peer address use the cache (every keyed row is UDP); the
    // malformed and non-IP rows are decided before it.
    let cached = def.key_offset().is_some().then_some(&*cache);
    let hot = testrun::hot(prog, floor, &frame, expect.action, cached, plan)?;
    fs.hot[d].0.extend(&hot.floor.0);
    row.hot.push(value(&hot));

    let Some(off) = def.key_offset() else {
        row.random
            .push(Value::Na("no peer address on this path".into()));
        return Ok(());
    };
    // A random member of the set must take the same path: check one first.
    let mut sample = frame.clone();
    set_addr(
        &mut sample,
        off,
        space.pick(keys, family, fs.rng.next_u64()),
    );
    dp.verify(
        dir,
        &sample,
        expect.action,
        counted_under(keys),
        expect.reason,
    )?;
    let mut first = FirstPackets {
        cache,
        rng: &mut fs.rng,
        space,
        keys,
        family,
        off,
        sport: if keys == Keys::Flows {
            None
        } else {
            sport_offset(&frame)
        },
    };
    let cell = testrun::random(prog, floor, &frame, &mut first, expect.action, plan)?;
    fs.call[d].0.extend(&cell.floor.0);
    row.random.push(value(&cell));
    Ok(())
}

/// Where a row's packets must be counted: slot 0 when no workload owns the destination,
/// the workload for policy paths; either for the rest (malformed frames are counted under the
/// workload only when their addresses could be read).
fn counted_under(keys: Keys) -> Option<u16> {
    match keys {
        Keys::Unprotected => Some(boundary_common::maps::UNPROTECTED_SLOT),
        Keys::Fixed => None,
        _ => Some(SLOT),
    }
}

/// The L3 cache's size as the kernel reports it (for the report's wording only).
fn llc() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size")
        .map_or_else(|_| "LLC".into(), |s| format!("{} L3", s.trim()))
}

/// Loads and fills the tables of `set` at `space`, measures every row that runs on them, and
/// returns the memory their maps hold.
#[expect(
    clippy::too_many_arguments,
    reason = "the step's state, passed down once"
)]
fn measure_tables(
    defs: &[PathDef],
    rows: &mut [PacketRow],
    out: &mut PerPacket,
    space: KeySpace,
    set: CidrSet,
    label: &'static str,
    floors: &Floors,
    fs: &mut Running,
    plan: &Plan,
) -> anyhow::Result<u64> {
    let entries = space.entries;
    // The regrouped tables are built directly (`kernel::regrouped`): no policy file.
    if entries == SIZES[0].0 && set != CidrSet::Regrouped {
        progress::step(&format!(
            "per-packet {label}, {}: compiling the equivalent policy file, comparing",
            set.label()
        ));
        kernel::check_against_compiler(space, set)?;
    }
    progress::step(&format!(
        "per-packet {label}, {}: {entries} CIDR identities + {entries} exact bindings: loading, filling",
        set.label()
    ));
    if set == CidrSet::Mixed {
        for family in [paths::Family::V4, paths::Family::V6] {
            let hist: Vec<String> = crate::mixed::set(family, space.per_family())
                .histogram()
                .iter()
                .map(|(len, n)| format!("/{len} {n}"))
                .collect();
            out.mixed_notes.push(format!(
                "mixed-length set {label} {}: {}",
                family.label(),
                hist.join(", ")
            ));
        }
    }
    let tables = kernel::tables_for(space, set);
    let mut dp = BenchDatapath::load(&tables, SLOTS)?;
    let fill = dp.fill(&tables)?;
    let footprint = dp.memlock()?;
    let [v4, v6] = dp.prefix_levels()?;
    out.mixed_notes.push(format!(
        "{label} {}: prefix levels walked: v4 {v4}; v6 {v6}",
        set.label()
    ));
    if set == CidrSet::Uniform {
        out.fills.push((label, fill));
    }
    let mut cache = VerdictCache::open(&dp.map_ids()?)?;
    for r in &dp.raised {
        out.raised.push(format!(
            "{label} ({}): {} {} entries per generation (shipped {} = {} per generation), raised to {}",
            set.label(),
            r.map,
            r.used,
            r.shipped,
            r.shipped / 2,
            r.used * 2
        ));
    }
    progress::note(&format!(
        "filled in {:.2} s (Maps::apply), maps hold {} MiB{}",
        fill.as_secs_f64(),
        footprint >> 20,
        if dp.raised.is_empty() {
            String::new()
        } else {
            format!(
                "; raised: {}",
                dp.raised
                    .iter()
                    .map(|r| r.map)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    let mine = |d: &PathDef| matches!(d.kind, Kind::Measured { .. }) && d.set() == set;
    let measured = defs.iter().filter(|d| mine(d)).count();
    let mut done = 0;
    for (def, row) in defs.iter().zip(rows.iter_mut()) {
        if def.set() != set {
            continue;
        }
        if mine(def) {
            done += 1;
            progress::tick(&format!(
                "per-packet {label}: [{done}/{measured}] {} {}",
                def.name,
                def.family.label()
            ));
        }
        measure_row(&dp, &mut cache, space, def, row, floors, fs, plan)
            .with_context(|| format!("{} {} at {label}", def.name, def.family.label()))?;
    }
    Ok(footprint)
}

pub fn run(plan: &Plan, floors: &Floors) -> anyhow::Result<PerPacket> {
    let defs = paths::all();
    let mut rows: Vec<PacketRow> = defs
        .iter()
        .map(|d| {
            let verdict = match &d.kind {
                Kind::Measured { expect, .. } => expect.label(),
                Kind::NotImplemented => "not implemented yet".into(),
            };
            PacketRow {
                subject: "Boundary",
                path: d.name.into(),
                family: d.family.label(),
                verdict,
                lookups: d.lookups.label(),
                hot: Vec::new(),
                random: Vec::new(),
            }
        })
        .collect();
    let mut out = PerPacket {
        repeat: plan.repeat,
        ..PerPacket::default()
    };
    let mut fs = Running {
        hot: Default::default(),
        call: Default::default(),
        rng: SplitMix::new(0x5eed_b0d4),
    };

    for (size, (entries, label)) in SIZES.into_iter().enumerate() {
        let space = KeySpace { entries };
        for set in CidrSet::ALL {
            let footprint = measure_tables(
                &defs, &mut rows, &mut out, space, set, label, floors, &mut fs, plan,
            )?;
            if set == CidrSet::Uniform {
                // After the datapath is gone: the chase and the maps never hold memory at once.
                let bytes = usize::try_from(footprint).context("fits usize")?;
                progress::tick(&format!(
                    "per-packet {label}: pointer chase over {} MiB (the tables' footprint)",
                    bytes >> 20
                ));
                let s = chase::measure(bytes, plan.runs, 0xc4a5e ^ entries as u64)?;
                out.misses.push(Miss {
                    what: format!("the {label} tables' footprint (all maps' memlock)"),
                    bytes: footprint,
                    size: Some(size),
                    ns: s.median(),
                    spread: s.spread(),
                });
            }
        }
        progress::done();
    }
    for mib in [64usize, 256] {
        progress::tick(&format!("pointer chase over {mib} MiB"));
        let s = chase::measure(mib << 20, plan.runs, 0xc4a5e ^ mib as u64)?;
        out.misses.push(Miss {
            what: format!("{mib} MiB (far beyond the {} LLC)", llc()),
            bytes: (mib as u64) << 20,
            size: None,
            ns: s.median(),
            spread: s.spread(),
        });
    }
    progress::done();
    out.rows = rows;
    out.floor_hot = fs.hot[0].median();
    out.floor_call = fs.call[0].median();
    out.tc_floor_hot = fs.hot[1].median();
    out.tc_floor_call = fs.call[1].median();
    Ok(out)
}
