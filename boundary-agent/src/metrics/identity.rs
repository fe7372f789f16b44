//! The identity endpoint's families, registered when it is on: handshakes by result and
//! reason (`ok`, `address_conflict`, `expired`, `unknown_ca`, `revoked`, `bad_svid`, ...),
//! their durations, and how long the agent's own certificate has left. Live bindings by source
//! are in `boundary_identity_bindings` (the datapath collector) with or without the endpoint.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::identity::{Stats, TrustStore};

/// The families this adds, by full name.
pub const IDENTITY_FAMILIES: &[&str] = &[
    "boundary_handshakes_total",
    "boundary_handshake_duration_seconds",
    "boundary_identity_certificate_expiry_seconds",
];

#[derive(Debug)]
struct IdentityCollector {
    stats: Arc<Stats>,
    trust: Arc<TrustStore>,
}

impl Collector for IdentityCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "handshakes",
            "mTLS handshakes at the identity endpoint, by result and reason",
            None,
            MetricType::Counter,
        )?;
        for ((result, reason), n) in self.stats.snapshot() {
            ConstCounter::new(n)
                .encode(family.encode_family(&[("result", result), ("reason", reason)])?)?;
        }
        let left = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
                - SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
        };
        let g = ConstGauge::new(left(self.trust.agent_not_after()));
        g.encode(encoder.encode_descriptor(
            "identity_certificate_expiry",
            "Seconds until the agent's own certificate (the identity endpoint's) expires",
            Some(&Unit::Seconds),
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Adds the identity families to `registry` (the root one).
pub fn register(registry: &mut Registry, stats: Arc<Stats>, trust: Arc<TrustStore>) {
    let boundary = registry.sub_registry_with_prefix("boundary");
    boundary.register_with_unit(
        "handshake_duration",
        "Identity endpoint TLS handshakes, from accept to the end of the handshake",
        Unit::Seconds,
        stats.handshake_seconds(),
    );
    boundary.register_collector(Box::new(IdentityCollector { stats, trust }));
}
