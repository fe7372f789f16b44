//! Differential test: random policies and random packets through the real programs with
//! `BPF_PROG_TEST_RUN` and through the userspace reference (`boundary_agent::reference`, an
//! independent oracle: etherparse decoding, decision written from the policy's semantics).
//!
//! For every packet the datapath and the reference must agree on the verdict, the reason and
//! the workload counted (the counter that moved), the deciding rule (the `BND_RULE_HITS` entry
//! that moved, or none), and for drops and audited packets on the peer identity and rule the
//! drop event reports (the event budget is refilled so no event is sampled away). The
//! reference runs twice, from the compiled tables and from the policy model itself: the two
//! must agree on everything, which checks the compiler as well. After each policy, every test
//! peer's compiled identity must stand for exactly the rules whose selectors match it.
//!
//! Traffic: fresh packets (TCP, UDP, ICMP echo, neighbour discovery; VLAN tags, IPv4
//! options, GRE, IPv6 extension chains with the Fragment header anywhere RFC 8200 lets it be,
//! first, tiny and later fragments, frames past the MTU), answers to earlier packets
//! (conntrack: `established`), ICMP errors quoting earlier packets or their answers
//! (`related`), repeats (the verdict cache), and malformed variants (a flipped bit, a cut).
//! Ingress frames go through XDP or TC ingress, which must decide alike. XDP test runs build
//! multi-buffer frames past a page (the program is `xdp.frags`), so ingress frames reach 9 KB;
//! skb test runs are linear and at most a page, so TC frames stop at 3.4 KB, and non-linear
//! skbs and GSO super-packets are the end-to-end tests' to cover.
//!
//! CIDR identities: prefixes of many lengths, nested and overlapping, IPv4-mapped among the
//! IPv6 ones; the first half of the policies on a datapath with the shipped room for prefix
//! levels, the second on one with room for a few regions, so that generations lay their
//! prefixes out in levels, leave them in the trie, and split them between the two.
//!
//! Seeded and reproducible: `BOUNDARY_DIFF_SEED` picks the seed, `BOUNDARY_DIFF_PACKETS` the
//! packet count (default 100,000 over 100 policies; `cargo xtask test --soak` runs 10^7).
//! A mismatch prints the seed, the policy and the frame. A run of 100,000 or more fails if its
//! mix lacks any of the reasons it is meant to exercise.

mod support;

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use aya::{
    maps::{IterableMap as _, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use boundary_agent::{
    datapath::netdev,
    policy::{Interfaces, Policy, Selector, Tables},
    reference::{self, Limits, ModelView, State},
};
use boundary_common::{
    Direction, Reason, Verdict,
    maps::{
        Action, EVENTS_BURST, EVENTS_MAP, EventBudget, IDENTITY_ANY, PREFIX_LEVELS_NONE,
        PREFIX_LEVELS_TRIE, PREFIXES_MAP, TABLE_MAP,
    },
};
use boundary_tests::{
    NetNs,
    packets::{self, Ext, MAC_CLIENT, MAC_SERVER},
    require_root,
};
use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6Header, PacketBuilder,
    PacketBuilderStep, VlanId,
};
use support::{Kernel, TC_NEXT, TC_SHOT, XDP_DROP, XDP_PASS};

/// `SplitMix64`: tiny, seedable, the same on every platform and release.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("fits")
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const LOCAL4: [&str; 4] = ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"];
const LOCAL6: [&str; 2] = ["fd00:9::1", "fd00:9::2"];
const PEER4: [&str; 14] = [
    "10.1.2.7",
    "10.1.2.8",
    "10.1.9.9",
    "10.2.3.4",
    "192.168.1.5",
    "192.168.66.7",
    "8.8.8.8",
    "10.9.0.99",
    "10.1.2.6",
    "10.1.3.200",
    "10.1.9.99",
    "8.9.1.1",
    "192.168.100.1",
    "192.168.200.1",
];
/// The interfaces the test protects: loopback and a veth pair, in a namespace of its own
/// (`BPF_PROG_TEST_RUN` puts a packet only on a device that exists).
const INTERFACES: [&str; 3] = ["lo", "d0", "d1"];
const PEER6: [&str; 10] = [
    "fd00:1::7",
    "fd00:2::5",
    "2001:db8::1",
    "fd00:9::99",
    "fd00:1::5",
    "fd00:1:0:1::1",
    "::ffff:10.1.2.7",
    "::ffff:8.8.8.8",
    "2001:db8:8000::1",
    "fd00:1::8",
];
/// Nested, overlapping and sibling prefixes of many lengths (0 to 32, 0 to 128, IPv4-mapped
/// among the IPv6), so that a policy's CIDR identities take prefix levels at lengths of all
/// sorts, not only the shortest, with regions expanded, markers and leaf-pushed answers.
const CIDRS: [&str; 28] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "192.168.66.0/24",
    "0.0.0.0/0",
    "10.1.2.0/23",
    "10.1.2.4/30",
    "10.1.2.8/32",
    "10.1.9.0/25",
    "10.1.9.96/27",
    "192.168.64.0/18",
    "8.0.0.0/7",
    "8.8.8.8/32",
    "10.9.0.0/29",
    "10.9.0.96/30",
    "fd00::/8",
    "fd00:1::/32",
    "::/0",
    "fd00:1::/48",
    "fd00:1::/64",
    "fd00:1::4/126",
    "fd00:2::5/128",
    "2001:db8::/33",
    "::ffff:10.1.0.0/112",
    "::ffff:0:0/96",
    "fd00:9::/120",
    "fd00:9::80/121",
];
/// Regions of the prefix levels the second half of the policies have room for (the map's
/// entries over two): a few, so that those policies' CIDR identities are in levels when
/// they have few prefixes, in the trie when they have many, and split between the two
/// (IPv4 in levels, IPv6 in the trie) in between. The first half has the shipped room.
const SMALL_PREFIX_ROOM: u32 = 3;
const SPIFFE: [&str; 5] = [
    "spiffe://example.org/ns/orders/sa/api",
    "spiffe://example.org/ns/billing/sa/api",
    "spiffe://example.org/ns/orders/*",
    "spiffe://example.org/*",
    "spiffe://example.org/ns/billing/*",
];
const PORTS: [&str; 9] = [
    "22/tcp",
    "53",
    "80/tcp",
    "443/tcp",
    "8443/tcp",
    "30000-30100/udp",
    "1000-2000",
    "1500/tcp",
    "2000-2047/tcp",
];
const DPORTS: [u16; 14] = [
    22, 53, 80, 443, 8443, 30_000, 30_050, 30_100, 30_101, 999, 1000, 1500, 2000, 2047,
];
const SPORTS: [u16; 5] = [40_000, 53, 443, 22, 1500];
/// Keep the generator off the frames of known disagreements, each kept in
/// `datapath_follows_the_written_rules_at_the_edges` (ignored until the datapath follows the
/// written rule; then set this to false): an IP length lowered below the headers that follow
/// it (the datapath reads headers up to the frame's end, not the IP packet's), a cut of 0-1
/// bytes into an extension header after a first fragment's Fragment header, a mobility header
/// in ninth place, fragmented neighbour discovery.
const AVOID_KNOWN_DISAGREEMENTS: bool = false;
/// Largest frame sent: `BPF_PROG_TEST_RUN` takes at most a page minus XDP headroom (256) and
/// `skb_shared_info` (320) for XDP, a little more for TC.
const MAX_FRAME: usize = 3400;
/// Largest ingress frame: a 9000-byte MTU's, which the XDP program takes as a multi-buffer
/// frame.
const MAX_JUMBO: usize = 9000 + 14;
/// What an XDP test run holds in one buffer: a page minus XDP headroom and `skb_shared_info`.
const XDP_LINEAR: usize = 4096 - 256 - 320;

fn random_policy(r: &mut Rng) -> String {
    let mut y = String::from("apiVersion: boundary.dev/v1\n");
    let act = |r: &mut Rng| if r.chance(50) { "allow" } else { "deny" };
    let _ = writeln!(y, "defaults: {{ ingress: {}, egress: {} }}", act(r), act(r));
    match r.below(3) {
        0 => y.push_str("failsafe: []\n"),
        1 => y.push_str("failsafe: [\"tcp:10.0.0.0/8:22\", \"udp:fd00::/8:53\"]\n"),
        _ => {}
    }
    // Sometimes no bindings at all, so the datapath's "no identity maps" shortcut runs too.
    if r.chance(75) {
        y.push_str("identities:\n");
        let _ = writeln!(
            y,
            "  - id: {}\n    addresses: [10.1.2.7, \"fd00:1::7\"]",
            SPIFFE[0]
        );
        if r.chance(50) {
            let _ = writeln!(y, "  - id: {}\n    addresses: [10.1.2.8]", SPIFFE[1]);
        }
    }
    y.push_str("workloads:\n");
    let mut locals: Vec<&str> = LOCAL4.iter().chain(LOCAL6.iter()).copied().collect();
    // Some policies protect workloads on some interfaces only; those may share an address
    // with workloads on other interfaces.
    let scoped = r.chance(40);
    // Address -> the interfaces it is owned on so far (empty: every one).
    let mut taken: Vec<(&str, Vec<&str>)> = Vec::new();
    for w in 0..=r.below(3) {
        let _ = writeln!(y, "  - name: w{w}");
        let mut listed: Vec<&str> = Vec::new();
        if scoped && r.chance(70) {
            for _ in 0..=r.below(2) {
                let i = *r.pick(&INTERFACES);
                if !listed.contains(&i) {
                    listed.push(i);
                }
            }
        }
        let mut addrs = Vec::new();
        let shareable: Vec<usize> = (0..taken.len())
            .filter(|&i| {
                let on = &taken[i].1;
                !listed.is_empty() && !on.is_empty() && !on.iter().any(|x| listed.contains(x))
            })
            .collect();
        if !shareable.is_empty() && r.chance(60) {
            let i = *r.pick(&shareable);
            addrs.push(format!("\"{}\"", taken[i].0));
            taken[i].1.extend(&listed);
        }
        for _ in 0..=r.below(2) {
            if !locals.is_empty() {
                let i = r.below(locals.len());
                let a = locals.swap_remove(i);
                addrs.push(format!("\"{a}\""));
                taken.push((a, listed.clone()));
            }
        }
        let _ = writeln!(y, "    addresses: [{}]", addrs.join(", "));
        if !listed.is_empty() {
            let _ = writeln!(y, "    interfaces: [{}]", listed.join(", "));
        }
        if r.chance(20) {
            y.push_str("    mode: audit\n");
        }
        if r.chance(30) {
            let _ = writeln!(y, "    defaults: {{ ingress: {} }}", act(r));
        }
        random_rules(r, &mut y);
    }
    y
}

/// A workload's rules, both ways, appended to `y`.
fn random_rules(r: &mut Rng, y: &mut String) {
    for (dir, key) in [("ingress", "from"), ("egress", "to")] {
        let n = r.below(if dir == "ingress" { 7 } else { 4 });
        if n == 0 {
            continue;
        }
        let _ = writeln!(y, "    {dir}:");
        for _ in 0..n {
            let peer = match r.below(4) {
                0 => format!("{{ spiffe: \"{}\" }}", r.pick(&SPIFFE)),
                1 | 2 => format!("{{ cidr: \"{}\" }}", r.pick(&CIDRS)),
                _ => {
                    if r.chance(50) {
                        "{ world: true }".into()
                    } else {
                        "{ any: true }".into()
                    }
                }
            };
            let _ = writeln!(y, "      - {key}: {peer}");
            match r.below(5) {
                0 => {
                    y.push_str("        icmp: [echo-request, 3]\n        icmpv6: [echo-request]\n");
                }
                1 => y.push_str("        protocols: [gre, udp]\n"),
                2 => {}
                _ => {
                    let ports: Vec<String> = (0..=r.below(3))
                        .map(|_| format!("\"{}\"", r.pick(&PORTS)))
                        .collect();
                    let _ = writeln!(y, "        ports: [{}]", ports.join(", "));
                }
            }
            if r.chance(30) {
                y.push_str("        action: deny\n");
            } else if r.chance(25) {
                let _ = writeln!(y, "        rateLimit: {}", random_limit(r, dir));
            }
        }
    }
}

/// A rate limit for an allow rule of direction `dir`. The datapath runs on a clock that stands
/// still in this test, so a limit is its burst: small ones, so buckets run dry.
fn random_limit(r: &mut Rng, dir: &str) -> String {
    let mut terms = Vec::new();
    let which = r.below(3);
    if which != 1 {
        let rate = r.pick(&[1, 10, 1000, 1_000_000]);
        terms.push(format!(
            "packetsPerSecond: {rate}, burst: {}",
            1 + r.below(8)
        ));
    }
    if which != 0 {
        let rate = r.pick(&[1500, 100_000, 1_000_000_000]);
        let burst = r.pick(&[1500, 3000, 20_000]);
        terms.push(format!("bytesPerSecond: {rate}, burstBytes: {burst}"));
    }
    if r.chance(35) {
        terms.push(format!(
            "per: {}",
            if dir == "ingress" {
                "source"
            } else {
                "destination"
            }
        ));
        if r.chance(50) {
            terms.push(format!(
                "ceiling: {{ packetsPerSecond: 1, burst: {} }}",
                1 + r.below(12)
            ));
        }
    }
    format!("{{ {} }}", terms.join(", "))
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The transport of a generated packet.
#[derive(Clone, Copy, Debug)]
enum Tp {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Echo {
        id: u16,
        reply: bool,
    },
    /// A protocol without ports the datapath reads (GRE).
    Bare(u8),
}

/// A generated well-formed packet, so that its answer and ICMP errors about it can be built.
#[derive(Clone, Copy, Debug)]
struct Sent {
    direction: Direction,
    src: IpAddr,
    dst: IpAddr,
    tp: Tp,
}

impl Sent {
    /// The answer: the other way, addresses and ports swapped, an echo request answered.
    fn answer(self) -> Self {
        Self {
            direction: other(self.direction),
            src: self.dst,
            dst: self.src,
            tp: match self.tp {
                Tp::Tcp { sport, dport } => Tp::Tcp {
                    sport: dport,
                    dport: sport,
                },
                Tp::Udp { sport, dport } => Tp::Udp {
                    sport: dport,
                    dport: sport,
                },
                Tp::Echo { id, reply } => Tp::Echo { id, reply: !reply },
                Tp::Bare(p) => Tp::Bare(p),
            },
        }
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// The builder up to the IP header, with `vlans` tags (0, 1 or 2).
fn ip_step(vlans: &[u16], src: IpAddr, dst: IpAddr) -> PacketBuilderStep<IpHeaders> {
    let eth = PacketBuilder::ethernet2(MAC_CLIENT, MAC_SERVER);
    let vid = |v: u16| VlanId::try_new(v).expect("vlan id < 4096");
    let header = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => IpHeaders::Ipv4(
            Ipv4Header::new(0, 64, IpNumber::UDP, s.octets(), d.octets()).expect("ipv4 header"),
            Ipv4Extensions::default(),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
                ..Default::default()
            },
            Ipv6Extensions::default(),
        ),
        _ => unreachable!("one family"),
    };
    match vlans {
        [] => eth.ip(header),
        [a] => eth.single_vlan(vid(*a)).ip(header),
        [a, b] => eth.double_vlan(vid(*a), vid(*b)).ip(header),
        _ => unreachable!("push_vlan adds more"),
    }
}

/// The frame of `s`.
fn build(s: &Sent, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
    let ip = ip_step(vlans, s.src, s.dst);
    let v6 = s.src.is_ipv6();
    let mut out = Vec::new();
    match s.tp {
        Tp::Tcp { sport, dport } => ip
            .tcp(sport, dport, 1, 65_535)
            .syn()
            .write(&mut out, payload),
        Tp::Udp { sport, dport } => ip.udp(sport, dport).write(&mut out, payload),
        Tp::Echo { id, reply: false } if v6 => {
            ip.icmpv6_echo_request(id, 1).write(&mut out, payload)
        }
        Tp::Echo { id, reply: false } => ip.icmpv4_echo_request(id, 1).write(&mut out, payload),
        Tp::Echo { id, reply: true } if v6 => ip.icmpv6_echo_reply(id, 1).write(&mut out, payload),
        Tp::Echo { id, reply: true } => ip.icmpv4_echo_reply(id, 1).write(&mut out, payload),
        Tp::Bare(p) => ip.write(&mut out, IpNumber(p), payload),
    }
    .expect("build frame");
    out
}

/// An ICMP error about `q`, in the direction it would cross: a router's answer to a packet the
/// workload sent comes in; the workload's own answer to a packet it received goes out.
fn icmp_error(r: &mut Rng, q: &Sent) -> (Direction, Vec<u8>) {
    let v6 = q.src.is_ipv6();
    let direction = other(q.direction);
    // The quote: the IP header and at least 8 bytes more, or as much as fits (RFC 1812 4.3.2.3,
    // RFC 4443 2.4).
    let whole = build(q, &[], &[0x5a; 24]);
    let ip = &whole[packets::ETH_LEN..];
    let header = if v6 {
        packets::IPV6_LEN
    } else {
        packets::IPV4_LEN
    };
    let mut quote = ip[..(header + 8 + r.below(3) * 8).min(ip.len())].to_vec();
    if r.chance(5) {
        quote.truncate(header + r.below(8));
    }
    let (src, dst) = match direction {
        // A router on the way, or the peer itself.
        Direction::Ingress => {
            let router = if r.chance(50) {
                q.dst
            } else if v6 {
                addr(r.pick(&PEER6))
            } else {
                addr(r.pick(&PEER4))
            };
            (router, q.src)
        }
        Direction::Egress => (q.dst, q.src),
    };
    let step = ip_step(&[], src, dst);
    let mut out = Vec::new();
    if v6 {
        // Destination unreachable, packet too big, time exceeded, parameter problem; now and
        // then an informational type, which never relates.
        let (t, code, rest) = *r.pick(&[
            (1u8, 4u8, [0u8; 4]),
            (1, 1, [0; 4]),
            (2, 0, 1280u32.to_be_bytes()),
            (3, 0, [0; 4]),
            (4, 0, [0, 0, 0, 40]),
            (129, 0, [0, 7, 0, 1]),
        ]);
        step.icmpv6_raw(t, code, rest).write(&mut out, &quote)
    } else {
        let (t, code, rest) = *r.pick(&[
            (3u8, 3u8, [0u8; 4]),
            (3, 4, [0, 0, 5, 0xdc]),
            (11, 0, [0; 4]),
            (12, 0, [20, 0, 0, 0]),
            (5, 1, [10, 9, 0, 254]),
        ]);
        step.icmpv4_raw(t, code, rest).write(&mut out, &quote)
    }
    .expect("build icmp error");
    (direction, out)
}

/// Bytes of an extension header as `packets::with_ipv6_exts` writes it.
fn ext_len(e: Ext) -> usize {
    match e {
        Ext::Auth => 24,
        Ext::Fragment { .. } => 8,
        _ => 16,
    }
}

/// An IPv6 extension chain. Fragmented: the per-fragment headers RFC 8200 4.5 allows before
/// the Fragment header (hop-by-hop, destination options, routing), the Fragment header, then
/// any of the fragmentable ones (AH, destination options). Otherwise any order, hop-by-hop
/// out of place included.
fn random_exts(r: &mut Rng) -> Vec<Ext> {
    let mut exts = Vec::new();
    if r.chance(14) {
        for (e, p) in [(Ext::HopByHop, 25), (Ext::DestOpts, 20), (Ext::Routing, 25)] {
            if r.chance(p) {
                exts.push(e);
            }
        }
        let offset = if r.chance(55) { 0 } else { *r.pick(&[1, 100]) };
        exts.push(Ext::Fragment {
            offset,
            more: offset == 0 || r.chance(50),
        });
        for (e, p) in [(Ext::Auth, 30), (Ext::DestOpts, 30)] {
            if r.chance(p) {
                exts.push(e);
            }
        }
    } else {
        for _ in 0..r.below(3) {
            exts.push(*r.pick(&[Ext::DestOpts, Ext::Routing, Ext::Auth, Ext::HopByHop]));
        }
    }
    if r.chance(3) {
        exts = vec![Ext::DestOpts; 9];
    }
    // (A mobility header that a flipped length bit brings into ninth place is a known
    // disagreement.)
    if r.chance(3) && !(AVOID_KNOWN_DISAGREEMENTS && exts.len() >= 8) {
        exts.push(Ext::Other(135));
    }
    exts
}

/// A frame the generator made, kept so later packets can answer it, quote it, repeat it or
/// send the rest of its datagram.
#[derive(Clone)]
struct Made {
    direction: Direction,
    frame: Vec<u8>,
    /// What it is, when it was built whole (before any breakage).
    sent: Option<Sent>,
    /// For a first fragment: where its fragment field is (IPv4: 0; IPv6: the Fragment
    /// header's offset in the frame).
    first_fragment: Option<usize>,
    /// The interface it crosses (0 until the test picks one); what it is made from keeps it.
    ifindex: u32,
}

/// A fresh random frame.
#[expect(
    clippy::too_many_lines,
    reason = "one frame's recipe, read top to bottom"
)]
fn fresh(r: &mut Rng, protected: &[IpAddr]) -> Made {
    let direction = if r.chance(60) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    // Mostly a protected address, so that most packets meet the policy.
    let local = if r.chance(80) {
        *r.pick(protected)
    } else if r.chance(30) {
        addr(r.pick(&LOCAL6))
    } else {
        addr(r.pick(&LOCAL4))
    };
    let v6 = local.is_ipv6();
    let peer = if v6 {
        addr(r.pick(&PEER6))
    } else {
        addr(r.pick(&PEER4))
    };
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let sport = *r.pick(&SPORTS);
    let dport = *r.pick(&DPORTS);
    let tp = match r.below(13) {
        0..4 => Tp::Tcp { sport, dport },
        4..8 => Tp::Udp { sport, dport },
        8 => Tp::Bare(47),
        _ => Tp::Echo {
            id: u16::try_from(r.below(4)).expect("small") + 7,
            reply: r.chance(20),
        },
    };
    let sent = Sent {
        direction,
        src,
        dst,
        tp,
    };
    // Now and then a frame past the standard MTU: up to a 9000-byte jumbo frame on ingress
    // (XDP test runs build multi-buffer frames past a page), up to what an skb test run takes
    // (a page minus headroom) on egress.
    let payload = if r.chance(4) {
        let max = match direction {
            Direction::Ingress => MAX_JUMBO,
            Direction::Egress => MAX_FRAME,
        };
        vec![0x42; 1400 + r.below(max - 1400 - 200)]
    } else {
        vec![0x42; r.below(40)]
    };
    let mut first_fragment = None;
    let mut whole = true;
    let mut f = if v6 {
        let mut f = build(&sent, &[], &payload);
        let exts = random_exts(r);
        // Neighbour discovery (the checksum is not the datapath's business), unfragmented:
        // how a fragmented one should fare is an open question (RFC 6980 forbids them).
        let fragmented = exts.iter().any(|e| matches!(e, Ext::Fragment { .. }));
        if matches!(tp, Tp::Echo { .. })
            && !(AVOID_KNOWN_DISAGREEMENTS && fragmented)
            && r.chance(10)
        {
            f[packets::ETH_LEN + packets::IPV6_LEN] = *r.pick(&[133, 135, 136]);
            whole = false;
        }
        if let Some(at) = exts.iter().position(|e| {
            matches!(
                e,
                Ext::Fragment {
                    offset: 0,
                    more: true
                }
            )
        }) {
            let before: usize = exts[..at].iter().map(|e| ext_len(*e)).sum();
            first_fragment = Some(packets::ETH_LEN + packets::IPV6_LEN + before);
        }
        whole &= exts.is_empty();
        if exts.is_empty() {
            f
        } else {
            packets::with_ipv6_exts(&f, &exts)
        }
    } else {
        let vlans: &[u16] = match r.below(10) {
            0 => &[7],
            1 => &[7, 8],
            _ => &[],
        };
        let mut f = build(&sent, vlans, &payload);
        if vlans.is_empty() {
            if r.chance(10) {
                f = packets::with_ipv4_options(&f, u8::try_from(1 + r.below(4)).expect("small"));
            }
            if r.chance(12) {
                let offset = if r.chance(50) {
                    0
                } else {
                    u16::try_from(r.below(3)).expect("small") * 100
                };
                let more = offset == 0 || r.chance(50);
                packets::set_ipv4_fragment(&mut f, offset, more);
                f[packets::ETH_LEN + 4..packets::ETH_LEN + 6]
                    .copy_from_slice(&u16::try_from(r.below(3)).expect("small").to_be_bytes());
                packets::fix_ipv4_checksum(&mut f);
                if offset == 0 && more {
                    first_fragment = Some(0);
                }
                whole = false;
            }
            if r.chance(5) {
                f[packets::ETH_LEN + 9] = 47; // GRE
                packets::fix_ipv4_checksum(&mut f);
                whole = false;
            }
        }
        f
    };
    if r.chance(3) {
        f = packets::push_vlan(&f, 9);
        first_fragment = None;
    }
    let broken = breakage(r, direction, v6, &mut f);
    Made {
        direction,
        frame: f,
        sent: whole.then_some(sent).filter(|_| !broken),
        first_fragment: first_fragment.filter(|_| !broken),
        ifindex: 0,
    }
}

/// Whether flipping `bit` of byte `i` lowers the IPv4 total length or IPv6 payload length
/// field (the IP header found after the frame's VLAN tags).
fn lowers_ip_length(f: &[u8], i: usize, bit: u8) -> bool {
    let mut at = 12;
    while f.len() >= at + 2 && matches!(u16::from_be_bytes([f[at], f[at + 1]]), 0x8100 | 0x88a8) {
        at += 4;
    }
    let Some(&[a, b]) = f.get(at..at + 2) else {
        return false;
    };
    let field = match u16::from_be_bytes([a, b]) {
        0x0800 => at + 2 + 2,
        0x86dd => at + 2 + 4,
        _ => return false,
    };
    (i == field || i == field + 1) && f[i] & bit != 0
}

/// Malformed: flip a header bit or cut the frame short. Whether it did.
fn breakage(r: &mut Rng, direction: Direction, v6: bool, f: &mut Vec<u8>) -> bool {
    if !r.chance(12) {
        return false;
    }
    if r.chance(50) {
        let i = 12 + r.below(f.len().min(100) - 12);
        let bit = 1 << r.below(8);
        if AVOID_KNOWN_DISAGREEMENTS && lowers_ip_length(f, i, bit) {
            return false;
        }
        f[i] ^= bit;
    } else {
        // BPF_PROG_TEST_RUN refuses an skb (TC) whose IP header is cut short (EINVAL), so
        // egress frames keep theirs; XDP takes anything from an Ethernet header up.
        let ip_header_end = 14 + if v6 { 40 } else { 20 };
        let floor = match direction {
            Direction::Ingress => 14,
            Direction::Egress if f.len() <= ip_header_end => return false,
            Direction::Egress => (ip_header_end + 8).min(f.len() - 1),
        };
        let len = floor + r.below(f.len() - floor);
        f.truncate(len);
    }
    true
}

/// The rest of a first fragment's datagram: the same headers at a later offset.
fn later_of(r: &mut Rng, first: &Made, field: usize) -> Made {
    let mut f = first.frame.clone();
    let offset = *r.pick(&[1u16, 100, 185]);
    let more = r.chance(50);
    if field == 0 {
        packets::set_ipv4_fragment(&mut f, offset, more);
    } else {
        let value = (offset << 3) | u16::from(more);
        f[field + 2..field + 4].copy_from_slice(&value.to_be_bytes());
    }
    Made {
        direction: first.direction,
        frame: f,
        sent: None,
        first_fragment: None,
        ifindex: first.ifindex,
    }
}

/// A first fragment cut inside its transport header (RFC 7112 / RFC 1858 tiny fragment),
/// its IP length fixed to match.
fn tiny_of(r: &mut Rng, first: &Made, field: usize) -> Made {
    let f = first.frame.clone();
    let frame = if field == 0 {
        let ihl = usize::from(f[packets::ETH_LEN] & 0x0f) * 4;
        packets::cut_v4(f, ihl + r.below(8))
    } else {
        // At least 2 bytes of what follows the Fragment header: with fewer, the datapath
        // reports an extension header after it as truncated rather than tiny (a known
        // disagreement, see `datapath_follows_the_written_rules_at_the_edges`).
        let after_fragment = field + 8 - packets::ETH_LEN - packets::IPV6_LEN;
        let least = if AVOID_KNOWN_DISAGREEMENTS { 2 } else { 0 };
        packets::cut_v6(f, after_fragment + least + r.below(8 - least))
    };
    Made {
        direction: first.direction,
        frame,
        sent: None,
        first_fragment: None,
        ifindex: first.ifindex,
    }
}

/// The next packet: fresh, a repeat, an answer, an ICMP error, or a later fragment.
fn next_packet(r: &mut Rng, recent: &[Made], protected: &[IpAddr]) -> (Made, bool) {
    if recent.is_empty() {
        return (fresh(r, protected), true);
    }
    let roll = r.below(100);
    let pick = recent[r.below(recent.len())].clone();
    match roll {
        0..30 => return (pick, false),
        30..42 => {
            if let Some(s) = pick.sent {
                let answer = s.answer();
                let mut f = build(&answer, &[], &[0x61; 16]);
                let broken = breakage(r, answer.direction, answer.src.is_ipv6(), &mut f);
                return (
                    Made {
                        direction: answer.direction,
                        frame: f,
                        sent: (!broken).then_some(answer),
                        first_fragment: None,
                        ifindex: pick.ifindex,
                    },
                    true,
                );
            }
        }
        42..50 => {
            if let Some(s) = pick.sent {
                let q = if r.chance(50) { s } else { s.answer() };
                let (direction, mut f) = icmp_error(r, &q);
                breakage(r, direction, q.src.is_ipv6(), &mut f);
                return (
                    Made {
                        direction,
                        frame: f,
                        sent: None,
                        first_fragment: None,
                        ifindex: pick.ifindex,
                    },
                    true,
                );
            }
        }
        50..56 => {
            if let Some(field) = pick.first_fragment {
                return (later_of(r, &pick, field), true);
            }
        }
        56..58 => {
            if let Some(field) = pick.first_fragment {
                return (tiny_of(r, &pick, field), true);
            }
        }
        _ => {}
    }
    (fresh(r, protected), true)
}

fn hex(f: &[u8]) -> String {
    f.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The datapath's drop-event ring (the loader keeps it in the object; it is found by name
/// among the XDP program's maps).
fn event_ring(kernel: &mut Kernel) -> RingBuf<MapData> {
    let ids = kernel
        .dp
        .xdp()
        .info()
        .expect("program info")
        .map_ids()
        .expect("map ids")
        .expect("the kernel lists a program's maps");
    for id in ids {
        let data = MapData::from_id(id).expect("open map by id");
        let name = data.info().expect("map info");
        if name.name_as_str() == Some(EVENTS_MAP) {
            return RingBuf::try_from(Map::from_map_data(data).expect("map")).expect("ring");
        }
    }
    panic!("no {EVENTS_MAP} among the XDP program's maps");
}

/// A drop event, the fields compared.
#[derive(Debug, PartialEq, Eq)]
struct Event {
    identity: u32,
    rule: u32,
    slot: u16,
    reason: u8,
    direction: u8,
}

/// Decodes a `DropEvent` from its bytes (layout: boundary-common `DropEvent`).
fn decode_event(b: &[u8]) -> Event {
    let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Event {
        identity: u32_at(8),
        rule: u32_at(16),
        slot: u16::from_ne_bytes([b[20], b[21]]),
        reason: b[26],
        direction: b[27],
    }
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.push(decode_event(&item));
    }
    out
}

/// Gives every CPU a full event budget, so no event of the next packets is sampled away.
fn refill_event_budget(kernel: &mut Kernel) {
    let cpus = aya::util::nr_cpus().expect("cpus").get() as usize;
    let full = EventBudget {
        tokens: EVENTS_BURST,
        ..EventBudget::default()
    };
    let values = PerCpuValues::try_from(vec![full; cpus]).expect("per-cpu values");
    let mut budget: PerCpuArray<MapData, EventBudget> =
        support::writable(kernel.dp.maps().event_budget_map().map());
    budget.set(0, values, 0).expect("refill the event budget");
}

/// Whether the workload in `slot` has rules about particular peers in `direction`: without,
/// the datapath does not look the peer up and reports identity 0.
fn names_peers(policy: &Policy, tables: &Tables, slot: u16, direction: Direction) -> bool {
    let Some(name) = tables.names.get(&slot) else {
        return false;
    };
    policy
        .workloads
        .iter()
        .find(|w| &w.name == name)
        .is_some_and(|w| {
            let rules = match direction {
                Direction::Ingress => &w.ingress,
                Direction::Egress => &w.egress,
            };
            rules.iter().any(|r| r.peer != Selector::Any)
        })
}

/// Every test peer's compiled identity stands for exactly the rules whose selector matches it.
fn check_identities(policy: &Policy, tables: &Tables, yaml: &str) {
    let view = reference::Compiled(tables);
    let mut rules = Vec::new();
    for w in &policy.workloads {
        rules.extend(w.ingress.iter().chain(&w.egress));
    }
    for peer in PEER4.iter().chain(&PEER6).chain(&LOCAL4).chain(&LOCAL6) {
        let peer = addr(peer);
        let bound = policy
            .identities
            .iter()
            .find(|i| i.addresses.contains(&peer))
            .map(|i| &i.id);
        let want: std::collections::BTreeSet<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| match &r.peer {
                Selector::Spiffe(p) => bound.is_some_and(|id| p.matches(id)),
                Selector::Cidr(n) => n.contains(&peer),
                Selector::World => bound.is_none(),
                Selector::Any => false,
            })
            .map(|(i, _)| u32::try_from(i).expect("fits"))
            .collect();
        let id = reference::PolicyView::identity(&view, peer);
        let got = tables
            .identity_info
            .get(&id)
            .map(|i| i.rules.clone())
            .unwrap_or_default();
        assert_eq!(
            got, want,
            "identity {id} of {peer} stands for the wrong rules\n  policy:\n{yaml}"
        );
    }
}

/// The program that judges a packet: ingress has two, which must decide alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    Xdp,
    TcIngress,
    TcEgress,
}

impl Program {
    fn direction(self) -> Direction {
        match self {
            Program::Xdp | Program::TcIngress => Direction::Ingress,
            Program::TcEgress => Direction::Egress,
        }
    }

    /// The program's return value for a verdict.
    fn action(self, verdict: Verdict) -> u32 {
        match (self, verdict) {
            (Program::Xdp, Verdict::Pass) => XDP_PASS,
            (Program::Xdp, Verdict::Drop) => XDP_DROP,
            (_, Verdict::Pass) => TC_NEXT,
            (_, Verdict::Drop) => TC_SHOT,
        }
    }
}

/// Runs `frame` through `program` on interface `ifindex`; returns (its return value, the
/// reason whose counter moved in `slot`'s row, if exactly one did).
fn run(
    kernel: &mut Kernel,
    program: Program,
    (frame, ifindex): (&[u8], u32),
    slot: u16,
) -> (u32, Option<Reason>) {
    let direction = program.direction() as u8;
    let row = |k: &Kernel| k.dp.maps().counter_row(slot, direction).expect("row");
    let before = row(kernel);
    let ctx = support::run_context(program == Program::Xdp, frame.len(), ifindex);
    let opts = TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    };
    let action = match program {
        Program::Xdp => kernel.dp.xdp().test_run(opts),
        Program::TcIngress => kernel.dp.tc_ingress().test_run(opts),
        Program::TcEgress => kernel.dp.tc().test_run(opts),
    }
    .unwrap_or_else(|e| {
        panic!(
            "BPF_PROG_TEST_RUN {program:?} on {} bytes: {e:?}",
            frame.len()
        )
    })
    .return_value;
    let after = row(kernel);
    let moved: Vec<usize> = (0..before.counters.len())
        .filter(|&i| before.counters[i] != after.counters[i])
        .collect();
    let reason = match moved.as_slice() {
        [i] => Reason::from_code(u8::try_from(*i).expect("code")),
        _ => None,
    };
    (action, reason)
}

#[test]
fn datapath_agrees_with_the_reference() {
    if !require_root("datapath_agrees_with_the_reference") {
        return;
    }
    // Packets cross three interfaces, which only a namespace of the test's own can hold.
    let ns = NetNs::new("bnd-diff");
    ns.ip(&[
        "link",
        "add",
        INTERFACES[1],
        "type",
        "veth",
        "peer",
        "name",
        INTERFACES[2],
    ]);
    ns.run(agree);
}

#[expect(
    clippy::too_many_lines,
    reason = "one loop, each comparison in the order a mismatch report reads"
)]
fn agree() {
    let interfaces = Interfaces::protected(INTERFACES.map(|name| {
        let index = netdev::index(&name.parse().expect("a name")).expect("the interface exists");
        (name.to_owned(), index)
    }));
    let ifindexes: Vec<u32> = INTERFACES
        .iter()
        .map(|name| netdev::index(&name.parse().expect("a name")).expect("exists"))
        .collect();
    let started = std::time::Instant::now();
    let seed: u64 = std::env::var("BOUNDARY_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xB0DA);
    let total: usize = std::env::var("BOUNDARY_DIFF_PACKETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let per_policy = 1000.min(total);
    let policies = total.div_ceil(per_policy).max(100.min(total));
    let mut r = Rng(seed);
    // Rate limits on a clock that stands still, the same on both sides: a day from now, so
    // every bucket the agent makes full now is full then.
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    let clock_ns = u64::try_from(now.tv_sec()).expect("positive") * 1_000_000_000
        + u64::try_from(now.tv_nsec()).expect("positive")
        + 86_400 * 1_000_000_000;
    let mut kernel = Kernel::frozen(clock_ns);
    // The buckets a reload keeps carry over from one policy to the next, as in the datapath.
    let (mut limits, mut model_limits) = (Limits::default(), Limits::default());
    limits.clock_ns = clock_ns;
    model_limits.clock_ns = clock_ns;
    let mut ring = event_ring(&mut kernel);
    let mut counts = BTreeMap::<&'static str, usize>::new();
    let (mut sent, mut repeats, mut events, mut jumbo) = (0, 0, 0, 0);
    let (mut tc_ingress, mut multi_buffer) = (0, 0);
    // Later fragments that found their first, and of those, IPv6 ones whose Fragment header
    // is followed by AH or destination options.
    let (mut followed, mut followed_behind_ext) = (0, 0);
    // Packets to or from an address some workload is protected on some interfaces only: on
    // such an interface, and on another.
    let (mut on_listed, mut off_listed) = (0, 0);
    // Generations whose CIDR identities were all in prefix levels, all in the trie, split.
    let mut layouts = [0usize; 3];
    // Keys of the generations in the address table: in their bucket, past a full one.
    let (mut placed, mut overflowed) = (0u64, 0u64);
    for p in 0..policies {
        if p == policies / 2 && p > 0 {
            // The second half on a datapath whose prefix levels have little room, and whose
            // address table has two buckets (eight slots): the keys past a full bucket are
            // found in the hash maps (`kernel_table.rs` fills it on purpose).
            drop(ring);
            drop(kernel);
            kernel = Kernel::frozen_with(
                clock_ns,
                &[(PREFIXES_MAP, 2 * SMALL_PREFIX_ROOM), (TABLE_MAP, 2 * 2)],
            );
            ring = event_ring(&mut kernel);
            // Its buckets start full, and so do the reference's.
            (limits, model_limits) = (Limits::default(), Limits::default());
            limits.clock_ns = clock_ns;
            model_limits.clock_ns = clock_ns;
        }
        let yaml = random_policy(&mut r);
        let policy = Policy::from_str_on("random.yaml", &yaml, &interfaces)
            .unwrap_or_else(|e| panic!("generated policy invalid: {e}\n{yaml}"));
        let non_ip = if r.chance(50) {
            Action::Pass
        } else {
            Action::Drop
        };
        let tables = kernel.install(&policy, non_ip);
        check_identities(&policy, &tables, &yaml);
        let generation = kernel
            .dp
            .maps()
            .datapath_config()
            .expect("config")
            .generation;
        let families = kernel
            .dp
            .maps()
            .prefix_levels(generation)
            .expect("levels")
            .count;
        let in_trie = families.contains(&PREFIX_LEVELS_TRIE);
        let in_levels = families
            .iter()
            .any(|c| ![PREFIX_LEVELS_TRIE, PREFIX_LEVELS_NONE].contains(c));
        let fill = kernel
            .dp
            .maps()
            .table_fill(generation)
            .expect("this process wrote the table");
        placed += fill.placed;
        overflowed += fill.overflowed;
        match (in_levels, in_trie) {
            (true, false) => layouts[0] += 1,
            (false, true) => layouts[1] += 1,
            (true, true) => layouts[2] += 1,
            (false, false) => {}
        }
        let model = ModelView::new(&policy, &tables);
        let mut protected: Vec<IpAddr> = tables.endpoints.keys().copied().collect();
        protected.extend(tables.interface_endpoints.keys().map(|(a, _)| *a));
        protected.sort();
        protected.dedup();
        let rule_count = u32::try_from(tables.rules.len()).expect("fits");
        // Flow and fragment state starts afresh with each policy on both sides: the kernel's
        // LRU maps may evict before they are full (per-CPU free lists), which a long run would
        // otherwise hit and the reference, which never evicts, would not.
        kernel.clear_state();
        drain(&mut ring);
        let mut state = State::default();
        let mut model_state = State::default();
        limits.keep_only(&tables);
        model_limits.keep_only(&tables);
        state.limits = std::mem::take(&mut limits);
        model_state.limits = std::mem::take(&mut model_limits);
        let mut hits = kernel
            .dp
            .maps()
            .rule_hit_totals(rule_count)
            .expect("rule hits");
        // Real traffic comes in flows: many packets repeat, answer or quote one sent earlier
        // under this policy (the repeats are what the per-CPU verdict cache answers).
        let mut recent: Vec<Made> = Vec::new();
        for i in 0..per_policy {
            if sent == total {
                break;
            }
            sent += 1;
            if i % 100 == 0 {
                refill_event_budget(&mut kernel);
            }
            let (mut made, new) = next_packet(&mut r, &recent, &protected);
            // Now and then a flow moves to another interface: its cached verdict must not.
            if made.ifindex == 0 || r.chance(20) {
                made.ifindex = *r.pick(&ifindexes);
            }
            if new {
                if recent.len() < 32 {
                    recent.push(made.clone());
                } else {
                    let at = r.below(recent.len());
                    recent[at] = made.clone();
                }
            } else {
                repeats += 1;
            }
            let (direction, frame, ifindex) = (made.direction, &made.frame, made.ifindex);
            if frame.len() > 1500 + 14 {
                jumbo += 1;
            }
            // Now and then the same decision from the live maps, as `trace` reads them: what
            // the agent wrote is what the compiler made.
            let live_state = (i % 16 == 0).then(|| state.clone());
            let want =
                reference::decide_frame(&tables, non_ip, &mut state, direction, ifindex, frame);
            if let Some(mut live_state) = live_state {
                let live = reference::decide_frame(
                    &reference::Live::new(kernel.dp.maps()).expect("the live generation"),
                    non_ip,
                    &mut live_state,
                    direction,
                    ifindex,
                    frame,
                );
                assert_eq!(
                    live,
                    want,
                    "the live maps and the compiled tables disagree (seed {seed}, policy {p}, packet {i})\n  frame: {}\n  policy:\n{yaml}",
                    hex(frame)
                );
            }
            let from_model = reference::decide_frame_with(
                &model,
                non_ip,
                &mut model_state,
                direction,
                ifindex,
                frame,
            );
            let context = || {
                format!(
                    "(seed {seed}, policy {p}, packet {i}, {direction:?} on interface {ifindex})\n  reference: {want:?}\n  frame: {}\n  policy:\n{yaml}",
                    hex(frame)
                )
            };
            assert_eq!(
                from_model,
                want,
                "the policy model and the compiled tables disagree {}",
                context()
            );
            // Ingress frames that fit an skb test run go to the TC ingress program now and then.
            let program = match direction {
                Direction::Egress => Program::TcEgress,
                Direction::Ingress
                    if frame.len() >= 62 && frame.len() <= MAX_FRAME && r.chance(40) =>
                {
                    Program::TcIngress
                }
                Direction::Ingress => Program::Xdp,
            };
            match program {
                Program::TcIngress => tc_ingress += 1,
                Program::Xdp if frame.len() > XDP_LINEAR => multi_buffer += 1,
                _ => {}
            }
            let (action, got) = run(&mut kernel, program, (frame, ifindex), want.slot);
            let want_action = program.action(want.reason.verdict());
            assert!(
                got == Some(want.reason) && action == want_action,
                "verdict mismatch {}\n  datapath ({program:?}): {got:?} in that slot's row, action {action} (want {want_action})",
                context()
            );
            let after = kernel
                .dp
                .maps()
                .rule_hit_totals(rule_count)
                .expect("rule hits");
            let moved: Vec<u32> = (0..rule_count)
                .filter(|&k| after[k as usize] != hits[k as usize])
                .collect();
            hits = after;
            assert_eq!(
                moved,
                want.rule.into_iter().collect::<Vec<_>>(),
                "rule mismatch {}\n  datapath: rule hits moved for {moved:?}",
                context()
            );
            let emitted = drain(&mut ring);
            if want.reason.verdict() == Verdict::Drop || want.reason == Reason::Audit {
                let identity = match want.identity {
                    Some(id) if names_peers(&policy, &tables, want.slot, direction) => id,
                    _ => IDENTITY_ANY,
                };
                let expected = Event {
                    identity,
                    rule: want.rule.unwrap_or(u32::MAX),
                    slot: want.slot,
                    reason: want.reason.code(),
                    direction: direction as u8,
                };
                assert_eq!(emitted, [expected], "drop event mismatch {}", context());
                events += 1;
            } else {
                assert!(
                    emitted.is_empty(),
                    "events for a pass: {emitted:?} {}",
                    context()
                );
            }
            if let reference::Parsed::Ip(pkt) = reference::parse(frame) {
                let local = if direction == Direction::Ingress {
                    pkt.dst
                } else {
                    pkt.src
                };
                let listed = |i: u32| tables.interface_endpoints.contains_key(&(local, i));
                if listed(ifindex) {
                    on_listed += 1;
                } else if ifindexes.iter().any(|&i| listed(i)) {
                    off_listed += 1;
                }
            }
            if let reference::Parsed::Ip(pkt) = reference::parse(frame)
                && pkt.fragment == reference::Fragment::Later
                && want.reason != Reason::FragmentUnknown
                && !(want.reason == Reason::Audit && want.rule.is_none())
            {
                followed += 1;
                if pkt.src.is_ipv6() && matches!(pkt.frag_proto, 51 | 60) {
                    followed_behind_ext += 1;
                }
            }
            *counts.entry(want.reason.label()).or_default() += 1;
        }
        limits = std::mem::take(&mut state.limits);
        model_limits = std::mem::take(&mut model_state.limits);
    }
    eprintln!(
        "{sent} packets ({repeats} repeated, {jumbo} over 1514 bytes, {multi_buffer} multi-buffer XDP frames, {tc_ingress} through TC ingress, {followed} later fragments following their first, audited ones not counted ({followed_behind_ext} behind AH or destination options), {events} drop events compared, {on_listed} on an interface a workload lists for their address, {off_listed} on another) over {policies} policies (CIDR identities in prefix levels, in the trie, split: {layouts:?}; address table keys in their bucket {placed}, past a full one {overflowed}), seed {seed}, {:.1} s: {counts:?}",
        started.elapsed().as_secs_f64()
    );
    // The mix must exercise what it claims to: malformed, fragments, policy both ways, every
    // rescue.
    if total >= 100_000 {
        assert!(
            layouts.iter().all(|&n| n > 0),
            "CIDR identities were not exercised in prefix levels, in the trie and split: {layouts:?}"
        );
        assert!(
            placed > 0 && overflowed > 0,
            "the address table was not exercised both ways: {placed} keys in their bucket, {overflowed} past a full one"
        );
        assert!(
            on_listed > 0 && off_listed > 0,
            "interface-scoped workloads were not exercised on and off their interfaces: {on_listed} on, {off_listed} off"
        );
        for reason in [
            Reason::PolicyAllow,
            Reason::PolicyDeny,
            Reason::DefaultDeny,
            Reason::FragmentUnknown,
            Reason::VlanTooDeep,
            Reason::FragmentTiny,
            Reason::Established,
            Reason::Failsafe,
            Reason::Audit,
            Reason::NeighborDiscovery,
            Reason::Related,
            Reason::RateLimited,
        ] {
            assert!(
                counts.get(reason.label()).is_some_and(|n| *n > 0),
                "no {reason:?} in the mix: {counts:?}"
            );
        }
    }
}

#[test]
fn generated_chains_are_what_rfc_8200_allows() {
    // The Fragment header's position: after per-fragment headers only.
    let mut r = Rng(7);
    for _ in 0..1000 {
        let exts = random_exts(&mut r);
        if exts.len() > 8 || exts.iter().any(|e| matches!(e, Ext::Other(_))) {
            continue;
        }
        if let Some(at) = exts.iter().position(|e| matches!(e, Ext::Fragment { .. })) {
            assert!(
                exts[..at]
                    .iter()
                    .all(|e| matches!(e, Ext::HopByHop | Ext::DestOpts | Ext::Routing)),
                "{exts:?}"
            );
            assert!(
                exts[at + 1..]
                    .iter()
                    .all(|e| matches!(e, Ext::Auth | Ext::DestOpts)),
                "{exts:?}"
            );
        }
    }
}

/// What an edge case shows, and its frames in the order sent (the last one is compared).
type EdgeCase = (&'static str, Vec<(Direction, Vec<u8>)>);

/// Frames on which the datapath breaks the reference's written rules (reported to the lead;
/// run with `--ignored`).
fn edge_cases() -> Vec<EdgeCase> {
    let (s6, d6) = (
        "fd00:1::7".parse().expect("addr"),
        "fd00:9::1".parse().expect("addr"),
    );
    let udp = packets::v6(
        s6,
        d6,
        packets::L4::Udp {
            sport: 1,
            dport: 53,
        },
        b"",
    );
    let mut nine = vec![Ext::DestOpts; 8];
    nine.push(Ext::Other(135));
    let mut icmp_in_v6 = packets::v6(s6, d6, packets::L4::IcmpEcho, b"");
    icmp_in_v6[packets::ETH_LEN + 6] = 1;
    icmp_in_v6[packets::ETH_LEN + packets::IPV6_LEN] = 0;
    let first_then_dest = packets::with_ipv6_exts(
        &udp,
        &[
            Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ext::DestOpts,
        ],
    );
    let mut nd = packets::v6(s6, d6, packets::L4::IcmpEcho, &[0; 16]);
    nd[packets::ETH_LEN + packets::IPV6_LEN] = 135;
    // The workload sends a datagram; an error about it comes back whose payload length stops
    // inside the quoted UDP header, the rest of the quote lying past the packet in the frame.
    let out = Sent {
        direction: Direction::Egress,
        src: IpAddr::V6(d6),
        dst: IpAddr::V6(s6),
        tp: Tp::Udp {
            sport: 40_000,
            dport: 53,
        },
    };
    let out_frame = build(&out, &[], b"");
    let mut error = Vec::new();
    ip_step(&[], IpAddr::V6(s6), IpAddr::V6(d6))
        .icmpv6_raw(1, 4, [0; 4])
        .write(
            &mut error,
            &out_frame[packets::ETH_LEN..packets::ETH_LEN + 48],
        )
        .expect("build");
    let short = u16::from_be_bytes([error[18], error[19]]) - 6;
    error[18..20].copy_from_slice(&short.to_be_bytes());
    // A later fragment whose Fragment header lies past the payload length (the frame goes on).
    let mut past_payload = packets::with_ipv6_exts(
        &udp,
        &[Ext::Fragment {
            offset: 1,
            more: false,
        }],
    );
    past_payload[packets::ETH_LEN + 4..packets::ETH_LEN + 6].copy_from_slice(&[0, 3]);
    let ingress = |f: Vec<u8>| (Direction::Ingress, f);
    vec![
        (
            "a ninth extension header that is a mobility header: ipv6_too_many_ext_headers",
            vec![ingress(packets::with_ipv6_exts(&udp, &nine))],
        ),
        (
            "protocol 1 in IPv6 has no ICMP type: an `icmp: [echo-reply]` rule does not match",
            vec![ingress(icmp_in_v6)],
        ),
        (
            "a first fragment whose next extension header starts at the payload's end: fragment_tiny",
            vec![ingress(packets::cut_v6(first_then_dest, 8))],
        ),
        (
            "fragmented neighbour discovery is judged by the policy (RFC 6980), its later fragment with it",
            vec![
                ingress(packets::with_ipv6_exts(
                    &nd,
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                )),
                ingress(packets::with_ipv6_exts(
                    &nd,
                    &[Ext::Fragment {
                        offset: 100,
                        more: false,
                    }],
                )),
            ],
        ),
        (
            "a Fragment header past the payload length is cut short: ipv6_ext_truncated",
            vec![ingress(past_payload)],
        ),
        (
            "a quote is read within the error's IP packet, not from bytes past it: not related",
            vec![(Direction::Egress, out_frame.clone()), ingress(error)],
        ),
    ]
}

#[test]
fn datapath_follows_the_written_rules_at_the_edges() {
    if !require_root("datapath_follows_the_written_rules_at_the_edges") {
        return;
    }
    let yaml = "apiVersion: boundary.dev/v1
defaults: { ingress: deny, egress: allow }
failsafe: []
workloads:
  - name: w
    addresses: [\"fd00:9::1\"]
    ingress:
      - from: { any: true }
        icmp: [echo-reply]
";
    let policy = Policy::from_str("edge.yaml", yaml).expect("valid policy");
    let mut kernel = Kernel::empty();
    let tables = kernel.install(&policy, Action::Pass);
    let mut failures = Vec::new();
    for (what, frames) in edge_cases() {
        kernel.clear_state();
        let mut state = State::default();
        let mut last = None;
        for (direction, f) in &frames {
            let want = reference::decide_frame(&tables, Action::Pass, &mut state, *direction, 1, f);
            let (_, got) = kernel.run_in_row(*direction, f, want.slot);
            last = Some((want.reason, got));
        }
        let (want, got) = last.expect("frames");
        if got != Some(want) {
            failures.push(format!("{what}: reference {want:?}, datapath {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
