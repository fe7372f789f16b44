//! The Grafana dashboard is valid JSON and asks only for metrics the agent exports (or, for
//! `boundary_handshakes_total`, the one the mTLS identity work will).

use std::collections::BTreeSet;

use boundary_agent::metrics::FAMILIES as EXPORTED;
const PLANNED: &[&str] = &["boundary_handshakes_total"];

#[test]
fn dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/boundary.json"
    ))
    .expect("deploy/grafana/boundary.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["uid"], "boundary");
    let mut used = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in v["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for t in v["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = t["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("boundary_") {
                used.insert(word.to_owned());
            }
        }
    }
    for m in &used {
        assert!(
            EXPORTED.contains(&m.as_str()) || PLANNED.contains(&m.as_str()),
            "dashboard uses {m}, which the agent does not export"
        );
    }
    for needed in [
        "boundary_packets_total",
        "boundary_identity_bindings",
        "boundary_policy_generation",
        // The rate-limit panel: admitted (hits less limited), limited, and the limit's line.
        "boundary_rule_hits_total",
        "boundary_rule_rate_limited_packets_total",
        "boundary_rule_rate_limit_packets_per_second",
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}");
    }
}
