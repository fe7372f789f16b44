//! Step 8: kernel-side diagnostics (issue #12). The object loaded twice with one policy: with
//! logging off (`kernelLog: off`, the default) and at `debug` (every log site kept). Each
//! path is timed hot against the empty program, the floor and the two loads interleaved run
//! by run, and reported as the ratio debug / off of the net cost. Beside it, what the verifier
//! made of each load: instructions processed and the translated program's size (the log sites
//! the verifier prunes when off are not in it).
//!
//! Paths: an allowed UDP flow (the hot path: no log site is on it, so on or off should not
//! matter), and a frame with three VLAN tags (a parse limit: at `debug` its site writes a
//! record every run until aya-log's ring is full, and then tries to; nothing reads it here).

use anyhow::ensure;
use boundary_agent::{
    config::KernelLog,
    datapath::{Datapath, LoadOptions, ProgramStats},
    policy::{self, Policy, SlotTable},
};
use boundary_common::maps::Action;
use boundary_tests::packets::{self, L4};

use super::{
    Plan,
    paths::{CLIENT4, LOCAL4},
    per_packet::Floors,
    progress,
    results::{KernelLogPath, KernelLogReport},
    sys::{XDP_DROP, XDP_PASS},
    testrun::{Samples, Target as _},
};

const SLOTS: u32 = 8;

const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: bench
    addresses: [10.203.0.1]
    ingress:
      - from: { cidr: 10.203.0.0/24 }
        ports: [\"53/udp\"]
";

fn load(level: KernelLog) -> anyhow::Result<Datapath> {
    let mut dp = Datapath::load_with(
        None,
        &LoadOptions {
            max_workloads: SLOTS,
            kernel_log: level,
            ..LoadOptions::default()
        },
    )?;
    let policy = Policy::from_str("bench-policy.yaml", POLICY)?;
    dp.apply(
        &policy::compile(&policy, &SlotTable::new(), SLOTS)?,
        Action::Pass,
    )?;
    Ok(dp)
}

fn ns(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

pub fn run(plan: &Plan, floors: &Floors) -> anyhow::Result<KernelLogReport> {
    progress::step("kernel log: off against debug");
    let mut off = load(KernelLog::Off)?;
    let mut on = load(KernelLog::Debug)?;
    let udp = L4::Udp {
        sport: 40_000,
        dport: 53,
    };
    let allow = packets::v4(CLIENT4, LOCAL4, udp, &[0; 18]);
    let vlans = packets::push_vlan(
        &packets::v4_tagged(&[100, 200], CLIENT4, LOCAL4, udp, &[0; 10]),
        300,
    );
    let mut paths = Vec::new();
    for (name, frame, action) in [
        ("allowed UDP flow (hot, cached)", &allow, XDP_PASS),
        (
            "three VLAN tags (parse limit: a debug site)",
            &vlans,
            XDP_DROP,
        ),
    ] {
        let (mut floor, mut off_ns, mut on_ns) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..plan.runs {
            floor
                .0
                .push(ns(floors.xdp.run(frame, plan.repeat)?.per_run));
            for (dp, samples) in [(&off, &mut off_ns), (&on, &mut on_ns)] {
                let out = dp.xdp_program().run(frame, plan.repeat)?;
                ensure!(
                    out.retval == action,
                    "{name}: expected action {action}, got {}",
                    out.retval
                );
                samples.0.push(ns(out.per_run));
            }
        }
        paths.push(KernelLogPath {
            path: name,
            off_ns: off_ns.median() - floor.median(),
            on_ns: on_ns.median() - floor.median(),
            spread_ns: off_ns.spread().max(on_ns.spread()),
        });
    }
    let programs = off
        .program_stats()
        .into_iter()
        .zip(on.program_stats())
        .collect::<Vec<(ProgramStats, ProgramStats)>>();
    Ok(KernelLogReport { paths, programs })
}
