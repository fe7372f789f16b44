use serde::Serialize;

use super::{CliError, PinDirArg};
use crate::datapath::{Maps, PinLayout, pins::LinkPin};

/// Show what is enforcing on this host: interfaces and XDP modes, programs, policy
/// generation, bindings and map occupancy. Reads the pins; works with or without the agent.
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
    identity_bindings: usize,
    maps: Vec<Occupancy>,
    drop_events_sent: u64,
    drop_events_lost: u64,
}

#[derive(Serialize)]
struct Attachment {
    interface: String,
    hook: String,
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
        let generation = maps.datapath_config().map_err(CliError::failed)?.generation;
        let interfaces = layout
            .links()
            .map_err(CliError::failed)?
            .into_iter()
            .map(|(pin, _)| match pin {
                LinkPin::Xdp { mode, interface } => Attachment {
                    interface,
                    hook: format!("xdp ingress ({mode})"),
                },
                LinkPin::TcIngress { interface } => Attachment {
                    interface,
                    hook: "tcx ingress".into(),
                },
                LinkPin::TcEgress { interface } => Attachment {
                    interface,
                    hook: "tcx egress".into(),
                },
            })
            .collect();
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
        let (sent, lost) = maps.event_totals().map_err(CliError::failed)?;
        let report = Report {
            pin_dir: layout.root().display().to_string(),
            interfaces,
            programs,
            policy_generation: generation,
            workloads: maps.names().map_err(CliError::failed)?.len(),
            identity_bindings: bindings,
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
            println!("interface   {:<16} {}", a.interface, a.hook);
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
            "policy      generation {}, {} workloads, {} identity bindings",
            report.policy_generation, report.workloads, report.identity_bindings
        );
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
