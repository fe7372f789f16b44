//! Builds the eBPF object (boundary-ebpf) with the pinned nightly for bpfel-unknown-none and
//! leaves it in `OUT_DIR`, where `datapath::object` embeds it.
use anyhow::Context as _;
use aya_build::{Package, Toolchain};

/// The eBPF crate's toolchain file: the one place the nightly is pinned (`cargo xtask setup`
/// installs what it names).
const TOOLCHAIN_FILE: &str = include_str!("../boundary-ebpf/rust-toolchain.toml");

/// The `channel = "..."` of a rust-toolchain.toml.
fn channel(toml: &str) -> anyhow::Result<&str> {
    toml.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .find_map(|rest| {
            rest.trim()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .split('"')
                .next()
        })
        .context("boundary-ebpf/rust-toolchain.toml names no channel")
}

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root_dir = format!("{manifest_dir}/../boundary-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "boundary-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Custom(channel(TOOLCHAIN_FILE)?),
    )
    .context("building the eBPF object failed; run `cargo xtask setup` to install the pinned nightly, rust-src and bpf-linker")
}
