//! The live maps answer the reference evaluator's questions (`trace` on a running host), read
//! through the datapath's point reads, all under the generation that was live when the
//! snapshot was taken.

use std::net::IpAddr;

use boundary_common::maps::{Endpoint, PolicyValue};

use crate::{
    datapath::{Maps, maps::MapsError},
    policy::{
        Bucket,
        compile::{RangeKey, RuleKey},
    },
};

use super::Lookup;

/// The live maps under one generation.
pub struct Live<'a> {
    maps: &'a Maps,
    generation: u8,
}

impl<'a> Live<'a> {
    /// Reads the live generation once: every answer is about it.
    pub fn new(maps: &'a Maps) -> Result<Self, MapsError> {
        Ok(Self {
            maps,
            generation: maps.datapath_config()?.generation,
        })
    }

    /// The generation every answer is about.
    pub fn generation(&self) -> u8 {
        self.generation
    }
}

impl Lookup for Live<'_> {
    fn endpoint(&self, addr: IpAddr, ifindex: u32) -> Option<Endpoint> {
        self.maps.live_endpoint(self.generation, addr, ifindex)
    }

    fn exact_identity(&self, addr: IpAddr) -> Option<u32> {
        self.maps.live_exact_identity(self.generation, addr)
    }

    fn cidr_identity(&self, addr: IpAddr) -> Option<u32> {
        self.maps.live_cidr_identity(self.generation, addr)
    }

    fn policy(&self, key: &RuleKey) -> Option<PolicyValue> {
        self.maps.live_policy(self.generation, key)
    }

    fn range(&self, key: &RangeKey) -> Option<PolicyValue> {
        self.maps.live_range(self.generation, key)
    }

    fn failsafe(&self, proto: u8, port: u16, peer: IpAddr) -> bool {
        self.maps.live_failsafe(self.generation, proto, port, peer)
    }

    fn bucket(&self, rule: u32) -> Option<Bucket> {
        self.maps.live_bucket(self.generation, rule)
    }
}
