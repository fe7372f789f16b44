//! The installed unit run by a real systemd. The machines this project runs on (developers'
//! and CI's) do not boot systemd, so the test boots one: systemd as PID 1 of a PID and mount
//! namespace of its own, inside the server namespace of a lab, with the staging root's `/etc`
//! and `/usr/local` laid over the system's (overlayfs), and nothing started but what the test
//! asks for. Then `systemctl` does what an operator would and the test checks what the
//! operator would see: start returns once the host enforces, with exactly three capabilities;
//! reload; stop leaves the policy enforced; a bad policy fails the start without retries.
//!
//! One change to the installed unit, the one README tells operators to make with `pinDir`:
//! the pin directory is the test's own, so it cannot meet a real deployment's.

use std::{
    net::SocketAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use boundary_tests::{
    Lab, NetNs,
    agent::agent_bin,
    netns::{
        addr::{SERVER, SERVER_IF},
        unique_name,
    },
    require_root,
    traffic::{self, Servers},
};

use super::{
    tests::{TempRoot, require_tool, run},
    *,
};

const SYSTEMD: &str = "/lib/systemd/systemd";

const POLICY: &str = boundary_tests::agent::ECHO_POLICY;

/// `CAP_NET_ADMIN` (12), `CAP_PERFMON` (38), `CAP_BPF` (39): what the unit grants.
const UNIT_CAPABILITIES: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// systemd as PID 1 of its own PID and mount namespaces. Killed on drop (its namespace, and
/// every service in it, with it); its cgroups removed.
struct Systemd {
    /// `unshare --kill-child`: its death kills systemd.
    unshare: Child,
    /// systemd's PID as this process sees it, for `nsenter`.
    pid: u32,
    cgroups: Vec<PathBuf>,
}

impl Systemd {
    /// Boots systemd in `netns` with `root`'s `etc` and `usr/local` over the system's.
    fn boot(netns: &NetNs, root: &Path) -> Self {
        let name = unique_name("boundary-systemd");
        // Its own cgroup in every hierarchy systemd manages, so that it takes that subtree
        // for the whole tree and leaves the host's alone.
        let hierarchies = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
            .map(PathBuf::from)
            .into_iter()
            .filter(|h| h.is_dir())
            .collect::<Vec<_>>();
        let cgroups: Vec<PathBuf> = if hierarchies.is_empty() {
            vec![Path::new("/sys/fs/cgroup").join(&name)]
        } else {
            hierarchies.iter().map(|h| h.join(&name)).collect()
        };
        for cgroup in &cgroups {
            fs::create_dir(cgroup).expect("create a cgroup");
        }
        let work = root.join("overlay-work");
        for dir in ["etc", "usr-local"] {
            fs::create_dir_all(work.join(dir)).expect("overlay work dir");
        }
        let script = format!(
            r#"set -e
for cg in {cgroups}; do echo $$ > "$cg/cgroup.procs"; done
exec nsenter --net={netns} unshare --kill-child --pid --mount-proc --propagation slave sh -c '
set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={root}/etc,workdir={work}/etc /etc
mount -t overlay overlay -o lowerdir=/usr/local,upperdir={root}/usr/local,workdir={work}/usr-local /usr/local
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/systemd/system
printf "[Unit]\nDescription=Boundary test: nothing but what the test starts\n" > /run/systemd/system/boundary-test.target
export container=boundary-test
exec {SYSTEMD} --system --unit=boundary-test.target --log-target=null
'"#,
            cgroups = cgroups
                .iter()
                .map(|c| format!("'{}'", c.display()))
                .collect::<Vec<_>>()
                .join(" "),
            netns = netns.path().display(),
            root = root.display(),
            work = work.display(),
        );
        let unshare = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn unshare (util-linux)");
        let mut systemd = Self {
            pid: 0,
            unshare,
            cgroups,
        };
        let started = Instant::now();
        loop {
            let children = format!("/proc/{0}/task/{0}/children", systemd.unshare.id());
            if let Some(pid) = fs::read_to_string(children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
            {
                systemd.pid = pid;
                let (_, state) = systemd.run(&["systemctl", "is-system-running"]);
                if matches!(state.trim(), "running" | "degraded") {
                    return systemd;
                }
            }
            if let Ok(Some(status)) = systemd.unshare.try_wait() {
                panic!("systemd exited while booting: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "systemd did not boot in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command in systemd's namespaces: (success, stdout and stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        run(Command::new("nsenter")
            .arg(format!("--target={}", self.pid))
            .args(["--mount", "--pid", "--net", "--"])
            .args(args))
    }

    /// `systemctl show --value -p PROPERTY boundary-agent.service`.
    fn show(&self, property: &str) -> String {
        let (_, value) = self.run(&["systemctl", "show", "--value", "-p", property, SERVICE]);
        value.trim().to_owned()
    }

    /// What the agent logged (the test's drop-in sends it to a file).
    fn log(&self) -> String {
        self.run(&["cat", "/run/boundary-agent.log"]).1
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The namespace's processes die with its PID 1; their cgroups are removed once empty,
        // deepest first.
        for _ in 0..50 {
            let mut left = false;
            for cgroup in &self.cgroups {
                let mut dirs = Vec::new();
                collect_dirs(cgroup, &mut dirs);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for dir in dirs {
                    left |= fs::remove_dir(&dir).is_err() && dir.exists();
                }
            }
            if !left {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !std::thread::panicking() {
            eprintln!("warning: cgroups left behind: {:?}", self.cgroups);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&entry.path(), out);
        }
    }
}

/// Removes the test's pins on drop, enforcing or not.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = Command::new(agent_bin())
                .arg("detach")
                .arg("--pin-dir")
                .arg(&self.0)
                .stdout(Stdio::null())
                .status();
        }
    }
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

/// Waits up to 10 s for `f`.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn the_installed_unit_runs_under_systemd() {
    let test = "the_installed_unit_runs_under_systemd";
    if !require_root(test) || !require_tool(test, SYSTEMD) {
        return;
    }
    let lab = Lab::new("sd");
    let root = TempRoot::new("systemd");
    let layout = Layout::new(&root.0);
    layout.install(&agent_bin()).expect("install");
    let pins = Pins(PathBuf::from("/sys/fs/bpf").join(unique_name("boundary-sd")));
    let pin_dir = pins.0.display().to_string();
    let unit = UNIT.replace("/sys/fs/bpf/boundary", &pin_dir);
    assert_ne!(unit, UNIT, "the unit names its pin directory");
    fs::write(layout.unit(), unit).expect("write unit");
    let drop_in = root.0.join(UNIT_DIR).join(format!("{SERVICE}.d"));
    fs::create_dir_all(&drop_in).expect("drop-in dir");
    // No journald in this namespace: the agent's log goes to a file instead.
    fs::write(
        drop_in.join("log.conf"),
        "[Service]\nStandardOutput=append:/run/boundary-agent.log\nStandardError=inherit\n",
    )
    .expect("write drop-in");
    fs::write(
        layout.config("agent.yaml"),
        format!("interfaces: [{SERVER_IF}]\npinDir: {pin_dir}\npolicy: policy.yaml\n"),
    )
    .expect("write agent.yaml");
    fs::write(layout.config("policy.yaml"), POLICY).expect("write policy.yaml");
    let _servers: Vec<Servers> = (0..3)
        .map(|i| Servers::start(&lab.server, SERVER.into(), 7000 + i, 8080 + i))
        .collect();

    let systemd = Systemd::boot(&lab.server, &root.0);
    // `start` returns at READY=1: by then the policy must be enforced.
    let (ok, out) = systemd.run(&["systemctl", "start", SERVICE]);
    assert!(ok, "systemctl start: {out}\n{}", systemd.log());
    assert!(echoed(&lab, 7000), "allowed once started");
    assert!(!echoed(&lab, 7001), "denied once started");
    assert_eq!(systemd.show("ActiveState"), "active");
    assert_eq!(
        systemd.show("StatusText"),
        "enforcing 1 workloads on 1 interfaces"
    );
    let main_pid = systemd.show("MainPID");
    let (_, status) = systemd.run(&["cat", &format!("/proc/{main_pid}/status")]);
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("CapEff in {status}"));
    assert_eq!(
        effective, UNIT_CAPABILITIES,
        "the agent's effective capabilities"
    );

    // Reload: the agent takes the new policy.
    let open_7001 = POLICY.replace("[\"7000/udp\"]", "[\"7000/udp\", \"7001/udp\"]");
    let (ok, out) = systemd.run(&[
        "sh",
        "-c",
        &format!("printf '%s' '{open_7001}' > /etc/boundary/policy.yaml"),
    ]);
    assert!(ok, "{out}");
    let (ok, out) = systemd.run(&["systemctl", "reload", SERVICE]);
    assert!(ok, "systemctl reload: {out}");
    assert!(
        eventually(|| echoed(&lab, 7001)),
        "reloaded: {}",
        systemd.log()
    );

    // Stop: the service is gone, the policy it applied is not.
    let (ok, out) = systemd.run(&["systemctl", "stop", SERVICE]);
    assert!(ok, "systemctl stop: {out}");
    assert_eq!(systemd.show("ActiveState"), "inactive");
    assert!(echoed(&lab, 7001), "still allowed after stop");
    assert!(!echoed(&lab, 7002), "still denied after stop");

    // A policy the agent refuses fails the start, with code 64 and no retries.
    let (ok, out) = systemd.run(&[
        "sh",
        "-c",
        "printf 'apiVersion: boundary.dev/v1\\nbogus: 1\\n' > /etc/boundary/policy.yaml",
    ]);
    assert!(ok, "{out}");
    let (ok, _) = systemd.run(&["systemctl", "start", SERVICE]);
    assert!(!ok, "started with a bad policy: {}", systemd.log());
    assert_eq!(systemd.show("ExecMainStatus"), "64");
    std::thread::sleep(Duration::from_secs(6)); // past RestartSec=5s
    assert_eq!(systemd.show("NRestarts"), "0", "a bad policy was retried");
    assert_eq!(systemd.show("ActiveState"), "failed");
}
