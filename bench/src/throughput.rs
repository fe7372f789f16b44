//! Step 4: TCP throughput through the protected veth, as users run it: iperf3 from a client
//! namespace to a server namespace over one veth pair (`c0` <-> `s0`, the test lab's), the
//! server's `s0` protected by the agent as a process, against the same path with no filter and
//! with nftables holding the equivalent rules.
//!
//! - **Policy** (the agent's, [`POLICY`]): the server workload (10.203.0.1, `fd00:203::1`),
//!   ingress default deny, TCP 5201 (iperf3) allowed from the client's subnets; egress default
//!   allow; the default SSH failsafe; conntrack lets replies in. Every iperf3 connection,
//!   `-R` ones included, is opened by the client to 5201, so both directions are the same
//!   flows.
//! - **nftables** ([`NFT_RULES`]): an `inet` table of ours in the server namespace, hook
//!   input: for the workload's addresses, established/related accepted, neighbour discovery
//!   and SSH accepted (Boundary passes both whatever the policy), TCP 5201 from the client
//!   subnets accepted, the rest dropped. Deleted after each use.
//! - **Boundary**: the agent's default on a veth (`ingress: auto`: tcx ingress), and native XDP
//!   (`ingress: xdp`) as an information row (client->server, offloads on). What the agent
//!   actually attached is read from its link pins and printed.
//! - **Rows**: direction (client->server, server->client with `iperf3 -R`) x IPv4/IPv6 x 1 and
//!   8 streams x offloads on (the kernel's veth defaults: TSO, GSO, checksum offload on, GRO
//!   off) and off (`ethtool -K tso off gso off gro off` on both ends).
//! - **Interleaving**: each repetition runs every configuration once, in an order rotated per
//!   repetition, and each configuration every row; the median and spread of a cell are over
//!   repetitions. A run fails (and its cell is reported as failed, never as a number; its
//!   later repetitions are skipped) when iperf3 reports an error or does not finish, or when
//!   Boundary dropped any packet during it (every packet of these flows is allowed).

use std::{
    io::Read as _,
    net::IpAddr,
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use boundary_agent::datapath::{Maps, PinLayout};
use boundary_common::{Reason, Verdict};
use boundary_tests::{
    AgentProcess, Lab, NetNs,
    agent::AgentFiles,
    netns::addr::{CLIENT_IF, SERVER, SERVER_IF, SERVER6},
};
use nix::{sys::signal::Signal, unistd::Pid};

use super::{
    Plan,
    control_plane::agent_binary,
    env::{self, in_ns},
    progress,
    results::{Throughput, TputCell, TputRow},
    testrun::Samples,
};

const PORT: u16 = 5201;
const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
workloads:
  - name: iperf-server
    addresses: [10.203.0.1, \"fd00:203::1\"]
    ingress:
      - from: { cidr: 10.203.0.0/24 }
        ports: [\"5201/tcp\"]
      - from: { cidr: \"fd00:203::/64\" }
        ports: [\"5201/tcp\"]
";
const NFT_TABLE: &str = "bnd_bench_tput";
/// The policy above, as nftables rules.
const NFT_RULES: &str = "\
table inet bnd_bench_tput {
  chain input {
    type filter hook input priority filter; policy accept;
    ip daddr 10.203.0.1 jump workload
    ip6 daddr fd00:203::1 jump workload
  }
  chain workload {
    ct state established,related accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, nd-redirect } accept
    tcp dport 22 accept
    ip saddr 10.203.0.0/24 tcp dport 5201 accept
    ip6 saddr fd00:203::/64 tcp dport 5201 accept
    drop
  }
}
";

/// A configuration of the server's veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    NoFilter,
    Nftables,
    /// The agent with its default attach (`ingress: auto`).
    Boundary,
    /// The agent with `ingress: xdp` (native): information only.
    BoundaryXdp,
}

impl Config {
    pub const ALL: [Config; 4] = [
        Config::NoFilter,
        Config::Nftables,
        Config::Boundary,
        Config::BoundaryXdp,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Config::NoFilter => "no filter",
            Config::Nftables => "nftables",
            Config::Boundary => "Boundary (default)",
            Config::BoundaryXdp => "Boundary XDP (info)",
        }
    }

    /// The agent config lines that select the attach.
    const fn agent_extra(self) -> &'static str {
        match self {
            Config::BoundaryXdp => "ingress: xdp\nxdpMode: native\n",
            _ => "",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One row's traffic.
#[derive(Clone, Copy, Debug)]
struct Shape {
    reverse: bool,
    v6: bool,
    streams: u32,
}

const SHAPES: [Shape; 8] = [
    Shape {
        reverse: false,
        v6: false,
        streams: 1,
    },
    Shape {
        reverse: false,
        v6: false,
        streams: 8,
    },
    Shape {
        reverse: false,
        v6: true,
        streams: 1,
    },
    Shape {
        reverse: false,
        v6: true,
        streams: 8,
    },
    Shape {
        reverse: true,
        v6: false,
        streams: 1,
    },
    Shape {
        reverse: true,
        v6: false,
        streams: 8,
    },
    Shape {
        reverse: true,
        v6: true,
        streams: 1,
    },
    Shape {
        reverse: true,
        v6: true,
        streams: 8,
    },
];

/// `iperf3 -s` in the server namespace, killed by its PID on drop.
struct Iperf3Server {
    child: Child,
}

impl Iperf3Server {
    fn start(ns: &NetNs) -> anyhow::Result<Self> {
        // nsenter execs iperf3 (no PID namespace, no fork): the child's PID is iperf3's.
        let child = in_ns(ns, "iperf3")
            .args(["-s", "-p", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start iperf3 -s (package iperf3)")?;
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = env::run(in_ns(ns, "ss").args(["-Hltn", &format!("sport = :{PORT}")]))?;
            if !out.trim().is_empty() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("iperf3 -s is not listening after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// SIGTERM to our child by PID, SIGKILL after 2 s, then reaped.
fn stop_child(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    for _ in 0..40 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One iperf3 client run; `Ok(Gbit/s received)` or `Err(why it failed)`.
fn iperf3(lab: &Lab, shape: Shape, secs: u32) -> Result<f64, String> {
    let server: IpAddr = if shape.v6 {
        SERVER6.into()
    } else {
        SERVER.into()
    };
    let mut cmd = in_ns(&lab.client, "iperf3");
    cmd.args(["-c", &server.to_string(), "-p", &PORT.to_string(), "-J"])
        .args(["-t", &secs.to_string(), "-P", &shape.streams.to_string()])
        .args(["--connect-timeout", "3000"]);
    if shape.reverse {
        cmd.arg("-R");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("run iperf3: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    // iperf3 ends a second or so after its test; one that stalls (a path dropping its final
    // exchange) is stopped well before it would give up itself.
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                stop_child(&mut child);
                return Err(format!("iperf3 did not finish in {} s", secs + 5));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("wait for iperf3: {e}")),
        }
    }
    let out = reader.join().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("iperf3 output is not JSON ({e})"))?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3: {err}"));
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("iperf3 reported no received rate")?;
    if bps <= 0.0 {
        return Err("iperf3: nothing received".into());
    }
    Ok(bps / 1e9)
}

/// Packets the workload's counters show dropped, by reason.
fn drops(maps: &Maps) -> anyhow::Result<Vec<(Reason, u64)>> {
    let mut by_reason = vec![0u64; boundary_common::reason::REASON_SLOTS];
    for row in maps.counter_rows()? {
        for (i, c) in row.counters.iter().enumerate() {
            by_reason[i] += c.packets;
        }
    }
    Ok(Reason::ALL
        .iter()
        .filter(|r| r.verdict() == Verdict::Drop)
        .map(|&r| (r, by_reason[usize::from(r.code())]))
        .collect())
}

fn new_drops(before: &[(Reason, u64)], after: &[(Reason, u64)]) -> Option<String> {
    let moved: Vec<String> = before
        .iter()
        .zip(after)
        .filter(|((_, b), (_, a))| a > b)
        .map(|((r, b), (_, a))| format!("{} {}", r.label(), a - b))
        .collect();
    (!moved.is_empty()).then(|| format!("Boundary dropped allowed traffic: {}", moved.join(", ")))
}

/// The links the agent pinned: what it attached, as the report prints it.
fn attached(pin_dir: &Path) -> String {
    let mut links: Vec<String> = std::fs::read_dir(pin_dir.join("links"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    links.sort();
    links.join(" + ")
}

/// The nftables table, deleted on drop.
struct NftTable<'a> {
    ns: &'a NetNs,
}

impl<'a> NftTable<'a> {
    fn create(ns: &'a NetNs) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(boundary_tests::netns::unique_name("bnd-bench-tput"));
        std::fs::write(&path, NFT_RULES)?;
        let res = env::run(in_ns(ns, "nft").arg("-f").arg(&path));
        let _ = std::fs::remove_file(&path);
        res.context("nft -f (package nftables)")?;
        Ok(Self { ns })
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let ok = in_ns(self.ns, "nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .status()
            .is_ok_and(|s| s.success());
        if !ok && !std::thread::panicking() {
            eprintln!("warning: could not delete nft table {NFT_TABLE}");
        }
    }
}

fn set_offloads(lab: &Lab, on: bool) -> anyhow::Result<()> {
    let state = if on { "on" } else { "off" };
    for (ns, dev) in [(&lab.client, CLIENT_IF), (&lab.server, SERVER_IF)] {
        let mut cmd = in_ns(ns, "ethtool");
        cmd.args(["-K", dev, "tso", state, "gso", state]);
        // GRO is off on a new veth: "on" is the kernel's default state.
        cmd.args(["gro", "off"]);
        env::run(&mut cmd).context("ethtool -K (package ethtool)")?;
    }
    Ok(())
}

/// Runs every row once under `config`; failures become the run's entry.
fn run_config(
    lab: &Lab,
    config: Config,
    offloads: bool,
    plan: &Plan,
    rows: &mut [TputRow],
    attach_notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let label = config.label();
    let todo: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.offloads == offloads && r.cells[config.index()].wanted)
        // A cell with a failed run has no figure: its later repetitions are skipped (a
        // stalled run costs seconds).
        .filter(|(_, r)| r.cells[config.index()].runs.iter().all(Result::is_ok))
        .map(|(i, _)| i)
        .collect();
    let mut run_all = |before_after: &mut dyn FnMut() -> anyhow::Result<
        Option<Vec<(Reason, u64)>>,
    >|
     -> anyhow::Result<()> {
        for &i in &todo {
            let row = &mut rows[i];
            progress::tick(&format!(
                "throughput: {label}, {} {} {} stream(s), offloads {}",
                row.direction,
                row.family,
                row.streams,
                if offloads { "on" } else { "off" }
            ));
            let shape = Shape {
                reverse: row.direction == SERVER_TO_CLIENT,
                v6: row.family == "v6",
                streams: row.streams,
            };
            let before = before_after()?;
            let mut result = iperf3(lab, shape, plan.tput_secs);
            let after = before_after()?;
            if let (Some(b), Some(a)) = (before, after)
                && let Some(why) = new_drops(&b, &a)
            {
                result = Err(why);
            }
            row.cells[config.index()].runs.push(result);
        }
        Ok(())
    };
    match config {
        Config::NoFilter => run_all(&mut || Ok(None)),
        Config::Nftables => {
            let _table = NftTable::create(&lab.server)?;
            run_all(&mut || Ok(None))
        }
        Config::Boundary | Config::BoundaryXdp => {
            let files = AgentFiles::new(
                "bench-tput",
                SERVER_IF,
                POLICY,
                &format!("metricsAddress: \"\"\n{}", config.agent_extra()),
            );
            let agent = match AgentProcess::try_start(&lab.server, &files.config(), &[]) {
                Ok(a) => a,
                Err((code, log)) => {
                    let last = log.lines().last().unwrap_or("").to_owned();
                    let why = format!("the agent did not start ({code:?}): {last}");
                    for &i in &todo {
                        rows[i].cells[config.index()].runs.push(Err(why.clone()));
                    }
                    return Ok(());
                }
            };
            let note = format!("{label}: {}", attached(&files.pin_dir));
            if !attach_notes.contains(&note) {
                attach_notes.push(note);
            }
            let maps = Maps::from_pins(&PinLayout::new(&files.pin_dir))?;
            let res = run_all(&mut || drops(&maps).map(Some));
            drop(maps);
            drop(agent);
            drop(files);
            res
        }
    }
}

pub const CLIENT_TO_SERVER: &str = "client->server";
pub const SERVER_TO_CLIENT: &str = "server->client";

pub fn run(plan: &Plan) -> anyhow::Result<Throughput> {
    progress::step(&format!(
        "throughput: iperf3 {} s per run, {} repetitions, configurations interleaved",
        plan.tput_secs, plan.tput_runs
    ));
    let have_agent = agent_binary().is_some();
    let mut rows = Vec::new();
    for offloads in [true, false] {
        for s in SHAPES {
            rows.push(TputRow {
                direction: if s.reverse {
                    SERVER_TO_CLIENT
                } else {
                    CLIENT_TO_SERVER
                },
                family: if s.v6 { "v6" } else { "v4" },
                streams: s.streams,
                offloads,
                cells: Config::ALL
                    .iter()
                    .map(|&c| TputCell {
                        config: c.label(),
                        // Native XDP is an information row: client->server (where it strips
                        // the peer's GSO) with offloads on only.
                        wanted: match c {
                            Config::Boundary => have_agent,
                            Config::BoundaryXdp => have_agent && offloads && !s.reverse,
                            _ => true,
                        },
                        runs: Vec::new(),
                    })
                    .collect(),
            });
        }
    }
    let lab = Lab::new("bench-tp");
    let _server = Iperf3Server::start(&lab.server)?;
    let mut attach_notes = Vec::new();
    for rep in 0..plan.tput_runs {
        for offloads in [true, false] {
            set_offloads(&lab, offloads)?;
            for k in 0..Config::ALL.len() {
                let config = Config::ALL[(k + rep) % Config::ALL.len()];
                run_config(&lab, config, offloads, plan, &mut rows, &mut attach_notes)
                    .with_context(|| format!("throughput under {}", config.label()))?;
            }
        }
    }
    progress::done();
    Ok(Throughput {
        secs: plan.tput_secs,
        runs: plan.tput_runs,
        rows,
        notes: attach_notes,
        nft_rules: NFT_RULES.into(),
    })
}

/// Median and spread of a cell, unless a run failed.
pub fn summary(cell: &TputCell) -> Option<Result<(f64, f64), String>> {
    if !cell.wanted || cell.runs.is_empty() {
        return None;
    }
    let mut ok = Vec::new();
    for (i, r) in cell.runs.iter().enumerate() {
        match r {
            Ok(g) => ok.push(*g),
            Err(why) => {
                return Some(Err(format!(
                    "run {} failed (later runs skipped): {why}",
                    i + 1
                )));
            }
        }
    }
    let s = Samples(ok);
    Some(Ok((s.median(), s.spread())))
}

/// A row's ratios of medians (none where a side failed or was not measured).
pub struct Ratios {
    pub over_none: Option<f64>,
    pub over_nft: Option<f64>,
    pub xdp_over_none: Option<f64>,
}

pub fn ratios(row: &TputRow) -> Ratios {
    let median = |c: Config| {
        row.cells
            .get(c.index())
            .and_then(summary)
            .and_then(Result::ok)
            .map(|(m, _)| m)
    };
    let ratio =
        |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    Ratios {
        over_none: ratio(median(Config::Boundary), median(Config::NoFilter)),
        over_nft: ratio(median(Config::Boundary), median(Config::Nftables)),
        xdp_over_none: ratio(median(Config::BoundaryXdp), median(Config::NoFilter)),
    }
}
