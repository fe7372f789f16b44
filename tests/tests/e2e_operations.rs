//! Tier 3, operations: what an operator does to a running host (a second agent started by
//! mistake, a `kill -9`) leaves it enforcing.

use std::{net::SocketAddr, time::Duration};

use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    netns::addr::{SERVER, SERVER_IF},
    require_root,
    traffic::{self, Servers},
};

const POLICY: &str = boundary_tests::agent::ECHO_POLICY;

/// A lab whose server echoes UDP on 7000 (which `POLICY` allows) and 7001 (which it denies),
/// and the agent's files for `POLICY`.
fn lab(tag: &str) -> (Lab, AgentFiles, [Servers; 2]) {
    let lab = Lab::new(tag);
    let files = AgentFiles::new(tag, SERVER_IF, POLICY, "");
    let servers = [
        Servers::start(&lab.server, SERVER.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER.into(), 7001, 8081),
    ];
    (lab, files, servers)
}

/// Whether one datagram to `port` on the server is echoed.
fn echoed(lab: &Lab, port: u16) -> bool {
    traffic::udp_echo(
        &lab.client,
        SocketAddr::new(SERVER.into(), port),
        1,
        32,
        Duration::from_millis(500),
    ) == 1
}

#[test]
fn a_second_agent_on_the_same_pins_exits_and_the_first_keeps_enforcing() {
    if !require_root("a_second_agent_on_the_same_pins_exits_and_the_first_keeps_enforcing") {
        return;
    }
    let (lab, files, _servers) = lab("lock");
    let _first = AgentProcess::start(&lab.server, &files.config());
    assert!(echoed(&lab, 7000), "allowed before");
    assert!(!echoed(&lab, 7001), "denied before");
    let denied_before = files.packets("web", "ingress", "default_deny");

    let second = AgentProcess::try_start(&lab.server, &files.config(), &[]);
    let Err((code, log)) = second else {
        panic!("a second agent on the same pins started");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("another boundary-agent is running on"),
        "the refusal says why: {log}"
    );
    // The first one's generation is intact: the policy still allows and denies.
    assert!(echoed(&lab, 7000), "allowed after");
    assert!(!echoed(&lab, 7001), "denied after");
    assert!(files.packets("web", "ingress", "default_deny") > denied_before);
}

/// Datagrams sent and echoes received by a paced stream.
#[derive(Default)]
struct Stream {
    sent: usize,
    echoed: usize,
}

/// Sends one datagram to `port` every few milliseconds until `stop`, waiting `wait` for each
/// echo.
fn stream(lab: &Lab, port: u16, wait: Duration, stop: &std::sync::atomic::AtomicBool) -> Stream {
    let mut s = Stream::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < deadline {
        s.sent += 1;
        s.echoed += traffic::udp_echo(
            &lab.client,
            SocketAddr::new(SERVER.into(), port),
            1,
            32,
            wait,
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    s
}

#[test]
fn kill_9_under_traffic_then_restart_loses_nothing_and_admits_nothing() {
    if !require_root("kill_9_under_traffic_then_restart_loses_nothing_and_admits_nothing") {
        return;
    }
    let (lab, files, _servers) = lab("kill9");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (allowed, denied) = std::thread::scope(|s| {
        let allowed = s.spawn(|| stream(&lab, 7000, Duration::from_secs(1), &stop));
        let denied = s.spawn(|| stream(&lab, 7001, Duration::from_millis(20), &stop));
        std::thread::sleep(Duration::from_millis(500));
        agent.signal(nix::sys::signal::Signal::SIGKILL);
        // No agent at all for a while: the pinned programs enforce alone.
        std::thread::sleep(Duration::from_millis(1000));
        let restarted = AgentProcess::start(&lab.server, &files.config());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = (
            allowed.join().expect("allowed stream"),
            denied.join().expect("denied stream"),
        );
        drop(restarted);
        out
    });
    assert!(allowed.sent > 20 && denied.sent > 20, "the streams ran");
    assert_eq!(
        allowed.echoed, allowed.sent,
        "every allowed datagram answered, across the kill and the restart"
    );
    assert_eq!(denied.echoed, 0, "no denied datagram admitted");
    // Counters live in the pins: continuous across the kill and the restart, nothing reset.
    assert_eq!(
        files.packets("web", "ingress", "policy_allow"),
        allowed.sent as u64
    );
    assert_eq!(
        files.packets("web", "ingress", "default_deny"),
        denied.sent as u64
    );
}

#[test]
fn an_upgrade_across_an_abi_change_replaces_the_maps_with_traffic_flowing() {
    if !require_root("an_upgrade_across_an_abi_change_replaces_the_maps_with_traffic_flowing") {
        return;
    }
    let (lab, files, _servers) = lab("upgrade");
    let mut old = AgentProcess::start(&lab.server, &files.config());
    assert_eq!(old.stop(), Some(0));
    // The pins now look like an older agent's: another ABI version.
    let abi_pin = files
        .pin_dir
        .join("maps")
        .join(boundary_common::maps::ABI_MAP);
    let mut abi: aya::maps::Array<aya::maps::MapData, u32> =
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(&abi_pin).expect("the ABI pin"))
            .and_then(TryInto::try_into)
            .expect("the ABI map");
    abi.set(0, &1, 0).expect("an older version");
    drop(abi);

    let stop = std::sync::atomic::AtomicBool::new(false);
    let (allowed, denied, log) = std::thread::scope(|s| {
        let allowed = s.spawn(|| stream(&lab, 7000, Duration::from_secs(1), &stop));
        let denied = s.spawn(|| stream(&lab, 7001, Duration::from_millis(20), &stop));
        // The old programs enforce alone, then the new agent replaces every map under them
        // and updates their links.
        std::thread::sleep(Duration::from_millis(300));
        let new = AgentProcess::start(&lab.server, &files.config());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let log = new.log();
        (
            allowed.join().expect("allowed stream"),
            denied.join().expect("denied stream"),
            log,
        )
    });
    assert!(
        log.contains("pins of another agent version"),
        "the upgrade says what it replaced: {log}"
    );
    assert!(allowed.sent > 20 && denied.sent > 20, "the streams ran");
    assert_eq!(allowed.echoed, allowed.sent, "no allowed datagram lost");
    assert_eq!(denied.echoed, 0, "no denied datagram admitted");
}

/// `POLICY` turned around: 7001 allowed, 7000 denied.
fn turned_around() -> String {
    POLICY.replace("7000/udp", "7001/udp")
}

/// Waits (up to `within`) until `port` is echoed (`open`) or not; whether it got there.
fn until_port(lab: &Lab, port: u16, open: bool, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if echoed(lab, port) == open {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn an_unconfirmed_policy_rolls_back_on_time_and_a_confirmed_one_stays() {
    if !require_root("an_unconfirmed_policy_rolls_back_on_time_and_a_confirmed_one_stays") {
        return;
    }
    let (lab, files, _servers) = lab("confirm");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let new = files.dir.join("new.yaml");
    std::fs::write(&new, turned_around()).expect("write");
    let config = files.config().display().to_string();
    let new_path = new.display().to_string();
    let apply = |window: &str| {
        let (code, out, err) =
            files.cli(&["apply", "--config", &config, "--confirm", window, &new_path]);
        assert_eq!(code, 0, "{out}{err}");
    };

    // Not confirmed: in force for its window, then the policy before is back.
    apply("4s");
    assert!(
        until_port(&lab, 7001, true, Duration::from_secs(5)),
        "applied"
    );
    assert!(!echoed(&lab, 7000));
    assert_eq!(metric(&lab, "boundary_policy_pending_confirmation"), 1.0);
    assert_eq!(metric(&lab, "boundary_policy_rollbacks_total"), 0.0);
    assert!(
        until_port(&lab, 7000, true, Duration::from_secs(10)),
        "rolled back after its window"
    );
    assert!(!echoed(&lab, 7001));
    assert!(
        agent.log().contains("was not confirmed in time"),
        "{}",
        agent.log()
    );
    // The file still holds the refused policy: the watch does not apply it again.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        echoed(&lab, 7000) && !echoed(&lab, 7001),
        "stays rolled back"
    );
    assert_eq!(metric(&lab, "boundary_policy_pending_confirmation"), 0.0);
    assert_eq!(metric(&lab, "boundary_policy_rollbacks_total"), 1.0);
    // Nor does a restart: the rolled-back file is known by its digest.
    drop(agent);
    let agent = AgentProcess::start(&lab.server, &files.config());
    assert!(
        echoed(&lab, 7000) && !echoed(&lab, 7001),
        "a restart applied the rolled-back file:\n{}",
        agent.log()
    );
    let (code, _, err) = files.cli(&["confirm", "--config", &config]);
    assert_ne!(code, 0, "nothing to confirm after a rollback");
    assert!(err.contains("rolled back"), "{err}");

    // Confirmed: it stays past its window.
    apply("3s");
    assert!(
        until_port(&lab, 7001, true, Duration::from_secs(5)),
        "applied again"
    );
    let (code, out, err) = files.cli(&["confirm", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        echoed(&lab, 7001) && !echoed(&lab, 7000),
        "a confirmed policy stays"
    );
    assert_eq!(metric(&lab, "boundary_policy_pending_confirmation"), 0.0);
    drop(agent);
}

/// The value of the unlabelled sample `name` on the agent's `/metrics` (the default address,
/// in the server's namespace).
fn metric(lab: &Lab, name: &str) -> f64 {
    let addr = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), 9477);
    let (code, body) = traffic::http_get(&lab.server, addr, "/metrics").expect("scrape");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape:\n{body}"))
}

#[test]
fn a_pending_policy_rolls_back_even_if_the_agent_was_down_at_its_deadline() {
    if !require_root("a_pending_policy_rolls_back_even_if_the_agent_was_down_at_its_deadline") {
        return;
    }
    let (lab, files, _servers) = lab("confirm9");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let new = files.dir.join("new.yaml");
    std::fs::write(&new, turned_around()).expect("write");
    let config = files.config().display().to_string();
    let (code, out, err) = files.cli(&[
        "apply",
        "--config",
        &config,
        "--confirm",
        "2s",
        &new.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        until_port(&lab, 7001, true, Duration::from_secs(5)),
        "applied"
    );
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(3));
    let restarted = AgentProcess::start(&lab.server, &files.config());
    assert!(
        until_port(&lab, 7000, true, Duration::from_secs(5)),
        "the restarted agent puts the policy before back"
    );
    assert!(!echoed(&lab, 7001));
    assert!(
        restarted.log().contains("not confirmed in time"),
        "{}",
        restarted.log()
    );
}

#[test]
fn a_deny_all_policy_still_admits_failsafe_ssh() {
    if !require_root("a_deny_all_policy_still_admits_failsafe_ssh") {
        return;
    }
    // No rule, everything denied both ways; the failsafe is the default (SSH from anywhere).
    let deny_all = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: deny }
workloads:
  - name: web
    addresses: [10.203.0.1]
";
    let lab = Lab::new("lockout");
    let files = AgentFiles::new("lockout", SERVER_IF, deny_all, "");
    let _ssh = Servers::start(&lab.server, SERVER.into(), 7000, 22);
    let _web = Servers::start(&lab.server, SERVER.into(), 7001, 8080);
    let _agent = AgentProcess::start(&lab.server, &files.config());
    assert!(
        traffic::tcp_hello(
            &lab.client,
            SocketAddr::new(SERVER.into(), 22),
            Duration::from_secs(2)
        ),
        "SSH gets through a deny-all policy"
    );
    assert!(!traffic::tcp_hello(
        &lab.client,
        SocketAddr::new(SERVER.into(), 8080),
        Duration::from_millis(500)
    ));
    assert!(!echoed(&lab, 7000));
}

#[test]
fn detach_with_the_agent_running_stops_it_and_enforcement_ends() {
    if !require_root("detach_with_the_agent_running_stops_it_and_enforcement_ends") {
        return;
    }
    let (lab, files, _servers) = lab("glass");
    let mut agent = AgentProcess::start(&lab.server, &files.config());
    assert!(echoed(&lab, 7000), "allowed before");
    assert!(!echoed(&lab, 7001), "denied before");

    let pin = files.pin_dir.display().to_string();
    let started = std::time::Instant::now();
    let (code, out, err) = files.cli(&["detach", "--pin-dir", &pin]);
    assert_eq!(code, 0, "{out}{err}");
    let pid = agent.pid().expect("the agent's pid");
    assert!(
        out.contains(&format!(
            "stopping the agent running on these pins (pid {pid})"
        )) && out.contains(&format!("pid {pid} let go of the pins")),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "detach waited for the agent's timeout: {out}"
    );
    // The agent ended as on SIGTERM (status 0: systemd records a stop, not a failure).
    assert_eq!(agent.stop(), Some(0), "{}", agent.log());
    assert!(!files.pin_dir.exists(), "pins are left: {out}");
    // Nothing enforces any more: the port the policy denied answers, and goes on answering.
    assert!(echoed(&lab, 7001), "still denied after detach");
    assert!(echoed(&lab, 7000));
    std::thread::sleep(Duration::from_secs(3));
    assert!(echoed(&lab, 7001), "something attached again");

    // Detach again: nothing to do, and it says so.
    let (code, out, err) = files.cli(&["detach", "--pin-dir", &pin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing pinned"), "{out}");
}

/// The XDP modes `ip -d link` shows attached to `iface` in `netns`.
fn xdp_attached(netns: &boundary_tests::NetNs, iface: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns.name(), "-d", "link", "show", iface])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    ["xdpgeneric", "xdpdrv", "xdpoffload"]
        .into_iter()
        .filter(|m| text.contains(&format!("{m} ")) || text.contains(&format!("{m}/")))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn a_refused_xdp_mode_change_leaves_the_interface_protected_in_the_mode_it_had() {
    if !require_root("a_refused_xdp_mode_change_leaves_the_interface_protected_in_the_mode_it_had")
    {
        return;
    }
    // A bridge is Ethernet and has no native XDP: generic attaches, native is refused.
    let node = boundary_tests::NetNs::new("bnd-xdpmode");
    let iface = "bndxm0";
    node.ip(&["link", "add", iface, "type", "bridge"]);
    node.ip(&["link", "set", iface, "up"]);
    let files = AgentFiles::new(
        "xdpmode",
        iface,
        POLICY,
        "ingress: xdp\nxdpMode: generic\nallowGenericFallback: false\n",
    );
    let agent = AgentProcess::start(&node, &files.config());
    drop(agent);
    assert_eq!(xdp_attached(&node, iface), "xdpgeneric");
    let generic = files.pin_dir.join(format!("links/xdp:generic:{iface}"));
    assert!(generic.exists());

    // The operator asks for native, which this device cannot do: the agent refuses to start...
    let config = std::fs::read_to_string(files.config()).expect("read");
    std::fs::write(
        files.config(),
        config.replace("xdpMode: generic", "xdpMode: native"),
    )
    .expect("write");
    let Err((code, log)) = AgentProcess::try_start(&node, &files.config(), &[]) else {
        panic!("native XDP attached to a bridge");
    };
    // 64, a configuration this host cannot do: systemd does not restart it in a loop.
    assert_eq!(code, Some(64), "{log}");
    assert!(log.contains("stays protected in the mode it had"), "{log}");
    // ...and the interface is not left bare: a program is attached in the mode it had, pinned.
    assert_eq!(xdp_attached(&node, iface), "xdpgeneric", "{log}");
    assert!(generic.exists(), "{log}");
    assert!(
        !files
            .pin_dir
            .join(format!("links/xdp:native:{iface}"))
            .exists()
    );
}

#[test]
fn detach_stops_an_agent_that_is_still_reading_its_policy() {
    if !require_root("detach_stops_an_agent_that_is_still_reading_its_policy") {
        return;
    }
    let (lab, files, _servers) = lab("glass2");
    // Pins from an agent that ran and stopped: the host is enforcing.
    drop(AgentProcess::start(&lab.server, &files.config()));
    assert!(!echoed(&lab, 7001), "denied with no agent running");

    // A new agent with a policy that takes seconds to read: detach comes while it reads.
    let mut big = String::from(POLICY);
    for i in 0..30_000u32 {
        use std::fmt::Write as _;
        let _ = write!(
            big,
            "      - name: r{i}\n        from: {{ cidr: 10.{}.{}.0/24 }}\n        ports: [\"9/udp\"]\n",
            100 + i / 256 % 100,
            i % 256
        );
    }
    std::fs::write(files.policy(), big).expect("write the policy");
    let mut starting = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.server.path().display()))
        .arg("--")
        .arg(boundary_tests::agent::agent_bin())
        .args(["run", "--config"])
        .arg(files.config())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start an agent");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        starting.try_wait().expect("wait").is_none(),
        "the agent ended before detach"
    );
    let pin = files.pin_dir.display().to_string();
    let (code, out, err) = files.cli(&["detach", "--pin-dir", &pin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("stopping the agent running on these pins"),
        "{out}"
    );
    let status = starting.wait().expect("wait");
    assert!(!status.success(), "the agent was not stopped: {status}");
    // It never attached: nothing enforces, nothing is pinned.
    assert!(!files.pin_dir.exists());
    assert!(echoed(&lab, 7001), "still denied after detach");
}
