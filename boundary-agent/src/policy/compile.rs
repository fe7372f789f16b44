//! Validated policy + identity bindings -> the exact map entries the datapath needs. Pure and
//! deterministic: the same inputs give the same tables, whatever the order of the file.
//!
//! ## Identities
//! An identity is a class of peers the policy cannot tell apart: the set of rules whose peer
//! selector matches them. Peers are bound addresses (static now, mTLS-attested later), CIDR
//! prefixes named by rules, and `world` (everything else). A prefix's identity includes every
//! CIDR rule whose prefix contains it, so the longest-prefix match in the datapath finds every
//! CIDR rule that applies, not just the most specific one. Rules on `any` peer are compiled
//! once, under identity 0, and looked up after the peer's own identity.
//!
//! ## Precedence (documented in README)
//! The datapath takes the first hit of: (identity, port), (identity, port range), (identity,
//! any port), then the same for `any` peer. So a rule about this peer beats a rule about any
//! peer, and an exact port beats a range, which beats any port. Where several rules meet at one
//! entry, deny beats allow, and among equals the rule written first wins.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::IpAddr,
};

use boundary_common::{
    Direction,
    maps::{
        Action, EP_PEERS_EGRESS, EP_PEERS_INGRESS, EP_RANGES_EGRESS, EP_RANGES_INGRESS,
        EP_RULES_EGRESS, EP_RULES_INGRESS, EP_TRACK_EGRESS, EP_TRACK_INGRESS, Endpoint,
        FIRST_IDENTITY, IDENTITY_ANY, IDENTITY_WORLD, MAX_RULES, Mode, PORT_ANY, PolicyValue,
        RULE_ALLOW, RULE_DENY, UNPROTECTED_SLOT, WORKLOAD_NAME_LEN, icmp_port,
    },
};
use ipnet::IpNet;

use super::{
    model::{Policy, Rule},
    ports::range_prefixes,
    spiffe::SpiffeId,
    values::{DefaultAction, RuleAction, Selector, Traffic, WorkloadMode},
};

/// Workload name -> slot, as currently installed. Slots are kept across reloads so a workload's
/// counters do not jump to another row when the file is reordered.
pub type SlotTable = BTreeMap<String, u16>;

/// A policy-map key without its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    pub slot: u16,
    pub direction: u8,
    pub proto: u8,
    pub identity: u32,
    pub port: u16,
}

/// A range-trie key without its generation: the first `bits` bits of `port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeKey {
    pub slot: u16,
    pub direction: u8,
    pub proto: u8,
    pub identity: u32,
    pub port: u16,
    pub bits: u8,
}

/// A compiled rule, for names in `trace`, `check` and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleInfo {
    pub name: String,
    pub workload: String,
    pub direction: Direction,
    pub peer: Selector,
    pub action: RuleAction,
}

impl fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            RuleAction::Allow => "allow",
            RuleAction::Deny => "deny",
        };
        let word = if self.direction == Direction::Ingress {
            "from"
        } else {
            "to"
        };
        write!(f, "{} ({action} {word} {})", self.name, self.peer)
    }
}

/// Who an identity id stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityInfo {
    /// SPIFFE IDs bound to addresses of this identity.
    pub spiffe: BTreeSet<String>,
    /// CIDR prefixes of this identity.
    pub cidrs: BTreeSet<IpNet>,
    /// The rules whose peer selector matches it.
    pub rules: BTreeSet<u32>,
}

/// The compiled form of a policy: every map entry, without generations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// Slot -> workload name, for every slot in use (never slot 0).
    pub names: BTreeMap<u16, String>,
    pub endpoints: BTreeMap<IpAddr, Endpoint>,
    /// Exact peer address -> identity.
    pub identities: BTreeMap<IpAddr, u32>,
    /// Peer prefix -> identity.
    pub cidrs: BTreeMap<IpNet, u32>,
    pub policy: BTreeMap<RuleKey, PolicyValue>,
    pub ranges: BTreeMap<RangeKey, PolicyValue>,
    /// (protocol, local port, peer prefix).
    pub failsafe: BTreeSet<(u8, u16, IpNet)>,
    /// Rule id -> rule.
    pub rules: Vec<RuleInfo>,
    pub identity_info: BTreeMap<u32, IdentityInfo>,
}

impl Tables {
    /// Entries one generation of these tables puts in each map the compiler fills.
    pub fn entry_counts(&self) -> Vec<(&'static str, u64)> {
        use boundary_common::maps as abi;
        vec![
            (abi::ENDPOINTS_MAP, self.endpoints.len() as u64),
            (abi::IDENTITIES_MAP, self.identities.len() as u64),
            (abi::CIDRS_MAP, self.cidrs.len() as u64),
            (abi::POLICY_MAP, self.policy.len() as u64),
            (abi::RANGES_MAP, self.ranges.len() as u64),
            (abi::FAILSAFE_MAP, self.failsafe.len() as u64),
        ]
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "{count} workloads do not fit in {slots} slots (slot 0 is reserved); raise maxWorkloads in the agent config"
    )]
    TooManyWorkloads { count: usize, slots: u32 },
    #[error("{count} rules exceed the datapath's {max}")]
    TooManyRules { count: usize, max: u32 },
}

/// Merges a rule into an entry: deny beats allow; among equal actions the first rule wins.
fn merge(slot: &mut Option<PolicyValue>, action: RuleAction, rule: u32) {
    let new = PolicyValue {
        action: match action {
            RuleAction::Allow => RULE_ALLOW,
            RuleAction::Deny => RULE_DENY,
        },
        pad: [0; 3],
        rule,
    };
    *slot = Some(match *slot {
        None => new,
        Some(old)
            if new.action > old.action || (new.action == old.action && new.rule < old.rule) =>
        {
            new
        }
        Some(old) => old,
    });
}

fn merge_into<K: Ord>(map: &mut BTreeMap<K, PolicyValue>, key: K, action: RuleAction, rule: u32) {
    let mut v = map.remove(&key);
    merge(&mut v, action, rule);
    map.insert(key, v.expect("merge always sets"));
}

/// Every prefix of `addr` from the longest to /0.
fn prefixes_of(addr: IpAddr) -> impl Iterator<Item = IpNet> {
    let max = if addr.is_ipv4() { 32u8 } else { 128 };
    (0..=max)
        .rev()
        .map(move |len| IpNet::new(addr, len).expect("valid length").trunc())
}

/// A rule with where it applies.
struct Placed<'a> {
    slot: u16,
    direction: Direction,
    rule: &'a Rule,
}

/// Compiles `policy` for a datapath with `max_workloads` slots, keeping the slots of `previous`
/// for workloads that are still there.
#[expect(
    clippy::too_many_lines,
    reason = "the compiler's passes read best in sequence"
)]
pub fn compile(
    policy: &Policy,
    previous: &SlotTable,
    max_workloads: u32,
) -> Result<Tables, CompileError> {
    let usable = max_workloads.saturating_sub(1) as usize;
    if policy.workloads.len() > usable {
        return Err(CompileError::TooManyWorkloads {
            count: policy.workloads.len(),
            slots: max_workloads,
        });
    }
    let mut t = Tables {
        names: assign_slots(policy, previous, max_workloads),
        ..Tables::default()
    };
    let slot_of: BTreeMap<&str, u16> = t.names.iter().map(|(s, n)| (n.as_str(), *s)).collect();

    // Rules, numbered in document order.
    let mut rules = Vec::new();
    for w in &policy.workloads {
        for (direction, list) in [
            (Direction::Ingress, &w.ingress),
            (Direction::Egress, &w.egress),
        ] {
            for rule in list {
                rules.push(Placed {
                    slot: slot_of[w.name.as_str()],
                    direction,
                    rule,
                });
                t.rules.push(RuleInfo {
                    name: rule.name.clone(),
                    workload: w.name.clone(),
                    direction,
                    peer: rule.peer.clone(),
                    action: rule.action,
                });
            }
        }
    }
    if rules.len() > MAX_RULES as usize {
        return Err(CompileError::TooManyRules {
            count: rules.len(),
            max: MAX_RULES,
        });
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "checked against MAX_RULES above"
    )]
    let id_of = |i: usize| i as u32;

    // Selector indexes.
    let mut by_cidr: HashMap<IpNet, Vec<u32>> = HashMap::new();
    let mut spiffe_rules = Vec::new();
    let mut world_rules = BTreeSet::new();
    let mut any_rules = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        match &r.rule.peer {
            Selector::Cidr(n) => by_cidr.entry(*n).or_default().push(id_of(i)),
            Selector::Spiffe(p) => spiffe_rules.push((id_of(i), p)),
            Selector::World => {
                world_rules.insert(id_of(i));
            }
            Selector::Any => any_rules.push(id_of(i)),
        }
    }
    let cidr_rules_containing = |addr_net: IpNet| -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for p in prefixes_of(addr_net.addr()).filter(|p| p.prefix_len() <= addr_net.prefix_len()) {
            if let Some(v) = by_cidr.get(&p) {
                out.extend(v.iter().copied());
            }
        }
        out
    };

    // Identities: one id per distinct rule set.
    let mut ids: BTreeMap<BTreeSet<u32>, u32> = BTreeMap::new();
    ids.insert(world_rules.clone(), IDENTITY_WORLD);
    let mut next_id = FIRST_IDENTITY;
    let mut intern = |set: BTreeSet<u32>| -> u32 {
        *ids.entry(set).or_insert_with(|| {
            let id = next_id;
            next_id += 1;
            id
        })
    };
    world_rules.clone_into(&mut t.identity_info.entry(IDENTITY_WORLD).or_default().rules);
    let mut cidr_list: Vec<IpNet> = by_cidr.keys().copied().collect();
    cidr_list.sort();
    for net in cidr_list {
        let mut set = cidr_rules_containing(net);
        set.extend(world_rules.iter().copied());
        let id = intern(set.clone());
        t.cidrs.insert(net, id);
        let info = t.identity_info.entry(id).or_default();
        info.cidrs.insert(net);
        info.rules = set;
    }
    let mut bindings: Vec<(IpAddr, &SpiffeId)> = policy
        .identities
        .iter()
        .flat_map(|i| i.addresses.iter().map(move |a| (*a, &i.id)))
        .collect();
    bindings.sort();
    for (addr, spiffe) in bindings {
        let mut set = cidr_rules_containing(IpNet::from(addr));
        set.extend(
            spiffe_rules
                .iter()
                .filter(|(_, p)| p.matches(spiffe))
                .map(|(i, _)| *i),
        );
        let id = intern(set.clone());
        t.identities.insert(addr, id);
        let info = t.identity_info.entry(id).or_default();
        info.spiffe.insert(spiffe.to_string());
        info.rules = set;
    }

    // Policy entries: every identity gets the entries of every rule in its set.
    let mut entries: Vec<(u32, u32)> = Vec::new();
    for (set, id) in &ids {
        entries.extend(set.iter().map(|r| (*id, *r)));
    }
    entries.extend(any_rules.iter().map(|r| (IDENTITY_ANY, *r)));
    for (identity, rule_id) in entries {
        let r = &rules[rule_id as usize];
        for traffic in &r.rule.traffic {
            let key = |proto, port| RuleKey {
                slot: r.slot,
                direction: r.direction as u8,
                proto,
                identity,
                port,
            };
            match *traffic {
                Traffic::Ports { proto, lo, hi } if lo == hi => {
                    merge_into(&mut t.policy, key(proto, lo), r.rule.action, rule_id);
                }
                Traffic::Ports { proto, lo, hi } => {
                    for (port, bits) in range_prefixes(lo, hi) {
                        let k = RangeKey {
                            slot: r.slot,
                            direction: r.direction as u8,
                            proto,
                            identity,
                            port,
                            bits,
                        };
                        merge_into(&mut t.ranges, k, r.rule.action, rule_id);
                    }
                }
                Traffic::Proto(proto) => {
                    merge_into(&mut t.policy, key(proto, PORT_ANY), r.rule.action, rule_id);
                }
                Traffic::Icmp { proto, icmp_type } => {
                    merge_into(
                        &mut t.policy,
                        key(proto, icmp_port(icmp_type)),
                        r.rule.action,
                        rule_id,
                    );
                }
            }
        }
    }
    // Nested range prefixes: the trie returns only the longest, so it must carry the verdict of
    // every range that covers it.
    let snapshot = t.ranges.clone();
    for (k, v) in &mut t.ranges {
        for bits in 0..k.bits {
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            let ancestor = RangeKey {
                port: k.port & mask,
                bits,
                ..*k
            };
            if let Some(a) = snapshot.get(&ancestor) {
                let mut merged = Some(*v);
                merge(
                    &mut merged,
                    if a.action == RULE_DENY {
                        RuleAction::Deny
                    } else {
                        RuleAction::Allow
                    },
                    a.rule,
                );
                *v = merged.expect("set");
            }
        }
    }

    // Endpoints.
    for w in &policy.workloads {
        let slot = slot_of[w.name.as_str()];
        let has_ranges = |d: Direction| {
            t.ranges
                .keys()
                .any(|k| k.slot == slot && k.direction == d as u8)
        };
        let has_deny = |list: &[Rule]| list.iter().any(|r| r.action == RuleAction::Deny);
        let mut flags = 0;
        if has_ranges(Direction::Ingress) {
            flags |= EP_RANGES_INGRESS;
        }
        if has_ranges(Direction::Egress) {
            flags |= EP_RANGES_EGRESS;
        }
        // Conntrack only where something could otherwise be dropped: the replies of a flow,
        // or the ICMP errors about it (`related`), which come back in either direction (a
        // router's "fragmentation needed" about a response the workload sends arrives on
        // ingress even though the flow came in on ingress). So either direction that can drop
        // makes the workload track its allowed flows both ways.
        let can_drop = w.ingress_default == DefaultAction::Deny
            || has_deny(&w.ingress)
            || w.egress_default == DefaultAction::Deny
            || has_deny(&w.egress);
        if can_drop {
            flags |= EP_TRACK_EGRESS | EP_TRACK_INGRESS;
        }
        let about_peers = |list: &[Rule]| list.iter().any(|r| r.peer != Selector::Any);
        if !w.ingress.is_empty() {
            flags |= EP_RULES_INGRESS;
        }
        if !w.egress.is_empty() {
            flags |= EP_RULES_EGRESS;
        }
        if about_peers(&w.ingress) {
            flags |= EP_PEERS_INGRESS;
        }
        if about_peers(&w.egress) {
            flags |= EP_PEERS_EGRESS;
        }
        let value = Endpoint {
            slot,
            mode: match w.mode {
                WorkloadMode::Enforce => Mode::Enforce as u8,
                WorkloadMode::Audit => Mode::Audit as u8,
            },
            ingress_default: action(w.ingress_default) as u8,
            egress_default: action(w.egress_default) as u8,
            flags,
            pad: [0; 2],
        };
        for a in &w.addresses {
            t.endpoints.insert(*a, value);
        }
    }
    t.failsafe = policy
        .failsafe
        .iter()
        .map(|f| (f.proto, f.port, f.net))
        .collect();
    Ok(t)
}

fn assign_slots(
    policy: &Policy,
    previous: &SlotTable,
    max_workloads: u32,
) -> BTreeMap<u16, String> {
    let mut names = BTreeMap::new();
    for w in &policy.workloads {
        if let Some(&slot) = previous.get(&w.name)
            && slot != UNPROTECTED_SLOT
            && u32::from(slot) < max_workloads
        {
            names.insert(slot, w.name.clone());
        }
    }
    let taken: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let fresh: Vec<String> = policy
        .workloads
        .iter()
        .filter(|w| !taken.contains(w.name.as_str()))
        .map(|w| w.name.clone())
        .collect();
    let mut next_free = 1u16;
    for name in fresh {
        while names.contains_key(&next_free) {
            next_free += 1;
        }
        names.insert(next_free, name);
    }
    names
}

fn action(d: DefaultAction) -> Action {
    match d {
        DefaultAction::Allow => Action::Pass,
        DefaultAction::Deny => Action::Drop,
    }
}

/// A name as stored in the names map: NUL-padded.
pub fn encode_name(name: &str) -> [u8; WORKLOAD_NAME_LEN] {
    let mut out = [0u8; WORKLOAD_NAME_LEN];
    let n = name.len().min(WORKLOAD_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The inverse of [`encode_name`]; `None` for an empty (unused) slot.
pub fn decode_name(raw: &[u8; WORKLOAD_NAME_LEN]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}
