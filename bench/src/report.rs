//! The report: a fixed-width table for people and JSON for tools, from the same figures.

use std::{fmt::Write as _, time::Duration};

use serde_json::{Value as Json, json};

use super::{
    results::{PacketRow, Report, SIZES, Value},
    testrun::Samples,
    throughput,
};

const PATH_W: usize = 68;
const VERDICT_W: usize = 34;
/// The lookups column of section 1b: the longest label, "3 + 1 level (1k: trie) + ct insert".
const LOOKUPS_W: usize = 36;
const CELL_W: usize = 15;
const HITS_W: usize = 10;

fn cell(v: &Value) -> String {
    match v {
        Value::Ns { net, spread, .. } => format!("{net:.1} ±{spread:.1}"),
        Value::Na(why) if why.starts_with("n/a: capacity") => "n/a: cap".into(),
        Value::Na(why) if why.starts_with("no peer address") => "-".into(),
        Value::Na(_) => String::new(),
    }
}

fn hits(v: &Value) -> Option<f64> {
    match v {
        Value::Ns { hits, .. } => hits.percent(),
        Value::Na(_) => None,
    }
}

/// "hot/first" cache hit percentages of one prefix count.
fn hits_cell(hot: &Value, first: &Value) -> String {
    let pct = |p: Option<f64>| p.map_or_else(|| "-".into(), |p| format!("{p:.0}"));
    match (hits(hot), hits(first)) {
        (None, None) => "-".into(),
        (h, f) => format!("{}/{}", pct(h), pct(f)),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[expect(clippy::cast_precision_loss, reason = "KiB counts are small")]
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn packet_line(out: &mut String, r: &PacketRow) {
    let _ = write!(
        out,
        "   {:<PATH_W$} {:<3} {:<VERDICT_W$}",
        r.path, r.family, r.verdict
    );
    if r.verdict == "not implemented yet" {
        out.push('\n');
        return;
    }
    for v in r.hot.iter().chain(&r.random) {
        let _ = write!(out, "{:>CELL_W$}", cell(v));
    }
    for (h, f) in r.hot.iter().zip(&r.random) {
        let _ = write!(out, "{:>HITS_W$}", hits_cell(h, f));
    }
    out.push('\n');
}

pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Boundary benchmark: {}", r.machine);
    let _ = writeln!(o, "{}", r.mode);
    per_packet_section(&mut o, r);
    at_scale_section(&mut o, r);
    interleaved_section(&mut o, r);
    flood_section(&mut o, r);
    throughput_section(&mut o, r);
    control_section(&mut o, r);
    observability_section(&mut o, r);
    verifier_section(&mut o, r);
    kernel_log_section(&mut o, r);
    rate_limit_section(&mut o, r);
    super::identity::report::section(&mut o, r);
    targets_section(&mut o, r);
    for w in &r.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    let _ = writeln!(o, "\nfinished in {:.1} s", r.elapsed.as_secs_f64());
    o
}

fn per_packet_section(o: &mut String, r: &Report) {
    let pp = &r.per_packet;

    let _ = writeln!(
        o,
        "\n1-2. Per-packet cost, BPF_PROG_TEST_RUN, 64-byte frames, XDP ingress (TC egress where the path says so); Boundary, then the peer"
    );
    let _ = writeln!(
        o,
        "   net ns = median of the runs minus the median of the empty program of the same type run interleaved with them; ± = half the range of the runs"
    );
    let _ = writeln!(
        o,
        "   floor: empty XDP program {:.1} ns per run hot, {:.1} ns per single-run call (random key); empty TC program {:.1} / {:.1} ns",
        pp.floor_hot, pp.floor_call, pp.tc_floor_hot, pp.tc_floor_call
    );
    let _ = writeln!(
        o,
        "   prefixes = CIDR identities (prefix levels, the trie for a family they cannot hold), plus as many exact bindings in the identity map (each half IPv4, half IPv6); one protected workload"
    );
    let _ = writeln!(
        o,
        "   hot = one frame repeated {} times in one call: a flow's later packets (TCP/UDP ones answered from the per-CPU verdict cache)",
        pp.repeat
    );
    let _ = writeln!(
        o,
        "   first packet = single-run calls, each with a fresh peer address (source on ingress, destination on egress) from the path's set and the verdict cache emptied before it (epoch bumped): the full lookup sequence"
    );
    let _ = writeln!(
        o,
        "   conntrack footing: before every allow row the table its flows go in (ingress: BND_CT_ACCEPTED; egress: BND_CONNTRACK; 65,536 flows each) is filled from userspace with twice its capacity of flows no row looks up: every row starts with it full, so every insert evicts, whatever row ran before"
    );
    let _ = writeln!(
        o,
        "   rule ids: past MAX_RULES (131,072; only the 1M tables) they cycle over the whole id space, so a random rule's hit counter and bucket entry are a random line of those arrays (they used to share the last id)"
    );
    let _ = writeln!(
        o,
        "   cache hits % hot/first = untimed probe calls answered from the cache (hot: one after each run; first: one every {} calls), from this CPU's cache read before and after the call (a written entry proves a miss)",
        super::testrun::PROBE_EVERY
    );
    if !pp.fills.is_empty() {
        let fills: Vec<String> = pp
            .fills
            .iter()
            .map(|(l, d)| format!("{l} {:.2} s", d.as_secs_f64()))
            .collect();
        let _ = writeln!(o, "   table fill (Maps::apply): {}", fills.join(", "));
    }
    for r in &pp.raised {
        let _ = writeln!(o, "   capacity raised (EbpfLoader::map_max_entries): {r}");
    }
    let blank = "";
    let heads = SIZES.map(|(_, l)| l);
    let _ = write!(
        o,
        "\n   {blank:<PATH_W$} {blank:<3} {blank:<VERDICT_W$}{:>w$}{:>w$}{:>h$}\n   {:<PATH_W$} {:<3} {:<VERDICT_W$}",
        "hot (cached)",
        "first packet (cache emptied)",
        "cache hits % hot/first",
        "path",
        "fam",
        "verdict",
        w = CELL_W * SIZES.len(),
        h = HITS_W * SIZES.len()
    );
    for h in heads.iter().chain(&heads) {
        let _ = write!(o, "{h:>CELL_W$}");
    }
    for h in heads {
        let _ = write!(o, "{h:>HITS_W$}");
    }
    o.push('\n');
    let mut last_subject = "";
    for row in &pp.rows {
        if row.subject != last_subject && !last_subject.is_empty() {
            o.push('\n');
        }
        last_subject = row.subject;
        packet_line(o, row);
    }
    let _ = writeln!(
        o,
        "   (-: the path reads no peer address, so there is no key to vary, or nothing is cached; n/a: cap: beyond the program's map capacity; xdp-filter has no cache: every packet is a first packet)"
    );
    if !r.peer_note.is_empty() {
        let _ = writeln!(o, "   peer: {}", r.peer_note);
    }
}

/// The miss latencies measured, and the peer with its maps full.
fn misses_and_peer(o: &mut String, r: &Report) {
    let pp = &r.per_packet;
    let _ = writeln!(
        o,
        "   miss latency = userspace pointer chase, one pointer per 64-byte line in one random cycle (dependent loads), 4 KiB pages (MADV_NOHUGEPAGE), pinned to the CPU of the test runs; ns per dependent miss:"
    );
    for m in &pp.misses {
        #[expect(clippy::cast_precision_loss, reason = "sizes are small")]
        let mib = m.bytes as f64 / f64::from(1u32 << 20);
        let _ = writeln!(
            o,
            "     {:<58} {:>9.1} MiB {:>8.1} ±{:.1} ns",
            m.what, mib, m.ns, m.spread
        );
    }
    for p in &pp.peer_full {
        let _ = writeln!(
            o,
            "   {:<58} {:<3} hot {:>8}   first packet {:>8}",
            p.path,
            p.family,
            p.hot.first().map_or_else(String::new, cell),
            p.random.first().map_or_else(String::new, cell)
        );
    }
}

/// Issue #15: first packets against the measured miss latency and xdp-filter with its maps
/// full, with each path's lookups counted from the code.
fn at_scale_section(o: &mut String, r: &Report) {
    let pp = &r.per_packet;
    if pp.misses.is_empty() && pp.peer_full.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n1b. First packets at scale (issue #15): measured miss latency, lookups per path, xdp-filter with its maps full"
    );
    misses_and_peer(o, r);
    let peer = |fam: &str| {
        pp.peer_full
            .iter()
            .find(|p| p.family == fam && p.verdict == "pass")
    };
    let _ = writeln!(
        o,
        "   lookups = map lookups of a first packet, counted from the code (hash lookups: endpoint, policy (none for an identity whose one entry is folded into its value), conntrack; + the exact identity's address-table probe, one 128-byte bucket (none for a peer the bound-address bitmap says is unbound); + prefix levels probed for a CIDR identity, a table probe each, one LPM walk for a family in the trie; + conntrack insert); array reads not counted"
    );
    let blank = "";
    let _ = write!(
        o,
        "\n   {blank:<PATH_W$} {blank:<3} {blank:<LOOKUPS_W$}{:>w$}{:>m$}{:>w$}\n   {:<PATH_W$} {:<3} {:<LOOKUPS_W$}",
        "first packet, net ns",
        "misses over 1k",
        "/ xdp-filter full, first",
        "path",
        "fam",
        "lookups",
        w = 10 * SIZES.len(),
        m = 10 * (SIZES.len() - 1),
    );
    for (_, l) in SIZES {
        let _ = write!(o, "{l:>10}");
    }
    for (_, l) in &SIZES[1..] {
        let _ = write!(o, "{l:>10}");
    }
    for (_, l) in SIZES {
        let _ = write!(o, "{l:>10}");
    }
    o.push('\n');
    for row in pp
        .rows
        .iter()
        .filter(|r| r.subject == "Boundary" && r.random.iter().any(|v| v.net().is_some()))
    {
        let _ = write!(
            o,
            "   {:<PATH_W$} {:<3} {:<LOOKUPS_W$}",
            row.path, row.family, row.lookups
        );
        for v in &row.random {
            let _ = write!(
                o,
                "{:>10}",
                v.net().map_or_else(|| "-".into(), |n| format!("{n:.0}"))
            );
        }
        for size in 1..SIZES.len() {
            let (m, _) = super::targets::misses_over_1k(r, row, size);
            let _ = write!(
                o,
                "{:>10}",
                m.map_or_else(|| "-".into(), |m| format!("{m:.1}"))
            );
        }
        let p = peer(row.family).and_then(|p| p.random.first().and_then(Value::net));
        for v in &row.random {
            let ratio = v.net().zip(p).filter(|(_, p)| *p > 0.0).map(|(n, p)| n / p);
            let _ = write!(o, "{:>10}", fmt_ratio(ratio));
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "   misses over 1k = (first packet at that size - at 1k) / the miss latency over that size's tables; xdp-filter full = its maps at capacity (Boundary has no 10k size: every size is compared with it)"
    );
    let _ = writeln!(
        o,
        "   fairness rows (tables of their own: the same /28 and /64 prefixes and exact bindings, identities regrouped; built directly, no policy file): \"{}\" maps every allowed prefix to one identity with one policy entry and one rule id (the sharing the exact rows have); \"{}\" gives each binding its own identity, policy entry and rule id (the sharing the CIDR rows have); at 1M its 1M rule ids cycle over the 131,072 the datapath holds, about 8 bindings to an id. Their misses over 1k use the same chase as the other rows of their size",
        super::paths::CIDR_SHARED,
        super::paths::EXACT_OWN
    );
    for n in &pp.mixed_notes {
        let _ = writeln!(o, "   {n}");
    }
}

/// Issue #15's two targets with the sizes interleaved (step 1c): per row, the median over
/// rounds of the first-packet figure at each size and of each round's misses over 1k.
fn interleaved_section(o: &mut String, r: &Report) {
    let a = &r.at_scale;
    if a.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n1c. First packets at scale, sizes interleaved (issue #15's targets): {} rounds; a round measures every row at each size back to back (the order rotating), then chases over that size's tables",
        a.rounds
    );
    let _ = write!(
        o,
        "   miss latency, ns per dependent miss (median of rounds ± half range):"
    );
    for (i, (_, l)) in SIZES.iter().enumerate() {
        let m = Samples(a.miss.iter().map(|m| m[i]).collect());
        let _ = write!(o, "  {l} {:.1} ±{:.1}", m.median(), m.spread());
    }
    o.push('\n');
    let blank = "";
    let _ = write!(
        o,
        "   {blank:<PATH_W$} {blank:<3}{:>w$}{:>m$}\n   {:<PATH_W$} {:<3}",
        "first packet, net ns",
        "misses over 1k",
        "path",
        "fam",
        w = 16 * SIZES.len(),
        m = 16 * (SIZES.len() - 1),
    );
    for (_, l) in SIZES {
        let _ = write!(o, "{l:>16}");
    }
    for (_, l) in &SIZES[1..] {
        let _ = write!(o, "{l:>16}");
    }
    o.push('\n');
    for row in &a.rows {
        let _ = write!(o, "   {:<PATH_W$} {:<3}", row.path, row.family);
        for size in 0..SIZES.len() {
            let v = row.at(size);
            let _ = write!(o, "{:>16}", format!("{:.0} ±{:.0}", v.median(), v.spread()));
        }
        for size in 1..SIZES.len() {
            let m = row.misses_over_1k(&a.miss, size);
            let _ = write!(o, "{:>16}", format!("{:.1} ±{:.1}", m.median(), m.spread()));
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "   the same with each cell's median call instead of its mean (information: the typical first packet, without the tail the mean pays)"
    );
    for row in &a.rows {
        let _ = write!(o, "   {:<PATH_W$} {:<3}", row.path, row.family);
        for size in 0..SIZES.len() {
            let v = Samples(row.typical.iter().map(|r| r[size]).collect());
            let _ = write!(o, "{:>16}", format!("{:.0} ±{:.0}", v.median(), v.spread()));
        }
        for size in 1..SIZES.len() {
            let m = row.typical_misses_over_1k(&a.miss, size);
            let _ = write!(o, "{:>16}", format!("{:.1} ±{:.1}", m.median(), m.spread()));
        }
        o.push('\n');
    }
    let _ = writeln!(
        o,
        "   figures = median of the rounds ± half their range; a round's misses over 1k = (its first packet at the size - its first packet at 1k) / its chase over the size's tables; the single-length set (/28, /64 and as many exact bindings), every flow new, conntrack full"
    );
}

fn flood_section(o: &mut String, r: &Report) {
    let _ = writeln!(
        o,
        "\n3. Denied flood on a veth (live frames, one pinned core, 64-byte UDP to a workload that denies it: one flow, then a new spoofed source in 10.0.0.0/8 every frame)"
    );
    let w = r
        .flood
        .rows
        .iter()
        .map(|f| f.config.len() + 2)
        .max()
        .unwrap_or(0)
        .max(48);
    flood_table(o, w, &r.flood.rows);
    for ratio in &r.flood.ratios {
        let _ = writeln!(
            o,
            "   Boundary / nftables, packets per second per core, {}: receive side (generator subtracted) {}, end to end {}",
            ratio.flood,
            fmt_ratio(ratio.rx),
            fmt_ratio(ratio.e2e)
        );
    }
    if !r.flood.note.is_empty() {
        let _ = writeln!(o, "   note: {}", r.flood.note);
    }
}

/// "median ±spread" of a throughput cell, "failed" or blank.
fn tput_cell(cell: &super::results::TputCell) -> String {
    match throughput::summary(cell) {
        None => "-".into(),
        Some(Ok((m, s))) => format!("{m:.2} ±{s:.2}"),
        Some(Err(_)) => "failed".into(),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

fn throughput_section(o: &mut String, r: &Report) {
    let t = &r.throughput;
    if t.rows.is_empty() {
        let _ = writeln!(
            o,
            "\n4. TCP throughput through the protected veth: not measured"
        );
        return;
    }
    let _ = writeln!(
        o,
        "\n4. TCP throughput through the protected veth (iperf3, Gbit/s received: median ±half range of {} runs of {} s; every configuration once per repetition, order rotated)",
        t.runs, t.secs
    );
    let _ = write!(
        o,
        "   {:<15}{:<4}{:>8}{:>10}",
        "direction", "fam", "streams", "offloads"
    );
    for c in &t.rows[0].cells {
        let _ = write!(o, "{:>22}", c.config);
    }
    let _ = writeln!(o, "{:>10}{:>10}{:>10}", "B/none", "B/nft", "XDP/none");
    let mut failures = Vec::new();
    for row in &t.rows {
        let _ = write!(
            o,
            "   {:<15}{:<4}{:>8}{:>10}",
            row.direction,
            row.family,
            row.streams,
            if row.offloads { "on" } else { "off" }
        );
        for c in &row.cells {
            let _ = write!(o, "{:>22}", tput_cell(c));
            if let Some(Err(why)) = throughput::summary(c) {
                failures.push(format!(
                    "{} {} {} stream(s) offloads {}, {}: {why}",
                    row.direction,
                    row.family,
                    row.streams,
                    if row.offloads { "on" } else { "off" },
                    c.config
                ));
            }
        }
        let ratios = throughput::ratios(row);
        let _ = writeln!(
            o,
            "{:>10}{:>10}{:>10}",
            fmt_ratio(ratios.over_none),
            fmt_ratio(ratios.over_nft),
            fmt_ratio(ratios.xdp_over_none)
        );
    }
    let _ = writeln!(
        o,
        "   offloads on = the kernel's veth defaults (TSO, GSO, checksum offload on; GRO off); off = ethtool -K tso off gso off gro off, both ends"
    );
    let _ = writeln!(
        o,
        "   B = Boundary's default; ratios of medians; a run fails when iperf3 fails or Boundary drops any packet of these (allowed) flows, and a cell with a failed run has no figure"
    );
    for n in &t.notes {
        let _ = writeln!(o, "   attached: {n}");
    }
    for f in failures {
        let _ = writeln!(o, "   failed: {f}");
    }
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), ms)
}

fn control_section(o: &mut String, r: &Report) {
    let c = &r.control;
    let _ = writeln!(
        o,
        "\n5. Control plane (workloads of 100 ingress rules, each from a CIDR of its own; medians)"
    );
    let _ = writeln!(
        o,
        "   {:>8}{:>11}{:>10}{:>16}{:>12}{:>16}{:>14}{:>16}{:>17}",
        "rules",
        "workloads",
        "entries",
        "parse+validate",
        "compile",
        "apply (fresh)",
        "apply again",
        "batch update",
        "compile+apply"
    );
    for row in &c.compile {
        let _ = writeln!(
            o,
            "   {:>8}{:>11}{:>10}{:>16}{:>12}{:>16}{:>14}{:>16}{:>17}",
            row.rules,
            row.workloads,
            row.entries,
            opt_ms(row.parse),
            opt_ms(row.compile),
            ms(row.apply_fresh),
            ms(row.apply_again),
            ms(row.batch_update),
            opt_ms(row.compile.map(|c| c + row.apply_fresh))
        );
    }
    let _ = writeln!(
        o,
        "   apply = Maps::apply (one batch update per map; again = the other generation, then the old one batch-deleted); batch update = the policy-map entries alone in one BPF_MAP_UPDATE_BATCH"
    );
    if !c.refusal.is_empty() {
        let _ = writeln!(
            o,
            "   -: the compiler refuses the policy ({}); its tables were built directly to time the apply",
            c.refusal
        );
    }
    if !c.agent.is_empty() {
        let _ = writeln!(
            o,
            "\n   agent process (release build)\n   {:>8}{:>11}{:>14}{:>12}{:>12}   policy-file change -> live (median [min..max])",
            "rules", "workloads", "start->ready", "RSS", "peak RSS"
        );
        for a in &c.agent {
            let s: Vec<f64> = a.reload.iter().map(Duration::as_secs_f64).collect();
            let med = Samples(s.clone()).median();
            let min = s.iter().copied().fold(f64::INFINITY, f64::min);
            let max = s.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "   {:>8}{:>11}{:>14}{:>12}{:>12}   {:.1} ms [{:.1}..{:.1}] of {}",
                a.rules,
                a.workloads,
                ms(a.start_to_ready),
                mib(a.rss_kib),
                mib(a.peak_rss_kib),
                med * 1e3,
                min * 1e3,
                max * 1e3,
                s.len()
            );
        }
    }
    if !c.agent_note.is_empty() {
        let _ = writeln!(o, "   note: {}", c.agent_note);
    }
}

fn observability_section(o: &mut String, r: &Report) {
    let ob = &r.observability;
    let _ = writeln!(o, "\n6. Observability (agent process, release build)");
    if !ob.note.is_empty() {
        let _ = writeln!(o, "   {}", ob.note);
    }
    if !ob.scrapes.is_empty() {
        let s = Samples(ob.scrapes.iter().map(Duration::as_secs_f64).collect());
        let min = s.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.0.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            o,
            "   GET /metrics over loopback in the agent's namespace, {} workloads, {} rules: median {:.1} ms [{:.1}..{:.1}] of {}; {} samples, {} bytes",
            ob.workloads,
            ob.rules,
            s.median() * 1e3,
            min * 1e3,
            max * 1e3,
            s.0.len(),
            ob.series,
            ob.body_bytes
        );
    }
    if let Some(f) = &ob.flood {
        let _ = writeln!(
            o,
            "   under a denied flood (live-frames XDP_TX generator in a peer namespace, bursts of {} frames every {} ms, one pinned core): {:.2} Mpps for {:.1} s, {} of {} frames counted policy_deny",
            super::observability::BURST,
            super::observability::TICK.as_millis(),
            f.mpps(),
            f.window.as_secs_f64(),
            f.denied,
            f.frames
        );
        let scrapes: Vec<String> = f
            .scrapes
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .collect();
        let _ = writeln!(
            o,
            "   agent utime+stime {:.0} ms = {:.2} % of a core; {} scrapes, one every 5 s (ms: {})",
            f.agent_cpu.as_secs_f64() * 1e3,
            f.cpu_percent(),
            f.scrapes.len(),
            scrapes.join(", ")
        );
    }
}

fn verifier_section(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\n7. Verifier budget");
    let _ = writeln!(
        o,
        "   {:<34}{:>24}{:>12}",
        "program", "instructions processed", "JIT bytes"
    );
    for p in &r.programs {
        let insns = p
            .verified_insns
            .map_or_else(|| "?".into(), |n| n.to_string());
        let _ = writeln!(o, "   {:<34}{insns:>24}{:>12}", p.program, p.jited_bytes);
    }
}

fn kernel_log_section(o: &mut String, r: &Report) {
    let k = &r.kernel_log;
    let _ = writeln!(
        o,
        "\n8. Kernel log (kernelLog): off against debug, one policy, XDP hot, net ns, interleaved"
    );
    let _ = writeln!(
        o,
        "   {:<46}{:>10}{:>10}{:>8}{:>14}",
        "path", "off", "debug", "±", "debug / off"
    );
    for p in &k.paths {
        let _ = writeln!(
            o,
            "   {:<46}{:>10.1}{:>10.1}{:>8.1}{:>14.2}",
            p.path,
            p.off_ns,
            p.on_ns,
            p.spread_ns,
            p.ratio()
        );
    }
    let _ = writeln!(
        o,
        "   {:<34}{:>26}{:>26}",
        "program", "insns processed off / debug", "xlated bytes off / debug"
    );
    let opt = |v: Option<u32>| v.map_or_else(|| "?".into(), |n| n.to_string());
    for (off, on) in &k.programs {
        let _ = writeln!(
            o,
            "   {:<34}{:>26}{:>26}",
            off.name,
            format!("{} / {}", opt(off.verified_insns), opt(on.verified_insns)),
            format!("{} / {}", opt(off.xlated_bytes), opt(on.xlated_bytes)),
        );
    }
}

fn targets_section(o: &mut String, r: &Report) {
    let _ = writeln!(o, "\nTargets (issues #4, #5, #9, #13, #14 and #15)");
    for t in &r.targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        let _ = writeln!(o, "   [{mark:^7}] {}: {}", t.name, t.detail);
    }
}

fn kernel_log_json(r: &Report) -> Json {
    json!({
        "paths": r.kernel_log.paths.iter().map(|p| json!({
            "path": p.path, "off_ns": p.off_ns, "debug_ns": p.on_ns,
            "spread_ns": p.spread_ns, "debug_over_off": p.ratio(),
        })).collect::<Vec<_>>(),
        "programs": r.kernel_log.programs.iter().map(|(off, on)| json!({
            "program": off.name,
            "verified_insns_off": off.verified_insns, "verified_insns_debug": on.verified_insns,
            "xlated_bytes_off": off.xlated_bytes, "xlated_bytes_debug": on.xlated_bytes,
        })).collect::<Vec<_>>(),
    })
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Ns {
            net,
            gross,
            floor,
            spread,
            hits,
        } => json!({
            "net_ns": net, "gross_ns": gross, "floor_ns": floor, "spread_ns": spread,
            "cache_probes": hits.probes, "cache_hits": hits.hits, "cache_hit_percent": hits.percent(),
        }),
        Value::Na(why) => json!({"na": why}),
    }
}

fn throughput_json(r: &Report) -> Json {
    json!({
        "secs_per_run": r.throughput.secs,
        "runs": r.throughput.runs,
        "attached": r.throughput.notes,
        "nft_rules": r.throughput.nft_rules,
        "rows": r.throughput.rows.iter().map(|row| {
            let ratios = throughput::ratios(row);
            json!({
                "direction": row.direction,
                "family": row.family,
                "streams": row.streams,
                "offloads": row.offloads,
                "configs": row.cells.iter().filter(|c| c.wanted).map(|c| json!({
                    "config": c.config,
                    "gbps": c.runs.iter().map(|r| r.as_ref().ok()).collect::<Vec<_>>(),
                    "failures": c.runs.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>(),
                    "median_gbps": throughput::summary(c).and_then(Result::ok).map(|(m, _)| m),
                })).collect::<Vec<_>>(),
                "boundary_over_no_filter": ratios.over_none,
                "boundary_over_nftables": ratios.over_nft,
                "xdp_over_no_filter": ratios.xdp_over_none,
            })
        }).collect::<Vec<_>>(),
    })
}

fn per_packet_json(r: &Report, rows: &[Json]) -> Json {
    let sizes: Vec<&str> = SIZES.iter().map(|(_, l)| *l).collect();
    json!({
        "sizes": sizes,
        "floor_hot_ns": r.per_packet.floor_hot,
        "floor_call_ns": r.per_packet.floor_call,
        "tc_floor_hot_ns": r.per_packet.tc_floor_hot,
        "tc_floor_call_ns": r.per_packet.tc_floor_call,
        "raised": r.per_packet.raised,
        "fill_s": r.per_packet.fills.iter().map(|(l, d)| json!({"size": l, "s": d.as_secs_f64()})).collect::<Vec<_>>(),
        "rows": rows,
        "peer_note": r.peer_note,
        "misses": r.per_packet.misses.iter().map(|m| json!({
            "what": m.what, "bytes": m.bytes, "size": m.size.map(|i| SIZES[i].1),
            "ns": m.ns, "spread_ns": m.spread,
        })).collect::<Vec<_>>(),
        "peer_full": r.per_packet.peer_full.iter().map(|p| json!({
            "path": p.path, "family": p.family, "verdict": p.verdict,
            "hot": p.hot.iter().map(value_json).collect::<Vec<_>>(),
            "first_packet": p.random.iter().map(value_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "mixed_sets": r.per_packet.mixed_notes,
        "interleaved": interleaved_json(r),
    })
}

fn interleaved_json(r: &Report) -> Json {
    let a = &r.at_scale;
    json!({
        "rounds": a.rounds,
        "miss_ns": a.miss,
        "rows": a.rows.iter().map(|row| json!({
            "path": row.path,
            "family": row.family,
            "first_packet_ns": row.net,
            "median_call_ns": row.typical,
            "misses_over_1k": (1..SIZES.len()).map(|s| json!({
                "size": SIZES[s].1,
                "rounds": row.misses_over_1k(&a.miss, s).0,
                "median": row.misses_over_1k(&a.miss, s).median(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn json(r: &Report) -> Json {
    let rows: Vec<Json> = r
        .per_packet
        .rows
        .iter()
        .map(|row| {
            json!({
                "subject": row.subject,
                "path": row.path,
                "family": row.family,
                "verdict": row.verdict,
                "lookups": row.lookups,
                "hot": row.hot.iter().map(value_json).collect::<Vec<_>>(),
                "first_packet": row.random.iter().map(value_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "machine": r.machine,
        "mode": r.mode,
        "per_packet": per_packet_json(r, &rows),
        "flood": {
            "rows": r.flood.rows.iter().map(|f| json!({
                "config": f.config,
                "ns_per_frame": f.ns_per_frame,
                "spread_ns": f.spread,
                "receive_ns": f.rx_ns,
                "mpps_per_core": f.mpps_per_core(),
                "frames": f.frames,
                "dropped": f.dropped,
            })).collect::<Vec<_>>(),
            "boundary_over_nftables": r.flood.boundary_over_nft,
            "ratios": r.flood.ratios.iter().map(|f| json!({
                "flood": f.flood, "receive_side": f.rx, "end_to_end": f.e2e,
            })).collect::<Vec<_>>(),
            "note": r.flood.note,
        },
        "throughput": throughput_json(r),
        "control_plane": {
            "compile": r.control.compile.iter().map(|c| json!({
                "rules": c.rules,
                "workloads": c.workloads,
                "entries": c.entries,
                "parse_s": c.parse.map(|d| d.as_secs_f64()),
                "compile_s": c.compile.map(|d| d.as_secs_f64()),
                "apply_fresh_s": c.apply_fresh.as_secs_f64(),
                "apply_again_s": c.apply_again.as_secs_f64(),
                "batch_update_s": c.batch_update.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "refusal": r.control.refusal,
            "agent": r.control.agent.iter().map(|a| json!({
                "rules": a.rules,
                "workloads": a.workloads,
                "start_to_ready_s": a.start_to_ready.as_secs_f64(),
                "rss_kib": a.rss_kib,
                "peak_rss_kib": a.peak_rss_kib,
                "reload_s": a.reload.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "agent_note": r.control.agent_note,
        },
        "observability": {
            "workloads": r.observability.workloads,
            "rules": r.observability.rules,
            "body_bytes": r.observability.body_bytes,
            "samples": r.observability.series,
            "scrape_s": r.observability.scrapes.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            "flood": r.observability.flood.as_ref().map(|f| json!({
                "window_s": f.window.as_secs_f64(),
                "frames": f.frames,
                "mpps": f.mpps(),
                "denied": f.denied,
                "agent_cpu_s": f.agent_cpu.as_secs_f64(),
                "agent_cpu_percent": f.cpu_percent(),
                "scrape_s": f.scrapes.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
            })),
            "note": r.observability.note,
        },
        "kernel_log": kernel_log_json(r),
        "rate_limit": rate_limit_json(r),
        "identity": super::identity::report::json(r),
        "programs": r.programs.iter().map(|p| json!({
            "program": p.program, "verified_insns": p.verified_insns, "jited_bytes": p.jited_bytes,
        })).collect::<Vec<_>>(),
        "targets": r.targets.iter().map(|t| json!({
            "target": t.name, "met": t.met, "detail": t.detail,
        })).collect::<Vec<_>>(),
        "warnings": r.warnings,
        "elapsed_s": r.elapsed.as_secs_f64(),
    })
}

fn rate_limit_section(o: &mut String, r: &Report) {
    let rl = &r.rate_limits;
    let _ = writeln!(
        o,
        "\n9. Rate limits (issue #13): BPF_PROG_TEST_RUN on CPUs 0 and 1 at once (two pinned threads released together), 64-byte UDP, XDP ingress, rules of one workload alike but for their limit"
    );
    if rl.rows.is_empty() {
        let _ = writeln!(o, "   not measured");
        return;
    }
    let _ = writeln!(
        o,
        "   net ns = median over the rounds of the two CPUs' mean, minus the empty XDP program run the same way ({:.1} ns hot, {:.1} ns per call); ± = half the range",
        rl.floor_hot, rl.floor_call
    );
    let _ = writeln!(
        o,
        "   hot = {} runs per CPU in one call (a cached flow; both CPUs pay into the one bucket every run), one per round; first packet = {} single-run calls per CPU per round, each from a new random source and port (cache miss), {}x the rounds, each in {} chunks taken by the programs in turn",
        rl.repeat,
        rl.calls,
        super::ratelimit::cost::FIRST_ROUNDS,
        super::ratelimit::cost::FIRST_CHUNKS
    );
    let _ = writeln!(
        o,
        "   batch = what a CPU takes from the shared bucket when its credit runs out (min(1 ms of the rate, burst/8)); contended: 5 packets, what a 5,000/s rule with a burst of 500 gets, so every 6th packet of each CPU reads the clock and compare-and-swaps the shared word; credit only: 10^6 packets, the shared word touched about once a run"
    );
    let _ = writeln!(
        o,
        "   {:<52}{:<24}{:>16}{:>16}",
        "rule", "verdict", "hot", "first packet"
    );
    for row in &rl.rows {
        let _ = writeln!(
            o,
            "   {:<52}{:<24}{:>16}{:>16}",
            row.config,
            row.verdict,
            cell(&row.hot),
            cell(&row.first)
        );
    }
    let _ = writeln!(
        o,
        "   added per packet (rule minus the unlimited rule in the same round; median ± half range over rounds):"
    );
    for d in &rl.deltas {
        let _ = writeln!(
            o,
            "   {:<52}{:<24}{:>16}{:>16}",
            d.what,
            "",
            format!("{:.1} ±{:.1}", d.hot.0, d.hot.1),
            format!("{:.1} ±{:.1}", d.first.0, d.first.1)
        );
    }
    for n in &rl.notes {
        let _ = writeln!(o, "   checked: {n}");
    }
    alternatives(o, rl);
    skew(o, rl);
    source_flood(o, rl);
}

/// The spin-lock and CAS buckets apart from the datapath.
fn alternatives(o: &mut String, rl: &super::results::RateLimits) {
    if rl.alternatives.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "   info: the alternatives apart from the datapath (hand-assembled XDP programs on one array value, 10^9/s: every packet writes; not Boundary's path, see docs/benchmarks.md), hot, {} runs a call; ns per run (median ± half range over rounds):",
        rl.repeat
    );
    let _ = writeln!(
        o,
        "   {:<52}{:>14}{:>14}{:>18}{:>18}",
        "program", "net, CPU 0", "net, 2 CPUs", "write, CPU 0", "write, 2 CPUs"
    );
    let pair = |p: (f64, f64)| format!("{:.1} ±{:.1}", p.0, p.1);
    for a in &rl.alternatives {
        let (w1, w2) = a
            .added
            .map_or_else(|| ("-".into(), "-".into()), |[x, y]| (pair(x), pair(y)));
        let _ = writeln!(
            o,
            "   {:<52}{:>14}{:>14}{w1:>18}{w2:>18}",
            a.what,
            pair(a.net[0]),
            pair(a.net[1]),
        );
    }
    let _ = writeln!(
        o,
        "   (net = minus the empty program; write = minus the read-only program: what updating the shared word adds, alone and with both CPUs on it)"
    );
}

/// Accuracy under a 90/10 skew, measured and simulated.
fn skew(o: &mut String, rl: &super::results::RateLimits) {
    let Some(first) = rl.skew.first() else {
        return;
    };
    let _ = writeln!(
        o,
        "   90/10 skew: {} packets/s, burst {}, CPU 0 offering 90 % and CPU 1 10 % of the load, paced; admitted per 1 s window (admitted/configured; the first window's configured count includes the burst), worst window after the first, whole run against burst + rate x time:",
        first.rate, first.burst
    );
    for s in &rl.skew {
        let windows: Vec<String> = (0..s.windows.len())
            .map(|i| format!("{} ({:.3})", s.windows[i], s.window_ratio(i)))
            .collect();
        let _ = writeln!(
            o,
            "   {}x, {}: offered {} / {}; windows {}; worst {}; whole run {:.3}",
            s.times,
            s.how,
            s.offered[0],
            s.offered[1],
            windows.join(", "),
            s.worst()
                .map_or_else(|| "-".into(), |(i, w)| format!("window {i}, {w:.3}")),
            s.whole()
        );
    }
}

/// A flood table: its header, then a line per configuration, the first column `w` wide.
fn flood_table<'a>(
    o: &mut String,
    w: usize,
    rows: impl IntoIterator<Item = &'a super::results::FloodRow>,
) {
    let _ = writeln!(
        o,
        "   {:<w$}{:>18}{:>16}{:>12}{:>22}",
        "configuration", "ns/frame (e2e)", "receive ns", "Mpps/core", "dropped by it"
    );
    for f in rows {
        let rx = f.rx_ns.map_or_else(|| "-".into(), |n| format!("{n:.1}"));
        let mpps = f
            .mpps_per_core()
            .map_or_else(|| "-".into(), |m| format!("{m:.2}"));
        let dropped = f
            .dropped
            .map_or_else(|| "-".into(), |d| format!("{d}/{}", f.frames));
        let _ = writeln!(
            o,
            "   {:<w$}{:>18}{rx:>16}{mpps:>12}{dropped:>22}",
            f.config,
            format!("{:.1} ±{:.1}", f.ns_per_frame, f.spread),
        );
    }
}

/// The spoofed-source flood at a per-source rule.
fn source_flood(o: &mut String, rl: &super::results::RateLimits) {
    let f = &rl.flood;
    if f.rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "   spoofed-source flood at a per-source rule (live frames on a veth, one pinned core, a new random source in 10.0.0.0/8 every frame: 2^24 sources, 256x maxSources)"
    );
    flood_table(o, 70, f.rows.iter().chain(f.limited.iter().map(|l| &l.row)));
    for l in &f.limited {
        let _ = writeln!(
            o,
            "   rateLimit: {}: {:.1} % of frames dropped, {:.2} M drops/s end to end on one core ({:.2} s of flood at its median ns/frame), {} admitted; source buckets: {} inserted, {} held at the end, {} evicted = {:.2} M evictions/s",
            l.limit,
            l.drop_share().unwrap_or(0.0) * 100.0,
            l.drops_per_sec().unwrap_or(0.0) / 1e6,
            l.secs,
            l.passed,
            l.inserts,
            l.live,
            l.evictions(),
            l.evictions_per_sec().unwrap_or(0.0) / 1e6
        );
    }
}

fn flood_row_json(f: &super::results::FloodRow) -> Json {
    json!({
        "config": f.config,
        "ns_per_frame": f.ns_per_frame,
        "spread_ns": f.spread,
        "receive_ns": f.rx_ns,
        "mpps_per_core": f.mpps_per_core(),
        "frames": f.frames,
        "dropped": f.dropped,
    })
}

fn rate_limit_json(r: &Report) -> Json {
    let rl = &r.rate_limits;
    let pair = |p: (f64, f64)| json!({"median_ns": p.0, "spread_ns": p.1});
    json!({
        "floor_hot_ns": rl.floor_hot,
        "floor_call_ns": rl.floor_call,
        "repeat": rl.repeat,
        "calls": rl.calls,
        "rows": rl.rows.iter().map(|row| json!({
            "rule": row.config,
            "verdict": row.verdict,
            "hot": value_json(&row.hot),
            "first_packet": value_json(&row.first),
        })).collect::<Vec<_>>(),
        "added": rl.deltas.iter().map(|d| json!({
            "what": d.what, "judged": d.judged, "hot": pair(d.hot), "first_packet": pair(d.first),
        })).collect::<Vec<_>>(),
        "checks": rl.notes,
        "alternatives": rl.alternatives.iter().map(|a| json!({
            "program": a.what,
            "net_one_cpu": pair(a.net[0]),
            "net_two_cpus": pair(a.net[1]),
            "write_one_cpu": a.added.map(|x| pair(x[0])),
            "write_two_cpus": a.added.map(|x| pair(x[1])),
        })).collect::<Vec<_>>(),
        "skew": rl.skew.iter().map(|s| json!({
            "how": s.how,
            "times": s.times,
            "rate": s.rate,
            "burst": s.burst,
            "offered": s.offered,
            "admitted_per_window": s.windows,
            "admitted_over_configured": (0..s.windows.len()).map(|i| s.window_ratio(i)).collect::<Vec<_>>(),
            "worst_window": s.worst().map(|(i, w)| json!({"window": i, "admitted_over_configured": w})),
            "whole_run": s.whole(),
        })).collect::<Vec<_>>(),
        "source_flood": json!({
            "rows": rl.flood.rows.iter().map(flood_row_json).collect::<Vec<_>>(),
            "limited": rl.flood.limited.iter().map(|l| json!({
                "limit": l.limit,
                "row": flood_row_json(&l.row),
                "passed": l.passed,
                "inserts": l.inserts,
                "held": l.live,
                "evictions": l.evictions(),
                "secs": l.secs,
                "evictions_per_s": l.evictions_per_sec(),
                "drops_per_s": l.drops_per_sec(),
                "drop_share": l.drop_share(),
            })).collect::<Vec<_>>(),
        }),
    })
}
