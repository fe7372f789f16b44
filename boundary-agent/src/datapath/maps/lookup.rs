//! The live maps answer the questions of the reference evaluator (`trace` on a running host).

use std::net::IpAddr;

use aya::maps::lpm_trie::Key;
use boundary_common::maps::{
    CIDR_KEY_FIXED_BITS, Endpoint, FAILSAFE_KEY_FIXED_BITS, PolicyValue, cidr_key_data,
    failsafe_key_data,
};

use crate::{
    policy::compile::{RangeKey, RuleKey},
    reference::Lookup,
};

use super::{
    Maps,
    keys::{addr_bits, addr_key, family_addr, policy_key, range_key},
};

/// The live maps answer the same questions as compiled tables (`trace` on a running host).
/// LPM lookups through the syscall are longest-prefix matches, as in the datapath.
impl Lookup for Maps {
    fn endpoint(&self, addr: IpAddr) -> Option<Endpoint> {
        self.endpoints
            .get(&addr_key(self.generation(), addr), 0)
            .ok()
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.identities
            .get(&addr_key(self.generation(), addr), 0)
            .ok()
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        let (family, a) = family_addr(addr);
        let key = Key::new(
            CIDR_KEY_FIXED_BITS + addr_bits(addr),
            cidr_key_data(self.generation(), family, a),
        );
        self.cidrs.get(&key, 0).ok()
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.policy.get(&policy_key(self.generation(), key), 0).ok()
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        self.ranges.get(&range_key(self.generation(), key), 0).ok()
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        let (family, a) = family_addr(peer);
        let key = Key::new(
            FAILSAFE_KEY_FIXED_BITS + addr_bits(peer),
            failsafe_key_data(self.generation(), family, proto, port, a),
        );
        self.failsafe.get(&key, 0).is_ok()
    }
}
