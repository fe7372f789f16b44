//! Subcommands, one per file; their doc comments are the help text.

pub mod apply;
pub mod bindings;
pub mod check;
pub mod confirm;
pub mod counters;
pub mod detach;
pub mod identity;
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
    Apply(apply::Apply),
    Confirm(confirm::Confirm),
    Check(check::Check),
    Trace(trace::Trace),
    Counters(counters::Counters),
    Monitor(monitor::Monitor),
    Status(status::Status),
    Detach(detach::Detach),
    #[command(subcommand_required = true)]
    Identity(identity::Identity),
}

/// The pin directory option shared by the commands that read pinned state.
#[derive(Debug, clap::Args)]
pub struct PinDirArg {
    /// Where the agent pins its maps, programs and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// A failed command: bad input (exit 64) or a failure at run time (exit 1). The error keeps
/// its chain of causes; [`CliError::report`] prints it at the edge.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    BadInput(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadInput(_) => EXIT_CONFIG,
            CliError::Failed(_) => 1,
        }
    }

    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        CliError::Failed(e.into())
    }

    pub fn bad_input(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        CliError::BadInput(e.into())
    }

    /// The error and each cause, on one line (see [`crate::report::chain`]).
    pub fn report(&self) -> String {
        crate::report::chain(self)
    }
}
