//! Tier 3, kernel-side diagnostics: `kernelLog` switched on a running agent, by SIGHUP and by
//! an edit of its config file, replaces the programs in their pinned links with traffic
//! flowing (nothing allowed is lost, nothing denied admitted), and the kernel's records come
//! out in the agent's log under `boundary::kernel` only while it is on.

use std::{
    ffi::OsStr,
    net::SocketAddr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use boundary_tests::{
    AgentProcess, Lab,
    agent::{AgentFiles, ECHO_POLICY},
    netns::addr::{CLIENT, CLIENT_IF, SERVER, SERVER_IF},
    packets::{self, L4},
    require_root,
    traffic::{self, Servers},
};

/// The record a frame with three VLAN tags makes at `debug`.
const VLAN_RECORD: &str = "parse limit hit: more than two VLAN tags reason=vlan_too_deep";

fn three_vlan_tags() -> Vec<u8> {
    packets::push_vlan(
        &packets::v4_tagged(
            &[100, 200],
            CLIENT,
            SERVER,
            L4::Udp { sport: 1, dport: 2 },
            b"x",
        ),
        300,
    )
}

/// Kernel log lines with `needle` in the agent's log so far.
fn kernel_lines(agent: &AgentProcess, needle: &str) -> usize {
    agent
        .log()
        .lines()
        .filter(|l| l.contains("boundary::kernel") && l.contains(needle))
        .count()
}

/// Waits up to `within` for `needle` to appear `count` times in the agent's log.
fn wait_for(agent: &AgentProcess, needle: &str, count: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if agent.log().matches(needle).count() >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The id of the program pinned at `programs/<name>`.
fn pinned_program(pin_dir: &Path, name: &str) -> u32 {
    aya::programs::ProgramInfo::from_pin(pin_dir.join("programs").join(name))
        .expect("pinned program")
        .id()
}

/// Datagrams sent and echoes received by a paced stream to `port`.
fn stream(lab: &Lab, port: u16, wait: Duration, stop: &AtomicBool) -> (usize, usize) {
    let (mut sent, mut echoed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        sent += 1;
        echoed += traffic::udp_echo(
            &lab.client,
            SocketAddr::new(SERVER.into(), port),
            1,
            32,
            wait,
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    (sent, echoed)
}

fn set_kernel_log(files: &AgentFiles, level: &str) {
    let config = std::fs::read_to_string(files.config()).expect("agent config");
    let mut text: String = config
        .lines()
        .filter(|l| !l.starts_with("kernelLog:"))
        .flat_map(|l| [l, "\n"])
        .collect();
    text.push_str("kernelLog: ");
    text.push_str(level);
    text.push('\n');
    std::fs::write(files.config(), text).expect("write config");
}

#[test]
fn kernel_log_switches_on_and_off_without_a_restart_with_traffic_flowing() {
    if !require_root("kernel_log_switches_on_and_off_without_a_restart_with_traffic_flowing") {
        return;
    }
    let lab = Lab::new("klog");
    let files = AgentFiles::new("klog", SERVER_IF, ECHO_POLICY, "");
    let _servers = [
        Servers::start(&lab.server, SERVER.into(), 7000, 8080),
        Servers::start(&lab.server, SERVER.into(), 7001, 8081),
    ];
    // The default filter passes kernel records at every level; the tests' BOUNDARY_LOG=info
    // would hide the debug ones, so it says so too.
    let agent = AgentProcess::try_start_with_env(
        &lab.server,
        &files.config(),
        &[],
        &[("BOUNDARY_LOG", OsStr::new("info,boundary::kernel=debug"))],
    )
    .unwrap_or_else(|(code, log)| panic!("agent exited with {code:?}:\n{log}"));
    assert!(
        wait_for(&agent, "kernel_log=off", 1, Duration::from_secs(5)),
        "off by default: {}",
        agent.log()
    );
    let before = pinned_program(&files.pin_dir, "tc-ingress");

    let stop = AtomicBool::new(false);
    let (allowed, denied) = std::thread::scope(|s| {
        let allowed = s.spawn(|| stream(&lab, 7000, Duration::from_secs(1), &stop));
        let denied = s.spawn(|| stream(&lab, 7001, Duration::from_millis(20), &stop));
        std::thread::sleep(Duration::from_millis(300));

        // Off: the parse limit is counted, nothing is logged.
        traffic::inject(&lab.client, CLIENT_IF, &[three_vlan_tags()]);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(kernel_lines(&agent, VLAN_RECORD), 0, "{}", agent.log());

        // On by SIGHUP (what `systemctl reload` sends).
        set_kernel_log(&files, "debug");
        agent.signal(nix::sys::signal::Signal::SIGHUP);
        assert!(
            wait_for(
                &agent,
                "kernel log level switched",
                1,
                Duration::from_secs(10)
            ),
            "{}",
            agent.log()
        );
        let switched = pinned_program(&files.pin_dir, "tc-ingress");
        assert_ne!(switched, before, "the pinned program was replaced");
        traffic::inject(&lab.client, CLIENT_IF, &[three_vlan_tags()]);
        assert!(
            wait_for(&agent, VLAN_RECORD, 1, Duration::from_secs(5)),
            "the kernel's record arrives: {}",
            agent.log()
        );
        assert_eq!(kernel_lines(&agent, VLAN_RECORD), 1, "{}", agent.log());

        // Off again by an edit of the file alone (a ConfigMap update): the 2 s poll sees it.
        set_kernel_log(&files, "off");
        assert!(
            wait_for(
                &agent,
                "kernel log level switched",
                2,
                Duration::from_secs(10)
            ),
            "{}",
            agent.log()
        );
        assert_ne!(pinned_program(&files.pin_dir, "tc-ingress"), switched);
        traffic::inject(&lab.client, CLIENT_IF, &[three_vlan_tags()]);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(kernel_lines(&agent, VLAN_RECORD), 1, "{}", agent.log());

        stop.store(true, Ordering::Relaxed);
        (
            allowed.join().expect("allowed stream"),
            denied.join().expect("denied stream"),
        )
    });
    assert!(allowed.0 > 20 && denied.0 > 20, "the streams ran");
    assert_eq!(
        allowed.1, allowed.0,
        "every allowed datagram answered across both switches"
    );
    assert_eq!(denied.1, 0, "no denied datagram admitted");
    assert_eq!(
        files.packets("(unprotected)", "ingress", "vlan_too_deep"),
        3,
        "each injected frame was dropped and counted, logged or not"
    );
    assert!(
        !agent.log().contains("ERROR"),
        "no error on the way: {}",
        agent.log()
    );
}
