//! Binding latency: one handshake at a time, each from a source address not bound before,
//! two passes of [`Plan::id_handshakes`] handshakes, measured from the moment the client's
//! side of the TLS handshake completes (its certificate, signature and Finished flushed):
//!
//! - **to the answer** (net 3): the client then sends `POST /v1/register`; the endpoint
//!   answers 200 only after the agent loop wrote the binding (record, identity entry, bind
//!   sequence). Includes what the agent does after its side of the handshake completes
//!   (verifying the client's certificate flight is part of that), the request's parsing, the
//!   answer and a round trip on the veth: an upper bound.
//! - **to the maps** (net 4): the client sends nothing more (the handshake alone binds, as
//!   with `openssl s_client`); this process polls the agent's pinned maps until the address's
//!   identity entry is live in the live generation and its slot's bind sequence moved (the
//!   binding's last write). Each poll is two map lookups (a few µs) and a 10 µs sleep (timer
//!   slack 1 µs: a spinning poller would take a CPU from the agent on this 2-CPU machine).
//!   The client's "handshake complete" can come late: the agent's thread, woken by the
//!   client's last flight, may preempt the client on its CPU and bind before the client runs
//!   again, so this figure can be below the true one. Hence, from the same handshakes, an
//!   upper bound: from the start of the TLS handshake (`ClientHello`) to the binding in the
//!   maps, which includes both sides' whole handshake.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    client::{Stage, register},
    lab::{IdentityLab, PER_NET, source},
};
use crate::{Plan, results::IdentityReport};

/// How long the map poll waits for one binding, and sleeps between two looks.
const POLL_LIMIT: Duration = Duration::from_secs(3);
const POLL_SLEEP: Duration = Duration::from_micros(10);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a tokio runtime")
}

fn failure(src: Ipv4Addr, stage: Stage, e: &anyhow::Error) -> String {
    format!("{src}: {}: {e:#}", stage.label())
}

pub fn run(lab: &IdentityLab, plan: &Plan, out: &mut IdentityReport) -> anyhow::Result<()> {
    let n = plan.id_handshakes.min(usize::from(PER_NET) - 1);
    let client = &lab.client;
    lab.lab.client.run(|| -> anyhow::Result<()> {
        // SAFETY: prctl with an integer argument; changes only this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000_u64) };
        let rt = runtime()?;
        // Warm-up (not counted): the first connection pays for ARP and the agent's cold paths.
        rt.block_on(async {
            if let Ok(h) = client.handshake(source(3, PER_NET)).await {
                let _ = register(h.tls).await;
            }
        });
        for i in 1..=n {
            let src = source(3, u8::try_from(i).unwrap_or(PER_NET));
            let r = rt.block_on(async {
                let h = client.handshake(src).await?;
                let done = h.done;
                let (status, at) = register(h.tls).await?;
                Ok::<_, (Stage, anyhow::Error)>((status, at - done))
            });
            match r {
                Ok((200, took)) => out.to_answer.push(took),
                Ok((status, _)) => out
                    .latency_failures
                    .push(format!("{src}: answered {status}")),
                Err((stage, e)) => out.latency_failures.push(failure(src, stage, &e)),
            }
        }
        for i in 1..=n {
            let src = source(4, u8::try_from(i).unwrap_or(PER_NET));
            let before = lab.bind_seq(src)?;
            let r = rt.block_on(async {
                let h = client.handshake(src).await?;
                let done = h.done;
                let hello = done.checked_sub(h.handshake).unwrap_or(done);
                // Nothing more is sent: the agent binds on the handshake alone.
                let live = loop {
                    if lab.bound(src) && lab.bind_seq(src).unwrap_or(before) != before {
                        break Some(Instant::now());
                    }
                    if done.elapsed() > POLL_LIMIT {
                        break None;
                    }
                    std::thread::sleep(POLL_SLEEP);
                };
                // Then the request, so that the connection ends as usual (a renewal: 200).
                let _ = register(h.tls).await;
                Ok::<_, (Stage, anyhow::Error)>(live.map(|t| (t - done, t - hello)))
            });
            match r {
                Ok(Some((took, upper))) => {
                    out.to_map.push(took);
                    out.hello_to_map.push(upper);
                }
                Ok(None) => out.latency_failures.push(format!(
                    "{src}: not seen bound in the maps within {} s",
                    POLL_LIMIT.as_secs()
                )),
                Err((stage, e)) => out.latency_failures.push(failure(src, stage, &e)),
            }
        }
        Ok(())
    })
}
