//! Validated policy -> the exact map entries the datapath needs. Pure and deterministic.

use std::{collections::BTreeMap, net::IpAddr};

use boundary_common::maps::{
    Action, Endpoint, EndpointKey, Mode, UNPROTECTED_SLOT, WORKLOAD_NAME_LEN,
};

use super::model::{DefaultAction, Policy, WorkloadMode};

/// Workload name -> slot, as currently installed. Slots are kept across reloads so a workload's
/// counters do not jump to another row when the file is reordered.
pub type SlotTable = BTreeMap<String, u16>;

/// The compiled form of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// Slot -> workload name, for every slot in use (never slot 0).
    pub names: BTreeMap<u16, String>,
    /// Local address -> endpoint, sorted by key.
    pub endpoints: Vec<(EndpointKey, Endpoint)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error(
        "{count} workloads do not fit in {slots} slots (slot 0 is reserved); raise maxWorkloads in the agent config"
    )]
    TooManyWorkloads { count: usize, slots: u32 },
}

/// Compiles `policy` for a datapath with `max_workloads` slots, keeping the slots of `previous`
/// for workloads that are still there.
pub fn compile(
    policy: &Policy,
    previous: &SlotTable,
    max_workloads: u32,
) -> Result<Compiled, CompileError> {
    let usable = max_workloads.saturating_sub(1) as usize;
    if policy.workloads.len() > usable {
        return Err(CompileError::TooManyWorkloads {
            count: policy.workloads.len(),
            slots: max_workloads,
        });
    }
    let mut names = BTreeMap::new();
    for w in &policy.workloads {
        if let Some(&slot) = previous.get(&w.name)
            && slot != UNPROTECTED_SLOT
            && u32::from(slot) < max_workloads
        {
            names.insert(slot, w.name.clone());
        }
    }
    let mut next_free = 1u16;
    let mut slot_of = BTreeMap::new();
    for (slot, name) in &names {
        slot_of.insert(name.clone(), *slot);
    }
    for w in &policy.workloads {
        if slot_of.contains_key(&w.name) {
            continue;
        }
        while names.contains_key(&next_free) {
            next_free += 1;
        }
        names.insert(next_free, w.name.clone());
        slot_of.insert(w.name.clone(), next_free);
    }

    let mut endpoints: Vec<(EndpointKey, Endpoint)> = policy
        .workloads
        .iter()
        .flat_map(|w| {
            let value = Endpoint {
                slot: slot_of[&w.name],
                mode: match w.mode {
                    WorkloadMode::Enforce => Mode::Enforce as u8,
                    WorkloadMode::Audit => Mode::Audit as u8,
                },
                ingress_default: action(w.ingress_default) as u8,
                egress_default: action(w.egress_default) as u8,
                pad: [0; 3],
            };
            w.addresses.iter().map(move |a| (endpoint_key(*a), value))
        })
        .collect();
    endpoints.sort_by_key(|(k, _)| (k.family, k.addr));
    Ok(Compiled { names, endpoints })
}

fn action(d: DefaultAction) -> Action {
    match d {
        DefaultAction::Allow => Action::Pass,
        DefaultAction::Deny => Action::Drop,
    }
}

/// The endpoint map key for an address. IPv4-mapped IPv6 addresses stay IPv6: the datapath
/// sees them as IPv6 packets.
pub fn endpoint_key(addr: IpAddr) -> EndpointKey {
    match addr {
        IpAddr::V4(a) => EndpointKey::v4(a.octets()),
        IpAddr::V6(a) => EndpointKey::v6(a.octets()),
    }
}

/// A name as stored in the names map: NUL-padded.
pub fn encode_name(name: &str) -> [u8; WORKLOAD_NAME_LEN] {
    let mut out = [0u8; WORKLOAD_NAME_LEN];
    let n = name.len().min(WORKLOAD_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The inverse of [`encode_name`]; `None` for an empty (unused) slot.
pub fn decode_name(raw: &[u8; WORKLOAD_NAME_LEN]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    (end > 0).then(|| String::from_utf8_lossy(&raw[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn policy(names: &[&str]) -> Policy {
        let mut text = String::from("apiVersion: boundary.dev/v1\nworkloads:\n");
        for (i, n) in names.iter().enumerate() {
            let _ = writeln!(text, "- name: {n}\n  addresses: [10.0.0.{}]", i + 1);
        }
        Policy::from_str("p.yaml", &text).unwrap()
    }

    #[test]
    fn slots_are_stable_across_reorder_and_removal() {
        let first = compile(&policy(&["a", "b", "c"]), &SlotTable::new(), 16).unwrap();
        assert_eq!(
            first.names.values().cloned().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let table: SlotTable = first.names.iter().map(|(s, n)| (n.clone(), *s)).collect();
        // b removed, d added, order changed: a and c keep theirs, d takes b's freed slot.
        let second = compile(&policy(&["c", "d", "a"]), &table, 16).unwrap();
        assert_eq!(second.names[&1], "a");
        assert_eq!(second.names[&3], "c");
        assert_eq!(second.names[&2], "d");
    }

    #[test]
    fn compile_is_deterministic_and_complete() {
        let p = policy(&["a", "b"]);
        let x = compile(&p, &SlotTable::new(), 16).unwrap();
        assert_eq!(x, compile(&p, &SlotTable::new(), 16).unwrap());
        assert_eq!(x.endpoints.len(), 2);
        assert_eq!(x.endpoints[0].0, EndpointKey::v4([10, 0, 0, 1]));
        assert_eq!(x.endpoints[0].1.slot, 1);
        assert_eq!(x.endpoints[0].1.ingress_default, Action::Pass as u8);
    }

    #[test]
    fn too_many_workloads_is_an_error() {
        let e = compile(&policy(&["a", "b", "c"]), &SlotTable::new(), 3).unwrap_err();
        assert_eq!(e, CompileError::TooManyWorkloads { count: 3, slots: 3 });
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            decode_name(&encode_name("payments-api")).as_deref(),
            Some("payments-api")
        );
        assert_eq!(decode_name(&[0; WORKLOAD_NAME_LEN]), None);
    }
}
