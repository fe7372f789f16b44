//! `cargo xtask demo`: the main job on a fresh machine. A throwaway lab — a client and a server
//! namespace joined by a veth pair — with the agent protecting the server side, real traffic
//! (allowed, denied, malformed), and the counter table at the end. Everything is removed on
//! exit, Ctrl-C included.

use std::{
    net::SocketAddr,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    apps::{self, HttpServer, TempDir, mib},
    netns::addr::{CLIENT, CLIENT_IF, SERVER, SERVER_B, SERVER_IF, SERVER6},
    packets::{self, ETH_LEN, IPV4_LEN, L4},
    traffic::{self, Servers},
};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::{build_agent, setup};

#[derive(clap::Args)]
pub struct Args {
    /// How long to drive traffic, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
identities:                          # static bindings (mTLS-attested ones join at run time)
  - id: spiffe://demo.local/ns/shop/sa/frontend
    addresses: [10.203.0.2, \"fd00:203::2\"]
workloads:
  - name: web
    addresses: [10.203.0.1, \"fd00:203::1\"]
    ingress:
      - name: frontend-to-web
        from: { spiffe: \"spiffe://demo.local/ns/shop/*\" }
        ports: [\"7000/udp\", \"8080/tcp\", \"8000/tcp\"]
      - name: ping
        from: { any: true }
        icmp: [echo-request]
  - name: admin                      # no rules: everything in is dropped
    addresses: [10.203.0.3]
";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: i32) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo loads eBPF programs and makes network namespaces: run it as root");
    }
    setup::run()?;
    let agent_bin = build_agent()?;
    // SAFETY: the handler only stores to an atomic.
    #[expect(unsafe_code, reason = "installing a signal handler")]
    unsafe {
        sigaction(
            Signal::SIGINT,
            &SigAction::new(
                SigHandler::Handler(on_sigint),
                SaFlags::empty(),
                SigSet::empty(),
            ),
        )
    }
    .context("install SIGINT handler")?;

    println!(
        "== Boundary demo: client ns --veth--> server ns (agent on {SERVER_IF}: tcx in, the default on a veth; tcx out)"
    );
    let lab = Lab::new("demo");
    let files = AgentFiles::new("demo", SERVER_IF, POLICY, "");
    println!("   policy:\n{}", indent(POLICY));
    let agent = AgentProcess::start(&lab.server, &files.config());
    println!(
        "   agent running (pid {}), pins under {}",
        agent.pid().unwrap_or(0),
        files.pin_dir.display()
    );
    for line in agent
        .log()
        .lines()
        .filter(|l| l.contains("program loaded") || l.contains("attached"))
    {
        println!(
            "   agent: {}",
            line.split_once("  ").map_or(line, |(_, rest)| rest).trim()
        );
    }
    let _servers = [
        Servers::start(&lab.server, SERVER.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER_B.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER6.into(), 7000, 8080),
    ];
    drive(&lab, args.duration);
    if INTERRUPTED.load(Ordering::Relaxed) {
        println!("   interrupted: cleaning up");
    } else {
        http_download(&lab)?;
    }

    println!(
        "\n== boundary-agent counters --pin-dir {}",
        files.pin_dir.display()
    );
    let out = Command::new(&agent_bin)
        .args(["counters", "--pin-dir"])
        .arg(&files.pin_dir)
        .output()
        .context("run boundary-agent counters")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("counters failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    for (src, port) in [
        ("spiffe://demo.local/ns/shop/sa/frontend", "8080"),
        ("10.203.0.2", "22"),
        ("10.203.0.2", "7001"),
    ] {
        let proto = if port == "7001" { "udp" } else { "tcp" };
        println!(
            "\n== boundary-agent trace --src {src} --dst {SERVER} --proto {proto} --dport {port}"
        );
        let out = Command::new(&agent_bin)
            .args([
                "trace",
                "--src",
                src,
                "--dst",
                &SERVER.to_string(),
                "--proto",
                proto,
                "--dport",
                port,
                "--policy",
            ])
            .arg(files.policy())
            .output()
            .context("run boundary-agent trace")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    drop(agent);
    drop(files);
    drop(lab);
    println!("\n== cleaned up: agent stopped, pins detached, namespaces and veths deleted");
    Ok(())
}

/// Drives traffic for `duration` seconds (or until Ctrl-C), printing a line a second.
fn drive(lab: &Lab, duration: u64) {
    let malformed = malformed_frames();
    // One untimed round first: neighbour discovery settles before the counting starts.
    let _ = traffic::udp_echo(
        &lab.client,
        SocketAddr::new(SERVER6.into(), 7000),
        1,
        8,
        Duration::from_secs(1),
    );
    let start = Instant::now();
    let mut tick = 0u64;
    while start.elapsed() < Duration::from_secs(duration) && !INTERRUPTED.load(Ordering::Relaxed) {
        tick += 1;
        let c = &lab.client;
        let web4 = traffic::udp_echo(
            c,
            SocketAddr::new(SERVER.into(), 7000),
            10,
            200,
            Duration::from_millis(500),
        );
        let web6 = traffic::udp_echo(
            c,
            SocketAddr::new(SERVER6.into(), 7000),
            5,
            200,
            Duration::from_millis(500),
        );
        let tcp_ok = (0..2)
            .filter(|_| {
                traffic::tcp_hello(
                    c,
                    SocketAddr::new(SERVER.into(), 8080),
                    Duration::from_millis(500),
                )
            })
            .count();
        let admin = traffic::udp_echo(
            c,
            SocketAddr::new(SERVER_B.into(), 7000),
            2,
            200,
            Duration::from_millis(150),
        );
        let closed = traffic::udp_echo(
            c,
            SocketAddr::new(SERVER.into(), 7001),
            2,
            200,
            Duration::from_millis(150),
        );
        traffic::inject(c, CLIENT_IF, &malformed);
        println!(
            "   t={tick:>2}s  web: {web4}/10 UDP echoes, {web6}/5 over IPv6, {tcp_ok}/2 TCP sessions, {closed}/2 on a closed port | admin: {admin}/2 | {} malformed frames",
            malformed.len()
        );
        std::thread::sleep(Duration::from_secs(tick).saturating_sub(start.elapsed()));
    }
}

/// Port of the demo's HTTP server (opened to the frontend identity by the policy).
const HTTP_PORT: u16 = 8000;

/// A real HTTP download through the protected server: Python's `http.server` in the server
/// namespace, curl in the client's, the received file's size and SHA-256 checked against the
/// served one. A cut or corrupted download fails the demo.
fn http_download(lab: &Lab) -> anyhow::Result<()> {
    const SIZE: u64 = 8 << 20;
    let www = TempDir::new("demo-www");
    let digest = apps::write_stream_file(&www.path().join("download.bin"), SIZE);
    let received = TempDir::new("demo-dl");
    let got = received.path().join("download.bin");
    let server = HttpServer::start(&lab.server, www.path(), HTTP_PORT);
    let url = apps::http_url(SERVER.into(), HTTP_PORT, "/download.bin");
    println!(
        "\n== curl {url}  (python3 -m http.server, pid {}, in the server namespace)",
        server.pid().unwrap_or(0)
    );
    let r = apps::curl(&lab.client, &url, &got, Duration::from_secs(10));
    let (got_size, got_digest) = if got.exists() {
        apps::file_digest(&got)
    } else {
        (0, "-".to_owned())
    };
    println!(
        "   served    {SIZE:>9} bytes ({})  sha256 {digest}",
        mib(SIZE)
    );
    println!(
        "   received  {got_size:>9} bytes ({})  sha256 {got_digest}",
        mib(got_size)
    );
    if !r.ok() {
        bail!(
            "the HTTP download from the protected server failed: curl exited with {:?} after \
             {got_size} of {SIZE} bytes: {}",
            r.code,
            r.stderr
        );
    }
    if got_size != SIZE || got_digest != digest {
        bail!("the HTTP download from the protected server arrived changed: size or digest differ");
    }
    println!("   intact: same size, same digest");
    Ok(())
}

/// One frame of each malformed kind the demo shows.
fn malformed_frames() -> Vec<Vec<u8>> {
    let tcp = packets::v4(
        CLIENT,
        SERVER,
        L4::Tcp {
            sport: 40_000,
            dport: 8080,
        },
        b"",
    );
    let mut bad_ihl = tcp.clone();
    bad_ihl[ETH_LEN] = 0x43; // IHL 3: a 12-byte IPv4 header
    let mut bad_doff = tcp;
    bad_doff[ETH_LEN + IPV4_LEN + 12] = 0x20; // TCP data offset 2
    let three_tags = packets::push_vlan(
        &packets::v4_tagged(
            &[10, 20],
            CLIENT,
            SERVER,
            L4::Udp {
                sport: 1,
                dport: 7000,
            },
            b"x",
        ),
        30,
    );
    vec![bad_ihl, bad_doff, three_tags]
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
