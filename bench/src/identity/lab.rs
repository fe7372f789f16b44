//! The lab the latency and handshake-rate figures run in: the end-to-end tests' two
//! namespaces (`boundary_tests::Lab`: the client in one, the agent protecting `s0` in the
//! other), a test PKI (ECDSA P-256 throughout), the agent as a process with its identity
//! endpoint on, and the pinned maps the bench polls.
//!
//! Source addresses: the client's veth gets [`SOURCE_NETS`] x [`PER_NET`] addresses beside its
//! own; the server routes them back through the client's address (one neighbour entry, not
//! one per source). Every client socket binds one of them, so each handshake binds (or
//! renews) its own address.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::maps::{Array, Map, MapData};
use boundary_agent::datapath::{Maps, PinLayout};
use boundary_common::maps::{BIND_SEQ_MAP, bind_seq_slot};
use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    netns::addr::{CLIENT, SERVER, SERVER_IF},
};

use super::{
    client::Client,
    pki::{Ca, Leaf},
};

/// The endpoint's port.
pub const PORT: u16 = 8444;
/// The SPIFFE ID every client presents (one certificate; each source address binds to it).
pub const CLIENT_ID: &str = "spiffe://example.org/orders/bench";
/// 10.203.N.0/24 nets of source addresses: the rate's (1, 2) and the latency passes' (3, 4).
pub const SOURCE_NETS: [u8; 4] = [1, 2, 3, 4];
pub const PER_NET: u8 = 250;

/// Source `i` (from 1) of net `n`.
pub fn source(net: u8, i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 203, net, i)
}

fn policy() -> String {
    "apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - { name: orders, from: { spiffe: \"spiffe://example.org/orders/*\" }, ports: [\"8080/tcp\"] }
"
    .into()
}

pub struct IdentityLab {
    pub lab: Lab,
    pub files: AgentFiles,
    pub agent: AgentProcess,
    pub client: Client,
    pub maps: Maps,
    bind_seq: Array<MapData, u32>,
    pub generation: u8,
    /// Kept for the files' lifetime (the agent reloads them on change; nothing changes here).
    _ca: Ca,
    _leaf: Leaf,
}

/// Runs `ip -n NS -batch -` with `lines`.
fn ip_batch(ns: &str, lines: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run ip -batch")?;
    child
        .stdin
        .take()
        .context("ip's stdin")?
        .write_all(lines.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ip -n {ns} -batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(name), text).with_context(|| format!("write {name}"))
}

impl IdentityLab {
    pub fn start() -> anyhow::Result<Self> {
        let lab = Lab::new("bench-id");
        let mut adds = String::new();
        for net in SOURCE_NETS {
            for i in 1..=PER_NET {
                let _ = writeln!(adds, "addr add {}/32 dev c0", source(net, i));
            }
        }
        ip_batch(lab.client.name(), &adds)?;
        lab.server.ip(&[
            "route",
            "add",
            "10.203.0.0/16",
            "via",
            &CLIENT.to_string(),
            "dev",
            SERVER_IF,
        ]);
        let ca = Ca::root("bench root", Some("example.org"));
        let files = AgentFiles::new(
            "bench-id",
            SERVER_IF,
            &policy(),
            &format!(
                "metricsAddress: \"127.0.0.1:0\"\nidentity:\n  listen: \"{SERVER}:{PORT}\"\n  trustBundle: bundle.pem\n  crl: crl.pem\n  certificate: agent.pem\n  key: agent.key\n  lease: 1h\n"
            ),
        );
        // The agent's SVID names its endpoint's address too, so the client verifies it as a
        // TLS server the usual way.
        let agent_cert = ca.svid("spiffe://example.org/boundary/agent", |p| {
            p.subject_alt_names
                .push(rcgen::SanType::IpAddress(IpAddr::V4(SERVER)));
        });
        write(&files.dir, "bundle.pem", &ca.pem)?;
        write(&files.dir, "crl.pem", &ca.crl(&[]))?;
        write(&files.dir, "agent.pem", &agent_cert.pem)?;
        write(&files.dir, "agent.key", &agent_cert.key_pem)?;
        let leaf = ca.svid(CLIENT_ID, |_| {});
        let client = Client::new(&ca.pem, &leaf, SocketAddr::new(IpAddr::V4(SERVER), PORT))?;
        let agent = AgentProcess::try_start(&lab.server, &files.config(), &[])
            .map_err(|(code, log)| anyhow::anyhow!("agent exited ({code:?}):\n{log}"))?;
        let layout = PinLayout::new(&files.pin_dir);
        let maps = Maps::from_pins(&layout)?;
        let generation = maps.datapath_config()?.generation;
        let bind_seq = Array::try_from(Map::Array(
            MapData::from_pin(layout.map(BIND_SEQ_MAP))
                .context("open the pinned bind sequences")?,
        ))?;
        let me = Self {
            lab,
            files,
            agent,
            client,
            maps,
            bind_seq,
            generation,
            _ca: ca,
            _leaf: leaf,
        };
        me.wait_for_endpoint()?;
        Ok(me)
    }

    /// The endpoint accepts TCP connections from the client's namespace.
    fn wait_for_endpoint(&self) -> anyhow::Result<()> {
        let to = self.client.endpoint;
        let start = Instant::now();
        self.lab.client.run(|| {
            loop {
                if std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                    return Ok(());
                }
                if start.elapsed() > Duration::from_secs(10) {
                    bail!("the identity endpoint {to} does not accept connections");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    }

    /// The bind sequence of `addr`'s slot.
    pub fn bind_seq(&self, addr: Ipv4Addr) -> anyhow::Result<u32> {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&addr.octets());
        Ok(self.bind_seq.get(&bind_seq_slot(&a), 0)?)
    }

    /// Whether `addr` is bound in the live generation (its identity entry is there and live).
    pub fn bound(&self, addr: Ipv4Addr) -> bool {
        self.maps
            .live_exact_identity(self.generation, IpAddr::V4(addr))
            .is_some()
    }

    /// `boundary_handshakes_total{result="ok"}` summed, from the agent's `/metrics`.
    pub fn agent_ok(&self) -> anyhow::Result<u64> {
        let addr = self.agent.metrics_address();
        let (_, body) = self
            .lab
            .server
            .run(|| super::super::observability::scrape(addr))?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("boundary_handshakes_total{") && l.contains("result=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "counter values are whole and small"
                )]
                let n = v as u64;
                n
            })
            .sum())
    }
}
