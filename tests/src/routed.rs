//! A routed lab: client <-> router <-> server, three namespaces and two veth pairs, the router
//! forwarding IPv4 and IPv6 between two subnets of its own. Used for path MTU discovery: the
//! router's client-side link is narrower than the server's, so the server learns the path MTU
//! from the router's ICMP errors, which come from an address outside the client's subnet.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netns::{NetNs, ip};

/// Addresses and interface names of the routed lab.
pub mod addr {
    use super::{Ipv4Addr, Ipv6Addr};
    /// The client's subnet: `10.204.1.0/24` and `fd00:204:1::/64`.
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 2);
    pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x204, 1, 0, 0, 0, 0, 2);
    pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 1);
    pub const ROUTER_CLIENT_SIDE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x204, 1, 0, 0, 0, 0, 1);
    /// The server's subnet: `10.204.2.0/24` and `fd00:204:2::/64`. The router's ICMP errors to
    /// the server come from its address here, outside the client's subnet.
    pub const ROUTER_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(10, 204, 2, 1);
    pub const ROUTER_SERVER_SIDE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x204, 2, 0, 0, 0, 0, 1);
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 204, 2, 2);
    pub const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x204, 2, 0, 0, 0, 0, 2);
    pub const CLIENT_IF: &str = "c0";
    /// The router's interface towards the client.
    pub const ROUTER_CLIENT_IF: &str = "rc0";
    /// The router's interface towards the server.
    pub const ROUTER_SERVER_IF: &str = "rs0";
    pub const SERVER_IF: &str = "s0";
}

/// Three namespaces: `client` (`c0`) <-> (`rc0`) `router` (`rs0`) <-> (`s0`) `server`.
pub struct RoutedLab {
    pub client: NetNs,
    pub router: NetNs,
    pub server: NetNs,
}

/// Adds a veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both ends up.
pub fn veth(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    ip(&[
        "-n",
        a.name(),
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
}

/// Adds `v4/24` and `v6/64` to `ifname` in `ns` (no duplicate address detection: the address
/// is usable at once) and sets the link up.
fn configure(ns: &NetNs, ifname: &str, v4: Ipv4Addr, v6: Ipv6Addr) {
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        ifname,
        "nodad",
    ]);
    ns.ip(&["link", "set", ifname, "up"]);
}

/// Writes a sysctl of the namespace `ns` (`/proc/sys/net` is per network namespace: the file
/// is opened from a thread inside `ns`).
pub fn sysctl(ns: &NetNs, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(|| {
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("write {path} = {value}: {e}"));
    });
}

impl RoutedLab {
    pub fn new(tag: &str) -> Self {
        use addr::{
            CLIENT, CLIENT_IF, CLIENT6, ROUTER_CLIENT_IF, ROUTER_CLIENT_SIDE, ROUTER_CLIENT_SIDE6,
            ROUTER_SERVER_IF, ROUTER_SERVER_SIDE, ROUTER_SERVER_SIDE6, SERVER, SERVER_IF, SERVER6,
        };
        let client = NetNs::new(&format!("bnd-{tag}-c"));
        let router = NetNs::new(&format!("bnd-{tag}-r"));
        let server = NetNs::new(&format!("bnd-{tag}-s"));
        veth(&client, CLIENT_IF, &router, ROUTER_CLIENT_IF);
        veth(&router, ROUTER_SERVER_IF, &server, SERVER_IF);
        configure(&client, CLIENT_IF, CLIENT, CLIENT6);
        configure(
            &router,
            ROUTER_CLIENT_IF,
            ROUTER_CLIENT_SIDE,
            ROUTER_CLIENT_SIDE6,
        );
        configure(
            &router,
            ROUTER_SERVER_IF,
            ROUTER_SERVER_SIDE,
            ROUTER_SERVER_SIDE6,
        );
        configure(&server, SERVER_IF, SERVER, SERVER6);
        sysctl(&router, "net.ipv4.ip_forward", "1");
        sysctl(&router, "net.ipv6.conf.all.forwarding", "1");
        client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_SIDE.to_string(),
        ]);
        client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_CLIENT_SIDE6.to_string(),
        ]);
        server.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_SERVER_SIDE.to_string(),
        ]);
        server.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_SERVER_SIDE6.to_string(),
        ]);
        Self {
            client,
            router,
            server,
        }
    }

    /// Narrows the router's client-side link to `mtu` on the router's end only. The client
    /// keeps its larger MTU, so its SYN announces a full-size MSS and the server sends
    /// full-size segments, which the router can forward only after the server has learnt the
    /// path MTU from its ICMP "fragmentation needed" / "packet too big" errors. (With both
    /// ends narrowed, the client's MSS alone would keep the server's segments small, and no
    /// ICMP error would ever be sent.) Only the router's forwarding path uses the narrow end:
    /// the client never sends anything large in a download.
    pub fn narrow_client_link(&self, mtu: u32) {
        self.router.ip(&[
            "link",
            "set",
            addr::ROUTER_CLIENT_IF,
            "mtu",
            &mtu.to_string(),
        ]);
    }
}
