use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use super::{CliError, PinDirArg};
use crate::{
    config::MAX_CONFIGURABLE_WORKLOADS,
    datapath::{Maps, PinLayout, events::EventReader},
    policy::{self, Policy, SlotTable},
};

/// Stream drop events: which workload dropped what, from whom, and why.
///
/// Events are sampled in the datapath (at most 1000 per second per CPU, bursts of 200), so a
/// flood cannot starve the host; `boundary_drop_events_lost_total` counts the rest. Audit-mode
/// would-be drops are shown too. One reader at a time: two monitors split the stream.
///
/// Example: `boundary-agent monitor --workload payments-api --reason default_deny --json`
#[derive(Debug, clap::Args)]
pub struct Monitor {
    #[command(flatten)]
    pub pins: PinDirArg,
    /// Only this workload.
    #[arg(long)]
    pub workload: Option<String>,
    /// Only this reason (as in `counters`, e.g. `default_deny`).
    #[arg(long)]
    pub reason: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    /// Exit after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Name rules from this policy file (the one the agent runs).
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

impl Monitor {
    pub fn execute(self) -> Result<(), CliError> {
        let layout = PinLayout::new(&self.pins.pin_dir);
        if !layout.exists() {
            return Err(CliError::failed(format!(
                "nothing is pinned at {}: is the agent deployed on this host?",
                layout.root().display()
            )));
        }
        let maps = Maps::from_pins(&layout).map_err(CliError::failed)?;
        // Rule ids are the running agent's: the file's rules are compiled keeping them.
        let rules = match &self.policy {
            Some(p) => {
                let p = Policy::from_file(p).map_err(CliError::bad_input)?;
                let ids = maps.rule_table().map_err(CliError::failed)?;
                let buckets = maps.bucket_table().map_err(CliError::failed)?;
                policy::compile_keeping(
                    &p,
                    &SlotTable::new(),
                    &ids,
                    &buckets,
                    MAX_CONFIGURABLE_WORKLOADS,
                )
                .map_err(CliError::bad_input)?
                .rules
            }
            None => BTreeMap::new(),
        };
        let mut reader = EventReader::open(&layout, &maps).map_err(CliError::failed)?;
        let deadline = self
            .duration
            .map(|s| std::time::Instant::now() + Duration::from_secs(s));
        let mut shown = 0;
        let mut last_names = std::time::Instant::now();
        loop {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d)
                || self.count.is_some_and(|c| shown >= c)
            {
                return Ok(());
            }
            if last_names.elapsed() > Duration::from_secs(2) {
                reader.set_names(maps.names().map_err(CliError::failed)?);
                last_names = std::time::Instant::now();
            }
            for e in reader.poll(Duration::from_millis(200)) {
                if self.workload.as_ref().is_some_and(|w| *w != e.workload)
                    || self.reason.as_ref().is_some_and(|r| *r != e.reason)
                    || self.count.is_some_and(|c| shown >= c)
                {
                    continue;
                }
                shown += 1;
                let rule = e.rule.map(|r| {
                    rules
                        .get(&r)
                        .map_or_else(|| format!("#{r}"), |i| format!("#{r} {}", i.name))
                });
                if self.json {
                    let mut v = serde_json::to_value(&e).map_err(CliError::failed)?;
                    if let Some(name) = &rule {
                        v["rule_name"] = serde_json::Value::String(name.clone());
                    }
                    println!("{v}");
                } else {
                    let ep = |a: Option<std::net::IpAddr>, p: u16| match (a, p) {
                        (Some(std::net::IpAddr::V6(a)), p) if p != 0 => format!("[{a}]:{p}"),
                        (Some(a), p) if p != 0 => format!("{a}:{p}"),
                        (Some(a), _) => a.to_string(),
                        (None, _) => "?".into(),
                    };
                    println!(
                        "{:.3} {} {} {} {} {} -> {} proto {}{}{} len {}",
                        e.time,
                        e.workload,
                        e.direction,
                        e.verdict,
                        e.reason,
                        ep(e.src, e.sport),
                        ep(e.dst, e.dport),
                        e.proto,
                        e.identity
                            .map_or_else(String::new, |i| format!(" identity {i}")),
                        rule.map_or_else(String::new, |r| format!(" rule {r}")),
                        e.len
                    );
                }
            }
        }
    }
}
