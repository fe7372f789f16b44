//! Tier 3, observability: `/metrics` scraped by a real Prometheus server (run by the test, on
//! the lab's loopback), `promtool check metrics`, health endpoints, `monitor`, event sampling
//! under a flood, and the CLI counters agreeing with the metrics.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use boundary_tests::{
    AgentProcess, Lab, NetNs,
    agent::{AgentFiles, agent_bin},
    netns::addr::{CLIENT, SERVER, SERVER_IF},
    packets::{self, L4},
    require_root,
    traffic::{self, Servers},
};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: echo
        from: { cidr: 10.203.0.0/24 }
        ports: [\"7000/udp\"]
  - name: spare
    addresses: [10.203.0.3]
";

/// The address the agent's HTTP endpoints bound (the config asks for port 0).
fn metrics_address(agent: &AgentProcess) -> SocketAddr {
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("metrics and health endpoints listening"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let addr = line.rsplit("address=").next().expect("address field");
    addr.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?}: {e}"))
}

fn setup(tag: &str) -> (Lab, AgentFiles, AgentProcess, Servers) {
    let lab = Lab::new(tag);
    let files = AgentFiles::new(tag, SERVER_IF, POLICY, "metricsAddress: \"127.0.0.1:0\"\n");
    let agent = AgentProcess::start(&lab.server, &files.config());
    let servers = Servers::start(&lab.server, SERVER.into(), 7000, 8080);
    (lab, files, agent, servers)
}

/// A process the test started, killed by PID on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Starts Prometheus in `ns`, scraping `target` every second; returns it and its address.
fn prometheus(ns: &NetNs, dir: &std::path::Path, target: SocketAddr) -> (Process, SocketAddr) {
    let listen: SocketAddr = "127.0.0.1:19090".parse().expect("addr");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: boundary\n    static_configs:\n      - targets: [\"{target}\"]\n"),
    )
    .expect("write prometheus config");
    let child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["--", "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus (package prometheus)");
    (Process(child), listen)
}

/// The value of a `PromQL` instant query once Prometheus has it.
fn query(ns: &NetNs, prom: SocketAddr, promql: &str, want: &str) -> String {
    let path = format!("/api/v1/query?query={}", url_encode(promql));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some((200, body)) = traffic::http_get(ns, prom, &path) {
            let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus json");
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                value.clone_into(&mut last);
                if last == want {
                    return last;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    last
}

/// Every family the Grafana dashboard relies on is exported (`xdp_attach_mode` has no
/// sample here: the lab's veth takes ingress at tcx), and the ingress hook says so.
fn assert_families(body: &str) {
    for family in boundary_agent::metrics::FAMILIES {
        let type_line = format!("\n# TYPE {family} ");
        assert!(
            body.contains(&format!("\n{family}"))
                || (*family == "boundary_xdp_attach_mode" && body.contains(&type_line)),
            "{family} missing from the scrape"
        );
    }
    let hook = format!("\nboundary_ingress_hook{{interface=\"{SERVER_IF}\",hook=\"tc\"}} 1\n");
    assert!(body.contains(&hook), "a veth takes ingress at tcx: {body}");
}

#[test]
fn prometheus_scrapes_exact_counts_that_match_the_cli() {
    if !require_root("prometheus_scrapes_exact_counts_that_match_the_cli") {
        return;
    }
    let (lab, files, agent, _servers) = setup("prom");
    let metrics = metrics_address(&agent);
    assert_eq!(
        traffic::http_get(&lab.server, metrics, "/healthz").map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        traffic::http_get(&lab.server, metrics, "/readyz").map(|r| r.0),
        Some(200)
    );

    // A known mix: 4 allowed datagrams, 3 denied ones (each its own socket, one packet each).
    assert_eq!(
        traffic::udp_echo(
            &lab.client,
            SocketAddr::new(SERVER.into(), 7000),
            4,
            32,
            Duration::from_secs(2)
        ),
        4
    );
    for _ in 0..3 {
        assert_eq!(
            traffic::udp_echo(
                &lab.client,
                SocketAddr::new(SERVER.into(), 7001),
                1,
                32,
                Duration::from_millis(200)
            ),
            0
        );
    }

    let (code, body) = traffic::http_get(&lab.server, metrics, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE boundary_packets_total counter"),
        "{body}"
    );
    assert!(!body.contains("_total_total"), "double _total: {body}");
    assert_families(&body);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(promtool.stdin.as_mut().expect("stdin"), body.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (_prom, prom_addr) = prometheus(&lab.server, &files.dir, metrics);
    let denied = query(
        &lab.server,
        prom_addr,
        "boundary_packets_total{workload=\"web\",direction=\"ingress\",reason=\"default_deny\"}",
        "3",
    );
    assert_eq!(
        denied, "3",
        "Prometheus sees exactly the three denied packets"
    );
    assert_eq!(
        files.packets("web", "ingress", "default_deny"),
        3,
        "the CLI agrees"
    );
    let allowed = query(
        &lab.server,
        prom_addr,
        "boundary_rule_hits_total{workload=\"web\",rule=\"echo\"}",
        "4",
    );
    assert_eq!(allowed, "4", "rule hits for the allowed datagrams");
    assert_eq!(files.packets("web", "ingress", "policy_allow"), 4);

    // A workload removed from the policy loses its series.
    let (_, body) = traffic::http_get(&lab.server, metrics, "/metrics").expect("scrape");
    assert!(body.contains("workload=\"web\""));
    std::fs::write(
        files.policy(),
        POLICY.replace("  - name: web\n", "  - name: web2\n"),
    )
    .expect("write");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let (_, body) = traffic::http_get(&lab.server, metrics, "/metrics").expect("scrape");
    assert!(!body.contains("workload=\"web\""), "{body}");
}

#[test]
fn monitor_shows_a_denied_packet() {
    if !require_root("monitor_shows_a_denied_packet") {
        return;
    }
    let (lab, files, _agent, _servers) = setup("monitor");
    let pin = files.pin_dir.display().to_string();
    let mut monitor = Process(
        Command::new(agent_bin())
            .args([
                "monitor",
                "--pin-dir",
                &pin,
                "--json",
                "--count",
                "1",
                "--reason",
                "default_deny",
                "--duration",
                "20",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("monitor"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let frame = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 4444,
            dport: 7001,
        },
        b"knock",
    );
    traffic::inject(&lab.client, "c0", &[frame]);
    let stdout = monitor.0.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("an event")
        .expect("read");
    let e: serde_json::Value = serde_json::from_str(&line).expect("json event");
    assert_eq!(e["workload"], "web", "{line}");
    assert_eq!(e["direction"], "ingress");
    assert_eq!(e["verdict"], "drop");
    assert_eq!(e["reason"], "default_deny");
    assert_eq!(e["src"], CLIENT.to_string());
    assert_eq!(e["dst"], SERVER.to_string());
    assert_eq!(e["sport"], 4444);
    assert_eq!(e["dport"], 7001);
    assert_eq!(e["proto"], 17);
    assert!(
        e["identity"].as_u64().is_some_and(|i| i >= 2),
        "the client's CIDR identity: {line}"
    );
}

#[test]
fn event_sampling_bounds_a_flood() {
    if !require_root("event_sampling_bounds_a_flood") {
        return;
    }
    let (lab, files, _agent, _servers) = setup("flood");
    let frame = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 1,
            dport: 7001,
        },
        b"flood",
    );
    let frames = vec![frame; 20_000];
    let start = Instant::now();
    traffic::inject(&lab.client, "c0", &frames);
    let secs = start.elapsed().as_secs_f64() + 0.5;
    std::thread::sleep(Duration::from_millis(300));
    let pin = files.pin_dir.display().to_string();
    let (code, out, err) = files.cli(&["status", "--pin-dir", &pin, "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).expect("status json");
    let (sent, lost) = (
        s["drop_events_sent"].as_u64().expect("sent"),
        s["drop_events_lost"].as_u64().expect("lost"),
    );
    let cpus =
        u32::try_from(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
            .expect("cpus");
    let bound = f64::from(cpus) * (200.0 + 1000.0 * secs);
    assert!(
        f64::from(u32::try_from(sent).expect("small")) <= bound,
        "{sent} events sent in {secs:.2} s, budget {bound}"
    );
    assert!(lost > 0, "a flood must exceed the budget");
    assert_eq!(
        sent + lost,
        files.packets("web", "ingress", "default_deny"),
        "every drop is either sent or counted lost"
    );
    assert_eq!(s["interfaces"].as_array().map(Vec::len), Some(2), "{out}");
}

/// `boundary_rule_hits_total` of workload `web`, by rule label.
fn rule_hits(body: &str) -> std::collections::BTreeMap<String, u64> {
    body.lines()
        .filter(|l| l.starts_with("boundary_rule_hits_total{") && l.contains("workload=\"web\""))
        .filter_map(|l| {
            let rule = l.split("rule=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit(' ').next()?.parse().ok()?;
            Some((rule.to_owned(), value))
        })
        .collect()
}

/// `POLICY` with web's ingress rules replaced by UDP rules `(name, port)` from the client's
/// subnet; an empty name leaves the rule unnamed.
fn policy(rules: &[(&str, u16)]) -> String {
    let mut p = POLICY[..POLICY.find("    ingress:\n").expect("ingress")].to_owned();
    p.push_str("    ingress:\n");
    for (name, port) in rules {
        let name = if name.is_empty() {
            String::new()
        } else {
            format!("name: {name}, ")
        };
        let _ = writeln!(
            p,
            "      - {{ {name}from: {{ cidr: 10.203.0.0/24 }}, ports: [\"{port}/udp\"] }}"
        );
    }
    p.push_str("  - name: spare\n    addresses: [10.203.0.3]\n");
    p
}

#[test]
fn rule_counters_stay_with_their_rules_across_reloads_and_restarts() {
    if !require_root("rule_counters_stay_with_their_rules_across_reloads_and_restarts") {
        return;
    }
    let v1 = policy(&[("a", 7100), ("", 7101), ("c", 7102)]);
    let lab = Lab::new("rids");
    let files = AgentFiles::new("rids", SERVER_IF, &v1, "metricsAddress: \"127.0.0.1:0\"\n");
    let mut agent = AgentProcess::start(&lab.server, &files.config());
    let send = |port: u16, n: usize| {
        traffic::udp_echo(
            &lab.client,
            SocketAddr::new(SERVER.into(), port),
            n,
            16,
            Duration::from_millis(50),
        );
    };
    // Scrapes until the rule labels are `want`'s; the counts then.
    let scrape = |agent: &AgentProcess, want: &[&str]| {
        let metrics = metrics_address(agent);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = traffic::http_get(&lab.server, metrics, "/metrics").expect("scrape");
            let hits = rule_hits(&body);
            let labels: Vec<&str> = hits.keys().map(String::as_str).collect();
            let mut wanted = want.to_vec();
            wanted.sort_unstable();
            if labels == wanted {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "labels {labels:?}, want {wanted:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let reload = |text: &str| {
        std::fs::write(files.policy(), text).expect("write the policy");
        agent.signal(nix::sys::signal::Signal::SIGHUP);
    };

    send(7100, 5);
    send(7101, 3);
    send(7102, 2);
    let (_, body) =
        traffic::http_get(&lab.server, metrics_address(&agent), "/metrics").expect("scrape");
    let unnamed = rule_hits(&body)
        .into_keys()
        .find(|k| k.starts_with("web/ingress/"))
        .expect("the unnamed rule's label");
    let h1 = scrape(&agent, &["a", &unnamed, "c"]);
    assert_eq!(
        (h1["a"], h1[&unnamed], h1["c"]),
        (5, 3, 2),
        "each rule's own packets"
    );

    // A rule inserted first and the others reordered: every count stays with its rule.
    reload(&policy(&[
        ("d", 7103),
        ("c", 7102),
        ("", 7101),
        ("a", 7100),
    ]));
    let _ = scrape(&agent, &["a", &unnamed, "c", "d"]);
    for port in 7100..=7103 {
        send(port, 1);
    }
    let h2 = scrape(&agent, &["a", &unnamed, "c", "d"]);
    assert_eq!(
        (h2["a"], h2[&unnamed], h2["c"], h2["d"]),
        (6, 4, 3, 1),
        "reordered and inserted"
    );

    // One removed, one renamed: the renamed one starts afresh, the removed one's series goes.
    reload(&policy(&[("d", 7103), ("c2", 7102), ("", 7101)]));
    let _ = scrape(&agent, &[&unnamed, "c2", "d"]);
    for port in 7100..=7103 {
        send(port, 1);
    }
    let h3 = scrape(&agent, &[&unnamed, "c2", "d"]);
    assert_eq!(
        (h3[&unnamed], h3["c2"], h3["d"]),
        (5, 1, 2),
        "removed and renamed"
    );

    // A restarted agent adopts the pins and keeps every rule's id, so its count.
    assert_eq!(agent.stop(), Some(0));
    let agent = AgentProcess::start(&lab.server, &files.config());
    for port in 7101..=7103 {
        send(port, 1);
    }
    let h4 = scrape(&agent, &[&unnamed, "c2", "d"]);
    assert_eq!(
        (h4[&unnamed], h4["c2"], h4["d"]),
        (6, 2, 3),
        "after a restart"
    );
}
