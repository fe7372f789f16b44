//! Subcommands, one per file; their doc comments are the help text.

pub mod check;
pub mod counters;
pub mod detach;
pub mod monitor;
pub mod run;
pub mod status;
pub mod trace;

use std::path::PathBuf;

use crate::{EXIT_CONFIG, config::DEFAULT_PIN_DIR};

/// Host-level trust-boundary enforcement: XDP/TC eBPF that allows or drops packets by who sent
/// them.
#[derive(Debug, clap::Parser)]
#[command(name = "boundary-agent", version)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Run(run::Run),
    Check(check::Check),
    Trace(trace::Trace),
    Counters(counters::Counters),
    Monitor(monitor::Monitor),
    Status(status::Status),
    Detach(detach::Detach),
}

/// The pin directory option shared by the commands that read pinned state.
#[derive(Debug, clap::Args)]
pub struct PinDirArg {
    /// Where the agent pins its maps, programs and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// A failed command: bad input (exit 64) or a failure at run time (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadInput(_) => EXIT_CONFIG,
            CliError::Failed(_) => 1,
        }
    }

    pub fn failed(e: impl std::fmt::Display) -> Self {
        CliError::Failed(e.to_string())
    }

    pub fn bad_input(e: impl std::fmt::Display) -> Self {
        CliError::BadInput(e.to_string())
    }
}
