//! Tier 3: the agent as a process protecting a server namespace, real UDP and TCP from a
//! client namespace over a veth pair, counters read back through the CLI.

use std::{net::SocketAddr, time::Duration};

use boundary_tests::{
    AgentProcess, Lab, NetNs,
    agent::AgentFiles,
    netns::addr::{CLIENT, SERVER, SERVER_B, SERVER_IF, SERVER6},
    packets::{self, ETH_LEN, IPV4_LEN, L4},
    require_root,
    traffic::{self, Servers},
};
use nix::sys::signal::Signal;

const UDP_PORT: u16 = 7000;
const TCP_PORT: u16 = 8080;
const WAIT: Duration = Duration::from_millis(1500);
const SHORT: Duration = Duration::from_millis(300);

const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: allow, egress: allow }
workloads:
  - name: web
    addresses: [10.203.0.1, \"fd00:203::1\"]
  - name: locked
    addresses: [10.203.0.3]
    defaults: { ingress: deny }
";

struct Setup {
    lab: Lab,
    files: AgentFiles,
    agent: AgentProcess,
    servers: Vec<Servers>,
}

fn setup(tag: &str, policy: &str) -> Setup {
    let lab = Lab::new(tag);
    let files = AgentFiles::new(tag, SERVER_IF, policy, "");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let servers = vec![
        Servers::start(&lab.server, SERVER.into(), UDP_PORT, TCP_PORT),
        Servers::start(&lab.server, SERVER_B.into(), UDP_PORT, TCP_PORT),
        Servers::start(&lab.server, SERVER6.into(), UDP_PORT, TCP_PORT),
    ];
    Setup {
        lab,
        files,
        agent,
        servers,
    }
}

fn udp(addr: impl Into<std::net::IpAddr>) -> SocketAddr {
    SocketAddr::new(addr.into(), UDP_PORT)
}
fn tcp(addr: impl Into<std::net::IpAddr>) -> SocketAddr {
    SocketAddr::new(addr.into(), TCP_PORT)
}

#[test]
fn allowed_udp_and_tcp_arrive_and_are_counted() {
    if !require_root("allowed_udp_and_tcp_arrive_and_are_counted") {
        return;
    }
    let s = setup("allow", POLICY);
    let c = &s.lab.client;
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER), 20, 100, WAIT),
        20,
        "every UDP echo returns"
    );
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER6), 10, 100, WAIT),
        10,
        "IPv6 UDP echoes return"
    );
    for _ in 0..5 {
        assert!(
            traffic::tcp_hello(c, tcp(SERVER), WAIT),
            "TCP connects and reads"
        );
    }
    // 30 datagrams plus at least 3 packets per TCP connection in, as many replies out.
    let ingress = s.files.packets("web", "ingress", "default_allow");
    let egress = s.files.packets("web", "egress", "default_allow");
    assert!(ingress >= 30 + 15, "ingress allowed {ingress}");
    assert!(egress >= 30 + 10, "egress allowed {egress}");
    assert_eq!(s.files.packets("web", "ingress", "default_deny"), 0);
    drop(s.servers);
}

#[test]
fn denied_workload_receives_nothing() {
    if !require_root("denied_workload_receives_nothing") {
        return;
    }
    let s = setup("deny", POLICY);
    let c = &s.lab.client;
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER_B), 5, 100, SHORT),
        0,
        "no UDP gets through"
    );
    assert!(
        !traffic::tcp_hello(c, tcp(SERVER_B), SHORT),
        "TCP must not connect"
    );
    assert!(s.files.packets("locked", "ingress", "default_deny") >= 6);
    assert_eq!(s.files.packets("locked", "ingress", "default_allow"), 0);
    // The neighbour workload on the same interface is unaffected.
    assert_eq!(traffic::udp_echo(c, udp(SERVER), 3, 100, WAIT), 3);
}

#[test]
fn malformed_frames_are_dropped_with_their_reason() {
    if !require_root("malformed_frames_are_dropped_with_their_reason") {
        return;
    }
    let s = setup("malformed", POLICY);
    let good = packets::v4(
        CLIENT,
        SERVER,
        L4::Tcp {
            sport: 1234,
            dport: TCP_PORT,
        },
        b"",
    );
    let mut bad_ihl = good.clone();
    bad_ihl[ETH_LEN] = 0x43;
    let mut bad_doff = good.clone();
    bad_doff[ETH_LEN + IPV4_LEN + 12] = 0x10;
    let three_tags = packets::push_vlan(
        &packets::v4_tagged(
            &[10, 20],
            CLIENT,
            SERVER,
            L4::Udp { sport: 1, dport: 2 },
            b"x",
        ),
        30,
    );
    let frames: Vec<Vec<u8>> = [(bad_ihl, 3), (bad_doff, 4), (three_tags, 5)]
        .into_iter()
        .flat_map(|(f, n)| std::iter::repeat_n(f, n))
        .collect();
    traffic::inject(&s.lab.client, "c0", &frames);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.files.packets("web", "ingress", "ipv4_bad_ihl"), 3);
    assert_eq!(s.files.packets("web", "ingress", "tcp_bad_data_offset"), 4);
    assert_eq!(
        s.files.packets("(unprotected)", "ingress", "vlan_too_deep"),
        5
    );
}

#[test]
fn enforcement_outlives_the_agent_until_detach() {
    if !require_root("enforcement_outlives_the_agent_until_detach") {
        return;
    }
    let mut s = setup("persist", POLICY);
    let c = &s.lab.client;
    assert_eq!(traffic::udp_echo(c, udp(SERVER), 5, 64, WAIT), 5);
    assert_eq!(s.agent.stop(), Some(0), "SIGTERM is a clean exit");

    // No agent: the pinned programs still enforce and the counters still read.
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER_B), 3, 64, SHORT),
        0,
        "still denied"
    );
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER), 5, 64, WAIT),
        5,
        "still allowed"
    );
    assert!(s.files.packets("web", "ingress", "default_allow") >= 10);
    let denied_before = s.files.packets("locked", "ingress", "default_deny");
    assert!(denied_before >= 3);

    // A new agent adopts the pins: counters continue, enforcement never lapsed.
    let agent = AgentProcess::start(&s.lab.server, &s.files.config());
    assert!(
        agent.log().contains("replaced in the pinned link"),
        "{}",
        agent.log()
    );
    assert!(s.files.packets("locked", "ingress", "default_deny") >= denied_before);
    drop(agent);

    let pin = s.files.pin_dir.display().to_string();
    let (code, out, err) = s.files.cli(&["detach", "--pin-dir", &pin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("detached"), "{out}");
    assert!(!s.files.pin_dir.exists(), "no pins left");
    // veth re-initialises its queues when XDP leaves it; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER_B), 3, 64, WAIT),
        3,
        "detached: traffic flows"
    );
}

#[test]
fn sighup_reloads_and_a_bad_file_keeps_the_running_policy() {
    if !require_root("sighup_reloads_and_a_bad_file_keeps_the_running_policy") {
        return;
    }
    let s = setup("reload", POLICY);
    let c = &s.lab.client;
    std::fs::write(
        s.files.policy(),
        "apiVersion: boundary.dev/v1\nworkloads: [{ name: web }]\n",
    )
    .expect("write bad policy");
    s.agent.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.agent.log().contains("policy reload refused"),
        "{}",
        s.agent.log()
    );
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER), 3, 64, WAIT),
        3,
        "old policy still allows"
    );

    let deny_web = POLICY.replace(
        "  - name: web\n    addresses: [10.203.0.1, \"fd00:203::1\"]\n",
        "  - name: web\n    addresses: [10.203.0.1, \"fd00:203::1\"]\n    defaults: { ingress: deny }\n",
    );
    std::fs::write(s.files.policy(), deny_web).expect("write policy");
    s.agent.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.agent.log().contains("policy reloaded"),
        "{}",
        s.agent.log()
    );
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER), 3, 64, SHORT),
        0,
        "new policy denies"
    );
    assert!(s.files.packets("web", "ingress", "default_deny") >= 3);

    // No signal at all: a ConfigMap-style swap (new file, symlink renamed over the old path)
    // is picked up by the agent's own polling within a few seconds.
    let next = s.files.dir.join("policy-v3.yaml");
    std::fs::write(&next, POLICY).expect("write next policy");
    let link = s.files.dir.join("policy.yaml.tmp");
    std::os::unix::fs::symlink(&next, &link).expect("symlink");
    std::fs::rename(&link, s.files.policy()).expect("swap");
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while !s.agent.log().contains("trigger=\"file change\"") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.agent.log().contains("trigger=\"file change\""),
        "{}",
        s.agent.log()
    );
    assert_eq!(
        traffic::udp_echo(c, udp(SERVER), 3, 64, WAIT),
        3,
        "the swapped-in policy allows again"
    );
}

#[test]
fn ingress_is_tcx_on_a_veth_by_default_and_xdp_native_or_generic_on_request() {
    if !require_root("ingress_is_tcx_on_a_veth_by_default_and_xdp_native_or_generic_on_request") {
        return;
    }
    let lab = Lab::new("mode");
    let link = |ns: &NetNs| {
        let out = std::process::Command::new("ip")
            .args(["-n", ns.name(), "link", "show", SERVER_IF])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // What `status` says is attached, as (interface, hook) pairs.
    let hooks = |files: &AgentFiles| {
        let pin = files.pin_dir.display().to_string();
        let (code, out, err) = files.cli(&["status", "--pin-dir", &pin, "--json"]);
        assert_eq!(code, 0, "{err}");
        let s: serde_json::Value = serde_json::from_str(&out).expect("status json");
        let mut hooks: Vec<String> = s["interfaces"]
            .as_array()
            .expect("interfaces")
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["interface"].as_str().expect("name"),
                    a["hook"].as_str().expect("hook")
                )
            })
            .collect();
        hooks.sort();
        hooks
    };
    let _servers = Servers::start(&lab.server, SERVER.into(), UDP_PORT, TCP_PORT);
    let c = &lab.client;
    let allowed = || traffic::udp_echo(c, udp(SERVER), 3, 100, WAIT);

    let files = AgentFiles::new("mode", SERVER_IF, POLICY, "");
    let agent = AgentProcess::start(&lab.server, &files.config());
    assert!(!link(&lab.server).contains("xdp"), "{}", link(&lab.server));
    assert_eq!(
        hooks(&files),
        [
            format!("{SERVER_IF} tcx egress"),
            format!("{SERVER_IF} tcx ingress")
        ]
    );
    assert_eq!(allowed(), 3);
    drop(agent);

    // A new agent on the same pins, configured for XDP: the tcx ingress link gives way to a
    // native XDP one (attached first, so the interface is never unprotected).
    let mut config = std::fs::read_to_string(files.config()).expect("read config");
    config.push_str("ingress: xdp\n");
    std::fs::write(files.config(), config).expect("write config");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let shown = link(&lab.server);
    assert!(
        shown.contains("xdp") && !shown.contains("xdpgeneric"),
        "{shown}"
    );
    assert_eq!(
        hooks(&files),
        [
            format!("{SERVER_IF} tcx egress"),
            format!("{SERVER_IF} xdp ingress (native)")
        ]
    );
    assert_eq!(allowed(), 3);
    drop(agent);
    drop(files);

    let files = AgentFiles::new("mode", SERVER_IF, POLICY, "ingress: xdp\n");
    let agent = AgentProcess::try_start(&lab.server, &files.config(), &["--xdp-mode", "generic"])
        .expect("generic attach");
    assert!(
        link(&lab.server).contains("xdpgeneric"),
        "{}",
        link(&lab.server)
    );
    drop(agent);
    drop(files);
}

#[test]
fn bad_input_exits_64_and_pins_nothing() {
    // Needs no privileges: the agent refuses before it touches the kernel.
    let files = AgentFiles::new(
        "badinput",
        "s0",
        "apiVersion: boundary.dev/v1\nworkloads:\n  - name: a\n    addresses: [10.0.0.0/8]\n",
        "",
    );
    let config = files.config().display().to_string();
    let (code, _, err) = files.cli(&["run", "--config", &config]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("policy.yaml:4:") && err.contains("single host"),
        "{err}"
    );
    assert!(!files.pin_dir.exists(), "nothing pinned");

    // `check` says the same without root, and a good file passes.
    let policy = files.policy().display().to_string();
    let (code, _, err) = files.cli(&["check", &policy]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("single host"), "{err}");
    std::fs::write(files.policy(), POLICY).expect("write");
    let (code, out, err) = files.cli(&["check", &policy]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid") && out.contains("locked"), "{out}");

    std::fs::write(
        files.config(),
        "interfaces: [s0]\npolicy: policy.yaml\nxdp_mode: native\n",
    )
    .expect("write");
    let (code, _, err) = files.cli(&["run", "--config", &config]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("agent.yaml:3:1: unknown field `xdp_mode`"),
        "{err}"
    );
}
