//! Boundary's real eBPF object, loaded for `BPF_PROG_TEST_RUN` with maps sized for the prefix
//! count under test, and the tables that fill them.
//!
//! Capacities: the compiler-filled maps hold two generations, so one policy may use half of
//! each `MAX_*`. The per-packet tables at 1M need 1,000,000 exact bindings, beyond
//! `MAX_IDENTITIES / 2` (262,144): rather than change the agent, the harness loads the same
//! embedded object itself and raises that map (and any other that would not fit two
//! generations) with `EbpfLoader::map_max_entries`, then hands the maps to the agent's own
//! `Maps`, so filling goes through `Maps::apply`, the agent's code path. The maps are not
//! preallocated, so a larger limit costs nothing until entries are written. What was raised is
//! reported with the figures.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use aya::programs::{SchedClassifier, Xdp};
use boundary_agent::{
    datapath::{Datapath, LoadOptions, Maps},
    policy::{
        self, Policy, SlotTable, Tables,
        compile::{RuleKey, prefixes::PrefixLayout},
    },
};
use boundary_common::wire::{IPPROTO_TCP, IPPROTO_UDP};
use boundary_common::{
    Direction, Reason,
    maps::{
        Action, CIDRS_MAP, EP_PEERS_EGRESS, EP_PEERS_INGRESS, EP_RULES_EGRESS, EP_RULES_INGRESS,
        EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint, FIRST_IDENTITY, IDENTITIES_MAP, MAX_CIDRS,
        MAX_IDENTITIES, MAX_POLICY, MAX_PREFIXES, MAX_RULES, Mode, POLICY_MAP, PREFIXES_MAP,
        PolicyValue, RULE_ALLOW, RULE_DENY, TABLE_BUCKETS_LOG2, TABLE_MAP,
    },
};
use ipnet::IpNet;

use super::{
    paths::{self, CidrSet, Family, KeySpace, LOCAL4, LOCAL6, PORT_RULE, SLOT, WORKLOAD},
    testrun::Target,
};

/// Workload slots of the per-packet datapath (counters are read across all of them).
pub const SLOTS: u32 = 4;

/// One compiler-filled map whose shipped capacity was raised for a fill.
#[derive(Clone, Debug)]
pub struct Raised {
    pub map: &'static str,
    pub shipped: u32,
    pub used: u32,
}

pub struct BenchDatapath {
    dp: Datapath,
    pub raised: Vec<Raised>,
}

/// The capacity a map needs for two generations of `used` entries, if more than shipped.
fn raise(map: &'static str, shipped: u32, used: usize) -> anyhow::Result<Option<Raised>> {
    let used = u32::try_from(used).context("entries fit u32")?;
    Ok((used > shipped / 2).then_some(Raised { map, shipped, used }))
}

/// The address table (`TABLE_MAP`, counted in buckets per generation) raised for `keys`
/// bindings and regions at half load, as an agent sized for them would load it (see
/// `boundary_agent::datapath::maps::table_buckets_for`).
fn raise_table(keys: usize) -> Option<Raised> {
    let shipped = 2u32 << TABLE_BUCKETS_LOG2;
    let wanted = boundary_agent::datapath::maps::table_buckets_for(keys);
    (wanted > shipped / 2).then_some(Raised {
        map: TABLE_MAP,
        shipped,
        used: wanted,
    })
}

impl BenchDatapath {
    /// The prefix levels the live generation was written with, per family: the lengths
    /// walked, or how the family's prefixes are held instead.
    pub fn prefix_levels(&self) -> anyhow::Result<[String; 2]> {
        let maps = self.dp.maps();
        let g = maps.datapath_config()?.generation;
        let l = maps.prefix_levels(g)?;
        let show = |count: u8, lens: &[u8]| match count {
            boundary_common::maps::PREFIX_LEVELS_TRIE => "the LPM trie".to_owned(),
            boundary_common::maps::PREFIX_LEVELS_NONE => "none".to_owned(),
            n => lens[..usize::from(n)]
                .iter()
                .map(|len| format!("/{len}"))
                .collect::<Vec<_>>()
                .join(" "),
        };
        Ok([show(l.count[0], &l.v4), show(l.count[1], &l.v6)])
    }

    /// Loads both programs with `slots` workload slots and room for two generations of
    /// `tables`.
    pub fn load(tables: &Tables, slots: u32) -> anyhow::Result<Self> {
        // The regions of the prefix levels as a map with room for them lays them out.
        let regions = PrefixLayout::of(&tables.cidrs, usize::MAX).regions.len();
        let raised: Vec<Raised> = [
            raise(IDENTITIES_MAP, MAX_IDENTITIES, tables.identities.len())?,
            raise(CIDRS_MAP, MAX_CIDRS, tables.cidrs.len())?,
            raise(PREFIXES_MAP, MAX_PREFIXES, regions)?,
            raise(POLICY_MAP, MAX_POLICY, tables.policy.len())?,
            raise_table(tables.identities.len() + regions),
        ]
        .into_iter()
        .flatten()
        .collect();
        let capacities: Vec<(&'static str, u32)> =
            raised.iter().map(|r| (r.map, r.used * 2)).collect();
        let dp = Datapath::load_with(
            None,
            &LoadOptions {
                max_workloads: slots,
                capacities: &capacities,
                ..LoadOptions::default()
            },
        )?;
        Ok(Self { dp, raised })
    }

    pub fn xdp(&self) -> &Xdp {
        self.dp.xdp_program()
    }

    pub fn tc(&self) -> &SchedClassifier {
        self.dp.tc_program()
    }

    pub fn maps(&self) -> &Maps {
        self.dp.maps()
    }

    /// Ids of the maps the programs use (they share one set).
    pub fn map_ids(&self) -> anyhow::Result<Vec<u32>> {
        Ok(self.xdp().info()?.map_ids()?.unwrap_or_default())
    }

    /// The memory all the datapath's maps hold, as the kernel accounts it (`memlock` in each
    /// map's fdinfo: elements, buckets and preallocated arrays alike): the footprint the
    /// lookups of a first packet are spread over, at most.
    pub fn memlock(&self) -> anyhow::Result<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut total = 0;
        for id in self.map_ids()? {
            let map = aya::maps::MapData::from_id(id)?;
            let fd = map.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
            total += info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .with_context(|| format!("no memlock in map {id}'s fdinfo"))?;
        }
        Ok(total)
    }

    /// Attaches the XDP program to `iface` (native mode), for the flood step; the calling
    /// thread must be in the interface's namespace. Detached when `self` is dropped.
    pub fn attach_xdp(&mut self, iface: &std::ffi::CStr) -> anyhow::Result<()> {
        self.dp
            .xdp()
            .attach(iface, aya::programs::xdp::XdpMode::Driver)
            .with_context(|| format!("attach Boundary's XDP program to {iface:?} (native)"))?;
        Ok(())
    }

    /// The program that handles `direction`.
    pub fn program(&self, direction: Direction) -> &dyn Target {
        match direction {
            Direction::Ingress => self.xdp(),
            Direction::Egress => self.tc(),
        }
    }

    /// Installs `tables` through the agent's `Maps::apply`; returns how long that took.
    pub fn fill(&mut self, tables: &Tables) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.dp
            .apply(tables, Action::Pass)
            .context("apply the tables")?;
        Ok(start.elapsed())
    }

    /// Every (slot, direction, reason) counter, flattened.
    fn snapshot(&self) -> anyhow::Result<Vec<u64>> {
        let mut out = Vec::new();
        for slot in 0..u16::try_from(SLOTS)? {
            for direction in Direction::ALL {
                let row = self.maps().counter_row(slot, direction as u8)?;
                out.extend(row.counters.iter().map(|c| c.packets));
            }
        }
        Ok(out)
    }

    /// Runs `frame` once through the program for `direction` and checks the return value and
    /// that exactly one counter moved: in that direction, under `reason`, and in `slot`'s row
    /// when one is given. The row measures the path it names.
    pub fn verify(
        &self,
        direction: Direction,
        frame: &[u8],
        action: u32,
        slot: Option<u16>,
        reason: Reason,
    ) -> anyhow::Result<()> {
        let before = self.snapshot()?;
        let out = self.program(direction).run(frame, 1)?;
        let after = self.snapshot()?;
        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        ensure!(
            out.retval == action,
            "expected return value {action}, got {}",
            out.retval
        );
        ensure!(
            moved.len() == 1,
            "expected one counter to move, got {moved:?}"
        );
        let slots = boundary_common::reason::REASON_SLOTS;
        let (row, code) = (moved[0] / slots, moved[0] % slots);
        let (row_slot, row_direction) = (row / 2, row % 2);
        ensure!(
            slot.is_none_or(|s| usize::from(s) == row_slot)
                && row_direction == direction as usize
                && usize::from(reason.code()) == code,
            "expected slot {slot:?} {} {}, counted in slot {row_slot} direction {row_direction} under code {code}",
            direction.as_str(),
            reason.label()
        );
        Ok(())
    }
}

fn allow_or_deny(deny: bool, rule: usize) -> PolicyValue {
    PolicyValue {
        action: if deny { RULE_DENY } else { RULE_ALLOW },
        flags: 0,
        pad: [0; 2],
        // Rule ids index the per-rule arrays (`BND_RULE_HITS`, `BND_RULE_BUCKET`), which hold
        // `MAX_RULES`; policies beyond it exist only here. Past it the ids cycle over the whole
        // id space, so a random rule's entry is a random line of those arrays, as in the
        // largest policy the agent accepts. (They used to share the last id: at 1M, seven
        // rules in eight hit one cached line, which flattered the 1M rows.)
        rule: u32::try_from(rule % MAX_RULES as usize).expect("below MAX_RULES"),
    }
}

fn rule_key(direction: Direction, identity: u32) -> RuleKey {
    RuleKey {
        slot: SLOT,
        direction: direction as u8,
        proto: IPPROTO_UDP,
        identity,
        port: PORT_RULE,
    }
}

/// The identities, policy entries and rule ids of `CidrSet::Regrouped`: the single-length
/// prefixes and the exact bindings of `CidrSet::Uniform`, with the sharing turned around.
/// Rule 0: the one rule of every allowed prefix (one identity, one policy entry); rules 1..=2n:
/// one per exact binding, each with its own identity and policy entry (at 1M, 1M bindings
/// cycle over the `MAX_RULES` ids); then one per denied prefix, as in `Uniform`.
fn regrouped(t: &mut Tables, space: KeySpace) {
    let n = space.per_family();
    let shared = FIRST_IDENTITY;
    let mut id = shared + 1;
    let mut rule = 1;
    for family in [Family::V4, Family::V6] {
        for j in 0..n {
            t.identities.insert(KeySpace::exact(family, j), id);
            t.policy
                .insert(rule_key(Direction::Ingress, id), allow_or_deny(false, rule));
            id += 1;
            rule += 1;
        }
    }
    let nets: BTreeMap<IpNet, bool> = [Family::V4, Family::V6]
        .into_iter()
        .flat_map(|family| (0..n).map(move |j| (KeySpace::cidr(family, j), j % 2 == 1)))
        .collect();
    for (net, deny) in nets {
        if deny {
            t.cidrs.insert(net, id);
            t.policy
                .insert(rule_key(Direction::Ingress, id), allow_or_deny(true, rule));
            id += 1;
            rule += 1;
        } else {
            t.cidrs.insert(net, shared);
        }
    }
    t.policy.insert(
        rule_key(Direction::Ingress, shared),
        allow_or_deny(false, 0),
    );
}

/// The tables of `paths::policy_yaml(space, set)`, built directly: the compiler refuses that
/// file past `MAX_RULES` rules, and at 1M it would take longer than the measurement. Numbering
/// follows the compiler (rules in document order; identities: CIDRs in address order, then
/// the bindings' rule set; a prefix's identity carries the rules of every listed prefix that
/// contains it, and where rules meet at one entry deny beats allow, then the first written
/// wins), which `check_against_compiler` holds it to. `CidrSet::Regrouped` has no policy file:
/// see [`regrouped`].
pub fn tables_for(space: KeySpace, set: CidrSet) -> Tables {
    let mut t = Tables::default();
    t.names.insert(SLOT, WORKLOAD.into());
    let ep = Endpoint {
        slot: SLOT,
        mode: Mode::Enforce as u8,
        ingress_default: Action::Drop as u8,
        egress_default: Action::Pass as u8,
        // Ingress denies (by default and by rule): the workload tracks its allowed flows both
        // ways (replies, and ICMP errors about them, may come back either way). Rules about
        // particular peers both ways: the identity is looked up both ways.
        flags: EP_TRACK_EGRESS
            | EP_TRACK_INGRESS
            | EP_RULES_INGRESS
            | EP_PEERS_INGRESS
            | EP_RULES_EGRESS
            | EP_PEERS_EGRESS,
        pad: [0; 2],
    };
    t.endpoints.insert(IpAddr::V4(LOCAL4), ep);
    t.endpoints.insert(IpAddr::V6(LOCAL6), ep);
    if set == CidrSet::Regrouped {
        regrouped(&mut t, space);
    } else {
        uniform_or_mixed(&mut t, space, set);
    }
    // The default failsafe: SSH from anywhere.
    for net in ["0.0.0.0/0", "::/0"] {
        let net: IpNet = net.parse().expect("valid");
        t.failsafe.insert((IPPROTO_TCP, 22, net));
    }
    t
}

/// The identities, policy entries and rule ids of `policy_yaml(space, set)`.
fn uniform_or_mixed(t: &mut Tables, space: KeySpace, set: CidrSet) {
    let n = space.per_family();
    let key = rule_key;
    // Rule 0: the SPIFFE rule; rules 1..=2n: one per CIDR; rule 2n + 1: the egress twin.
    // Prefix -> (its rule, whether the rule denies).
    let mut rules: BTreeMap<IpNet, (usize, bool)> = BTreeMap::new();
    let mut k = 0;
    for family in [Family::V4, Family::V6] {
        for j in 0..n {
            rules.insert(space.net(set, family, j), (1 + k, j % 2 == 1));
            k += 1;
        }
    }
    let lengths: BTreeSet<(bool, u8)> = rules
        .keys()
        .map(|n| (n.addr().is_ipv4(), n.prefix_len()))
        .collect();
    let mut id = FIRST_IDENTITY;
    for net in rules.keys() {
        // Every listed prefix containing this one (itself included): their rules all apply,
        // on one port, so they meet at one entry.
        let applying = lengths
            .iter()
            .filter(|(v4, len)| *v4 == net.addr().is_ipv4() && *len <= net.prefix_len())
            .filter_map(|(_, len)| {
                rules.get(&IpNet::new(net.addr(), *len).expect("valid length").trunc())
            });
        let (rule, deny) = applying
            .min_by_key(|(rule, deny)| (!deny, *rule))
            .copied()
            .expect("its own rule");
        t.cidrs.insert(*net, id);
        t.policy
            .insert(key(Direction::Ingress, id), allow_or_deny(deny, rule));
        id += 1;
    }
    let bound = id;
    for family in [Family::V4, Family::V6] {
        for j in 0..n {
            t.identities.insert(KeySpace::exact(family, j), bound);
        }
    }
    t.policy
        .insert(key(Direction::Ingress, bound), allow_or_deny(false, 0));
    t.policy
        .insert(key(Direction::Egress, bound), allow_or_deny(false, 1 + k));
}

/// Compiles `paths::policy_yaml(space, set)` with the agent's compiler and checks that it gives
/// the same map entries as `tables_for(space, set)`: the per-packet tables are a real policy's.
pub fn check_against_compiler(space: KeySpace, set: CidrSet) -> anyhow::Result<()> {
    let policy = Policy::from_str("bench-policy.yaml", &paths::policy_yaml(space, set))?;
    let compiled = policy::compile(&policy, &SlotTable::new(), SLOTS)?;
    let direct = tables_for(space, set);
    let same = |what: &str, eq: bool| {
        ensure!(
            eq,
            "{what}: the compiler and tables_for disagree at {} prefixes ({})",
            space.entries,
            set.label()
        );
        Ok(())
    };
    same("names", compiled.names == direct.names)?;
    same("endpoints", compiled.endpoints == direct.endpoints)?;
    same("identities", compiled.identities == direct.identities)?;
    same("cidrs", compiled.cidrs == direct.cidrs)?;
    same("policy", compiled.policy == direct.policy)?;
    same("ranges", compiled.ranges == direct.ranges)?;
    same("failsafe", compiled.failsafe == direct.failsafe)?;
    Ok(())
}
