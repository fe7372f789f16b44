//! Network namespaces and the two-namespace lab.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix>-<pid>-<n>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `ip` with `args`; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (package iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop (with the interfaces in it).
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created there stay in
    /// the namespace for their whole life.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = File::open(&path).expect("open netns file");
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let status = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) && !std::thread::panicking() {
            eprintln!("warning: could not delete netns {}", self.name);
        }
    }
}

/// Addresses used inside every lab. Each lab has its own namespaces, so labs never clash.
pub mod addr {
    use super::{Ipv4Addr, Ipv6Addr};
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
    /// The protected workload's first address.
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
    /// A second server address, for a second workload.
    pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 3);
    /// An address on the server no workload claims.
    pub const SERVER_OTHER: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 4);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 2);
    pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 1);
    /// Interface names inside the namespaces.
    pub const CLIENT_IF: &str = "c0";
    pub const SERVER_IF: &str = "s0";
}

/// A client namespace and a server namespace joined by one veth pair (`c0` <-> `s0`).
pub struct Lab {
    pub client: NetNs,
    pub server: NetNs,
}

impl Lab {
    pub fn new(tag: &str) -> Self {
        let client = NetNs::new(&format!("bnd-{tag}-c"));
        let server = NetNs::new(&format!("bnd-{tag}-s"));
        ip(&[
            "-n",
            client.name(),
            "link",
            "add",
            addr::CLIENT_IF,
            "type",
            "veth",
            "peer",
            "name",
            addr::SERVER_IF,
            "netns",
            server.name(),
        ]);
        let with_prefix = |a: &dyn std::fmt::Display, p: u8| format!("{a}/{p}");
        client.ip(&[
            "addr",
            "add",
            &with_prefix(&addr::CLIENT, 24),
            "dev",
            addr::CLIENT_IF,
        ]);
        client.ip(&[
            "-6",
            "addr",
            "add",
            &with_prefix(&addr::CLIENT6, 64),
            "dev",
            addr::CLIENT_IF,
            "nodad",
        ]);
        for a in [addr::SERVER, addr::SERVER_B, addr::SERVER_OTHER] {
            server.ip(&["addr", "add", &with_prefix(&a, 24), "dev", addr::SERVER_IF]);
        }
        server.ip(&[
            "-6",
            "addr",
            "add",
            &with_prefix(&addr::SERVER6, 64),
            "dev",
            addr::SERVER_IF,
            "nodad",
        ]);
        client.ip(&["link", "set", addr::CLIENT_IF, "up"]);
        server.ip(&["link", "set", addr::SERVER_IF, "up"]);
        Self { client, server }
    }
}
