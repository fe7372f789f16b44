//! Step 1: Boundary's XDP program, path by path, at each prefix count, hot and random-key.

use anyhow::Context as _;

use super::{
    Plan,
    kernel::{BenchDatapath, SLOTS},
    paths::{self, KeySpace, Kind, SplitMix, set_dst},
    progress,
    results::{PacketRow, PerPacket, SIZES, Value},
    sys::{RawProgram, XDP_PASS},
    testrun::{self, Cell},
};

pub fn value(cell: &Cell) -> Value {
    Value::Ns {
        net: cell.net(),
        gross: cell.gross.median(),
        floor: cell.floor.median(),
        spread: cell.gross.spread(),
    }
}

pub fn run(plan: &Plan, floor: &RawProgram) -> anyhow::Result<PerPacket> {
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
                hot: Vec::new(),
                random: Vec::new(),
            }
        })
        .collect();
    let mut out = PerPacket::default();
    let mut floors_hot = testrun::Samples::default();
    let mut floors_call = testrun::Samples::default();
    let mut rng = SplitMix::new(0x5eed_b0d4);

    for (entries, label) in SIZES {
        let space = KeySpace { entries };
        progress::step(&format!(
            "per-packet {label}: loading the datapath, filling {entries} endpoints"
        ));
        let mut dp = BenchDatapath::load(entries, SLOTS)?;
        let fill = dp.fill(space)?;
        out.fills.push((label, fill));
        progress::note(&format!(
            "filled in {:.2} s (Maps::apply, map capacity {})",
            fill.as_secs_f64(),
            dp.capacity
        ));
        let measured = defs
            .iter()
            .filter(|d| matches!(d.kind, Kind::Measured { .. }))
            .count();
        let mut done = 0;
        for (def, row) in defs.iter().zip(rows.iter_mut()) {
            let Kind::Measured {
                build,
                keys,
                expect,
            } = &def.kind
            else {
                row.hot.push(Value::Na("not implemented yet".into()));
                row.random.push(Value::Na("not implemented yet".into()));
                continue;
            };
            done += 1;
            progress::tick(&format!(
                "per-packet {label}: [{done}/{measured}] {} {}",
                def.name,
                def.family.label()
            ));
            let frame = build(space.hot(*keys, def.family));
            dp.verify(&frame, expect.action, expect.reason)
                .with_context(|| format!("{} {}", def.name, def.family.label()))?;
            let hot = testrun::hot(dp.xdp(), floor, &frame, expect.action, plan)?;
            floors_hot.0.extend(&hot.floor.0);
            row.hot.push(value(&hot));

            match def.dst_offset() {
                Some(off) => {
                    let (keys, family) = (*keys, def.family);
                    // A random member of the set must take the same path: check one first.
                    let mut sample = frame.clone();
                    set_dst(&mut sample, off, space.pick(keys, family, rng.next_u64()));
                    dp.verify(&sample, expect.action, expect.reason)?;
                    let mut rekey = |f: &mut [u8]| {
                        set_dst(f, off, space.pick(keys, family, rng.next_u64()));
                    };
                    let cell =
                        testrun::random(dp.xdp(), floor, &frame, &mut rekey, expect.action, plan)?;
                    floors_call.0.extend(&cell.floor.0);
                    row.random.push(value(&cell));
                }
                None => row
                    .random
                    .push(Value::Na("no address lookup on this path".into())),
            }
        }
        progress::done();
    }
    out.rows = rows;
    out.floor_hot = floors_hot.median();
    out.floor_call = floors_call.median();
    Ok(out)
}

/// The floor program: `return XDP_PASS;`.
pub fn empty_program() -> anyhow::Result<RawProgram> {
    RawProgram::xdp_returning(XDP_PASS, "bnd_bench_empty").context("load the empty XDP program")
}
