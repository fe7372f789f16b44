//! Tier 3, identity over mTLS with the agent as a process: a client in its own namespace
//! presents its X.509-SVID (with the project's `identity register`, `openssl s_client` and
//! `curl --cert`), and from then on the XDP/TC datapath admits its address under its SPIFFE
//! ID: bulk TCP both ways to a port only that ID may reach, dropped before. Revocation (the
//! CLI, a CRL), expiry, address conflicts, static bindings, refused certificates with their
//! counters, and bindings that outlive a `kill -9`.

#[path = "../../boundary-agent/tests/support/pki.rs"]
#[allow(
    dead_code,
    reason = "shared with the agent's tests; not every helper is used here"
)]
mod pki;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use boundary_tests::{
    Lab,
    agent::{AgentFiles, AgentProcess, agent_bin},
    apps::{self, BulkServer, ns_output},
    netns::addr::{CLIENT, SERVER, SERVER_IF},
    require_root, traffic,
};
use pki::{Ca, Leaf};

const PORT: u16 = 8080;
const ENDPOINT: &str = "10.203.0.1:8444";

/// `web` admits TCP 8080 from the orders IDs only; the endpoint's port is open whatever the
/// policy says (the agent adds it to the failsafe entries).
fn policy(statics: &str) -> String {
    format!(
        "apiVersion: boundary.dev/v1
defaults: {{ ingress: deny, egress: allow }}
failsafe: []
identities: [{statics}]
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - {{ name: orders, from: {{ spiffe: \"spiffe://example.org/orders/*\" }}, ports: [\"{PORT}/tcp\"] }}
"
    )
}

/// The lab, the PKI and an agent with the identity endpoint on. Dropped in field order: the
/// agent stops first, then its pins go, then the namespaces.
struct Setup {
    agent: AgentProcess,
    _server: BulkServer,
    files: AgentFiles,
    ca: Ca,
    lab: Lab,
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn setup(tag: &str, statics: &str) -> Setup {
    setup_with(tag, statics, "")
}

/// [`setup`] with more lines in the agent config's `identity:` section.
fn setup_with(tag: &str, statics: &str, identity: &str) -> Setup {
    let lab = Lab::new(tag);
    let ca = Ca::root("test root", Some("example.org"));
    let files = AgentFiles::new(
        tag,
        SERVER_IF,
        &policy(statics),
        &format!(
            "metricsAddress: \"127.0.0.1:0\"\nidentity:\n  listen: \"{ENDPOINT}\"\n  trustBundle: bundle.pem\n  crl: crl.pem\n  certificate: agent.pem\n  key: agent.key\n  lease: 1h\n{identity}"
        ),
    );
    // The agent's SVID names its endpoint's address too (an SVID may carry SANs of other
    // types beside its one URI): curl checks it.
    let agent_cert = ca.svid("spiffe://example.org/boundary/agent", |p| {
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress(IpAddr::V4(SERVER)));
    });
    write(&files.dir, "bundle.pem", &ca.pem);
    write(&files.dir, "crl.pem", &ca.crl(&[]));
    write(&files.dir, "agent.pem", &agent_cert.pem);
    write(&files.dir, "agent.key", &agent_cert.key_pem);
    let server = BulkServer::start(&lab.server, SocketAddr::new(IpAddr::V4(SERVER), PORT));
    let agent = AgentProcess::start(&lab.server, &files.config());
    Setup {
        lab,
        ca,
        files,
        agent,
        _server: server,
    }
}

impl Setup {
    /// Writes `leaf` for the client and registers it with the project's client.
    fn register(&self, name: &str, leaf: &Leaf) -> (bool, String) {
        let cert = write(&self.files.dir, &format!("{name}.pem"), &leaf.pem);
        let key = write(&self.files.dir, &format!("{name}.key"), &leaf.key_pem);
        let bundle = self.files.dir.join("bundle.pem");
        let out = ns_output(
            &self.lab.client,
            agent_bin().to_str().expect("path"),
            &[
                "identity",
                "register",
                "--cert",
                cert.to_str().expect("path"),
                "--key",
                key.to_str().expect("path"),
                "--ca",
                bundle.to_str().expect("path"),
                "--agent",
                ENDPOINT,
                "--timeout",
                "5s",
            ],
        );
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A TCP connection from the client to the orders port is set up (its SYN admitted).
    fn reaches(&self) -> bool {
        let to = SocketAddr::new(IpAddr::V4(SERVER), PORT);
        self.lab
            .client
            .run(|| std::net::TcpStream::connect_timeout(&to, Duration::from_millis(700)))
            .is_ok()
    }

    fn metrics(&self) -> String {
        let addr = self.agent.metrics_address();
        traffic::http_get(&self.lab.server, addr, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// `boundary_handshakes_total` for `result` (every reason summed).
    fn handshakes(&self, result: &str) -> u64 {
        let needle = format!("result=\"{result}\"");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("boundary_handshakes_total") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// `identity revoke TARGET`.
    fn revoke(&self, target: &str) {
        let config = self.files.config();
        let (code, out, err) = self.files.cli(&[
            "identity",
            "revoke",
            "--config",
            config.to_str().expect("path"),
            target,
        ]);
        assert_eq!(code, 0, "revoke {target}: {out}{err}");
    }

    /// `openssl s_client` presents `name`'s certificate (the handshake alone binds).
    fn openssl_register(&self, name: &str) -> String {
        let d = &self.files.dir;
        let out = ns_output(
            &self.lab.client,
            "sh",
            &[
                "-c",
                &format!(
                    "echo | timeout 10 openssl s_client -connect {ENDPOINT} -cert {} -key {} -CAfile {} -tls1_3 -quiet",
                    d.join(format!("{name}.pem")).display(),
                    d.join(format!("{name}.key")).display(),
                    d.join("bundle.pem").display()
                ),
            ],
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `curl --cert` with `name`'s certificate: METHOD PATH on the endpoint, (status, body).
    fn curl(&self, name: &str, method: &str, path: &str) -> (String, String) {
        let d = &self.files.dir;
        let out = ns_output(
            &self.lab.client,
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--cert",
                d.join(format!("{name}.pem")).to_str().expect("path"),
                "--key",
                d.join(format!("{name}.key")).to_str().expect("path"),
                "--cacert",
                d.join("bundle.pem").to_str().expect("path"),
                "-w",
                "\n%{http_code}",
                "-X",
                method,
                &format!("https://{ENDPOINT}{path}"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.to_owned(), body.to_owned())
    }

    /// `curl --cert` posts to the endpoint's register route with `name`'s certificate, from
    /// `from`: (HTTP status, curl's errors).
    fn curl_register(&self, name: &str, from: &str) -> (String, String) {
        let d = &self.files.dir;
        let (cert, key, bundle) = (
            d.join(format!("{name}.pem")),
            d.join(format!("{name}.key")),
            d.join("bundle.pem"),
        );
        let out = ns_output(
            &self.lab.client,
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "--interface",
                from,
                "--cert",
                cert.to_str().expect("path"),
                "--key",
                key.to_str().expect("path"),
                "--cacert",
                bundle.to_str().expect("path"),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                &format!("https://{ENDPOINT}/v1/register"),
            ],
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn list(&self) -> serde_json::Value {
        let config = self.files.config();
        let (code, out, err) = self.files.cli(&[
            "identity",
            "list",
            "--config",
            config.to_str().expect("path"),
            "--json",
        ]);
        assert_eq!(code, 0, "identity list: {err}");
        serde_json::from_str(&out).expect("list JSON")
    }
}

/// Polls `f` until it holds or `within` passes; how long it took.
fn within(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_verified_peer_is_admitted_under_its_id_and_revoked_at_once() {
    if !require_root("a_verified_peer_is_admitted_under_its_id_and_revoked_at_once") {
        return;
    }
    let s = setup("mtls", "");
    assert!(
        !s.reaches(),
        "the orders port is closed before any handshake"
    );
    let api = s.ca.svid("spiffe://example.org/orders/api", |_| {});
    let (ok, out) = s.register("api", &api);
    assert!(ok, "register: {out}\n{}", s.agent.log());
    assert!(s.reaches(), "bound, the client reaches the orders port");
    // Real transfers both ways, offloads on.
    let to = SocketAddr::new(IpAddr::V4(SERVER), PORT);
    apps::download(&s.lab.client, to, 16 << 20).expect("download");
    apps::upload(&s.lab.client, to, 16 << 20).expect("upload");
    let list = s.list();
    let entry = list
        .as_array()
        .expect("array")
        .iter()
        .find(|b| b["address"] == CLIENT.to_string())
        .unwrap_or_else(|| panic!("no binding of the client in {list}"));
    assert_eq!(entry["spiffeId"], "spiffe://example.org/orders/api");
    assert_eq!(entry["source"], "mtls");
    assert!(s.handshakes("ok") >= 1, "{}", s.metrics());
    assert!(
        s.metrics()
            .contains("boundary_identity_bindings{source=\"mtls\"} 1"),
        "{}",
        s.metrics()
    );

    // The same address presenting another live ID is refused and counted.
    let billing = s.ca.svid("spiffe://example.org/billing/api", |_| {});
    let (ok, out) = s.register("billing", &billing);
    assert!(!ok, "a second ID from a bound address was bound: {out}");
    assert!(s.handshakes("address_conflict") >= 1, "{}", s.metrics());

    // `identity revoke ADDRESS`: at once.
    s.revoke(&CLIENT.to_string());
    assert!(!s.reaches(), "a revoked peer still reaches the port");

    // Clients outside the project: openssl s_client (the handshake alone binds) and curl.
    let out = s.openssl_register("api");
    assert!(
        within(Duration::from_secs(3), || s.reaches()).is_some(),
        "openssl s_client did not bind: {out}"
    );
    s.revoke("spiffe://example.org/orders/api");
    assert!(!s.reaches(), "revoked by ID, still reaching");
    let (status, err) = s.curl_register("api", &CLIENT.to_string());
    assert_eq!(status, "200", "curl: {err}");
    assert!(s.reaches(), "curl --cert did not bind");

    // A client of another CA is refused, counted, and binds nothing.
    s.revoke(&CLIENT.to_string());
    let stranger = Ca::root("stranger", Some("example.org"));
    let (ok, _) = s.register(
        "stranger",
        &stranger.svid("spiffe://example.org/orders/api", |_| {}),
    );
    assert!(!ok);
    assert!(s.handshakes("unknown_ca") >= 1, "{}", s.metrics());
    assert!(!s.reaches());
}

#[test]
fn expiry_and_a_crl_end_bindings_within_a_second() {
    if !require_root("expiry_and_a_crl_end_bindings_within_a_second") {
        return;
    }
    let s = setup("mtlsexp", "");
    // A certificate that ends in 4 s: the binding ends with it.
    let not_after = SystemTime::now() + Duration::from_secs(4);
    let short = s.ca.svid("spiffe://example.org/orders/api", |p| {
        p.not_after = not_after.into();
    });
    let (ok, out) = s.register("short", &short);
    assert!(ok, "register: {out}");
    assert!(s.reaches());
    // x509 times are whole seconds: the certificate says its notAfter to the second.
    std::thread::sleep(
        not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    );
    let took = within(Duration::from_secs(2), || !s.reaches());
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1) + Duration::from_millis(700)),
        "still reaching {took:?} after notAfter"
    );

    // A CRL that lists the certificate: within a second of the file changing.
    let long = s.ca.svid("spiffe://example.org/orders/api", |_| {});
    let (ok, out) = s.register("long", &long);
    assert!(ok, "register: {out}");
    assert!(s.reaches());
    write(&s.files.dir, "crl.pem", &s.ca.crl(&[&long.serial]));
    let took = within(Duration::from_secs(3), || !s.reaches());
    assert!(
        took.is_some_and(|t| t <= Duration::from_millis(1_700)),
        "still reaching {took:?} after the CRL listed it"
    );
    // And it cannot come back with that certificate.
    let (ok, _) = s.register("long", &long);
    assert!(!ok, "a revoked certificate bound again");
    assert!(s.handshakes("revoked") >= 1, "{}", s.metrics());
}

#[test]
fn a_static_binding_wins_and_bindings_outlive_a_kill_9() {
    if !require_root("a_static_binding_wins_and_bindings_outlive_a_kill_9") {
        return;
    }
    // The policy binds 10.203.0.9 statically; the client (10.203.0.2) earns its own.
    let mut s = setup(
        "mtlsrst",
        "{ id: \"spiffe://example.org/orders/static\", addresses: [10.203.0.9] }",
    );
    s.lab
        .client
        .ip(&["addr", "add", "10.203.0.9/24", "dev", "c0"]);
    let api = s.ca.svid("spiffe://example.org/orders/api", |_| {});
    let (ok, out) = s.register("api", &api);
    assert!(ok, "register: {out}");
    assert!(s.reaches());

    // kill -9: the datapath keeps admitting the bound client, and a new agent keeps it.
    let pid = s.agent.pid().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let _ = s.agent.stop();
    assert!(s.reaches(), "no agent: the binding still admits the client");
    s.agent = AgentProcess::start(&s.lab.server, &s.files.config());
    assert!(s.reaches(), "the restarted agent dropped the binding");
    let list = s.list();
    assert!(
        list.as_array()
            .expect("array")
            .iter()
            .any(|b| { b["address"] == CLIENT.to_string() && b["source"] == "mtls" }),
        "{list}"
    );
    assert!(
        list.as_array()
            .expect("array")
            .iter()
            .any(|b| { b["address"] == "10.203.0.9" && b["source"] == "static" }),
        "{list}"
    );

    // The statically bound address cannot earn another ID.
    let other = s.ca.svid("spiffe://example.org/orders/other", |_| {});
    write(&s.files.dir, "other.pem", &other.pem);
    write(&s.files.dir, "other.key", &other.key_pem);
    let (status, err) = s.curl_register("other", "10.203.0.9");
    assert_eq!(status, "403", "{err}");
    assert!(s.handshakes("address_conflict") >= 1, "{}", s.metrics());
}

#[test]
fn the_control_api_over_mtls_is_for_admins_only() {
    if !require_root("the_control_api_over_mtls_is_for_admins_only") {
        return;
    }
    let s = setup_with(
        "mtlsadm",
        "",
        "  admins: [\"spiffe://example.org/ops/admin\"]\n",
    );
    let admin = s.ca.svid("spiffe://example.org/ops/admin", |_| {});
    write(&s.files.dir, "admin.pem", &admin.pem);
    write(&s.files.dir, "admin.key", &admin.key_pem);
    let api = s.ca.svid("spiffe://example.org/orders/api", |_| {});
    write(&s.files.dir, "api.pem", &api.pem);
    write(&s.files.dir, "api.key", &api.key_pem);

    // A workload is refused the control routes (and is bound, as any verified peer).
    let (status, body) = s.curl("api", "GET", "/v1/identities");
    assert_eq!(status, "403", "{body}");
    assert!(s.reaches());
    // The admin lists and revokes; its own handshake binds nothing.
    let (status, body) = s.curl("admin", "GET", "/v1/identities");
    assert_eq!(status, "200", "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["spiffeId"], "spiffe://example.org/orders/api");
    let (status, body) = s.curl(
        "admin",
        "POST",
        "/v1/identities/revoke?target=spiffe%3A%2F%2Fexample.org%2Forders%2Fapi",
    );
    assert_eq!(status, "200", "{body}");
    assert!(!s.reaches(), "revoked over the control API, still reaching");
    // A reload through the API: applied, and a bad policy refused with the old one kept.
    let (status, body) = s.curl("admin", "POST", "/v1/reload");
    assert_eq!(status, "200", "{body}");
    std::fs::write(s.files.policy(), "apiVersion: boundary.dev/v1\nbogus: 1\n").expect("write");
    let (status, body) = s.curl("admin", "POST", "/v1/reload");
    assert_eq!(status, "422", "{body}");
    let (_, out) = s.register("api", &api);
    assert!(s.reaches(), "the running policy stayed: {out}");
}
