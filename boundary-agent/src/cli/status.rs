use std::collections::{BTreeMap, BTreeSet};

use boundary_common::maps::IFINDEX_ANY;
use serde::Serialize;

use super::{CliError, PinDirArg};
use crate::datapath::{Maps, PinLayout, linkinfo, netdev, pins::LinkPin};

/// Show what is enforcing on this host: interfaces and XDP modes, programs, policy
/// generation, workloads protected on some interfaces only, bindings and map occupancy.
/// Reads the pins; works with or without the agent. A link whose interface is gone or was
/// re-created since is marked defunct (a running agent replaces it). Interface indexes are named as this
/// network namespace names them (where no protected interface has that index, the index is
/// shown): run it where the agent runs.
///
/// Example: boundary-agent status --json
#[derive(Debug, clap::Args)]
pub struct Status {
    #[command(flatten)]
    pub pins: PinDirArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    pin_dir: String,
    interfaces: Vec<Attachment>,
    programs: Vec<Program>,
    policy_generation: u8,
    workloads: usize,
    /// Workloads protected on some interfaces only (the others are on every one).
    interface_scoped: Vec<Scoped>,
    identity_bindings: usize,
    /// Bindings can be earned over mTLS (the agent runs its identity endpoint).
    identity_endpoint: bool,
    /// Of `identity_bindings`, those earned over mTLS and not expired.
    earned_bindings: usize,
    maps: Vec<Occupancy>,
    drop_events_sent: u64,
    drop_events_lost: u64,
}

#[derive(Serialize)]
struct Attachment {
    interface: String,
    hook: String,
    /// The link no longer holds the program on an interface of that name: its device is gone
    /// or was re-created (a running agent replaces or removes it).
    defunct: bool,
}

#[derive(Serialize)]
struct Scoped {
    workload: String,
    interfaces: Vec<String>,
}

#[derive(Serialize)]
struct Program {
    name: String,
    id: u32,
    tag: String,
    verified_insns: Option<u32>,
    jited_bytes: u32,
}

#[derive(Serialize)]
struct Occupancy {
    map: &'static str,
    entries: usize,
    capacity: u32,
}

/// What the link pins say is attached where.
fn attachments(layout: &PinLayout) -> Result<Vec<Attachment>, CliError> {
    Ok(layout
        .links()
        .map_err(CliError::failed)?
        .into_iter()
        .map(|(pin, path)| {
            let defunct = linkinfo::pinned_link_ifindex(&path)
                .is_ok_and(|i| i == 0 || netdev::name_of(i).as_deref() != Some(pin.interface()));
            let (interface, hook) = match pin {
                LinkPin::Xdp { mode, interface } => (interface, format!("xdp ingress ({mode})")),
                LinkPin::TcIngress { interface } => (interface, "tcx ingress".into()),
                LinkPin::TcEgress { interface } => (interface, "tcx egress".into()),
            };
            Attachment {
                interface,
                hook,
                defunct,
            }
        })
        .collect())
}

/// The pinned programs, as the kernel describes them.
fn programs(layout: &PinLayout) -> Vec<Program> {
    let mut programs = Vec::new();
    for kind in ["xdp", "tc-ingress", "tc"] {
        if let Ok(info) = aya::programs::ProgramInfo::from_pin(layout.program(kind)) {
            programs.push(Program {
                name: info.name_as_str().unwrap_or(kind).to_owned(),
                id: info.id(),
                tag: format!("{:016x}", info.tag()),
                verified_insns: info.verified_instruction_count(),
                jited_bytes: info.size_jitted(),
            });
        }
    }
    programs
}

/// The workloads with endpoints on particular interfaces, and those interfaces, named as this
/// namespace names them when the name is one the agent attached to (else by index).
fn scoped(
    maps: &Maps,
    generation: u8,
    names: &BTreeMap<u16, String>,
    attached: &[Attachment],
) -> Vec<Scoped> {
    let mut by_slot: BTreeMap<u16, BTreeSet<u32>> = BTreeMap::new();
    for (_, ifindex, e) in maps.live_endpoints(generation) {
        if ifindex != IFINDEX_ANY {
            by_slot.entry(e.slot).or_default().insert(ifindex);
        }
    }
    let name = |i: u32| {
        netdev::name_of(i)
            .filter(|n| attached.iter().any(|a| a.interface == *n))
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    by_slot
        .into_iter()
        .map(|(slot, ifindexes)| Scoped {
            workload: names
                .get(&slot)
                .cloned()
                .unwrap_or_else(|| format!("slot {slot}")),
            interfaces: ifindexes.into_iter().map(name).collect(),
        })
        .collect()
}

impl Status {
    pub fn execute(self) -> Result<(), CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        if !layout.exists() {
            return Err(CliError::failed(format!(
                "nothing is pinned at {}: Boundary is not enforcing on this host",
                layout.root().display()
            )));
        }
        let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
        let config = maps.datapath_config().map_err(CliError::failed)?;
        let generation = config.generation;
        let now = crate::datapath::maps::monotonic_ns();
        let earned = maps.earned().iter().filter(|b| b.expires > now).count();
        let interfaces = attachments(&layout)?;
        let programs = programs(&layout);
        let occupancy: Vec<Occupancy> = maps
            .occupancy(generation)
            .into_iter()
            .map(|o| Occupancy {
                map: o.map,
                entries: o.entries,
                capacity: o.capacity,
            })
            .collect();
        let bindings = occupancy[1].entries;
        let names = maps.names().map_err(CliError::failed)?;
        let interface_scoped = scoped(&maps, generation, &names, &interfaces);
        let (sent, lost) = maps.event_totals().map_err(CliError::failed)?;
        let report = Report {
            pin_dir: layout.root().display().to_string(),
            interfaces,
            programs,
            policy_generation: generation,
            workloads: names.len(),
            interface_scoped,
            identity_bindings: bindings,
            identity_endpoint: config.flags & boundary_common::maps::CFG_EARNED != 0,
            earned_bindings: earned,
            maps: occupancy,
            drop_events_sent: sent,
            drop_events_lost: lost,
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(CliError::failed)?
            );
            return Ok(());
        }
        println!("pinned at   {}", report.pin_dir);
        for a in &report.interfaces {
            let defunct = if a.defunct {
                "  DEFUNCT: the interface is gone or was re-created"
            } else {
                ""
            };
            println!("interface   {:<16} {}{defunct}", a.interface, a.hook);
        }
        for p in &report.programs {
            println!(
                "program     {:<16} id {} tag {} verified {} insns, {} bytes JITed",
                p.name,
                p.id,
                p.tag,
                p.verified_insns
                    .map_or_else(|| "?".into(), |n| n.to_string()),
                p.jited_bytes
            );
        }
        println!(
            "policy      generation {}, {} workloads ({} on some interfaces only), {} identity bindings",
            report.policy_generation,
            report.workloads,
            report.interface_scoped.len(),
            report.identity_bindings
        );
        if report.identity_endpoint {
            println!(
                "identity    endpoint on, {} bindings earned over mTLS (boundary-agent identity list)",
                report.earned_bindings
            );
        }
        for s in &report.interface_scoped {
            println!(
                "workload    {:<16} on {} only",
                s.workload,
                s.interfaces.join(", ")
            );
        }
        for m in &report.maps {
            println!(
                "map         {:<16} {:>8} / {}",
                m.map, m.entries, m.capacity
            );
        }
        println!(
            "events      {} sent, {} lost to sampling",
            report.drop_events_sent, report.drop_events_lost
        );
        Ok(())
    }
}
