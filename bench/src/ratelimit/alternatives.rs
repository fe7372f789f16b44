//! The alternatives to the design's shared word, measured apart from the datapath (the issue's
//! "measure the alternatives"): a bucket whose every packet updates the shared word under a
//! `bpf_spin_lock`, beside one whose every packet compare-and-swaps it.
//!
//! Why apart: the CAS bucket of `cost` is the production program with its credit batches set to
//! 0 through the maps: the same kernel code taking another path. A spin-lock bucket cannot be
//! made that way: it needs a map value that holds a `struct bpf_spin_lock` (a map with BTF) and
//! kernel code that takes the lock, which the production object does not have (and should not
//! carry for a benchmark). So three hand-assembled XDP programs (`sys::RawProgram::xdp`), alike
//! but for how they update one array value (`u32` lock or padding, then the `u64` `tat`):
//!
//! - **read only**: read the clock, look the value up, compute the GCRA step from its `tat`
//!   (`max(tat, now) + interval`, refused past `depth`), write nothing;
//! - **CAS**: the same, then `cmpxchg` the new `tat` in; on a lost race read and try again, up
//!   to `bucket::CAS_TRIES` times (the design's bound);
//! - **spin lock**: `bpf_spin_lock` on the value's lock, the same step and a plain store, then
//!   `bpf_spin_unlock` (the value's BTF is made here, [`spin_lock_btf`]).
//!
//! Nanosecond units, 1 ns apart, a depth of 1 s: far above what test runs offer, so every packet
//! writes. Timed hot (one call of `repeat` runs) on CPU 0 alone, then on CPUs 0 and 1 at once on
//! the one value, rounds interleaving the empty program and the three; reported net of the empty
//! program and as the median over rounds of (program - read only) in the same round: what the
//! write costs, alone and contended. Not Boundary's datapath (no parse, no policy, no per-CPU
//! credit): info rows beside the CAS bucket of `cost`.

use anyhow::Context as _;
use boundary_common::bucket::CAS_TRIES;

use super::on_both_cpus;
use crate::{
    Plan,
    env::CpuPin,
    progress,
    results::AltRow,
    sys::{Insn, RawMap, RawProgram, XDP_PASS},
    testrun::{Samples, Target},
};

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7;
const ADD_K: u8 = 0x07;
const SUB_X: u8 = 0x1f;
const LDX_DW: u8 = 0x79; // BPF_LDX | BPF_MEM | BPF_DW
const STX_DW: u8 = 0x7b;
const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
const CMPXCHG: i32 = 0xf1; // BPF_CMPXCHG (BPF_FETCH included)
const JEQ_K: u8 = 0x15;
const JEQ_X: u8 = 0x1d;
const JGT_K: u8 = 0x25;
const JGT_X: u8 = 0x2d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
// Helpers.
const MAP_LOOKUP_ELEM: i32 = 1;
const KTIME_GET_NS: i32 = 5;
const SPIN_LOCK: i32 = 93;
const SPIN_UNLOCK: i32 = 94;

/// The value: a `u32` (the lock, or padding), then `tat` at this offset.
const TAT: i16 = 8;
const VALUE_SIZE: u32 = 16;
/// Nanoseconds a packet costs, and the depth: 10^9 packets/s, 1 s deep.
const INTERVAL: i32 = 1;
const DEPTH: i32 = 1_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ReadOnly,
    Cas,
    SpinLock,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::ReadOnly => "read only (clock, lookup, GCRA step; no write)",
            Kind::Cas => "CAS (cmpxchg the new tat, up to 8 tries)",
            Kind::SpinLock => "spin lock (bpf_spin_lock, store, unlock)",
        }
    }
}

/// The program of `kind` on `map`'s value 0, returning `XDP_PASS`.
fn program(kind: Kind, map: &RawMap) -> Vec<Insn> {
    let i = Insn::new;
    let mut p = vec![
        i(CALL, 0, 0, 0, KTIME_GET_NS),
        i(MOV_X, 7, 0, 0, 0),  // r7 = now
        i(ST_W, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0: the key
        i(MOV_X, 2, 10, 0, 0), // r2 = r10
        i(ADD_K, 2, 0, 0, -4), // r2 += -4
    ];
    p.extend(Insn::ld_map(1, map)); // r1 = map
    p.push(i(CALL, 0, 0, 0, MAP_LOOKUP_ELEM));
    // Jumps to the end, their offsets set once it is known.
    let mut to_end = vec![p.len()];
    p.push(i(JEQ_K, 0, 0, 0, 0)); // if r0 == 0 goto end
    p.push(i(MOV_X, 8, 0, 0, 0)); // r8 = the value
    // r1 = tat, r2 = max(tat, now) + interval, r3 = r2 - now (how far ahead the bucket is).
    let step = [
        i(LDX_DW, 1, 8, TAT, 0),
        i(MOV_X, 2, 1, 0, 0),
        i(JGT_X, 2, 7, 1, 0), // if r2 > now goto +1
        i(MOV_X, 2, 7, 0, 0),
        i(ADD_K, 2, 0, 0, INTERVAL),
        i(MOV_X, 3, 2, 0, 0),
        i(SUB_X, 3, 7, 0, 0),
    ];
    match kind {
        Kind::ReadOnly => p.extend(step),
        Kind::Cas => {
            for _ in 0..CAS_TRIES {
                p.extend(step);
                to_end.push(p.len());
                p.push(i(JGT_K, 3, 0, 0, DEPTH)); // refused: nothing to write
                p.push(i(MOV_X, 0, 1, 0, 0)); // r0 = tat as read
                p.push(i(ATOMIC_DW, 8, 2, TAT, CMPXCHG)); // r0 = cmpxchg(&tat, r0, r2)
                to_end.push(p.len());
                p.push(i(JEQ_X, 0, 1, 0, 0)); // won: done
            }
        }
        Kind::SpinLock => {
            // No helper call may run while the lock is held: the clock was read before.
            p.push(i(MOV_X, 1, 8, 0, 0));
            p.push(i(CALL, 0, 0, 0, SPIN_LOCK));
            p.extend(step);
            p.push(i(JGT_K, 3, 0, 1, DEPTH)); // refused: skip the store
            p.push(i(STX_DW, 8, 2, TAT, 0));
            p.push(i(MOV_X, 1, 8, 0, 0));
            p.push(i(CALL, 0, 0, 0, SPIN_UNLOCK));
        }
    }
    let end = p.len();
    for j in to_end {
        p[j].off = i16::try_from(end - j - 1).expect("short programs");
    }
    #[expect(clippy::cast_possible_wrap, reason = "XDP actions are small")]
    p.push(i(MOV_K, 0, 0, 0, XDP_PASS as i32));
    p.push(i(EXIT, 0, 0, 0, 0));
    p
}

/// BTF for the spin-lock map: `int` key, value `struct bucket { struct bpf_spin_lock lock;
/// u64 tat; }` (the kernel finds the lock by its struct's name and size). Type ids: 1 the key,
/// 4 the value.
fn spin_lock_btf() -> Vec<u8> {
    const KIND_INT: u32 = 1;
    const KIND_STRUCT: u32 = 4;
    const INT_SIGNED: u32 = 1;
    let mut strings = vec![0u8];
    let mut name = |s: &str| {
        let off = u32::try_from(strings.len()).expect("a few names");
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let types: Vec<u32> = vec![
        // [1] int: name, info (kind), size; encoding, offset and bits.
        name("int"),
        KIND_INT << 24,
        4,
        INT_SIGNED << 24 | 32,
        // [2] struct bpf_spin_lock { int val; }: members are name, type, bit offset.
        name("bpf_spin_lock"),
        KIND_STRUCT << 24 | 1,
        4,
        name("val"),
        1,
        0,
        // [3] u64.
        name("u64"),
        KIND_INT << 24,
        8,
        64,
        // [4] struct bucket { struct bpf_spin_lock lock; u64 tat; }.
        name("bucket"),
        KIND_STRUCT << 24 | 2,
        VALUE_SIZE,
        name("lock"),
        2,
        0,
        name("tat"),
        3,
        u32::try_from(TAT).expect("positive") * 8,
    ];
    let types: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let type_len = u32::try_from(types.len()).expect("small");
    let str_len = u32::try_from(strings.len()).expect("small");
    // struct btf_header: magic, version, flags, hdr_len, then the sections' offsets and lengths.
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9f_u16.to_ne_bytes());
    blob.extend_from_slice(&[1, 0]);
    for w in [24, 0, type_len, type_len, str_len] {
        blob.extend_from_slice(&u32::to_ne_bytes(w));
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(&strings);
    blob
}

/// The three programs and their maps (a map each: the CAS and read-only ones plain arrays).
struct Programs {
    _maps: Vec<RawMap>,
    progs: Vec<(Kind, RawProgram)>,
}

impl Programs {
    fn load() -> anyhow::Result<Self> {
        let btf = RawMap::load_btf(&spin_lock_btf()).context("load the spin-lock value's BTF")?;
        let mut maps = Vec::new();
        let mut progs = Vec::new();
        for (kind, name) in [
            (Kind::ReadOnly, "bnd_alt_read"),
            (Kind::Cas, "bnd_alt_cas"),
            (Kind::SpinLock, "bnd_alt_lock"),
        ] {
            let map = if kind == Kind::SpinLock {
                RawMap::array(name, VALUE_SIZE, Some((&btf, 1, 4)))
            } else {
                RawMap::array(name, VALUE_SIZE, None)
            }
            .with_context(|| format!("create the map of {name}"))?;
            let prog = RawProgram::xdp(&program(kind, &map), name)
                .with_context(|| format!("load {name}"))?;
            maps.push(map);
            progs.push((kind, prog));
        }
        Ok(Self { _maps: maps, progs })
    }
}

/// `repeat` runs of `frame` on CPU 0 alone, then on CPUs 0 and 1 at once: ns per run.
fn both_ways(t: &(dyn Target + Sync), frame: &[u8], plan: &Plan) -> anyhow::Result<[f64; 2]> {
    let check = |ret: u32| {
        anyhow::ensure!(ret == XDP_PASS, "expected XDP_PASS, got {ret}");
        Ok(())
    };
    let one = std::thread::scope(|s| {
        s.spawn(|| {
            let _pin = CpuPin::to(0)?;
            let out = t.run(frame, plan.repeat)?;
            check(out.retval)?;
            Ok::<_, anyhow::Error>(out.per_run.as_secs_f64() * 1e9)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread panicked"))?
    })?;
    let both = on_both_cpus(|_| {
        let out = t.run(frame, plan.repeat)?;
        check(out.retval)?;
        Ok(out.per_run.as_secs_f64() * 1e9)
    })?;
    Ok([one, f64::midpoint(both[0], both[1])])
}

fn paired(a: &Samples, b: &Samples) -> (f64, f64) {
    let d = Samples(a.0.iter().zip(&b.0).map(|(x, y)| x - y).collect());
    (d.median(), d.spread())
}

pub fn run(floor: &RawProgram, frame: &[u8], plan: &Plan) -> anyhow::Result<Vec<AltRow>> {
    let p = Programs::load()?;
    // Per program (the floor first): CPU 0 alone, both CPUs.
    let mut s = vec![[Samples::default(), Samples::default()]; p.progs.len() + 1];
    for round in 0..plan.runs {
        progress::tick(&format!(
            "rate limits: spin lock and CAS apart, round {}/{}",
            round + 1,
            plan.runs
        ));
        let targets = std::iter::once(floor as &(dyn Target + Sync))
            .chain(p.progs.iter().map(|(_, prog)| prog as &(dyn Target + Sync)));
        for (k, t) in targets.enumerate() {
            let [one, both] = both_ways(t, frame, plan)?;
            s[k][0].0.push(one);
            s[k][1].0.push(both);
        }
    }
    Ok(p.progs
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| {
            let k = i + 1;
            let net = |w: usize| paired(&s[k][w], &s[0][w]);
            let over_read = |w: usize| paired(&s[k][w], &s[1][w]);
            AltRow {
                what: kind.label(),
                net: [net(0), net(1)],
                added: (*kind != Kind::ReadOnly).then(|| [over_read(0), over_read(1)]),
            }
        })
        .collect())
}
