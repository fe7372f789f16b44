//! Kubernetes (issue #12): the manifests in `deploy/kubernetes/`, with no API server.
//!
//! - Every manifest passes the Kubernetes API's own schemas (kubernetes-validate, strict: no
//!   unknown field), for the oldest and the newest version the validator ships; the
//!   `PodMonitor`, a CRD it has no schema for, is checked field by field against the
//!   Prometheus Operator's `monitoring.coreos.com/v1` API.
//! - The `DaemonSet`, `ConfigMap` and `PodMonitor` agree with one another and with the agent:
//!   the config and the policy parse, the probes and scrapes name the port the agent listens
//!   on, the pins land on the node's bpffs.
//! - The `DaemonSet` is run as the kubelet would run it: its command, arguments and
//!   environment exactly, its volumes mounted at their paths in a root filesystem of their
//!   own (the image's, when `BOUNDARY_IMAGE` names one), only the capabilities it adds, in a
//!   network namespace standing for the node; its probes must answer, a surge pod must be
//!   refused, and the replacement pod must adopt the pins.
//! - A `ConfigMap` update, made the way the kubelet makes it (a new timestamped directory and
//!   an atomic `..data` symlink swap), is enforced by the running agent without a restart.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use boundary_agent::{config::AgentConfig, policy::Policy};
use boundary_tests::{
    AgentProcess, Lab, NetNs,
    agent::{AgentFiles, agent_bin},
    apps::TempDir,
    kubelet::{ConfigMapVolume, Container, Mount, shared_libraries},
    netns::{
        addr::{CLIENT, SERVER, SERVER_IF},
        unique_name,
    },
    oci::Image,
    require_root, routed,
    traffic::{self, Servers},
};
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");

/// A manifest file of `deploy/kubernetes/`, as JSON values.
fn manifest(file: &str) -> Value {
    let path = Path::new(DEPLOY).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: a string, not {v}"))
}

fn array<'a>(v: &'a Value, what: &str) -> &'a [Value] {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: a list, not {v}"))
}

/// The `DaemonSet`'s one container.
fn agent_container(ds: &Value) -> &Value {
    let containers = array(&ds["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "the DaemonSet runs one container");
    &containers[0]
}

/// A probe's or endpoint's port: a number, or the name of one of the container's ports.
fn container_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("a port number");
    }
    let name = str_of(port, "port");
    array(&container["ports"], "ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The `ConfigMap`'s keys and contents.
fn configmap_files(cm: &Value) -> Vec<(String, String)> {
    cm["data"]
        .as_object()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| (k.clone(), str_of(v, k).to_owned()))
        .collect()
}

/// The validator: `BOUNDARY_K8S_VALIDATE`, the virtualenv `cargo xtask setup` makes, or
/// `kubernetes-validate` on PATH.
fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BOUNDARY_K8S_VALIDATE") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let venv = target.join("tools/kubernetes-validate/bin/kubernetes-validate");
    if venv.is_file() {
        return Some(venv);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
}

/// Kinds the validator has no schema for, and where they are checked instead.
const CRDS: &[&str] = &["PodMonitor"];

/// Runs the validator on `files` (or on stdin) for one Kubernetes version; returns its
/// output after checking that every resource passed and that only the CRDs lacked a schema.
fn validate(validator: &Path, version: &str, files: &[PathBuf], stdin: Option<&[u8]>) -> String {
    let mut cmd = Command::new(validator);
    cmd.args(["--strict", "--kubernetes-version", version]);
    if stdin.is_some() {
        cmd.arg("-");
    } else {
        cmd.args(files);
    }
    let out = if let Some(input) = stdin {
        use std::io::Write as _;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubernetes-validate");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("feed kubernetes-validate");
        child.wait_with_output().expect("kubernetes-validate")
    } else {
        cmd.output().expect("run kubernetes-validate")
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate {version}:\n{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let crd = CRDS
            .iter()
            .any(|k| line.contains(&format!("Couldn't find schema for kind {k} ")));
        assert!(
            (line.starts_with("INFO ") && line.contains(" passed for resource "))
                || (line.starts_with("WARN ") && crd),
            "kubernetes-validate {version}: {line}\n{text}"
        );
    }
    text
}

/// The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.25.0", "1.37.0"];

#[test]
fn manifests_pass_the_kubernetes_api_schemas() {
    let Some(validator) = validator() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "kubernetes-validate is missing and CI=true forbids skipping: run `cargo xtask setup`"
        );
        eprintln!(
            "SKIPPED manifests_pass_the_kubernetes_api_schemas: no kubernetes-validate; run `cargo xtask setup`"
        );
        return;
    };
    let version = Command::new(&validator)
        .arg("--version")
        .output()
        .expect("kubernetes-validate --version");
    eprintln!(
        "kubernetes-validate {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );

    // kustomization.yaml lists every manifest in the directory, and nothing else.
    let kustomization = manifest("kustomization.yaml");
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> = array(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "a resource").to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(DEPLOY)
        .expect("read deploy/kubernetes")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| {
            Path::new(n).extension().is_some_and(|e| e == "yaml") && n != "kustomization.yaml"
        })
        .collect();
    assert_eq!(listed, present, "kustomization.yaml's resources");

    let files: Vec<PathBuf> = present.iter().map(|f| Path::new(DEPLOY).join(f)).collect();
    for version in KUBERNETES_VERSIONS {
        let text = validate(&validator, version, &files, None);
        for kind in ["namespace", "serviceaccount", "configmap", "daemonset"] {
            assert!(
                text.contains(&format!("passed for resource {kind}/")),
                "{kind} was not validated:\n{text}"
            );
        }
    }

    // `kubectl apply -k` sends exactly these files: the kustomization lists them (checked
    // above) and transforms nothing.
    let keys: Vec<&str> = kustomization
        .as_object()
        .expect("a mapping")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["apiVersion", "kind", "resources"],
        "kustomization.yaml"
    );
}

/// Fields of the Prometheus Operator's `PodMonitor` (monitoring.coreos.com/v1): a subset of
/// its API, the fields these manifests may use (add one here, checked against the API, to use
/// it). A field outside the lists, a typo most likely, fails the test: the validator has no
/// schema for the CRD, and the API server would prune the field or refuse the object.
const PODMONITOR_SPEC_FIELDS: &[&str] = &[
    "selector",
    "namespaceSelector",
    "podMetricsEndpoints",
    "jobLabel",
    "podTargetLabels",
];
const PODMETRICSENDPOINT_FIELDS: &[&str] = &[
    "port",
    "portNumber",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
];
const RELABEL_FIELDS: &[&str] = &[
    "sourceLabels",
    "separator",
    "targetLabel",
    "regex",
    "modulus",
    "replacement",
    "action",
];

fn only_fields(v: &Value, allowed: &[&str], what: &str) {
    for key in v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: an object"))
        .keys()
    {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: unknown field {key}"
        );
    }
}

#[test]
fn podmonitor_and_annotations_scrape_the_agents_metrics_port() {
    let ds = manifest("daemonset.yaml");
    let container = agent_container(&ds);
    let template = &ds["spec"]["template"];
    let pm = manifest("podmonitor.yaml");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["kind"], "PodMonitor");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    only_fields(&pm["spec"], PODMONITOR_SPEC_FIELDS, "PodMonitor spec");

    // It selects the DaemonSet's pods, in their namespace.
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels");
    assert!(!selector.is_empty(), "an empty selector selects every pod");
    for (k, v) in selector {
        assert_eq!(&template["metadata"]["labels"][k], v, "pod label {k}");
    }
    let names = array(
        &pm["spec"]["namespaceSelector"]["matchNames"],
        "namespaceSelector.matchNames",
    );
    assert!(names.contains(&ds["metadata"]["namespace"]));

    // It scrapes the port and path the agent serves metrics on, as the annotations do.
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    let port: u16 = str_of(&annotations["prometheus.io/port"], "prometheus.io/port")
        .parse()
        .expect("a port number");
    assert_eq!(port, container_port(container, &Value::from("metrics")));
    let endpoints = array(&pm["spec"]["podMetricsEndpoints"], "podMetricsEndpoints");
    assert_ne!(endpoints, &[] as &[Value], "podMetricsEndpoints");
    for e in endpoints {
        only_fields(e, PODMETRICSENDPOINT_FIELDS, "podMetricsEndpoint");
        assert_eq!(container_port(container, &e["port"]), port);
        assert_eq!(e["path"], annotations["prometheus.io/path"]);
        assert_eq!(e["path"], "/metrics");
        for r in e["relabelings"].as_array().into_iter().flatten() {
            only_fields(r, RELABEL_FIELDS, "relabeling");
        }
    }
}

#[test]
fn daemonset_configmap_and_agent_agree() {
    let ds = manifest("daemonset.yaml");
    let cm = manifest("configmap.yaml");
    let container = agent_container(&ds);
    let pod = &ds["spec"]["template"]["spec"];

    // The agent's files parse, as the agent will read them from the volume.
    let files = configmap_files(&cm);
    let text = |key: &str| {
        files
            .iter()
            .find(|(k, _)| k == key)
            .map_or_else(|| panic!("the ConfigMap has no {key}"), |(_, v)| v.as_str())
    };
    let mount = |name: &str| {
        array(&container["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no volumeMount {name}"))
    };
    let args: Vec<&str> = array(&container["args"], "args")
        .iter()
        .map(|a| str_of(a, "an argument"))
        .collect();
    let config_arg = args
        .iter()
        .position(|a| *a == "--config")
        .map(|i| Path::new(args[i + 1]))
        .expect("run --config FILE");
    let config_mount = Path::new(str_of(&mount("config")["mountPath"], "mountPath"));
    assert_eq!(config_arg.parent(), Some(config_mount));
    let config = AgentConfig::from_str(config_arg, text("agent.yaml")).expect("agent.yaml");
    assert!(
        config.policy.starts_with(config_mount),
        "the policy is in the volume"
    );
    let policy_key = config.policy.file_name().expect("a file").to_string_lossy();
    Policy::from_str(&policy_key, text(&policy_key)).expect("policy.yaml");

    // The probes, the scrape and the agent's metricsAddress name one port, on every address
    // of the node (the kubelet probes the pod IP, which is the node's).
    let metrics = config.metrics_address.expect("metricsAddress is set");
    assert!(
        metrics.ip().is_unspecified(),
        "{metrics}: reachable at the pod IP"
    );
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            container_port(container, &get["port"]),
            metrics.port(),
            "{probe}"
        );
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");

    // The pins are on the node's bpffs, so they outlive the pod.
    let bpffs = mount("bpffs");
    assert!(
        config
            .pin_dir
            .starts_with(str_of(&bpffs["mountPath"], "mountPath"))
    );
    let volume = array(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == "bpffs")
        .expect("the bpffs volume");
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/bpf");

    // One agent per node and pin directory: the old pod goes before the new one starts.
    assert_eq!(pod["hostNetwork"], true);
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(rolling["maxSurge"], 0);
    assert_eq!(rolling["maxUnavailable"], 1);
    assert!(
        array(&pod["tolerations"], "tolerations")
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint"
    );

    // The capabilities the agent needs, not privileged.
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["BPF", "NET_ADMIN", "PERFMON"])
    );

    // The image `cargo xtask image` builds: its entrypoint, this version's tag.
    assert_eq!(container["command"], serde_json::json!(["/boundary-agent"]));
    assert_eq!(
        container["image"],
        format!("boundary-agent:{}", env!("CARGO_PKG_VERSION"))
    );

    // Requests and limits are set, the limit above the request.
    let resources = &container["resources"];
    for what in ["cpu", "memory"] {
        assert!(resources["requests"][what].is_string(), "requests.{what}");
        assert!(resources["limits"][what].is_string(), "limits.{what}");
    }
}

/// Removes a test's pins (`boundary-agent detach`) and its directory on the node's bpffs.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let ok = Command::new(agent_bin())
                .arg("detach")
                .arg("--pin-dir")
                .arg(entry.path())
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok && !std::thread::panicking() {
                eprintln!("warning: could not detach {}", entry.path().display());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The address the node namespace has: the pod IP of a `hostNetwork` pod.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);

/// The capabilities in `CapEff` of `/proc/PID/status`, by number.
fn effective_capabilities(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    let bits = u64::from_str_radix(hex.trim(), 16).expect("hex");
    (0..64).filter(|b| bits & (1 << b) != 0).collect()
}

/// The `DaemonSet`'s pod on a node made for the test: the node a network namespace with the
/// interfaces the `ConfigMap` names, its bpffs a directory of the host's (so the test's pins
/// never meet the host's), the volumes made from the manifests, the root filesystem the image's
/// (`BOUNDARY_IMAGE`) or else the agent under test with its shared libraries.
struct NodePod {
    container: Container,
    node: NetNs,
    _peer: NetNs,
    /// The agent's `pinDir`, seen from the host.
    pins: PathBuf,
    /// The node's directory mounted at the agent's `stateDir`, if the manifest mounts one.
    state: Option<PathBuf>,
    _scratch: TempDir,
    /// Dropped last: detaches whatever the pods left pinned.
    _bpffs: PinDir,
}

impl NodePod {
    fn new(ds: &Value, cm: &Value) -> Self {
        let container = agent_container(ds);
        let pod = &ds["spec"]["template"]["spec"];
        let files = configmap_files(cm);
        let agent_yaml = &files
            .iter()
            .find(|(k, _)| k == "agent.yaml")
            .expect("agent.yaml")
            .1;
        let config = AgentConfig::from_str(Path::new("/etc/boundary/agent.yaml"), agent_yaml)
            .expect("agent.yaml");

        let node = NetNs::new("bnd-k8s-node");
        let peer = NetNs::new("bnd-k8s-peer");
        let iface = config.interfaces[0].as_str();
        routed::veth(&peer, "p0", &node, iface);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", iface]);
        node.ip(&["link", "set", iface, "up"]);
        peer.ip(&["addr", "add", "10.203.0.2/24", "dev", "p0"]);
        peer.ip(&["link", "set", "p0", "up"]);

        let scratch = TempDir::new("k8s-pod");
        let bpffs = PinDir(PathBuf::from("/sys/fs/bpf").join(unique_name("bnd-k8s-node")));
        std::fs::create_dir(&bpffs.0).expect("create the node's bpffs directory");
        let mut mounts = Vec::new();
        let mut state = None;
        for vm in array(&container["volumeMounts"], "volumeMounts") {
            let name = str_of(&vm["name"], "volumeMount name");
            let volume = array(&pod["volumes"], "volumes")
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no volume {name}"));
            let source = if volume["configMap"].is_object() {
                assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
                let dir = scratch.path().join(format!("volumes/{name}"));
                std::fs::create_dir_all(&dir).expect("create the volume");
                let keys: Vec<(&str, &str)> = files
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                ConfigMapVolume::create(&dir, &keys).path().to_path_buf()
            } else {
                let dir = host_path(volume, &bpffs.0, scratch.path());
                if Path::new(str_of(&vm["mountPath"], "mountPath")) == config.state_dir {
                    state = Some(dir.clone());
                }
                dir
            };
            mounts.push(Mount {
                source,
                target: PathBuf::from(str_of(&vm["mountPath"], "mountPath")),
                read_only: vm["readOnly"] == true,
            });
        }
        let pins = bpffs.0.join(
            config
                .pin_dir
                .strip_prefix("/sys/fs/bpf")
                .expect("pinDir on the bpffs mount"),
        );

        let rootfs = scratch.path().join("rootfs");
        std::fs::create_dir(&rootfs).expect("create the rootfs");
        let argv: Vec<String> = array(&container["command"], "command")
            .iter()
            .chain(array(&container["args"], "args"))
            .map(|a| str_of(a, "an argument").to_owned())
            .collect();
        populate_rootfs(&rootfs, &argv[0]);

        let security = &container["securityContext"];
        let container = Container {
            rootfs,
            argv,
            env: array(&container["env"], "env")
                .iter()
                .map(|e| {
                    assert!(e["valueFrom"].is_null(), "env valueFrom is not simulated");
                    (
                        str_of(&e["name"], "env name").to_owned(),
                        str_of(&e["value"], "env value").to_owned(),
                    )
                })
                .collect(),
            mounts,
            capabilities: array(&security["capabilities"]["add"], "capabilities.add")
                .iter()
                .map(|c| str_of(c, "a capability").to_owned())
                .collect(),
            no_new_privs: security["allowPrivilegeEscalation"] == false,
            read_only_root: security["readOnlyRootFilesystem"] == true,
        };
        Self {
            container,
            node,
            _peer: peer,
            pins,
            state,
            _scratch: scratch,
            _bpffs: bpffs,
        }
    }

    /// Starts the pod's container and waits for the agent to be ready.
    fn start(&self) -> Result<AgentProcess, (Option<i32>, String)> {
        AgentProcess::spawn(self.container.command(&self.node))
    }

    /// GET `path` on `port` at the pod IP, from the node (as the kubelet probes).
    fn get(&self, port: u16, path: &str) -> (u16, String) {
        traffic::http_get(&self.node, SocketAddr::new(IpAddr::V4(NODE_IP), port), path)
            .unwrap_or_else(|| panic!("GET {path} on port {port}: no answer"))
    }
}

/// Where the test's node has a `hostPath` volume: the node's bpffs is `bpffs`, its other
/// writable directories are under `scratch`.
fn host_path(volume: &Value, bpffs: &Path, scratch: &Path) -> PathBuf {
    match str_of(&volume["hostPath"]["path"], "hostPath") {
        "/sys/fs/bpf" => bpffs.to_path_buf(),
        "/sys/kernel/btf" => PathBuf::from("/sys/kernel/btf"),
        "/var/lib/boundary" => {
            assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
            let dir = scratch.join("node/var/lib/boundary");
            std::fs::create_dir_all(&dir).expect("create the node's state dir");
            dir
        }
        other => panic!("hostPath {other}: teach this test what the node has there"),
    }
}

/// Fills `rootfs` with the image's layers, or else with the agent under test (at `entrypoint`)
/// and the shared libraries it loads.
fn populate_rootfs(rootfs: &Path, entrypoint: &str) {
    let inside = |p: &str| rootfs.join(p.trim_start_matches('/'));
    if let Some(layout) = std::env::var_os("BOUNDARY_IMAGE") {
        Image::read(Path::new(&layout)).unpack(rootfs);
        eprintln!("rootfs: the image at {}", Path::new(&layout).display());
    } else {
        for lib in shared_libraries(&agent_bin()) {
            let to = inside(&lib.to_string_lossy());
            std::fs::create_dir_all(to.parent().expect("a directory")).expect("mkdir");
            std::fs::copy(&lib, &to).expect("copy a library");
        }
        std::fs::copy(agent_bin(), inside(entrypoint)).expect("copy the agent");
        eprintln!("rootfs: {} and its libraries", agent_bin().display());
    }
    assert!(inside(entrypoint).is_file(), "{entrypoint} is in the image");
}

/// The control socket is on the node (the root filesystem is read-only), where `identity
/// list` run there reaches the agent.
fn control_socket_answers_on_the_node(node: &NodePod, agent: &AgentProcess) {
    let state = node
        .state
        .as_ref()
        .expect("a node directory is mounted at the agent's stateDir");
    assert!(
        !agent.log().contains("cannot open the control socket"),
        "{}",
        agent.log()
    );
    assert!(state.join("control.sock").exists(), "{}", agent.log());
    let cli_config = state.with_file_name("cli.yaml");
    std::fs::write(
        &cli_config,
        format!(
            "interfaces: [eth0]\npinDir: {}\npolicy: policy.yaml\nstateDir: {}\n",
            node.pins.display(),
            state.display()
        ),
    )
    .expect("write the CLI's config");
    let out = Command::new(agent_bin())
        .args(["identity", "list", "--json", "--config"])
        .arg(&cli_config)
        .output()
        .expect("run identity list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("no agent answers"),
        "the CLI read the pins instead of asking the agent: {stderr}"
    );
}

#[test]
fn daemonset_runs_as_the_kubelet_would_start_it() {
    if !require_root("daemonset_runs_as_the_kubelet_would_start_it") {
        return;
    }
    let ds = manifest("daemonset.yaml");
    let container = agent_container(&ds);
    let node = NodePod::new(&ds, &manifest("configmap.yaml"));
    let start = || node.start();

    let mut agent = start().unwrap_or_else(|(code, log)| {
        panic!("the pod's agent exited with {code:?} before it was ready:\n{log}")
    });
    let pid = agent.pid().expect("running");
    // CAP_BPF 39, CAP_PERFMON 38, CAP_NET_ADMIN 12: what the security context adds, no more.
    assert_eq!(effective_capabilities(pid), vec![12, 38, 39]);

    // The kubelet's probes, at the pod IP (the node's) and the port and path they name.
    let get = |port: u16, path: &str| node.get(port, path);
    for (probe, body) in [
        ("startupProbe", "ok"),
        ("livenessProbe", "ok"),
        ("readinessProbe", "ready"),
    ] {
        let http = &container[probe]["httpGet"];
        let port = container_port(container, &http["port"]);
        let path = str_of(&http["path"], "probe path");
        let (code, text) = get(port, path);
        assert_eq!((code, text.trim()), (200, body), "{probe}: GET {path}");
    }
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    let (code, body) = get(
        str_of(&annotations["prometheus.io/port"], "port")
            .parse()
            .expect("a port"),
        str_of(&annotations["prometheus.io/path"], "path"),
    );
    assert_eq!(code, 200, "the scrape");
    assert!(body.contains("boundary_build_info"), "{body}");

    control_socket_answers_on_the_node(&node, &agent);

    // The pins are on the node's bpffs, where the next pod finds them.
    let pins = &node.pins;
    assert!(
        pins.join("maps/BND_CONFIG").exists(),
        "maps pinned on the node"
    );

    // A surge pod (maxSurge > 0) would be refused: one agent per pin directory.
    let Err((code, log)) = start() else {
        panic!("a second agent started on the same pins")
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("another boundary-agent is running"), "{log}");

    // The pod is deleted (SIGTERM, within terminationGracePeriodSeconds): the datapath stays.
    let grace = Duration::from_secs(
        ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30),
    );
    let stopped = Instant::now();
    assert_eq!(agent.stop(), Some(0), "the agent's exit code on SIGTERM");
    assert!(stopped.elapsed() < grace, "stopped within the grace period");
    let links = std::fs::read_dir(pins.join("links"))
        .expect("links pinned")
        .count();
    assert!(
        links >= 2,
        "ingress and egress links stay pinned between pods"
    );

    // Its replacement adopts the pins: the links stay, their programs are swapped in place.
    let replacement = start().unwrap_or_else(|(code, log)| {
        panic!("the replacement pod's agent exited with {code:?}:\n{log}")
    });
    assert!(
        replacement
            .log()
            .contains("tc program replaced in the pinned link"),
        "the replacement adopted the pinned links:\n{}",
        replacement.log()
    );
    let (code, _) = get(
        container_port(container, &Value::from("metrics")),
        "/readyz",
    );
    assert_eq!(code, 200, "the replacement is ready");
}

/// A policy for the `ConfigMap` update test: `web` admits only `port/proto`.
fn only(port: u16, proto: &str) -> String {
    format!(
        "apiVersion: boundary.dev/v1\n\
         defaults: {{ ingress: deny, egress: allow }}\n\
         failsafe: []\n\
         workloads:\n  - name: web\n    addresses: [{SERVER}]\n    ingress:\n      \
         - name: only-{port}\n        from: {{ cidr: {CLIENT}/32 }}\n        ports: [\"{port}/{proto}\"]\n"
    )
}

/// `boundary_policy_reloads_total{result=...}` from a scrape.
fn reloads(body: &str, result: &str) -> u64 {
    let prefix = format!("boundary_policy_reloads_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in the scrape:\n{body}"))
}

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

#[test]
fn configmap_update_is_enforced_without_a_restart() {
    if !require_root("configmap_update_is_enforced_without_a_restart") {
        return;
    }
    let lab = Lab::new("k8scm");
    let files = AgentFiles::new(
        "k8scm",
        SERVER_IF,
        &only(7000, "udp"),
        "metricsAddress: \"127.0.0.1:0\"\n",
    );
    // The agent reads both files through the volume, as in the DaemonSet: `--config` names
    // the key's symlink, and the policy's relative path resolves through `..data` each time.
    let agent_yaml = std::fs::read_to_string(files.config()).expect("agent.yaml");
    let dir = files.dir.join("volume");
    std::fs::create_dir(&dir).expect("create the volume");
    let volume = ConfigMapVolume::create(
        &dir,
        &[
            ("agent.yaml", &agent_yaml),
            ("policy.yaml", &only(7000, "udp")),
        ],
    );
    let mut agent = AgentProcess::start(&lab.server, &volume.path().join("agent.yaml"));
    let pid = agent.pid().expect("running");
    let servers = Servers::start(&lab.server, SERVER.into(), 7000, 8080);
    let wait = Duration::from_millis(300);
    let udp_passes = || traffic::udp_echo(&lab.client, servers.udp, 3, 32, wait) == 3;
    let tcp_passes = || traffic::tcp_hello(&lab.client, servers.tcp, wait);
    assert!(udp_passes(), "the first policy admits UDP 7000");
    assert!(!tcp_passes(), "the first policy drops TCP 8080");
    let scrape = || {
        let (code, body) = traffic::http_get(&lab.server, metrics_address(&agent), "/metrics")
            .expect("scrape the agent");
        assert_eq!(code, 200);
        body
    };

    // The kubelet's update: new timestamped directory, `..data` swapped, old one removed.
    let before = volume.data_dir();
    volume.update(&[
        ("agent.yaml", &agent_yaml),
        ("policy.yaml", &only(8080, "tcp")),
    ]);
    assert!(!before.exists(), "the old timestamped directory is gone");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !tcp_passes() {
        assert!(
            Instant::now() < deadline,
            "the new policy was not enforced within 15 s (the agent polls every 2 s):\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(!udp_passes(), "the new policy drops UDP 7000");
    let body = scrape();
    assert_eq!(
        (reloads(&body, "ok"), reloads(&body, "refused")),
        (1, 0),
        "one reload, from the file change"
    );
    let hits: u64 = body
        .lines()
        .filter(|l| l.starts_with("boundary_rule_hits_total{") && l.contains("rule=\"only-8080\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(hits > 0, "the new rule counts its packets:\n{body}");
    assert!(
        agent.log().contains("trigger=\"file change\""),
        "reloaded for the file change:\n{}",
        agent.log()
    );
    assert!(files.packets("web", "ingress", "policy_allow") > 0);

    // A bad policy in the next update is refused; the running one stays in force.
    volume.update(&[
        ("agent.yaml", &agent_yaml),
        (
            "policy.yaml",
            "apiVersion: boundary.dev/v1\nworkloads: [{ name: web, adresses: [] }]\n",
        ),
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while reloads(&scrape(), "refused") == 0 {
        assert!(Instant::now() < deadline, "the bad policy was not noticed");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(tcp_passes(), "the running policy still admits TCP 8080");
    assert!(!udp_passes(), "and still drops UDP 7000");

    // All along, the same process: no restart.
    assert_eq!(agent.pid(), Some(pid));
    drop(servers);
    assert_eq!(agent.stop(), Some(0), "the agent ran through every update");
}
