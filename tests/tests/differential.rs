//! Differential test: random policies and random packets (malformed ones, fragments, IPv6
//! extension headers and VLAN tags included) through the real programs with
//! `BPF_PROG_TEST_RUN` and through the userspace reference (`boundary_agent::reference`), which
//! must agree on the verdict, the reason and the workload counted, packet after packet.
//!
//! Seeded and reproducible: `BOUNDARY_DIFF_SEED` picks the seed, `BOUNDARY_DIFF_PACKETS` the
//! packet count (default 100,000 over 100 policies; `cargo xtask test --soak` runs 10^7).
//! A mismatch prints the seed, the policy and the frame.

mod support;

use std::{fmt::Write as _, net::IpAddr};

use boundary_agent::{
    policy::Policy,
    reference::{self, State},
};
use boundary_common::{Direction, Reason, Verdict, maps::Action};
use boundary_tests::{
    packets::{self, Ext, L4},
    require_root,
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
const PEER4: [&str; 8] = [
    "10.1.2.7",
    "10.1.2.8",
    "10.1.9.9",
    "10.2.3.4",
    "192.168.1.5",
    "192.168.66.7",
    "8.8.8.8",
    "10.9.0.99",
];
const PEER6: [&str; 4] = ["fd00:1::7", "fd00:2::5", "2001:db8::1", "fd00:9::99"];
const CIDRS: [&str; 9] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.0.0/16",
    "192.168.66.0/24",
    "0.0.0.0/0",
    "fd00::/8",
    "fd00:1::/32",
    "::/0",
];
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
    for w in 0..=r.below(3) {
        let _ = writeln!(y, "  - name: w{w}");
        let mut addrs = Vec::new();
        for _ in 0..=r.below(2) {
            if !locals.is_empty() {
                let i = r.below(locals.len());
                addrs.push(format!("\"{}\"", locals.swap_remove(i)));
            }
        }
        let _ = writeln!(y, "    addresses: [{}]", addrs.join(", "));
        if r.chance(20) {
            y.push_str("    mode: audit\n");
        }
        if r.chance(30) {
            let _ = writeln!(y, "    defaults: {{ ingress: {} }}", act(r));
        }
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
                    0 => y.push_str(
                        "        icmp: [echo-request, 3]\n        icmpv6: [echo-request]\n",
                    ),
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
                }
            }
        }
    }
    y
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A random frame and its direction.
fn random_frame(r: &mut Rng) -> (Direction, Vec<u8>) {
    let direction = if r.chance(60) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let v6 = r.chance(30);
    let (local, peer) = if v6 {
        (addr(r.pick(&LOCAL6)), addr(r.pick(&PEER6)))
    } else {
        (addr(r.pick(&LOCAL4)), addr(r.pick(&PEER4)))
    };
    let (src, dst) = match direction {
        Direction::Ingress => (peer, local),
        Direction::Egress => (local, peer),
    };
    let sport = *r.pick(&SPORTS);
    let dport = *r.pick(&DPORTS);
    let l4 = match r.below(6) {
        0 | 1 => L4::Tcp { sport, dport },
        2 | 3 => L4::Udp { sport, dport },
        _ => L4::IcmpEcho,
    };
    let payload = vec![0x42; r.below(40)];
    let mut f = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let vlans: &[u16] = match r.below(10) {
                0 => &[7],
                1 => &[7, 8],
                _ => &[],
            };
            let mut f = packets::v4_tagged(vlans, s, d, l4, &payload);
            if vlans.is_empty() {
                if r.chance(10) {
                    f = packets::with_ipv4_options(
                        &f,
                        u8::try_from(1 + r.below(4)).expect("small"),
                    );
                }
                if r.chance(10) {
                    let offset = if r.chance(50) {
                        0
                    } else {
                        u16::try_from(r.below(3)).expect("small") * 100
                    };
                    packets::set_ipv4_fragment(&mut f, offset, offset == 0 || r.chance(50));
                    f[packets::ETH_LEN + 4..packets::ETH_LEN + 6]
                        .copy_from_slice(&u16::try_from(r.below(3)).expect("small").to_be_bytes());
                    packets::fix_ipv4_checksum(&mut f);
                }
                if r.chance(5) {
                    f[packets::ETH_LEN + 9] = 47; // GRE
                    packets::fix_ipv4_checksum(&mut f);
                }
            }
            if r.chance(3) {
                f = packets::push_vlan(&f, 9);
            }
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let f = packets::v6(s, d, l4, &payload);
            let mut exts = Vec::new();
            for _ in 0..r.below(3) {
                exts.push(*r.pick(&[Ext::DestOpts, Ext::Routing, Ext::Auth, Ext::HopByHop]));
            }
            if r.chance(10) {
                let offset = if r.chance(50) { 0 } else { 100 };
                exts.push(Ext::Fragment {
                    offset,
                    more: offset == 0 || r.chance(50),
                });
            }
            if r.chance(3) {
                exts = vec![Ext::DestOpts; 9];
            }
            if r.chance(3) {
                exts.push(Ext::Other(135));
            }
            if exts.is_empty() {
                f
            } else {
                packets::with_ipv6_exts(&f, &exts)
            }
        }
        _ => unreachable!("same family"),
    };
    // Malformed: flip a header byte or cut the frame short.
    if r.chance(12) {
        if r.chance(50) {
            let i = 12 + r.below(f.len().min(100) - 12);
            f[i] ^= 1 << r.below(8);
        } else {
            // BPF_PROG_TEST_RUN refuses an skb (TC) whose IP header is cut short (EINVAL), so
            // egress frames keep theirs; XDP takes anything from an Ethernet header up.
            let floor = match direction {
                Direction::Ingress => 14,
                Direction::Egress => (14 + if v6 { 40 } else { 20 } + 8).min(f.len() - 1),
            };
            let len = floor + r.below(f.len() - floor);
            f.truncate(len);
        }
    }
    (direction, f)
}

fn hex(f: &[u8]) -> String {
    f.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn datapath_agrees_with_the_reference() {
    if !require_root("datapath_agrees_with_the_reference") {
        return;
    }
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
    let mut kernel = Kernel::empty();
    let mut counts = std::collections::BTreeMap::<&'static str, usize>::new();
    let mut sent = 0;
    let mut repeats = 0;
    for p in 0..policies {
        let yaml = random_policy(&mut r);
        let policy = Policy::from_str("random.yaml", &yaml)
            .unwrap_or_else(|e| panic!("generated policy invalid: {e}\n{yaml}"));
        let non_ip = if r.chance(50) {
            Action::Pass
        } else {
            Action::Drop
        };
        let tables = kernel.install(&policy, non_ip);
        // Flow and fragment state starts afresh with each policy on both sides: the kernel's
        // LRU maps may evict before they are full (per-CPU free lists), which a long run would
        // otherwise hit and the reference, which never evicts, would not.
        kernel.clear_state();
        let mut state = State::default();
        // Real traffic comes in flows: a third of the packets repeat one sent earlier under
        // this policy, which is what the datapath's per-CPU verdict cache answers from (and
        // where a stale cached verdict would show).
        let mut recent: Vec<(Direction, Vec<u8>)> = Vec::new();
        for i in 0..per_policy {
            if sent == total {
                break;
            }
            sent += 1;
            let (direction, frame) = if !recent.is_empty() && r.chance(33) {
                repeats += 1;
                recent[r.below(recent.len())].clone()
            } else {
                let fresh = random_frame(&mut r);
                if recent.len() < 32 {
                    recent.push(fresh.clone());
                } else {
                    let at = r.below(recent.len());
                    recent[at] = fresh.clone();
                }
                fresh
            };
            let want = reference::decide_frame(&tables, non_ip, &mut state, direction, &frame);
            let (action, got) = kernel.run_in_row(direction, &frame, want.slot);
            let want_action = match (direction, want.reason.verdict()) {
                (Direction::Ingress, Verdict::Pass) => XDP_PASS,
                (Direction::Ingress, Verdict::Drop) => XDP_DROP,
                (Direction::Egress, Verdict::Pass) => TC_NEXT,
                (Direction::Egress, Verdict::Drop) => TC_SHOT,
            };
            assert!(
                got == Some(want.reason) && action == want_action,
                "mismatch (seed {seed}, policy {p}, packet {i}, {direction:?}):\n  reference: slot {} {:?} (action {want_action})\n  datapath:  {got:?} in that slot's row (action {action})\n  frame: {}\n  policy:\n{yaml}",
                want.slot,
                want.reason,
                hex(&frame),
            );
            *counts.entry(want.reason.label()).or_default() += 1;
        }
    }
    eprintln!(
        "{sent} packets ({repeats} repeated) over {policies} policies, seed {seed}: {counts:?}"
    );
    // The mix must exercise what it claims to: malformed, fragments, policy both ways.
    for reason in [
        Reason::PolicyAllow,
        Reason::PolicyDeny,
        Reason::DefaultDeny,
        Reason::FragmentUnknown,
        Reason::VlanTooDeep,
    ] {
        if total >= 100_000 {
            assert!(
                counts.get(reason.label()).is_some_and(|n| *n > 0),
                "no {reason:?} in the mix: {counts:?}"
            );
        }
    }
}
