//! `identity list` and `identity revoke`: through the running agent's control socket; with no
//! agent running, from the pins (list: earned bindings only) and under the agent's lock
//! (revoke), so nothing writes the maps behind a running agent's back.

use std::{io, net::IpAddr, path::PathBuf};

use super::CliError;
use crate::{
    agent::control::{self, BindingView},
    config::AgentConfig,
    datapath::{Maps, PinLayout, PinLock, maps::EarnedBinding},
};

/// List the peers bound to an identity: static (the policy's) and earned over mTLS.
///
/// Example: boundary-agent identity list --config /etc/boundary/agent.yaml --json
#[derive(Debug, clap::Args)]
pub struct List {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Take out the earned bindings of a SPIFFE ID or of an address, at once.
///
/// Example: `boundary-agent identity revoke --config /etc/boundary/agent.yaml spiffe://example.org/ns/a/sa/b`
#[derive(Debug, clap::Args)]
pub struct Revoke {
    /// The agent configuration file (YAML).
    #[arg(long)]
    pub config: PathBuf,
    /// A SPIFFE ID (every address bound to it) or an address.
    pub target: String,
}

/// Whether `e` says no agent listens on the socket.
fn no_agent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn answer(status: u16, body: &str) -> Result<Vec<BindingView>, CliError> {
    if status == 200 {
        return serde_json::from_str(body).map_err(CliError::failed);
    }
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    Err(if status == 400 {
        CliError::bad_input(message)
    } else {
        CliError::failed(format!("the agent answered {status}: {message}"))
    })
}

fn print(list: &[BindingView], json: bool) -> Result<(), CliError> {
    if json {
        println!("{}", serde_json::to_string(list).map_err(CliError::failed)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<6} {:<21} {:<20} SPIFFE ID",
        "ADDRESS", "SOURCE", "EXPIRES", "SERIAL"
    );
    for b in list {
        println!(
            "{:<40} {:<6} {:<21} {:<20} {}",
            b.address,
            b.source,
            b.expires.as_deref().unwrap_or("-"),
            b.serial.as_deref().unwrap_or("-"),
            b.spiffe_id
        );
    }
    Ok(())
}

fn pinned_maps(config: &AgentConfig) -> Result<Maps, CliError> {
    let layout = PinLayout::new(&config.pin_dir);
    if !layout.exists() {
        return Err(CliError::failed(format!(
            "nothing is pinned at {} and no agent answers at {}",
            layout.root().display(),
            control::socket_path(&config.state_dir).display()
        )));
    }
    Maps::from_pins(&layout).map_err(CliError::failed)
}

impl List {
    pub fn execute(self) -> Result<(), CliError> {
        let config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        let socket = control::socket_path(&config.state_dir);
        let list = match control::call(&socket, "GET", "/v1/identities") {
            Ok((status, body)) => answer(status, &body)?,
            Err(e) if no_agent(&e) => {
                eprintln!(
                    "no agent answers at {}: earned bindings from the pins (static ones are listed while the agent runs)",
                    socket.display()
                );
                let maps = pinned_maps(&config)?;
                let now = crate::datapath::maps::monotonic_ns();
                maps.earned()
                    .iter()
                    .filter(|b| b.expires > now)
                    .map(BindingView::earned)
                    .collect()
            }
            Err(e) => return Err(CliError::failed(format!("{}: {e}", socket.display()))),
        };
        print(&list, self.json)
    }
}

impl Revoke {
    pub fn execute(self) -> Result<(), CliError> {
        let config = AgentConfig::from_file(&self.config).map_err(CliError::bad_input)?;
        let target = self.target.trim();
        let address = target.parse::<IpAddr>().ok();
        if address.is_none() && !target.starts_with("spiffe://") {
            return Err(CliError::bad_input(format!(
                "{target:?} is neither an address nor a SPIFFE ID"
            )));
        }
        let socket = control::socket_path(&config.state_dir);
        let path = format!(
            "/v1/identities/revoke?target={}",
            control::percent_encode(target)
        );
        let gone = match control::call(&socket, "POST", &path) {
            Ok((status, body)) => answer(status, &body)?,
            Err(e) if no_agent(&e) => {
                // No agent: the pins, under the lock a starting agent would wait for.
                let layout = PinLayout::new(&config.pin_dir);
                let _lock = PinLock::acquire(&layout).map_err(|e| {
                    CliError::failed(format!(
                        "no agent answers at {} but the pins are locked ({e}): is an agent starting?",
                        socket.display()
                    ))
                })?;
                let mut maps = pinned_maps(&config)?;
                let which: Vec<EarnedBinding> = maps
                    .earned()
                    .into_iter()
                    .filter(|b| match address {
                        Some(a) => b.addr == a,
                        None => b.id == target,
                    })
                    .collect();
                for b in &which {
                    maps.unbind_live(b.addr).map_err(CliError::failed)?;
                }
                which.iter().map(BindingView::earned).collect()
            }
            Err(e) => return Err(CliError::failed(format!("{}: {e}", socket.display()))),
        };
        if gone.is_empty() {
            return Err(CliError::failed(format!("no earned binding of {target}")));
        }
        for b in &gone {
            println!("revoked {} ({})", b.address, b.spiffe_id);
        }
        Ok(())
    }
}
