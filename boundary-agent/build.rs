//! Builds the eBPF object (boundary-ebpf) with the pinned nightly for bpfel-unknown-none and
//! leaves it in `OUT_DIR`, where `datapath::object` embeds it.
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// Keep in step with `xtask/src/setup.rs` (`NIGHTLY`), which installs it.
const NIGHTLY: &str = "nightly-2026-10-29";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root_dir = format!("{manifest_dir}/../boundary-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "boundary-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(NIGHTLY),
    )
    .context("building the eBPF object failed; run `cargo xtask setup` to install the pinned nightly, rust-src and bpf-linker")
}
