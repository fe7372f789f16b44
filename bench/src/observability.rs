//! Step 5: observability (issue #5). The agent as a process with 1,000 workloads
//! (`maxWorkloads: 1024`), each with an allow rule from a /28 of its own and a deny rule for
//! the flood's /24 (2,000 rules), attached to a veth in a namespace of ours, its `/metrics` on
//! an ephemeral loopback port inside that namespace.
//!
//! - **Scrape time**: every workload first gets traffic in three reasons (one allowed, one
//!   denied by rule, one policy miss, run through the agent's pinned XDP program with
//!   `BPF_PROG_TEST_RUN`), so a scrape carries every series a busy host would. Then
//!   back-to-back GETs over loopback from inside the namespace, timed from connect to the last
//!   byte.
//! - **Agent CPU under a flood**: a live-frames generator (the `XDP_TX` program of the flood
//!   step) in a peer namespace sends 64-byte UDP frames to workload `w-0000`'s address, which
//!   its deny rule drops in the agent's XDP program, in bursts of `BURST` frames every
//!   `TICK` (1 Mpps on average; the achieved rate is reported), on one pinned core, while another
//!   thread scrapes `/metrics` every 5 s. The agent's utime + stime from /proc/PID/stat over
//!   the window is its cost: XDP runs in the generator's softirq, never in the agent.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use boundary_agent::datapath::{Maps, PinLayout};
use boundary_common::Reason;
use boundary_tests::{
    AgentProcess, NetNs,
    agent::AgentFiles,
    packets::{self, L4, MAC_CLIENT, MAC_SERVER},
};

use super::{
    Plan,
    control_plane::agent_binary,
    env::{self, CpuPin, InNetNs, veth},
    flood::{live_frames, mac},
    paths::{CLIENT4, Family, KeySpace, PORT_NO_RULE, PORT_RULE},
    progress,
    results::{FloodCpu, Observability},
    sys::{RawProgram, XDP_DROP, XDP_PASS, XDP_TX},
    testrun::Target as _,
};

pub const WORKLOADS: usize = 1_000;
const FLOOD_PORT: u16 = 53;
/// Frames per burst and bursts per second: 50,000 x 20 = 1 Mpps. A live-frames call also
/// takes about 20 ms of wall-clock time of its own here (setting up and tearing down, asleep
/// for most of it), so bursts cannot be much shorter than this and keep the rate.
pub const BURST: u32 = 50_000;
pub const TICK: Duration = Duration::from_millis(50);
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

fn workload_addr(w: usize) -> Ipv4Addr {
    let w = u16::try_from(w).expect("few workloads").to_be_bytes();
    Ipv4Addr::new(10, 201, w[0], w[1])
}

fn policy_yaml() -> String {
    let mut y = String::from("apiVersion: boundary.dev/v1\nworkloads:\n");
    for w in 0..WORKLOADS {
        let _ = write!(
            y,
            "  - name: w-{w:04}\n    addresses: [{}]\n    ingress:\n      \
             - from: {{ cidr: {} }}\n        ports: [\"{PORT_RULE}/udp\"]\n      \
             - from: {{ cidr: 10.203.0.0/24 }}\n        ports: [\"{FLOOD_PORT}/udp\"]\n        action: deny\n",
            workload_addr(w),
            KeySpace::cidr(Family::V4, w)
        );
    }
    y
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    packets::v4(
        src,
        dst,
        L4::Udp {
            sport: 40_000,
            dport,
        },
        &[0; 22],
    )
}

fn v4(a: std::net::IpAddr) -> Ipv4Addr {
    match a {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => unreachable!("IPv4 keys"),
    }
}

/// Gives every workload packets in three reasons through the agent's pinned XDP program.
fn populate(prog: &RawProgram) -> anyhow::Result<()> {
    for w in 0..WORKLOADS {
        let dst = workload_addr(w);
        let own = v4(KeySpace::cidr_host(Family::V4, w, 1));
        for (f, want) in [
            (frame(own, dst, PORT_RULE), XDP_PASS),
            (frame(CLIENT4, dst, FLOOD_PORT), XDP_DROP),
            (frame(CLIENT4, dst, PORT_NO_RULE), XDP_DROP),
        ] {
            let got = prog.run(&f, 1)?.retval;
            ensure!(got == want, "w-{w:04}: expected {want}, got {got}");
        }
    }
    Ok(())
}

/// The address the agent logged for its metrics endpoint.
fn metrics_address(log: &str) -> anyhow::Result<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("metrics and health endpoints listening"))
        .find_map(|l| {
            let rest = &l[l.find("address=")? + "address=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .with_context(|| format!("no metrics address in the agent's log:\n{log}"))
}

/// One GET /metrics; the calling thread must be in the agent's namespace. Returns the time
/// from connect to the last byte, and the body.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let took = t.elapsed();
    let raw = String::from_utf8(raw).context("metrics are UTF-8")?;
    let (head, body) = raw.split_once("\r\n\r\n").context("an HTTP response")?;
    ensure!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET /metrics: {}",
        head.lines().next().unwrap_or("")
    );
    Ok((took, body.to_owned()))
}

/// The agent's utime + stime so far.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = &stat[stat.rfind(')').context("/proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .context("CLK_TCK")?
        .cast_unsigned();
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn denied(maps: &Maps, slot: u16) -> anyhow::Result<u64> {
    let row = maps.counter_row(slot, 0)?;
    Ok(row.counters[usize::from(Reason::PolicyDeny.code())].packets)
}

struct Lab {
    gen_ns: NetNs,
    agent_ns: NetNs,
    og0: u32,
}

fn lab() -> anyhow::Result<Lab> {
    let gen_ns = NetNs::new("bnd-bench-og");
    let agent_ns = NetNs::new("bnd-bench-oa");
    veth(
        &gen_ns,
        "og0",
        &mac(MAC_CLIENT),
        &agent_ns,
        "oa0",
        &mac(MAC_SERVER),
    );
    let og0 = env::ifindex(&gen_ns, "og0")?;
    Ok(Lab {
        gen_ns,
        agent_ns,
        og0,
    })
}

/// Floods `dst` for `window` at about 1 Mpps from the generator namespace, on a pinned core,
/// until `stop`; returns the frames sent.
fn flood(lab: &Lab, dst: Ipv4Addr, window: Duration, stop: &AtomicBool) -> anyhow::Result<u64> {
    let _home = InNetNs::enter(&lab.gen_ns)?;
    let _cpu = CpuPin::last_allowed()?;
    let tx = RawProgram::xdp_returning(XDP_TX, "bnd_bench_ogen")?;
    let f = frame(CLIENT4, dst, FLOOD_PORT);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = start;
    while start.elapsed() < window && !stop.load(Ordering::Relaxed) {
        live_frames(&tx, lab.og0, &f, BURST)?;
        sent += u64::from(BURST);
        next += TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}

fn flood_cpu(
    lab: &Lab,
    agent: &AgentProcess,
    maps: &Maps,
    addr: SocketAddr,
    window: Duration,
) -> anyhow::Result<FloodCpu> {
    let pid = agent.pid().context("agent pid")?;
    let slot = 1; // w-0000: the first workload gets the first slot.
    let stop = AtomicBool::new(false);
    let before = denied(maps, slot)?;
    let cpu0 = cpu_time(pid)?;
    let t0 = Instant::now();
    let (frames, scrapes) = std::thread::scope(|s| {
        let generator = s.spawn(|| {
            let r = flood(lab, workload_addr(0), window, &stop);
            stop.store(true, Ordering::Relaxed);
            r
        });
        let scraper = s.spawn(|| -> anyhow::Result<Vec<Duration>> {
            let _in = InNetNs::enter(&lab.agent_ns)?;
            let mut times = Vec::new();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    times.push(scrape(addr)?.0);
                    next += SCRAPE_EVERY;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(times)
        });
        let frames = generator.join().expect("generator thread");
        stop.store(true, Ordering::Relaxed);
        (frames, scraper.join().expect("scraper thread"))
    });
    let elapsed = t0.elapsed();
    let agent_cpu = cpu_time(pid)?.saturating_sub(cpu0);
    let frames = frames?;
    let scrapes = scrapes?;
    let denied = denied(maps, slot)? - before;
    Ok(FloodCpu {
        window: elapsed,
        frames,
        denied,
        agent_cpu,
        scrapes,
    })
}

pub fn run(plan: &Plan) -> anyhow::Result<Observability> {
    let Some(bin) = agent_binary() else {
        return Ok(Observability {
            note: "not measured: BOUNDARY_AGENT_BIN is not set (cargo xtask bench sets it)".into(),
            ..Observability::default()
        });
    };
    progress::step(&format!(
        "observability: agent with {WORKLOADS} workloads ({})",
        bin.display()
    ));
    let lab = lab()?;
    let files = AgentFiles::new(
        "bench-obs",
        "oa0",
        &policy_yaml(),
        // Native XDP, not the veth default (tcx ingress): the flood is measured where XDP
        // drops it, in the generator's softirq, and live frames need the XDP-enabled ring.
        "maxWorkloads: 1024\nmetricsAddress: \"127.0.0.1:0\"\ningress: xdp\n",
    );
    let agent = AgentProcess::try_start(&lab.agent_ns, &files.config(), &[])
        .map_err(|(code, log)| anyhow::anyhow!("agent exited ({code:?}):\n{log}"))?;
    let addr = metrics_address(&agent.log())?;
    let prog = RawProgram::from_pin(&files.pin_dir.join("programs/xdp"))
        .context("open the agent's pinned XDP program")?;
    populate(&prog)?;
    let maps = Maps::from_pins(&PinLayout::new(&files.pin_dir))?;

    progress::tick(&format!(
        "observability: {} scrapes of /metrics at {addr}",
        plan.scrapes
    ));
    let (scrapes, body) = lab.agent_ns.run(|| -> anyhow::Result<_> {
        let (_, body) = scrape(addr)?; // warm-up, and the body to check
        let mut times = Vec::new();
        for _ in 0..plan.scrapes {
            times.push(scrape(addr)?.0);
        }
        Ok((times, body))
    })?;
    let last = format!("w-{:04}", WORKLOADS - 1);
    if !body.contains("boundary_packets_total") || !body.contains(&last) {
        bail!("the scrape lacks boundary_packets_total or {last}");
    }
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();

    progress::tick(&format!(
        "observability: {} s flood at ~1 Mpps, /metrics every {} s, agent CPU",
        plan.obs_window.as_secs(),
        SCRAPE_EVERY.as_secs()
    ));
    let cpu = flood_cpu(&lab, &agent, &maps, addr, plan.obs_window)?;
    progress::done();
    drop(maps);
    drop(prog);
    drop(agent);
    drop(files);
    Ok(Observability {
        workloads: WORKLOADS,
        rules: 2 * WORKLOADS,
        body_bytes: body.len(),
        series,
        scrapes,
        flood: Some(cpu),
        note: String::new(),
    })
}
