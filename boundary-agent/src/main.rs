//! `boundary-agent`: parses arguments and hands over to `cli`.
#![forbid(unsafe_code)]

use boundary_agent::cli::{Cli, Command, LogFormat};
use clap::Parser as _;

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOUNDARY_LOG")
        // Kernel log records pass at every level: `kernelLog` in the agent config chooses them.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boundary::kernel=trace"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let result = match cli.command {
        Command::Run(c) => c.execute(),
        Command::Apply(c) => c.execute(),
        Command::Confirm(c) => c.execute(),
        Command::Check(c) => c.execute(),
        Command::Trace(c) => c.execute(),
        Command::Counters(c) => c.execute(),
        Command::Monitor(c) => c.execute(),
        Command::Status(c) => c.execute(),
        Command::Detach(c) => c.execute(),
        Command::Identity(c) => c.execute(),
    };
    if let Err(e) = result {
        eprintln!("boundary-agent: {}", e.report());
        std::process::exit(e.exit_code());
    }
}
