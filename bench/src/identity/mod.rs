//! Step 10 (`identity`, issue #14): identity over mTLS, measured.
//!
//! - `latency`: time from the end of a client's TLS handshake to its binding being live in the
//!   datapath, over [`Plan::id_handshakes`] handshakes from distinct source addresses, two ways:
//!   client side to the endpoint's 200 answer (which it sends only after the map writes), and
//!   in the pinned maps, polled by the bench process (the handshake alone binds);
//! - `rate`: handshakes per second with many concurrent clients from many source addresses
//!   (ECDSA P-256 client certificates, a fresh rustls session and config per connection,
//!   resumption off), over a fixed window, the agent and the clients on this machine's CPUs;
//! - `churn`: the datapath's per-packet cost and verdict-cache hit rate for cached flows from
//!   many sources, idle, while bindings are written at 1,000/s through the agent's write path
//!   (`Datapath::bind`), and the same with every CPU's cache flushed per binding (the global
//!   epoch the issue rules out), in-process through `BPF_PROG_TEST_RUN`.
//!
//! `lab` holds the namespaces, the PKI and the agent the first two run against; `client` the
//! mTLS client they share.

pub mod churn;
pub mod client;
pub mod lab;
pub mod latency;
#[path = "../../../boundary-agent/tests/support/pki.rs"]
#[allow(
    dead_code,
    clippy::return_self_not_must_use,
    reason = "the agent's test PKI, shared (linted as test code there); not every helper is used here"
)]
pub mod pki;
pub mod rate;
pub mod report;

use super::{Plan, progress, results::IdentityReport, sys::RawProgram};

/// Every figure of the step; `floor` is the empty XDP program the per-packet costs are net of.
pub fn run(plan: &Plan, floor: &RawProgram) -> anyhow::Result<IdentityReport> {
    let mut out = IdentityReport::default();
    let load = |when: &str| {
        let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        format!(
            "load average (1, 5, 15 min) {when}: {} (other work on the machine shares its CPUs with the agent and the clients)",
            l.split_whitespace().take(3).collect::<Vec<_>>().join(", ")
        )
    };
    out.notes.push(load("at the step's start"));
    match super::control_plane::agent_binary() {
        None => out.notes.push(
            "latency and handshakes/s not measured: BOUNDARY_AGENT_BIN is not set (cargo xtask bench sets it)"
                .into(),
        ),
        Some(bin) => {
            progress::step(&format!(
                "identity: lab with the agent's mTLS endpoint ({})",
                bin.display()
            ));
            let lab = lab::IdentityLab::start()?;
            progress::tick(&format!(
                "identity: binding latency, {} handshakes x 2",
                plan.id_handshakes
            ));
            latency::run(&lab, plan, &mut out)?;
            progress::tick(&format!(
                "identity: handshakes per second, {} s window",
                plan.id_window.as_secs()
            ));
            out.rate = Some(rate::run(&lab, plan)?);
            progress::done();
        }
    }
    progress::step("identity: per-packet cost while bindings churn");
    out.churn = Some(churn::run(plan, floor)?);
    progress::done();
    out.notes.push(load("at its end"));
    Ok(out)
}
