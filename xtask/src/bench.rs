//! `cargo xtask bench`: every performance figure the project quotes comes from here.
//!
//! Installs what the comparison needs (xdp-tools for xdp-filter, nftables, ethtool for the
//! veth's offload switches, iperf3 for TCP throughput) with setup's apt helper, builds the agent in release mode (the bench
//! runs it as a process), then runs the benchmark, the Cargo bench target of the boundary-bench
//! crate (`bench/benches/datapath.rs`): it uses boundary-agent as a library, which xtask must
//! not depend on (its build needs the eBPF toolchain that `setup` installs).

use std::time::Instant;

use anyhow::bail;

use crate::{cargo, root, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Fewer runs and calls (about five minutes once built): a smoke test of the harness, not
    /// figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Print the report as JSON on stdout instead of the table (both are also written under
    /// target/bench/).
    #[arg(long)]
    pub json: bool,
    /// Run only these steps (comma-separated: per-packet, xdp-filter, flood, throughput,
    /// control-plane, observability, verifier, kernel-log, rate-limit, identity), for working
    /// on one of them; the targets of the others are then "n/a".
    #[arg(long)]
    pub only: Option<String>,
}

/// (command that proves the package is there, Debian package).
const BENCH_APT: &[(&str, &str)] = &[
    ("xdp-filter", "xdp-tools"),
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
    ("iperf3", "iperf3"),
];

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the benchmark loads eBPF programs, attaches XDP and makes network namespaces: run it as root"
        );
    }
    let start = Instant::now();
    setup::run()?;
    setup::apt_install(BENCH_APT)?;
    cargo(&["build", "--release", "--package", "boundary-agent"], &[])?;
    let agent = root().join("target/release/boundary-agent");
    let agent = agent.display().to_string();
    let mut bench = vec![
        "bench",
        "--package",
        "boundary-bench",
        "--bench",
        "datapath",
        "--",
    ];
    if args.quick {
        bench.push("--quick");
    }
    if args.json {
        bench.push("--json");
    }
    let only;
    if let Some(steps) = &args.only {
        only = format!("--only={steps}");
        bench.push(&only);
    }
    cargo(&bench, &[("BOUNDARY_AGENT_BIN", &agent)])?;
    eprintln!(
        "xtask: bench finished in {:.1} s (build included)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
