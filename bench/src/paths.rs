//! The per-packet rows, as data: each path names the frame that takes it, where random keys
//! for it come from, and the verdict and reason it must produce (checked before it is timed, so
//! a row can never measure a different path than it claims). Paths the datapath does not have
//! yet are rows too, printed as "not implemented yet".
//!
//! ## The host and its peers, for N prefixes (half IPv4, half IPv6)
//!
//! One protected workload, `bench` (slot 1), owns [`LOCAL4`] and [`LOCAL6`]: ingress default
//! deny, egress default allow, the default SSH failsafe. [`policy_yaml`] writes it out; at 1k
//! the harness compiles that file with the agent's compiler and checks that it gives exactly
//! the tables `kernel::tables_for` builds directly (at 100k and 1M the compiler refuses the
//! file: more than `MAX_RULES` rules). Its peers:
//!
//! - **N exact bindings** (static SPIFFE bindings, the identity hash map): IPv4 10.0.0.0 + j,
//!   IPv6 `fd00:e::j`. One rule `from: { spiffe: "spiffe://bench.example/*" }` on 8443/udp (and
//!   its egress twin `to:`) matches them all, so the compiler gives them one identity.
//! - **N CIDR identities** (the prefix levels, one level per family): IPv4 /28s 10.128.0.0 + 16 j (in 10.128.0.0/9),
//!   IPv6 /64s `fd00:c1d:0:j::/64`. Each is its own rule `from: { cidr: ... }` on 8443/udp, and
//!   so its own identity with its own policy entry: even j allow, odd j `action: deny`.
//! - Port 9999 has no rule for anyone: a policy miss, then the workload's default (deny).
//!
//! The mixed-length rows run on tables of their own ([`CidrSet::Mixed`]): the same workload,
//! rules and exact bindings, with the N CIDR identities drawn from `mixed` (lengths spread as
//! in real tables, some nested) instead of /28s and /64s. Separate tables, not one set holding
//! both: a per-length datapath lays out its levels per family over every prefix it holds, so
//! sharing them would change what the single-length rows measure.
//!
//! Unprotected destinations come from ranges no workload owns; [`CLIENT4`] / [`CLIENT6`] are
//! `world` peers (no binding, no CIDR). These frames only ever go to `BPF_PROG_TEST_RUN` (or
//! to the harness's own namespaces).

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use boundary_common::{Direction, Reason, Verdict};
use boundary_tests::packets::{self, ETH_LEN, Ext, IPV4_LEN, IPV6_LEN, L4};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::sys::{TC_NEXT, TC_SHOT, XDP_DROP, XDP_PASS};

/// The protected workload's slot and addresses.
pub const SLOT: u16 = 1;
pub const WORKLOAD: &str = "bench";
pub const LOCAL4: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 1);
/// `world` peers.
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x203, 0, 0, 0, 0, 0, 2);
/// The port the rules are about, and one no rule mentions.
pub const PORT_RULE: u16 = 8443;
pub const PORT_NO_RULE: u16 = 9999;
/// The local port of the flows the established rows record, and the peer's.
pub const FLOW_LOCAL_PORT: u16 = 40_000;
pub const FLOW_PEER_PORT: u16 = 53;
/// Flows per family the established rows record first (the conntrack LRU holds 65,536).
pub const FLOWS: usize = 8_192;
/// The SPIFFE pattern of the exact-binding rule.
pub const SPIFFE_PATTERN: &str = "spiffe://bench.example/*";

const EXACT4_BASE: u32 = u32::from_be_bytes([10, 0, 0, 0]);
const EXACT6_BASE: u128 = 0xfd00_000e_u128 << 96;
const CIDR4_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const CIDR4_LEN: u8 = 28;
const CIDR6_BASE: u128 = 0xfd00_0c1d_u128 << 96;
const CIDR6_LEN: u8 = 64;
const V4_UNPROTECTED: u32 = u32::from_be_bytes([10, 64, 0, 0]);
const V6_UNPROTECTED: u128 = 0xfd00_dead_u128 << 96;
/// Offsets of the addresses in an untagged frame.
const SRC_OFFSET_V4: usize = ETH_LEN + 12;
const DST_OFFSET_V4: usize = ETH_LEN + 16;
const SRC_OFFSET_V6: usize = ETH_LEN + 8;
const DST_OFFSET_V6: usize = ETH_LEN + 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// Not IP, or broken before the IP version is known.
    L2,
}

impl Family {
    pub const fn label(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
            Family::L2 => "-",
        }
    }
}

/// Where the key of a row comes from: the address the random-key variant varies (the peer:
/// the source on ingress, the destination on egress; or the local address for
/// `Unprotected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// An exact binding, as the source (ingress).
    Exact,
    /// An address in an allowed (even) CIDR identity, as the source.
    CidrAllow,
    /// An address in a denied (odd) CIDR identity, as the source.
    CidrDeny,
    /// An address in any CIDR identity, as the source.
    Cidr,
    /// An address in an allowed (even) / denied (odd) prefix of the mixed-length set, as the
    /// source (`CidrSet::Mixed` tables).
    MixedAllow,
    MixedDeny,
    /// An address in an allowed (even) CIDR identity, as the source, on the tables where
    /// every allowed prefix maps to one shared identity (`CidrSet::Regrouped`).
    SharedAllow,
    /// An exact binding, as the source, on the tables where each binding has its own identity
    /// (`CidrSet::Regrouped`).
    ExactOwn,
    /// The peer of one of the flows the established row records first, as the source.
    Flows,
    /// An exact binding, as the destination (egress).
    ExactDst,
    /// An address no workload owns, as the destination.
    Unprotected,
    /// The datapath reads no peer address on this path: no random-key variant.
    Fixed,
}

impl Keys {
    /// Where this key sits in an untagged frame of `family`.
    /// The tables a row with these keys runs on.
    pub fn set(self) -> CidrSet {
        match self {
            Keys::MixedAllow | Keys::MixedDeny => CidrSet::Mixed,
            Keys::SharedAllow | Keys::ExactOwn => CidrSet::Regrouped,
            _ => CidrSet::Uniform,
        }
    }

    pub fn offset(self, family: Family) -> Option<usize> {
        let src = match self {
            Keys::Exact
            | Keys::CidrAllow
            | Keys::CidrDeny
            | Keys::Cidr
            | Keys::MixedAllow
            | Keys::MixedDeny
            | Keys::SharedAllow
            | Keys::ExactOwn
            | Keys::Flows => true,
            Keys::ExactDst | Keys::Unprotected => false,
            Keys::Fixed => return None,
        };
        match (family, src) {
            (Family::V4, true) => Some(SRC_OFFSET_V4),
            (Family::V4, false) => Some(DST_OFFSET_V4),
            (Family::V6, true) => Some(SRC_OFFSET_V6),
            (Family::V6, false) => Some(DST_OFFSET_V6),
            (Family::L2, _) => None,
        }
    }
}

/// Which CIDR identities the tables of a prefix count hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrSet {
    /// One length per family: /28 (IPv4), /64 (IPv6), `KeySpace::cidr`.
    Uniform,
    /// Lengths spread as in real tables, some nested (`mixed`).
    Mixed,
    /// The prefixes and bindings of `Uniform`, with the sharing of identities turned around
    /// (issue #15's fairness rows): every allowed prefix maps to one identity with one policy
    /// entry and one rule id, as all the exact bindings do in `Uniform`; each exact binding
    /// has an identity, a policy entry and a rule id of its own, as each prefix does in
    /// `Uniform` (ids cycle over the rule-id space past `MAX_RULES`). Denied prefixes keep
    /// their own identities, so the prefix levels hold the same entries laid out the same way.
    /// Built directly (`kernel::tables_for`): no policy file is compiled for them.
    Regrouped,
}

impl CidrSet {
    pub const ALL: [CidrSet; 3] = [CidrSet::Uniform, CidrSet::Regrouped, CidrSet::Mixed];

    pub const fn label(self) -> &'static str {
        match self {
            CidrSet::Uniform => "single-length CIDR set (/28, /64)",
            CidrSet::Mixed => "mixed-length CIDR set",
            CidrSet::Regrouped => {
                "single-length set, identities regrouped (allowed prefixes: one; bindings: one each)"
            }
        }
    }
}

/// How many prefix levels a CIDR identity lookup probes on the first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Levels {
    /// The path looks no prefix up.
    None,
    /// A single-length set: one level.
    One,
    /// A mixed-length set: as many as the compiler's layout needs for the address (IPv4: four
    /// levels, most addresses stop after two; IPv6's spread of lengths does not fit five
    /// levels and walks the trie). The report prints the levels each set got.
    Mixed,
}

/// The map lookups a flow's first packet makes on a path, **counted from the datapath's code**
/// (`boundary-ebpf`: `verdict.rs`, `policy.rs`, `conntrack.rs`), not measured: the kernel
/// cannot count them cheaply. Array reads (config, port bitmaps, bind sequence, verdict cache,
/// counters) are not counted. For the per-length identity lookup (issue #15: a hash map of
/// prefix levels, probed shortest first, stopping where nothing longer exists); on a datapath
/// that still uses the LPM trie, "levels" is one trie walk instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookups {
    /// Hash lookups: endpoint, policy entries, conntrack.
    pub hash: u8,
    /// Address-table probes besides the prefix levels' (one 128-byte bucket each,
    /// `boundary_common::maps::table`): the exact identity's.
    pub table: u8,
    /// Prefix levels probed (in the address table; a trie walk for a family left there).
    pub levels: Levels,
    /// Whether the packet also inserts its flow in the conntrack LRU (an allowed, tracked
    /// flow: the lookup before the insert is in `hash`).
    pub ct_insert: bool,
}

impl Lookups {
    const ZERO: Lookups = Lookups {
        hash: 0,
        table: 0,
        levels: Levels::None,
        ct_insert: false,
    };

    /// Counted for each kind of row, from the code:
    /// - every protected path: the endpoint (1);
    /// - exact identity: the address table's bucket, a hit (1 probe), no prefix lookup (a
    ///   binding past a full bucket, about 2 % at half load, pays the identity hash too);
    /// - CIDR identity: the prefix levels, a table probe each; the identity probe is skipped
    ///   when the peer's bit in the bound-address bitmap is clear (an array read, not
    ///   counted; at 1M bindings about 6 % of peers find a bit another address set, and
    ///   probe: a miss);
    /// - policy: (identity, port) when the port bitmap lists the port (8443: 1); for a port no
    ///   rule lists (9999, and the established row's 40000) that lookup is skipped, and
    ///   (identity, any port) and (any peer, any port) miss (2). An identity with one entry of
    ///   its own carries it in its value (a *fold*, `boundary_common::maps::Fold`): every CIDR
    ///   identity of these tables and each binding's own identity in the regrouped ones. Its
    ///   port rule costs no lookup (0), and a port it does not name skips the identity's own
    ///   lookups: (any peer, any port) only (1). The shared identity of the exact bindings has
    ///   two entries (ingress, and the egress twin): looked up;
    /// - a drop: conntrack, is it a reply? (1; the failsafe lookup is skipped by its port
    ///   bitmap, which lists 22 only);
    /// - an allow: conntrack's record looks the flow up (1), then inserts it.
    pub const fn of(keys: Keys, reason: Reason) -> Lookups {
        let levels = match keys {
            Keys::Exact | Keys::ExactDst | Keys::ExactOwn => Levels::None,
            Keys::CidrAllow | Keys::CidrDeny | Keys::Cidr | Keys::SharedAllow | Keys::Flows => {
                Levels::One
            }
            Keys::MixedAllow | Keys::MixedDeny => Levels::Mixed,
            Keys::Unprotected => {
                return Lookups {
                    hash: 1,
                    ..Self::ZERO
                };
            }
            Keys::Fixed => return Self::ZERO,
        };
        let folded = !matches!(keys, Keys::Exact | Keys::ExactDst);
        let hit = if folded { 0 } else { 1 };
        let (policy, ct, ct_insert) = match reason {
            Reason::PolicyAllow => (hit, 1, true),
            Reason::PolicyDeny => (hit, 1, false),
            // A policy miss, then the default (deny) or an established reply.
            _ => (if folded { 1 } else { 2 }, 1, false),
        };
        let identity = if matches!(levels, Levels::None) { 1 } else { 0 };
        Lookups {
            hash: 1 + policy + ct,
            table: identity,
            levels,
            ct_insert,
        }
    }

    pub fn label(self) -> String {
        let table = if self.table > 0 {
            format!(" + {} table", self.table)
        } else {
            String::new()
        };
        let levels = match self.levels {
            Levels::None => "",
            Levels::One => " + 1 level (1k: trie)",
            Levels::Mixed => " + 1-4 levels / trie",
        };
        let insert = if self.ct_insert { " + ct insert" } else { "" };
        format!("{}{table}{levels}{insert}", self.hash)
    }
}

/// What a frame must make the program do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The program's return value (`XDP_*`, or `TC_NEXT` / `TC_SHOT`).
    pub action: u32,
    pub reason: Reason,
}

impl Expect {
    pub fn label(self) -> String {
        let verdict = match self.reason.verdict() {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        };
        format!("{verdict} {}", self.reason.label())
    }
}

pub enum Kind {
    Measured {
        /// The frame, for a given key address.
        build: fn(IpAddr) -> Vec<u8>,
        keys: Keys,
        expect: Expect,
    },
    NotImplemented,
}

pub struct PathDef {
    pub name: &'static str,
    pub family: Family,
    /// Ingress rows run the XDP program, egress rows the TC program.
    pub direction: Direction,
    pub kind: Kind,
    /// Counted from the code (see [`Lookups`]).
    pub lookups: Lookups,
}

impl PathDef {
    /// The tables this row runs on.
    pub fn set(&self) -> CidrSet {
        match &self.kind {
            Kind::Measured { keys, .. } => keys.set(),
            Kind::NotImplemented => CidrSet::Uniform,
        }
    }

    /// Where the key sits in this path's frame, for the random-key variant.
    pub fn key_offset(&self) -> Option<usize> {
        match &self.kind {
            Kind::Measured { keys, .. } => keys.offset(self.family),
            Kind::NotImplemented => None,
        }
    }
}

/// The address space behind one prefix count.
#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    pub entries: usize,
}

fn index_u32(j: usize) -> u32 {
    u32::try_from(j).expect("indexes fit u32")
}

impl KeySpace {
    pub fn per_family(self) -> usize {
        self.entries / 2
    }

    pub fn exact(family: Family, j: usize) -> IpAddr {
        match family {
            Family::V4 => Ipv4Addr::from(EXACT4_BASE + index_u32(j)).into(),
            _ => Ipv6Addr::from(EXACT6_BASE + j as u128).into(),
        }
    }

    /// CIDR identity `j` of `family`.
    pub fn cidr(family: Family, j: usize) -> IpNet {
        if family == Family::V4 {
            let a = Ipv4Addr::from(CIDR4_BASE + (index_u32(j) << (32 - CIDR4_LEN)));
            Ipv4Net::new(a, CIDR4_LEN).expect("valid").into()
        } else {
            let a = Ipv6Addr::from(CIDR6_BASE + ((j as u128) << (128 - CIDR6_LEN)));
            Ipv6Net::new(a, CIDR6_LEN).expect("valid").into()
        }
    }

    /// A host inside CIDR identity `j`, `h` choosing which (never the network address).
    pub fn cidr_host(family: Family, j: usize, h: u64) -> IpAddr {
        match Self::cidr(family, j) {
            IpNet::V4(n) => {
                let host = u32::try_from(1 + h % 14).expect("small");
                Ipv4Addr::from(u32::from(n.network()) + host).into()
            }
            IpNet::V6(n) => Ipv6Addr::from(u128::from(n.network()) + u128::from(h >> 1 | 1)).into(),
        }
    }

    /// Prefix `j` of `family`'s mixed-length set at this size.
    pub fn mixed(self, family: Family, j: usize) -> IpNet {
        super::mixed::set(family, self.per_family()).nets[j]
    }

    /// A host of mixed-length prefix `j` (never in a prefix nested in it).
    pub fn mixed_host(self, family: Family, j: usize, h: u64) -> IpAddr {
        super::mixed::set(family, self.per_family()).host(j, h)
    }

    /// CIDR identity `j` of `family` in `set`.
    pub fn net(self, set: CidrSet, family: Family, j: usize) -> IpNet {
        match set {
            CidrSet::Uniform | CidrSet::Regrouped => Self::cidr(family, j),
            CidrSet::Mixed => self.mixed(family, j),
        }
    }

    /// How many flows per family the established rows record.
    pub fn flows(self) -> usize {
        self.per_family().min(FLOWS)
    }

    /// The peer of recorded flow `i`: a host in a CIDR identity, spread over the set.
    pub fn flow_peer(self, family: Family, i: usize) -> IpAddr {
        let stride = (self.per_family() / self.flows()).max(1);
        Self::cidr_host(family, i * stride, 1)
    }

    /// A key for `keys`: `r` picks it (uniformly over the set when `r` is uniform).
    pub fn pick(self, keys: Keys, family: Family, r: u64) -> IpAddr {
        let n = self.per_family().max(2) as u64;
        #[expect(clippy::cast_possible_truncation, reason = "below per_family")]
        let below = |m: u64| (r % m) as usize;
        let h = r >> 32;
        match keys {
            Keys::Exact | Keys::ExactDst | Keys::ExactOwn => Self::exact(family, below(n)),
            Keys::CidrAllow | Keys::SharedAllow => Self::cidr_host(family, below(n / 2) * 2, h),
            Keys::CidrDeny => Self::cidr_host(family, below(n / 2) * 2 + 1, h),
            Keys::Cidr => Self::cidr_host(family, below(n), h),
            Keys::MixedAllow => self.mixed_host(family, below(n / 2) * 2, h),
            Keys::MixedDeny => self.mixed_host(family, below(n / 2) * 2 + 1, h),
            Keys::Flows => self.flow_peer(family, below(self.flows() as u64)),
            Keys::Unprotected => match family {
                Family::V4 => {
                    let low = u32::try_from(r & 0x3f_ffff).expect("masked to 22 bits");
                    Ipv4Addr::from(V4_UNPROTECTED + low).into()
                }
                _ => Ipv6Addr::from(V6_UNPROTECTED + u128::from(r)).into(),
            },
            Keys::Fixed => match family {
                Family::V6 => LOCAL6.into(),
                _ => LOCAL4.into(),
            },
        }
    }

    /// The hot single flow's key: one fixed member of the set, mid-table.
    pub fn hot(self, keys: Keys, family: Family) -> IpAddr {
        let mid = (self.per_family() / 4) as u64;
        match keys {
            Keys::Flows => self.flow_peer(family, self.flows() / 2),
            _ => self.pick(keys, family, mid | (7 << 32)),
        }
    }
}

/// The policy file the per-packet tables of `set` stand for (see the module doc).
pub fn policy_yaml(space: KeySpace, set: CidrSet) -> String {
    let mut y = String::from("apiVersion: boundary.dev/v1\nidentities:\n");
    // Several SPIFFE IDs, all matched by the one pattern rule: still one identity.
    for sa in 0..16 {
        let _ = write!(
            y,
            "  - id: spiffe://bench.example/sa/{sa}\n    addresses: ["
        );
        let mut first = true;
        for family in [Family::V4, Family::V6] {
            for j in (sa..space.per_family()).step_by(16) {
                let sep = if first { "" } else { ", " };
                let _ = write!(y, "{sep}\"{}\"", KeySpace::exact(family, j));
                first = false;
            }
        }
        y.push_str("]\n");
    }
    let _ = write!(
        y,
        "workloads:\n  - name: {WORKLOAD}\n    addresses: [{LOCAL4}, \"{LOCAL6}\"]\n    ingress:\n      \
         - from: {{ spiffe: \"{SPIFFE_PATTERN}\" }}\n        ports: [\"{PORT_RULE}/udp\"]\n"
    );
    for family in [Family::V4, Family::V6] {
        for j in 0..space.per_family() {
            let _ = write!(
                y,
                "      - from: {{ cidr: \"{}\" }}\n        ports: [\"{PORT_RULE}/udp\"]\n",
                space.net(set, family, j)
            );
            if j % 2 == 1 {
                y.push_str("        action: deny\n");
            }
        }
    }
    let _ = write!(
        y,
        "    egress:\n      - to: {{ spiffe: \"{SPIFFE_PATTERN}\" }}\n        ports: [\"{PORT_RULE}/udp\"]\n"
    );
    y
}

/// Writes `addr` at `off` in `frame`. Checksums are not fixed: the datapath does not verify
/// them.
pub fn set_addr(frame: &mut [u8], off: usize, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => frame[off..off + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => frame[off..off + 16].copy_from_slice(&a.octets()),
    }
}

/// A small, fast, deterministic generator (splitmix64) for drawing keys: quality is ample for
/// spreading lookups over a table, and it keeps the harness free of a rand dependency.
pub struct SplitMix(u64);

impl SplitMix {
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => LOCAL4,
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => LOCAL6,
    }
}

const fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

/// 64-byte UDP frames (the size the notes' figures use), `src -> dst`.
fn udp4_frame(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Vec<u8> {
    packets::v4(src, dst, l4, &[0; 22])
}
fn udp6_frame(src: Ipv6Addr, dst: Ipv6Addr, l4: L4) -> Vec<u8> {
    packets::v6(src, dst, l4, &[0; 2])
}

/// From peer `p` to the workload's `port`.
fn in4(p: IpAddr, port: u16) -> Vec<u8> {
    udp4_frame(v4(p), LOCAL4, udp(FLOW_LOCAL_PORT, port))
}
fn in6(p: IpAddr, port: u16) -> Vec<u8> {
    udp6_frame(v6(p), LOCAL6, udp(FLOW_LOCAL_PORT, port))
}

/// The workload's packet to peer `p` (the TC egress program), and the peer's reply.
pub fn out4(p: IpAddr, port: u16) -> Vec<u8> {
    udp4_frame(LOCAL4, v4(p), udp(FLOW_LOCAL_PORT, port))
}
pub fn out6(p: IpAddr, port: u16) -> Vec<u8> {
    udp6_frame(LOCAL6, v6(p), udp(FLOW_LOCAL_PORT, port))
}
fn reply4(p: IpAddr) -> Vec<u8> {
    udp4_frame(v4(p), LOCAL4, udp(FLOW_PEER_PORT, FLOW_LOCAL_PORT))
}
fn reply6(p: IpAddr) -> Vec<u8> {
    udp6_frame(v6(p), LOCAL6, udp(FLOW_PEER_PORT, FLOW_LOCAL_PORT))
}

/// The frame that records flow `p` in conntrack (egress, no rule, default allow).
pub fn flow_frame(p: IpAddr) -> Vec<u8> {
    match p {
        IpAddr::V4(_) => out4(p, FLOW_PEER_PORT),
        IpAddr::V6(_) => out6(p, FLOW_PEER_PORT),
    }
}

/// A `world` client's frame to `dst` (malformed rows break it; unprotected rows vary `dst`).
fn udp4(dst: IpAddr) -> Vec<u8> {
    udp4_frame(CLIENT4, v4(dst), udp(40_000, 53))
}
fn udp6(dst: IpAddr) -> Vec<u8> {
    udp6_frame(CLIENT6, v6(dst), udp(40_000, 53))
}
fn tcp4(dst: IpAddr) -> Vec<u8> {
    packets::v4(
        CLIENT4,
        v4(dst),
        L4::Tcp {
            sport: 40_000,
            dport: 443,
        },
        b"",
    )
}
fn tcp6(dst: IpAddr) -> Vec<u8> {
    packets::v6(
        CLIENT6,
        v6(dst),
        L4::Tcp {
            sport: 40_000,
            dport: 443,
        },
        b"",
    )
}

fn three_tags(f: &[u8]) -> Vec<u8> {
    packets::push_vlan(&packets::push_vlan(&packets::push_vlan(f, 100), 200), 300)
}

const fn pass(reason: Reason) -> Expect {
    Expect {
        action: XDP_PASS,
        reason,
    }
}

const fn drop(reason: Reason) -> Expect {
    Expect {
        action: XDP_DROP,
        reason,
    }
}

fn row(
    name: &'static str,
    family: Family,
    keys: Keys,
    expect: Expect,
    build: fn(IpAddr) -> Vec<u8>,
) -> PathDef {
    PathDef {
        name,
        family,
        direction: Direction::Ingress,
        kind: Kind::Measured {
            build,
            keys,
            expect,
        },
        lookups: Lookups::of(keys, expect.reason),
    }
}

/// A row of the TC egress program.
fn egress(
    name: &'static str,
    family: Family,
    keys: Keys,
    reason: Reason,
    build: fn(IpAddr) -> Vec<u8>,
) -> PathDef {
    let action = match reason.verdict() {
        Verdict::Pass => TC_NEXT,
        Verdict::Drop => TC_SHOT,
    };
    PathDef {
        name,
        family,
        direction: Direction::Egress,
        kind: Kind::Measured {
            build,
            keys,
            expect: Expect { action, reason },
        },
        lookups: Lookups::of(keys, reason),
    }
}

pub const EXACT_ALLOW: &str = "allow: exact identity (SPIFFE binding, port rule)";
pub const CIDR_ALLOW: &str = "allow: CIDR identity (prefix levels, port rule)";
/// Issue #15's fairness rows (`CidrSet::Regrouped`): the CIDR path with the exact path's
/// sharing (one identity, one policy entry, one rule id for every allowed prefix), and the
/// exact path with the CIDR path's (one of each per binding; past `MAX_RULES` bindings, which
/// only 1M has, the rule ids cycle over the id space, so about 8 bindings share each id there:
/// the label says so).
pub const CIDR_SHARED: &str = "allow: CIDR identity, one shared identity (port rule)";
pub const EXACT_OWN: &str = "allow: exact identity, one identity per binding (1M: rule ids cycle)";
pub const CIDR_MIXED: &str = "allow: CIDR identity, mixed prefix lengths";
pub const DENY_MIXED: &str = "deny: explicit deny rule, mixed prefix lengths";
pub const DENY: &str = "deny: explicit deny rule (CIDR identity)";
pub const MISS: &str = "policy miss (no rule matches, default deny)";
pub const ESTABLISHED: &str = "established reply (conntrack, default deny)";
pub const TC_ALLOW: &str = "TC egress allow: exact identity (port rule)";

/// Every row of the per-packet table, in print order. The established rows record their
/// flows through the TC program first (`per_packet`); the TC rows come last because their
/// random keys churn the conntrack LRU.
#[expect(clippy::too_many_lines, reason = "a table, one entry per path")]
pub fn all() -> Vec<PathDef> {
    use Family::{L2, V4, V6};
    use Keys::{
        Cidr, CidrAllow, CidrDeny, Exact, ExactDst, ExactOwn, Fixed, Flows, MixedAllow, MixedDeny,
        SharedAllow, Unprotected,
    };
    use Reason as R;
    let mut rows = vec![
        row(EXACT_ALLOW, V4, Exact, pass(R::PolicyAllow), |p| {
            in4(p, PORT_RULE)
        }),
        row(EXACT_ALLOW, V6, Exact, pass(R::PolicyAllow), |p| {
            in6(p, PORT_RULE)
        }),
        row(CIDR_ALLOW, V4, CidrAllow, pass(R::PolicyAllow), |p| {
            in4(p, PORT_RULE)
        }),
        row(CIDR_ALLOW, V6, CidrAllow, pass(R::PolicyAllow), |p| {
            in6(p, PORT_RULE)
        }),
        row(CIDR_SHARED, V4, SharedAllow, pass(R::PolicyAllow), |p| {
            in4(p, PORT_RULE)
        }),
        row(CIDR_SHARED, V6, SharedAllow, pass(R::PolicyAllow), |p| {
            in6(p, PORT_RULE)
        }),
        row(EXACT_OWN, V4, ExactOwn, pass(R::PolicyAllow), |p| {
            in4(p, PORT_RULE)
        }),
        row(EXACT_OWN, V6, ExactOwn, pass(R::PolicyAllow), |p| {
            in6(p, PORT_RULE)
        }),
        row(CIDR_MIXED, V4, MixedAllow, pass(R::PolicyAllow), |p| {
            in4(p, PORT_RULE)
        }),
        row(CIDR_MIXED, V6, MixedAllow, pass(R::PolicyAllow), |p| {
            in6(p, PORT_RULE)
        }),
        row(DENY_MIXED, V4, MixedDeny, drop(R::PolicyDeny), |p| {
            in4(p, PORT_RULE)
        }),
        row(DENY_MIXED, V6, MixedDeny, drop(R::PolicyDeny), |p| {
            in6(p, PORT_RULE)
        }),
        row(DENY, V4, CidrDeny, drop(R::PolicyDeny), |p| {
            in4(p, PORT_RULE)
        }),
        row(DENY, V6, CidrDeny, drop(R::PolicyDeny), |p| {
            in6(p, PORT_RULE)
        }),
        row(MISS, V4, Cidr, drop(R::DefaultDeny), |p| {
            in4(p, PORT_NO_RULE)
        }),
        row(MISS, V6, Cidr, drop(R::DefaultDeny), |p| {
            in6(p, PORT_NO_RULE)
        }),
        row(ESTABLISHED, V4, Flows, pass(R::Established), reply4),
        row(ESTABLISHED, V6, Flows, pass(R::Established), reply6),
        row(
            "unprotected (no workload owns dst)",
            V4,
            Unprotected,
            pass(R::Unprotected),
            udp4,
        ),
        row(
            "unprotected (no workload owns dst)",
            V6,
            Unprotected,
            pass(R::Unprotected),
            udp6,
        ),
        row(
            "non-IP (ARP, default pass)",
            L2,
            Fixed,
            pass(R::NonIpPass),
            |_| packets::arp(CLIENT4, LOCAL4),
        ),
        // --- malformed ---------------------------------------------------------------------
        row(
            "malformed: vlan_truncated",
            L2,
            Fixed,
            drop(R::VlanTruncated),
            |d| {
                let mut f = udp4(d);
                f.truncate(ETH_LEN + 2);
                f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: vlan_too_deep (3 tags)",
            V4,
            Fixed,
            drop(R::VlanTooDeep),
            |d| three_tags(&udp4(d)),
        ),
        row(
            "malformed: vlan_too_deep (3 tags)",
            V6,
            Fixed,
            drop(R::VlanTooDeep),
            |d| three_tags(&udp6(d)),
        ),
        row(
            "malformed: ipv4_truncated",
            V4,
            Fixed,
            drop(R::Ipv4Truncated),
            |d| {
                let mut f = udp4(d);
                f.truncate(ETH_LEN + 12);
                f
            },
        ),
        row(
            "malformed: ipv4_bad_version",
            V4,
            Fixed,
            drop(R::Ipv4BadVersion),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x65;
                f
            },
        ),
        row(
            "malformed: ipv4_bad_ihl",
            V4,
            Fixed,
            drop(R::Ipv4BadIhl),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x44;
                f
            },
        ),
        row(
            "malformed: ipv4_options_truncated",
            V4,
            Fixed,
            drop(R::Ipv4OptionsTruncated),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN] = 0x4f;
                f
            },
        ),
        row(
            "malformed: ipv4_bad_total_length",
            V4,
            Fixed,
            drop(R::Ipv4BadTotalLength),
            |d| {
                let mut f = udp4(d);
                let total = u16::try_from(f.len() - ETH_LEN + 1).expect("fits");
                f[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&total.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: ipv6_truncated",
            V6,
            Fixed,
            drop(R::Ipv6Truncated),
            |d| {
                let mut f = udp6(d);
                f.truncate(ETH_LEN + 30);
                f
            },
        ),
        row(
            "malformed: ipv6_bad_version",
            V6,
            Fixed,
            drop(R::Ipv6BadVersion),
            |d| {
                let mut f = udp6(d);
                f[ETH_LEN] = 0x45;
                f
            },
        ),
        row(
            "malformed: ipv6_bad_payload_length",
            V6,
            Fixed,
            drop(R::Ipv6BadPayloadLength),
            |d| {
                let mut f = udp6(d);
                let len = u16::try_from(f.len() - ETH_LEN - IPV6_LEN + 1).expect("fits");
                f[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&len.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: ipv6_ext_truncated",
            V6,
            Fixed,
            drop(R::Ipv6ExtTruncated),
            |d| {
                let mut f = packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts]);
                // Header length 21 units of 8 bytes: far past the end of the packet.
                f[ETH_LEN + IPV6_LEN + 1] = 20;
                f
            },
        ),
        row(
            "malformed: ipv6_too_many_ext_headers (9)",
            V6,
            Fixed,
            drop(R::Ipv6TooManyExtHeaders),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts; 9]),
        ),
        row(
            "malformed: ipv6_hop_by_hop_not_first",
            V6,
            Fixed,
            drop(R::Ipv6HopByHopNotFirst),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::DestOpts, Ext::HopByHop]),
        ),
        row(
            "malformed: ipv6_unsupported_ext_header",
            V6,
            Fixed,
            drop(R::Ipv6UnsupportedExtHeader),
            |d| packets::with_ipv6_exts(&udp6(d), &[Ext::Other(135)]),
        ),
        row(
            "malformed: tcp_bad_data_offset",
            V4,
            Fixed,
            drop(R::TcpBadDataOffset),
            |d| {
                let mut f = tcp4(d);
                f[ETH_LEN + IPV4_LEN + 12] = 0x40;
                f
            },
        ),
        row(
            "malformed: tcp_bad_data_offset",
            V6,
            Fixed,
            drop(R::TcpBadDataOffset),
            |d| {
                let mut f = tcp6(d);
                f[ETH_LEN + IPV6_LEN + 12] = 0x40;
                f
            },
        ),
        row(
            "malformed: tcp_truncated (options)",
            V4,
            Fixed,
            drop(R::TcpTruncated),
            |d| {
                let mut f = tcp4(d);
                f[ETH_LEN + IPV4_LEN + 12] = 0xf0;
                f
            },
        ),
        row(
            "malformed: tcp_truncated (options)",
            V6,
            Fixed,
            drop(R::TcpTruncated),
            |d| {
                let mut f = tcp6(d);
                f[ETH_LEN + IPV6_LEN + 12] = 0xf0;
                f
            },
        ),
        row(
            "malformed: udp_truncated",
            V4,
            Fixed,
            drop(R::UdpTruncated),
            |d| packets::cut_v4(udp4(d), IPV4_LEN + 4),
        ),
        row(
            "malformed: udp_truncated",
            V6,
            Fixed,
            drop(R::UdpTruncated),
            |d| packets::cut_v6(udp6(d), 4),
        ),
        row(
            "malformed: udp_bad_length",
            V4,
            Fixed,
            drop(R::UdpBadLength),
            |d| {
                let mut f = udp4(d);
                f[ETH_LEN + IPV4_LEN + 4..ETH_LEN + IPV4_LEN + 6]
                    .copy_from_slice(&4u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: udp_bad_length",
            V6,
            Fixed,
            drop(R::UdpBadLength),
            |d| {
                let mut f = udp6(d);
                f[ETH_LEN + IPV6_LEN + 4..ETH_LEN + IPV6_LEN + 6]
                    .copy_from_slice(&4u16.to_be_bytes());
                f
            },
        ),
        row(
            "malformed: icmp_truncated",
            V4,
            Fixed,
            drop(R::IcmpTruncated),
            |d| {
                packets::cut_v4(
                    packets::v4(CLIENT4, v4(d), L4::IcmpEcho, b"ping"),
                    IPV4_LEN + 4,
                )
            },
        ),
        row(
            "malformed: icmpv6_truncated",
            V6,
            Fixed,
            drop(R::Icmpv6Truncated),
            |d| packets::cut_v6(packets::v6(CLIENT6, v6(d), L4::IcmpEcho, b"ping"), 4),
        ),
        row(
            "malformed: fragment_tiny",
            V4,
            Fixed,
            drop(R::FragmentTiny),
            |d| {
                let mut f = packets::cut_v4(tcp4(d), IPV4_LEN + 10);
                packets::set_ipv4_fragment(&mut f, 0, true);
                f
            },
        ),
        row(
            "malformed: fragment_tiny",
            V6,
            Fixed,
            drop(R::FragmentTiny),
            |d| {
                let f = packets::with_ipv6_exts(
                    &tcp6(d),
                    &[Ext::Fragment {
                        offset: 0,
                        more: true,
                    }],
                );
                packets::cut_v6(f, 8 + 10)
            },
        ),
        row(
            "malformed: fragment_overlap",
            V4,
            Fixed,
            drop(R::FragmentOverlap),
            |d| {
                let mut f = tcp4(d);
                packets::set_ipv4_fragment(&mut f, 1, false);
                f
            },
        ),
        row(
            "malformed: fragment_overlap",
            V6,
            Fixed,
            drop(R::FragmentOverlap),
            |d| {
                packets::with_ipv6_exts(
                    &tcp6(d),
                    &[Ext::Fragment {
                        offset: 1,
                        more: false,
                    }],
                )
            },
        ),
    ];
    rows.extend([
        egress(TC_ALLOW, V4, ExactDst, R::PolicyAllow, |p| {
            out4(p, PORT_RULE)
        }),
        egress(TC_ALLOW, V6, ExactDst, R::PolicyAllow, |p| {
            out6(p, PORT_RULE)
        }),
    ]);
    rows
}
