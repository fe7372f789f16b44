//! Step 4: the control plane, in rules: workloads of 100 ingress rules each, every rule
//! `from: { cidr: <a /28 of its own> }` on 8443/udp, every tenth `action: deny` (so each rule
//! is its own CIDR identity with its own policy entry, the compiler's most expensive shape per
//! rule).
//!
//! - In process, at 1k / 10k / 100k rules (at most `MAX_RULES`, 131,072, the most one policy
//!   may have: rule ids index the per-CPU rule-hit array): parse + validate the YAML, compile,
//!   apply to a fresh datapath (the agent's `Maps::apply`: one `BPF_MAP_UPDATE_BATCH` per map),
//!   apply the same policy again (what a reload does: the other generation, then the old one
//!   deleted with `BPF_MAP_DELETE_BATCH`), and the policy-map entries alone written with one
//!   `BPF_MAP_UPDATE_BATCH` (the kernel's share of the apply, for comparison).
//! - Should the target size ever exceed `MAX_RULES`, the compiler refuses the file and only the
//!   apply is timed, of the tables built directly in the compiler's shape (checked against the
//!   compiler at 1k).
//! - The agent as a process, in a namespace of ours protecting a veth there: start to ready,
//!   resident memory, and the time from a policy-file change (atomic replace, then SIGHUP; the
//!   agent also polls the file every 2 s, SIGHUP makes it immediate) to the new verdict being
//!   observable in the pinned XDP program, probed with `BPF_PROG_TEST_RUN` every few tens of
//!   microseconds. The change flips one deny rule to allow.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::IterableMap as _;
use boundary_agent::policy::{self, Policy, SlotTable, Tables, compile::RuleKey};
use boundary_common::maps::{
    Action, EP_PEERS_INGRESS, EP_RULES_INGRESS, EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint,
    FIRST_IDENTITY, MAX_RULES, Mode, PolicyKey, PolicyValue, RULE_ALLOW, RULE_DENY,
};
use boundary_common::wire::IPPROTO_UDP;
use boundary_tests::{
    AgentProcess, NetNs,
    agent::AgentFiles,
    packets::{self, L4},
};
use ipnet::IpNet;
use nix::sys::signal::Signal;

use super::{
    Plan,
    env::veth,
    kernel::BenchDatapath,
    paths::{Family, KeySpace, PORT_RULE},
    progress,
    results::{AgentRow, CompileRow, ControlPlane},
    sys::{self, RawProgram, XDP_DROP, XDP_PASS},
    testrun::{Samples, Target as _},
};

/// Rules per workload.
const PER_WORKLOAD: usize = 100;
pub const COMPILE_SIZES: [usize; 3] = [1_000, 10_000, TARGET_RULES];
pub const AGENT_SIZES: [usize; 3] = [1_000, 10_000, TARGET_RULES];
/// The target's size: beyond what the compiler accepts.
pub const TARGET_RULES: usize = 100_000;

fn workloads(rules: usize) -> usize {
    rules.div_ceil(PER_WORKLOAD)
}

/// Workload `w`'s address.
fn workload_addr(w: usize) -> Ipv4Addr {
    let w = u16::try_from(w)
        .expect("fewer than 65,536 workloads")
        .to_be_bytes();
    Ipv4Addr::new(10, 200, w[0], w[1])
}

fn denies(rule: usize, flip: Option<usize>) -> bool {
    rule.is_multiple_of(10) != (flip == Some(rule))
}

/// A policy of `rules` rules (see the module doc); `flip` turns one rule's action around.
fn policy_yaml(rules: usize, flip: Option<usize>) -> String {
    let mut text = String::from("apiVersion: boundary.dev/v1\nworkloads:\n");
    for w in 0..workloads(rules) {
        let _ = write!(
            text,
            "  - name: w-{w:04}\n    addresses: [{}]\n    ingress:\n",
            workload_addr(w)
        );
        for i in w * PER_WORKLOAD..((w + 1) * PER_WORKLOAD).min(rules) {
            let _ = write!(
                text,
                "      - from: {{ cidr: {} }}\n        ports: [\"{PORT_RULE}/udp\"]\n",
                KeySpace::cidr(Family::V4, i)
            );
            if denies(i, flip) {
                text.push_str("        action: deny\n");
            }
        }
    }
    text
}

/// The tables `policy_yaml(rules, None)` compiles to, built directly (the compiler refuses
/// more than `MAX_RULES` rules). Slots, rule ids and identities numbered as the compiler does.
fn tables_for(rules: usize) -> Tables {
    let mut t = Tables::default();
    for w in 0..workloads(rules) {
        let slot = u16::try_from(w + 1).expect("slots fit u16");
        t.names.insert(slot, format!("w-{w:04}"));
        let ep = Endpoint {
            slot,
            mode: Mode::Enforce as u8,
            ingress_default: Action::Drop as u8,
            egress_default: Action::Pass as u8,
            flags: EP_TRACK_EGRESS | EP_TRACK_INGRESS | EP_RULES_INGRESS | EP_PEERS_INGRESS,
            pad: [0; 2],
        };
        t.endpoints.insert(IpAddr::V4(workload_addr(w)), ep);
        for i in w * PER_WORKLOAD..((w + 1) * PER_WORKLOAD).min(rules) {
            let id = FIRST_IDENTITY + u32::try_from(i).expect("fits");
            t.cidrs.insert(KeySpace::cidr(Family::V4, i), id);
            let key = RuleKey {
                slot,
                direction: 0,
                proto: IPPROTO_UDP,
                identity: id,
                port: PORT_RULE,
            };
            let value = PolicyValue {
                action: if denies(i, None) {
                    RULE_DENY
                } else {
                    RULE_ALLOW
                },
                flags: 0,
                pad: [0; 2],
                rule: u32::try_from(i.min(MAX_RULES as usize - 1)).expect("fits"),
            };
            t.policy.insert(key, value);
        }
    }
    for net in ["0.0.0.0/0", "::/0"] {
        let net: IpNet = net.parse().expect("valid");
        t.failsafe.insert((6, 22, net));
    }
    t
}

/// The direct tables must be what the compiler makes of the same file.
fn check_against_compiler(rules: usize) -> anyhow::Result<()> {
    let p = Policy::from_str("bench-policy.yaml", &policy_yaml(rules, None))?;
    let c = policy::compile(&p, &SlotTable::new(), AGENT_SLOTS)?;
    let d = tables_for(rules);
    ensure!(
        c.names == d.names
            && c.endpoints == d.endpoints
            && c.cidrs == d.cidrs
            && c.policy == d.policy
            && c.failsafe == d.failsafe
            && c.identities.is_empty()
            && c.ranges.is_empty(),
        "the compiler and the direct tables disagree at {rules} rules"
    );
    Ok(())
}

/// Workload slots: enough for 100k rules (1000 workloads of 100), as `maxWorkloads: 1024`.
const AGENT_SLOTS: u32 = 1024;
const WHAT_IF_SLOTS: u32 = 1024;

fn median(d: &[Duration]) -> Duration {
    let s = Samples(d.iter().map(Duration::as_secs_f64).collect());
    Duration::from_secs_f64(s.median())
}

/// Applies `tables` to a fresh datapath twice, then batch-writes its policy entries.
fn time_apply(
    tables: &Tables,
    slots: u32,
    fresh: &mut Vec<Duration>,
    again: &mut Vec<Duration>,
    batch: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let mut dp = BenchDatapath::load(tables, slots)?;
    let t = Instant::now();
    dp.fill(tables)?;
    fresh.push(t.elapsed());
    let t = Instant::now();
    dp.fill(tables)?;
    again.push(t.elapsed());

    // For comparison: the policy entries alone in one call, under a generation nobody reads.
    let (keys, values): (Vec<PolicyKey>, Vec<PolicyValue>) = tables
        .policy
        .iter()
        .map(|(k, v)| {
            let key = PolicyKey {
                generation: 2,
                direction: k.direction,
                proto: k.proto,
                pad: 0,
                slot: k.slot,
                port: k.port,
                identity: k.identity,
            };
            (key, *v)
        })
        .unzip();
    let fd = dp.maps().policy_map().map().fd().as_fd();
    let t = Instant::now();
    let n = sys::map_update_batch(fd, &keys, &values).context("BPF_MAP_UPDATE_BATCH")?;
    batch.push(t.elapsed());
    ensure!(
        n as usize == keys.len(),
        "batch wrote {n} of {}",
        keys.len()
    );
    Ok(())
}

fn compile_row(rules: usize, runs: usize) -> anyhow::Result<CompileRow> {
    let text = policy_yaml(rules, None);
    let (mut parse, mut compile, mut fresh, mut again, mut batch) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut entries = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let p = Policy::from_str("bench-policy.yaml", &text)?;
        parse.push(t.elapsed());
        let t = Instant::now();
        let c = policy::compile(&p, &SlotTable::new(), AGENT_SLOTS)?;
        compile.push(t.elapsed());
        ensure!(c.rules.len() == rules, "every rule compiled");
        entries = c.endpoints.len() + c.cidrs.len() + c.policy.len() + c.failsafe.len();
        time_apply(&c, AGENT_SLOTS, &mut fresh, &mut again, &mut batch)?;
    }
    Ok(CompileRow {
        rules,
        workloads: workloads(rules),
        entries,
        parse: Some(median(&parse)),
        compile: Some(median(&compile)),
        apply_fresh: median(&fresh),
        apply_again: median(&again),
        batch_update: median(&batch),
    })
}

/// 100k rules: the compiler's refusal, and the apply of the same tables built directly.
fn what_if_row(runs: usize) -> anyhow::Result<(CompileRow, String)> {
    let text = policy_yaml(TARGET_RULES, None);
    let p = Policy::from_str("bench-policy.yaml", &text)?;
    let refusal = match policy::compile(&p, &SlotTable::new(), WHAT_IF_SLOTS) {
        Ok(_) => bail!("the compiler accepted {TARGET_RULES} rules: time it instead"),
        Err(e) => e.to_string(),
    };
    let tables = tables_for(TARGET_RULES);
    let entries =
        tables.endpoints.len() + tables.cidrs.len() + tables.policy.len() + tables.failsafe.len();
    let (mut fresh, mut again, mut batch) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        time_apply(&tables, WHAT_IF_SLOTS, &mut fresh, &mut again, &mut batch)?;
    }
    Ok((
        CompileRow {
            rules: TARGET_RULES,
            workloads: workloads(TARGET_RULES),
            entries,
            parse: None,
            compile: None,
            apply_fresh: median(&fresh),
            apply_again: median(&again),
            batch_update: median(&batch),
        },
        refusal,
    ))
}

/// The agent binary `cargo xtask bench` built (release), if we were told where it is.
pub fn agent_binary() -> Option<PathBuf> {
    std::env::var_os("BOUNDARY_AGENT_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
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

fn reloads(agent: &AgentProcess) -> anyhow::Result<usize> {
    let log = agent.log();
    if log.contains("policy reload refused") {
        bail!("the agent refused a reload:\n{log}");
    }
    Ok(log.matches("policy reloaded").count())
}

/// Waits until the agent has logged more than `base` reloads and no new one for 50 ms (the
/// 2-second poll may also catch a change, next to the SIGHUP); returns the count.
fn wait_reloaded(agent: &AgentProcess, base: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = reloads(agent)?;
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(5));
        let now = reloads(agent)?;
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        }
        if seen > base && quiet_since.elapsed() > Duration::from_millis(50) {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            bail!("the agent logged no reload past {base}:\n{}", agent.log());
        }
    }
}

fn agent_row(rules: usize, reloads_wanted: usize) -> anyhow::Result<AgentRow> {
    let ns = NetNs::new("bnd-bench-ag");
    veth(
        &ns,
        "ag0",
        "02:00:00:00:0a:01",
        &ns,
        "ag1",
        "02:00:00:00:0a:02",
    );
    let files = AgentFiles::new(
        "bench",
        "ag0",
        &policy_yaml(rules, None),
        "metricsAddress: \"\"\nmaxWorkloads: 1024\n",
    );
    let start = Instant::now();
    let agent = AgentProcess::try_start(&ns, &files.config(), &[])
        .map_err(|(code, log)| anyhow::anyhow!("agent exited ({code:?}):\n{log}"))?;
    let start_to_ready = start.elapsed();
    let pid = agent.pid().context("agent pid")?;
    let rss_kib = status_kib(pid, "VmRSS:")?;

    // The probe: from inside the last deny rule's CIDR to its workload, which that rule drops.
    let probe = (rules - 1) / 10 * 10;
    let frame = packets::v4(
        match KeySpace::cidr_host(Family::V4, probe, 3) {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!("an IPv4 CIDR"),
        },
        workload_addr(probe / PER_WORKLOAD),
        L4::Udp {
            sport: 40_000,
            dport: PORT_RULE,
        },
        &[0; 22],
    );
    let prog = RawProgram::from_pin(&files.pin_dir.join("programs/xdp"))
        .context("open the agent's pinned XDP program")?;
    until_verdict(&prog, &frame, XDP_DROP)?;

    let with = policy_yaml(rules, None);
    let flipped = policy_yaml(rules, Some(probe));
    let mut reload = Vec::new();
    let mut count = reloads(&agent)?;
    for _ in 0..reloads_wanted {
        let t0 = Instant::now();
        change_policy(&agent, &files, &flipped)?;
        let live = until_verdict(&prog, &frame, XDP_PASS)
            .with_context(|| format!("agent log:\n{}", agent.log()))?;
        reload.push(live - t0);
        // Let the reload finish before the next change, so each one is timed on its own.
        count = wait_reloaded(&agent, count)?;
        change_policy(&agent, &files, &with)?;
        until_verdict(&prog, &frame, XDP_DROP)?;
        count = wait_reloaded(&agent, count)?;
    }
    let peak_rss_kib = status_kib(pid, "VmHWM:")?;
    drop(prog);
    drop(agent);
    drop(files);
    Ok(AgentRow {
        rules,
        workloads: workloads(rules),
        start_to_ready,
        rss_kib,
        peak_rss_kib,
        reload,
    })
}

pub fn run(plan: &Plan) -> anyhow::Result<ControlPlane> {
    let mut out = ControlPlane::default();
    check_against_compiler(COMPILE_SIZES[0])?;
    for rules in COMPILE_SIZES {
        progress::step(&format!(
            "control plane: parse, compile, apply {rules} rules ({} runs)",
            plan.cp_runs
        ));
        out.compile.push(compile_row(rules, plan.cp_runs)?);
    }
    progress::step(&format!(
        "control plane: {TARGET_RULES} rules: the compiler's answer, then apply of the same tables built directly ({} runs)",
        plan.cp_runs
    ));
    // Only when the compiler would refuse the target size does the direct-tables what-if run.
    if TARGET_RULES > MAX_RULES as usize {
        let (row, refusal) = what_if_row(plan.cp_runs)?;
        out.compile.push(row);
        out.refusal = refusal;
    }
    let Some(bin) = agent_binary() else {
        out.agent_note = "agent process not measured: BOUNDARY_AGENT_BIN is not set (cargo xtask bench sets it to the release build)".into();
        return Ok(out);
    };
    for rules in AGENT_SIZES {
        progress::step(&format!(
            "agent process: {rules} rules, start, RSS, {} reloads ({})",
            plan.reloads,
            bin.display()
        ));
        out.agent.push(agent_row(rules, plan.reloads)?);
    }
    out.agent_note = format!(
        "the agent refuses policies of more than {MAX_RULES} rules (MAX_RULES), so its figures stop there"
    );
    Ok(out)
}
