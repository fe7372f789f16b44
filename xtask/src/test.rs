//! `cargo xtask test`: formatting, lints, and the three test tiers.

use crate::{build_agent, cargo, image, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Run the differential test for 10^7 packets instead of 10^5 (minutes, not seconds).
    #[arg(long)]
    pub soak: bool,
    /// Extra arguments for `cargo test` (a filter, `--nocapture`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    setup::run()?;
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    let agent = build_agent()?;
    let agent = agent.display().to_string();
    // The OCI image, from a dev build (quicker; the image test checks the assembly, which
    // the profile does not change). tests/tests/oci_image.rs and e2e_kubernetes.rs use it.
    let image = image::build(&image::Args {
        debug: true,
        output: Some(image::target_dir().join("image/debug")),
    })?;
    let image = image.layout.display().to_string();
    let mut test_args = vec!["test", "--workspace"];
    test_args.extend(args.cargo_test_args.iter().map(String::as_str));
    let packets = if args.soak { "10000000" } else { "100000" };
    cargo(
        &test_args,
        &[
            ("BOUNDARY_AGENT_BIN", &agent),
            ("BOUNDARY_IMAGE", &image),
            ("BOUNDARY_DIFF_PACKETS", packets),
        ],
    )
}
