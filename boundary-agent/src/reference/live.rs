//! The live maps answer the reference evaluator's questions (`trace` on a running host), read
//! through the datapath's point reads of the live generation.

use std::net::IpAddr;

use boundary_common::maps::{Endpoint, PolicyValue};

use crate::{
    datapath::Maps,
    policy::compile::{RangeKey, RuleKey},
};

use super::Lookup;

impl Lookup for Maps {
    fn endpoint(&self, addr: IpAddr, ifindex: u32) -> Option<Endpoint> {
        self.live_endpoint(addr, ifindex)
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.live_exact_identity(addr)
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        self.live_cidr_identity(addr)
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.live_policy(key)
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        self.live_range(key)
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        self.live_failsafe(proto, port, peer)
    }
}
