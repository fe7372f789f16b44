//! The ABI keys of compiled entries, as the datapath looks them up.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use boundary_common::maps::{
    self as abi, AddrKey, CIDR_KEY_FIXED_BITS, CIDR_KEY_LEN, EndpointKey, FAILSAFE_KEY_FIXED_BITS,
    FAILSAFE_KEY_LEN, FAMILY_IPV4, FAMILY_IPV6, PolicyKey, RANGE_KEY_FIXED_BITS, RANGE_KEY_LEN,
    cidr_key_data, failsafe_key_data, range_key_data,
};
use ipnet::IpNet;

use crate::policy::{
    Tables,
    compile::{RangeKey, RuleKey},
};

pub(super) fn family_addr(addr: IpAddr) -> (u8, [u8; 16]) {
    match addr {
        IpAddr::V4(a) => {
            let mut out = [0u8; 16];
            out[..4].copy_from_slice(&a.octets());
            (FAMILY_IPV4, out)
        }
        IpAddr::V6(a) => (FAMILY_IPV6, a.octets()),
    }
}

/// The address a key's family and 16 bytes stand for (`None` for an unknown family).
pub(super) fn addr_of(family: u8, a: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::from([a[0], a[1], a[2], a[3]])),
        FAMILY_IPV6 => Some(IpAddr::from(a)),
        _ => None,
    }
}

pub(super) fn addr_bits(addr: IpAddr) -> u32 {
    if addr.is_ipv4() { 32 } else { 128 }
}

pub(super) fn addr_key(generation: u8, addr: IpAddr) -> AddrKey {
    let (family, a) = family_addr(addr);
    AddrKey::new(generation, family, a)
}

/// The endpoint key of `addr` on interface `ifindex` (`IFINDEX_ANY`: every interface).
pub(super) fn endpoint_key(generation: u8, addr: IpAddr, ifindex: u32) -> EndpointKey {
    let (family, a) = family_addr(addr);
    EndpointKey::new(generation, family, ifindex, a)
}

/// The endpoint keys of `t` in generation `g`: those on every interface, then those on one, in
/// the order of their values in `Tables`.
pub(super) fn endpoint_keys(g: u8, t: &Tables) -> Vec<EndpointKey> {
    t.endpoints
        .keys()
        .map(|a| endpoint_key(g, *a, abi::IFINDEX_ANY))
        .chain(
            t.interface_endpoints
                .keys()
                .map(|&(a, ifindex)| endpoint_key(g, a, ifindex)),
        )
        .collect()
}

pub(super) fn cidr_key(generation: u8, net: IpNet) -> Key<[u8; CIDR_KEY_LEN]> {
    let (family, a) = family_addr(net.network());
    Key::new(
        CIDR_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        cidr_key_data(generation, family, a),
    )
}

/// The key of a region of the prefix levels: `net` is the region, its length the level's.
pub(super) fn prefix_key(generation: u8, net: IpNet) -> abi::PrefixKey {
    let (family, a) = family_addr(net.network());
    abi::PrefixKey::new(generation, family, net.prefix_len(), &a)
}

pub(super) fn policy_key(generation: u8, k: &RuleKey) -> PolicyKey {
    PolicyKey {
        generation,
        direction: k.direction,
        proto: k.proto,
        pad: 0,
        slot: k.slot,
        port: k.port,
        identity: k.identity,
    }
}

pub(super) fn range_key(generation: u8, k: &RangeKey) -> Key<[u8; RANGE_KEY_LEN]> {
    Key::new(
        RANGE_KEY_FIXED_BITS + u32::from(k.bits),
        range_key_data(generation, k.direction, k.proto, k.slot, k.identity, k.port),
    )
}

pub(super) fn failsafe_key(
    generation: u8,
    proto: u8,
    port: u16,
    net: IpNet,
) -> Key<[u8; FAILSAFE_KEY_LEN]> {
    let (family, a) = family_addr(net.network());
    Key::new(
        FAILSAFE_KEY_FIXED_BITS + u32::from(net.prefix_len()),
        failsafe_key_data(generation, family, proto, port, a),
    )
}

/// A port bitmap (1024 words) with a bit for each port but `PORT_ANY`.
pub(super) fn port_bitmap(ports: impl Iterator<Item = u16>) -> Vec<u64> {
    let mut words = vec![0u64; abi::PORT_WORDS as usize];
    for p in ports.filter(|p| *p != abi::PORT_ANY) {
        words[usize::from(p >> 6)] |= 1 << (p & 63);
    }
    words
}
