//! Pass 1: a slot for every workload. Slot 0 counts unprotected traffic, so workloads get
//! slots 1 to `max_workloads - 1`. A workload keeps the slot it had, so its counters stay on
//! their row when the file is reordered; new workloads take the lowest slots no workload of
//! the live policy holds, in document order.

use std::collections::{BTreeMap, BTreeSet};

use boundary_common::maps::UNPROTECTED_SLOT;

use super::CompileError;
use crate::policy::model::Policy;

/// Workload name -> slot, as currently installed. Slots are kept across reloads so a workload's
/// counters do not jump to another row when the file is reordered.
pub type SlotTable = BTreeMap<String, u16>;

/// Slot -> workload name for every workload of `policy`, keeping the slots of `previous`.
pub(super) fn assign(
    policy: &Policy,
    previous: &SlotTable,
    max_workloads: u32,
) -> Result<BTreeMap<u16, String>, CompileError> {
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
    let taken: BTreeSet<&str> = names.values().map(String::as_str).collect();
    let fresh: Vec<String> = policy
        .workloads
        .iter()
        .filter(|w| !taken.contains(w.name.as_str()))
        .map(|w| w.name.clone())
        .collect();
    // A new workload takes a slot no workload of the live policy holds: the live generation
    // still counts into its slots until the swap ends, and would count into the newcomer's
    // row. Only when every slot is needed does it take a slot a removed workload leaves.
    let live: BTreeSet<u16> = previous.values().copied().collect();
    let last = u16::try_from(max_workloads.saturating_sub(1)).unwrap_or(u16::MAX);
    let mut next_free = 1u16;
    let mut fallback = 1u16;
    for name in fresh {
        while next_free <= last && (names.contains_key(&next_free) || live.contains(&next_free)) {
            next_free += 1;
        }
        let slot = if next_free <= last {
            next_free
        } else {
            while names.contains_key(&fallback) {
                fallback += 1;
            }
            fallback
        };
        names.insert(slot, name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::tests::parse;

    fn workloads(names: &[&str]) -> Policy {
        let list: Vec<String> = (1..)
            .zip(names)
            .map(|(i, n)| format!("  - {{ name: {n}, addresses: [10.0.0.{i}] }}\n"))
            .collect();
        parse(&format!(
            "apiVersion: boundary.dev/v1\nworkloads:\n{}",
            list.concat()
        ))
    }

    fn slots(names: &BTreeMap<u16, String>) -> Vec<(u16, &str)> {
        names.iter().map(|(s, n)| (*s, n.as_str())).collect()
    }

    #[test]
    fn fresh_workloads_take_the_lowest_slots_in_document_order() {
        let names = assign(&workloads(&["b", "a", "c"]), &SlotTable::new(), 8).expect("fits");
        assert_eq!(slots(&names), [(1, "b"), (2, "a"), (3, "c")]);
    }

    #[test]
    fn workloads_keep_their_slots_and_new_ones_take_slots_nobody_live_holds() {
        let previous: SlotTable = [("a", 1), ("c", 3), ("gone", 2)]
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        let names = assign(&workloads(&["c", "d", "a", "e"]), &previous, 8).expect("fits");
        // Slot 2 is still counting for "gone" until the swap ends: not given to "d".
        assert_eq!(slots(&names), [(1, "a"), (3, "c"), (4, "d"), (5, "e")]);
    }

    #[test]
    fn when_every_slot_is_needed_a_removed_workloads_slot_is_reused() {
        let previous: SlotTable = [("a", 1), ("b", 2), ("c", 3)]
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        let names = assign(&workloads(&["a", "b", "d"]), &previous, 4).expect("fits");
        assert_eq!(slots(&names), [(1, "a"), (2, "b"), (3, "d")]);
    }

    #[test]
    fn slot_0_and_slots_past_the_maps_are_not_kept() {
        let previous: SlotTable = [("a", 0), ("b", 7)]
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect();
        let names = assign(&workloads(&["a", "b"]), &previous, 4).expect("fits");
        assert_eq!(slots(&names), [(1, "a"), (2, "b")]);
    }

    #[test]
    fn too_many_workloads_are_refused_slot_0_aside() {
        assign(&workloads(&["a", "b", "c"]), &SlotTable::new(), 4).expect("3 fit in 4 slots");
        assert_eq!(
            assign(&workloads(&["a", "b", "c"]), &SlotTable::new(), 3),
            Err(CompileError::TooManyWorkloads { count: 3, slots: 3 })
        );
    }
}
