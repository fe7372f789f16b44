//! Tier 3, interfaces that come and go: an agent configured with a pattern (`bndNx*`) and
//! started before any interface matches it attaches to a veth as it appears (measured: how
//! long after `ip link add` returns its links are pinned), enforces on it, forgets it when it
//! is deleted, and enforces again on a re-created one (a new ifindex) — a workload listing the
//! interface by name included, which needs its policy applied again with the new index. A
//! re-creation while no agent runs leaves defunct pins, which the next agent replaces. A
//! matching interface it cannot protect (a tun: no Ethernet header) shows in `/metrics`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use boundary_tests::{
    AgentProcess, NetNs,
    agent::AgentFiles,
    require_root,
    traffic::{self, Servers},
};

const WAIT: Duration = Duration::from_millis(1500);
const SHORT: Duration = Duration::from_millis(300);
/// How long an attach may take after the link appears: well under the 2 s poll, so a pass
/// shows the netlink events did the work.
const ATTACH_BOUND: Duration = Duration::from_millis(1000);

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 205, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 205, 0, 2);

/// web, on the churning interface only: UDP 7000 from the lab, nothing else.
fn policy(iface: &str) -> String {
    format!(
        "\
apiVersion: boundary.dev/v1
defaults: {{ ingress: deny, egress: allow }}
failsafe: []
workloads:
  - name: web
    addresses: [{SERVER}]
    interfaces: [{iface}]
    ingress:
      - name: echo
        from: {{ cidr: 10.205.0.0/24 }}
        ports: [\"7000/udp\"]
"
    )
}

/// `client`'s `c1` to `server`'s `iface`, down and unaddressed (as a CNI creates one).
fn veth(client: &NetNs, server: &NetNs, iface: &str) {
    client.ip(&[
        "link",
        "add",
        "c1",
        "type",
        "veth",
        "peer",
        "name",
        iface,
        "netns",
        server.name(),
    ]);
}

/// Addresses both ends and brings them up.
fn wire(client: &NetNs, server: &NetNs, iface: &str) {
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "c1"]);
    server.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", iface]);
    client.ip(&["link", "set", "c1", "up"]);
    server.ip(&["link", "set", iface, "up"]);
}

/// The link pins for `iface` under `pin_dir`.
fn pins(pin_dir: &Path, iface: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(pin_dir.join("links")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // `tc:egress:NAME`, a dot in NAME written as `:` (bpffs refuses dots).
        .filter(|n| {
            n.splitn(3, ':')
                .nth(2)
                .map(|i| i.replace(':', "."))
                .as_deref()
                == Some(iface)
        })
        .collect();
    out.sort();
    out
}

/// Polls `done` every millisecond until it holds or `bound` passes; how long it took.
fn within(bound: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < bound {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done().then(|| start.elapsed())
}

/// The value of the sample `series` (name and labels, as exported) in a scrape.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn scrape(server: &NetNs) -> String {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9477);
    let (code, body) = traffic::http_get(server, addr, "/metrics").expect("scrape /metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// Enforcing on `iface` as the policy says: echo admitted, TCP dropped and counted as web's.
fn assert_enforced(files: &AgentFiles, client: &NetNs, when: &str) {
    let denied = files.packets("web", "ingress", "default_deny");
    assert_eq!(
        traffic::udp_echo(client, SocketAddr::new(SERVER.into(), 7000), 3, 64, WAIT),
        3,
        "{when}: the admitted echo"
    );
    assert!(
        !traffic::tcp_hello(client, SocketAddr::new(SERVER.into(), 8080), SHORT),
        "{when}: TCP 8080 reached the server"
    );
    assert!(
        files.packets("web", "ingress", "default_deny") > denied,
        "{when}: the dropped SYN is not counted as web's"
    );
}

/// A matching interface without an Ethernet header: up, unprotected, and said so.
fn a_tun_matching_the_pattern_is_exported_as_unprotected(
    server: &NetNs,
    files: &AgentFiles,
    agent: &AgentProcess,
) {
    server.ip(&["tuntap", "add", "dev", "bnd1xt", "mode", "tun"]);
    server.ip(&["link", "set", "bnd1xt", "up"]);
    within(WAIT, || {
        sample(&scrape(server), "boundary_interfaces_unprotected_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("the tun is not counted as unprotected:\n{}", scrape(server)));
    let m = scrape(server);
    assert_eq!(
        sample(&m, "boundary_interface_protected{interface=\"bnd1xt\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(pins(&files.pin_dir, "bnd1xt"), Vec::<String>::new());
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("bnd1xt")
            && l.contains("NOT protected")
            && l.contains("no Ethernet header")),
        "{log}"
    );
}

#[test]
fn a_pattern_follows_interfaces_as_they_appear_vanish_and_are_recreated() {
    if !require_root("a_pattern_follows_interfaces_as_they_appear_vanish_and_are_recreated") {
        return;
    }
    let iface = "bnd1xa";
    let client = NetNs::new("bnd-churn-c");
    let server = NetNs::new("bnd-churn-s");
    let files = AgentFiles::new("churn", "\"bnd1x*\"", &policy(iface), "");
    // Nothing matches yet: the agent starts and waits for it.
    let mut agent = AgentProcess::start(&server, &files.config());
    let m = scrape(&server);
    assert_eq!(
        sample(&m, "boundary_interfaces_unprotected_up"),
        Some(0.0),
        "{m}"
    );

    // It appears: attached within milliseconds (the netlink event, not the poll).
    veth(&client, &server, iface);
    let latency =
        within(ATTACH_BOUND, || pins(&files.pin_dir, iface).len() == 2).unwrap_or_else(|| {
            panic!(
                "{iface} not attached within {ATTACH_BOUND:?}:\n{}",
                agent.log()
            )
        });
    eprintln!("attach latency after the link appeared: {latency:?}");
    assert_eq!(
        pins(&files.pin_dir, iface),
        [format!("tc:egress:{iface}"), format!("tc:ingress:{iface}")]
    );
    wire(&client, &server, iface);
    let _servers = Servers::start(&server, SERVER.into(), 7000, 8080);
    assert_enforced(&files, &client, "after the interface appeared");
    let m = scrape(&server);
    assert_eq!(
        sample(
            &m,
            &format!("boundary_interface_protected{{interface=\"{iface}\"}}")
        ),
        Some(1.0),
        "{m}"
    );

    // Deleted: forgotten, its pins gone.
    client.ip(&["link", "del", "c1"]);
    within(ATTACH_BOUND, || pins(&files.pin_dir, iface).is_empty())
        .unwrap_or_else(|| panic!("pins of the deleted {iface} stayed:\n{}", agent.log()));
    assert!(
        !scrape(&server).contains(&format!("interface=\"{iface}\"")),
        "a vanished interface is still exported"
    );

    // Re-created with the same name (a new ifindex): enforced again, web's workload too.
    veth(&client, &server, iface);
    let latency = within(ATTACH_BOUND, || pins(&files.pin_dir, iface).len() == 2)
        .unwrap_or_else(|| panic!("the re-created {iface} not attached:\n{}", agent.log()));
    eprintln!("attach latency after re-creation: {latency:?}");
    wire(&client, &server, iface);
    assert_enforced(&files, &client, "after re-creation");
    assert!(
        agent
            .log()
            .contains("interfaces the policy names changed index"),
        "{}",
        agent.log()
    );

    // Re-created while no agent runs: the pinned links are defunct, the next agent replaces
    // them rather than leaving the interface bare.
    agent.stop();
    client.ip(&["link", "del", "c1"]);
    veth(&client, &server, iface);
    wire(&client, &server, iface);
    assert_eq!(
        pins(&files.pin_dir, iface).len(),
        2,
        "pins outlive the agent"
    );
    assert!(
        traffic::tcp_hello(&client, SocketAddr::new(SERVER.into(), 8080), WAIT),
        "with its links defunct the new interface is open (the failure this guards against)"
    );
    let agent = AgentProcess::start(&server, &files.config());
    assert!(
        agent.log().contains("its old link is defunct"),
        "{}",
        agent.log()
    );
    assert_enforced(&files, &client, "after a re-creation while no agent ran");

    a_tun_matching_the_pattern_is_exported_as_unprotected(&server, &files, &agent);

    // Nothing left behind: detach removes the pins; the namespaces take the links with them.
    drop(agent);
    let pin_dir = files.pin_dir.clone();
    drop(files);
    assert!(!pin_dir.exists(), "pins left at {}", pin_dir.display());
}

#[test]
fn an_absent_exact_interface_is_attached_when_it_appears() {
    if !require_root("an_absent_exact_interface_is_attached_when_it_appears") {
        return;
    }
    // With a dot, as VLAN sub-interfaces are named (`eth0.100`): bpffs refuses dots in pin
    // names, so the pins spell it otherwise.
    let iface = "bnd2x.a";
    let client = NetNs::new("bnd-absent-c");
    let server = NetNs::new("bnd-absent-s");
    let files = AgentFiles::new("absent", iface, &policy(iface), "");
    let agent = AgentProcess::start(&server, &files.config());
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(iface) && l.contains("absent")),
        "{}",
        agent.log()
    );
    let m = scrape(&server);
    assert_eq!(
        sample(
            &m,
            &format!("boundary_interface_protected{{interface=\"{iface}\"}}")
        ),
        Some(0.0),
        "{m}"
    );
    veth(&client, &server, iface);
    within(ATTACH_BOUND, || pins(&files.pin_dir, iface).len() == 2)
        .unwrap_or_else(|| panic!("{iface} not attached:\n{}", agent.log()));
    wire(&client, &server, iface);
    let _servers = Servers::start(&server, SERVER.into(), 7000, 8080);
    assert_enforced(&files, &client, "once the named interface appeared");
}
