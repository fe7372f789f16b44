//! The mixed-length CIDR sets of issue #15's honesty rows: N prefixes per family spread over a
//! realistic length distribution, where the single-length sets (`paths::KeySpace::cidr`:
//! /28 IPv4, /64 IPv6) flatter any scheme that pays per prefix length in use.
//!
//! - IPv4 like a BGP table: about 55 % /24, the rest mostly /16../23 (weighted towards /22 and
//!   /23 as real tables are), a few /11../15, and some /25../32.
//! - IPv6 over /29../64: mostly /32 and /48, then /40, /44, /36, /56, /64, a few /29../31.
//!
//! Deterministic (seeded lengths), laid out without overlap, longest sizes first so that every
//! prefix falls on its own boundary with no gap (IPv4 from 11.0.0.0 upwards, IPv6 inside
//! `fd80::/9`: ranges no other set of the bench uses). Nesting: every 50th prefix lies inside
//! the one before it (two bits longer, in its third quarter), with its own identity: peers in
//! it match both rules, the inner one is a deny inside an allow. Hosts of an outer prefix are
//! drawn from its first half, so they never fall in its nested prefix.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Mutex, OnceLock},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::paths::{Family, SplitMix};

const V4_BASE: u32 = u32::from_be_bytes([11, 0, 0, 0]);
/// Nothing may reach 127.0.0.0 (checked when a set is built).
const V4_END: u32 = u32::from_be_bytes([127, 0, 0, 0]);
const V6_BASE: u128 = 0xfd80_u128 << 112;
const V6_END: u128 = 0xfe00_u128 << 112;
/// One prefix in this many is nested in the one before it.
pub const NEST_EVERY: usize = 50;

/// (length, weight in 1/10,000 of the prefixes). Short IPv4 prefixes are fewer than in a real
/// table (where most of them cover more specific ones): laid out side by side, as here, a
/// real share of /8../15 would not fit in the address space at 1M prefixes.
const V4_LENGTHS: &[(u8, u32)] = &[
    (11, 1),
    (12, 1),
    (13, 2),
    (14, 4),
    (15, 6),
    (16, 100),
    (17, 60),
    (18, 100),
    (19, 250),
    (20, 400),
    (21, 450),
    (22, 1100),
    (23, 1000),
    (24, 5532),
    (25, 200),
    (26, 200),
    (27, 150),
    (28, 150),
    (29, 100),
    (30, 60),
    (31, 34),
    (32, 100),
];
const V6_LENGTHS: &[(u8, u32)] = &[
    (29, 100),
    (30, 50),
    (31, 50),
    (32, 3000),
    (36, 600),
    (40, 1000),
    (44, 900),
    (48, 3000),
    (56, 500),
    (64, 800),
];

/// One family's set: `nets[j]` is prefix `j`, `hosts[j]` how many addresses from its network
/// address on are its own (not in a nested prefix).
pub struct Set {
    pub nets: Vec<IpNet>,
    hosts: Vec<u128>,
}

impl Set {
    /// A host of prefix `j` (never in a prefix nested in it), `h` choosing which.
    pub fn host(&self, j: usize, h: u64) -> IpAddr {
        let off = u128::from(h) % self.hosts[j];
        match self.nets[j] {
            IpNet::V4(n) => {
                let off = u32::try_from(off).expect("below an IPv4 prefix's size");
                Ipv4Addr::from(u32::from(n.network()) + off).into()
            }
            IpNet::V6(n) => Ipv6Addr::from(u128::from(n.network()) + off).into(),
        }
    }

    /// How many prefixes of each length, shortest first.
    pub fn histogram(&self) -> Vec<(u8, usize)> {
        let mut h = std::collections::BTreeMap::new();
        for n in &self.nets {
            *h.entry(n.prefix_len()).or_insert(0) += 1;
        }
        h.into_iter().collect()
    }
}

fn draw(table: &[(u8, u32)], r: u64) -> u8 {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut x = u32::try_from(r % u64::from(total)).expect("below total");
    for &(len, w) in table {
        if x < w {
            return len;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

/// Builds `family`'s set of `n` prefixes.
fn build(family: Family, n: usize) -> Set {
    let (table, bits, base, end): (&[(u8, u32)], u8, u128, u128) = match family {
        Family::V4 => (V4_LENGTHS, 32, u128::from(V4_BASE), u128::from(V4_END)),
        _ => (V6_LENGTHS, 128, V6_BASE, V6_END),
    };
    let mut rng = SplitMix::new(0x6d69_7865_6400 ^ n as u64 ^ u64::from(bits));
    let size = |len: u8| 1u128 << (bits - len);
    // Lengths of the outer prefixes; a nested one is two bits longer than its outer, which
    // must leave room for it.
    let nested = |j: usize| j % NEST_EVERY == NEST_EVERY - 1;
    let mut lens: Vec<u8> = (0..n).map(|_| draw(table, rng.next_u64())).collect();
    for (j, len) in lens.iter_mut().enumerate() {
        if j + 1 < n && nested(j + 1) && *len > bits - 2 {
            *len = if family == Family::V4 { 24 } else { 48 };
        }
    }
    // Longest sizes first: every address is then aligned to its own prefix size.
    let mut order: Vec<usize> = (0..n).filter(|&j| !nested(j)).collect();
    order.sort_by_key(|&j| lens[j]);
    let mut addr = vec![0u128; n];
    let mut cursor = base;
    for j in order {
        addr[j] = cursor;
        cursor += size(lens[j]);
    }
    assert!(
        cursor <= end,
        "the {family:?} mixed set does not fit its range"
    );
    let mut hosts: Vec<u128> = lens.iter().map(|&l| size(l)).collect();
    for j in (0..n).filter(|&j| nested(j)) {
        let outer = j - 1;
        lens[j] = lens[outer] + 2;
        addr[j] = addr[outer] + size(lens[outer]) / 2;
        hosts[j] = size(lens[j]);
        hosts[outer] = (size(lens[outer]) / 2).max(1);
    }
    let nets = (0..n)
        .map(|j| match family {
            Family::V4 => {
                let a = Ipv4Addr::from(u32::try_from(addr[j]).expect("an IPv4 address"));
                IpNet::V4(Ipv4Net::new(a, lens[j]).expect("valid"))
            }
            _ => IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr[j]), lens[j]).expect("valid")),
        })
        .collect();
    Set { nets, hosts }
}

/// `family`'s set of `n` prefixes, built once per (family, n) for the whole run.
pub fn set(family: Family, n: usize) -> &'static Set {
    static SETS: OnceLock<Mutex<HashMap<(bool, usize), &'static Set>>> = OnceLock::new();
    let v4 = family == Family::V4;
    let mut sets = SETS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .expect("not poisoned");
    sets.entry((v4, n))
        .or_insert_with(|| Box::leak(Box::new(build(family, n))))
}
