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
";

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
    let lab = Lab::new("lock");
    let files = AgentFiles::new("lock", SERVER_IF, POLICY, "");
    let _servers = Servers::start(&lab.server, SERVER.into(), 7000, 8080);
    let _servers2 = Servers::start(&lab.server, SERVER.into(), 7001, 8081);
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
