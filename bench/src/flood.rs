//! Step 3: a denied flood on a veth, dropped by Boundary's XDP program against nftables.
//!
//! The generator is `BPF_PROG_TEST_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`) on
//! a two-instruction program returning `XDP_TX`, run from a thread inside the generator
//! namespace with `fg0` as its ingress interface: every repetition really transmits one
//! 64-byte UDP frame out of `fg0`, whose veth peer `fr0` sits in the receiver namespace. Only
//! these two namespaces, made here, ever see a frame.
//!
//! Why this measures per-core drop cost: the veth transmit queues the frame on `fr0`'s NAPI
//! ring and schedules its poll on the sending CPU; the kernel runs that poll when the
//! generator's batch re-enables bottom halves, inside the timed region, on the same pinned
//! CPU. The kernel-reported time per frame therefore covers generating, transmitting,
//! receiving and dropping one frame on one core. The generator's own share is measured apart
//! (the same program returning `XDP_DROP`: nothing leaves) and subtracted; what is left is
//! the receiving side's cost per frame, and 1/cost is its packets per second per core.
//!
//! Two floods: **one flow** (the same frame again and again: after its first frame, Boundary
//! answers it from the verdict cache) and **spoofed sources**, as attackers send them: the
//! generator writes a random source address in 10.0.0.0/8 into every frame it sends
//! (`RawProgram::xdp_spoofing`), so no cache can help; Boundary drops them by its default deny
//! (no rule is about those sources). Each has its own generator-alone row, and the ratio
//! against nftables is given end to end (generator included) and receive side (generator
//! subtracted).
//!
//! **At scale** (issue #15): two more spoofed-source floods against the per-packet tables of
//! 100k CIDR identities (`kernel::tables_for`, single-length set: 50,000 IPv4 /28s, half
//! allowed and half denied on 8443/udp, and 50,000 exact bindings; as many IPv6), sent to the
//! workload's port 8443/udp: sources drawn among the **deny-rule prefixes** (dropped by an
//! explicit deny rule after the CIDR identity lookup), and sources in **no prefix** (10.64.0.0/14:
//! the identity lookups miss, dropped by the default deny). nftables holds the same prefixes in
//! interval sets (`flags interval`, deny / allow sets and the bound addresses, both families)
//! at netdev ingress, with the policy's meaning: deny set dropped, allow and bound sets
//! accepted on 8443/udp, SSH accepted, everything else to the workload dropped.
//!
//! Configurations on `fr0`: an XDP program that drops everything (the floor of any XDP drop on
//! veth), Boundary's XDP program (an explicit deny rule of the workload that owns the flood's
//! destination drops it: identity by CIDR, policy lookup, failsafe and conntrack checks, drop
//! event sampling, the whole denied path), and nftables dropping the same destination at its earliest hook, netdev
//! ingress on `fr0` (with GRO on, which is what gives a veth without XDP the NAPI ring
//! that live frames need; without XDP the frame is turned into an skb first).

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::programs::xdp::XdpMode;
use boundary_agent::{
    datapath::Datapath,
    policy::{self, Policy, SlotTable},
};
use boundary_common::{Reason, maps::Action};
use boundary_tests::{
    NetNs,
    packets::{self, L4, MAC_CLIENT, MAC_SERVER},
};

use super::{
    Plan,
    env::{self, CpuPin, InNetNs, in_ns, veth},
    paths::CLIENT4,
    progress,
    results::{Flood, FloodRatio, FloodRow},
    sys::{self, BPF_F_TEST_XDP_LIVE_FRAMES, RawProgram, TestRunExtra, XDP_DROP, XDP_TX, XdpMd},
    testrun::Samples,
};

/// The flood's destination, owned by a workload whose policy denies the flood's source by an
/// explicit rule (`policy_deny`).
pub const DENIED: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 203, 0, 3);
const POLICY: &str = "\
apiVersion: boundary.dev/v1
workloads:
  - name: closed
    addresses: [10.203.0.3]
    ingress:
      - from: { cidr: 10.203.0.0/24 }
        ports: [\"53/udp\"]
        action: deny
";
/// Frames per live-frames batch (the kernel's default and NAPI's weight).
const BATCH: u32 = 64;
/// The nftables table, inside the receiver namespace.
const NFT_TABLE: &str = "bnd_bench_flood";

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generator's namespace and veth end (`fg0`), and the receiver's (`fr0`).
pub struct Lab {
    pub gen_ns: NetNs,
    pub rx_ns: NetNs,
    pub fg0: u32,
    pub fr0: u32,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        let gen_ns = NetNs::new("bnd-bench-fg");
        let rx_ns = NetNs::new("bnd-bench-fr");
        veth(
            &gen_ns,
            "fg0",
            &mac(MAC_CLIENT),
            &rx_ns,
            "fr0",
            &mac(MAC_SERVER),
        );
        let fg0 = env::ifindex(&gen_ns, "fg0")?;
        let fr0 = env::ifindex(&rx_ns, "fr0")?;
        Ok(Self {
            gen_ns,
            rx_ns,
            fg0,
            fr0,
        })
    }

    /// A `veth` counter of `fr0` (`ethtool -S`).
    fn fr0_stat(&self, name: &str) -> anyhow::Result<u64> {
        let out = env::run(in_ns(&self.rx_ns, "ethtool").args(["-S", "fr0"]))?;
        out.lines()
            .find_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                (k == name).then(|| v.trim().parse().ok())?
            })
            .with_context(|| format!("no {name} in ethtool -S fr0"))
    }
}

/// Transmits `frames` copies of `frame` out of interface `ifindex` with the `XDP_TX`
/// program `tx` (live frames); the calling thread must be in the interface's namespace.
/// Returns the kernel's time per frame.
pub fn live_frames(
    tx: &RawProgram,
    ifindex: u32,
    frame: &[u8],
    frames: u32,
) -> anyhow::Result<std::time::Duration> {
    let ctx = XdpMd {
        data_end: u32::try_from(frame.len()).expect("small"),
        ingress_ifindex: ifindex,
        ..XdpMd::default()
    };
    let out = sys::test_run(
        tx.as_fd(),
        frame,
        frames,
        TestRunExtra {
            ctx: Some(ctx),
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: BATCH,
        },
    )
    .context("live-frames BPF_PROG_TEST_RUN")?;
    Ok(out.per_run)
}

/// Sends `frames` copies of `frame` from the generator namespace on a pinned CPU; returns the
/// kernel's time per frame in nanoseconds.
fn generate(lab: &Lab, prog: &RawProgram, frame: &[u8], frames: u32) -> anyhow::Result<f64> {
    let _home = InNetNs::enter(&lab.gen_ns)?;
    let _cpu = CpuPin::last_allowed()?;
    Ok(live_frames(prog, lab.fg0, frame, frames)?.as_secs_f64() * 1e9)
}

/// Runs the generator `plan.runs` times; `dropped` reads the receiver's drop count.
pub fn measure(
    lab: &Lab,
    prog: &RawProgram,
    frame: &[u8],
    plan: &Plan,
    config: &str,
    gen_ns: Option<f64>,
    dropped: &mut dyn FnMut() -> anyhow::Result<Option<u64>>,
) -> anyhow::Result<FloodRow> {
    progress::tick(&format!("flood: {config}"));
    let before = dropped()?;
    let mut samples = Samples::default();
    for _ in 0..plan.runs {
        samples
            .0
            .push(generate(lab, prog, frame, plan.flood_frames)?);
    }
    let after = dropped()?;
    let ns_per_frame = samples.median();
    Ok(FloodRow {
        config: config.into(),
        ns_per_frame,
        spread: samples.spread(),
        rx_ns: gen_ns.map(|g| ns_per_frame - g),
        frames: u64::from(plan.flood_frames) * plan.runs as u64,
        dropped: before.zip(after).map(|(b, a)| a - b),
    })
}

/// nftables' table, deleted on drop (the namespace would take it along, but a failed step
/// should not leave it in place for the rest of the run either).
struct NftTable<'a> {
    ns: &'a NetNs,
}

impl<'a> NftTable<'a> {
    /// The one-rule table of the first two floods.
    fn create(ns: &'a NetNs) -> anyhow::Result<Self> {
        Self::load(
            ns,
            &format!(
                "table netdev {NFT_TABLE} {{\n\
                   chain flood {{\n\
                     type filter hook ingress device \"fr0\" priority -500; policy accept;\n\
                     ip daddr {DENIED} counter drop\n\
                   }}\n\
                 }}\n"
            ),
        )
    }

    /// `rules` (a whole `nft -f` file defining table `NFT_TABLE`).
    fn load(ns: &'a NetNs, rules: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(boundary_tests::netns::unique_name("bnd-bench-nft"));
        std::fs::write(&path, rules)?;
        let res = env::run(in_ns(ns, "nft").arg("-f").arg(&path));
        let _ = std::fs::remove_file(&path);
        res.context("nft -f (package nftables)")?;
        Ok(Self { ns })
    }

    /// Packets counted by every counter of the table's rules (each counts a drop).
    fn dropped(&self) -> anyhow::Result<u64> {
        let out =
            env::run(in_ns(self.ns, "nft").args(["-j", "list", "table", "netdev", NFT_TABLE]))?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parse nft -j")?;
        let counts: Vec<u64> = v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .filter_map(|e| e["counter"]["packets"].as_u64())
            .collect();
        anyhow::ensure!(!counts.is_empty(), "no counter in the nft rules");
        Ok(counts.iter().sum())
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let ok = in_ns(self.ns, "nft")
            .args(["delete", "table", "netdev", NFT_TABLE])
            .status()
            .is_ok_and(|s| s.success());
        if !ok && !std::thread::panicking() {
            eprintln!("warning: could not delete nft table {NFT_TABLE}");
        }
    }
}

/// What every configuration shares: the lab, the frame, the generator and its own cost.
struct Flooder<'a> {
    lab: &'a Lab,
    frame: Vec<u8>,
    tx: RawProgram,
    gen_ns: f64,
    plan: &'a Plan,
    /// "one flow" or "spoofed sources", appended to every configuration's name.
    kind: &'static str,
}

impl Flooder<'_> {
    fn measure(
        &self,
        config: &str,
        dropped: &mut dyn FnMut() -> anyhow::Result<Option<u64>>,
    ) -> anyhow::Result<FloodRow> {
        measure(
            self.lab,
            &self.tx,
            &self.frame,
            self.plan,
            &format!("{config}, {}", self.kind),
            Some(self.gen_ns),
            dropped,
        )
    }

    /// An XDP program on fr0 that drops everything: the floor of any XDP drop on a veth.
    fn drop_all(&self) -> anyhow::Result<FloodRow> {
        let drop_all = RawProgram::xdp_returning(XDP_DROP, "bnd_bench_drop")?;
        let _link = {
            let _in = InNetNs::enter(&self.lab.rx_ns)?;
            drop_all
                .attach_xdp_native(self.lab.fr0)
                .context("attach the drop-all program to fr0 (native)")?
        };
        self.measure("XDP drop-all (floor)", &mut || {
            self.lab.fr0_stat("rx_queue_0_xdp_drops").map(Some)
        })
    }

    /// Boundary's XDP program, the flood denied by a rule of the workload it is sent to.
    fn boundary(&self) -> anyhow::Result<FloodRow> {
        let mut dp = Datapath::load_unpinned(8)?;
        let policy = Policy::from_str("flood-policy.yaml", POLICY)?;
        let compiled = policy::compile(&policy, &SlotTable::new(), 8)?;
        let slot = *compiled.names.keys().next().context("one workload")?;
        dp.apply(&compiled, Action::Pass)?;
        {
            let _in = InNetNs::enter(&self.lab.rx_ns)?;
            dp.xdp()
                .attach(c"fr0", XdpMode::Driver)
                .context("attach Boundary's XDP program to fr0 (native)")?;
        }
        let maps = dp.maps();
        // Dropping `dp` at the end detaches its XDP link. One flow is dropped by the deny
        // rule, spoofed sources (almost all outside its /24) by the default deny.
        self.measure("Boundary XDP", &mut || {
            let row = maps.counter_row(slot, 0)?;
            Ok(Some(
                [Reason::PolicyDeny, Reason::DefaultDeny]
                    .iter()
                    .map(|r| row.counters[usize::from(r.code())].packets)
                    .sum(),
            ))
        })
    }

    /// nftables at its earliest hook.
    fn nftables(&self) -> anyhow::Result<FloodRow> {
        env::run(in_ns(&self.lab.rx_ns, "ethtool").args(["-K", "fr0", "gro", "on"]))
            .context("ethtool -K fr0 gro on (package ethtool)")?;
        let table = NftTable::create(&self.lab.rx_ns)?;
        self.measure("nftables netdev ingress", &mut || table.dropped().map(Some))
    }
}

/// Frames a configuration did not drop itself: a sign the ring overflowed or something else
/// took them, which would make its figure meaningless.
fn shortfalls(rows: &[FloodRow]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        if let Some(d) = r.dropped {
            #[expect(clippy::cast_precision_loss, reason = "frame counts are small")]
            let share = d as f64 / r.frames as f64;
            if share < 0.99 {
                out.push(format!(
                    "{}: only {d} of {} frames were dropped by it ({:.1} %)",
                    r.config,
                    r.frames,
                    share * 100.0
                ));
            }
        }
    }
    out
}

/// One flood kind: its generator alone, then every configuration.
fn flood_kind(
    lab: &Lab,
    plan: &Plan,
    frame: &[u8],
    kind: &'static str,
    spoof: bool,
) -> anyhow::Result<(Vec<FloodRow>, FloodRatio)> {
    let program = |action: u32, name: &str| {
        if spoof {
            RawProgram::xdp_spoofing(action, name)
        } else {
            RawProgram::xdp_returning(action, name)
        }
    };
    // The generator alone: it drops its own frames, nothing is transmitted.
    let gen_drop = program(XDP_DROP, "bnd_bench_gdrop")?;
    let alone = measure(
        lab,
        &gen_drop,
        frame,
        plan,
        &format!("generator alone, {kind}"),
        None,
        &mut || Ok(None),
    )?;
    let flooder = Flooder {
        lab,
        frame: frame.to_vec(),
        tx: program(XDP_TX, "bnd_bench_gen")?,
        gen_ns: alone.ns_per_frame,
        plan,
        kind,
    };
    let rows = vec![
        alone,
        flooder.drop_all()?,
        flooder.boundary()?,
        flooder.nftables()?,
    ];
    let find = |name: &str| rows.iter().find(|r| r.config.starts_with(name));
    let (b, n) = (find("Boundary"), find("nftables"));
    let ratio = FloodRatio {
        flood: kind,
        rx: b
            .and_then(FloodRow::mpps_per_core)
            .zip(n.and_then(FloodRow::mpps_per_core))
            .map(|(b, n)| b / n),
        e2e: b
            .zip(n)
            .filter(|(b, _)| b.ns_per_frame > 0.0)
            .map(|(b, n)| n.ns_per_frame / b.ns_per_frame),
    };
    Ok((rows, ratio))
}

/// The spoofed-source floods at 100k CIDR identities (see the module doc).
mod at_scale {
    use std::{fmt::Write as _, net::Ipv4Addr};

    use anyhow::Context as _;
    use boundary_common::Reason;
    use boundary_tests::packets::{self, L4};

    use super::{Lab, NFT_TABLE, NftTable, measure};
    use crate::{
        Plan,
        env::{self, InNetNs, in_ns},
        kernel::{self, BenchDatapath, SLOTS},
        paths::{CLIENT4, CidrSet, Family, KeySpace, LOCAL4, LOCAL6, PORT_RULE, SLOT},
        results::{FloodRatio, FloodRow},
        sys::{RawProgram, XDP_DROP, XDP_TX},
    };

    pub const ENTRIES: usize = 100_000;

    #[derive(Clone, Copy)]
    pub enum Kind {
        /// Sources in the odd /28s of 10.128.0.0/13 (all CIDR identities at 100k: 50,000
        /// /28s reach 10.140.x): the deny-rule prefixes.
        DenyRule,
        /// Sources in 10.64.0.0/14: no prefix, no binding.
        NoPrefix,
    }

    impl Kind {
        pub const ALL: [Kind; 2] = [Kind::DenyRule, Kind::NoPrefix];

        fn name(self) -> &'static str {
            match self {
                Kind::DenyRule => "spoofed sources in deny-rule prefixes, 100k CIDR identities",
                Kind::NoPrefix => {
                    "spoofed sources in no prefix (default deny), 100k CIDR identities"
                }
            }
        }

        /// (base, random bits) of the generator's source addresses.
        fn sources(self) -> (Ipv4Addr, u32) {
            match self {
                // Bit 4 is the /28's index's lowest bit: set, an odd (denied) /28.
                Kind::DenyRule => (Ipv4Addr::new(10, 128, 0, 16), 0x0007_ffef),
                Kind::NoPrefix => (Ipv4Addr::new(10, 64, 0, 0), 0x0003_ffff),
            }
        }
    }

    fn space() -> KeySpace {
        KeySpace { entries: ENTRIES }
    }

    /// The per-packet tables' policy as an nftables ruleset (see the module doc).
    fn nft_rules() -> String {
        let space = space();
        let mut sets = String::new();
        for (family, ty) in [(Family::V4, "ipv4_addr"), (Family::V6, "ipv6_addr")] {
            let f = family.label();
            for (name, odd) in [("allow", false), ("deny", true)] {
                let elems: Vec<String> = (0..space.per_family())
                    .filter(|j| (j % 2 == 1) == odd)
                    .map(|j| KeySpace::cidr(family, j).to_string())
                    .collect();
                let _ = writeln!(
                    sets,
                    "  set {name}{f} {{ type {ty}; flags interval; elements = {{ {} }} }}",
                    elems.join(", ")
                );
            }
            let bound: Vec<String> = (0..space.per_family())
                .map(|j| KeySpace::exact(family, j).to_string())
                .collect();
            let _ = writeln!(
                sets,
                "  set bound{f} {{ type {ty}; elements = {{ {} }} }}",
                bound.join(", ")
            );
        }
        let mut rules = String::new();
        for (f, ip, local) in [
            ("v4", "ip", LOCAL4.to_string()),
            ("v6", "ip6", LOCAL6.to_string()),
        ] {
            let _ = write!(
                rules,
                "    {ip} daddr {local} udp dport {PORT_RULE} {ip} saddr @deny{f} counter drop\n\
                 \x20   {ip} daddr {local} udp dport {PORT_RULE} {ip} saddr @allow{f} accept\n\
                 \x20   {ip} daddr {local} udp dport {PORT_RULE} {ip} saddr @bound{f} accept\n\
                 \x20   {ip} daddr {local} tcp dport 22 accept\n\
                 \x20   {ip} daddr {local} counter drop\n"
            );
        }
        format!(
            "table netdev {NFT_TABLE} {{\n{sets}  chain flood {{\n    \
             type filter hook ingress device \"fr0\" priority -500; policy accept;\n{rules}  }}\n}}\n"
        )
    }

    /// One kind: the generator alone, Boundary with the 100k tables, nftables with the same
    /// prefixes.
    pub fn flood(
        lab: &Lab,
        plan: &Plan,
        kind: Kind,
    ) -> anyhow::Result<(Vec<FloodRow>, FloodRatio)> {
        let name = kind.name();
        let (base, bits) = kind.sources();
        let frame = packets::v4(
            CLIENT4,
            LOCAL4,
            L4::Udp {
                sport: 40_000,
                dport: PORT_RULE,
            },
            &[0; 22],
        );
        let gen_drop = RawProgram::xdp_spoofing_in(XDP_DROP, "bnd_bench_gdrop", base, bits)?;
        let alone = measure(
            lab,
            &gen_drop,
            &frame,
            plan,
            &format!("generator alone, {name}"),
            None,
            &mut || Ok(None),
        )?;
        let tx = RawProgram::xdp_spoofing_in(XDP_TX, "bnd_bench_gen", base, bits)?;
        let gen_ns = Some(alone.ns_per_frame);

        let boundary = {
            let tables = kernel::tables_for(space(), CidrSet::Uniform);
            let mut dp = BenchDatapath::load(&tables, SLOTS)?;
            dp.fill(&tables)?;
            {
                let _in = InNetNs::enter(&lab.rx_ns)?;
                dp.attach_xdp(c"fr0")?;
            }
            let maps = dp.maps();
            measure(
                lab,
                &tx,
                &frame,
                plan,
                &format!("Boundary XDP, {name}"),
                gen_ns,
                &mut || {
                    let row = maps.counter_row(SLOT, 0)?;
                    Ok(Some(
                        [Reason::PolicyDeny, Reason::DefaultDeny]
                            .iter()
                            .map(|r| row.counters[usize::from(r.code())].packets)
                            .sum(),
                    ))
                },
            )?
        };
        env::run(in_ns(&lab.rx_ns, "ethtool").args(["-K", "fr0", "gro", "on"]))
            .context("ethtool -K fr0 gro on (package ethtool)")?;
        let nft = {
            let table = NftTable::load(&lab.rx_ns, &nft_rules())
                .context("nftables with the 100k prefixes in interval sets")?;
            measure(
                lab,
                &tx,
                &frame,
                plan,
                &format!("nftables netdev ingress (interval sets), {name}"),
                gen_ns,
                &mut || table.dropped().map(Some),
            )?
        };
        let ratio = FloodRatio {
            flood: name,
            rx: boundary
                .mpps_per_core()
                .zip(nft.mpps_per_core())
                .map(|(b, n)| b / n),
            e2e: (boundary.ns_per_frame > 0.0).then(|| nft.ns_per_frame / boundary.ns_per_frame),
        };
        Ok((vec![alone, boundary, nft], ratio))
    }
}

pub fn run(plan: &Plan) -> anyhow::Result<Flood> {
    progress::step(&format!(
        "denied flood: {} live frames x {} runs per configuration, veth between two namespaces, one flow then spoofed sources",
        plan.flood_frames, plan.runs
    ));
    let lab = Lab::new()?;
    let frame = packets::v4(
        CLIENT4,
        DENIED,
        L4::Udp {
            sport: 40_000,
            dport: 53,
        },
        &[0; 22],
    );
    let (mut rows, one) = flood_kind(&lab, plan, &frame, "one flow", false)?;
    let (spoofed_rows, spoofed) = flood_kind(&lab, plan, &frame, "spoofed sources", true)?;
    rows.extend(spoofed_rows);
    let one_rx = one.rx;
    let mut ratios = vec![one, spoofed];
    for kind in at_scale::Kind::ALL {
        let (r, ratio) = at_scale::flood(&lab, plan, kind)?;
        rows.extend(r);
        ratios.push(ratio);
    }
    progress::done();
    Ok(Flood {
        note: shortfalls(&rows).join("; "),
        rows,
        boundary_over_nft: one_rx,
        ratios,
    })
}
