//! Handshake counters by `(result, reason)`, and handshake durations.
//!
//! Labels are `&'static str` from [`Rejection`](super::Rejection) and the bind outcomes below,
//! so the label set is bounded whatever peers send.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::metrics::histogram::Histogram;

use super::BindOutcome;

/// Handshake duration buckets, seconds: an ECDSA handshake on loopback takes about 1 ms.
pub const DURATION_BUCKETS: [f64; 10] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Shared by the endpoint (which counts) and the metrics (which read).
#[derive(Debug)]
pub struct Stats {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: Mutex::default(),
            seconds: Histogram::new(DURATION_BUCKETS),
        }
    }
}

/// The `(result, reason)` labels of a bind outcome: `ok`, `address_conflict` (another live
/// ID holds the address), `address_conflict`/`static_binding` (the policy binds it to another
/// ID), `unavailable`.
pub fn outcome_labels(outcome: &BindOutcome) -> (&'static str, &'static str) {
    match outcome {
        BindOutcome::Bound { .. } => ("ok", "bound"),
        BindOutcome::Conflict { .. } => ("address_conflict", "address_conflict"),
        BindOutcome::StaticElsewhere => ("address_conflict", "static_binding"),
        BindOutcome::Unavailable(_) => ("unavailable", "unavailable"),
    }
}

impl Stats {
    pub fn count(&self, result: &'static str, reason: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((result, reason))
            .or_default() += 1;
    }

    /// Every `(result, reason)` counted so far, with its count.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The count of one `(result, reason)`.
    pub fn get(&self, result: &str, reason: &str) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|((r, why), _)| *r == result && *why == reason)
            .map_or(0, |(_, n)| n)
    }

    /// Records a completed or failed TLS handshake's duration (from accept to the end of the
    /// handshake).
    pub fn observe_handshake(&self, d: Duration) {
        self.seconds.observe(d.as_secs_f64());
    }

    /// The duration histogram, to register as `boundary_handshake_duration_seconds` (a clone
    /// shares the same counts).
    pub fn handshake_seconds(&self) -> Histogram {
        self.seconds.clone()
    }
}
