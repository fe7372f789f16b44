//! Step 2: the peer. xdp-filter (xdp-tools) loaded by its own CLI on a veth in a namespace of
//! ours, with the exact bindings of Boundary's key space as an allowlist of source addresses,
//! then timed exactly like Boundary: raw `BPF_PROG_TEST_RUN` on its program, opened by id.
//!
//! How it is loaded, and why:
//! - `-p deny -f ipv4,ipv6`: an allowlist of addresses and nothing else (program
//!   `xdpfilt_dny_ip`). It looks the destination up, then the source: a listed source passes
//!   after two hash lookups (Boundary's exact-identity allow takes three: the local workload,
//!   the peer's identity, the rule), anything else is dropped after the same two. Per-CPU
//!   statistics, as Boundary has.
//! - `LIBXDP_SKIP_DISPATCHER=1`: libxdp would otherwise attach a dispatcher and load
//!   xdp-filter as an `freplace` extension, which `BPF_PROG_TEST_RUN` cannot run on its own;
//!   without it xdp-filter is a plain XDP program, as Boundary's is, and pays no dispatcher.
//! - In a private mount namespace with its own bpffs: xdp-filter pins its maps under the fixed
//!   path /sys/fs/bpf/xdp-filter, which could belong to a real deployment on this host. The
//!   private bpffs (and every pin in it) disappears when the loader exits; the program stays
//!   attached, and the harness reaches it and its maps by id. Deleting the namespace detaches
//!   it, and closing our descriptors frees it.

use std::{net::IpAddr, process::Command};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::{Map, MapData, PerCpuHashMap, PerCpuValues},
    programs::loaded_programs,
};
use boundary_tests::NetNs;

use super::{
    Plan,
    env::{self, veth},
    paths::{self, Family, KeySpace, Keys, Kind, SplitMix, set_addr},
    per_packet::value,
    progress,
    results::{PacketRow, ProgramRow, SIZES, Value},
    sys::{RawProgram, XDP_DROP, XDP_PASS},
    testrun,
};

/// xdp-filter's map value flag for "match as source" (`common_kern_user.h`).
const MAP_FLAG_SRC: u64 = 1;

pub struct Peer {
    pub rows: Vec<PacketRow>,
    /// Its maps full (its capacity per family): hot and first packet, one value each.
    pub full: Vec<PacketRow>,
    pub program: ProgramRow,
    pub note: String,
}

struct Loaded {
    prog: RawProgram,
    name: String,
    verified_insns: Option<u32>,
    jited_bytes: u32,
    v4: PerCpuHashMap<MapData, u32, u64>,
    v6: PerCpuHashMap<MapData, [u8; 16], u64>,
    capacity: u32,
    // Declared last: dropped after the descriptors above.
    _ns: NetNs,
}

fn load() -> anyhow::Result<Loaded> {
    let ns = NetNs::new("bnd-bench-xf");
    veth(
        &ns,
        "xf0",
        "02:00:00:00:0f:01",
        &ns,
        "xf1",
        "02:00:00:00:0f:02",
    );
    env::run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount -t bpf bpf /sys/fs/bpf && \
                 exec nsenter --net=\"$1\" -- xdp-filter load -p deny -f ipv4,ipv6 xf0",
            )
            .arg("sh")
            .arg(ns.path())
            .env("LIBXDP_SKIP_DISPATCHER", "1"),
    )
    .context("xdp-filter load (package xdp-tools)")?;

    let out = env::run(Command::new("ip").args(["-j", "-n", ns.name(), "link", "show", "xf0"]))?;
    let link: serde_json::Value = serde_json::from_str(&out).context("parse ip -j")?;
    let id = link[0]["xdp"]["prog"]["id"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("xdp-filter attached no program to xf0: {out}"))?;
    let prog = RawProgram::from_id(id).context("open xdp-filter's program by id")?;

    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .context("xdp-filter's program is not listed")?;
    let name = info.name_as_str().unwrap_or("?").to_owned();
    let mut v4 = None;
    let mut v6 = None;
    let mut capacity = 0;
    for map_id in info.map_ids()?.unwrap_or_default() {
        let data = MapData::from_id(map_id)?;
        let map_info = data.info()?;
        match map_info.name_as_str() {
            Some("filter_ipv4") => {
                capacity = map_info.max_entries();
                v4 = Some(PerCpuHashMap::try_from(Map::from_map_data(data)?)?);
            }
            Some("filter_ipv6") => {
                v6 = Some(PerCpuHashMap::try_from(Map::from_map_data(data)?)?);
            }
            _ => {}
        }
    }
    let (Some(v4), Some(v6)) = (v4, v6) else {
        bail!("{name} has no filter_ipv4/filter_ipv6 maps");
    };
    Ok(Loaded {
        prog,
        name,
        verified_insns: info.verified_instruction_count(),
        jited_bytes: info.size_jitted(),
        v4,
        v6,
        capacity,
        _ns: ns,
    })
}

/// Lists every exact binding of the key space as an allowed source (Boundary's identity map
/// holds the same addresses; xdp-filter has no deny entries, its deny is "not listed").
fn fill(l: &mut Loaded, space: KeySpace) -> anyhow::Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    let flags = || PerCpuValues::try_from(vec![MAP_FLAG_SRC; cpus.get() as usize]);
    for j in 0..space.per_family() {
        match KeySpace::exact(Family::V4, j) {
            IpAddr::V4(a) => l.v4.insert(&u32::from_ne_bytes(a.octets()), flags()?, 0)?,
            IpAddr::V6(_) => unreachable!("an IPv4 binding"),
        }
        match KeySpace::exact(Family::V6, j) {
            IpAddr::V6(a) => l.v6.insert(&a.octets(), flags()?, 0)?,
            IpAddr::V4(_) => unreachable!("an IPv6 binding"),
        }
    }
    Ok(())
}

/// One row at one size: hot, and first packets (single-run calls, a fresh key each).
#[expect(
    clippy::too_many_arguments,
    reason = "the step's state, passed down once"
)]
fn measure(
    l: &Loaded,
    plan: &Plan,
    floor: &RawProgram,
    space: KeySpace,
    def: &paths::PathDef,
    keys: Keys,
    action: u32,
    rng: &mut SplitMix,
) -> anyhow::Result<(Value, Value)> {
    let Kind::Measured { build, .. } = &def.kind else {
        bail!("the exact-allow rows are measured");
    };
    let family: Family = def.family;
    let frame = build(space.hot(keys, family));
    let hot = testrun::hot(&l.prog, floor, &frame, action, None, plan)?;
    let off = keys
        .offset(family)
        .context("these rows carry a peer address")?;
    let mut rekey = |f: &mut [u8]| {
        let a: IpAddr = space.pick(keys, family, rng.next_u64());
        set_addr(f, off, a);
    };
    let cell = testrun::random(&l.prog, floor, &frame, &mut rekey, action, plan)?;
    Ok((value(&hot), value(&cell)))
}

pub fn run(plan: &Plan, floor: &RawProgram) -> anyhow::Result<Peer> {
    progress::step("xdp-filter: loading it on a veth in a namespace of ours");
    let mut l = load()?;
    let version =
        env::run(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "xdp-tools"]))
            .unwrap_or_else(|_| "?".into());
    progress::note(&format!(
        "{} (xdp-tools {version}), program id-opened, {} entries per family at most",
        l.name, l.capacity
    ));
    let builders: Vec<_> = paths::all()
        .into_iter()
        .filter(|d| d.name == paths::EXACT_ALLOW)
        .collect();
    let cases = [
        ("allow (src in allowlist)", Keys::Exact, XDP_PASS, "pass"),
        (
            "deny (src not listed, default deny)",
            Keys::Cidr,
            XDP_DROP,
            "drop",
        ),
    ];
    let mut rows = Vec::new();
    for (name, keys, action, verdict) in cases {
        for def in &builders {
            rows.push((
                def,
                keys,
                action,
                PacketRow {
                    subject: "xdp-filter",
                    path: format!("xdp-filter: {name}"),
                    family: def.family.label(),
                    verdict: verdict.into(),
                    // Counted from its code: the destination, then the source.
                    lookups: "2".into(),
                    hot: Vec::new(),
                    random: Vec::new(),
                },
            ));
        }
    }
    let mut rng = SplitMix::new(0x00f1_17e5);
    let mut filled = false;
    for (entries, label) in SIZES {
        let space = KeySpace { entries };
        if space.per_family() > l.capacity as usize {
            for (_, _, _, row) in &mut rows {
                let na = format!("n/a: capacity {}", l.capacity);
                row.hot.push(Value::Na(na.clone()));
                row.random.push(Value::Na(na));
            }
            continue;
        }
        ensure!(
            !filled,
            "xdp-filter is filled once, at the one size that fits"
        );
        fill(&mut l, space)?;
        filled = true;
        for (def, keys, action, row) in &mut rows {
            progress::tick(&format!("xdp-filter {label}: {} {}", row.path, row.family));
            let (hot, first) = measure(&l, plan, floor, space, def, *keys, *action, &mut rng)?;
            row.hot.push(hot);
            row.random.push(first);
        }
        progress::done();
    }
    // Its largest size: every map full. Boundary's first packets at scale are compared with
    // these.
    let space = KeySpace {
        entries: 2 * l.capacity as usize,
    };
    fill(&mut l, space)?;
    let mut full = Vec::new();
    for (def, keys, action, row) in &rows {
        let name = format!("{}, maps full ({} per family)", row.path, l.capacity);
        progress::tick(&format!("xdp-filter: {name} {}", row.family));
        let (hot, first) = measure(&l, plan, floor, space, def, *keys, *action, &mut rng)?;
        full.push(PacketRow {
            path: name,
            hot: vec![hot],
            random: vec![first],
            ..row.clone()
        });
    }
    progress::done();
    Ok(Peer {
        rows: rows.into_iter().map(|(_, _, _, r)| r).collect(),
        full,
        program: ProgramRow {
            program: format!("{} (xdp-filter)", l.name),
            verified_insns: l.verified_insns,
            jited_bytes: l.jited_bytes,
        },
        note: format!(
            "xdp-filter {version} as `xdp-filter load -p deny -f ipv4,ipv6` (program {}), no dispatcher; \
             its maps hold {} addresses per family, so 100k and 1M are n/a; measured again with its maps full",
            l.name, l.capacity
        ),
    })
}
