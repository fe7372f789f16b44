//! `boundary-agent identity ...`: identity over mTLS.

use std::{path::PathBuf, time::Duration};

use super::{CliError, bindings};
use crate::identity::{
    duration::parse_duration,
    register::{RegisterOptions, register},
};

/// Identity over mTLS: register a workload's SPIFFE ID with an agent; list and revoke bindings.
///
/// Example: boundary-agent identity register --cert svid.pem --key svid.key --ca bundle.pem --agent 10.0.0.1:8444
#[derive(Debug, clap::Args)]
pub struct Identity {
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    Register(Register),
    List(bindings::List),
    Revoke(bindings::Revoke),
}

impl Identity {
    pub fn execute(self) -> Result<(), CliError> {
        match self.command {
            IdentityCommand::Register(c) => c.execute(),
            IdentityCommand::List(c) => c.execute(),
            IdentityCommand::Revoke(c) => c.execute(),
        }
    }
}

/// Present this workload's X.509-SVID to an agent, which admits this host under its SPIFFE ID.
///
/// The agent binds this host's address to the SVID's SPIFFE ID until the certificate or the
/// agent's lease ends.
///
/// Exits 0 when bound, 1 when refused (the reason is printed), 64 for bad input. With
/// `--every`, registers again at that interval forever (a sidecar, or use a systemd timer
/// without it), reading the certificate and key anew each time so that a rotated SVID is
/// presented; a failed attempt is retried sooner (from 5 s, doubling up to `--every`).
///
/// Example: boundary-agent identity register --cert /run/svid/svid.pem --key /run/svid/svid.key --ca /run/svid/bundle.pem --agent 10.0.0.1:8444 --every 10m
#[derive(Debug, clap::Args)]
pub struct Register {
    /// The workload's SVID chain (PEM, leaf first).
    #[arg(long)]
    pub cert: PathBuf,
    /// The SVID's private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// The trust bundle (PEM) the agent's certificate must chain to.
    #[arg(long, required_unless_present = "insecure_skip_agent_verify")]
    pub ca: Option<PathBuf>,
    /// Do not verify the agent's certificate (tests only: anyone on the path could pose as it).
    #[arg(long, conflicts_with = "ca")]
    pub insecure_skip_agent_verify: bool,
    /// The agent's identity endpoint, host:port.
    #[arg(long)]
    pub agent: String,
    /// Register again at this interval, forever (`10m`, `1h`); should be well under the lease.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Timeout for connecting and for each exchange.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
}

impl Register {
    pub fn execute(self) -> Result<(), CliError> {
        let opts = RegisterOptions {
            cert: self.cert,
            key: self.key,
            ca: self.ca,
            agent: self.agent,
            timeout: self.timeout,
        };
        let Some(every) = self.every else {
            return once(&opts);
        };
        let mut retry = Duration::from_secs(5).min(every);
        loop {
            match once(&opts) {
                Ok(()) => {
                    retry = Duration::from_secs(5).min(every);
                    std::thread::sleep(every);
                }
                Err(e) => {
                    eprintln!(
                        "boundary-agent: {}; again in {}s",
                        e.report(),
                        retry.as_secs()
                    );
                    std::thread::sleep(retry);
                    retry = (retry * 2).min(every);
                }
            }
        }
    }
}

fn once(opts: &RegisterOptions) -> Result<(), CliError> {
    match register(opts) {
        Ok(answer) if answer.is_bound() => {
            println!("{}", answer.summary());
            Ok(())
        }
        Ok(answer) => Err(CliError::failed(answer.summary())),
        Err(e) if e.is_bad_input() => Err(CliError::bad_input(e)),
        Err(e) => Err(CliError::failed(e)),
    }
}
