//! Tier 3, rate limits as an operator sees them: a UDP flood from the client namespace at a
//! limited rule, with the agent as a process. `/metrics` (checked by `promtool`) shows the
//! refused packets under the right workload and rule, in the per-workload counters as
//! `rate_limited` and beside the configured limit; `check` and `trace` show the limit, trace
//! the bucket's fill from the live maps; `monitor` streams the sampled `rate_limited` drops.
//! A flood of sources at a `per: source` limit shows in its sources and evictions, and trace
//! shows a source's own bucket and the rule's ceiling.
//! (That the limit is exact, on every hook and under CPU skew, is `kernel_ratelimit.rs`.)

use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use boundary_tests::{
    AgentProcess, Lab,
    agent::{AgentFiles, agent_bin},
    netns::addr::{CLIENT, SERVER, SERVER_IF},
    packets::{self, L4},
    require_root,
    traffic::{self, Servers},
};

/// A slow rate and a deep burst: the flood spends the burst at once, and the bucket refills
/// slowly enough that its fill after the flood is far from full whatever the machine's pace.
const RATE: u64 = 2;
const BURST: u64 = 50;

fn policy() -> String {
    format!(
        "\
apiVersion: boundary.dev/v1
defaults: {{ ingress: deny, egress: allow }}
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: echo
        from: {{ cidr: 10.203.0.0/24 }}
        ports: [\"7000/udp\"]
      - name: flood
        from: {{ cidr: 10.203.0.0/24 }}
        ports: [\"7002/udp\"]
        rateLimit: {{ packetsPerSecond: {RATE}, burst: {BURST} }}
"
    )
}

/// A process the test started, killed by PID on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of the sample `series` (name and labels, exactly as exported) in a scrape.
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `trace` of a datagram from the client to `port` on the live maps, as JSON.
fn trace(files: &AgentFiles, port: u16) -> serde_json::Value {
    trace_from(files, CLIENT.into(), port)
}

/// `trace` of a datagram from `src` to `port` on the live maps, as JSON.
fn trace_from(files: &AgentFiles, src: IpAddr, port: u16) -> serde_json::Value {
    let pin = files.pin_dir.display().to_string();
    let (code, out, err) = files.cli(&[
        "trace",
        "--src",
        &src.to_string(),
        "--dst",
        &SERVER.to_string(),
        "--proto",
        "udp",
        "--dport",
        &port.to_string(),
        "--pin-dir",
        &pin,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_flood_at_a_limited_rule_shows_in_metrics_trace_check_and_monitor() {
    if !require_root("a_flood_at_a_limited_rule_shows_in_metrics_trace_check_and_monitor") {
        return;
    }
    let lab = Lab::new("rlobs");
    let files = AgentFiles::new(
        "rlobs",
        SERVER_IF,
        &policy(),
        "metricsAddress: \"127.0.0.1:0\"\n",
    );
    let agent = AgentProcess::start(&lab.server, &files.config());
    let _servers = Servers::start(&lab.server, SERVER.into(), 7000, 8080);

    check_lists_the_limit(&files);
    trace_finds_the_bucket_full(&files);
    let mut monitor = start_monitor(&files);
    std::thread::sleep(Duration::from_millis(500));

    // The flood: each frame its own datagram, at whatever pace the raw socket goes.
    let offered = 3_000u64;
    let frame = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 5555,
            dport: 7002,
        },
        b"flood",
    );
    let started = Instant::now();
    traffic::inject(
        &lab.client,
        "c0",
        &vec![frame; usize::try_from(offered).expect("small")],
    );
    let flooding = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));

    monitor_shows_a_rate_limited_drop(&mut monitor);
    // The unlimited rule beside it is untouched.
    assert_eq!(
        traffic::udp_echo(
            &lab.client,
            SocketAddr::new(SERVER.into(), 7000),
            5,
            32,
            Duration::from_secs(2)
        ),
        5,
        "the echo rule's traffic passes"
    );
    let (code, body) =
        traffic::http_get(&lab.server, agent.metrics_address(), "/metrics").expect("scrape");
    assert_eq!(code, 200);
    let (hits, limited) = metrics_show_the_limit(&body, offered, started.elapsed().as_secs_f64());
    eprintln!(
        "offered {offered} in {flooding:.3} s: the rule matched {hits}, admitted {}, refused {limited}",
        hits - limited
    );
    promtool_accepts(&body);
    trace_finds_the_bucket_drained(&files, started);
}

/// `check` lists the limit with its rule, and none with the other.
fn check_lists_the_limit(files: &AgentFiles) {
    let (code, out, err) = files.cli(&["check", &files.policy().display().to_string()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "flood (allow from cidr 10.203.0.0/24); limit {RATE} pkt/s burst {BURST} per rule"
        )),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("echo (allow") && !l.contains("limit")),
        "{out}"
    );
}

/// Before any traffic, trace finds the limit on the rule and its bucket full.
fn trace_finds_the_bucket_full(files: &AgentFiles) {
    let before = trace(files, 7002);
    assert_eq!(before["reason"], "policy_allow", "{before}");
    assert_eq!(
        before["limit"]["configured"],
        format!("{RATE} pkt/s burst {BURST} per rule"),
        "{before}"
    );
    let bucket = &before["limit"]["bucket"];
    assert_eq!(bucket["packets"]["available"], BURST, "{before}");
    assert_eq!(bucket["packets"]["burst"], BURST, "{before}");
    assert_eq!(bucket["next"], "pass", "{before}");
    assert!(bucket["bytes"].is_null(), "no byte limit: {before}");
    assert!(
        trace(files, 7000)["limit"].is_null(),
        "the echo rule has no limit"
    );
}

/// `monitor` for one `rate_limited` event, naming rules from the policy file.
fn start_monitor(files: &AgentFiles) -> Process {
    Process(
        Command::new(agent_bin())
            .args([
                "monitor",
                "--pin-dir",
                &files.pin_dir.display().to_string(),
                "--json",
                "--count",
                "1",
                "--reason",
                "rate_limited",
                "--duration",
                "20",
                "--policy",
                &files.policy().display().to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("monitor"),
    )
}

fn monitor_shows_a_rate_limited_drop(monitor: &mut Process) {
    let stdout = monitor.0.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a rate_limited event")
        .expect("read");
    let e: serde_json::Value = serde_json::from_str(&line).expect("json event");
    assert_eq!(e["reason"], "rate_limited", "{line}");
    assert_eq!(e["verdict"], "drop", "{line}");
    assert_eq!(e["workload"], "web", "{line}");
    assert_eq!(e["dport"], 7002, "{line}");
    assert_eq!(e["rule_name"], "#1 flood", "{line}");
}

/// The scrape after `offered` packets at the limited rule, `since` seconds after the flood
/// began: what the rule refused, under the workload's counters too, and the configured
/// limit. Returns (hits, limited).
fn metrics_show_the_limit(body: &str, offered: u64, since: f64) -> (u64, u64) {
    let rule = "{workload=\"web\",direction=\"ingress\",rule=\"flood\"}";
    let hits = sample(body, &format!("boundary_rule_hits_total{rule}")).expect("hits");
    let limited = sample(
        body,
        &format!("boundary_rule_rate_limited_packets_total{rule}"),
    )
    .unwrap_or_else(|| panic!("no limited count for the rule:\n{body}"));
    let by_reason = sample(
        body,
        "boundary_packets_total{workload=\"web\",direction=\"ingress\",verdict=\"drop\",reason=\"rate_limited\"}",
    )
    .unwrap_or_else(|| panic!("no rate_limited packets for web:\n{body}"));
    let admitted = hits - limited;
    assert!(
        hits <= offered && hits >= offered / 2,
        "{hits} of {offered} arrived"
    );
    assert!(limited > 0, "a flood at {RATE}/s must be limited");
    assert_eq!(
        by_reason, limited,
        "the workload's rate_limited counter and the rule's agree (one limited rule)"
    );
    // Burst + rate x time: the burst at once, then the rate for however long the flood lasted
    // (bounded generously by everything since it started).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "seconds of a test run and counts far below 2^52"
    )]
    let most = BURST + (RATE as f64 * (since + 1.0)).ceil() as u64;
    assert!(
        (BURST..=most).contains(&admitted),
        "admitted {admitted}: between the burst ({BURST}) and burst + rate x {since:.1} s ({most})"
    );
    for (family, value) in [
        ("boundary_rule_rate_limit_packets_per_second", RATE),
        ("boundary_rule_rate_limit_burst_packets", BURST),
    ] {
        let series = format!(
            "{family}{{workload=\"web\",direction=\"ingress\",rule=\"flood\",per=\"rule\"}}"
        );
        assert_eq!(sample(body, &series), Some(value), "{series} in:\n{body}");
    }
    assert!(
        !body.contains("boundary_rule_rate_limit_bytes_per_second{"),
        "no byte limit, no byte series"
    );
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("boundary_rule_rate_limit") && l.contains("rule=\"echo\"")),
        "the unlimited rule has no limit series:\n{body}"
    );
    (hits, limited)
}

fn promtool_accepts(body: &str) {
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
}

/// After the flood, trace sees the bucket drained: refilled at the rate since the flood
/// began at most (it spent the burst at once), and the text form says so.
fn trace_finds_the_bucket_drained(files: &AgentFiles, started: Instant) {
    let after = trace(files, 7002);
    let since = started.elapsed().as_secs_f64();
    let available = after["limit"]["bucket"]["packets"]["available"]
        .as_u64()
        .expect("available");
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let (refilled, available_f) = ((RATE as f64 * since).ceil() + 1.0, available as f64);
    assert!(
        available_f <= refilled,
        "{available} packets in the bucket {since:.1} s after the flood began: {after}"
    );
    let out = trace_text(files, 7002);
    assert!(
        out.contains(&format!("limit     {RATE} pkt/s burst {BURST} per rule\n")),
        "{out}"
    );
    assert!(
        out.contains("bucket    holds ") && out.contains(&format!(" of {BURST} packets now")),
        "{out}"
    );
}

/// A per-source limit: each source 50 packets at once, one a second after; at most 16
/// sources' buckets kept; every source's packets also pay a rule-wide ceiling of 1000.
const PER_SOURCE_POLICY: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: spoofed
        from: { cidr: 10.0.0.0/8 }
        ports: [\"7003/udp\"]
        rateLimit: { packetsPerSecond: 1, burst: 50, per: source, maxSources: 16, ceiling: { packetsPerSecond: 1, burst: 1000 } }
";
const SOURCE_BURST: u64 = 50;
const MAX_SOURCES: u64 = 16;
const CEILING_BURST: u64 = 1000;

fn datagram_from(src: Ipv4Addr) -> Vec<u8> {
    packets::v4(
        src,
        SERVER,
        L4::Udp {
            sport: 5555,
            dport: 7003,
        },
        b"flood",
    )
}

/// A number at `path` in trace's JSON.
fn number(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

#[test]
fn a_flood_of_sources_shows_in_sources_evictions_and_trace_shows_each_sources_bucket() {
    if !require_root(
        "a_flood_of_sources_shows_in_sources_evictions_and_trace_shows_each_sources_bucket",
    ) {
        return;
    }
    let lab = Lab::new("rlsrc");
    let files = AgentFiles::new(
        "rlsrc",
        SERVER_IF,
        PER_SOURCE_POLICY,
        "metricsAddress: \"127.0.0.1:0\"\n",
    );
    let agent = AgentProcess::start(&lab.server, &files.config());
    trace_finds_no_bucket_for_the_client_yet(&files);

    // The client spends its burst and then some.
    let client_sent = SOURCE_BURST + 10;
    let started = Instant::now();
    traffic::inject(
        &lab.client,
        "c0",
        &vec![datagram_from(CLIENT); usize::try_from(client_sent).expect("small")],
    );
    trace_finds_the_clients_bucket_spent_and_the_ceiling_paid(&files, started);
    // A source never seen has no bucket: it would start full.
    let stranger = trace_from(&files, Ipv4Addr::new(10, 77, 255, 1).into(), 7003);
    let peer = &stranger["limit"]["peer"];
    assert_eq!(peer["kept"], false, "{stranger}");
    assert_eq!(number(peer, &["packets", "available"]), SOURCE_BURST);
    assert_eq!(peer["next"], "pass", "{stranger}");

    // A flood of 300 sources, one datagram each, at a table of 16.
    let flood: Vec<Vec<u8>> = (0..300u16)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            datagram_from(Ipv4Addr::new(10, 77, hi, lo.wrapping_add(1)))
        })
        .collect();
    traffic::inject(&lab.client, "c0", &flood);
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) =
        traffic::http_get(&lab.server, agent.metrics_address(), "/metrics").expect("scrape");
    assert_eq!(code, 200);
    metrics_show_sources_and_evictions(&body, client_sent);
    promtool_accepts(&body);
}

/// Before any traffic: the client has no bucket yet (its first packet makes one, full), and
/// the ceiling is full.
fn trace_finds_no_bucket_for_the_client_yet(files: &AgentFiles) {
    let before = trace(files, 7003);
    assert_eq!(before["reason"], "policy_allow", "{before}");
    assert_eq!(
        before["limit"]["configured"],
        format!(
            "1 pkt/s burst {SOURCE_BURST} per source (up to {MAX_SOURCES}), ceiling 1 pkt/s burst {CEILING_BURST}"
        ),
        "{before}"
    );
    let peer = &before["limit"]["peer"];
    assert_eq!(peer["kept"], false, "{before}");
    assert_eq!(peer["peer"], CLIENT.to_string(), "{before}");
    assert_eq!(peer["role"], "source", "{before}");
    assert_eq!(number(peer, &["packets", "available"]), SOURCE_BURST);
    assert_eq!(peer["next"], "pass", "{before}");
    assert_eq!(
        number(&before["limit"]["ceiling"], &["packets", "available"]),
        CEILING_BURST,
        "{before}"
    );
    assert!(before["limit"]["bucket"].is_null(), "{before}");
}

/// After the client's flood (begun at `started`): its own bucket is kept and holds what
/// refilled since at most; the ceiling paid for what the client's bucket admitted (what it
/// refused was given back, to the CPU's credit). The text form says the same.
fn trace_finds_the_clients_bucket_spent_and_the_ceiling_paid(files: &AgentFiles, started: Instant) {
    let after = trace(files, 7003);
    let since = started.elapsed().as_secs_f64();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds of a test run"
    )]
    let refilled = since.ceil() as u64 + 1;
    let peer = &after["limit"]["peer"];
    assert_eq!(peer["kept"], true, "the client's bucket is kept: {after}");
    let available = number(peer, &["packets", "available"]);
    assert!(
        available <= refilled,
        "{available} packets in the client's bucket {since:.1} s after it spent its burst of {SOURCE_BURST}: {after}"
    );
    if available == 0 {
        assert_eq!(peer["next"], "over the limit", "{after}");
    }
    let ceiling = &after["limit"]["ceiling"];
    let ceiling_left =
        number(ceiling, &["packets", "available"]) + number(ceiling, &["packets", "held_by_cpus"]);
    let spent = CEILING_BURST - SOURCE_BURST;
    assert!(
        (spent - 1..=spent + refilled).contains(&ceiling_left),
        "the ceiling holds {ceiling_left} after {SOURCE_BURST} admitted, {since:.1} s: {after}"
    );
    let out = trace_text(files, 7003);
    assert!(
        out.contains(&format!("bucket    source {CLIENT}: holds "))
            && out.contains(&format!(
                " of {SOURCE_BURST} packets now; the next packet would "
            )),
        "{out}"
    );
    assert!(
        out.contains("ceiling   holds ")
            && out.contains(&format!(" of {CEILING_BURST} packets now")),
        "{out}"
    );
}

/// The scrape after the client's `client_sent` datagrams and the flood of sources: the
/// table keeps at most `maxSources`, it evicted some, and every source made one bucket (the
/// client's and each flooding one's), so what is not kept was evicted.
fn metrics_show_sources_and_evictions(body: &str, client_sent: u64) {
    let rule = "{workload=\"web\",direction=\"ingress\",rule=\"spoofed\"}";
    let hits = sample(body, &format!("boundary_rule_hits_total{rule}")).expect("hits");
    let sources = sample(body, &format!("boundary_rule_rate_limit_sources{rule}"))
        .unwrap_or_else(|| panic!("no sources gauge:\n{body}"));
    let evictions = sample(
        body,
        &format!("boundary_rule_rate_limit_evictions_total{rule}"),
    )
    .unwrap_or_else(|| panic!("no evictions counter:\n{body}"));
    let flooded = hits - client_sent;
    println!(
        "{flooded} sources into a table of {MAX_SOURCES}: {sources} kept, {evictions} evicted"
    );
    assert!(
        flooded > 2 * MAX_SOURCES,
        "only {flooded} of the 300 sources' datagrams arrived"
    );
    assert!(
        sources <= MAX_SOURCES,
        "{sources} sources kept in a table of {MAX_SOURCES}"
    );
    assert!(
        evictions > 0,
        "{flooded} sources into {MAX_SOURCES} evicted none"
    );
    assert_eq!(
        evictions + sources,
        flooded + 1,
        "evictions + kept = sources seen"
    );
}

/// `trace` (text) of a UDP datagram from the client to the server's `port`, from the live maps.
fn trace_text(files: &AgentFiles, port: u16) -> String {
    let (code, out, err) = files.cli(&[
        "trace",
        "--src",
        &CLIENT.to_string(),
        "--dst",
        &SERVER.to_string(),
        "--proto",
        "udp",
        "--dport",
        &port.to_string(),
        "--pin-dir",
        &files.pin_dir.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    eprintln!("{out}");
    out
}
