//! `cargo xtask <task>`: the project's tasks. Each lives in its own module.

mod bench;
mod demo;
mod image;
mod install;
mod setup;
mod test;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use clap::Parser as _;

#[derive(clap::Parser)]
#[command(name = "cargo xtask")]
enum Task {
    /// Install what a fresh machine lacks (apt packages, pinned toolchains, bpf-linker, bpffs).
    /// Idempotent; the other tasks run it first.
    Setup,
    /// fmt check, clippy (`-D warnings`), unit, kernel (`BPF_PROG_TEST_RUN`) and end-to-end tests.
    ///
    /// Kernel and end-to-end tests need root; under CI=true they fail rather than skip.
    Test(test::Args),
    /// A throwaway lab: client and server namespaces, the agent protecting the server, normal
    /// and malformed traffic, then the per-workload counter table. Cleans up on exit or Ctrl-C.
    Demo(demo::Args),
    /// Benchmarks, side by side in one run: per-packet cost by policy path and prefix count
    /// against an empty program and xdp-filter, a denied flood against nftables, TCP
    /// throughput against no program and nftables, control-plane timings, `/metrics` time and
    /// agent CPU under a flood, verifier budget. Table on stdout, JSON and a PNG chart under
    /// target/bench/. The harness is the `boundary-bench` crate (bench/).
    ///
    /// Needs root. About 10 minutes on 2 vCPUs once built (--quick: about 5).
    Bench(bench::Args),
    /// Install the agent as a systemd service: the release binary in /usr/local/bin, the unit
    /// in /etc/systemd/system, the example agent.yaml and policy.yaml in /etc/boundary (an
    /// existing one is never overwritten), then `systemctl daemon-reload` if systemd runs.
    ///
    /// Example: sudo cargo xtask install && sudo systemctl enable --now boundary-agent
    Install(install::InstallArgs),
    /// Remove what `install` put, but configuration changed since (kept, and said so). Refuses
    /// while the pinned datapath is there: `boundary-agent detach` first.
    ///
    /// Example: sudo systemctl stop boundary-agent && sudo boundary-agent detach && sudo cargo xtask uninstall
    Uninstall(install::UninstallArgs),
    /// The agent as an OCI image: a static (musl) binary alone on an empty base, entrypoint
    /// `/boundary-agent`, labelled with its version. Writes an OCI image layout and its tar
    /// archive under target/image/ (no container engine needed).
    ///
    /// Example: cargo xtask image (then `skopeo copy oci:target/image/boundary-agent-0.1.0:0.1.0
    /// docker://REGISTRY/boundary-agent:0.1.0`)
    Image(image::Args),
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::Setup => setup::run(),
        Task::Test(args) => test::run(&args),
        Task::Demo(args) => demo::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Install(args) => install::install(&args),
        Task::Uninstall(args) => install::uninstall(&args),
        Task::Image(args) => image::run(&args),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs `cargo ARGS` in the workspace root (through rustup's proxy, so rust-toolchain.toml
/// applies), failing with the command line if it fails.
pub fn cargo(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Let rust-toolchain.toml pick the toolchain of nested cargo calls.
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds the agent (debug) and returns its path.
pub fn build_agent() -> anyhow::Result<PathBuf> {
    cargo(&["build", "--package", "boundary-agent"], &[])?;
    Ok(root().join("target/debug/boundary-agent"))
}
