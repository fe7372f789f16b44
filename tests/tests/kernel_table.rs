//! Tier 2, the address table (`TABLE_MAP`): static bindings and prefix regions in buckets the
//! datapath probes before the hash maps. A table of two buckets per generation (eight slots)
//! with more keys than that sends most lookups past a full bucket to the hash maps: every
//! peer's verdict must be the one a table with room for all of them gives, static and earned
//! bindings, IPv4 and IPv6, CIDR peers and peers in no prefix alike. And a binding a policy
//! drops must not answer from its old slot when that generation's region is written again.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use boundary_agent::policy::Policy;
use boundary_common::{
    Reason,
    maps::{Action, TABLE_MAP},
};
use boundary_tests::require_root;
use support::{Kernel, bind_live, earned, swap_earned};

const ORDERS_API: &str = "spiffe://example.org/orders/api";

const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x210, 0, 0, 0, 0, 0, 1);

/// Eight static bindings of `db`, four of `cache`, six CIDRs of three lengths.
const POLICY: &str = r#"apiVersion: boundary.dev/v1
failsafe: []
identities:
  - id: "spiffe://example.org/db"
    addresses: [10.210.3.1, 10.210.3.2, 10.210.3.3, 10.210.3.4, "fd00:210:3::1", "fd00:210:3::2", "fd00:210:3::3", "::ffff:10.210.3.9"]
  - id: "spiffe://example.org/cache"
    addresses: [10.210.4.1, 10.210.4.2, "fd00:210:4::1", "fd00:210:4::2"]
workloads:
  - name: api
    addresses: [10.210.0.1, "fd00:210::1"]
    ingress:
      - { name: db, from: { spiffe: "spiffe://example.org/db" }, ports: ["80/udp"] }
      - { name: cache, from: { spiffe: "spiffe://example.org/cache" }, ports: ["82/udp"] }
      - { name: orders, from: { spiffe: "spiffe://example.org/orders/*" }, ports: ["81/udp"] }
      - { name: lan, from: { cidr: 10.210.9.0/24 }, ports: ["90/udp"] }
      - { name: lab, from: { cidr: 10.210.9.128/25 }, ports: ["91/udp"] }
      - { name: wide, from: { cidr: 10.211.0.0/16 }, ports: ["92/udp"] }
      - { name: lan6, from: { cidr: "fd00:210:9::/48" }, ports: ["90/udp"] }
      - { name: lab6, from: { cidr: "fd00:210:9:1::/64" }, ports: ["91/udp"] }
      - { name: wide6, from: { cidr: "fd00:211::/32" }, ports: ["92/udp"] }
"#;

const PORTS: [u16; 6] = [80, 81, 82, 90, 91, 92];

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// Every bound address, the earned ones, CIDR peers at each length, peers in no prefix.
fn peers() -> Vec<IpAddr> {
    [
        "10.210.3.1",
        "10.210.3.2",
        "10.210.3.3",
        "10.210.3.4",
        "fd00:210:3::1",
        "fd00:210:3::2",
        "fd00:210:3::3",
        "::ffff:10.210.3.9",
        "10.210.3.9",
        "10.210.4.1",
        "10.210.4.2",
        "fd00:210:4::1",
        "fd00:210:4::2",
        "10.210.1.7",
        "fd00:210:1::7",
        "10.210.9.4",
        "10.210.9.200",
        "10.211.7.7",
        "fd00:210:9::4",
        "fd00:210:9:1::4",
        "fd00:211:5::5",
        "10.212.0.1",
        "fe80::1",
    ]
    .into_iter()
    .map(addr)
    .collect()
}

fn to_server(src: IpAddr, dport: u16, sport: u16) -> Vec<u8> {
    support::udp_to(src, (SERVER4, SERVER6), dport, sport)
}

/// (peer, port) -> reason.
type Verdicts = BTreeMap<(IpAddr, u16), Reason>;

/// Each peer's reason on each port, each a new flow.
fn verdicts(k: &mut Kernel, sport: &mut u16) -> Verdicts {
    let mut out = BTreeMap::new();
    for peer in peers() {
        for port in PORTS {
            *sport += 1;
            out.insert((peer, port), k.xdp(&to_server(peer, port, *sport)).reason);
        }
    }
    out
}

/// The live generation's keys in their bucket and past a full one.
fn fill(k: &Kernel) -> (u64, u64) {
    let g = k.dp.maps().datapath_config().expect("config").generation;
    let f = k.dp.maps().table_fill(g).expect("written by this process");
    (f.placed, f.overflowed)
}

/// The verdicts without the identity endpoint, then with it through two swaps and two
/// earned bindings (made live, then carried by the swaps), on `k`.
fn run(k: &mut Kernel) -> (Vec<Verdicts>, Vec<(u64, u64)>) {
    let p = Policy::from_str("p.yaml", POLICY).expect("valid");
    let v4 = earned(addr("10.210.1.7"), ORDERS_API, Duration::from_secs(600));
    let v6 = earned(addr("fd00:210:1::7"), ORDERS_API, Duration::from_secs(600));
    let mut sport = 20_000;
    let mut seen = Vec::new();
    let mut fills = Vec::new();
    // Without the identity endpoint first: no binding can be earned, and the datapath
    // looks no further than the table for a binding unless its bucket is full.
    k.install(&p, Action::Pass);
    fills.push(fill(k));
    seen.push(verdicts(k, &mut sport));
    let t = swap_earned(k, &p, &[]);
    fills.push(fill(k));
    seen.push(verdicts(k, &mut sport));
    bind_live(k, &p, &t, &v4);
    bind_live(k, &p, &t, &v6);
    seen.push(verdicts(k, &mut sport));
    for _ in 0..2 {
        swap_earned(k, &p, &[&v4, &v6]);
        fills.push(fill(k));
        seen.push(verdicts(k, &mut sport));
    }
    (seen, fills)
}

#[test]
fn keys_past_a_full_bucket_are_found_in_the_hash_maps() {
    use Reason::{DefaultDeny as Deny, PolicyAllow as Allow};
    if !require_root("keys_past_a_full_bucket_are_found_in_the_hash_maps") {
        return;
    }
    // Both with every CIDR set in prefix levels (`frozen_with` lays small sets out so; a
    // zero clock is the real one). The levels' fewest lengths expand the six CIDRs to
    // about 66,000 regions; the roomy table has 2^17 buckets for them.
    let (roomy, roomy_fill) = run(&mut Kernel::frozen_with(0, &[(TABLE_MAP, 2 << 17)]));
    let (small, small_fill) = run(&mut Kernel::frozen_with(0, &[(TABLE_MAP, 2 * 2)]));
    // 12 bindings and the regions of six CIDRs in eight slots: most went past a full bucket,
    // bindings among them (12 in 8 slots).
    for (placed, overflowed) in &small_fill {
        assert!(*placed <= 8 && *overflowed >= 10, "{small_fill:?}");
    }
    for (placed, overflowed) in &roomy_fill {
        assert!(*overflowed * 100 < *placed, "{roomy_fill:?}");
    }
    for (step, (r, s)) in roomy.iter().zip(&small).enumerate() {
        let wrong: Vec<String> = r
            .iter()
            .filter(|(k, v)| s[*k] != **v)
            .map(|((peer, port), v)| {
                format!(
                    "{peer} -> {port}: {v:?} with room, {:?} in two buckets",
                    s[&(*peer, *port)]
                )
            })
            .collect();
        assert!(wrong.is_empty(), "step {step}: {wrong:#?}");
    }
    // And they are the policy's verdicts.
    let last = small.last().expect("steps");
    let expect = |peer: &str, allowed: &[u16]| {
        for port in PORTS {
            let want = if allowed.contains(&port) { Allow } else { Deny };
            assert_eq!(last[&(addr(peer), port)], want, "{peer} -> {port}");
        }
    };
    for peer in [
        "10.210.3.1",
        "10.210.3.4",
        "fd00:210:3::3",
        "::ffff:10.210.3.9",
    ] {
        expect(peer, &[80]);
    }
    for peer in ["10.210.4.2", "fd00:210:4::1"] {
        expect(peer, &[82]);
    }
    expect("10.210.3.9", &[]);
    expect("10.210.1.7", &[81]);
    expect("fd00:210:1::7", &[81]);
    expect("10.210.9.4", &[90]);
    // In the /25 and its /24: both rules name it.
    expect("10.210.9.200", &[90, 91]);
    expect("10.211.7.7", &[92]);
    expect("fd00:210:9::4", &[90]);
    expect("fd00:210:9:1::4", &[90, 91]);
    expect("fd00:211:5::5", &[92]);
    expect("10.212.0.1", &[]);
    expect("fe80::1", &[]);
    // Before the earned bindings, their addresses were nobody.
    assert_eq!(small[1][&(addr("10.210.1.7"), 81)], Deny);
}

#[test]
fn a_binding_the_policy_drops_does_not_answer_from_its_old_slot() {
    use Reason::{DefaultDeny as Deny, PolicyAllow as Allow};
    if !require_root("a_binding_the_policy_drops_does_not_answer_from_its_old_slot") {
        return;
    }
    let with = Policy::from_str("p.yaml", POLICY).expect("valid");
    let without = Policy::from_str(
        "p.yaml",
        &POLICY.replace("10.210.3.1, 10.210.3.2,", "10.210.3.2,"),
    )
    .expect("valid");
    let x = addr("10.210.3.1");
    let mut k = Kernel::empty();
    let mut sport = 30_000;
    let mut at = |k: &mut Kernel, port: u16| {
        sport += 1;
        k.xdp(&to_server(x, port, sport)).reason
    };
    // Bound statically in generation g, then dropped by the next two swaps (g's region
    // written again without it), then earned as another identity.
    swap_earned(&mut k, &with, &[]);
    assert_eq!(at(&mut k, 80), Allow);
    swap_earned(&mut k, &without, &[]);
    let t = swap_earned(&mut k, &without, &[]);
    assert_eq!(at(&mut k, 80), Deny, "the static binding is gone");
    let e = earned(x, ORDERS_API, Duration::from_secs(600));
    bind_live(&mut k, &without, &t, &e);
    assert_eq!(at(&mut k, 81), Allow, "the earned binding answers");
    assert_eq!(at(&mut k, 80), Deny, "not the dropped static one");
}

struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_pinned_table_keeps_its_size_through_a_reload_of_the_programs_and_a_restart() {
    use boundary_agent::datapath::{Datapath, LoadOptions, maps::table_entries, pins::PinLayout};
    if !require_root("a_pinned_table_keeps_its_size_through_a_reload_of_the_programs_and_a_restart")
    {
        return;
    }
    let pins = PinDir(
        std::path::Path::new("/sys/fs/bpf")
            .join(boundary_tests::netns::unique_name("bnd-kt-table")),
    );
    let layout = PinLayout::new(&pins.0);
    // Sized for a larger policy than the shipped table holds, as an agent starting with one.
    let raised = [(TABLE_MAP, 2 << 15)];
    let options = LoadOptions {
        max_workloads: support::SLOTS,
        capacities: &raised,
        ..LoadOptions::default()
    };
    let mut k = Kernel {
        dp: Datapath::load_with(Some(layout.clone()), &options).expect("load with pins"),
        tc_ingress: false,
        ifindex: 0,
    };
    let p = Policy::from_str("p.yaml", POLICY).expect("valid");
    k.install(&p, Action::Pass);
    let mut sport = 40_000;
    let mut db = |k: &mut Kernel| {
        sport += 1;
        k.xdp(&to_server(addr("10.210.3.3"), 80, sport)).reason
    };
    assert_eq!(db(&mut k), Reason::PolicyAllow);
    // `kernelLog` switched: the programs alone are loaded again, with default options.
    k.dp.reload_programs(&LoadOptions {
        max_workloads: support::SLOTS,
        ..LoadOptions::default()
    })
    .expect("the programs reload against the pinned table");
    assert_eq!(db(&mut k), Reason::PolicyAllow, "after the reload");
    // A restart asks for the pinned size, whatever its policy.
    assert_eq!(table_entries(&layout, 0), 2 << 15);
    drop(k);
    let again = [(TABLE_MAP, table_entries(&layout, 0))];
    let mut k = Kernel {
        dp: Datapath::load_with(
            Some(layout.clone()),
            &LoadOptions {
                capacities: &again,
                ..options
            },
        )
        .expect("restart with pins"),
        tc_ingress: false,
        ifindex: 0,
    };
    assert_eq!(db(&mut k), Reason::PolicyAllow, "adopted, before any swap");
    k.install(&p, Action::Pass);
    assert_eq!(db(&mut k), Reason::PolicyAllow, "after a swap");
}
