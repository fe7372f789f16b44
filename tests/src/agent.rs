//! The agent as a real process inside a namespace, stopped by PID on drop.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::netns::{NetNs, unique_name};

/// The agent binary: `BOUNDARY_AGENT_BIN` (set by `cargo xtask test`), else the debug build
/// next to this workspace's target directory.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BOUNDARY_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/boundary-agent");
    assert!(
        p.exists(),
        "{} is missing: build it (`cargo build -p boundary-agent`) or run `cargo xtask test`",
        p.display()
    );
    p
}

/// The lab's usual policy: the workload `web` on the server (10.203.0.1), ingress denied but
/// for UDP 7000 (the echo server) from the lab's subnet, egress allowed, no failsafe.
pub const ECHO_POLICY: &str = "\
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

/// Files an agent run needs: a temp directory with agent.yaml and policy.yaml, and a unique
/// pin directory. Both removed on drop (pins through `boundary-agent detach`).
pub struct AgentFiles {
    pub dir: PathBuf,
    pub pin_dir: PathBuf,
}

impl AgentFiles {
    /// Writes a config protecting `interface` with `policy` (YAML text), its state directory
    /// beside it. `extra` is appended to the agent config.
    pub fn new(tag: &str, interface: &str, policy: &str, extra: &str) -> Self {
        let name = unique_name(&format!("boundary-{tag}"));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&name);
        std::fs::write(dir.join("policy.yaml"), policy).expect("write policy");
        std::fs::write(
            dir.join("agent.yaml"),
            format!(
                "interfaces: [{interface}]\npinDir: {}\npolicy: policy.yaml\nstateDir: state\n{extra}",
                pin_dir.display()
            ),
        )
        .expect("write agent config");
        Self { dir, pin_dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.yaml")
    }

    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.yaml")
    }

    /// Runs `boundary-agent ARGS` (in the root namespace) and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(agent_bin())
            .args(args)
            .output()
            .expect("run boundary-agent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Packets counted for (workload, direction, reason), from `counters --json`.
    pub fn packets(&self, workload: &str, direction: &str, reason: &str) -> u64 {
        let json = self.counters_json();
        let v: serde_json::Value = serde_json::from_str(&json).expect("counters json");
        v.as_array()
            .expect("an array")
            .iter()
            .filter(|e| {
                e["workload"] == workload && e["direction"] == direction && e["reason"] == reason
            })
            .map(|e| e["packets"].as_u64().expect("packets"))
            .sum()
    }

    /// `boundary-agent counters --json` for this pin directory.
    pub fn counters_json(&self) -> String {
        let pin = self.pin_dir.display().to_string();
        let (code, out, err) = self.cli(&["counters", "--pin-dir", &pin, "--json"]);
        assert_eq!(code, 0, "counters failed: {err}");
        out
    }
}

impl Drop for AgentFiles {
    fn drop(&mut self) {
        if self.pin_dir.exists() {
            let pin = self.pin_dir.display().to_string();
            let ok = Command::new(agent_bin())
                .args(["detach", "--pin-dir", &pin])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok && !std::thread::panicking() {
                eprintln!("warning: could not detach {pin}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `boundary-agent run`, entered into a namespace with `nsenter --net` (which execs
/// the agent, so the child's PID is the agent's). Terminated with SIGTERM on drop.
pub struct AgentProcess {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl AgentProcess {
    /// Starts the agent and waits until it logs that it is ready.
    pub fn start(netns: &NetNs, config: &Path) -> Self {
        Self::try_start(netns, config, &[]).unwrap_or_else(|(code, log)| {
            panic!("agent exited with {code:?} before it was ready:\n{log}")
        })
    }

    /// Starts the agent; `Err((exit code, log))` if it exits before it is ready.
    pub fn try_start(
        netns: &NetNs,
        config: &Path,
        args: &[&str],
    ) -> Result<Self, (Option<i32>, String)> {
        Self::try_start_with_env(netns, config, args, &[])
    }

    /// [`AgentProcess::try_start`] with extra environment variables for the agent (such as
    /// `NOTIFY_SOCKET`).
    pub fn try_start_with_env(
        netns: &NetNs,
        config: &Path,
        args: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Result<Self, (Option<i32>, String)> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.path().display()))
            .arg("--")
            .arg(agent_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("BOUNDARY_LOG", "info")
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Starts `cmd`, which must exec the agent's `run` as the child itself (so that the
    /// child's PID is the agent's), and waits until it logs that it is ready; `Err((exit
    /// code, log))` if it exits first.
    pub fn spawn(mut cmd: Command) -> Result<Self, (Option<i32>, String)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let log_w = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("boundary agent ready") {
                    let _ = ready_tx.send(());
                }
                log_w.lock().expect("log lock").push_str(&(line + "\n"));
            }
        });
        let start = std::time::Instant::now();
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => {
                    return Ok(Self {
                        child: Some(child),
                        log,
                    });
                }
                // The agent closed stderr (it is exiting): recv_timeout no longer waits, so
                // wait here, or the loop would spin through its 30 s in a moment and report
                // an agent that failed fast as one that hung.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100));
                let log = log.lock().expect("log lock").clone();
                return Err((status.code(), log));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().expect("log lock").clone();
                return Err((None, format!("not ready after 30 s\n{log}")));
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The address the agent's HTTP endpoints bound, from its log (the config may ask for
    /// port 0).
    pub fn metrics_address(&self) -> std::net::SocketAddr {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("metrics and health endpoints listening"))
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
        let addr = line.rsplit("address=").next().expect("address field");
        addr.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            #[expect(clippy::cast_possible_wrap, reason = "PIDs fit in i32")]
            nix::sys::signal::kill(Pid::from_raw(pid as i32), signal).expect("signal agent");
        }
    }

    /// SIGTERM, then wait (SIGKILL after 10 s). Returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        #[expect(clippy::cast_possible_wrap, reason = "PIDs fit in i32")]
        let pid = Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
