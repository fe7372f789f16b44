//! Point reads of one generation: what the datapath would find for an address, a rule key or
//! a failsafe entry. `trace` on a running host asks them, all under the generation it read
//! once (the reference evaluator's `Lookup` for the live maps is in `reference/live.rs`), so
//! one answer never mixes two policies. LPM lookups through the syscall are longest-prefix
//! matches, as in the datapath.

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use boundary_common::maps::{
    CIDR_KEY_FIXED_BITS, Endpoint, FAILSAFE_KEY_FIXED_BITS, FAMILY_IPV4, IDENTITY_WORLD, NO_BUCKET,
    PREFIX_LEVELS_NONE, PREFIX_LEVELS_TRIE, PolicyValue, PrefixKey, cidr_key_data,
    failsafe_key_data, family_index, rule_bucket_index,
};

use crate::policy::compile::{RangeKey, RuleKey};

use super::{
    Maps,
    keys::{addr_bits, addr_key, addr_of, endpoint_key, family_addr, policy_key, range_key},
};

impl Maps {
    /// The endpoint entry of `addr` on interface `ifindex` (`IFINDEX_ANY`: the entry for every
    /// interface), as one lookup finds it.
    pub fn live_endpoint(&self, generation: u8, addr: IpAddr, ifindex: u32) -> Option<Endpoint> {
        self.endpoints
            .get(&endpoint_key(generation, addr, ifindex), 0)
            .ok()
    }

    /// Every endpoint entry of `generation`: (address, interface index or
    /// `IFINDEX_ANY`, endpoint). One read per entry: for `status` and `trace`, not for a loop.
    pub fn live_endpoints(&self, generation: u8) -> Vec<(IpAddr, u32, Endpoint)> {
        self.endpoints
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, _)| k.generation == generation)
            .filter_map(|(k, e)| Some((addr_of(k.family, k.addr)?, k.ifindex, e)))
            .collect()
    }

    /// The identity bound to exactly `addr`, unless the binding has expired.
    pub fn live_exact_identity(&self, generation: u8, addr: IpAddr) -> Option<u32> {
        let v = self.identities.get(&addr_key(generation, addr), 0).ok()?;
        v.live_at(super::monotonic_ns()).then_some(v.id)
    }

    /// The identity of the longest CIDR holding `addr`, found as the datapath finds it: down
    /// the prefix levels of `generation`, or in the trie for a family left there.
    pub fn live_cidr_identity(&self, generation: u8, addr: IpAddr) -> Option<u32> {
        let (family, a) = family_addr(addr);
        let levels = self.prefix_levels(generation).ok()?;
        let count = levels.count[family_index(family)];
        if count == PREFIX_LEVELS_NONE {
            return None;
        }
        if count != PREFIX_LEVELS_TRIE {
            let lens = if family == FAMILY_IPV4 {
                &levels.v4
            } else {
                &levels.v6
            };
            let mut id = IDENTITY_WORLD;
            for &len in lens.iter().take(usize::from(count)) {
                let key = PrefixKey::new(generation, family, len, &a);
                let Ok(v) = self.prefixes.get(&key, 0) else {
                    break;
                };
                id = v.id;
                if v.deeper == 0 {
                    break;
                }
            }
            return (id != IDENTITY_WORLD).then_some(id);
        }
        let key = Key::new(
            CIDR_KEY_FIXED_BITS + addr_bits(addr),
            cidr_key_data(generation, family, a),
        );
        self.cidrs.get(&key, 0).ok().map(|v| v.id)
    }

    pub fn live_policy(&self, generation: u8, key: &RuleKey) -> Option<PolicyValue> {
        self.policy.get(&policy_key(generation, key), 0).ok()
    }

    pub fn live_range(&self, generation: u8, key: &RangeKey) -> Option<PolicyValue> {
        self.ranges.get(&range_key(generation, key), 0).ok()
    }

    /// Whether a failsafe entry covers (`proto`, local `port`, `peer`).
    pub fn live_failsafe(&self, generation: u8, proto: u8, port: u16, peer: IpAddr) -> bool {
        let (family, a) = family_addr(peer);
        let key = Key::new(
            FAILSAFE_KEY_FIXED_BITS + addr_bits(peer),
            failsafe_key_data(generation, family, proto, port, a),
        );
        self.failsafe.get(&key, 0).is_ok()
    }

    /// The bucket `rule` pays into in `generation` (see `buckets.rs`), if it has a limit.
    pub fn live_rule_bucket(&self, generation: u8, rule: u32) -> Option<u32> {
        self.rule_buckets
            .get(&rule_bucket_index(generation, rule), 0)
            .ok()
            .filter(|&b| b != NO_BUCKET)
    }
}
