//! Step 1c: issue #15's two targets with the sizes interleaved.
//!
//! Step 1 measures each size's tables in turn, minutes apart. On a shared machine the same
//! row's 1k figure moves by up to 500 ns between runs, more than the misses the targets count,
//! so a difference of two figures taken minutes apart says more about the neighbours than about
//! the lookups. Here the three sizes' tables (the single-length set) are loaded at once, and
//! every round measures each row at every size back to back, the order of the sizes rotating
//! from round to round, with a pointer chase over each size's footprint in the same round. A
//! round's misses over 1k are (its figure at the size - its figure at 1k) / its chase; the
//! targets are judged on the median over the rounds, and the spread of the rounds is printed
//! beside it.

use std::net::IpAddr;

use anyhow::Context as _;
use boundary_common::Direction;

use super::{
    Plan,
    cache::VerdictCache,
    chase::{Chase, STEPS},
    kernel::{self, BenchDatapath, SLOTS},
    paths::{
        self, CidrSet, Expect, Family, KeySpace, Keys, Kind, PathDef, SLOT, SplitMix, set_addr,
    },
    per_packet::{FirstPackets, Floors, fill_conntrack, sport_offset},
    progress,
    results::{AtScale, AtScaleRow, SIZES},
    testrun,
};

/// The rows measured: the two targets' paths, both families.
const ROWS: [(&str, Family); 4] = [
    (paths::EXACT_ALLOW, Family::V4),
    (paths::EXACT_ALLOW, Family::V6),
    (paths::CIDR_ALLOW, Family::V4),
    (paths::CIDR_ALLOW, Family::V6),
];

/// Rounds per run of the step: three for each of the plan's runs (a round is short: a cell of
/// `plan.calls` first packets per row and size, and a chase per size).
const ROUNDS_PER_RUN: usize = 3;

/// Untimed first packets before each timed cell.
const WARM_CALLS: usize = 500;

/// One size's tables, loaded and filled, with its verdict cache and its chase.
struct Loaded {
    space: KeySpace,
    dp: BenchDatapath,
    cache: VerdictCache,
    chase: Chase,
}

impl Loaded {
    /// The single-length set's tables of `entries` CIDR identities (and as many exact
    /// bindings), filled, with the conntrack table the rows insert into full of old flows.
    fn load(entries: usize, label: &str) -> anyhow::Result<Self> {
        progress::step(&format!(
            "at scale (sizes interleaved): {label} tables, loading, filling"
        ));
        let space = KeySpace { entries };
        let tables = kernel::tables_for(space, CidrSet::Uniform);
        let mut dp = BenchDatapath::load(&tables, SLOTS)?;
        dp.fill(&tables)?;
        drop(tables);
        // Every row is an allow row on ingress: its flows go into a table full of old ones.
        fill_conntrack(&dp, Direction::Ingress)?;
        let cache = VerdictCache::open(&dp.map_ids()?)?;
        let footprint = usize::try_from(dp.memlock()?).context("fits usize")?;
        let chase = Chase::new(footprint, 0xc4a5e ^ entries as u64)?;
        Ok(Self {
            space,
            dp,
            cache,
            chase,
        })
    }

    /// Checks that `def` takes its path on these tables: its hot key and a random member of
    /// its set (the reason counted, not only the action returned).
    fn check(&self, def: &PathDef, rng: &mut SplitMix) -> anyhow::Result<()> {
        let (build, keys, expect) = measured(def)?;
        let off = def
            .key_offset()
            .context("an at-scale row has a peer address")?;
        let frame = build(self.space.hot(keys, def.family));
        let mut sample = frame.clone();
        set_addr(
            &mut sample,
            off,
            self.space.pick(keys, def.family, rng.next_u64()),
        );
        for f in [&frame, &sample] {
            self.dp
                .verify(def.direction, f, expect.action, Some(SLOT), expect.reason)
                .with_context(|| format!("{} {}", def.name, def.family.label()))?;
        }
        Ok(())
    }

    /// One cell of `def`'s first packets on these tables (`plan.runs` runs of `plan.calls`
    /// calls): its net ns, the mean call's and the median call's. None may be answered from the verdict cache: the probes say so.
    fn first_packets(
        &mut self,
        def: &PathDef,
        rng: &mut SplitMix,
        floors: &Floors,
        plan: &Plan,
    ) -> anyhow::Result<(f64, f64)> {
        let (build, keys, expect) = measured(def)?;
        let frame = build(self.space.hot(keys, def.family));
        let off = def
            .key_offset()
            .context("an at-scale row has a peer address")?;
        let mut first = FirstPackets {
            cache: &mut self.cache,
            rng,
            space: self.space,
            keys,
            family: def.family,
            off,
            sport: sport_offset(&frame),
        };
        let cell = testrun::random(
            self.dp.program(def.direction),
            floors.of(def.direction),
            &frame,
            &mut first,
            expect.action,
            plan,
        )?;
        anyhow::ensure!(
            cell.hits.hits == 0,
            "{} of {} probe calls were answered from the verdict cache",
            cell.hits.hits,
            cell.hits.probes
        );
        Ok((cell.net(), cell.net_median_call()))
    }
}

/// A row's frame, for a given key address.
type Build = fn(IpAddr) -> Vec<u8>;

/// A measured row's frame builder, key set and expected verdict.
fn measured(def: &PathDef) -> anyhow::Result<(Build, Keys, Expect)> {
    match &def.kind {
        Kind::Measured {
            build,
            keys,
            expect,
        } => Ok((*build, *keys, *expect)),
        Kind::NotImplemented => anyhow::bail!("{} is not a measured path", def.name),
    }
}

pub fn run(plan: &Plan, floors: &Floors) -> anyhow::Result<AtScale> {
    let defs: Vec<PathDef> = paths::all()
        .into_iter()
        .filter(|d| ROWS.contains(&(d.name, d.family)))
        .collect();
    anyhow::ensure!(
        defs.len() == ROWS.len(),
        "the at-scale rows are not all among the per-packet paths"
    );
    let mut rng = SplitMix::new(0x1c_5eed);
    let mut loaded = Vec::with_capacity(SIZES.len());
    for (entries, label) in SIZES {
        let l = Loaded::load(entries, label)?;
        // Each row must take its path at every size: checked once, before any timing.
        for def in &defs {
            l.check(def, &mut rng)
                .with_context(|| format!("at {label}"))?;
        }
        loaded.push(l);
    }
    let one = Plan {
        runs: 1,
        ..plan.clone()
    };
    // Untimed calls before each cell: every cell starts from the same state (the code, the
    // stack and the lines the rows share warmed on its own tables), whatever ran before it.
    let warm = Plan {
        runs: 1,
        calls: WARM_CALLS,
        ..plan.clone()
    };
    let rounds = plan.runs * ROUNDS_PER_RUN;
    let mut out = AtScale {
        rounds,
        miss: vec![[f64::NAN; SIZES.len()]; rounds],
        rows: defs
            .iter()
            .map(|d| AtScaleRow {
                path: d.name,
                family: d.family.label(),
                net: vec![[f64::NAN; SIZES.len()]; rounds],
                typical: vec![[f64::NAN; SIZES.len()]; rounds],
            })
            .collect(),
    };
    for round in 0..rounds {
        progress::tick(&format!(
            "at scale (sizes interleaved): round {}/{rounds}",
            round + 1
        ));
        for k in 0..SIZES.len() {
            let s = (round + k) % SIZES.len();
            let l = &mut loaded[s];
            // The rows' order rotates too: none always runs first after the chase.
            for j in 0..defs.len() {
                let i = (round + j) % defs.len();
                let def = &defs[i];
                let what = || format!("{} {} at {}", def.name, def.family.label(), SIZES[s].1);
                l.first_packets(def, &mut rng, floors, &warm)
                    .with_context(what)?;
                let (net, typical) = l
                    .first_packets(def, &mut rng, floors, &one)
                    .with_context(what)?;
                out.rows[i].net[round][s] = net;
                out.rows[i].typical[round][s] = typical;
            }
            out.miss[round][s] = l.chase.ns_per_step(STEPS);
        }
    }
    progress::done();
    Ok(out)
}
