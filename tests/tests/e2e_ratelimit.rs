//! Tier 3, rate limits with real applications: iperf3 floods a limited UDP rule from the
//! client namespace and the receiver counts what arrived; a bytes limit caps a TCP transfer
//! with offloads on (GSO super-packets pay for their segments); other rules and workloads are
//! untouched meanwhile; a reload that keeps the rule keeps its bucket.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use boundary_tests::{
    Lab,
    agent::{AgentFiles, AgentProcess},
    apps::{self, NsChild, ns_output},
    netns::addr::{CLIENT_IF, SERVER, SERVER_B, SERVER_IF},
    require_root,
    traffic::{self, Servers},
};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - { name: control, from: { any: true }, ports: [\"5201/tcp\", \"5202/tcp\"] }
      - name: flood
        from: { any: true }
        ports: [\"5201/udp\"]
        rateLimit: { packetsPerSecond: 1000, burst: 100 }
      - name: bulk
        from: { any: true }
        ports: [\"5203/tcp\"]
        rateLimit: { bytesPerSecond: 5000000, burstBytes: 1000000 }
      - name: slow
        from: { any: true }
        ports: [\"7002/udp\"]
        rateLimit: { packetsPerSecond: 1, burst: 20 }
      - { name: echo, from: { any: true }, ports: [\"7000/udp\"] }
  - name: other
    addresses: [10.203.0.3]
    ingress:
      - { name: echo, from: { any: true }, ports: [\"7001/udp\"] }
";

fn at(ip: std::net::Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// A number at `path` (dot-separated keys) in iperf3's JSON report.
fn json_number(report: &str, path: &[&str]) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(report).unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {report}"));
    let mut at = &v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {report}"))
}

fn iperf3_server(lab: &Lab, port: u16) -> NsChild {
    let server = NsChild::spawn(
        &lab.server,
        "iperf3",
        &["-s", "-B", &SERVER.to_string(), "-p", &port.to_string()],
    );
    // Until it listens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let filter = format!("sport = :{port}");
    while ns_output(&lab.server, "ss", &["-Htln", &filter])
        .stdout
        .is_empty()
    {
        assert!(Instant::now() < deadline, "iperf3 -s never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// The `slow` rule's rate (packets a second) and burst.
const SLOW_RATE: u64 = 1;
const SLOW_BURST: usize = 20;

/// Waits until at least `secs` have passed since `drained` (when a bucket was left empty),
/// and returns the packets it has refilled since, at the least: `SLOW_RATE` a second, whole
/// packets (a bucket left empty holds nothing less than empty, so this much is there now
/// whatever it held at `drained`).
fn refilled_at_least(drained: Instant, secs: u64) -> usize {
    let wait = Duration::from_secs(secs).saturating_sub(drained.elapsed());
    std::thread::sleep(wait);
    let since = drained.elapsed().as_secs();
    usize::try_from(since * SLOW_RATE).expect("small")
}

fn iperf3_client(lab: &Lab, args: &[&str]) -> String {
    let out = ns_output(&lab.client, "iperf3", args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "iperf3 {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_udp_flood_is_cut_to_the_limit_at_the_receiver_and_other_traffic_is_untouched() {
    if !require_root(
        "a_udp_flood_is_cut_to_the_limit_at_the_receiver_and_other_traffic_is_untouched",
    ) {
        return;
    }
    let lab = Lab::new("rlflood");
    let files = AgentFiles::new("rlflood", SERVER_IF, POLICY, "");
    let _echo = Servers::start(&lab.server, SERVER.into(), 7000, 8080);
    let _other = Servers::start(&lab.server, SERVER_B.into(), 7001, 8081);
    let _agent = AgentProcess::start(&lab.server, &files.config());
    let _server = iperf3_server(&lab, 5201);
    // 2000 datagrams a second of 1000 bytes for 3 s: twice the limit.
    let secs = 3.0;
    let (report, echoed) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            iperf3_client(
                &lab,
                &[
                    "-c",
                    &SERVER.to_string(),
                    "-p",
                    "5201",
                    "-u",
                    "-b",
                    "16M",
                    "-l",
                    "1000",
                    "-t",
                    "3",
                    "--json",
                ],
            )
        });
        // Meanwhile another rule and another workload answer every datagram.
        std::thread::sleep(Duration::from_millis(500));
        let echoed = [at(SERVER, 7000), at(SERVER_B, 7001)]
            .map(|to| traffic::udp_echo(&lab.client, to, 50, 64, Duration::from_millis(500)));
        (flood.join().expect("iperf3"), echoed)
    });
    assert_eq!(echoed, [50, 50], "other traffic lost during the flood");
    let sent = json_number(&report, &["end", "sum", "packets"]);
    let lost = json_number(&report, &["end", "sum", "lost_packets"]);
    let received = sent - lost;
    let expected = 100.0 + 1000.0 * secs;
    println!("sent {sent}, received {received}, limit admits {expected}");
    assert!(
        sent > 1.6 * expected,
        "the flood was not above the limit: {sent}"
    );
    assert!(
        (received - expected).abs() <= 0.1 * expected,
        "received {received} datagrams, the limit admits {expected}"
    );
    let limited =
        f64::from(u32::try_from(files.packets("web", "ingress", "rate_limited")).expect("small"));
    assert!(
        (limited - lost).abs() <= 0.05 * lost + 10.0,
        "rate_limited {limited}, iperf3 lost {lost}"
    );
}

#[test]
fn a_bytes_limit_caps_a_tcp_transfer_with_offloads_on() {
    if !require_root("a_bytes_limit_caps_a_tcp_transfer_with_offloads_on") {
        return;
    }
    let lab = Lab::new("rlbytes");
    // Offloads on, whatever the veths' defaults: the client's TCP then sends GSO
    // super-packets of many segments, each of which must pay for every segment's bytes.
    apps::set_offloads(&lab.client, CLIENT_IF, true);
    apps::set_offloads(&lab.server, SERVER_IF, true);
    let files = AgentFiles::new("rlbytes", SERVER_IF, POLICY, "");
    let _agent = AgentProcess::start(&lab.server, &files.config());
    let _server = iperf3_server(&lab, 5203);
    let secs = 4.0;
    let report = iperf3_client(
        &lab,
        &["-c", &SERVER.to_string(), "-p", "5203", "-t", "4", "--json"],
    );
    let received = json_number(&report, &["end", "sum_received", "bytes"]);
    let limit = 1_000_000.0 + 5_000_000.0 * secs;
    println!(
        "received {received} bytes in {secs} s; the limit admits {limit} (TCP backs off below it)"
    );
    assert!(
        received <= 1.05 * limit,
        "received {received} bytes, above the limit's {limit}"
    );
    assert!(
        received >= 0.3 * limit,
        "received {received} bytes: TCP starved far below the limit's {limit}"
    );
    assert!(files.packets("web", "ingress", "rate_limited") > 0);
}

#[test]
fn a_reload_that_keeps_the_rule_keeps_its_bucket() {
    if !require_root("a_reload_that_keeps_the_rule_keeps_its_bucket") {
        return;
    }
    let lab = Lab::new("rlreload");
    let files = AgentFiles::new("rlreload", SERVER_IF, POLICY, "");
    let _echo = Servers::start(&lab.server, SERVER.into(), 7002, 8080);
    let agent = AgentProcess::start(&lab.server, &files.config());
    let slow = at(SERVER, 7002);
    let spent = Instant::now();
    let first = traffic::udp_echo(&lab.client, slow, 25, 32, Duration::from_millis(200));
    let drained = Instant::now();
    assert!(
        (SLOW_BURST..=SLOW_BURST + 2).contains(&first),
        "burst of {SLOW_BURST}: {first} echoed"
    );
    // An unrelated change, reloaded.
    let policy = POLICY.replace(
        "      - { name: echo, from: { any: true }, ports: [\"7000/udp\"] }\n",
        "      - { name: echo, from: { any: true }, ports: [\"7000/udp\"] }\n      - { name: new, from: { any: true }, ports: [\"9999/udp\"] }\n",
    );
    std::fs::write(files.policy(), policy).expect("write policy");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("policy reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The bucket is the one the burst emptied: what comes back is what refilled since (one a
    // second), not a new burst of 20, and not nothing either (a rule left without its
    // bucket, or a bucket that never refills, admits none).
    let least = refilled_at_least(drained, 4);
    let again = traffic::udp_echo(
        &lab.client,
        slow,
        SLOW_BURST,
        32,
        Duration::from_millis(100),
    );
    let refilled = usize::try_from(spent.elapsed().as_secs()).unwrap_or(usize::MAX) + 1;
    println!("{again} echoed after the reload: at least {least}, at most {refilled} refilled");
    assert!(
        (least..=refilled).contains(&again),
        "{again} echoed after the reload; the kept bucket refilled at least {least} since it was emptied and at most {refilled} since the burst"
    );
    assert!(
        refilled < SLOW_BURST,
        "the test ran too slowly to tell a kept bucket from a new one"
    );
}

#[test]
fn kill_9_and_a_restart_keep_every_bucket() {
    if !require_root("kill_9_and_a_restart_keep_every_bucket") {
        return;
    }
    let lab = Lab::new("rlkill9");
    let files = AgentFiles::new("rlkill9", SERVER_IF, POLICY, "");
    let _echo = Servers::start(&lab.server, SERVER.into(), 7002, 8080);
    let agent = AgentProcess::start(&lab.server, &files.config());
    let slow = at(SERVER, 7002);
    let spent = Instant::now();
    let first = traffic::udp_echo(&lab.client, slow, 25, 32, Duration::from_millis(200));
    let drained = Instant::now();
    assert!(
        (SLOW_BURST..=SLOW_BURST + 2).contains(&first),
        "burst of {SLOW_BURST}: {first} echoed"
    );
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    // Enforced meanwhile by the pinned programs, from the same bucket.
    let alone = traffic::udp_echo(&lab.client, slow, 5, 32, Duration::from_millis(100));
    let _restarted = AgentProcess::start(&lab.server, &files.config());
    // What refilled since the bucket was emptied is there for `alone` and `again` together:
    // at least that many pass (a rule left without its bucket admits none), at most what
    // refilled since the burst (a new bucket would give 20 more).
    let least = refilled_at_least(drained, 4);
    let again = traffic::udp_echo(
        &lab.client,
        slow,
        SLOW_BURST,
        32,
        Duration::from_millis(100),
    );
    let refilled = usize::try_from(spent.elapsed().as_secs()).unwrap_or(usize::MAX) + 1;
    println!(
        "{alone} echoed with no agent and {again} after the restart: at least {least}, at most {refilled} refilled"
    );
    assert!(
        (least..=refilled).contains(&(alone + again)),
        "{alone} echoed with no agent and {again} after the restart; the kept bucket refilled at least {least} since it was emptied and at most {refilled} since the burst"
    );
    assert!(
        refilled < SLOW_BURST,
        "the test ran too slowly to tell a kept bucket from a new one"
    );
}
