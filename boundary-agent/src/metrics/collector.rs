//! Scrape-time collection from the maps and the agent state.

use std::sync::{Arc, Mutex};

use boundary_common::{
    Direction, Reason, Verdict,
    maps::{self as abi, UNPROTECTED_NAME, UNPROTECTED_SLOT},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::AgentState;
use crate::datapath::Maps;

/// Reads counters, rule hits, rate-limit refusals and event totals from the maps on each
/// scrape.
#[derive(Debug)]
pub struct DatapathCollector {
    maps: Mutex<Maps>,
    state: Arc<Mutex<AgentState>>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Maps")
    }
}

impl DatapathCollector {
    pub fn new(maps: Maps, state: Arc<Mutex<AgentState>>) -> Self {
        Self {
            maps: Mutex::new(maps),
            state,
        }
    }
}

type Labels4 = [(&'static str, String); 4];

impl Collector for DatapathCollector {
    #[expect(
        clippy::too_many_lines,
        reason = "one family after the other, in output order"
    )]
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let maps = self.maps.lock().map_err(|_| std::fmt::Error)?;
        let state = self.state.lock().map_err(|_| std::fmt::Error)?;

        // Packets and bytes by workload, direction, verdict, reason. Only named slots (and the
        // unprotected slot 0) are reported: a workload removed from the policy loses its series.
        let names = maps.names().map_err(|_| std::fmt::Error)?;
        let mut packets: Vec<(Labels4, u64)> = Vec::new();
        let mut bytes: Vec<(Labels4, u64)> = Vec::new();
        let slots = std::iter::once((UNPROTECTED_SLOT, UNPROTECTED_NAME.to_owned()))
            .chain(names.into_iter().filter(|(s, _)| *s != UNPROTECTED_SLOT));
        let rows = maps.counter_rows().map_err(|_| std::fmt::Error)?;
        for (slot, name) in slots {
            for direction in Direction::ALL {
                let Some(row) = rows.get(abi::counter_index(slot, direction as u8) as usize) else {
                    continue;
                };
                for &reason in Reason::ALL {
                    let c = row.counters[usize::from(reason.code())];
                    if c.packets == 0 {
                        continue;
                    }
                    let labels = [
                        ("workload", name.clone()),
                        ("direction", direction.as_str().to_owned()),
                        (
                            "verdict",
                            if reason.verdict() == Verdict::Pass {
                                "pass"
                            } else {
                                "drop"
                            }
                            .to_owned(),
                        ),
                        ("reason", reason.label().to_owned()),
                    ];
                    packets.push((labels.clone(), c.packets));
                    bytes.push((labels, c.bytes));
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "packets",
            "Packets decided by the datapath, by workload, direction, verdict and reason",
            None,
            MetricType::Counter,
        )?;
        for (labels, v) in &packets {
            ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "packet",
            "Bytes of the packets decided by the datapath",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (labels, v) in &bytes {
            ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "rule_hits",
            "Packets decided by each policy rule",
            None,
            MetricType::Counter,
        )?;
        // Ids are kept across reloads, so they need not be dense: read up to the highest.
        let rows = state.rules.iter().map(|r| r.0 + 1).max().unwrap_or(0);
        // Refused before hits: the datapath counts a hit before its refusal, so every refusal
        // read has its hit in the later read, and hits - refused is never negative.
        let limit_rows = state.limits.keys().map(|id| id + 1).max().unwrap_or(0);
        let all_limited = maps
            .rule_limited_totals(limit_rows)
            .map_err(|_| std::fmt::Error)?;
        let all_hits = maps.rule_hit_totals(rows).map_err(|_| std::fmt::Error)?;
        for (id, workload, direction, rule) in &state.rules {
            let hits = all_hits.get(*id as usize).copied().unwrap_or(0);
            let labels = [
                ("workload", workload.clone()),
                ("direction", (*direction).to_owned()),
                ("rule", rule.clone()),
            ];
            ConstCounter::new(hits).encode(family.encode_family(&labels)?)?;
        }
        super::limits::encode(&mut encoder, &state, &all_limited)?;
        // Per-source tables: how many sources each keeps, and how many it evicted (inserts -
        // kept: the kernel's LRU evicts in batches and counts nothing).
        let generation = maps
            .datapath_config()
            .map_err(|_| std::fmt::Error)?
            .generation;
        let tables: Vec<(u32, u64, u64)> = state
            .limits
            .iter()
            .filter(|(_, l)| l.per != crate::policy::ratelimit::Per::Rule)
            .filter_map(|(&id, _)| {
                let b = maps.live_bucket(generation, id)?;
                let (inserts, kept) = maps.peer_counts(b.index).ok()?;
                Some((id, kept, inserts.saturating_sub(kept)))
            })
            .collect();
        super::limits::encode_sources(&mut encoder, &state, &tables)?;

        let (sent, lost) = maps.event_totals().map_err(|_| std::fmt::Error)?;
        let c = ConstCounter::new(sent);
        c.encode(encoder.encode_descriptor(
            "drop_events_sent",
            "Drop events sent to monitor",
            None,
            c.metric_type(),
        )?)?;
        let c = ConstCounter::new(lost);
        c.encode(encoder.encode_descriptor(
            "drop_events_lost",
            "Drop events not sent: over the per-CPU sampling budget, or the ring was full",
            None,
            c.metric_type(),
        )?)?;

        let mut family = encoder.encode_descriptor(
            "identity_bindings",
            "Peer addresses bound to an identity, by source",
            None,
            MetricType::Gauge,
        )?;
        let g = ConstGauge::new(i64::try_from(state.static_bindings).unwrap_or(i64::MAX));
        g.encode(family.encode_family(&[("source", "static")])?)?;
        let g = ConstGauge::new(i64::try_from(state.earned_bindings).unwrap_or(i64::MAX));
        g.encode(family.encode_family(&[("source", "mtls")])?)?;

        let g = ConstGauge::new(i64::from(state.policy_generation));
        g.encode(encoder.encode_descriptor(
            "policy_generation",
            "The live policy generation (0 or 1)",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(state.last_apply_seconds);
        g.encode(encoder.encode_descriptor(
            "policy_apply_duration",
            "How long the last policy compile and swap took",
            Some(&Unit::Seconds),
            g.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "policy_reloads",
            "Policy reloads, by result",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(state.reloads_ok).encode(family.encode_family(&[("result", "ok")])?)?;
        ConstCounter::new(state.reloads_failed)
            .encode(family.encode_family(&[("result", "refused")])?)?;

        let c = ConstCounter::new(state.rollbacks);
        c.encode(encoder.encode_descriptor(
            "policy_rollbacks",
            "Policies applied with --confirm and rolled back for want of a confirmation",
            None,
            c.metric_type(),
        )?)?;
        let g = ConstGauge::new(i64::from(state.pending_confirmation));
        g.encode(encoder.encode_descriptor(
            "policy_pending_confirmation",
            "1 while a policy applied with --confirm awaits its confirmation",
            None,
            g.metric_type(),
        )?)?;

        let attached = || {
            state
                .interfaces
                .iter()
                .filter_map(|i| i.ingress.map(|(hook, mode)| (i.name.as_str(), hook, mode)))
        };
        let mut family = encoder.encode_descriptor(
            "xdp_attach_mode",
            "XDP attach mode per protected interface (1 for the mode in force)",
            None,
            MetricType::Gauge,
        )?;
        for (iface, _, mode) in attached().filter(|a| a.1 == "xdp") {
            ConstGauge::new(1i64)
                .encode(family.encode_family(&[("interface", iface), ("mode", mode)])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "ingress_hook",
            "Where each protected interface's ingress is enforced (1 for the hook in force): xdp, or tc (tcx, the default on veths)",
            None,
            MetricType::Gauge,
        )?;
        for (iface, hook, _) in attached() {
            ConstGauge::new(1i64)
                .encode(family.encode_family(&[("interface", iface), ("hook", hook)])?)?;
        }

        let mut family = encoder.encode_descriptor(
            "interface_protected",
            "1 for each interface the agent config selects that the datapath is attached to, 0 for one it is not (absent, no Ethernet header, attach refused)",
            None,
            MetricType::Gauge,
        )?;
        for i in &state.interfaces {
            ConstGauge::new(i64::from(i.ingress.is_some()))
                .encode(family.encode_family(&[("interface", i.name.as_str())])?)?;
        }
        let unprotected_up = state
            .interfaces
            .iter()
            .filter(|i| i.up && i.ingress.is_none())
            .count();
        let g = ConstGauge::new(i64::try_from(unprotected_up).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(
            "interfaces_unprotected_up",
            "Interfaces the agent config selects that are up but not protected (alert when above 0)",
            None,
            g.metric_type(),
        )?)?;

        let mut family = encoder.encode_descriptor(
            "map_entries",
            "Entries the live policy generation holds, per map",
            None,
            MetricType::Gauge,
        )?;
        for (map, n) in &state.map_entries {
            ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
                .encode(family.encode_family(&[("map", *map)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "map_capacity",
            "Entries one policy generation may use, per map (maps hold two during a swap)",
            None,
            MetricType::Gauge,
        )?;
        for (map, cap) in [
            (abi::ENDPOINTS_MAP, abi::MAX_ENDPOINTS),
            (abi::IDENTITIES_MAP, abi::MAX_IDENTITIES),
            (abi::CIDRS_MAP, abi::MAX_CIDRS),
            (abi::PREFIXES_MAP, abi::MAX_PREFIXES),
            (abi::POLICY_MAP, abi::MAX_POLICY),
            (abi::RANGES_MAP, abi::MAX_RANGES),
            (abi::FAILSAFE_MAP, abi::MAX_FAILSAFE),
        ] {
            ConstGauge::new(i64::from(cap / 2)).encode(family.encode_family(&[("map", map)])?)?;
        }

        if let Some(fill) = state.address_table {
            let mut family = encoder.encode_descriptor(
                "address_table_keys",
                "Static bindings and prefix regions of the live generation, in their address-table bucket or past a full one (found in the hash maps, a probe more on a first packet)",
                None,
                MetricType::Gauge,
            )?;
            for (placement, n) in [("bucket", fill.placed), ("overflow", fill.overflowed)] {
                ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("placement", placement)])?)?;
            }
            let g = ConstGauge::new(i64::try_from(fill.slots).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "address_table_slots",
                "Slots of the address table per generation (four per 128-byte bucket)",
                None,
                g.metric_type(),
            )?;
            g.encode(metric)?;
        }

        let info = Unit::Other("info".into());
        let mut family = encoder.encode_descriptor(
            "build",
            "Agent build information",
            Some(&info),
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        Ok(())
    }
}
