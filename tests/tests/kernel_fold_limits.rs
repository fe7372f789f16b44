//! Tier 2, folded identities and rate limits: a fold carries its entry's value as the agent
//! writes it, flag included, so a folded identity's limited rule pays its bucket on every new
//! flow, and an unlimited one is never refused. Covered here where the fold comes from: a CIDR
//! identity (trie and prefix levels), `world` (the prefix levels' entry), and an earned binding
//! whose identity the binder makes at run time; and across a reload that keeps the rule's id
//! while adding or taking away its limit.

mod support;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use boundary_agent::{
    datapath::{
        LoadOptions,
        maps::{EarnedBinding, monotonic_ns},
    },
    policy::{self, Binder, Earned, Policy},
};
use boundary_common::{
    Reason,
    maps::{Action, FOLD_ONE},
};
use boundary_tests::{
    packets::{self, L4},
    require_root,
};
use support::Kernel;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 207, 0, 1);

/// `lan` and `world` limited, each its identity's one entry (`world`'s rules are a CIDR
/// peer's too, so `lan`'s identity has two entries and is not folded: `world` is);
/// `orders` limited, the one entry of an earned peer's identity; `open` unlimited.
fn policy(lan_limit: &str) -> String {
    format!(
        r#"apiVersion: boundary.dev/v1
failsafe: []
workloads:
  - name: api
    addresses: [10.207.0.1]
    ingress:
      - {{ name: lan, from: {{ cidr: 10.1.0.0/16 }}, ports: ["80/udp"]{lan_limit} }}
      - {{ name: open, from: {{ cidr: 10.2.0.0/16 }}, ports: ["81/udp"] }}
      - {{ name: world, from: {{ world: true }}, ports: ["90/udp"], rateLimit: {{ packetsPerSecond: 1, burst: 3 }} }}
      - {{ name: orders, from: {{ spiffe: "spiffe://example.org/orders/*" }}, ports: ["8443/udp"], rateLimit: {{ packetsPerSecond: 1, burst: 3 }} }}
"#
    )
}

const LIMIT: &str = ", rateLimit: { packetsPerSecond: 1, burst: 3 }";

/// New flows (a fresh source port each) from `src` to `dport`: the reasons counted.
fn new_flows(k: &mut Kernel, src: Ipv4Addr, dport: u16, n: u16, sport: &mut u16) -> Vec<Reason> {
    (0..n)
        .map(|_| {
            *sport += 1;
            let frame = packets::v4(
                src,
                SERVER,
                L4::Udp {
                    sport: *sport,
                    dport,
                },
                b"x",
            );
            k.xdp(&frame).reason
        })
        .collect()
}

/// A burst of 3 at 1/s admits 3 (one more per second the test took), then refuses.
fn assert_limited(what: &str, reasons: &[Reason], started: Instant) {
    let admitted = reasons
        .iter()
        .filter(|&&r| r == Reason::PolicyAllow)
        .count();
    let extra = usize::try_from(started.elapsed().as_secs()).expect("fits");
    assert!(
        (3..=3 + extra).contains(&admitted)
            && reasons[admitted..]
                .iter()
                .all(|&r| r == Reason::RateLimited),
        "{what}: a burst of 3 should admit 3 then refuse: {reasons:?}"
    );
}

fn assert_unlimited(what: &str, reasons: &[Reason]) {
    assert!(
        reasons.iter().all(|&r| r == Reason::PolicyAllow),
        "{what}: no limit, every flow allowed: {reasons:?}"
    );
}

#[test]
fn a_folded_identitys_limited_rule_pays_its_bucket_on_every_new_flow() {
    if !require_root("a_folded_identitys_limited_rule_pays_its_bucket_on_every_new_flow") {
        return;
    }
    let levels = LoadOptions {
        prefix_levels_from: Some(0),
        ..LoadOptions::default()
    };
    for (layout, options) in [("trie", LoadOptions::default()), ("levels", levels)] {
        let mut k = Kernel::loaded_with(&policy(LIMIT), Action::Pass, &options);
        let mut sport = 20_000;
        let started = Instant::now();
        let world = new_flows(&mut k, Ipv4Addr::new(8, 8, 8, 8), 90, 10, &mut sport);
        assert_limited(&format!("{layout}: world"), &world, started);
        let lan = new_flows(&mut k, Ipv4Addr::new(10, 1, 2, 3), 80, 10, &mut sport);
        assert_limited(&format!("{layout}: lan"), &lan, started);
        let open = new_flows(&mut k, Ipv4Addr::new(10, 2, 2, 3), 81, 10, &mut sport);
        assert_unlimited(&format!("{layout}: open"), &open);
    }
}

#[test]
fn a_reload_that_adds_or_takes_away_a_folded_rules_limit_is_obeyed() {
    if !require_root("a_reload_that_adds_or_takes_away_a_folded_rules_limit_is_obeyed") {
        return;
    }
    // `lan` alone on its prefix, with no `world` rule: its identity is folded.
    let lone = |limit: &str| {
        policy(limit)
            .lines()
            .filter(|l| !l.contains("name: world"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut k = Kernel::new(&lone(""), Action::Pass);
    let mut sport = 30_000;
    let lan = Ipv4Addr::new(10, 1, 2, 3);
    let first = new_flows(&mut k, lan, 80, 10, &mut sport);
    assert_unlimited("before the limit", &first);
    let limited = Policy::from_str("p.yaml", &lone(LIMIT)).expect("valid");
    let tables = k.reload(&limited);
    let id = tables.cidrs[&"10.1.0.0/16".parse().expect("prefix")];
    let rule_ids_kept = tables.rules.len();
    assert!(rule_ids_kept > 0);
    let fold = policy::compile::folds::Folds::of(&tables).get(id);
    assert_eq!(fold.kind, FOLD_ONE, "lan's identity is folded");
    let started = Instant::now();
    let with = new_flows(&mut k, lan, 80, 10, &mut sport);
    assert_limited("a limit added by a reload", &with, started);
    let unlimited = Policy::from_str("p.yaml", &lone("")).expect("valid");
    k.reload(&unlimited);
    let without = new_flows(&mut k, lan, 80, 10, &mut sport);
    assert_unlimited("the limit taken away by a reload", &without);
}

#[test]
fn an_earned_peers_folded_limited_rule_pays_its_bucket() {
    if !require_root("an_earned_peers_folded_limited_rule_pays_its_bucket") {
        return;
    }
    let mut k = Kernel::empty();
    let p = Policy::from_str("p.yaml", &policy(LIMIT)).expect("valid");
    let slots = k.dp.maps().slot_table().expect("slots");
    let t = policy::compile_with(
        &p,
        &slots,
        &BTreeMap::new(),
        &BTreeMap::new(),
        support::SLOTS,
        &Earned {
            enabled: true,
            bindings: BTreeMap::new(),
            endpoint: None,
        },
    )
    .expect("compiles");
    k.dp.apply(&t, Action::Pass).expect("apply");
    let mut binder = Binder::new(&p, &t);
    let mut sport = 40_000;
    let started = Instant::now();
    // Two peers of one new identity: the first binding writes its entries, the second
    // finds the identity live.
    for (i, peer) in [Ipv4Addr::new(10, 9, 0, 7), Ipv4Addr::new(10, 9, 0, 8)]
        .into_iter()
        .enumerate()
    {
        let e = EarnedBinding {
            addr: IpAddr::V4(peer),
            id: format!("spiffe://example.org/orders/api-{i}"),
            expires: monotonic_ns() + 60_000_000_000,
            not_after: 2_000_000_000,
            renewed: 1_800_000_000,
            issuer: 1,
            serial: vec![1],
            chain: Vec::new(),
            anchor: 1,
        };
        let binding = binder.bind(e.addr, &e.id.parse().expect("SPIFFE ID"));
        assert_eq!(binding.fold.kind, FOLD_ONE, "one entry: folded");
        assert_eq!(binding.policy.is_empty(), i == 1);
        k.dp.bind(&e, &binding).expect("bind");
    }
    let mut reasons = new_flows(&mut k, Ipv4Addr::new(10, 9, 0, 7), 8443, 5, &mut sport);
    reasons.extend(new_flows(
        &mut k,
        Ipv4Addr::new(10, 9, 0, 8),
        8443,
        5,
        &mut sport,
    ));
    assert_limited("earned peers", &reasons, started);
}
