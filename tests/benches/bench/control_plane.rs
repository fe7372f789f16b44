//! Step 4: the control plane. Today a "rule" is an endpoint entry (a workload address with its
//! mode and defaults): that is what the compiler produces and `Maps::apply` writes.
//!
//! - In process, at 1k / 10k / 100k rules: parse + validate the YAML, compile, apply to a fresh
//!   datapath (the agent's code, one `BPF_MAP_UPDATE_ELEM` per entry plus a key scan for stale
//!   entries), apply the same policy again (what a reload does), and the same entries written
//!   with one `BPF_MAP_UPDATE_BATCH` (which the agent does not use yet: the what-if).
//! - The agent as a process, in a namespace of ours protecting a veth there: start to ready,
//!   resident memory, and the time from a policy-file change (write, then SIGHUP: the agent
//!   reloads on SIGHUP, it does not watch the file) to the new verdict being observable in the
//!   pinned XDP program, probed with `BPF_PROG_TEST_RUN` every few tens of microseconds.
//!   The agent's endpoint map holds `MAX_ENDPOINTS` (65,536) entries, so its largest size
//!   here is 65,000.

use std::{
    fmt::Write as _,
    os::fd::AsFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::IterableMap as _;
use boundary_agent::policy::{self, Policy, SlotTable};
use boundary_common::maps::{Action, DatapathConfig, MAX_ENDPOINTS};
use boundary_tests::{
    AgentProcess, NetNs,
    agent::AgentFiles,
    packets::{self, L4},
};
use nix::sys::signal::Signal;

use super::{
    Plan,
    env::veth,
    kernel::BenchDatapath,
    paths::{CLIENT4, Family, KeySpace},
    progress,
    results::{AgentRow, CompileRow, ControlPlane},
    sys::{self, RawProgram, XDP_DROP, XDP_PASS},
    testrun::{Samples, Target as _},
};

/// Workloads the generated policies spread their addresses over.
const POLICY_WORKLOADS: usize = 200;
/// Workload slots, as the agent's default `maxWorkloads`.
const AGENT_SLOTS: u32 = 256;
pub const COMPILE_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
pub const AGENT_SIZES: [usize; 3] = [1_000, 10_000, 65_000];

/// A policy with `rules` addresses (half IPv4, half IPv6) over `POLICY_WORKLOADS` workloads;
/// odd workloads deny ingress. `skip` leaves one address index out.
fn policy_yaml(rules: usize, skip: Option<usize>) -> String {
    let mut text = String::from("apiVersion: boundary.dev/v1\nworkloads:\n");
    let half = rules / 2;
    for w in 0..POLICY_WORKLOADS {
        let _ = write!(text, "  - name: w-{w:03}\n    addresses: [");
        let mut first = true;
        for i in (w..rules).step_by(POLICY_WORKLOADS) {
            if Some(i) == skip {
                continue;
            }
            let a = if i < half {
                KeySpace::addr(Family::V4, i)
            } else {
                KeySpace::addr(Family::V6, i - half)
            };
            let _ = write!(text, "{}\"{a}\"", if first { "" } else { ", " });
            first = false;
        }
        text.push_str("]\n");
        if w % 2 == 1 {
            text.push_str("    ingress: { default: deny }\n");
        }
    }
    text
}

fn median(d: &[Duration]) -> Duration {
    let s = Samples(d.iter().map(Duration::as_secs_f64).collect());
    Duration::from_secs_f64(s.median())
}

fn compile_row(rules: usize, runs: usize) -> anyhow::Result<CompileRow> {
    let text = policy_yaml(rules, None);
    let (mut parse, mut compile, mut fresh, mut again, mut batch) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        let p = Policy::from_str("bench-policy.yaml", &text)?;
        parse.push(t.elapsed());
        let t = Instant::now();
        let c = policy::compile(&p, &SlotTable::new(), AGENT_SLOTS)?;
        compile.push(t.elapsed());
        ensure!(c.endpoints.len() == rules, "every address compiled");

        let mut dp = BenchDatapath::load(rules, AGENT_SLOTS)?;
        let t = Instant::now();
        dp.maps.apply(&c, DatapathConfig::new(Action::Pass))?;
        fresh.push(t.elapsed());
        let t = Instant::now();
        dp.maps.apply(&c, DatapathConfig::new(Action::Pass))?;
        again.push(t.elapsed());

        let (keys, values): (Vec<_>, Vec<_>) = c.endpoints.iter().copied().unzip();
        let fd = dp.maps.endpoints.map().fd().as_fd();
        let t = Instant::now();
        let n = sys::map_update_batch(fd, &keys, &values).context("BPF_MAP_UPDATE_BATCH")?;
        batch.push(t.elapsed());
        ensure!(n as usize == rules, "batch wrote {n} of {rules}");
    }
    Ok(CompileRow {
        rules,
        parse: median(&parse),
        compile: median(&compile),
        apply_fresh: median(&fresh),
        apply_again: median(&again),
        batch_update: median(&batch),
    })
}

/// The agent binary `cargo xtask bench` built (release), if we were told where it is.
fn agent_binary() -> Option<PathBuf> {
    std::env::var_os("BOUNDARY_AGENT_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// Polls the pinned program with `frame` until it returns `want`; returns when it did.
fn until_verdict(prog: &RawProgram, frame: &[u8], want: u32) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if prog.run(frame, 1)?.retval == want {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("the pinned program never returned {want}");
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Replaces the policy file the way a careful operator (or a Kubernetes volume) does, so the
/// agent never reads half a file, then tells the agent (SIGHUP).
fn change_policy(agent: &AgentProcess, files: &AgentFiles, text: &str) -> anyhow::Result<()> {
    let path = files.policy();
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    agent.signal(Signal::SIGHUP);
    Ok(())
}

/// Waits until the agent catches SIGHUP. The agent logs "ready" before its runtime installs
/// the SIGHUP handler, and until then SIGHUP's default action would kill it: a real race (see
/// the README's Performance notes), worked around here by watching `SigCgt` in
/// /proc/PID/status.
fn wait_sighup_handler(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .unwrap_or(0);
        // Bit n-1 stands for signal n; SIGHUP is 1.
        if caught & 1 != 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent never installed a SIGHUP handler");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the agent has logged `count` finished reloads.
fn wait_reloaded(agent: &AgentProcess, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = agent.log();
        if log.matches("policy reload refused").count() > 0 {
            bail!("the agent refused a reload:\n{log}");
        }
        if log.matches("policy reloaded").count() >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the agent logged no reload {count}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn agent_row(rules: usize, reloads: usize) -> anyhow::Result<AgentRow> {
    let ns = NetNs::new("bnd-bench-ag");
    veth(
        &ns,
        "ag0",
        "02:00:00:00:0a:01",
        &ns,
        "ag1",
        "02:00:00:00:0a:02",
    );
    let files = AgentFiles::new("bench", "ag0", &policy_yaml(rules, None), "");
    let start = Instant::now();
    let agent = AgentProcess::try_start(&ns, &files.config(), &[])
        .map_err(|(code, log)| anyhow::anyhow!("agent exited ({code:?}):\n{log}"))?;
    let start_to_ready = start.elapsed();
    let pid = agent.pid().context("agent pid")?;
    let rss_kib = status_kib(pid, "VmRSS:")?;
    wait_sighup_handler(pid)?;

    // The probe: the last address of workload 1 (which denies ingress), an IPv4 address.
    let probe = (1..rules / 2)
        .step_by(POLICY_WORKLOADS)
        .next_back()
        .unwrap_or(1);
    let addr = KeySpace::v4(probe);
    let frame = packets::v4(
        CLIENT4,
        addr,
        L4::Udp {
            sport: 40_000,
            dport: 53,
        },
        &[0; 22],
    );
    let prog = RawProgram::from_pin(&files.pin_dir.join("programs/xdp"))
        .context("open the agent's pinned XDP program")?;
    until_verdict(&prog, &frame, XDP_DROP)?;

    let with = policy_yaml(rules, None);
    let without = policy_yaml(rules, Some(probe));
    let mut reload = Vec::new();
    for _ in 0..reloads {
        let t0 = Instant::now();
        change_policy(&agent, &files, &without)?;
        let live = until_verdict(&prog, &frame, XDP_PASS)
            .with_context(|| format!("agent log:\n{}", agent.log()))?;
        reload.push(live - t0);
        // Let the reload finish before the next change, so each one is timed on its own.
        wait_reloaded(&agent, 2 * reload.len() - 1)?;
        change_policy(&agent, &files, &with)?;
        until_verdict(&prog, &frame, XDP_DROP)?;
        wait_reloaded(&agent, 2 * reload.len())?;
    }
    let peak_rss_kib = status_kib(pid, "VmHWM:")?;
    drop(prog);
    drop(agent);
    drop(files);
    Ok(AgentRow {
        rules,
        start_to_ready,
        rss_kib,
        peak_rss_kib,
        reload,
    })
}

pub fn run(plan: &Plan) -> anyhow::Result<ControlPlane> {
    let mut out = ControlPlane::default();
    for rules in COMPILE_SIZES {
        progress::step(&format!(
            "control plane: parse, compile, apply {rules} rules ({} runs)",
            plan.cp_runs
        ));
        out.compile.push(compile_row(rules, plan.cp_runs)?);
    }
    let Some(bin) = agent_binary() else {
        out.agent_note = "agent process not measured: BOUNDARY_AGENT_BIN is not set (cargo xtask bench sets it to the release build)".into();
        return Ok(out);
    };
    for rules in AGENT_SIZES {
        ensure!(rules <= MAX_ENDPOINTS as usize, "within the agent's map");
        progress::step(&format!(
            "agent process: {rules} rules, start, RSS, {} reloads ({})",
            plan.reloads,
            bin.display()
        ));
        out.agent.push(agent_row(rules, plan.reloads)?);
    }
    out.agent_note = format!(
        "the agent's endpoint map holds {MAX_ENDPOINTS} entries (MAX_ENDPOINTS): 100k rules do not fit, 65,000 is the largest size measured"
    );
    Ok(out)
}
