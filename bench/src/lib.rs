//! The benchmark behind `cargo xtask bench`, one concern per module:
//!
//! - `per_packet` (step 1) and `xdp_filter` (step 2): `BPF_PROG_TEST_RUN` costs by path and
//!   prefix count, Boundary and the peer, timed by `testrun` against the empty program;
//!   `paths` holds the rows and the policy behind them, `kernel` the datapath and its tables
//!   for each prefix count;
//! - `flood` (step 3): a live-frames flood on a veth, Boundary's XDP against nftables, one
//!   flow and a new spoofed source every frame;
//! - `throughput` (step 4): TCP through the protected veth with iperf3, Boundary against no
//!   filter and nftables;
//! - `control_plane` (step 5), `observability` (step 6: `/metrics` and the agent's CPU under a
//!   flood), `verifier` (step 7) and `kernel_log` (step 8: diagnostics off against on);
//! - `targets`, `report` and `chart` turn `results` into the verdicts, table, JSON and PNG;
//! - `ratelimit` (step 9, issue #13): a rule's bucket on the allow path with both CPUs on it
//!   (contended, credit only, CAS, per source), the drop path, a spin-lock bucket against a CAS
//!   one apart from the datapath, accuracy under a 90/10 skew (and a naive per-CPU split,
//!   simulated), a spoofed flood at a `per: source` rule with a ceiling and without;
//! - `identity` (step 10, issue #14): binding latency and handshakes per second against the
//!   agent's mTLS endpoint, and the per-packet cost and cache hit rate while bindings churn;
//! - `sys` (raw bpf(2)), `env` (guards for sysctls, CPU affinity, namespaces), `progress`.
//!
//! `benches/datapath.rs` is the entry point: it parses the arguments and writes the report.
//! The lab it all runs in (namespaces, veths, the agent as a process, packet builders) is
//! boundary-tests' library, shared with the end-to-end tests and the demo.

pub mod cache;
pub mod chart;
pub mod chase;
pub mod control_plane;
pub mod env;
pub mod flood;
pub mod identity;
pub mod interleaved;
pub mod kernel;
pub mod kernel_log;
pub mod mixed;
pub mod observability;
pub mod paths;
pub mod per_packet;
pub mod progress;
pub mod ratelimit;
pub mod report;
pub mod results;
pub mod sys;
pub mod targets;
pub mod testrun;
pub mod throughput;
pub mod verifier;
pub mod xdp_filter;

use std::time::{Duration, Instant};

use results::Report;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Runs per cell (median and spread are taken over them).
    pub runs: usize,
    /// Repetitions per run of the hot single flow.
    pub repeat: u32,
    /// Single-run calls per run of the random-key variant.
    pub calls: usize,
    /// Frames per run of the live-frames flood.
    pub flood_frames: u32,
    /// Seconds per iperf3 run, and repetitions of every throughput configuration.
    pub tput_secs: u32,
    pub tput_runs: usize,
    /// Runs of each control-plane timing.
    pub cp_runs: usize,
    /// Policy reloads timed per agent size.
    pub reloads: usize,
    /// Back-to-back `/metrics` scrapes timed.
    pub scrapes: usize,
    /// How long the agent's CPU is measured under the flood.
    pub obs_window: Duration,
    /// Identity: handshakes per latency pass, the handshakes-per-second window, and passes of
    /// the cached flows per churn scenario and run.
    pub id_handshakes: usize,
    pub id_window: Duration,
    pub id_rounds: usize,
    /// Steps to run (`per-packet`, `at-scale`, `xdp-filter`, `flood`, `throughput`, `control-plane`,
    /// `observability`, `verifier`, `kernel-log`, `rate-limit`, `identity`); all when empty.
    pub only: Vec<String>,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            runs: 5,
            repeat: 500_000,
            calls: 8_000,
            flood_frames: 2_000_000,
            tput_secs: 1,
            tput_runs: 5,
            cp_runs: 3,
            reloads: 5,
            scrapes: 30,
            obs_window: Duration::from_secs(30),
            id_handshakes: 200,
            id_window: Duration::from_secs(10),
            id_rounds: 40,
            only: Vec::new(),
        }
    }

    pub fn quick() -> Self {
        Self {
            runs: 3,
            repeat: 1_000_000,
            calls: 8_000,
            flood_frames: 500_000,
            tput_secs: 1,
            tput_runs: 2,
            cp_runs: 1,
            reloads: 3,
            scrapes: 10,
            obs_window: Duration::from_secs(10),
            id_handshakes: 200,
            id_window: Duration::from_secs(3),
            id_rounds: 10,
            only: Vec::new(),
        }
    }

    pub fn wants(&self, step: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == step)
    }

    pub fn describe(&self, quick: bool) -> String {
        format!(
            "{} mode: {} runs per figure, hot repeat {}, {} first-packet calls per run, {} flood frames per run, {} x {} s iperf3 runs per throughput cell, {} control-plane runs, {} reloads, {} scrapes, {} s under flood, {} handshakes per latency pass, {} s handshake window, {} churn passes per scenario and run",
            if quick { "quick" } else { "default" },
            self.runs,
            self.repeat,
            self.calls,
            self.flood_frames,
            self.tput_runs,
            self.tput_secs,
            self.cp_runs,
            self.reloads,
            self.scrapes,
            self.obs_window.as_secs(),
            self.id_handshakes,
            self.id_window.as_secs(),
            self.id_rounds
        )
    }
}

/// Runs a step that the rest of the report does not depend on; a failure becomes a warning.
fn optional<T: Default>(
    report: &mut Report,
    step: &str,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> T {
    f().unwrap_or_else(|e| {
        progress::note(&format!("{step} failed: {e:#}"));
        report.warnings.push(format!("{step} not measured: {e:#}"));
        T::default()
    })
}

/// Every step, in order.
pub fn run(plan: &Plan, quick: bool) -> anyhow::Result<Report> {
    let start = Instant::now();
    progress::start();
    let machine = env::Machine::describe();
    let mut report = Report {
        machine: format!(
            "kernel {}, {} vCPU ({}), Boundary {}",
            machine.kernel,
            machine.cpus,
            machine.cpu,
            env!("CARGO_PKG_VERSION")
        ),
        mode: plan.describe(quick),
        ..Report::default()
    };
    // bpf_stats_enabled makes the kernel time every program run (about 70 ns each here).
    let _stats = env::Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "0")?;
    let floors = per_packet::Floors::load()?;
    {
        // Steps 1 and 2 on one CPU: no migration mid-run, per-CPU state stays warm.
        let _cpu = env::CpuPin::last_allowed()?;
        if plan.wants("per-packet") {
            report.per_packet = per_packet::run(plan, &floors)?;
        }
        if plan.wants("at-scale") {
            report.at_scale = optional(&mut report, "at scale (sizes interleaved)", || {
                interleaved::run(plan, &floors)
            });
        }
        if plan.wants("kernel-log") {
            report.kernel_log =
                optional(&mut report, "kernel log", || kernel_log::run(plan, &floors));
        }
        if plan.wants("xdp-filter") {
            let peer = optional(&mut report, "xdp-filter", || {
                xdp_filter::run(plan, &floors.xdp).map(Some)
            });
            if let Some(peer) = peer {
                report.per_packet.rows.extend(peer.rows);
                report.per_packet.peer_full = peer.full;
                report.peer_note = peer.note;
                report.programs.push(peer.program);
            }
        }
    }
    if plan.wants("flood") {
        report.flood = optional(&mut report, "denied flood", || flood::run(plan));
    }
    if plan.wants("throughput") {
        report.throughput = optional(&mut report, "throughput", || throughput::run(plan));
    }
    if plan.wants("control-plane") {
        report.control = optional(&mut report, "control plane", || control_plane::run(plan));
    }
    if plan.wants("observability") {
        report.observability = optional(&mut report, "observability", || observability::run(plan));
    }
    if plan.wants("verifier") {
        progress::step("verifier budget");
        let mut programs = optional(&mut report, "verifier budget", verifier::run);
        programs.append(&mut report.programs);
        report.programs = programs;
    }
    if plan.wants("rate-limit") {
        report.rate_limits = optional(&mut report, "rate limits", || ratelimit::run(plan, &floors));
    }
    if plan.wants("identity") {
        report.identity = optional(&mut report, "identity", || identity::run(plan, &floors.xdp));
    }
    report.targets = targets::evaluate(&report);
    report.elapsed = start.elapsed();
    Ok(report)
}
