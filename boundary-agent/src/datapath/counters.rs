//! Counters as users read them: per workload, direction and reason, summed over CPUs.

use boundary_common::{
    Direction, Reason, Verdict,
    maps::{UNPROTECTED_NAME, counter_index},
    reason::REASON_SLOTS,
};
use serde::Serialize;

use super::maps::{Maps, MapsError};

/// One non-zero counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterEntry {
    pub workload: String,
    pub direction: &'static str,
    pub verdict: &'static str,
    pub reason: String,
    pub reason_code: u8,
    pub packets: u64,
    pub bytes: u64,
}

/// Reads every non-zero counter, optionally for one workload, ordered by workload slot,
/// direction and reason code.
pub fn read(maps: &Maps, workload: Option<&str>) -> Result<Vec<CounterEntry>, MapsError> {
    let names = maps.names()?;
    let rows = maps.counter_rows()?;
    let mut out = Vec::new();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "maxWorkloads is at most 65535"
    )]
    for slot in 0..maps.max_workloads() as u16 {
        let name = match names.get(&slot) {
            Some(n) => n.clone(),
            None if slot == 0 => UNPROTECTED_NAME.to_owned(),
            // A slot freed by a reload may still hold counts until it is reused.
            None => format!("(slot {slot})"),
        };
        if workload.is_some_and(|w| w != name) {
            continue;
        }
        for direction in Direction::ALL {
            let Some(row) = rows.get(counter_index(slot, direction as u8) as usize) else {
                continue;
            };
            for (code, c) in row.counters.iter().enumerate().take(REASON_SLOTS) {
                if c.packets == 0 {
                    continue;
                }
                #[expect(clippy::cast_possible_truncation, reason = "REASON_SLOTS <= 256")]
                let code = code as u8;
                let reason = Reason::from_code(code);
                out.push(CounterEntry {
                    workload: name.clone(),
                    direction: direction.as_str(),
                    verdict: match reason.map(Reason::verdict) {
                        Some(Verdict::Pass) => "pass",
                        Some(Verdict::Drop) => "drop",
                        None => "unknown",
                    },
                    reason: reason
                        .map_or_else(|| format!("unknown_{code}"), |r| r.label().to_owned()),
                    reason_code: code,
                    packets: c.packets,
                    bytes: c.bytes,
                });
            }
        }
    }
    Ok(out)
}

/// Renders entries as an aligned table.
pub fn table(entries: &[CounterEntry]) -> String {
    use std::fmt::Write as _;
    let headers = [
        "WORKLOAD",
        "DIRECTION",
        "VERDICT",
        "REASON",
        "PACKETS",
        "BYTES",
    ];
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                e.workload.clone(),
                e.direction.to_owned(),
                e.verdict.to_owned(),
                e.reason.clone(),
                e.packets.to_string(),
                e.bytes.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: [&str; 6]| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i >= 4 {
                let _ = write!(s, "{cell:>w$}");
            } else {
                let _ = write!(s, "{cell:<w$}");
            }
            s.push_str(if i == 5 { "\n" } else { "  " });
        }
    };
    line(&mut s, headers);
    for r in &rows {
        line(&mut s, [&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    if rows.is_empty() {
        s.push_str("(no packets counted yet)\n");
    }
    s
}
