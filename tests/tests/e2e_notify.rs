//! Tier 3, the service manager's view of the agent. `Type=notify`
//! (deploy/systemd/boundary-agent.service) takes READY=1 to mean "enforcing": units ordered
//! after the agent start then, and `systemctl start` returns then. RELOADING=1 ... READY=1
//! brackets a reload, STOPPING=1 announces a shutdown. A datagram socket stands in for
//! systemd's, bound where `NOTIFY_SOCKET` says (`sd_notify(3)`).

use std::{
    net::SocketAddr,
    os::{
        linux::net::SocketAddrExt as _,
        unix::net::{self, UnixDatagram},
    },
    time::Duration,
};

use boundary_tests::{
    AgentProcess, Lab,
    agent::AgentFiles,
    netns::{
        addr::{SERVER, SERVER_IF},
        unique_name,
    },
    require_root,
    traffic::{self, Servers},
};
use nix::sys::signal::Signal;

const POLICY: &str = boundary_tests::agent::ECHO_POLICY;

/// [`POLICY`] with port 7001 opened too.
const POLICY_7001: &str = "\
apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: echo
        from: { cidr: 10.203.0.0/24 }
        ports: [\"7000/udp\", \"7001/udp\"]
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

/// The service manager's end: the notifications the agent sent, in order.
struct Manager(UnixDatagram);

impl Manager {
    /// The next notification, if one comes within `wait`.
    fn next(&self, wait: Duration) -> Option<String> {
        self.0.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = self.0.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The next notification, which must come within 30 s.
    fn expect(&self, what: &str) -> String {
        self.next(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no {what} notification within 30 s"))
    }

    /// A reload's notifications: RELOADING=1 (with the time `Type=notify-reload` matches it
    /// by), then READY=1, which is returned. The file poller may have reloaded the new file
    /// before the SIGHUP did: such a second pair follows at once and the last READY=1 counts.
    fn reload(&self) -> String {
        let mut ready = self.reloaded(&self.expect("RELOADING=1"));
        while let Some(reloading) = self.next(Duration::from_secs(1)) {
            ready = self.reloaded(&reloading);
        }
        ready
    }

    /// Checks `reloading` and returns the READY=1 that must follow it.
    fn reloaded(&self, reloading: &str) -> String {
        assert!(reloading.starts_with("RELOADING=1\n"), "{reloading:?}");
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
        let ready = self.expect("READY=1 after RELOADING=1");
        assert!(ready.starts_with("READY=1\n"), "{ready:?}");
        ready
    }
}

/// Starts the agent with `NOTIFY_SOCKET=notify_socket` on a thread of its own, so the test
/// hears READY=1 the moment it is sent rather than after the agent's "ready" log line.
fn start_notifying<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    lab: &'scope Lab,
    files: &'scope AgentFiles,
    notify_socket: &'scope str,
) -> std::thread::ScopedJoinHandle<'scope, AgentProcess> {
    scope.spawn(move || {
        AgentProcess::try_start_with_env(
            &lab.server,
            &files.config(),
            &[],
            &[("NOTIFY_SOCKET", notify_socket.as_ref())],
        )
        .unwrap_or_else(|(code, log)| panic!("agent exited with {code:?}:\n{log}"))
    })
}

#[test]
fn ready_is_sent_once_enforcing_and_reloads_and_the_stop_are_announced() {
    if !require_root("ready_is_sent_once_enforcing_and_reloads_and_the_stop_are_announced") {
        return;
    }
    let lab = Lab::new("notify");
    let files = AgentFiles::new("notify", SERVER_IF, POLICY, "");
    let _servers = Servers::start(&lab.server, SERVER.into(), 7000, 8080);
    let _servers2 = Servers::start(&lab.server, SERVER.into(), 7001, 8081);
    let _servers3 = Servers::start(&lab.server, SERVER.into(), 7002, 8082);
    let path = files.dir.join("notify.sock");
    let manager = Manager(UnixDatagram::bind(&path).expect("bind the notify socket"));
    let path = path.display().to_string();

    let mut agent = std::thread::scope(|s| {
        let agent = start_notifying(s, &lab, &files, &path);
        // The first thing the manager hears is READY=1, and when it does the policy is
        // already enforced: the allowed port answers, the denied one does not.
        let ready = manager.expect("READY=1");
        assert!(ready.starts_with("READY=1\n"), "{ready:?}");
        assert!(echoed(&lab, 7000), "allowed when READY=1 arrives");
        assert!(!echoed(&lab, 7001), "denied when READY=1 arrives");
        assert!(
            ready.contains("STATUS=enforcing 1 workloads on 1 interfaces"),
            "{ready:?}"
        );
        agent.join().expect("agent thread")
    });

    // A reload is bracketed, and READY=1 after it means the new policy is live.
    std::fs::write(files.policy(), POLICY_7001).expect("write policy");
    agent.signal(Signal::SIGHUP);
    let ready = manager.reload();
    assert!(!ready.contains("refused"), "{ready:?}");
    assert!(echoed(&lab, 7001), "the reloaded policy is live at READY=1");

    // A refused reload ends with READY=1 too (the old policy enforces), and says so.
    std::fs::write(files.policy(), "apiVersion: boundary.dev/v1\nbogus: 1\n").expect("write");
    agent.signal(Signal::SIGHUP);
    let ready = manager.reload();
    assert!(ready.contains("the last reload was refused"), "{ready:?}");
    assert!(echoed(&lab, 7001), "the previous policy still enforces");

    assert_eq!(agent.stop(), Some(0), "{}", agent.log());
    let stopping = manager.expect("STOPPING=1");
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping:?}");
    assert!(
        !echoed(&lab, 7002),
        "stopped, the pinned datapath still enforces"
    );
}

#[test]
fn an_agent_that_cannot_start_never_says_ready() {
    if !require_root("an_agent_that_cannot_start_never_says_ready") {
        return;
    }
    // A configured interface without an Ethernet header stops the start (an absent one no
    // longer does: it is attached when it appears).
    let lab = Lab::new("notify-fail");
    lab.server
        .ip(&["tuntap", "add", "dev", "t0", "mode", "tun"]);
    let files = AgentFiles::new("notify-fail", "t0", POLICY, "");
    let path = files.dir.join("notify.sock");
    let manager = Manager(UnixDatagram::bind(&path).expect("bind the notify socket"));
    let started = AgentProcess::try_start_with_env(
        &lab.server,
        &files.config(),
        &[],
        &[("NOTIFY_SOCKET", path.as_os_str())],
    );
    assert!(started.is_err(), "an agent on a tun device started");
    assert_eq!(
        manager.next(Duration::from_millis(200)),
        None,
        "a failed start sent a notification"
    );
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    if !require_root("an_abstract_notify_socket_is_reached") {
        return;
    }
    let lab = Lab::new("notify-abs");
    let files = AgentFiles::new("notify-abs", SERVER_IF, POLICY, "");
    // Abstract names belong to a network namespace: bound in the agent's, as a service
    // manager sharing it would.
    let name = unique_name("boundary-notify");
    let manager = Manager(lab.server.run(|| {
        let addr = net::SocketAddr::from_abstract_name(&name).expect("abstract name");
        UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket")
    }));
    let notify_socket = format!("@{name}");
    let mut agent = std::thread::scope(|s| {
        let agent = start_notifying(s, &lab, &files, &notify_socket);
        let ready = manager.expect("READY=1");
        assert!(ready.starts_with("READY=1\n"), "{ready:?}");
        agent.join().expect("agent thread")
    });
    assert_eq!(agent.stop(), Some(0), "{}", agent.log());
    assert!(manager.expect("STOPPING=1").starts_with("STOPPING=1\n"));
}
