//! The interfaces a policy is read against: which names a workload's `interfaces:` may list,
//! and the index each name stands for in the datapath's endpoint keys.
//!
//! The agent reads its policy against the interfaces it protects, with their indexes in its
//! network namespace ([`Interfaces::protected`]). `check --config` knows the names but not
//! the host ([`Interfaces::named`]); `check` without it, `trace --policy` and tests know
//! neither ([`Interfaces::unchecked`]). Where the indexes are not the host's, each name gets a
//! stand-in, the same for the same name within one policy, which is all the compiler and the
//! reference evaluator need to tell interfaces apart.

use std::{collections::BTreeMap, net::IpAddr};

use super::{Policy, values::WorkloadInterface};

/// What a policy's interface names are checked against and stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// Name -> index, in the agent config's order; `None`: any valid name, stand-in indexes.
    known: Option<Vec<(String, u32)>>,
}

impl Interfaces {
    /// The interfaces the agent protects, with their interface indexes: a workload may list
    /// only these, and its endpoint keys carry the real indexes.
    pub fn protected(interfaces: impl IntoIterator<Item = (String, u32)>) -> Self {
        Self {
            known: Some(interfaces.into_iter().collect()),
        }
    }

    /// The interfaces an agent config names, on a host that need not have them: names are
    /// checked, indexes are stand-ins (1, 2, ... in the config's order).
    pub fn named(names: impl IntoIterator<Item = String>) -> Self {
        Self::protected(names.into_iter().zip(1..))
    }

    /// Names not checked: any name Linux accepts, each given a stand-in index (1, 2, ... in
    /// the order the policy first lists them).
    pub fn unchecked() -> Self {
        Self { known: None }
    }

    /// The names a workload may list, if they are known.
    pub(super) fn names(&self) -> Option<Vec<String>> {
        self.known
            .as_ref()
            .map(|k| k.iter().map(|(n, _)| n.clone()).collect())
    }

    /// Whether names are checked against an agent's interfaces.
    pub fn checked(&self) -> bool {
        self.known.is_some()
    }

    /// The index `name` stands for, given the indexes handed out so far in `table` (where a
    /// stand-in for an unchecked name goes). `name` was checked as it was read.
    pub(super) fn index(&self, name: &str, table: &BTreeMap<String, u32>) -> u32 {
        if let Some(&i) = table.get(name) {
            return i;
        }
        match &self.known {
            Some(known) => known
                .iter()
                .find(|(n, _)| n == name)
                .map_or(STAND_IN_UNLISTED, |(_, i)| *i),
            None => table.values().max().map_or(1, |m| m + 1),
        }
    }
}

impl Policy {
    /// Gives the interfaces this policy lists the indexes `host` knows them by: for a policy
    /// read against the names alone ([`Interfaces::named`]), as the agent reads its first one,
    /// before it looks its interfaces up (so that a bad policy is refused before anything
    /// touches the kernel).
    pub fn bind_interfaces(&mut self, host: &Interfaces) {
        let known = std::mem::take(&mut self.interfaces);
        for name in known.into_keys() {
            let index = host.index(&name, &self.interfaces);
            self.interfaces.insert(name, index);
        }
        self.interfaces_checked |= host.checked();
    }
}

/// An interface index no workload lists: interface indexes are positive `int`s, so this one
/// is never a device's.
pub const STAND_IN_UNLISTED: u32 = u32::MAX;

/// A workload's `interfaces:` as names, each once; absent: empty (every interface). A
/// refusal says which entry (`None`: the list) and why.
pub(super) fn listed(
    raw: Option<Vec<WorkloadInterface>>,
) -> Result<Vec<String>, (Option<usize>, String)> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.is_empty() {
        return Err((
            None,
            "list at least one interface, or leave the field out for every interface the agent protects".into(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (k, i) in raw.into_iter().enumerate() {
        let name = i.0.as_str().to_owned();
        if out.contains(&name) {
            return Err((Some(k), format!("{name} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// Who owns each address so far, and on which interfaces (empty: every one).
#[derive(Default)]
pub(super) struct Owners(BTreeMap<IpAddr, Vec<(String, Vec<String>)>>);

impl Owners {
    /// Records that `workload` owns `addr` on `interfaces`; refuses an address another
    /// workload already owns on one of them. A workload that lists no interfaces owns its
    /// addresses on all of them, so it shares an address with no one: which of two workloads
    /// an address belongs to never depends on which one is more specific.
    pub(super) fn claim(
        &mut self,
        addr: IpAddr,
        workload: &str,
        interfaces: &[String],
    ) -> Result<(), String> {
        let owners = self.0.entry(addr).or_default();
        for (other, theirs) in owners.iter() {
            let place = match (interfaces.is_empty(), theirs.is_empty()) {
                (true, true) => String::new(),
                (false, true) => " on every interface (it lists none)".to_owned(),
                (true, false) => format!(
                    " on {}; a workload without `interfaces:` owns its addresses on every interface",
                    theirs.join(", ")
                ),
                (false, false) => match interfaces.iter().find(|i| theirs.contains(i)) {
                    Some(shared) => format!(" on {shared}"),
                    None => continue,
                },
            };
            return Err(format!(
                "{addr} already belongs to workload {other:?}{place}"
            ));
        }
        owners.push((workload.to_owned(), interfaces.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, interfaces: &Interfaces) -> Result<Policy, String> {
        Policy::from_str_on("p.yaml", text, interfaces).map_err(|e| e.to_string())
    }

    const TWO_WEBS: &str = "apiVersion: boundary.dev/v1
workloads:
  - name: web
    addresses: [10.0.0.1]
    interfaces:
      - eth1
      - eth0
  - name: edge
    addresses: [10.0.0.1, 10.0.0.2]
    interfaces: [eth2]
";

    #[test]
    fn a_name_the_agent_does_not_protect_is_refused_where_it_is_written() {
        let agent = Interfaces::named(["eth0".into(), "eth1".into()]);
        let e = read(TWO_WEBS, &agent).expect_err("eth2 is not protected");
        assert_eq!(
            e,
            "p.yaml:10:18: workloads[1].interfaces[0]: \"eth2\" is not an interface the agent protects (its config lists eth0, eth1)"
        );
        let e = read(&TWO_WEBS.replace("- eth0", "- eth9"), &agent).expect_err("eth9");
        assert!(
            e.starts_with("p.yaml:7:9: workloads[0].interfaces[1]: \"eth9\" is not"),
            "{e}"
        );
    }

    #[test]
    fn names_map_to_the_hosts_indexes_or_to_stand_ins() {
        let host = Interfaces::protected([
            ("eth0".into(), 3),
            ("eth1".into(), 4),
            ("eth2".into(), 90_000),
        ]);
        let p = read(TWO_WEBS, &host).expect("valid");
        assert!(p.interfaces_checked);
        assert_eq!(
            p.interfaces,
            BTreeMap::from([
                ("eth0".to_owned(), 3),
                ("eth1".to_owned(), 4),
                ("eth2".to_owned(), 90_000)
            ])
        );
        assert_eq!(p.workloads[0].interfaces, ["eth1", "eth0"]);
        // Unchecked: any name, stand-ins in the order the policy first lists them.
        let p = read(TWO_WEBS, &Interfaces::unchecked()).expect("valid");
        assert!(!p.interfaces_checked);
        assert_eq!(
            p.interfaces,
            BTreeMap::from([
                ("eth1".to_owned(), 1),
                ("eth0".to_owned(), 2),
                ("eth2".to_owned(), 3)
            ])
        );
        // Read against the names, then bound to the host: the host's indexes.
        let mut p = read(
            TWO_WEBS,
            &Interfaces::named(["eth0".into(), "eth1".into(), "eth2".into()]),
        )
        .expect("valid");
        assert_eq!(p.interfaces["eth2"], 3);
        p.bind_interfaces(&host);
        assert_eq!(p.interfaces["eth2"], 90_000);
        assert_eq!(p.interfaces["eth0"], 3);
        // Reading does not leave the check behind for the next policy on this thread.
        let _ = read(TWO_WEBS, &Interfaces::named(["eth0".into()]));
        assert!(read(TWO_WEBS, &Interfaces::unchecked()).is_ok());
    }

    #[test]
    fn an_address_has_one_owner_per_interface() {
        let mut owners = Owners::default();
        let a: IpAddr = "10.0.0.1".parse().expect("address");
        let on = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert_eq!(owners.claim(a, "web", &on(&["eth0"])), Ok(()));
        assert_eq!(owners.claim(a, "edge", &on(&["eth1", "eth2"])), Ok(()));
        assert_eq!(
            owners.claim(a, "db", &on(&["eth3", "eth2"])),
            Err("10.0.0.1 already belongs to workload \"edge\" on eth2".into())
        );
        let e = owners.claim(a, "all", &[]).expect_err("on every interface");
        assert!(
            e.starts_with("10.0.0.1 already belongs to workload \"web\" on eth0; a workload without `interfaces:`"),
            "{e}"
        );
        let b: IpAddr = "10.0.0.2".parse().expect("address");
        assert_eq!(owners.claim(b, "all", &[]), Ok(()));
        assert_eq!(
            owners.claim(b, "web", &on(&["eth0"])),
            Err(
                "10.0.0.2 already belongs to workload \"all\" on every interface (it lists none)"
                    .into()
            )
        );
    }

    #[test]
    fn indexes_are_the_hosts_or_stand_ins() {
        let table = BTreeMap::new();
        let host = Interfaces::protected([("eth0".into(), 7), ("eth1".into(), 70_000)]);
        assert_eq!(host.index("eth1", &table), 70_000);
        assert!(host.checked());
        let named = Interfaces::named(["eth0".into(), "eth1".into()]);
        assert_eq!(named.index("eth1", &table), 2);
        let free = Interfaces::unchecked();
        assert!(!free.checked());
        assert_eq!(free.index("x", &table), 1);
        let table = BTreeMap::from([("x".to_owned(), 1), ("y".to_owned(), 2)]);
        assert_eq!(free.index("y", &table), 2);
        assert_eq!(free.index("z", &table), 3);
    }
}
