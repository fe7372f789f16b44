//! `cargo xtask bench [--quick] [--json]` runs this (`cargo bench -p boundary-bench --bench
//! datapath -- ARGS`). It needs root. The table goes to stdout (or the JSON with `--json`);
//! progress to stderr; the table, the JSON and the chart are also written under
//! `target/bench/`. What is measured and how: the crate's library (`src/lib.rs` and the
//! modules it names).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use boundary_bench as bench;
use clap::Parser as _;

#[derive(clap::Parser)]
#[command(name = "datapath bench")]
struct Args {
    /// Fewer runs and calls: a smoke run of about five minutes.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Run only these steps (comma-separated: per-packet, at-scale, xdp-filter, flood, throughput,
    /// control-plane, observability, verifier, kernel-log, rate-limit, identity), for working on one of them. The targets need
    /// every step.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the report files go (default: the workspace's target/bench).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the benchmark loads eBPF programs and makes network namespaces: run it as root (sudo cargo xtask bench)"
        );
    }
    let mut plan = if args.quick {
        bench::Plan::quick()
    } else {
        bench::Plan::full()
    };
    plan.only = args.only;
    let report = bench::run(&plan, args.quick)?;

    let dir = args.out_dir.unwrap_or_else(|| {
        let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        crate_dir.parent().unwrap_or(crate_dir).join("target/bench")
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let table = bench::report::table(&report);
    let json = serde_json::to_string_pretty(&bench::report::json(&report))?;
    std::fs::write(dir.join("report.txt"), &table)?;
    std::fs::write(dir.join("report.json"), &json)?;
    let png = dir.join("per-packet.png");
    if let Err(e) = bench::chart::draw(&report, &png) {
        eprintln!("warning: no chart: {e:#}");
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{table}");
    }
    eprintln!(
        "wrote {}, {} and {}",
        dir.join("report.txt").display(),
        dir.join("report.json").display(),
        png.display()
    );
    Ok(())
}
