//! Tier 3, per-workload interfaces: a server namespace with two protected interfaces, `s0`
//! (the lab's veth to the client) and `s1` (a second veth to the client), and workloads
//! listed on one of them. A workload is enforced where it is listed only: the same address
//! reached through the other interface is judged as any other address there (nobody's, or
//! another workload's). `status`, `trace --iface` and a refused interface name, end to end.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::Duration,
};

use boundary_tests::{
    AgentProcess, Lab, NetNs,
    agent::{AgentFiles, agent_bin},
    netns::addr::{SERVER, SERVER_B, SERVER_IF},
    require_root,
    traffic::{self, Servers},
};

const WAIT: Duration = Duration::from_millis(1500);
const SHORT: Duration = Duration::from_millis(300);

/// The second link: `c1` in the client namespace, `s1` in the server's, on a subnet of its
/// own. The client reaches `SERVER_B` through it (a /32 route), `SERVER` through `s0`.
const CLIENT_IF2: &str = "c1";
const SERVER_IF2: &str = "s1";
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 204, 0, 2);

/// web owns both server addresses, on s0 only, and admits nothing.
const WEB_ON_S0: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1, 10.203.0.3]
    interfaces: [s0]
";

/// ... and edge owns `SERVER_B` on s1, admitting ping only.
const WITH_EDGE_ON_S1: &str = "  - name: edge
    addresses: [10.203.0.3]
    interfaces: [s1]
    ingress:
      - { name: ping, from: { any: true }, icmp: [echo-request] }
";

fn at(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// Runs `boundary-agent ARGS` in `ns` (where the agent runs: `trace` and `status` name
/// interfaces as that namespace does); (exit code, stdout, stderr). Through `nsenter`, which
/// keeps this mount namespace's bpffs (`ip netns exec` mounts a /sys of its own).
fn cli_in(ns: &NetNs, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(agent_bin())
        .args(args)
        .output()
        .expect("run boundary-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lab plus the second link, up, with the client's route to `SERVER_B` through it.
fn two_links(tag: &str) -> Lab {
    let lab = Lab::new(tag);
    lab.client.ip(&[
        "link",
        "add",
        CLIENT_IF2,
        "type",
        "veth",
        "peer",
        "name",
        SERVER_IF2,
        "netns",
        lab.server.name(),
    ]);
    lab.client
        .ip(&["addr", "add", &format!("{CLIENT2}/24"), "dev", CLIENT_IF2]);
    lab.server
        .ip(&["addr", "add", "10.204.0.1/24", "dev", SERVER_IF2]);
    lab.client.ip(&["link", "set", CLIENT_IF2, "up"]);
    lab.server.ip(&["link", "set", SERVER_IF2, "up"]);
    lab.client.ip(&[
        "route",
        "add",
        &format!("{SERVER_B}/32"),
        "dev",
        CLIENT_IF2,
        "src",
        &CLIENT2.to_string(),
    ]);
    lab
}

/// `status` shows where web is protected; `trace` answers per interface, and will not guess
/// when the interface decides.
fn status_and_trace_answer_per_interface(server: &NetNs, pin: &str) {
    let (code, out, err) = cli_in(server, &["status", "--pin-dir", pin]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(1 on some interfaces only)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("workload") && l.contains("web") && l.contains("on s0 only")),
        "{out}"
    );
    let trace = |iface: Option<&str>| {
        let mut args = vec![
            "trace",
            "--src",
            "10.204.0.2",
            "--dst",
            "10.203.0.3",
            "--proto",
            "tcp",
            "--dport",
            "8080",
            "--pin-dir",
            pin,
            "--json",
        ];
        if let Some(i) = iface {
            args.extend(["--iface", i]);
        }
        cli_in(server, &args)
    };
    for (iface, workload, reason) in [
        (SERVER_IF, "web", "default_deny"),
        (SERVER_IF2, "(unprotected)", "unprotected"),
    ] {
        let (code, out, err) = trace(Some(iface));
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("trace json");
        assert_eq!(
            (v["workload"].as_str(), v["reason"].as_str()),
            (Some(workload), Some(reason)),
            "{out}"
        );
    }
    let (code, _, err) = trace(None);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--iface"), "{err}");
}

#[test]
fn a_workload_is_enforced_only_on_the_interfaces_it_lists() {
    if !require_root("a_workload_is_enforced_only_on_the_interfaces_it_lists") {
        return;
    }
    let lab = two_links("iface");
    let files = AgentFiles::new(
        "iface",
        &format!("{SERVER_IF}, {SERVER_IF2}"),
        WEB_ON_S0,
        "",
    );
    let agent = AgentProcess::start(&lab.server, &files.config());
    let _servers = [
        Servers::start(&lab.server, SERVER.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER_B.into(), 7000, 8080),
    ];
    let c = &lab.client;
    let pin = files.pin_dir.display().to_string();

    // Through s0, web is enforced: it admits nothing.
    assert!(!traffic::ping(c, SERVER.into(), SHORT), "ping web on s0");
    assert!(
        !traffic::tcp_hello(c, at(SERVER, 8080), SHORT),
        "TCP web on s0"
    );
    let denied = files.packets("web", "ingress", "default_deny");
    assert!(denied >= 2, "web's drops on s0: {denied}");
    // Through s1, web's other address is nobody's: it passes, and web counts nothing.
    let unprotected = files.packets("(unprotected)", "ingress", "unprotected");
    assert!(
        traffic::ping(c, SERVER_B.into(), WAIT),
        "ping SERVER_B on s1"
    );
    assert!(
        traffic::tcp_hello(c, at(SERVER_B, 8080), WAIT),
        "TCP SERVER_B on s1"
    );
    assert!(files.packets("(unprotected)", "ingress", "unprotected") >= unprotected + 4);
    assert_eq!(files.packets("web", "ingress", "default_deny"), denied);
    assert_eq!(files.packets("web", "ingress", "established"), 0);

    status_and_trace_answer_per_interface(&lab.server, &pin);

    // edge joins, on s1: SERVER_B is now its there (ping only), and still web's on s0.
    let both = format!("{WEB_ON_S0}{WITH_EDGE_ON_S1}");
    std::fs::write(files.policy(), &both).expect("write policy");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        traffic::ping(c, SERVER_B.into(), WAIT),
        "edge admits ping on s1"
    );
    assert!(
        !traffic::tcp_hello(c, at(SERVER_B, 8080), SHORT),
        "edge denies TCP on s1"
    );
    assert!(files.packets("edge", "ingress", "policy_allow") >= 1);
    assert!(files.packets("edge", "ingress", "default_deny") >= 1);
    assert!(
        !traffic::ping(c, SERVER.into(), SHORT),
        "web still denies on s0"
    );

    // A name the agent does not protect is refused where it is written; edge keeps working.
    std::fs::write(
        files.policy(),
        both.replace("interfaces: [s1]", "interfaces: [s9]"),
    )
    .expect("write policy");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let log = agent.log();
    assert!(
        log.contains("policy.yaml:10:18: workloads[1].interfaces[0]")
            && log.contains("is not an interface the agent protects"),
        "{log}"
    );
    assert!(
        traffic::ping(c, SERVER_B.into(), WAIT),
        "the running policy stays"
    );
    assert!(!traffic::tcp_hello(c, at(SERVER_B, 8080), SHORT));
}

#[test]
fn the_agent_refuses_to_start_on_a_policy_naming_an_interface_it_does_not_protect() {
    if !require_root(
        "the_agent_refuses_to_start_on_a_policy_naming_an_interface_it_does_not_protect",
    ) {
        return;
    }
    let lab = two_links("ifbad");
    // s1 exists but the agent does not protect it.
    let files = AgentFiles::new(
        "ifbad",
        SERVER_IF,
        &format!("{WEB_ON_S0}{WITH_EDGE_ON_S1}"),
        "",
    );
    let Err((code, log)) = AgentProcess::try_start(&lab.server, &files.config(), &[]) else {
        panic!("the agent started on a policy naming s1");
    };
    assert_eq!(code, Some(64), "{log}");
    assert!(
        log.contains("policy.yaml:10:18: workloads[1].interfaces[0]: \"s1\" is not an interface the agent protects (its config lists s0)"),
        "{log}"
    );
    assert!(
        !files.pin_dir.exists(),
        "a refused start left pins at {}",
        files.pin_dir.display()
    );
    // `check --config` says the same without root or the host, `check` alone lists what it
    // could not check.
    let policy = files.policy().display().to_string();
    let config = files.config().display().to_string();
    let (code, _, err) = files.cli(&["check", &policy, "--config", &config]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(":10:18: workloads[1].interfaces[0]"), "{err}");
    let (code, out, err) = files.cli(&["check", &policy]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("interfaces not checked"), "{out}");
    assert!(out.contains("s0, s1"), "{out}");
}
