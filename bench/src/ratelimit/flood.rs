//! A spoofed-source flood at a `per: source` rule, on the flood step's veth and generator
//! (`crate::flood`): live frames from an `XDP_TX` program that writes a new random source in
//! 10.0.0.0/8 into every frame (2^24 sources, far more than the rule's `maxSources` of
//! 65,536), one pinned core, Boundary's XDP program attached natively to the receiving end.
//!
//! Two per-source rules, alike but for the ceiling ([`LIMIT`], [`LIMIT_NO_CEILING`]): 10
//! packets/s per source with a burst of 10, in an LRU map of 65,536 sources.
//!
//! - **With the ceiling** (1,000/s, burst 1,000): the datapath pays the ceiling first
//!   (`boundary-ebpf/src/ratelimit.rs`, `admit`). A flood spends it within its first
//!   microseconds; from then on a frame is refused by the ceiling before its source's bucket
//!   is looked up or made: no insert, no eviction. Only the frames the ceiling lets through
//!   (its burst and 1,000 a second) reach the source table, so it takes in a few thousand
//!   sources and evicts none: that is the ceiling working, and the figure is the drop rate.
//! - **Without a ceiling**: every frame is a source the map has not seen (or has forgotten):
//!   inserted with a full bucket (the least recently used evicted once the map is full) and
//!   admitted by it. The figures are the evictions per second (`Maps::peer_counts`: inserts -
//!   entries held at the end, over the flood's duration) and how little is dropped: what a
//!   table washed by spoofed sources looks like, and why the ceiling exists. Admitted frames
//!   go on to the receiving namespace's stack (which has no address for them and drops
//!   them), so this row's time per frame includes that.
//!
//! Beside them, the same rule denying instead (`action: deny`) and the generator alone.

use anyhow::Context as _;
use aya::programs::xdp::XdpMode;
use boundary_agent::{
    datapath::Datapath,
    policy::{self, Policy, SlotTable, Tables},
};
use boundary_common::{Reason, maps::Action};
use boundary_tests::packets::{self, L4};

use super::bucket_index;
use crate::{
    Plan,
    env::InNetNs,
    flood::{self, DENIED, Lab},
    paths::CLIENT4,
    progress,
    results::{FloodRow, PeerFlood, SourceFlood},
    sys::{RawProgram, XDP_DROP, XDP_TX},
};

pub const LIMIT: &str = "{ packetsPerSecond: 10, burst: 10, per: source, maxSources: 65536, ceiling: { packetsPerSecond: 1000, burst: 1000 } }";
pub const LIMIT_NO_CEILING: &str =
    "{ packetsPerSecond: 10, burst: 10, per: source, maxSources: 65536 }";

fn policy(action: &str) -> String {
    format!(
        "apiVersion: boundary.dev/v1
workloads:
  - name: closed
    addresses: [{DENIED}]
    ingress:
      - name: dns
        from: {{ cidr: 10.0.0.0/8 }}
        ports: [\"53/udp\"]
        {action}
"
    )
}

/// Boundary's XDP program under `yaml`, attached to `fr0` for `f` (detached when it returns).
fn attached<T>(
    lab: &Lab,
    yaml: &str,
    f: impl FnOnce(&Datapath, &Tables, u16) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut dp = Datapath::load_unpinned(8)?;
    let policy = Policy::from_str("source-flood.yaml", yaml)?;
    let tables = policy::compile(&policy, &SlotTable::new(), 8)?;
    let slot = *tables.names.keys().next().context("one workload")?;
    dp.apply(&tables, Action::Pass)?;
    {
        let _in = InNetNs::enter(&lab.rx_ns)?;
        dp.xdp()
            .attach(c"fr0", XdpMode::Driver)
            .context("attach Boundary's XDP program to fr0 (native)")?;
    }
    f(&dp, &tables, slot)
}

fn counted(dp: &Datapath, slot: u16, reason: Reason) -> anyhow::Result<u64> {
    let row = dp.maps().counter_row(slot, 0)?;
    Ok(row.counters[usize::from(reason.code())].packets)
}

/// The flood against the per-source rule limited by `limit`.
fn limited(
    lab: &Lab,
    tx: &RawProgram,
    frame: &[u8],
    plan: &Plan,
    limit: &'static str,
    config: &str,
    gen_ns: Option<f64>,
) -> anyhow::Result<PeerFlood> {
    attached(
        lab,
        &policy(&format!("rateLimit: {limit}")),
        |dp, tables, slot| {
            let index = bucket_index(tables, "dns")?;
            let allowed_before = counted(dp, slot, Reason::PolicyAllow)?;
            let row: FloodRow = flood::measure(lab, tx, frame, plan, config, gen_ns, &mut || {
                counted(dp, slot, Reason::RateLimited).map(Some)
            })?;
            let (inserts, live) = dp.maps().peer_counts(index)?;
            let passed = counted(dp, slot, Reason::PolicyAllow)? - allowed_before;
            #[expect(clippy::cast_precision_loss, reason = "frame counts are small")]
            let secs = row.frames as f64 * row.ns_per_frame / 1e9;
            Ok(PeerFlood {
                limit,
                row,
                inserts,
                live,
                passed,
                secs,
            })
        },
    )
}

pub fn run(plan: &Plan) -> anyhow::Result<SourceFlood> {
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
    let kind = "spoofed sources";
    progress::tick("rate limits: spoofed flood, generator alone");
    let gen_drop = RawProgram::xdp_spoofing(XDP_DROP, "bnd_bench_gdrop")?;
    let alone = flood::measure(
        &lab,
        &gen_drop,
        &frame,
        plan,
        &format!("generator alone, {kind}"),
        None,
        &mut || Ok(None),
    )?;
    let tx = RawProgram::xdp_spoofing(XDP_TX, "bnd_bench_gen")?;
    let gen_ns = Some(alone.ns_per_frame);
    progress::tick("rate limits: spoofed flood, the rule denying");
    let deny = attached(&lab, &policy("action: deny"), |dp, _, slot| {
        flood::measure(
            &lab,
            &tx,
            &frame,
            plan,
            &format!("Boundary XDP, the rule denying, {kind}"),
            gen_ns,
            &mut || counted(dp, slot, Reason::PolicyDeny).map(Some),
        )
    })?;
    progress::tick("rate limits: spoofed flood, per source with a ceiling");
    let ceiling = limited(
        &lab,
        &tx,
        &frame,
        plan,
        LIMIT,
        &format!("Boundary XDP, per source with a ceiling, {kind}"),
        gen_ns,
    )?;
    progress::tick("rate limits: spoofed flood, per source without a ceiling");
    let no_ceiling = limited(
        &lab,
        &tx,
        &frame,
        plan,
        LIMIT_NO_CEILING,
        &format!("Boundary XDP, per source, no ceiling, {kind}"),
        gen_ns,
    )?;
    Ok(SourceFlood {
        rows: vec![alone, deny],
        limited: vec![ceiling, no_ceiling],
    })
}
