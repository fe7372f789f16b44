//! The measuring environment: the machine's description, and guards that change a setting for
//! the duration of a step and put it back on drop (errors and panics included).

use std::{fs::File, process::Command};

use anyhow::{Context as _, bail};
use boundary_tests::NetNs;
use nix::{
    sched::{CloneFlags, CpuSet, sched_getaffinity, sched_setaffinity, setns},
    unistd::Pid,
};

/// What the report says about the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
}

impl Machine {
    pub fn describe() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_owned());
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self { kernel, cpu, cpus }
    }
}

/// Sets a sysctl under /proc/sys for as long as it lives, then restores the old value.
pub struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: &str) -> anyhow::Result<Self> {
        let old = std::fs::read_to_string(path)
            .with_context(|| format!("read {path}"))?
            .trim()
            .to_owned();
        if old != value {
            std::fs::write(path, value).with_context(|| format!("write {value} to {path}"))?;
        }
        Ok(Self { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if std::fs::write(self.path, &self.old).is_err() && !std::thread::panicking() {
            eprintln!("warning: could not restore {} to {}", self.path, self.old);
        }
    }
}

/// Pins the calling thread to one CPU (so that a run is not migrated mid-measurement and
/// per-CPU state stays warm), restoring its previous affinity on drop.
pub struct CpuPin {
    old: CpuSet,
}

impl CpuPin {
    pub fn to(cpu: usize) -> anyhow::Result<Self> {
        let old = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
        let mut set = CpuSet::new();
        set.set(cpu).context("cpu index")?;
        sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")?;
        Ok(Self { old })
    }

    /// The last CPU this thread may run on: CPU 0 takes most of the VM's housekeeping.
    pub fn last_allowed() -> anyhow::Result<Self> {
        let now = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
        let cpu = (0..CpuSet::count())
            .rev()
            .find(|&c| now.is_set(c).unwrap_or(false))
            .context("no CPU in the affinity mask")?;
        Self::to(cpu)
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.old);
    }
}

/// Moves the calling thread into a network namespace; back into the one it came from on drop.
/// Interface indexes in bpf(2) calls (XDP attach, live-frames ingress) are resolved in the
/// caller's namespace, which is why the harness needs this rather than `ip -n`.
pub struct InNetNs {
    home: File,
}

impl InNetNs {
    pub fn enter(ns: &NetNs) -> anyhow::Result<Self> {
        let home = File::open("/proc/thread-self/ns/net").context("open own netns")?;
        let target = File::open(ns.path()).context("open target netns")?;
        setns(&target, CloneFlags::CLONE_NEWNET).context("setns into the lab")?;
        Ok(Self { home })
    }
}

impl Drop for InNetNs {
    fn drop(&mut self) {
        if setns(&self.home, CloneFlags::CLONE_NEWNET).is_err() {
            // Carrying on in the lab namespace would put later steps in the wrong place.
            eprintln!("fatal: could not return to the original network namespace");
            std::process::abort();
        }
    }
}

/// Runs a command to completion; fails with its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `nsenter --net=<ns> <args>`: a tool run inside a lab namespace with the host's mounts.
pub fn in_ns(ns: &NetNs, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(program);
    cmd
}

/// An interface's index inside a namespace.
pub fn ifindex(ns: &NetNs, ifname: &str) -> anyhow::Result<u32> {
    let out = run(Command::new("ip").args(["-j", "-n", ns.name(), "link", "show", ifname]))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parse ip -j")?;
    v[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("no ifindex for {ifname} in {out}"))
}

/// A veth pair `a <-> b` with fixed MAC addresses, `a` in `ns_a` and `b` in `ns_b` (which may
/// be the same namespace), both up, without IPv6 link-local addresses (so the kernel sends no
/// router or neighbour solicitations of its own into a measurement). Removed with the
/// namespaces.
pub fn veth(ns_a: &NetNs, a: &str, mac_a: &str, ns_b: &NetNs, b: &str, mac_b: &str) {
    boundary_tests::netns::ip(&[
        "-n",
        ns_a.name(),
        "link",
        "add",
        a,
        "address",
        mac_a,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "address",
        mac_b,
        "netns",
        ns_b.name(),
    ]);
    for (ns, dev) in [(ns_a, a), (ns_b, b)] {
        ns.ip(&["link", "set", dev, "addrgenmode", "none"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
}
