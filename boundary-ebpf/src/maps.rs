//! Map definitions. Layouts come from `boundary_common::maps`; the agent sizes, pins and fills
//! these maps.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use boundary_common::maps::{
    CounterRow, DatapathConfig, Endpoint, EndpointKey, MAX_ENDPOINTS, MAX_WORKLOADS, WorkloadName,
};

#[map(name = "BND_CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

#[map(name = "BND_ENDPOINTS")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint> = HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Read by the agent and the CLI only: it makes the pinned counters self-describing.
#[map(name = "BND_NAMES")]
pub static NAMES: Array<WorkloadName> = Array::with_max_entries(MAX_WORKLOADS, 0);

#[map(name = "BND_COUNTERS")]
pub static COUNTERS: PerCpuArray<CounterRow> = PerCpuArray::with_max_entries(MAX_WORKLOADS * 2, 0);
