use std::{net::IpAddr, path::PathBuf};

use boundary_common::{Direction, maps::IFINDEX_ANY, wire};

use super::{CliError, PinDirArg};
use crate::{
    config::{InterfaceName, MAX_CONFIGURABLE_WORKLOADS},
    datapath::{
        Maps, PinLayout,
        maps::{EarnedBinding, monotonic_ns},
        netdev,
    },
    explain::{self, Answer, limit},
    policy::{
        self, BucketTable, Earned, Policy, RuleTable, STAND_IN_UNLISTED, SlotTable, Tables,
        spiffe::SpiffeId,
    },
    reference::{Live, Packet},
};

/// Explain the verdict for a packet: workload, peer identity, deciding rule and reason.
///
/// The answer comes from compiled map entries, evaluated the way the datapath evaluates them:
/// with `--policy`, from that file (no root needed); without, from the live pinned maps of a
/// running host. Connection tracking and fragment state are not consulted: the answer is for a
/// first packet.
///
/// Where a workload is protected on some interfaces only, the answer depends on the one the
/// packet crosses: name it with `--iface` (trace refuses to guess when it matters).
///
/// When the deciding rule has a rate limit, trace shows it; from the live maps, also what its
/// bucket holds now (and the credit CPUs hold) and whether the flow's next packet would pass.
/// A limit kept per source (per destination on egress) shows that peer's own bucket, or that
/// it has none yet (its first packet makes one, full), and the rule-wide ceiling's.
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
    /// The interface the packet crosses (arrives on, or leaves by). With `--policy`, as the
    /// policy's `interfaces:` name it (another name is an interface no workload lists);
    /// without, an interface of this network namespace: run trace where the agent runs.
    #[arg(long)]
    pub iface: Option<InterfaceName>,
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

/// The interface to answer for when none was named: one no workload lists, unless `local`
/// belongs to workloads on the interfaces `scoped` only, where the answer would be a guess.
fn needs_iface(local: IpAddr, scoped: &[String]) -> Result<u32, CliError> {
    if scoped.is_empty() {
        Ok(STAND_IN_UNLISTED)
    } else {
        Err(CliError::bad_input(format!(
            "{local} is protected on some interfaces only ({}): say which the packet crosses with --iface NAME",
            scoped.join(", ")
        )))
    }
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
        // Bindings peers earned over mTLS, from the pins when there are any: a SPIFFE ID
        // source finds its address among them too.
        let earned = self.pinned_earned();
        let tables = match &self.policy {
            Some(path) => {
                let p = Policy::from_file(path).map_err(CliError::bad_input)?;
                // As many slots as any agent config allows: a policy the agent accepts is one
                // trace can answer for (slot numbers do not change the answer).
                let t = policy::compile_with(
                    &p,
                    &SlotTable::new(),
                    &RuleTable::new(),
                    &BucketTable::new(),
                    MAX_CONFIGURABLE_WORKLOADS,
                    &Earned {
                        enabled: !earned.is_empty(),
                        bindings: earned
                            .iter()
                            .filter_map(|b| Some((b.addr, (b.id.parse().ok()?, b.expires))))
                            .collect(),
                        endpoint: None,
                    },
                )
                .map_err(CliError::bad_input)?;
                Some((p, t))
            }
            None => None,
        };
        let src = if let Ok(a) = self.src.parse::<IpAddr>() {
            a
        } else {
            let id: SpiffeId = self.src.parse().map_err(CliError::bad_input)?;
            let wanted = id.to_string();
            let from_earned = || {
                earned
                    .iter()
                    .find(|b| b.id == wanted && b.addr.is_ipv4() == self.dst.is_ipv4())
                    .map(|b| b.addr)
            };
            match &tables {
                Some((_, t)) => explain::bound_address(t, &id, self.dst.is_ipv4()),
                None => from_earned(),
            }
            .ok_or_else(|| {
                CliError::bad_input(format!(
                    "no address of this family is bound to {id}, by the policy (--policy) or by mTLS (the pins)"
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
        let local = match direction {
            Direction::Ingress => self.dst,
            Direction::Egress => src,
        };
        let mut answer = match &tables {
            Some((p, t)) => self.answer_from_policy(p, t, direction, local, &pkt)?,
            None => self.answer_from_pins(direction, local, &pkt)?,
        };
        answer.interface = self.iface.as_ref().map(ToString::to_string);
        print(&answer, self.json)
    }

    /// The live earned bindings in the pins, if there are pins.
    fn pinned_earned(&self) -> Vec<EarnedBinding> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        if !layout.exists() {
            return Vec::new();
        }
        let now = monotonic_ns();
        Maps::from_pins(&layout)
            .map(|m| m.earned().into_iter().filter(|b| b.expires > now).collect())
            .unwrap_or_default()
    }

    /// The answer from a policy file's compiled tables; `--iface` names an interface as the
    /// policy does.
    fn answer_from_policy(
        &self,
        p: &Policy,
        t: &Tables,
        direction: Direction,
        local: IpAddr,
        pkt: &Packet,
    ) -> Result<Answer, CliError> {
        let ifindex = if let Some(name) = &self.iface {
            p.interfaces
                .get(name.as_str())
                .copied()
                .unwrap_or(STAND_IN_UNLISTED)
        } else {
            let scoped: Vec<String> = p
                .interfaces
                .iter()
                .filter(|(_, i)| t.interface_endpoints.contains_key(&(local, **i)))
                .map(|(n, _)| n.clone())
                .collect();
            needs_iface(local, &scoped)?
        };
        Ok(explain::explain(t, t, direction, ifindex, pkt))
    }

    /// The answer from the live pinned maps; `--iface` names an interface of this network
    /// namespace.
    fn answer_from_pins(
        &self,
        direction: Direction,
        local: IpAddr,
        pkt: &Packet,
    ) -> Result<Answer, CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        if !layout.exists() {
            return Err(CliError::failed(format!(
                "nothing is pinned at {}: give --policy FILE, or run the agent",
                layout.root().display()
            )));
        }
        let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
        // One generation for the whole answer, even if a swap happens meanwhile.
        let live = Live::new(&maps).map_err(CliError::failed)?;
        let ifindex = if let Some(name) = &self.iface {
            netdev::index(name).map_err(|e| {
                CliError::bad_input(format!(
                    "--iface {name}: {e} (interfaces are looked up in this network namespace: run trace in the agent's)"
                ))
            })?
        } else {
            let scoped: Vec<String> = maps
                .live_endpoints(live.generation())
                .into_iter()
                .filter(|&(a, i, _)| a == local && i != IFINDEX_ANY)
                .map(|(_, i, _)| netdev::name_of(i).unwrap_or_else(|| format!("interface #{i}")))
                .collect();
            needs_iface(local, &scoped)?
        };
        // Live maps name their workloads; rules and identities are ids only.
        let names = Tables {
            names: maps.names().map_err(CliError::failed)?,
            ..Tables::default()
        };
        let mut answer = explain::explain(&live, &names, direction, ifindex, pkt);
        if let Some(rule) = answer.rule_id {
            // A limit kept per peer is kept per source on ingress, per destination on egress.
            let peer = match direction {
                Direction::Ingress => pkt.src,
                Direction::Egress => pkt.dst,
            };
            answer.limit = limit::live(&maps, live.generation(), rule, direction, peer)
                .map_err(CliError::failed)?;
        }
        Ok(answer)
    }
}

fn print(answer: &Answer, json: bool) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).map_err(CliError::failed)?
        );
    } else {
        println!("verdict   {}", answer.verdict);
        println!("reason    {}", answer.reason);
        if let Some(i) = &answer.interface {
            println!("interface {i}");
        }
        println!("workload  {}", answer.workload);
        println!("identity  {}", answer.identity.as_deref().unwrap_or("-"));
        println!(
            "rule      {}",
            answer
                .rule
                .as_deref()
                .unwrap_or("- (no rule: default, failsafe or parse)")
        );
        if let Some(l) = &answer.limit {
            println!("limit     {}", l.configured);
            if let Some(b) = &l.bucket {
                println!("bucket    {b}");
            }
            if let Some(p) = &l.peer {
                println!("bucket    {p}");
            }
            if let Some(c) = &l.ceiling {
                println!("ceiling   {c}");
            }
        }
    }
    Ok(())
}
