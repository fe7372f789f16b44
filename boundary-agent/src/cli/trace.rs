use std::{net::IpAddr, path::PathBuf};

use boundary_common::{Direction, wire};

use super::{CliError, PinDirArg};
use crate::{
    config::MAX_CONFIGURABLE_WORKLOADS,
    datapath::{Maps, PinLayout},
    explain,
    policy::{self, Policy, SlotTable, Tables, spiffe::SpiffeId},
    reference::Live,
};

/// Explain the verdict for a packet: workload, peer identity, deciding rule and reason.
///
/// The answer comes from compiled map entries, evaluated the way the datapath evaluates them:
/// with `--policy`, from that file (no root needed); without, from the live pinned maps of a
/// running host. Connection tracking and fragment state are not consulted: the answer is for a
/// first packet.
///
/// Example: `boundary-agent trace --src spiffe://example.org/ns/orders/sa/api --dst 10.1.2.3 --proto tcp --dport 8443 --policy policy.yaml`
#[derive(Debug, clap::Args)]
pub struct Trace {
    /// Source: an address, or a SPIFFE ID bound to one in the policy (needs `--policy`).
    #[arg(long)]
    pub src: String,
    /// Destination address.
    #[arg(long)]
    pub dst: IpAddr,
    /// tcp, udp, icmp, icmpv6 or a protocol number.
    #[arg(long)]
    pub proto: String,
    /// Destination port (tcp, udp).
    #[arg(long, default_value_t = 0)]
    pub dport: u16,
    /// Source port (tcp, udp).
    #[arg(long, default_value_t = 40_000)]
    pub sport: u16,
    /// ICMP or ICMPv6 type.
    #[arg(long, default_value_t = 8)]
    pub icmp_type: u8,
    /// Which way the packet crosses the host: ingress (to a local workload) or egress.
    #[arg(long, value_enum, default_value_t = TraceDirection::Ingress)]
    pub direction: TraceDirection,
    /// Compile this policy file instead of reading the live maps.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub pins: PinDirArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TraceDirection {
    Ingress,
    Egress,
}

fn proto_number(s: &str) -> Result<u8, CliError> {
    Ok(match s {
        "tcp" => wire::IPPROTO_TCP,
        "udp" => wire::IPPROTO_UDP,
        "icmp" => wire::IPPROTO_ICMP,
        "icmpv6" => wire::IPPROTO_ICMPV6,
        other => other.parse().map_err(|_| {
            CliError::bad_input(format!(
                "--proto {other:?}: tcp, udp, icmp, icmpv6 or a number"
            ))
        })?,
    })
}

impl Trace {
    pub fn execute(self) -> Result<(), CliError> {
        let tables = match &self.policy {
            Some(path) => {
                let p = Policy::from_file(path).map_err(CliError::bad_input)?;
                Some(
                    // As many slots as any agent config allows: a policy the agent accepts is
                    // one trace can answer for (slot numbers do not change the answer).
                    policy::compile(&p, &SlotTable::new(), MAX_CONFIGURABLE_WORKLOADS)
                        .map_err(CliError::bad_input)?,
                )
            }
            None => None,
        };
        let src = if let Ok(a) = self.src.parse::<IpAddr>() {
            a
        } else {
            let id: SpiffeId = self.src.parse().map_err(CliError::bad_input)?;
            let Some(t) = &tables else {
                return Err(CliError::bad_input(
                    "a SPIFFE ID source needs --policy, to find the address bound to it",
                ));
            };
            explain::bound_address(t, &id, self.dst.is_ipv4()).ok_or_else(|| {
                CliError::bad_input(format!(
                    "no address of this family is bound to {id} in the policy"
                ))
            })?
        };
        let proto = proto_number(&self.proto)?;
        if src.is_ipv4() != self.dst.is_ipv4() {
            return Err(CliError::bad_input(
                "--src and --dst must be of one address family",
            ));
        }
        let pkt = explain::first_packet(
            src,
            self.dst,
            proto,
            (self.sport, self.dport),
            self.icmp_type,
        );
        let direction = match self.direction {
            TraceDirection::Ingress => Direction::Ingress,
            TraceDirection::Egress => Direction::Egress,
        };
        let answer = if let Some(t) = &tables {
            explain::explain(t, t, direction, &pkt)
        } else {
            {
                let layout = PinLayout::new(&self.pins.pin_dir);
                if !layout.exists() {
                    return Err(CliError::failed(format!(
                        "nothing is pinned at {}: give --policy FILE, or run the agent",
                        layout.root().display()
                    )));
                }
                let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
                {
                    // Live maps name their workloads; rules and identities are ids only.
                    let names = Tables {
                        names: maps.names().map_err(CliError::failed)?,
                        ..Tables::default()
                    };
                    explain::explain(
                        &Live::new(&maps).map_err(CliError::failed)?,
                        &names,
                        direction,
                        &pkt,
                    )
                }
            }
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).map_err(CliError::failed)?
            );
        } else {
            println!("verdict   {}", answer.verdict);
            println!("reason    {}", answer.reason);
            println!("workload  {}", answer.workload);
            println!("identity  {}", answer.identity.as_deref().unwrap_or("-"));
            println!(
                "rule      {}",
                answer
                    .rule
                    .as_deref()
                    .unwrap_or("- (no rule: default, failsafe or parse)")
            );
        }
        Ok(())
    }
}
