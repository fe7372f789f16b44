//! What the steps measured, as plain data for the table, the JSON and the chart.

use std::time::Duration;

use super::{cache::HitRate, testrun::Samples};

/// Prefix counts of the per-packet table: CIDR identities in the LPM trie, and as many exact
/// bindings in the identity map (each half IPv4, half IPv6).
pub const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")];

/// One cell of the per-packet table.
#[derive(Clone, Debug)]
pub enum Value {
    /// Nanoseconds per packet: median of the path minus median of the empty program.
    Ns {
        net: f64,
        gross: f64,
        floor: f64,
        /// Half the range of the path's runs.
        spread: f64,
        /// Verdict-cache hits among the probe calls (none for a program without the cache or
        /// a row it does not cache).
        hits: HitRate,
    },
    /// Why there is no figure (not implemented, over capacity, no key to vary).
    Na(String),
}

impl Value {
    pub fn net(&self) -> Option<f64> {
        match self {
            Value::Ns { net, .. } => Some(*net),
            Value::Na(_) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PacketRow {
    /// "Boundary" or "xdp-filter".
    pub subject: &'static str,
    pub path: String,
    pub family: &'static str,
    /// Expected verdict and reason (`pass default_allow`), checked before timing.
    pub verdict: String,
    /// Map lookups of a first packet, counted from the code (`paths::Lookups`).
    pub lookups: String,
    /// One per entry of [`SIZES`].
    pub hot: Vec<Value>,
    pub random: Vec<Value>,
}

#[derive(Clone, Debug, Default)]
pub struct PerPacket {
    pub rows: Vec<PacketRow>,
    /// Median floor (empty XDP program) over the whole step: hot, and per call.
    pub floor_hot: f64,
    pub floor_call: f64,
    /// The same for the empty TC program (the egress rows' floor).
    pub tc_floor_hot: f64,
    pub tc_floor_call: f64,
    /// (prefix label, time `Maps::apply` took to fill the tables).
    pub fills: Vec<(&'static str, Duration)>,
    /// Maps whose shipped capacity was raised for a size, described.
    pub raised: Vec<String>,
    /// Runs per hot call.
    pub repeat: u32,
    /// Measured miss latency (`chase`): over each size's table footprint, and over buffers far
    /// beyond the LLC.
    pub misses: Vec<Miss>,
    /// The peer at its largest size (its maps full), one value per row (hot / first packet).
    pub peer_full: Vec<PacketRow>,
    /// What the mixed-length sets hold, per size (lengths and counts).
    pub mixed_notes: Vec<String>,
}

/// One pointer chase: ns per dependent miss over a buffer of `bytes`.
#[derive(Clone, Debug)]
pub struct Miss {
    pub what: String,
    pub bytes: u64,
    /// The per-packet size whose tables' footprint this is (an index into [`SIZES`]).
    pub size: Option<usize>,
    /// Median of the runs, and half their range.
    pub ns: f64,
    pub spread: f64,
}

impl PerPacket {
    /// The miss latency the targets at size `size` are expressed in: the chase over that
    /// size's tables.
    pub fn miss_at(&self, size: usize) -> Option<&Miss> {
        self.misses.iter().find(|m| m.size == Some(size))
    }
}

/// Step 1c (issue #15): first packets of the two targets' rows at every size, the sizes
/// interleaved round by round (`interleaved`).
#[derive(Clone, Debug, Default)]
pub struct AtScale {
    pub rounds: usize,
    /// Per round: ns per dependent miss over each size's tables (the chase), by [`SIZES`].
    pub miss: Vec<[f64; 3]>,
    pub rows: Vec<AtScaleRow>,
}

#[derive(Clone, Debug)]
pub struct AtScaleRow {
    pub path: &'static str,
    pub family: &'static str,
    /// Per round: net ns per first packet at each size (the mean call, what is judged).
    pub net: Vec<[f64; 3]>,
    /// Per round: the median call's net ns at each size (information: the typical first
    /// packet, without the tail the mean pays).
    pub typical: Vec<[f64; 3]>,
}

impl AtScaleRow {
    /// The rounds' figures at `size`.
    pub fn at(&self, size: usize) -> Samples {
        Samples(self.net.iter().map(|r| r[size]).collect())
    }

    /// Each round's misses over 1k at `size`: (figure at `size` - figure at 1k) / that
    /// round's miss over `size`'s tables.
    pub fn misses_over_1k(&self, miss: &[[f64; 3]], size: usize) -> Samples {
        misses_over_1k(&self.net, miss, size)
    }

    /// The same for the median calls ([`Self::typical`]).
    pub fn typical_misses_over_1k(&self, miss: &[[f64; 3]], size: usize) -> Samples {
        misses_over_1k(&self.typical, miss, size)
    }
}

fn misses_over_1k(net: &[[f64; 3]], miss: &[[f64; 3]], size: usize) -> Samples {
    Samples(
        net.iter()
            .zip(miss)
            .map(|(r, m)| (r[size] - r[0]) / m[size])
            .collect(),
    )
}

/// One configuration of the denied-flood comparison.
#[derive(Clone, Debug)]
pub struct FloodRow {
    pub config: String,
    /// Kernel-reported time per frame, generator included.
    pub ns_per_frame: f64,
    pub spread: f64,
    /// Minus the generator's own cost: what the receiving side spends per frame.
    pub rx_ns: Option<f64>,
    pub frames: u64,
    /// Frames the receiving side saw dropped by the configuration under test.
    pub dropped: Option<u64>,
}

impl FloodRow {
    pub fn mpps_per_core(&self) -> Option<f64> {
        self.rx_ns.filter(|&n| n > 0.0).map(|n| 1e3 / n)
    }
}

/// Boundary against nftables under one flood, in packets per second per core.
#[derive(Clone, Debug)]
pub struct FloodRatio {
    /// "one flow" or "spoofed sources".
    pub flood: &'static str,
    /// Receive side: the generator's own cost subtracted.
    pub rx: Option<f64>,
    /// End to end: generator included.
    pub e2e: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Flood {
    pub rows: Vec<FloodRow>,
    /// The one-flow flood, receive side.
    pub boundary_over_nft: Option<f64>,
    pub ratios: Vec<FloodRatio>,
    pub note: String,
}

/// One rule of the rate-limit step, timed with both CPUs running it at once.
#[derive(Clone, Debug)]
pub struct LimitRow {
    /// What the rule is ("no limit", "bucket", "CAS bucket", "over the limit").
    pub config: &'static str,
    /// Expected verdict and reason, checked before timing.
    pub verdict: String,
    /// Net of the empty program run on both CPUs the same way (`Value::Ns`; no cache probes).
    pub hot: Value,
    pub first: Value,
}

/// One rule's cost minus another's, per run (paired: both measured in the same round).
#[derive(Clone, Debug)]
pub struct LimitDelta {
    pub what: &'static str,
    /// The difference the issue's <= 25 ns target is judged on (the contended bucket's).
    pub judged: bool,
    /// (median of the per-run differences, half their range), ns per packet.
    pub hot: (f64, f64),
    pub first: (f64, f64),
}

/// Two CPUs offering one limited rule 90/10 at `times` its rate: measured in the kernel
/// (`ratelimit::skew`) or simulated (`ratelimit::split`).
#[derive(Clone, Debug, Default)]
pub struct Skew {
    /// Where the figures come from, and which scheme shares the rate.
    pub how: &'static str,
    /// The offered load, in multiples of the rate.
    pub times: u64,
    pub rate: u64,
    pub burst: u64,
    /// Packets each CPU offered.
    pub offered: [u64; 2],
    /// Packets admitted in each 1-second window (by the time they were sent).
    pub windows: Vec<u64>,
}

impl Skew {
    /// admitted / configured of window `i`: the rate, plus the burst in the first window.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn window_ratio(&self, i: usize) -> f64 {
        let configured = self.rate + if i == 0 { self.burst } else { 0 };
        self.windows[i] as f64 / configured as f64
    }

    /// The window (after the first) furthest from its configured count: (index, ratio).
    pub fn worst(&self) -> Option<(usize, f64)> {
        (1..self.windows.len())
            .map(|i| (i, self.window_ratio(i)))
            .max_by(|a, b| (a.1 - 1.0).abs().total_cmp(&(b.1 - 1.0).abs()))
    }

    /// admitted / (burst + rate x seconds) over the whole run.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn whole(&self) -> f64 {
        let admitted: u64 = self.windows.iter().sum();
        let secs = self.windows.len() as u64;
        admitted as f64 / (self.burst + self.rate * secs) as f64
    }
}

/// A spoofed-source flood at a `per: source` rule (`ratelimit::flood`).
#[derive(Clone, Debug, Default)]
pub struct SourceFlood {
    /// Generator alone, the same rule denying.
    pub rows: Vec<FloodRow>,
    /// The rule limiting per source: with a ceiling, without.
    pub limited: Vec<PeerFlood>,
}

/// The flood against one per-source limit.
#[derive(Clone, Debug)]
pub struct PeerFlood {
    /// The limit, as the policy says it.
    pub limit: &'static str,
    pub row: FloodRow,
    /// Per-source buckets the rule's map took in, and held at the end.
    pub inserts: u64,
    pub live: u64,
    /// Frames admitted (`policy_allow`).
    pub passed: u64,
    /// Seconds of flood, at the row's end-to-end time per frame.
    pub secs: f64,
}

impl PeerFlood {
    pub fn evictions(&self) -> u64 {
        self.inserts.saturating_sub(self.live)
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn evictions_per_sec(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.evictions() as f64 / self.secs)
    }

    /// Drops per second, end to end (generator included) on one core.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn drops_per_sec(&self) -> Option<f64> {
        let dropped = self.row.dropped? as f64;
        (self.secs > 0.0).then(|| dropped / self.secs)
    }

    /// The share of the flood's frames dropped.
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn drop_share(&self) -> Option<f64> {
        let dropped = self.row.dropped? as f64;
        (self.row.frames > 0).then(|| dropped / self.row.frames as f64)
    }
}

/// One hand-assembled bucket program of `ratelimit::alternatives`, hot: (median, half range)
/// over rounds in ns per run, for [CPU 0 alone, CPUs 0 and 1 at once].
#[derive(Clone, Debug)]
pub struct AltRow {
    pub what: &'static str,
    /// Minus the empty program in the same round.
    pub net: [(f64, f64); 2],
    /// Minus the read-only program in the same round (none for that one).
    pub added: Option<[(f64, f64); 2]>,
}

#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    pub rows: Vec<LimitRow>,
    pub deltas: Vec<LimitDelta>,
    /// The empty XDP program on both CPUs: hot, and per single-run call.
    pub floor_hot: f64,
    pub floor_call: f64,
    pub repeat: u32,
    pub calls: usize,
    /// The spin-lock and CAS buckets apart from the datapath.
    pub alternatives: Vec<AltRow>,
    /// Accuracy under skew: measured in the kernel, then simulated (naive split, the design).
    pub skew: Vec<Skew>,
    pub flood: SourceFlood,
    /// Checks made on the way (buckets never ran dry, the CAS bucket's batch stayed 0).
    pub notes: Vec<String>,
}

/// Issue #14, identity over mTLS: binding latency, handshakes per second, and the datapath's
/// per-packet cost and cache hit rate while bindings churn (`identity`).
#[derive(Clone, Debug, Default)]
pub struct IdentityReport {
    /// Client side: end of the client's TLS handshake to the status line of the 200 answer
    /// (the endpoint answers only after the binding's map writes), one per handshake.
    pub to_answer: Vec<Duration>,
    /// Bench side: end of the client's TLS handshake (nothing sent after it) to the binding
    /// seen in the pinned maps (identity entry present and the slot's bind sequence moved).
    pub to_map: Vec<Duration>,
    /// The same handshakes from the start of the TLS handshake (`ClientHello`) to the binding
    /// in the maps: an upper bound (both sides' whole handshake included).
    pub hello_to_map: Vec<Duration>,
    /// Handshakes that did not bind in the latency passes (they must all bind).
    pub latency_failures: Vec<String>,
    pub rate: Option<HandshakeRate>,
    pub churn: Option<Churn>,
    pub notes: Vec<String>,
}

impl IdentityReport {
    /// The `q` quantile (0..=1) of `v`, nearest rank.
    pub fn quantile(v: &[Duration], q: f64) -> Option<Duration> {
        let mut s = v.to_vec();
        s.sort();
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "small counts"
        )]
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1));
        s.get(rank - 1).copied()
    }
}

/// Handshakes per second over a fixed window, the agent and the clients on the same CPUs.
#[derive(Clone, Debug, Default)]
pub struct HandshakeRate {
    pub window: Duration,
    /// Client tasks running at once, and source addresses they used.
    pub concurrency: usize,
    pub sources: usize,
    /// Answered 200 (bound) within the window, and over the whole run (warm-up and the
    /// connections that ended after the window included: what the agent's counter saw too).
    pub bound: u64,
    pub bound_total: u64,
    /// Answered, but not 200: (status, count).
    pub refused: Vec<(u16, u64)>,
    /// Connections that failed before an answer (connect, TLS, I/O), by kind.
    pub failed: Vec<(String, u64)>,
    /// The agent's and the bench process's utime + stime over the window.
    pub agent_cpu: Duration,
    pub client_cpu: Duration,
    /// The whole machine's busy share over the window (/proc/stat: all but idle and iowait),
    /// percent of all CPUs: what the network stack's softirqs cost shows here only.
    pub machine_busy: Option<f64>,
    /// Client-side medians: TCP connect, TLS handshake, handshake end to answer.
    pub connect_median: Duration,
    pub handshake_median: Duration,
    pub answer_median: Duration,
    /// The agent's own `boundary_handshakes_total{result="ok"}` over the whole run, if read.
    pub agent_ok: Option<u64>,
}

impl HandshakeRate {
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn per_sec(&self) -> f64 {
        self.bound as f64 / self.window.as_secs_f64()
    }

    pub fn cpu_percent(d: Duration, window: Duration) -> f64 {
        d.as_secs_f64() * 100.0 / window.as_secs_f64()
    }
}

/// One scenario of the churn measurement: per-pass figures over every pass.
#[derive(Clone, Debug, Default)]
pub struct ChurnCell {
    pub what: &'static str,
    /// Mean net ns per packet of each pass (the pass's mean minus the floor pass's mean).
    pub net: Vec<f64>,
    /// Verdict-cache hits among probe calls (`cache`): measured, not derived.
    pub hits: HitRate,
    /// Bindings written per second while it ran (0 when idle).
    pub binds_per_sec: f64,
}

impl ChurnCell {
    pub fn median(&self) -> f64 {
        Samples(self.net.clone()).median()
    }

    pub fn spread(&self) -> f64 {
        Samples(self.net.clone()).spread()
    }
}

/// Cached flows from many sources while bindings churn (in-process, `BPF_PROG_TEST_RUN`).
#[derive(Clone, Debug, Default)]
pub struct Churn {
    pub flows: usize,
    pub passes: usize,
    /// Idle, bind at the target rate, bind + invalidate every CPU's cache each time.
    pub idle: ChurnCell,
    pub bind_seq: ChurnCell,
    pub epoch: ChurnCell,
    /// Bounds for the derived hit rate: the same flows with the cache emptied before every
    /// call (all misses), and one cached flow repeated (all hits), single-run calls each.
    pub all_miss: ChurnCell,
    pub all_hit: ChurnCell,
    /// The empty XDP program per single-run call.
    pub floor: f64,
}

impl Churn {
    /// (miss - observed) / (miss - hit): the hit rate the cost implies, in percent.
    pub fn derived_hit_percent(&self, cell: &ChurnCell) -> Option<f64> {
        let (miss, hit) = (self.all_miss.median(), self.all_hit.median());
        (miss - hit > 0.0).then(|| (miss - cell.median()) * 100.0 / (miss - hit))
    }
}

/// One configuration's runs of one throughput row.
#[derive(Clone, Debug)]
pub struct TputCell {
    pub config: &'static str,
    /// Measured in this row (native XDP only with offloads on; Boundary only with the agent).
    pub wanted: bool,
    /// Gbit/s received per repetition, or why the run failed.
    pub runs: Vec<Result<f64, String>>,
}

/// One direction x family x streams x offloads row, every configuration.
#[derive(Clone, Debug)]
pub struct TputRow {
    pub direction: &'static str,
    pub family: &'static str,
    pub streams: u32,
    pub offloads: bool,
    /// In `throughput::Config::ALL` order.
    pub cells: Vec<TputCell>,
}

#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub secs: u32,
    pub runs: usize,
    pub rows: Vec<TputRow>,
    /// What the agent attached, per Boundary configuration.
    pub notes: Vec<String>,
    pub nft_rules: String,
}

/// In-process control-plane timings for one rule count.
#[derive(Clone, Debug)]
pub struct CompileRow {
    pub rules: usize,
    pub workloads: usize,
    /// Map entries of one generation.
    pub entries: usize,
    /// `None` where the compiler refuses the policy (the tables were built directly).
    pub parse: Option<Duration>,
    pub compile: Option<Duration>,
    pub apply_fresh: Duration,
    pub apply_again: Duration,
    pub batch_update: Duration,
}

/// The agent as a process, for one rule count.
#[derive(Clone, Debug)]
pub struct AgentRow {
    pub rules: usize,
    pub workloads: usize,
    pub start_to_ready: Duration,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// File change (write + SIGHUP) to the new verdict observed in the pinned program.
    pub reload: Vec<Duration>,
}

#[derive(Clone, Debug, Default)]
pub struct ControlPlane {
    pub compile: Vec<CompileRow>,
    /// The compiler's answer to a policy of `control_plane::TARGET_RULES` rules.
    pub refusal: String,
    pub agent: Vec<AgentRow>,
    pub agent_note: String,
}

/// The agent under a sustained denied flood, scraped every few seconds.
#[derive(Clone, Debug)]
pub struct FloodCpu {
    pub window: Duration,
    /// Frames the generator sent, and the agent's datapath counted as `policy_deny`.
    pub frames: u64,
    pub denied: u64,
    /// The agent's utime + stime over the window.
    pub agent_cpu: Duration,
    pub scrapes: Vec<Duration>,
}

impl FloodCpu {
    pub fn mpps(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "frame counts are small")]
        let frames = self.frames as f64;
        frames / self.window.as_secs_f64() / 1e6
    }

    /// Share of one core, in percent.
    pub fn cpu_percent(&self) -> f64 {
        self.agent_cpu.as_secs_f64() / self.window.as_secs_f64() * 100.0
    }
}

/// `/metrics` of an agent with many workloads, and its CPU under a flood (issue #5).
#[derive(Clone, Debug, Default)]
pub struct Observability {
    pub workloads: usize,
    pub rules: usize,
    /// Size of one scrape's body, and its sample lines.
    pub body_bytes: usize,
    pub series: usize,
    /// Back-to-back scrapes, connect to last byte.
    pub scrapes: Vec<Duration>,
    pub flood: Option<FloodCpu>,
    pub note: String,
}

/// One path of the kernel-log step: net ns with logging off and at debug.
#[derive(Clone, Debug)]
pub struct KernelLogPath {
    pub path: &'static str,
    pub off_ns: f64,
    pub on_ns: f64,
    /// The larger of the two loads' half ranges.
    pub spread_ns: f64,
}

impl KernelLogPath {
    /// debug / off, of the net costs.
    pub fn ratio(&self) -> f64 {
        self.on_ns / self.off_ns
    }
}

/// Kernel-side diagnostics off against debug (issue #12).
#[derive(Clone, Debug, Default)]
pub struct KernelLogReport {
    pub paths: Vec<KernelLogPath>,
    /// Each program as loaded (off, debug).
    pub programs: Vec<(
        boundary_agent::datapath::ProgramStats,
        boundary_agent::datapath::ProgramStats,
    )>,
}

#[derive(Clone, Debug)]
pub struct ProgramRow {
    pub program: String,
    pub verified_insns: Option<u32>,
    pub jited_bytes: u32,
}

/// A target from issues #4 and #5, judged on this run's figures.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    /// `Some(true)` met, `Some(false)` not met, `None` cannot be judged yet.
    pub met: Option<bool>,
    pub detail: String,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub machine: String,
    pub mode: String,
    pub per_packet: PerPacket,
    pub at_scale: AtScale,
    pub peer_note: String,
    pub flood: Flood,
    pub throughput: Throughput,
    pub control: ControlPlane,
    pub observability: Observability,
    pub kernel_log: KernelLogReport,
    pub rate_limits: RateLimits,
    pub identity: IdentityReport,
    pub programs: Vec<ProgramRow>,
    pub targets: Vec<Target>,
    pub elapsed: Duration,
    pub warnings: Vec<String>,
}
