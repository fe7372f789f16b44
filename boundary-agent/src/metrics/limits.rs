//! The rate-limit families: packets each limited rule refused, and each rule's configured
//! limit as gauges, so a dashboard can draw the line its admitted rate stays under.
//!
//! Admitted packets are not a family of their own: a rule's `rule_hits_total` counts every
//! packet it matched, limited or not, so admitted = `rule_hits_total` - `rate_limited_packets`
//! (the way `requests_total` and `requests_failed_total` pair). The collector reads the
//! refused counts before the hits, so within one scrape the difference is never negative.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::AgentState;
use crate::policy::ratelimit::Rate;

/// Encodes the families for every installed rule with a limit; `limited[id]` is what rule
/// `id`'s limit refused (summed over CPUs; a rule past the end refused nothing).
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    state: &AgentState,
    limited: &[u64],
) -> Result<(), std::fmt::Error> {
    let rules: Vec<_> = state
        .rules
        .iter()
        .filter_map(|(id, workload, direction, rule)| {
            let limit = state.limits.get(id)?;
            let labels = [
                ("workload", workload.clone()),
                ("direction", (*direction).to_owned()),
                ("rule", rule.clone()),
            ];
            Some((*id, labels, limit))
        })
        .collect();

    let mut family = encoder.encode_descriptor(
        "rule_rate_limited_packets",
        "Packets each rate-limited rule matched over its limit: dropped as rate_limited (passed as audit in audit mode, or as failsafe under a failsafe entry). Admitted = boundary_rule_hits_total - this",
        None,
        MetricType::Counter,
    )?;
    for (id, labels, _) in &rules {
        let n = limited.get(*id as usize).copied().unwrap_or(0);
        ConstCounter::new(n).encode(family.encode_family(labels)?)?;
    }

    let packets = Unit::Other("packets".into());
    for (name, help, unit, dimension, part) in [
        (
            "rule_rate_limit_packets_per_second",
            "The packet rate each rate-limited rule admits at most (per: rule, the rule's whole traffic; source or destination, each peer's)",
            None,
            Dimension::Packets,
            Part::Rate,
        ),
        (
            "rule_rate_limit_burst",
            "The packets each rate-limited rule admits at once from a full bucket",
            Some(&packets),
            Dimension::Packets,
            Part::Burst,
        ),
        (
            "rule_rate_limit_bytes_per_second",
            "The byte rate each rate-limited rule admits at most (per as for the packet rate)",
            None,
            Dimension::Bytes,
            Part::Rate,
        ),
        (
            "rule_rate_limit_burst",
            "The bytes each rate-limited rule admits at once from a full bucket",
            Some(&Unit::Bytes),
            Dimension::Bytes,
            Part::Burst,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (_, [workload, direction, rule], limit) in &rules {
            let rate = match dimension {
                Dimension::Packets => limit.packets,
                Dimension::Bytes => limit.bytes,
            };
            let Some(Rate { per_second, burst }) = rate else {
                continue;
            };
            let value = match part {
                Part::Rate => per_second,
                Part::Burst => burst,
            };
            let labels = [
                workload.clone(),
                direction.clone(),
                rule.clone(),
                ("per", limit.per.as_str().to_owned()),
            ];
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Encodes, for every rule whose limit is kept per source, the sources its table keeps now and
/// the ones it evicted: `tables` is (rule id, kept, evicted). Evictions climbing fast are a
/// flood of (likely spoofed) sources washing the table.
pub(super) fn encode_sources(
    encoder: &mut DescriptorEncoder,
    state: &AgentState,
    tables: &[(u32, u64, u64)],
) -> Result<(), std::fmt::Error> {
    let labels = |id: u32| {
        state
            .rules
            .iter()
            .find(|r| r.0 == id)
            .map(|(_, workload, direction, rule)| {
                [
                    ("workload", workload.clone()),
                    ("direction", (*direction).to_owned()),
                    ("rule", rule.clone()),
                ]
            })
    };
    let mut family = encoder.encode_descriptor(
        "rule_rate_limit_sources",
        "Sources (destinations on egress) whose buckets a per-source rate limit keeps now, at most its maxSources",
        None,
        MetricType::Gauge,
    )?;
    for &(id, kept, _) in tables {
        if let Some(l) = labels(id) {
            ConstGauge::new(i64::try_from(kept).unwrap_or(i64::MAX))
                .encode(family.encode_family(&l)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "rule_rate_limit_evictions",
        "Sources a per-source rate limit's table evicted to make room (a returning one starts with a full burst)",
        None,
        MetricType::Counter,
    )?;
    for &(id, _, evicted) in tables {
        if let Some(l) = labels(id) {
            ConstCounter::new(evicted).encode(family.encode_family(&l)?)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Dimension {
    Packets,
    Bytes,
}

#[derive(Clone, Copy)]
enum Part {
    Rate,
    Burst,
}

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;
    use crate::policy::ratelimit::RateLimit;

    #[derive(Debug)]
    struct Fixed(std::sync::Mutex<(AgentState, Vec<u64>)>);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let s = self.0.lock().map_err(|_| std::fmt::Error)?;
            encode(&mut encoder, &s.0, &s.1)
        }
    }

    fn scrape(state: AgentState, limited: Vec<u64>) -> String {
        let mut root = Registry::default();
        root.sub_registry_with_prefix("boundary")
            .register_collector(Box::new(Fixed(std::sync::Mutex::new((state, limited)))));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &root).expect("encode");
        out
    }

    fn limit(yaml: &str) -> RateLimit {
        serde_yaml_ng::from_str(yaml).expect("a valid limit")
    }

    fn state() -> AgentState {
        AgentState {
            rules: vec![
                (0, "web".into(), "ingress", "open".into()),
                (3, "web".into(), "ingress", "dns".into()),
                (7, "db".into(), "egress", "backup".into()),
            ],
            limits: [
                (3, limit("{ packetsPerSecond: 200, burst: 50 }")),
                (
                    7,
                    limit(
                        "{ packetsPerSecond: 1000, bytesPerSecond: 10000000, burstBytes: 2000000 }",
                    ),
                ),
            ]
            .into(),
            ..AgentState::default()
        }
    }

    #[test]
    fn limited_rules_export_what_they_refused_and_their_limit() {
        let out = scrape(state(), vec![0, 0, 0, 41, 0, 0, 0, 9]);
        for line in [
            "boundary_rule_rate_limited_packets_total{workload=\"web\",direction=\"ingress\",rule=\"dns\"} 41",
            "boundary_rule_rate_limited_packets_total{workload=\"db\",direction=\"egress\",rule=\"backup\"} 9",
            "boundary_rule_rate_limit_packets_per_second{workload=\"web\",direction=\"ingress\",rule=\"dns\",per=\"rule\"} 200",
            "boundary_rule_rate_limit_burst_packets{workload=\"web\",direction=\"ingress\",rule=\"dns\",per=\"rule\"} 50",
            "boundary_rule_rate_limit_packets_per_second{workload=\"db\",direction=\"egress\",rule=\"backup\",per=\"rule\"} 1000",
            "boundary_rule_rate_limit_burst_packets{workload=\"db\",direction=\"egress\",rule=\"backup\",per=\"rule\"} 1000",
            "boundary_rule_rate_limit_bytes_per_second{workload=\"db\",direction=\"egress\",rule=\"backup\",per=\"rule\"} 10000000",
            "boundary_rule_rate_limit_burst_bytes{workload=\"db\",direction=\"egress\",rule=\"backup\",per=\"rule\"} 2000000",
            "# TYPE boundary_rule_rate_limited_packets counter",
            "# UNIT boundary_rule_rate_limit_burst_bytes bytes",
        ] {
            assert!(out.contains(&format!("{line}\n")), "no {line:?} in:\n{out}");
        }
        // A rule without a limit has no series; a dimension a limit does not set has none.
        assert!(!out.contains("rule=\"open\""), "{out}");
        assert!(
            !out.contains("boundary_rule_rate_limit_bytes_per_second{workload=\"web\""),
            "{out}"
        );
        assert!(out.contains("Admitted = boundary_rule_hits_total - this"));
    }

    #[test]
    fn a_limited_rule_that_refused_nothing_shows_zero() {
        // Its id past what the map read returned: nothing refused, the series still there
        // (a dashboard draws 0, not a gap).
        let out = scrape(state(), vec![]);
        assert!(
            out.contains("boundary_rule_rate_limited_packets_total{workload=\"web\",direction=\"ingress\",rule=\"dns\"} 0\n"),
            "{out}"
        );
    }
}
