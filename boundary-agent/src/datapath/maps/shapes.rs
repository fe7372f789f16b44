//! What every pinned map must look like, checked before aya reuses a pin blindly.

use std::mem::size_of;

use aya::maps::MapInfo;
use boundary_common::maps::{
    self as abi, AddrKey, CIDR_KEY_LEN, CIDRS_MAP, CONFIG_MAP, CONNTRACK_MAP, COUNTERS_MAP,
    CounterRow, DatapathConfig, ENDPOINTS_MAP, EVENT_BUDGET_MAP, EVENTS_MAP, Endpoint, EndpointKey,
    EventBudget, FAILSAFE_KEY_LEN, FAILSAFE_MAP, FRAGMENTS_MAP, FlowKey, FlowValue, FragKey,
    FragValue, IDENTITIES_MAP, NAMES_MAP, POLICY_MAP, PolicyKey, PolicyValue, RANGE_KEY_LEN,
    RANGES_MAP, RULE_HITS_MAP, WorkloadName,
};

use crate::datapath::pins::PinLayout;

use super::{MapsError, map_err};

#[expect(
    clippy::cast_possible_truncation,
    reason = "ABI sizes are small and asserted in boundary-common"
)]
const fn size(n: usize) -> u32 {
    n as u32
}

/// What every map must look like: (name, key size, value size, max entries).
pub fn expected_shapes(max_workloads: u32) -> [(&'static str, u32, u32, u32); 19] {
    [
        (CONFIG_MAP, 4, size(size_of::<DatapathConfig>()), 1),
        (
            ENDPOINTS_MAP,
            size(size_of::<EndpointKey>()),
            size(size_of::<Endpoint>()),
            abi::MAX_ENDPOINTS,
        ),
        (NAMES_MAP, 4, size(size_of::<WorkloadName>()), max_workloads),
        (
            COUNTERS_MAP,
            4,
            size(size_of::<CounterRow>()),
            max_workloads * 2,
        ),
        (
            IDENTITIES_MAP,
            size(size_of::<AddrKey>()),
            4,
            abi::MAX_IDENTITIES,
        ),
        (CIDRS_MAP, 4 + size(CIDR_KEY_LEN), 4, abi::MAX_CIDRS),
        (
            POLICY_MAP,
            size(size_of::<PolicyKey>()),
            size(size_of::<PolicyValue>()),
            abi::MAX_POLICY,
        ),
        (
            RANGES_MAP,
            4 + size(RANGE_KEY_LEN),
            size(size_of::<PolicyValue>()),
            abi::MAX_RANGES,
        ),
        (
            FAILSAFE_MAP,
            4 + size(FAILSAFE_KEY_LEN),
            4,
            abi::MAX_FAILSAFE,
        ),
        (
            CONNTRACK_MAP,
            size(size_of::<FlowKey>()),
            size(size_of::<FlowValue>()),
            abi::MAX_FLOWS,
        ),
        (
            FRAGMENTS_MAP,
            size(size_of::<FragKey>()),
            size(size_of::<FragValue>()),
            abi::MAX_FRAGMENTS,
        ),
        (RULE_HITS_MAP, 4, 8, abi::MAX_RULES),
        (EVENTS_MAP, 0, 0, abi::EVENTS_RING_BYTES),
        (EVENT_BUDGET_MAP, 4, size(size_of::<EventBudget>()), 1),
        (abi::PORTS_MAP, 4, 8, abi::PORTS_ENTRIES),
        (abi::CT_INSERTS_MAP, 4, 8, 1),
        (abi::PROGS_MAP, 4, 4, abi::PROGS_ENTRIES),
        (
            abi::CONNTRACK_ACCEPTED_MAP,
            size(size_of::<FlowKey>()),
            size(size_of::<FlowValue>()),
            abi::MAX_FLOWS,
        ),
        (abi::CT_ACCEPTED_INSERTS_MAP, 4, 8, 1),
    ]
}

/// Checks that maps already pinned under `layout` have the shapes this agent needs: aya reuses
/// a pinned map without comparing its attributes, and a mismatch would corrupt it.
pub fn check_pinned(layout: &PinLayout, max_workloads: u32) -> Result<(), MapsError> {
    for (name, key, value, entries) in expected_shapes(max_workloads) {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let found = (info.key_size(), info.value_size(), info.max_entries());
        if found != (key, value, entries) {
            return Err(MapsError::Incompatible {
                path: path.display().to_string(),
                found: format!("key {}B, value {}B, {} entries", found.0, found.1, found.2),
                wanted: format!("key {key}B, value {value}B, {entries} entries"),
            });
        }
    }
    Ok(())
}
