//! Tier 2, CIDR identities as the datapath finds them: the real programs through
//! `BPF_PROG_TEST_RUN`, with nested and overlapping prefixes of many lengths, IPv4 and IPv6
//! (IPv4-mapped included), laid out in prefix levels, left in the trie (a map too small for
//! the levels), and split (IPv4 in levels, IPv6 in the trie). Each CIDR rule opens a port of
//! its own, so a peer is admitted on exactly the ports of the prefixes that hold it: a walk
//! that stopped a level short, went a level too far or answered for a neighbour's region
//! opens or closes a port it should not. `trace`'s reading of the live maps must agree.
//! Swaps between levels and the trie, and a restarted agent's first swaps, leave no entry of
//! a generation swapped out behind. Pins of an agent before prefix levels are replaced.

mod support;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{Array, HashMap, IterableMap as _, LpmTrie, MapData, lpm_trie::Key};
use boundary_agent::{
    datapath::{Datapath, LoadOptions, PinLayout},
    policy::{self, Policy, SlotTable, compile::prefixes::PrefixLayout},
};
use boundary_common::{
    Reason,
    maps::{
        ABI_MAP, Action, CIDR_KEY_FIXED_BITS, CIDR_KEY_LEN, CIDRS_MAP, CONFIG_MAP, FAMILY_IPV4,
        IDENTITY_WORLD, MAX_PREFIX_LEVELS, PREFIX_LEVELS_NONE, PREFIX_LEVELS_TRIE, PREFIXES_MAP,
        PrefixKey, PrefixValue, cidr_key_data,
    },
};
use boundary_tests::{
    netns::unique_name,
    packets::{self, L4},
    require_root,
};
use ipnet::IpNet;
use support::Kernel;

const SERVER4: Ipv4Addr = Ipv4Addr::new(10, 205, 0, 1);
const SERVER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x205, 0, 0, 0, 0, 0, 1);
const FIRST_PORT: u16 = 20_000;

/// Nested, overlapping and sibling prefixes, 0 to 32 and 0 to 128 bits long.
const PREFIXES: [&str; 22] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.128.0/17",
    "10.1.2.0/24",
    "10.1.2.128/25",
    "10.1.2.192/26",
    "10.1.2.200/32",
    "10.1.3.0/24",
    "172.16.0.0/12",
    "172.16.5.0/24",
    "192.168.0.0/16",
    "192.168.66.64/27",
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1:2::/56",
    "fd00:1:2:3::/64",
    "fd00:1:2:3::8/125",
    "fd00:1:2:3::9/128",
    "2001:db8::/32",
    "2001:db8:0:1::/64",
    "::ffff:10.1.2.0/120",
];

fn policy_yaml() -> String {
    policy_yaml_of(&PREFIXES)
}

/// A policy whose rule `i` admits `prefixes[i]` on port `port(i)`.
fn policy_yaml_of(prefixes: &[&str]) -> String {
    let mut y = format!(
        "apiVersion: boundary.dev/v1\nfailsafe: []\nworkloads:\n  - name: api\n    addresses: [{SERVER4}, \"{SERVER6}\"]\n    ingress:\n"
    );
    for (i, p) in prefixes.iter().enumerate() {
        let _ = writeln!(
            y,
            "      - {{ from: {{ cidr: \"{p}\" }}, ports: [\"{}/udp\"] }}",
            port(i)
        );
    }
    y
}

fn port(i: usize) -> u16 {
    FIRST_PORT + u16::try_from(i).expect("few rules")
}

fn nets(prefixes: &[&str]) -> Vec<IpNet> {
    prefixes.iter().map(|p| p.parse().expect("valid")).collect()
}

/// The edges of every prefix and their neighbours, a middle address, and a few strangers.
fn probes(prefixes: &[&str]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = vec![
        "8.8.8.8".parse().expect("valid"),
        "fe80::1".parse().expect("valid"),
        "::ffff:10.1.3.1".parse().expect("valid"),
    ];
    for n in nets(prefixes) {
        match n {
            IpNet::V4(v) => {
                let (lo, hi) = (u32::from(v.network()), u32::from(v.broadcast()));
                for a in [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo + (hi - lo) / 2,
                ] {
                    out.push(Ipv4Addr::from(a).into());
                }
            }
            IpNet::V6(v) => {
                let (lo, hi) = (u128::from(v.network()), u128::from(v.broadcast()));
                for a in [
                    lo,
                    hi,
                    lo.wrapping_sub(1),
                    hi.wrapping_add(1),
                    lo + (hi - lo) / 2,
                ] {
                    out.push(Ipv6Addr::from(a).into());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn frame(src: IpAddr, dport: u16) -> Vec<u8> {
    let l4 = L4::Udp {
        sport: 40_000,
        dport,
    };
    match src {
        IpAddr::V4(a) => packets::v4(a, SERVER4, l4, b"x"),
        IpAddr::V6(a) => packets::v6(a, SERVER6, l4, b"x"),
    }
}

/// The longest prefix of the compiled tables holding `addr`, as the trie would find it.
fn longest(cidrs: &BTreeMap<IpNet, u32>, addr: IpAddr) -> Option<u32> {
    cidrs
        .iter()
        .filter(|(n, _)| n.contains(&addr))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, id)| *id)
        .filter(|id| *id != IDENTITY_WORLD)
}

/// Every probe on every rule's port: admitted exactly where the rule's prefix holds it.
/// Returns the levels of each family the generation was written with.
fn check(k: &mut Kernel) -> [u8; 2] {
    check_of(k, &PREFIXES)
}

/// As [`check`], for the policy of [`policy_yaml_of`] `prefixes`.
fn check_of(k: &mut Kernel, prefixes: &[&str]) -> [u8; 2] {
    let policy =
        Policy::from_str("test-policy.yaml", &policy_yaml_of(prefixes)).expect("valid policy");
    let tables = policy::compile(&policy, &SlotTable::new(), 8).expect("compiles");
    let generation = k.dp.maps().datapath_config().expect("config").generation;
    let mut wrong = Vec::new();
    for addr in probes(prefixes) {
        for (i, net) in nets(prefixes).iter().enumerate() {
            let got = k.xdp(&frame(addr, port(i))).reason;
            let want = if net.contains(&addr) {
                Reason::PolicyAllow
            } else {
                Reason::DefaultDeny
            };
            if got != want {
                wrong.push(format!("{addr} -> {} ({net}): {got:?}", port(i)));
            }
        }
        assert_eq!(
            k.dp.maps().live_cidr_identity(generation, addr),
            longest(&tables.cidrs, addr),
            "trace's reading of the live maps for {addr}"
        );
    }
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts: {wrong:#?}",
        wrong.len()
    );
    k.dp.maps()
        .prefix_levels(generation)
        .expect("levels entry")
        .count
}

/// The smallest room (regions per generation) in which this policy's IPv4 prefixes take
/// levels and its IPv6 prefixes do not fit after them.
fn split_room() -> u32 {
    let policy = Policy::from_str("test-policy.yaml", &policy_yaml()).expect("valid policy");
    let tables = policy::compile(&policy, &SlotTable::new(), 8).expect("compiles");
    (1..10_000)
        .find(|&room| {
            let l = PrefixLayout::of_with(&tables.cidrs, room, 0);
            l.levels.count[0] != PREFIX_LEVELS_TRIE && l.levels.count[1] == PREFIX_LEVELS_TRIE
        })
        .map(|room| u32::try_from(room).expect("small"))
        .expect("a room that splits the families")
}

#[test]
fn nested_prefixes_of_many_lengths_find_their_longest_match_in_levels() {
    if !require_root("nested_prefixes_of_many_lengths_find_their_longest_match_in_levels") {
        return;
    }
    let options = LoadOptions {
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    let [v4, v6] = check(&mut k);
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v4)),
        "IPv4 in levels: {v4}"
    );
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v6)),
        "IPv6 in levels: {v6}"
    );
}

#[test]
fn a_small_policy_keeps_its_prefixes_in_the_trie_by_default() {
    if !require_root("a_small_policy_keeps_its_prefixes_in_the_trie_by_default") {
        return;
    }
    let mut k = Kernel::new(&policy_yaml(), Action::Pass);
    assert_eq!(check(&mut k), [PREFIX_LEVELS_TRIE; 2]);
}

#[test]
fn prefixes_the_levels_have_no_room_for_stay_in_the_trie_with_the_same_verdicts() {
    if !require_root("prefixes_the_levels_have_no_room_for_stay_in_the_trie_with_the_same_verdicts")
    {
        return;
    }
    let options = LoadOptions {
        capacities: &[(PREFIXES_MAP, 2)],
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    assert_eq!(check(&mut k), [PREFIX_LEVELS_TRIE; 2]);
}

#[test]
fn one_family_in_levels_and_the_other_in_the_trie_in_one_generation() {
    if !require_root("one_family_in_levels_and_the_other_in_the_trie_in_one_generation") {
        return;
    }
    let room = 2 * split_room();
    let capacities = [(PREFIXES_MAP, room)];
    let options = LoadOptions {
        capacities: &capacities,
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml(), Action::Pass, &options);
    let [v4, v6] = check(&mut k);
    assert!(
        (1..=MAX_PREFIX_LEVELS).contains(&usize::from(v4)),
        "IPv4 in levels: {v4}"
    );
    assert_eq!(v6, PREFIX_LEVELS_TRIE);
}

/// A policy of few prefixes, which a map with room for three regions lays out in levels.
const FEW: [&str; 3] = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16"];

/// Entries of generation `g` in the prefix levels and in the trie.
fn entries_of(k: &Kernel, g: u8) -> (usize, usize) {
    let maps = k.dp.maps();
    let levels = maps
        .prefixes_map()
        .keys()
        .map(|key| key.expect("read a key"))
        .filter(|key| key.generation == g)
        .count();
    let trie = maps
        .cidrs_map()
        .keys()
        .map(|key| key.expect("read a key"))
        .filter(|key| key.data()[0] == g)
        .count();
    (levels, trie)
}

fn swap_to(k: &mut Kernel, prefixes: &[&str]) -> [u8; 2] {
    let policy = Policy::from_str("p.yaml", &policy_yaml_of(prefixes)).expect("valid policy");
    k.install(&policy, Action::Pass);
    let live = k.dp.maps().datapath_config().expect("config").generation;
    assert_eq!(
        entries_of(k, live ^ 1),
        (0, 0),
        "the generation swapped out is gone from the prefix levels and the trie"
    );
    check_of(k, prefixes)
}

#[test]
fn swaps_between_levels_and_the_trie_keep_every_verdict_and_leave_nothing_behind() {
    if !require_root(
        "swaps_between_levels_and_the_trie_keep_every_verdict_and_leave_nothing_behind",
    ) {
        return;
    }
    let options = LoadOptions {
        capacities: &[(PREFIXES_MAP, 6)],
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    let mut k = Kernel::loaded_with(&policy_yaml_of(&FEW), Action::Pass, &options);
    let few = check_of(&mut k, &FEW);
    assert!((1..=4).contains(&few[0]), "the few in levels: {few:?}");
    // Levels -> trie -> levels -> levels -> trie -> trie.
    assert_eq!(swap_to(&mut k, &PREFIXES), [PREFIX_LEVELS_TRIE; 2]);
    assert_eq!(swap_to(&mut k, &FEW), few);
    assert_eq!(swap_to(&mut k, &FEW[1..]), [2, PREFIX_LEVELS_NONE]);
    assert_eq!(swap_to(&mut k, &PREFIXES), [PREFIX_LEVELS_TRIE; 2]);
    assert_eq!(swap_to(&mut k, &PREFIXES[..20]), [PREFIX_LEVELS_TRIE; 2]);
}

/// A pin directory removed on drop (never panicking: it may run while a test unwinds).
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pinned maps, CIDR identities in levels however few.
fn levels_however_few() -> LoadOptions<'static> {
    LoadOptions {
        max_workloads: 8,
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    }
}

#[test]
fn a_restarted_agent_removes_prefix_residue_of_an_interrupted_swap() {
    if !require_root("a_restarted_agent_removes_prefix_residue_of_an_interrupted_swap") {
        return;
    }
    let pins = PinDir(std::path::Path::new("/sys/fs/bpf").join(unique_name("bnd-kt-prefixes")));
    let layout = PinLayout::new(&pins.0);
    let mut k = Kernel {
        dp: Datapath::load_with(Some(layout.clone()), &levels_however_few())
            .expect("load with pinned maps (root needed)"),
        tc_ingress: false,
        ifindex: 0,
    };
    swap_to(&mut k, &PREFIXES);
    let live = k.dp.maps().datapath_config().expect("config").generation;
    // What a swap the previous agent did not finish leaves: regions and trie entries of the
    // other generation, here ones that would give 8.8.8.8 the identity of 10.1.0.0/16.
    let id =
        k.dp.maps()
            .live_cidr_identity(live, "10.1.1.1".parse().expect("valid"))
            .expect("an identity");
    let mut prefixes: HashMap<MapData, PrefixKey, PrefixValue> =
        support::writable(k.dp.maps().prefixes_map().map());
    let stray = [8u8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for len in [0, 8, 16, 32] {
        let key = PrefixKey::new(live ^ 1, FAMILY_IPV4, len, &stray);
        prefixes
            .insert(&key, &PrefixValue::new(id, false), 0)
            .expect("insert residue");
    }
    let mut trie: LpmTrie<MapData, [u8; CIDR_KEY_LEN], PrefixValue> =
        support::writable(k.dp.maps().cidrs_map().map());
    let key = Key::new(
        CIDR_KEY_FIXED_BITS + 8,
        cidr_key_data(live ^ 1, FAMILY_IPV4, stray),
    );
    trie.insert(&key, &PrefixValue::new(id, false), 0)
        .expect("insert residue");
    assert_eq!(entries_of(&k, live ^ 1), (4, 1));

    // A new agent adopts the pins and knows nothing of what is in them.
    let restarted =
        Datapath::load_with(Some(layout.clone()), &levels_however_few()).expect("adopt the pins");
    drop(std::mem::replace(&mut k.dp, restarted));
    // Into the generation the residue was in, with levels and with the trie.
    for prefixes in [&FEW[..], &PREFIXES[..], &FEW[..]] {
        swap_to(&mut k, prefixes);
    }
    assert_eq!(
        k.dp.maps().live_cidr_identity(
            k.dp.maps().datapath_config().expect("config").generation,
            "8.8.8.8".parse().expect("valid")
        ),
        k.dp.maps().live_cidr_identity(
            k.dp.maps().datapath_config().expect("config").generation,
            "9.9.9.9".parse().expect("valid")
        ),
        "8.8.8.8 is nothing but 0.0.0.0/0"
    );
}

#[test]
fn pins_of_an_agent_before_prefix_levels_are_replaced_not_adopted() {
    if !require_root("pins_of_an_agent_before_prefix_levels_are_replaced_not_adopted") {
        return;
    }
    // An agent of ABI 2 put every CIDR identity in the trie, and its programs read nothing
    // else: adopting its maps, this agent's first swap would hide every CIDR identity from
    // them until their links are updated.
    let pins = PinDir(std::path::Path::new("/sys/fs/bpf").join(unique_name("bnd-kt-abi2")));
    let layout = PinLayout::new(&pins.0);
    let first = Datapath::load(layout.clone(), 8).expect("load with pinned maps (root needed)");
    let id = |name| {
        aya::maps::MapInfo::from_pin(layout.map(name))
            .expect("pinned map")
            .id()
    };
    let (config, cidrs) = (id(CONFIG_MAP), id(CIDRS_MAP));
    let mut abi: Array<MapData, u32> =
        aya::maps::Map::from_map_data(MapData::from_pin(layout.map(ABI_MAP)).expect("abi pin"))
            .and_then(TryInto::try_into)
            .expect("abi map");
    abi.set(0, &2, 0).expect("the version before prefix levels");
    let second = Datapath::load(layout.clone(), 8).expect("replaces the maps");
    assert_ne!(id(CONFIG_MAP), config, "the config replaced");
    assert_ne!(id(CIDRS_MAP), cidrs, "the trie replaced");
    drop((first, second));
}
