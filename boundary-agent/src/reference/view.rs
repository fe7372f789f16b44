//! What the decision asks of a policy, answered two ways: from compiled entries ([`Compiled`],
//! over any [`Lookup`]: the compiler's [`Tables`] or the live maps), and from the policy model
//! itself ([`ModelView`]), so that the differential test checks the compiler as well.

use std::{collections::BTreeMap, net::IpAddr};

use boundary_common::{
    Direction,
    maps::{
        Action, Endpoint, IDENTITY_ANY, IDENTITY_WORLD, IFINDEX_ANY, Mode, PORT_ANY, PolicyValue,
        RULE_DENY, icmp_port,
    },
};

use crate::policy::{
    Bucket, DefaultAction, Policy, RuleAction, Selector, Traffic, Workload, WorkloadMode,
    compile::{RangeKey, RuleKey, Tables},
    spiffe::SpiffeId,
};

/// Read access to a policy's compiled entries: the compiler's tables, or the live maps.
pub trait Lookup {
    /// The endpoint entry of `addr` on interface `ifindex`: one of a workload that lists that
    /// interface, or with `IFINDEX_ANY`, one of a workload on every interface.
    fn endpoint(&self, addr: IpAddr, ifindex: u32) -> Option<Endpoint>;
    fn exact_identity(&self, addr: IpAddr) -> Option<u32>;
    /// Longest-prefix match.
    fn cidr_identity(&self, addr: IpAddr) -> Option<u32>;
    fn policy(&self, key: &RuleKey) -> Option<PolicyValue>;
    /// Longest-prefix match on the port (`key.bits` is 16).
    fn range(&self, key: &RangeKey) -> Option<PolicyValue>;
    /// Whether (protocol, local port, peer) is a failsafe entry.
    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool;
    /// The rate-limit bucket rule `rule` pays into, if it has a limit.
    fn bucket(&self, rule: u32) -> Option<Bucket>;
}

impl Lookup for Tables {
    fn endpoint(&self, addr: IpAddr, ifindex: u32) -> Option<Endpoint> {
        if ifindex == IFINDEX_ANY {
            self.endpoints.get(&addr).copied()
        } else {
            self.interface_endpoints.get(&(addr, ifindex)).copied()
        }
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.identities.get(&addr).copied()
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (0..=max).rev().find_map(|len| {
            let net = ipnet::IpNet::new(addr, len).expect("valid length").trunc();
            self.cidrs.get(&net).copied()
        })
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.policy.get(key).copied()
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        (0..=16u8).rev().find_map(|bits| {
            let mask = if bits == 0 {
                0
            } else {
                u16::MAX << (16 - bits)
            };
            self.ranges
                .get(&RangeKey {
                    port: key.port & mask,
                    bits,
                    ..*key
                })
                .copied()
        })
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        self.failsafe
            .iter()
            .any(|(p, lp, net)| *p == proto && *lp == port && net.contains(&peer))
    }

    fn bucket(&self, rule: u32) -> Option<Bucket> {
        self.buckets.get(&rule).copied()
    }
}

/// The workload that owns a local address, as far as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadInfo {
    pub slot: u16,
    pub audit: bool,
    pub ingress_deny: bool,
    pub egress_deny: bool,
}

impl WorkloadInfo {
    /// Whether traffic no rule decides is dropped in `direction`.
    pub fn denies_by_default(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.ingress_deny,
            Direction::Egress => self.egress_deny,
        }
    }
}

/// What a rule can be about in a packet: a destination port (TCP, UDP), an ICMP type (in its
/// own family), or nothing but the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    Port(u16),
    IcmpType(u8),
    Protocol,
}

/// The rule that decides, and what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub deny: bool,
    pub rule: u32,
}

/// What the decision asks of a policy.
pub trait PolicyView {
    /// The workload that owns `local` on the interface numbered `ifindex`.
    fn workload(&self, local: IpAddr, ifindex: u32) -> Option<WorkloadInfo>;
    /// The peer's identity id: its exact binding, else the longest CIDR identity holding it,
    /// else `world`.
    fn identity(&self, peer: IpAddr) -> u32;
    /// The deciding rule of `w` in `direction` for this peer and traffic, by the precedence of
    /// README "Policy semantics".
    fn rule(
        &self,
        w: &WorkloadInfo,
        direction: Direction,
        peer: IpAddr,
        identity: u32,
        proto: u8,
        subject: Subject,
    ) -> Option<Match>;
    /// Whether a failsafe entry covers (protocol, local port, peer).
    fn failsafe(&self, proto: u8, local_port: u16, peer: IpAddr) -> bool;
    /// The rate-limit bucket the rule of id `rule` pays into, if it has a limit.
    fn bucket(&self, rule: u32) -> Option<Bucket>;
}

/// Compiled entries, read through [`Lookup`].
pub struct Compiled<'a, L: ?Sized>(pub &'a L);

/// Whom a compiled entry is about.
#[derive(Clone, Copy)]
enum Whom {
    ThisPeer,
    AnyPeer,
}

/// Which ports a compiled entry covers.
#[derive(Clone, Copy)]
enum Ports {
    Exact,
    Range,
    Any,
}

/// README "Precedence", as the places a compiled rule can sit, most specific first. The
/// compiler has folded every rule that applies at one place into its entry (deny beats allow,
/// then the rule written first), so the first place that holds an entry decides.
const PLACES: [(Whom, Ports); 6] = [
    (Whom::ThisPeer, Ports::Exact),
    (Whom::ThisPeer, Ports::Range),
    (Whom::ThisPeer, Ports::Any),
    (Whom::AnyPeer, Ports::Exact),
    (Whom::AnyPeer, Ports::Range),
    (Whom::AnyPeer, Ports::Any),
];

impl<L: Lookup + ?Sized> PolicyView for Compiled<'_, L> {
    /// The compiler gives a workload that lists interfaces an entry on each, and one that
    /// lists none an entry for every interface; an address has entries of one kind or of
    /// workloads on different interfaces (validation refuses the rest), so at most one
    /// applies.
    fn workload(&self, local: IpAddr, ifindex: u32) -> Option<WorkloadInfo> {
        let entry = self
            .0
            .endpoint(local, ifindex)
            .or_else(|| self.0.endpoint(local, IFINDEX_ANY));
        entry.map(|e| WorkloadInfo {
            slot: e.slot,
            audit: e.mode == Mode::Audit as u8,
            ingress_deny: e.ingress_default == Action::Drop as u8,
            egress_deny: e.egress_default == Action::Drop as u8,
        })
    }

    fn identity(&self, peer: IpAddr) -> u32 {
        self.0
            .exact_identity(peer)
            .or_else(|| self.0.cidr_identity(peer))
            .unwrap_or(IDENTITY_WORLD)
    }

    fn rule(
        &self,
        w: &WorkloadInfo,
        direction: Direction,
        _peer: IpAddr,
        identity: u32,
        proto: u8,
        subject: Subject,
    ) -> Option<Match> {
        let port = match subject {
            Subject::Port(p) => p,
            Subject::IcmpType(t) => icmp_port(t),
            Subject::Protocol => PORT_ANY,
        };
        PLACES.iter().find_map(|&(whom, ports)| {
            let identity = match whom {
                Whom::ThisPeer => identity,
                Whom::AnyPeer => IDENTITY_ANY,
            };
            let value = match ports {
                Ports::Exact | Ports::Range if port == PORT_ANY => None,
                Ports::Range => self.0.range(&RangeKey {
                    slot: w.slot,
                    direction: direction as u8,
                    proto,
                    identity,
                    port,
                    bits: 16,
                }),
                Ports::Exact | Ports::Any => self.0.policy(&RuleKey {
                    slot: w.slot,
                    direction: direction as u8,
                    proto,
                    identity,
                    port: if matches!(ports, Ports::Any) {
                        PORT_ANY
                    } else {
                        port
                    },
                }),
            }?;
            Some(Match {
                deny: value.action == RULE_DENY,
                rule: value.rule,
            })
        })
    }

    fn failsafe(&self, proto: u8, local_port: u16, peer: IpAddr) -> bool {
        self.0.failsafe(proto, local_port, peer)
    }

    fn bucket(&self, rule: u32) -> Option<Bucket> {
        self.0.bucket(rule)
    }
}

/// The policy model, judged rule by rule. Only labels come from the compiled tables: workload
/// slots (counter rows) and identity ids (names of peer classes); which rule applies is
/// computed from the rules themselves.
pub struct ModelView<'a> {
    policy: &'a Policy,
    tables: &'a Tables,
    /// Slot -> (index into `policy.workloads`, id of its first ingress rule, of its first
    /// egress rule). Rules are numbered in document order: each workload's ingress rules, then
    /// its egress rules.
    workloads: BTreeMap<u16, (usize, u32, u32)>,
}

impl<'a> ModelView<'a> {
    pub fn new(policy: &'a Policy, tables: &'a Tables) -> Self {
        let mut workloads = BTreeMap::new();
        let mut next = 0u32;
        for (i, w) in policy.workloads.iter().enumerate() {
            let count = |n: usize| u32::try_from(n).expect("rule count fits");
            let ingress = next;
            let egress = ingress + count(w.ingress.len());
            next = egress + count(w.egress.len());
            if let Some((&slot, _)) = tables.names.iter().find(|(_, n)| **n == w.name) {
                workloads.insert(slot, (i, ingress, egress));
            }
        }
        Self {
            policy,
            tables,
            workloads,
        }
    }

    /// The SPIFFE ID bound to `peer`, if any.
    fn bound(&self, peer: IpAddr) -> Option<&SpiffeId> {
        self.policy
            .identities
            .iter()
            .find(|i| i.addresses.contains(&peer))
            .map(|i| &i.id)
    }

    fn selects(&self, selector: &Selector, peer: IpAddr) -> bool {
        match selector {
            Selector::Spiffe(pattern) => self.bound(peer).is_some_and(|id| pattern.matches(id)),
            Selector::Cidr(net) => net.contains(&peer),
            Selector::World => self.bound(peer).is_none(),
            Selector::Any => true,
        }
    }
}

/// How specifically `traffic` covers (protocol, subject): 0 an exact port or ICMP type, 1 a
/// port range, 2 the whole protocol.
fn covers(traffic: Traffic, proto: u8, subject: Subject) -> Option<u8> {
    match (traffic, subject) {
        (Traffic::Ports { proto: p, lo, hi }, Subject::Port(port))
            if p == proto && (lo..=hi).contains(&port) =>
        {
            Some(u8::from(lo != hi))
        }
        (
            Traffic::Icmp {
                proto: p,
                icmp_type,
            },
            Subject::IcmpType(t),
        ) if p == proto && icmp_type == t => Some(0),
        (Traffic::Proto(p), _) if p == proto => Some(2),
        _ => None,
    }
}

impl PolicyView for ModelView<'_> {
    /// The workload with `local` among its addresses and the interface among its interfaces
    /// (all of them when it lists none).
    fn workload(&self, local: IpAddr, ifindex: u32) -> Option<WorkloadInfo> {
        let on_interface = |w: &Workload| {
            w.interfaces.is_empty()
                || w.interfaces
                    .iter()
                    .any(|name| self.policy.interfaces.get(name) == Some(&ifindex))
        };
        let (&slot, &(i, ..)) = self.workloads.iter().find(|(_, (i, ..))| {
            let w = &self.policy.workloads[*i];
            w.addresses.contains(&local) && on_interface(w)
        })?;
        let w = &self.policy.workloads[i];
        Some(WorkloadInfo {
            slot,
            audit: w.mode == WorkloadMode::Audit,
            ingress_deny: w.ingress_default == DefaultAction::Deny,
            egress_deny: w.egress_default == DefaultAction::Deny,
        })
    }

    fn identity(&self, peer: IpAddr) -> u32 {
        Compiled(self.tables).identity(peer)
    }

    fn rule(
        &self,
        w: &WorkloadInfo,
        direction: Direction,
        peer: IpAddr,
        _identity: u32,
        proto: u8,
        subject: Subject,
    ) -> Option<Match> {
        let &(i, ingress, egress) = self.workloads.get(&w.slot)?;
        let workload = &self.policy.workloads[i];
        let (rules, first) = match direction {
            Direction::Ingress => (&workload.ingress, ingress),
            Direction::Egress => (&workload.egress, egress),
        };
        // Every applicable rule, ranked: a rule about this peer before one about any peer;
        // then exact port, range, any port; at one rank deny before allow; then the rule
        // written first.
        rules
            .iter()
            .zip(first..)
            .filter(|(r, _)| self.selects(&r.peer, peer))
            .filter_map(|(r, id)| {
                let port_rank = r
                    .traffic
                    .iter()
                    .filter_map(|t| covers(*t, proto, subject))
                    .min()?;
                let peer_rank = u8::from(r.peer == Selector::Any);
                let deny = r.action == RuleAction::Deny;
                Some((peer_rank * 3 + port_rank, !deny, id))
            })
            .min()
            .map(|(_, allow, rule)| Match { deny: !allow, rule })
    }

    fn failsafe(&self, proto: u8, local_port: u16, peer: IpAddr) -> bool {
        self.policy
            .failsafe
            .iter()
            .any(|f| f.proto == proto && f.port == local_port && f.net.contains(&peer))
    }

    /// The limit the model's rule says; the bucket's number (a label) from the tables.
    fn bucket(&self, rule: u32) -> Option<Bucket> {
        let limit = self.workloads.values().find_map(|&(i, ingress, egress)| {
            let w = &self.policy.workloads[i];
            let at = |first: u32, list: &[crate::policy::Rule]| {
                rule.checked_sub(first)
                    .and_then(|j| list.get(j as usize))
                    .map(|r| r.limit)
            };
            if rule < egress {
                at(ingress, &w.ingress)
            } else {
                at(egress, &w.egress)
            }
        })??;
        let bucket = self.tables.buckets.get(&rule)?;
        Some(Bucket { limit, ..*bucket })
    }
}
