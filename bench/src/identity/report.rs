//! The identity step's section of the table and its part of the JSON (`report` calls both).

use std::{fmt::Write as _, time::Duration};

use serde_json::{Value as Json, json};

use super::{
    churn::{BIND_RATE, FLOWS, PROBES},
    rate::{CLIENT_WORKERS, CONCURRENCY, WARM_UP},
};
use crate::results::{Churn, ChurnCell, HandshakeRate, IdentityReport, Report};

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
    )
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.1} %"))
}

/// (p50, p99, max) of one latency pass.
pub fn summary(v: &[Duration]) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    (
        IdentityReport::quantile(v, 0.5),
        IdentityReport::quantile(v, 0.99),
        v.iter().max().copied(),
    )
}

pub fn section(o: &mut String, r: &Report) {
    let id = &r.identity;
    let _ = writeln!(
        o,
        "\n10. Identity over mTLS (issue #14): the agent's endpoint in the lab (TLS 1.3, ECDSA P-256 SVIDs, resumption off), and the datapath while bindings churn"
    );
    if id.to_answer.is_empty() && id.to_map.is_empty() && id.rate.is_none() && id.churn.is_none() {
        let _ = writeln!(o, "   not measured");
    }
    if !id.to_answer.is_empty() || !id.to_map.is_empty() {
        let _ = writeln!(
            o,
            "   binding latency, one handshake at a time, each from a source address not bound before, from the end of the client's TLS handshake:"
        );
        for (what, v) in [
            (
                "to the 200 answer (client side; the agent answers after its map writes; includes its certificate checks, the request and a veth round trip)",
                &id.to_answer,
            ),
            (
                "to the binding in the pinned maps (bench process polls the identity entry and the slot's bind sequence; handshake alone; can read low: the agent may bind before the client runs again)",
                &id.to_map,
            ),
            (
                "upper bound: same handshakes, from the ClientHello (both sides' whole handshake) to the binding in the maps",
                &id.hello_to_map,
            ),
        ] {
            let (p50, p99, max) = summary(v);
            let _ = writeln!(
                o,
                "   {:>4} handshakes: p50 {:>9}  p99 {:>9}  max {:>9}  {what}",
                v.len(),
                ms(p50),
                ms(p99),
                ms(max)
            );
        }
        for f in id.latency_failures.iter().take(5) {
            let _ = writeln!(o, "   not bound: {f}");
        }
        if id.latency_failures.len() > 5 {
            let _ = writeln!(
                o,
                "   ... {} handshakes not bound in all",
                id.latency_failures.len()
            );
        }
    }
    if let Some(rate) = &id.rate {
        rate_lines(o, rate);
    }
    if let Some(c) = &id.churn {
        churn_lines(o, c);
    }
    for n in &id.notes {
        let _ = writeln!(o, "   note: {n}");
    }
}

fn rate_lines(o: &mut String, rate: &HandshakeRate) {
    let w = rate.window;
    let _ = writeln!(
        o,
        "   handshakes per second: {:.0}/s bound (200 answers within a {:.0} s window after {:.0} s warm-up; {} in the window, {} over the run, agent's ok counter {} over the run)",
        rate.per_sec(),
        w.as_secs_f64(),
        WARM_UP.as_secs_f64(),
        rate.bound,
        rate.bound_total,
        rate.agent_ok.map_or_else(|| "-".into(), |n| n.to_string())
    );
    let refused: Vec<String> = rate
        .refused
        .iter()
        .map(|(s, n)| format!("{n} x {s}"))
        .collect();
    let failed: Vec<String> = rate
        .failed
        .iter()
        .map(|(k, n)| format!("{n} x {k}"))
        .collect();
    let _ = writeln!(
        o,
        "      refused (answered, not 200): {}; failed before an answer: {}",
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join(", ")
        },
        if failed.is_empty() {
            "none".into()
        } else {
            failed.join(", ")
        }
    );
    let _ = writeln!(
        o,
        "      {} client tasks on {} tokio threads in the bench process, {} source addresses in turn (each handshake binds or renews its address), a fresh rustls config and session per connection; the agent (2 endpoint workers + its loop) and the clients share this machine's CPUs",
        CONCURRENCY, CLIENT_WORKERS, rate.sources
    );
    let _ = writeln!(
        o,
        "      CPU over the window: agent {:.0} % of one core, bench clients {:.0} %, whole machine {} busy (of all its CPUs; softirqs included); client-side medians: TCP connect {}, TLS handshake {}, handshake end to answer {}",
        HandshakeRate::cpu_percent(rate.agent_cpu, w),
        HandshakeRate::cpu_percent(rate.client_cpu, w),
        pct(rate.machine_busy),
        ms(Some(rate.connect_median)),
        ms(Some(rate.handshake_median)),
        ms(Some(rate.answer_median))
    );
}

fn churn_row(o: &mut String, c: &Churn, cell: &ChurnCell, base: f64) {
    let ratio = cell.median() / base;
    let _ = writeln!(
        o,
        "   {:<48}{:>16}{:>9}{:>14}{:>13}{:>14}",
        cell.what,
        format!("{:.1} ±{:.1}", cell.median(), cell.spread()),
        if ratio.is_finite() {
            format!("{ratio:.2}x")
        } else {
            "-".into()
        },
        pct(cell.hits.percent()),
        pct(c.derived_hit_percent(cell)),
        if cell.binds_per_sec > 0.0 {
            format!("{:.0}", cell.binds_per_sec)
        } else {
            "-".into()
        }
    );
}

fn churn_lines(o: &mut String, c: &Churn) {
    let _ = writeln!(
        o,
        "   per-packet cost of cached flows while bindings churn: {FLOWS} UDP flows from {FLOWS} sources (allowed by a CIDR rule), single-run BPF_PROG_TEST_RUN calls on one pinned CPU, {} passes per scenario; a thread on the other CPU binds new addresses at {BIND_RATE}/s through Datapath::bind",
        c.passes
    );
    let _ = writeln!(
        o,
        "   net ns = a pass's mean minus the empty XDP program's pass over the same frames ({:.1} ns per call), median ± half range over passes; hits measured = {PROBES} untimed probe calls after each pass (this CPU's cache read before and after: a rewritten slot proves a miss); hits derived = (miss - observed) / (miss - hit) from the two bound rows",
        c.floor
    );
    let _ = writeln!(
        o,
        "   {:<48}{:>16}{:>9}{:>14}{:>13}{:>14}",
        "scenario", "net ns/packet", "/idle", "hits measured", "hits derived", "bindings/s"
    );
    let base = c.idle.median();
    for cell in [&c.idle, &c.bind_seq, &c.epoch, &c.all_miss, &c.all_hit] {
        churn_row(o, c, cell, base);
    }
    let _ = writeln!(
        o,
        "   (the cache is direct-mapped, 2,048 slots per CPU: {FLOWS} flows share some slots, so some of them miss on every pass even idle)"
    );
}

fn cell_json(c: &Churn, cell: &ChurnCell) -> Json {
    json!({
        "scenario": cell.what,
        "net_ns_median": cell.median(),
        "net_ns_spread": cell.spread(),
        "net_ns_passes": cell.net,
        "cache_probes": cell.hits.probes,
        "cache_hits": cell.hits.hits,
        "cache_hit_percent": cell.hits.percent(),
        "derived_hit_percent": c.derived_hit_percent(cell),
        "bindings_per_s": cell.binds_per_sec,
    })
}

pub fn json(r: &Report) -> Json {
    let id = &r.identity;
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let lat = |v: &[Duration]| {
        let (p50, p99, max) = summary(v);
        json!({
            "handshakes": v.len(),
            "p50_s": p50.map(|d| d.as_secs_f64()),
            "p99_s": p99.map(|d| d.as_secs_f64()),
            "max_s": max.map(|d| d.as_secs_f64()),
            "samples_s": secs(v),
        })
    };
    let churn_rows = |c: &Churn| -> Vec<Json> {
        [&c.idle, &c.bind_seq, &c.epoch, &c.all_miss, &c.all_hit]
            .into_iter()
            .map(|cell| cell_json(c, cell))
            .collect()
    };
    json!({
        "latency_to_answer": lat(&id.to_answer),
        "latency_to_maps": lat(&id.to_map),
        "latency_hello_to_maps": lat(&id.hello_to_map),
        "latency_failures": id.latency_failures,
        "rate": id.rate.as_ref().map(|r| json!({
            "window_s": r.window.as_secs_f64(),
            "per_s": r.per_sec(),
            "bound": r.bound,
            "bound_total": r.bound_total,
            "agent_ok_total": r.agent_ok,
            "refused": r.refused.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
            "failed": r.failed.iter().map(|(k, n)| json!({"kind": k, "count": n})).collect::<Vec<_>>(),
            "concurrency": r.concurrency,
            "sources": r.sources,
            "agent_cpu_s": r.agent_cpu.as_secs_f64(),
            "client_cpu_s": r.client_cpu.as_secs_f64(),
            "machine_busy_percent": r.machine_busy,
            "connect_median_s": r.connect_median.as_secs_f64(),
            "handshake_median_s": r.handshake_median.as_secs_f64(),
            "answer_median_s": r.answer_median.as_secs_f64(),
        })),
        "churn": id.churn.as_ref().map(|c| json!({
            "flows": c.flows,
            "passes": c.passes,
            "floor_ns": c.floor,
            "rows": churn_rows(c),
        })),
        "notes": id.notes,
    })
}
