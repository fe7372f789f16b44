//! Tier 2, policy: the real programs through `BPF_PROG_TEST_RUN` on crafted frames, for the
//! stateful parts (conntrack, fragments), generation swaps (and their rollback when a map is
//! full) and rule hit counters.

mod support;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use aya::maps::{HashMap, IterableMap as _, MapData};
use boundary_agent::{
    datapath::{Datapath, PinLayout, batch, maps::MapsError, netdev},
    policy::{self, Interfaces, Policy, Tables, compile::prefixes::PrefixLayout},
};
use boundary_common::{
    Reason,
    maps::{
        ABI_ADOPTS_FROM, ABI_MAP, ABI_VERSION, Action, CFG_HAS_IFACE_ENDPOINTS, CONFIG_MAP,
        COUNTERS_MAP, ENDPOINTS_MAP, Endpoint, EndpointKey, FAILSAFE_MAP, FAMILY_IPV4,
        FRAGMENTS_MAP, FlowKey, FlowValue, FragKey, FragValue, IFINDEX_ANY, MAX_ENDPOINTS,
        MAX_FAILSAFE, PolicyKey, PolicyValue,
    },
};
use boundary_tests::{
    NetNs,
    netns::{
        addr::{CLIENT, SERVER, SERVER_B},
        unique_name,
    },
    packets::{self, Ext, L4},
    require_root,
};
use support::{Kernel, Outcome, TC_NEXT, XDP_DROP, XDP_PASS, move_to_cpu};

const POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: web
    addresses: [10.203.0.1]
    ingress:
      - name: dns
        from: { any: true }
        ports: [\"53/udp\"]
  - name: admin
    addresses: [10.203.0.3]
    mode: audit
";

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    packets::v4(src, dst, L4::Udp { sport, dport }, b"x")
}

fn kernel() -> Kernel {
    let mut k = Kernel::empty();
    k.install(
        &Policy::from_str("p.yaml", POLICY).expect("valid"),
        Action::Pass,
    );
    k
}

#[test]
fn conntrack_admits_the_exact_reply_only() {
    if !require_root("conntrack_admits_the_exact_reply_only") {
        return;
    }
    let mut k = kernel();
    // web calls out from port 41000 to CLIENT:9000; the reply is established.
    let out = k.tc(&udp(SERVER, 41_000, CLIENT, 9000));
    assert_eq!((out.action, out.reason), (TC_NEXT, Reason::DefaultAllow));
    let back = k.xdp(&udp(CLIENT, 9000, SERVER, 41_000));
    assert_eq!((back.action, back.reason), (XDP_PASS, Reason::Established));
    // Another source port, another destination port: not replies.
    assert_eq!(
        k.xdp(&udp(CLIENT, 9001, SERVER, 41_000)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 9000, SERVER, 41_001)).reason,
        Reason::DefaultDeny
    );
}

#[test]
fn audit_flows_are_audited_per_flow() {
    if !require_root("audit_flows_are_audited_per_flow") {
        return;
    }
    let mut k = kernel();
    for sport in [50_001, 50_002, 50_003] {
        let first = k.xdp(&udp(CLIENT, sport, SERVER_B, 7000));
        assert_eq!(
            first,
            Outcome {
                action: XDP_PASS,
                slot: 2,
                reason: Reason::Audit
            },
            "port {sport}"
        );
        // The workload answers; later packets of that flow are established.
        assert_eq!(
            k.tc(&udp(SERVER_B, 7000, CLIENT, sport)).reason,
            Reason::DefaultAllow
        );
        assert_eq!(
            k.xdp(&udp(CLIENT, sport, SERVER_B, 7000)).reason,
            Reason::Established
        );
    }
}

#[test]
fn generation_swap_replaces_the_policy_and_removes_the_old_entries() {
    if !require_root("generation_swap_replaces_the_policy_and_removes_the_old_entries") {
        return;
    }
    let mut k = kernel();
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 53)).reason,
        Reason::PolicyAllow
    );
    let entries = |k: &Kernel| {
        (
            k.dp.maps().policy_map().keys().count(),
            k.dp.maps().endpoints_map().keys().count(),
        )
    };
    let before = entries(&k);
    let closed = POLICY.replace("ports: [\"53/udp\"]", "ports: [\"54/udp\"]");
    k.install(
        &Policy::from_str("p.yaml", &closed).expect("valid"),
        Action::Pass,
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 53)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 54)).reason,
        Reason::PolicyAllow
    );
    assert_eq!(entries(&k), before, "the old generation's entries are gone");
    assert_eq!(
        k.dp.maps().datapath_config().expect("config").generation,
        0,
        "two swaps from the initial 0"
    );
}

#[test]
fn a_cached_verdict_never_outlives_its_policy_or_hides_a_reply() {
    if !require_root("a_cached_verdict_never_outlives_its_policy_or_hides_a_reply") {
        return;
    }
    // The harness keeps this thread on one CPU: the second and later packets of a flow are
    // answered from that CPU's verdict cache.
    let mut k = kernel();
    let dns = udp(CLIENT, 5000, SERVER, 53);
    for _ in 0..3 {
        assert_eq!(k.xdp(&dns).reason, Reason::PolicyAllow);
    }
    let closed = POLICY.replace("ports: [\"53/udp\"]", "ports: [\"54/udp\"]");
    k.install(
        &Policy::from_str("p.yaml", &closed).expect("valid"),
        Action::Pass,
    );
    for _ in 0..3 {
        assert_eq!(
            k.xdp(&dns).reason,
            Reason::DefaultDeny,
            "the flow's cached allow died with its policy"
        );
    }
    // A cached drop still asks conntrack: once the server has sent to that port, the same
    // flow is its reply.
    assert_eq!(
        k.tc(&udp(SERVER, 53, CLIENT, 5000)).reason,
        Reason::DefaultAllow
    );
    for _ in 0..3 {
        assert_eq!(k.xdp(&dns).reason, Reason::Established);
    }
    // Conntrack's "a reply" is remembered for CT_REFRESH_JIFFIES (at most 640 ms, at HZ=100):
    // a flow gone behind the cache's back (the LRU evicts without telling anyone) stops
    // admitting replies once that has passed.
    let flows: Vec<_> =
        k.dp.maps()
            .conntrack_map()
            .keys()
            .filter_map(Result::ok)
            .collect();
    assert!(!flows.is_empty(), "the server's packet was recorded");
    let mut conntrack: HashMap<MapData, FlowKey, FlowValue> =
        support::writable(k.dp.maps().conntrack_map().map());
    for f in flows {
        conntrack.remove(&f).expect("remove a flow");
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(k.xdp(&dns).reason, Reason::DefaultDeny);
    // And the reopened policy allows it by rule again, not as a reply.
    k.install(
        &Policy::from_str("p.yaml", POLICY).expect("valid"),
        Action::Pass,
    );
    assert_eq!(k.xdp(&dns).reason, Reason::PolicyAllow);
    assert_eq!(k.xdp(&dns).reason, Reason::PolicyAllow);
}

#[test]
fn rule_hits_count_per_rule() {
    if !require_root("rule_hits_count_per_rule") {
        return;
    }
    let mut k = kernel();
    // Each CPU counts in a block of its own (`rule_hits_index`): three packets on every
    // online CPU, the first and later packets of a flow (judged, then cached) alike.
    let cpus = aya::util::online_cpus().expect("online CPUs");
    for &cpu in &cpus {
        move_to_cpu(cpu);
        for _ in 0..3 {
            let o = k.xdp(&udp(CLIENT, 5000, SERVER, 53));
            assert_eq!((o.action, o.reason), (XDP_PASS, Reason::PolicyAllow));
        }
    }
    let n = 3 * u64::try_from(cpus.len()).expect("CPUs");
    assert_eq!(k.xdp(&udp(CLIENT, 5000, SERVER, 80)).action, XDP_DROP);
    assert_eq!(k.dp.maps().rule_hits(0).expect("hits"), n);
    // What /metrics reads: every rule, and every counter row, in one batch read each.
    assert_eq!(k.dp.maps().rule_hit_totals(3).expect("hits"), [n, 0, 0]);
    let rows = k.dp.maps().counter_rows().expect("rows");
    let web = k.dp.maps().slot_table().expect("slots")["web"];
    let row = rows[boundary_common::maps::counter_index(web, 0) as usize];
    assert_eq!(
        row.counters[usize::from(Reason::PolicyAllow.code())].packets,
        n
    );
    assert_eq!(
        row.counters[usize::from(Reason::DefaultDeny.code())].packets,
        1
    );
    for (i, row) in rows.iter().enumerate() {
        let (slot, direction) = (
            u16::try_from(i / 2).expect("slot"),
            u8::try_from(i % 2).expect("direction"),
        );
        assert_eq!(
            *row,
            k.dp.maps().counter_row(slot, direction).expect("row"),
            "row {i}"
        );
    }
}

/// Entries one generation of `t`'s CIDR identities takes: regions of the prefix levels, or
/// prefixes in the trie, as the layout chose.
fn cidr_entries(t: &Tables) -> usize {
    let layout = PrefixLayout::of(&t.cidrs, usize::MAX);
    layout.regions.len() + layout.trie.len()
}

/// Entries in the maps a policy fills, both generations together.
fn entries(k: &Kernel) -> [usize; 4] {
    let m = k.dp.maps();
    [
        m.endpoints_map().keys().count(),
        m.cidrs_map().keys().count() + m.prefixes_map().keys().count(),
        m.policy_map().keys().count(),
        m.failsafe_map().keys().count(),
    ]
}

/// `POLICY` with DNS moved to 54/udp and from one /16 only, so the swap writes every kind of
/// entry: endpoints, a CIDR identity, a policy entry (and failsafe ones when added).
fn moved_dns(k: &Kernel) -> Tables {
    let text = POLICY.replace("from: { any: true }", "from: { cidr: 10.9.0.0/16 }");
    let text = text.replace("53/udp", "54/udp");
    let p = Policy::from_str("p.yaml", &text).expect("valid");
    let slots = k.dp.maps().slot_table().expect("slots");
    policy::compile(&p, &slots, 8).expect("compiles")
}

/// Applies `too_big`, which overflows `map`: the apply must be refused with the map named, and
/// the running policy must go on deciding with nothing of the refused one left in the maps.
/// A policy that fits must then go in as usual.
fn refused_then_fits(k: &mut Kernel, too_big: &Tables, map: &str) {
    let from_net = Ipv4Addr::new(10, 9, 1, 1);
    let before = entries(k);
    let generation = k.dp.maps().datapath_config().expect("config").generation;
    let err =
        k.dp.apply(too_big, Action::Pass)
            .expect_err("the policy does not fit");
    assert!(
        matches!(&err, MapsError::Full { name, .. } if *name == map),
        "refused for {map} being full, got: {err}"
    );
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(
        k.dp.maps().datapath_config().expect("config").generation,
        generation,
        "the live generation stays"
    );
    assert_eq!(
        k.xdp(&udp(from_net, 5000, SERVER, 53)).reason,
        Reason::PolicyAllow,
        "the running policy still allows DNS"
    );
    assert_eq!(
        k.xdp(&udp(from_net, 5000, SERVER, 54)).reason,
        Reason::DefaultDeny,
        "the refused policy's rule is not in force"
    );
    assert_eq!(
        entries(k),
        before,
        "every entry the refused swap wrote is gone"
    );

    let fits = moved_dns(k);
    k.dp.apply(&fits, Action::Pass).expect("apply");
    assert_eq!(
        k.xdp(&udp(from_net, 5000, SERVER, 54)).reason,
        Reason::PolicyAllow
    );
    assert_eq!(
        k.xdp(&udp(from_net, 5000, SERVER, 53)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        entries(k),
        [
            fits.endpoints.len(),
            cidr_entries(&fits),
            fits.policy.len(),
            fits.failsafe.len()
        ],
        "one generation left, the new one"
    );
}

#[test]
fn a_full_failsafe_map_refuses_the_policy_and_keeps_the_running_one() {
    if !require_root("a_full_failsafe_map_refuses_the_policy_and_keeps_the_running_one") {
        return;
    }
    let mut k = kernel();
    // The failsafe map is written last, so every other map of the new generation was written
    // before it overflows, part way through its own batch.
    let mut too_big = moved_dns(&k);
    let any: ipnet::IpNet = "0.0.0.0/0".parse().expect("valid");
    for port in 1..=u16::try_from(MAX_FAILSAFE + 1).expect("fits") {
        too_big.failsafe.insert((6, port, any));
    }
    refused_then_fits(&mut k, &too_big, FAILSAFE_MAP);
}

#[test]
fn a_full_endpoint_map_refuses_the_policy_and_keeps_the_running_one() {
    if !require_root("a_full_endpoint_map_refuses_the_policy_and_keeps_the_running_one") {
        return;
    }
    let mut k = kernel();
    // A hash map this time (full is E2BIG, not an LPM trie's ENOSPC), and the first one
    // written: the batch stops part way through it.
    let mut too_big = moved_dns(&k);
    let ep = *too_big.endpoints.values().next().expect("an endpoint");
    for i in 0..MAX_ENDPOINTS {
        let [_, b, c, d] = i.to_be_bytes();
        too_big
            .endpoints
            .insert(IpAddr::V4(Ipv4Addr::new(10, 100 + b, c, d)), ep);
    }
    refused_then_fits(&mut k, &too_big, ENDPOINTS_MAP);
}

#[test]
fn batch_delete_passes_over_keys_already_gone() {
    if !require_root("batch_delete_passes_over_keys_already_gone") {
        return;
    }
    let k = kernel();
    let key = |port| PolicyKey {
        generation: 7,
        direction: 0,
        proto: 17,
        pad: 0,
        slot: 1,
        port,
        identity: 0,
    };
    let value =
        k.dp.maps()
            .policy_map()
            .iter()
            .next()
            .expect("an entry")
            .expect("read")
            .1;
    let present = [key(1), key(3)];
    let mut policy: HashMap<MapData, PolicyKey, PolicyValue> =
        support::writable(k.dp.maps().policy_map().map());
    batch::update(&mut policy, &present, &[value; 2]).expect("batch update");
    let missing =
        batch::delete(&mut policy, &[key(1), key(2), key(3), key(4)]).expect("batch delete");
    assert_eq!(missing, 2, "keys 2 and 4 were not there");
    assert!(
        k.dp.maps()
            .policy_map()
            .keys()
            .filter_map(Result::ok)
            .all(|k| k.generation != 7),
        "keys 1 and 3 are gone"
    );
}

/// A pin directory on the bpffs, removed on drop.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        // Never panics: this may run while a failed assertion unwinds.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn after_a_restart_the_first_swap_removes_both_old_generations() {
    if !require_root("after_a_restart_the_first_swap_removes_both_old_generations") {
        return;
    }
    let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(unique_name("bnd-kt-restart")));
    let layout = PinLayout::new(&pins.0);
    let mut k = Kernel {
        dp: Datapath::load(layout.clone(), 8).expect("load with pinned maps (root needed)"),
        tc_ingress: false,
        ifindex: 0,
    };
    let first = Policy::from_str("p.yaml", POLICY).expect("valid");
    k.install(&first, Action::Pass);
    let live = k.dp.maps().datapath_config().expect("config").generation;
    // Residue of a swap the previous agent did not finish: in the other generation, a
    // workload's endpoint entry for an address nobody protects. Come to life, it would subject
    // that address to the workload's rules.
    let stray = Ipv4Addr::new(10, 203, 0, 9);
    let (_, owner) =
        k.dp.maps()
            .endpoints_map()
            .iter()
            .next()
            .expect("an entry")
            .expect("read");
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&stray.octets());
    let stale = EndpointKey::new(live ^ 1, FAMILY_IPV4, IFINDEX_ANY, addr);
    let mut endpoints: HashMap<MapData, EndpointKey, Endpoint> =
        support::writable(k.dp.maps().endpoints_map().map());
    endpoints.insert(&stale, &owner, 0).expect("insert");
    let unprotected = k.xdp(&udp(CLIENT, 5000, stray, 54));
    assert_eq!((unprotected.action, unprotected.slot), (XDP_PASS, 0));

    // A new agent: it adopts the same maps and knows nothing of what is in them.
    let mut restarted = Datapath::load(layout.clone(), 8).expect("adopt the pins");
    let next = moved_dns(&k);
    restarted.apply(&next, Action::Pass).expect("apply");
    assert_eq!(
        k.xdp(&udp(Ipv4Addr::new(10, 9, 1, 1), 5000, SERVER, 54))
            .reason,
        Reason::PolicyAllow
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, SERVER, 53)).reason,
        Reason::DefaultDeny
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 5000, stray, 54)),
        unprotected,
        "the residue was removed before the switch: the address is still nobody's"
    );
    assert_eq!(
        entries(&k),
        [
            next.endpoints.len(),
            cidr_entries(&next),
            next.policy.len(),
            next.failsafe.len()
        ],
        "the previous agent's live generation is gone too"
    );
}

/// A workload that denies by default both ways and admits DNS: ICMP errors about its flows,
/// either way, are all the policy would drop.
const ERRORS_POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
defaults: { ingress: deny, egress: deny }
workloads:
  - name: web
    addresses: [10.203.0.1, \"fd00:203::1\"]
    ingress:
      - from: { any: true }
        ports: [\"53/udp\"]
    egress:
      - to: { any: true }
        ports: [\"9000/udp\"]
";

/// A router on the path, not a peer any rule names.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 9, 0, 0, 0, 0, 0, 9);

#[test]
fn icmp_errors_about_tracked_flows_pass_as_related() {
    if !require_root("icmp_errors_about_tracked_flows_pass_as_related") {
        return;
    }
    let mut k = Kernel::empty();
    k.install(
        &Policy::from_str("p.yaml", ERRORS_POLICY).expect("valid"),
        Action::Pass,
    );
    let query = udp(CLIENT, 40_000, SERVER, 53);
    let answer = udp(SERVER, 53, CLIENT, 40_000);
    // Before any flow: a "fragmentation needed" about the answer is just ICMP, denied.
    let too_big = packets::icmp4_frag_needed(ROUTER, SERVER, 1280, &answer);
    assert_eq!(k.xdp(&too_big).reason, Reason::DefaultDeny);
    // The client asks, the workload answers (a reply: established on egress).
    assert_eq!(k.xdp(&query).reason, Reason::PolicyAllow);
    assert_eq!(k.tc(&answer).reason, Reason::Established);
    // A router's "fragmentation needed" about the answer: path MTU discovery must work.
    let out = k.xdp(&too_big);
    assert_eq!((out.action, out.reason), (XDP_PASS, Reason::Related));
    // ... whichever program takes ingress.
    k.tc_ingress = true;
    assert_eq!(k.xdp(&too_big).reason, Reason::Related);
    k.tc_ingress = false;
    // An error about another flow, or about a packet some other host sent, stays denied.
    let other_flow = udp(SERVER, 53, CLIENT, 40_001);
    assert_eq!(
        k.xdp(&packets::icmp4_frag_needed(
            ROUTER,
            SERVER,
            1280,
            &other_flow
        ))
        .reason,
        Reason::DefaultDeny
    );
    let not_ours = udp(SERVER_B, 53, CLIENT, 40_000);
    assert_eq!(
        k.xdp(&packets::icmp4_frag_needed(ROUTER, SERVER, 1280, &not_ours))
            .reason,
        Reason::DefaultDeny
    );
    // A flow the workload starts: the peer's "port unreachable" about it is related.
    let call = udp(SERVER, 41_000, CLIENT, 9000);
    assert_eq!(k.tc(&call).reason, Reason::PolicyAllow);
    assert_eq!(
        k.xdp(&packets::icmp4_port_unreachable(CLIENT, SERVER, &call))
            .reason,
        Reason::Related
    );
    // On egress: the workload's own "port unreachable" about a query it let in is related;
    // about a query it never saw, denied.
    assert_eq!(
        k.tc(&packets::icmp4_port_unreachable(SERVER, CLIENT, &query))
            .reason,
        Reason::Related
    );
    let unseen = udp(CLIENT, 40_002, SERVER, 53);
    assert_eq!(
        k.tc(&packets::icmp4_port_unreachable(SERVER, CLIENT, &unseen))
            .reason,
        Reason::DefaultDeny
    );
    // IPv6: "packet too big" about an answer.
    let (client6, server6) = (
        "fd00:203::2".parse::<Ipv6Addr>().expect("v6"),
        "fd00:203::1".parse::<Ipv6Addr>().expect("v6"),
    );
    let query6 = packets::v6(
        client6,
        server6,
        L4::Udp {
            sport: 40_000,
            dport: 53,
        },
        b"q",
    );
    let answer6 = packets::v6(
        server6,
        client6,
        L4::Udp {
            sport: 53,
            dport: 40_000,
        },
        b"a",
    );
    let too_big6 = packets::icmp6_too_big(ROUTER6, server6, 1280, &answer6);
    assert_eq!(k.xdp(&too_big6).reason, Reason::DefaultDeny);
    assert_eq!(k.xdp(&query6).reason, Reason::PolicyAllow);
    assert_eq!(k.tc(&answer6).reason, Reason::Established);
    assert_eq!(k.xdp(&too_big6).reason, Reason::Related);
}

#[test]
fn ipv6_later_fragments_follow_a_first_fragment_with_ah_or_destination_options() {
    if !require_root("ipv6_later_fragments_follow_a_first_fragment_with_ah_or_destination_options")
    {
        return;
    }
    let mut k = Kernel::empty();
    k.install(
        &Policy::from_str("p.yaml", ERRORS_POLICY).expect("valid"),
        Action::Pass,
    );
    let (client6, server6) = (
        "fd00:203::2".parse::<Ipv6Addr>().expect("v6"),
        "fd00:203::1".parse::<Ipv6Addr>().expect("v6"),
    );
    let plain = packets::v6(
        client6,
        server6,
        L4::Udp {
            sport: 40_000,
            dport: 53,
        },
        &[7; 64],
    );
    for after in [Ext::Auth, Ext::DestOpts] {
        k.clear_state();
        // RFC 8200 4.1 order: Fragment, then AH or Destination Options, then UDP.
        let first = packets::with_ipv6_exts(
            &plain,
            &[
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                after,
            ],
        );
        assert_eq!(k.xdp(&first).reason, Reason::PolicyAllow, "{after:?}");
        let later = packets::ipv6_later_fragment(&first, 16);
        let out = k.xdp(&later);
        assert_eq!(
            (out.action, out.reason),
            (XDP_PASS, Reason::PolicyAllow),
            "the later fragment follows its first ({after:?})"
        );
        // A denied first fragment carries its later ones down with it.
        let denied = packets::with_ipv6_exts(
            &packets::v6(
                client6,
                server6,
                L4::Udp {
                    sport: 40_000,
                    dport: 54,
                },
                &[7; 64],
            ),
            &[
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                after,
            ],
        );
        k.clear_state();
        assert_eq!(k.xdp(&denied).reason, Reason::DefaultDeny);
        assert_eq!(
            k.xdp(&packets::ipv6_later_fragment(&denied, 16)).reason,
            Reason::DefaultDeny
        );
    }
}

/// Flows a workload accepted are recorded (for the ICMP errors about its answers) apart from
/// the flows it opened: a flood of new connections to an open port then churns the first LRU
/// only. (Which entry an LRU evicts is the kernel's choice and varies with CPUs and timing, so
/// the test checks where each flow lives, which decides what a flood can evict.)
#[test]
fn accepted_flows_are_kept_apart_from_the_flows_a_workload_opened() {
    if !require_root("accepted_flows_are_kept_apart_from_the_flows_a_workload_opened") {
        return;
    }
    let mut k = kernel();
    assert_eq!(
        k.tc(&udp(SERVER, 41_000, CLIENT, 9000)).reason,
        Reason::DefaultAllow
    );
    for sport in 1024..2024 {
        assert_eq!(
            k.xdp(&udp(CLIENT, sport, SERVER, 53)).reason,
            Reason::PolicyAllow
        );
    }
    let egress = boundary_common::Direction::Egress as u8;
    let opened: Vec<_> =
        k.dp.maps()
            .conntrack_map()
            .keys()
            .filter_map(Result::ok)
            .collect();
    let accepted: Vec<_> =
        k.dp.maps()
            .conntrack_accepted_map()
            .keys()
            .filter_map(Result::ok)
            .collect();
    assert_eq!(opened.len(), 1, "the one flow web opened: {opened:?}");
    assert!(
        opened
            .iter()
            .all(|f| f.direction != egress && f.sport == 9000)
    );
    assert_eq!(accepted.len(), 1000, "every accepted query, apart");
    assert!(
        accepted
            .iter()
            .all(|f| f.direction == egress && f.sport == 53)
    );
    assert_eq!(
        k.xdp(&udp(CLIENT, 9000, SERVER, 41_000)).reason,
        Reason::Established
    );
}

/// An IPv4 UDP datagram from `CLIENT` to `SERVER`:53 in two fragments: the first (with the
/// UDP header) and the last.
fn dns_fragments() -> (Vec<u8>, Vec<u8>) {
    let mut first = packets::v4(
        CLIENT,
        SERVER,
        L4::Udp {
            sport: 5353,
            dport: 53,
        },
        &[7; 64],
    );
    let mut later = first.clone();
    packets::set_ipv4_fragment(&mut first, 0, true);
    packets::set_ipv4_fragment(&mut later, 16, false);
    (first, later)
}

#[test]
fn a_fragment_verdict_does_not_outlive_its_policy() {
    if !require_root("a_fragment_verdict_does_not_outlive_its_policy") {
        return;
    }
    let mut k = kernel();
    let (first, later) = dns_fragments();
    assert_eq!(k.xdp(&first).reason, Reason::PolicyAllow);
    assert_eq!(
        k.xdp(&later).reason,
        Reason::PolicyAllow,
        "follows its first"
    );
    // The next policy no longer allows 53/udp: the datagram's remaining fragments are not let
    // in on the old policy's word.
    let (first, later) = dns_fragments();
    assert_eq!(k.xdp(&first).reason, Reason::PolicyAllow);
    let next = moved_dns(&k);
    k.dp.apply(&next, Action::Pass).expect("apply");
    let out = k.xdp(&later);
    assert_eq!(
        (out.action, out.reason),
        (XDP_DROP, Reason::FragmentUnknown)
    );
}

#[test]
fn a_remembered_reason_the_datapath_does_not_know_drops_as_internal_error() {
    if !require_root("a_remembered_reason_the_datapath_does_not_know_drops_as_internal_error") {
        return;
    }
    let mut k = kernel();
    k.clear_state();
    let (first, later) = dns_fragments();
    assert_eq!(k.xdp(&first).reason, Reason::PolicyAllow);
    // A remembered verdict with a reason code no build of the datapath writes (memory
    // corruption, or a newer agent's map read by an older program).
    let mut fragments: HashMap<MapData, FragKey, FragValue> =
        support::writable(k.dp.maps().fragments_map().map());
    let entries: Vec<(FragKey, FragValue)> = fragments.iter().filter_map(Result::ok).collect();
    assert_eq!(
        entries.len(),
        1,
        "the first fragment's verdict: {entries:?}"
    );
    let (key, mut value) = entries[0];
    value.reason = 63;
    assert_eq!(Reason::from_code(63), None);
    fragments.insert(&key, &value, 0).expect("write");
    let out = k.xdp(&later);
    assert_eq!((out.action, out.reason), (XDP_DROP, Reason::Internal));
}

/// The id of the map pinned at `path`.
fn pinned_map_id(path: &std::path::Path) -> u32 {
    aya::maps::MapInfo::from_pin(path).expect("pinned map").id()
}

#[test]
fn an_upgrade_replaces_the_maps_it_cannot_adopt_and_keeps_the_rest() {
    if !require_root("an_upgrade_replaces_the_maps_it_cannot_adopt_and_keeps_the_rest") {
        return;
    }
    let pins = PinDir(PathBuf::from("/sys/fs/bpf").join(unique_name("bnd-kt-upgrade")));
    let layout = PinLayout::new(&pins.0);
    let first = Datapath::load(layout.clone(), 8).expect("load with pinned maps (root needed)");
    let config = pinned_map_id(&layout.map(CONFIG_MAP));
    let counters = pinned_map_id(&layout.map(COUNTERS_MAP));

    // A pinned map of another layout, as an older agent's fragments map would be: the config
    // map pinned under the fragments map's name.
    std::fs::remove_file(layout.map(FRAGMENTS_MAP)).expect("unpin");
    MapData::from_pin(layout.map(CONFIG_MAP))
        .expect("config pin")
        .pin(layout.map(FRAGMENTS_MAP))
        .expect("pin it under the fragments name");
    let second = Datapath::load(layout.clone(), 8).expect("an upgrade replaces the odd map");
    let fragments = aya::maps::MapInfo::from_pin(layout.map(FRAGMENTS_MAP)).expect("fragments");
    assert_ne!(fragments.id(), config, "a fragments map of its own again");
    assert_eq!(
        (fragments.key_size(), fragments.value_size()),
        (
            u32::try_from(size_of::<FragKey>()).expect("fits"),
            u32::try_from(size_of::<FragValue>()).expect("fits")
        ),
        "with this agent's layout"
    );
    assert_eq!(
        pinned_map_id(&layout.map(CONFIG_MAP)),
        config,
        "the rest adopted"
    );
    assert_eq!(
        pinned_map_id(&layout.map(COUNTERS_MAP)),
        counters,
        "counters kept"
    );

    // Pins of the oldest version this agent adopts (it only added maps since): kept, map by
    // map, and marked with this agent's version.
    let mut abi: aya::maps::Array<MapData, u32> =
        aya::maps::Map::from_map_data(MapData::from_pin(layout.map(ABI_MAP)).expect("abi pin"))
            .and_then(TryInto::try_into)
            .expect("abi map");
    abi.set(0, &ABI_ADOPTS_FROM, 0)
        .expect("write an adoptable version");
    let adopted = Datapath::load(layout.clone(), 8).expect("adopt the pins");
    assert_eq!(
        pinned_map_id(&layout.map(CONFIG_MAP)),
        config,
        "config kept"
    );
    assert_eq!(
        pinned_map_id(&layout.map(COUNTERS_MAP)),
        counters,
        "counters kept"
    );
    assert_eq!(abi.get(&0, 0).expect("abi"), ABI_VERSION);
    drop(adopted);

    // Pins of an older ABI: every map replaced.
    abi.set(0, &1, 0).expect("write an older version");
    let _third = Datapath::load(layout.clone(), 8).expect("an older agent's pins are replaced");
    assert_ne!(pinned_map_id(&layout.map(CONFIG_MAP)), config);
    assert_ne!(pinned_map_id(&layout.map(COUNTERS_MAP)), counters);

    // Pins of a newer ABI: refused, with what to do.
    abi = aya::maps::Map::from_map_data(MapData::from_pin(layout.map(ABI_MAP)).expect("abi pin"))
        .and_then(TryInto::try_into)
        .expect("abi map");
    abi.set(0, &99, 0).expect("write a newer version");
    let refused = Datapath::load(layout.clone(), 8)
        .map(drop)
        .expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("made by a newer agent") && message.contains("detach"),
        "{message}"
    );
    drop((first, second));
}

#[test]
fn a_refused_swap_leaves_the_running_policys_slot_names() {
    if !require_root("a_refused_swap_leaves_the_running_policys_slot_names") {
        return;
    }
    let gone = "apiVersion: boundary.dev/v1\nfailsafe: []\nworkloads:\n  - name: gone\n    addresses: [10.203.0.1]\n";
    let newcomer = "apiVersion: boundary.dev/v1\nfailsafe: []\nworkloads:\n  - name: newcomer\n    addresses: [10.203.0.3]\n";
    let mut k = Kernel::empty();
    k.install(
        &Policy::from_str("p.yaml", gone).expect("valid"),
        Action::Pass,
    );
    let names_before = k.dp.maps().names().expect("names");
    assert_eq!(names_before.get(&1).map(String::as_str), Some("gone"));
    // With one usable slot, the newcomer must take the one gone leaves.
    let slots = k.dp.maps().slot_table().expect("slots");
    let p = Policy::from_str("p.yaml", newcomer).expect("valid");
    let mut too_big = policy::compile(&p, &slots, 2).expect("compiles");
    assert_eq!(too_big.names.get(&1).map(String::as_str), Some("newcomer"));
    let ep = *too_big.endpoints.values().next().expect("an endpoint");
    for i in 0..MAX_ENDPOINTS {
        let [_, hi, mid, lo] = i.to_be_bytes();
        too_big
            .endpoints
            .insert(Ipv4Addr::new(10, 100 + hi, mid, lo).into(), ep);
    }
    let err =
        k.dp.apply(&too_big, Action::Pass)
            .expect_err("does not fit");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(
        k.dp.maps().names().expect("names"),
        names_before,
        "the running policy keeps its slot names"
    );
}

/// 10.203.0.1 is web's on d0 (denied both ways) and edge's on d1 (open); admin's 10.203.0.3
/// is protected on every interface.
const INTERFACES_POLICY: &str = "\
apiVersion: boundary.dev/v1
failsafe: []
defaults: { ingress: allow, egress: allow }
workloads:
  - name: web
    addresses: [10.203.0.1]
    interfaces: [d0]
    defaults: { ingress: deny, egress: deny }
  - name: edge
    addresses: [10.203.0.1]
    interfaces: [d1]
  - name: admin
    addresses: [10.203.0.3]
    defaults: { ingress: deny }
";

#[test]
fn a_workload_listed_on_interfaces_is_enforced_there_only() {
    if !require_root("a_workload_listed_on_interfaces_is_enforced_there_only") {
        return;
    }
    // BPF_PROG_TEST_RUN puts a packet only on a device of the caller's namespace: d0 and d1
    // live in one of the test's own, beside its loopback.
    let ns = NetNs::new("bnd-kt-if");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.run(|| {
        let index = |n: &str| netdev::index(&n.parse().expect("a name")).expect("it exists");
        let (lo, d0, d1) = (index("lo"), index("d0"), index("d1"));
        let interfaces = Interfaces::protected([
            ("lo".to_owned(), lo),
            ("d0".to_owned(), d0),
            ("d1".to_owned(), d1),
        ]);
        let mut k = Kernel::empty();
        let policy = Policy::from_str_on("p.yaml", INTERFACES_POLICY, &interfaces).expect("valid");
        let tables = k.install(&policy, Action::Pass);
        let slot = |name: &str| {
            *tables
                .names
                .iter()
                .find(|(_, n)| *n == name)
                .expect("a slot")
                .0
        };
        let (web, edge, admin) = (slot("web"), slot("edge"), slot("admin"));
        let flags = |k: &Kernel| k.dp.maps().datapath_config().expect("config").flags;
        assert_ne!(flags(&k) & CFG_HAS_IFACE_ENDPOINTS, 0);

        let dns = udp(CLIENT, 5000, SERVER, 53);
        let mut cut = dns.clone();
        cut.truncate(cut.len() - 1);
        let to_admin = udp(CLIENT, 5000, SERVER_B, 53);
        let outcome = |action, slot, reason| Outcome {
            action,
            slot,
            reason,
        };
        for tc_ingress in [false, true] {
            k.tc_ingress = tc_ingress;
            // One flow, interface after interface, twice: each verdict is its interface's,
            // never the one the verdict cache holds from the last.
            for _ in 0..2 {
                k.ifindex = d0;
                assert_eq!(k.xdp(&dns), outcome(XDP_DROP, web, Reason::DefaultDeny));
                k.ifindex = d1;
                assert_eq!(k.xdp(&dns), outcome(XDP_PASS, edge, Reason::DefaultAllow));
                k.ifindex = lo;
                assert_eq!(k.xdp(&dns), outcome(XDP_PASS, 0, Reason::Unprotected));
            }
            // A malformed frame counts under the workload of its interface.
            k.ifindex = d1;
            assert_eq!(
                k.xdp(&cut),
                outcome(XDP_DROP, edge, Reason::Ipv4BadTotalLength)
            );
            // A workload that lists no interface is on every one.
            for ifindex in [lo, d0, d1] {
                k.ifindex = ifindex;
                assert_eq!(
                    k.xdp(&to_admin),
                    outcome(XDP_DROP, admin, Reason::DefaultDeny)
                );
            }
        }
        // Egress: the interface is the one the packet leaves by. (To a port no flow above
        // used: the flow edge accepted on d1 is the host's, so its answers are `established`
        // on d0 too.)
        let answer = udp(SERVER, 53, CLIENT, 5999);
        k.ifindex = d0;
        assert_eq!(
            k.tc(&udp(SERVER, 53, CLIENT, 5000)).reason,
            Reason::Established
        );
        k.ifindex = d0;
        assert_eq!(k.tc(&answer).reason, Reason::DefaultDeny);
        k.ifindex = d1;
        assert_eq!(k.tc(&answer).reason, Reason::DefaultAllow);
        k.ifindex = d0;
        assert_eq!(k.tc(&answer).slot, web);

        // A policy that lists no interfaces costs the datapath no second lookup.
        k.install(
            &Policy::from_str("p.yaml", POLICY).expect("valid"),
            Action::Pass,
        );
        assert_eq!(flags(&k) & CFG_HAS_IFACE_ENDPOINTS, 0);
    });
}
