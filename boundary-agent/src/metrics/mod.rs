//! Prometheus metrics and the agent's HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! Datapath figures are read from the maps at scrape time; agent figures come from
//! [`AgentState`], which the run loop updates. Labels are bounded: workload, direction,
//! verdict, reason, rule, interface, map — never a peer address or a peer's SPIFFE ID.

mod collector;
mod http;
pub mod identity;
mod limits;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

pub use collector::DatapathCollector;
pub use http::{
    DEADLINE, HEADER_TIMEOUT, HttpError, MAX_CONNECTIONS, MAX_HEADER_BYTES, SCRAPES, serve,
};
use prometheus_client::registry::Registry;

use crate::{datapath::Maps, policy::ratelimit::RateLimit};

/// Every metric family the agent exports, as scraped (the Grafana dashboard may use only these).
pub const FAMILIES: &[&str] = &[
    "boundary_packets_total",
    "boundary_packet_bytes_total",
    "boundary_rule_hits_total",
    "boundary_rule_rate_limited_packets_total",
    "boundary_rule_rate_limit_packets_per_second",
    "boundary_rule_rate_limit_burst_packets",
    "boundary_rule_rate_limit_bytes_per_second",
    "boundary_rule_rate_limit_burst_bytes",
    "boundary_rule_rate_limit_sources",
    "boundary_rule_rate_limit_evictions_total",
    "boundary_drop_events_sent_total",
    "boundary_drop_events_lost_total",
    "boundary_identity_bindings",
    "boundary_policy_generation",
    "boundary_policy_apply_duration_seconds",
    "boundary_policy_reloads_total",
    "boundary_xdp_attach_mode",
    "boundary_ingress_hook",
    "boundary_interface_protected",
    "boundary_interfaces_unprotected_up",
    "boundary_map_entries",
    "boundary_map_capacity",
    "boundary_address_table_keys",
    "boundary_address_table_slots",
    "boundary_build_info",
];

/// What the agent knows that the maps do not say.
#[derive(Debug, Default)]
pub struct AgentState {
    /// Programs attached and a policy generation live.
    pub ready: bool,
    /// Every interface the config selects (present, or named exactly and absent).
    pub interfaces: Vec<InterfaceStatus>,
    /// Rule id -> (workload, direction, rule name), from the installed policy.
    /// (rule id, workload, direction, rule name) of every installed rule.
    pub rules: Vec<(u32, String, &'static str, String)>,
    /// Rule id -> its rate limit, for the installed rules that have one.
    pub limits: BTreeMap<u32, RateLimit>,
    pub policy_generation: u8,
    pub last_apply_seconds: f64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Policies applied with `--confirm` and rolled back for want of a confirmation.
    pub rollbacks: u64,
    /// A policy applied with `--confirm` awaits its confirmation.
    pub pending_confirmation: bool,
    pub static_bindings: u64,
    /// Bindings earned over mTLS and live.
    pub earned_bindings: u64,
    /// Entries one generation of the installed policy holds, per map.
    pub map_entries: Vec<(&'static str, u64)>,
    /// How the live generation's static bindings and prefix regions fit in the address
    /// table (`None` before a policy is applied).
    pub address_table: Option<crate::datapath::maps::TableFill>,
}

/// An interface the agent config selects, as last reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub name: String,
    /// The interface exists (an exact name may be absent).
    pub present: bool,
    /// Administratively up.
    pub up: bool,
    /// (ingress hook `xdp`/`tc`, mode `native`/`generic`/`tcx`) when protected.
    pub ingress: Option<(&'static str, &'static str)>,
    /// Why it is not protected.
    pub problem: Option<String>,
}

/// Builds the registry: every metric under the `boundary_` prefix, added once.
pub fn registry(maps: Maps, state: Arc<Mutex<AgentState>>) -> Registry {
    let mut root = Registry::default();
    let boundary = root.sub_registry_with_prefix("boundary");
    boundary.register_collector(Box::new(DatapathCollector::new(maps, state)));
    root
}
