//! Step 9 (`rate-limit`, issue #13): what a rate limit costs and how well it holds.
//!
//! - `cost`: the added per-packet cost of a rule's bucket on the allow path, hot and first
//!   packet, with both CPUs paying into the same bucket at once: a realistic batch (the
//!   contended path, the one the target is judged on), a batch so large that only the per-CPU
//!   credit path runs, a batch of 0 (the "CAS bucket": a compare-and-swap on the shared word
//!   for every packet), a `per: source` bucket, and the over-limit (drop) path;
//! - `alternatives`: a spin-lock bucket against a CAS one, as hand-assembled programs apart
//!   from the datapath (the production object has no spin-lock bucket to switch to);
//! - `skew`: accuracy when two CPUs offer one limited rule 90/10 at five and at two times its
//!   rate; `split`: a naive per-CPU split against the design under the same skew, simulated;
//! - `flood`: a spoofed-source flood at a `per: source` rule, with a ceiling and without, on a
//!   veth.
//!
//! `cost` and `skew` run the real object through `BPF_PROG_TEST_RUN` under one policy
//! ([`POLICY`]), compiled by the agent's compiler and installed by `Maps::apply`; `flood`
//! attaches it to the flood step's veth.

pub mod alternatives;
pub mod cost;
pub mod flood;
pub mod skew;
pub mod split;

use anyhow::{Context as _, bail};
use boundary_agent::policy::{self, Policy, SlotTable, Tables};

use super::{
    Plan,
    env::CpuPin,
    kernel::{BenchDatapath, SLOTS},
    per_packet::Floors,
    progress,
    results::RateLimits,
};

/// The workload the limited rules belong to (an address of its own, `paths::LOCAL4`).
pub const POLICY: &str = "\
apiVersion: boundary.dev/v1
workloads:
  - name: bench
    addresses: [10.203.0.1]
    defaults: { ingress: deny }
    ingress:
      - name: open
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8000/udp\"]
      - name: limited
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8001/udp\"]
        rateLimit: { packetsPerSecond: 1000000000, burst: 1000000000 }
      - name: contended
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8005/udp\"]
        rateLimit: { packetsPerSecond: 100000000, burst: 40 }
      - name: source
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8006/udp\"]
        rateLimit: { packetsPerSecond: 100000000, burst: 1000000, per: source }
      - name: cas
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8002/udp\"]
        rateLimit: { packetsPerSecond: 1000000000, burst: 1000000000 }
      - name: over
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8003/udp\"]
        rateLimit: { packetsPerSecond: 1, burst: 1 }
      - name: skew
        from: { cidr: 10.0.0.0/8 }
        ports: [\"8004/udp\"]
        rateLimit: { packetsPerSecond: 20000, burst: 2000 }
";

/// The rules of [`POLICY`] by port.
pub const PORT_OPEN: u16 = 8000;
pub const PORT_LIMITED: u16 = 8001;
pub const PORT_CAS: u16 = 8002;
pub const PORT_OVER: u16 = 8003;
pub const PORT_SKEW: u16 = 8004;
pub const PORT_CONTENDED: u16 = 8005;
pub const PORT_SOURCE: u16 = 8006;

/// [`POLICY`] loaded and installed.
pub struct Lab {
    pub dp: BenchDatapath,
    pub tables: Tables,
}

impl Lab {
    pub fn new() -> anyhow::Result<Self> {
        let policy = Policy::from_str("ratelimit-bench.yaml", POLICY)?;
        let tables = policy::compile(&policy, &SlotTable::new(), SLOTS)?;
        let mut dp = BenchDatapath::load(&tables, SLOTS)?;
        dp.fill(&tables)?;
        Ok(Self { dp, tables })
    }

    /// The id of the rule called `name`.
    pub fn rule(&self, name: &str) -> anyhow::Result<u32> {
        rule_id(&self.tables, name)
    }

    /// The index of the bucket the rule called `name` pays into.
    pub fn bucket(&self, name: &str) -> anyhow::Result<u32> {
        bucket_index(&self.tables, name)
    }
}

pub fn rule_id(tables: &Tables, name: &str) -> anyhow::Result<u32> {
    tables
        .rules
        .iter()
        .find(|(_, r)| r.name == name)
        .map(|(&id, _)| id)
        .with_context(|| format!("no rule {name}"))
}

pub fn bucket_index(tables: &Tables, name: &str) -> anyhow::Result<u32> {
    let id = rule_id(tables, name)?;
    tables
        .buckets
        .get(&id)
        .map(|b| b.index)
        .with_context(|| format!("rule {name} has no bucket"))
}

/// Runs `f(cpu)` on CPUs 0 and 1 at once, one pinned thread each, released together.
pub fn on_both_cpus<T: Send>(
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<[T; 2]> {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let threads = [0, 1].map(|cpu| {
            let (f, start) = (&f, &start);
            s.spawn(move || {
                let pin = CpuPin::to(cpu);
                // Both wait, pinned or not, so that a failed pin cannot leave the other hanging.
                start.wait();
                let _pin = pin.with_context(|| format!("pin a thread to CPU {cpu}"))?;
                f(cpu)
            })
        });
        let [a, b] = threads.map(|t| t.join().map_err(|_| anyhow::anyhow!("a thread panicked")));
        Ok([a??, b??])
    })
}

pub fn run(plan: &Plan, floors: &Floors) -> anyhow::Result<RateLimits> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus < 2 {
        bail!(
            "rate limits are measured with two CPUs paying into one bucket; this machine has {cpus}"
        );
    }
    progress::step(
        "rate limits: a bucket's cost with both CPUs on it (contended, credit only, CAS, per source), the drop path",
    );
    let lab = Lab::new()?;
    let mut out = cost::run(&lab, floors, plan)?;
    progress::step("rate limits: a spin-lock bucket against a CAS one, apart from the datapath");
    out.alternatives = alternatives::run(&floors.xdp, &cost::frame(PORT_OPEN), plan)?;
    for times in skew::TIMES {
        progress::step(&format!(
            "rate limits: two CPUs skewed 90/10 at {times}x the rate"
        ));
        out.skew.push(skew::run(&lab, plan, times)?);
    }
    for times in skew::TIMES {
        for scheme in [split::Scheme::Naive, split::Scheme::Design] {
            out.skew.push(split::simulate(
                scheme,
                skew::RATE,
                skew::BURST,
                times,
                skew::secs(plan),
            ));
        }
    }
    progress::step(
        "rate limits: a spoofed-source flood at a per-source rule, with a ceiling and without",
    );
    out.flood = flood::run(plan)?;
    progress::done();
    Ok(out)
}
