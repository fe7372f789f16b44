//! Handshakes per second: [`CONCURRENCY`] client tasks on a 2-worker tokio runtime in the
//! client's namespace, each connecting again and again from the next of the rate's source
//! addresses (10.203.1.0/24 and 10.203.2.0/24: each handshake binds or renews its address),
//! completing a full TLS 1.3 handshake and `POST /v1/register`. After a [`WARM_UP`], the
//! answers that arrive within the window are counted: 200 (bound) apart from other statuses
//! and from connections that failed. The agent and the clients share this machine's CPUs;
//! both processes' CPU time over the window is reported beside the rate.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    client::{Client, Stage, register},
    lab::{IdentityLab, PER_NET, source},
};
use crate::{Plan, observability::cpu_time, results::HandshakeRate, testrun::Samples};

/// Client tasks at once (the endpoint serves up to 512 connections).
pub const CONCURRENCY: usize = 64;
/// Runtime threads of the clients.
pub const CLIENT_WORKERS: usize = 2;
pub const WARM_UP: Duration = Duration::from_secs(1);
/// The rate's source nets.
const NETS: [u8; 2] = [1, 2];

#[derive(Default)]
struct Tally {
    bound: u64,
    bound_total: u64,
    refused: BTreeMap<u16, u64>,
    failed: BTreeMap<String, u64>,
    connect: Vec<f64>,
    handshake: Vec<f64>,
    answer: Vec<f64>,
}

fn median(v: Vec<f64>) -> Duration {
    let m = Samples(v).median();
    if m.is_finite() {
        Duration::from_secs_f64(m)
    } else {
        Duration::ZERO
    }
}

pub fn run(lab: &IdentityLab, plan: &Plan) -> anyhow::Result<HandshakeRate> {
    let sources: Vec<_> = NETS
        .iter()
        .flat_map(|&n| (1..=PER_NET).map(move |i| source(n, i)))
        .collect();
    let agent_pid = lab.agent.pid().context("agent pid")?;
    let ok_before = lab.agent_ok().ok();
    let window = plan.id_window;
    let next = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sources = Arc::new(sources);
    let (agent_cpu, client_cpu, machine_busy) = lab.lab.client.run(|| -> anyhow::Result<_> {
        // Built on this thread, inside the client's namespace: the workers it starts are too.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(CLIENT_WORKERS)
            .enable_all()
            .build()
            .context("a tokio runtime")?;
        let start = Instant::now() + WARM_UP;
        let end = start + window;
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..CONCURRENCY {
                tasks.spawn(client_task(
                    lab.client.clone(),
                    Arc::clone(&sources),
                    Arc::clone(&next),
                    Arc::clone(&tally),
                    (start, end),
                ));
            }
            tokio::time::sleep_until(start.into()).await;
            let a0 = cpu_time(agent_pid)?;
            let c0 = cpu_time(std::process::id())?;
            let m0 = machine_ticks();
            tokio::time::sleep_until(end.into()).await;
            let a1 = cpu_time(agent_pid)?;
            let c1 = cpu_time(std::process::id())?;
            let m1 = machine_ticks();
            while tasks.join_next().await.is_some() {}
            #[expect(clippy::cast_precision_loss, reason = "tick counts far below 2^52")]
            let busy = m0.zip(m1).and_then(|((b0, t0), (b1, t1))| {
                (t1 > t0).then(|| (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
            });
            anyhow::Ok((a1.saturating_sub(a0), c1.saturating_sub(c0), busy))
        })
    })?;
    let ok_after = lab.agent_ok().ok();
    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(HandshakeRate {
        window,
        concurrency: CONCURRENCY,
        sources: sources.len(),
        bound: t.bound,
        bound_total: t.bound_total,
        refused: t.refused.into_iter().collect(),
        failed: t.failed.into_iter().collect(),
        agent_cpu,
        client_cpu,
        machine_busy,
        connect_median: median(t.connect),
        handshake_median: median(t.handshake),
        answer_median: median(t.answer),
        agent_ok: ok_before.zip(ok_after).map(|(b, a)| a.saturating_sub(b)),
    })
}

/// One client: handshakes from the next source address, one after another, until `end`;
/// answers within `[start, end)` are counted.
async fn client_task(
    client: Client,
    sources: Arc<Vec<Ipv4Addr>>,
    next: Arc<AtomicUsize>,
    tally: Arc<Mutex<Tally>>,
    (start, end): (Instant, Instant),
) {
    while Instant::now() < end {
        let src = sources[next.fetch_add(1, Ordering::Relaxed) % sources.len()];
        let r = async {
            let h = client.handshake(src).await?;
            let (connect, handshake, done) = (h.connect, h.handshake, h.done);
            let (status, at) = register(h.tls).await?;
            Ok::<_, (Stage, anyhow::Error)>((status, connect, handshake, at - done))
        }
        .await;
        let now = Instant::now();
        let counted = now >= start && now < end;
        let mut t = tally.lock().expect("tally");
        match r {
            Ok((200, connect, handshake, answer)) => {
                t.bound_total += 1;
                if counted {
                    t.bound += 1;
                    t.connect.push(connect.as_secs_f64());
                    t.handshake.push(handshake.as_secs_f64());
                    t.answer.push(answer.as_secs_f64());
                }
            }
            Ok((status, ..)) if counted => *t.refused.entry(status).or_default() += 1,
            Err((stage, e)) if counted => {
                let kind = format!("{}: {}", stage.label(), first_line(&e));
                *t.failed.entry(kind).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// (busy, total) ticks of all CPUs from /proc/stat's first line.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    // user nice system idle iowait irq softirq steal ...
    let idle = f.get(3)? + f.get(4)?;
    Some((total - idle, total))
}

fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect()
}
