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

use super::Policy;
use crate::config::InterfacePattern;

/// What a policy's interface names are checked against and stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    /// The agent config's entries (names and patterns) a workload may name interfaces by;
    /// `None`: any valid name.
    allowed: Option<Vec<InterfacePattern>>,
    /// Name -> index: the host's, for the interfaces present, or stand-ins.
    indexes: Vec<(String, u32)>,
}

/// The first of the stand-in indexes given to an interface the config allows but the host
/// does not have (yet): above every `int` ifindex, so never a device's, and distinct per name
/// (two workloads may own one address on two such interfaces).
pub const STAND_IN_ABSENT: u32 = 0x8000_0000;

impl Interfaces {
    /// The interfaces named by `indexes`, exactly, with their interface indexes (tests).
    pub fn protected(indexes: impl IntoIterator<Item = (String, u32)>) -> Self {
        let indexes: Vec<(String, u32)> = indexes.into_iter().collect();
        let allowed = indexes
            .iter()
            .filter_map(|(n, _)| InterfacePattern::try_from(n.clone()).ok())
            .collect();
        Self {
            allowed: Some(allowed),
            indexes,
        }
    }

    /// What the agent protects: a workload may list any name the config's `entries` name or
    /// match; those present have their interface indexes (`indexes`), the others stand-ins
    /// until they appear (the agent then reads its policy again).
    pub fn host(
        entries: impl IntoIterator<Item = InterfacePattern>,
        indexes: impl IntoIterator<Item = (String, u32)>,
    ) -> Self {
        Self {
            allowed: Some(entries.into_iter().collect()),
            indexes: indexes.into_iter().collect(),
        }
    }

    /// The interfaces an agent config names, on a host that need not have them: names are
    /// checked, indexes are stand-ins (1, 2, ... for exact names in the config's order).
    pub fn named(entries: impl IntoIterator<Item = InterfacePattern>) -> Self {
        let allowed: Vec<InterfacePattern> = entries.into_iter().collect();
        let indexes = allowed
            .iter()
            .filter_map(InterfacePattern::exact)
            .map(ToString::to_string)
            .zip(1..)
            .collect();
        Self {
            allowed: Some(allowed),
            indexes,
        }
    }

    /// Names not checked: any name Linux accepts, each given a stand-in index (1, 2, ... in
    /// the order the policy first lists them).
    pub fn unchecked() -> Self {
        Self::default()
    }

    /// The entries a workload's names are checked against, if they are known.
    pub(super) fn names(&self) -> Option<Vec<InterfacePattern>> {
        self.allowed.clone()
    }

    /// Whether names are checked against an agent's interfaces.
    pub fn checked(&self) -> bool {
        self.allowed.is_some()
    }

    /// The index `name` has here, if it is one of the interfaces present (or named).
    pub fn host_index(&self, name: &str) -> Option<u32> {
        self.indexes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| *i)
    }

    /// The index `name` stands for, given the indexes handed out so far in `table` (where a
    /// stand-in goes). `name` was checked as it was read.
    pub(super) fn index(&self, name: &str, table: &BTreeMap<String, u32>) -> u32 {
        if let Some(&i) = table.get(name) {
            return i;
        }
        if let Some(i) = self.host_index(name) {
            return i;
        }
        match &self.allowed {
            Some(_) => table
                .values()
                .filter(|&&i| i >= STAND_IN_ABSENT && i != STAND_IN_UNLISTED)
                .max()
                .map_or(STAND_IN_ABSENT, |m| m + 1),
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
        self.conflict(addr, Some(interfaces))?;
        self.0
            .entry(addr)
            .or_default()
            .push((workload.to_owned(), interfaces.to_vec()));
        Ok(())
    }

    /// Refuses `addr` for a workload on `interfaces` (empty: every one) if another owns it on
    /// one of them. While the workload's interfaces are not known yet (`None`), only an
    /// owner on every interface is certain to share one with it.
    pub(super) fn conflict(
        &self,
        addr: IpAddr,
        interfaces: Option<&[String]>,
    ) -> Result<(), String> {
        for (other, theirs) in self.0.get(&addr).into_iter().flatten() {
            let place = match (interfaces, theirs.is_empty()) {
                (_, true) => " on every interface (it lists none)".to_owned(),
                (None, false) => continue,
                (Some([]), false) => format!(
                    " on {}; a workload without `interfaces:` owns its addresses on every interface",
                    theirs.join(", ")
                ),
                (Some(ours), false) => match ours.iter().find(|i| theirs.contains(i)) {
                    Some(shared) => format!(" on {shared}"),
                    None => continue,
                },
            };
            return Err(format!(
                "{addr} already belongs to workload {other:?}{place}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> InterfacePattern {
        InterfacePattern::try_from(s.to_owned()).expect("valid entry")
    }

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
        let agent = Interfaces::named(["eth0", "eth1"].map(pattern));
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
            &Interfaces::named(["eth0", "eth1", "eth2"].map(pattern)),
        )
        .expect("valid");
        assert_eq!(p.interfaces["eth2"], 3);
        p.bind_interfaces(&host);
        assert_eq!(p.interfaces["eth2"], 90_000);
        assert_eq!(p.interfaces["eth0"], 3);
        // Reading does not leave the check behind for the next policy on this thread.
        let _ = read(TWO_WEBS, &Interfaces::named(["eth0"].map(pattern)));
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
    fn patterns_admit_names_and_absent_names_get_distinct_stand_ins() {
        let text = TWO_WEBS.replace("eth1", "veth7").replace("eth2", "veth9");
        // Checked against the config's entries: `veth*` admits veth7 and veth9.
        let e = read(&text, &Interfaces::named(["eth0"].map(pattern))).expect_err("veth7");
        assert!(e.contains("its config lists eth0"), "{e}");
        let entries = ["eth0", "veth*"].map(pattern);
        // On the host: eth0 and veth9 present, veth7 not (yet).
        let host = Interfaces::host(entries.clone(), [("eth0".into(), 2), ("veth9".into(), 40)]);
        let p = read(&text, &host).expect("valid");
        assert_eq!(p.interfaces["eth0"], 2);
        assert_eq!(p.interfaces["veth9"], 40);
        assert_eq!(p.interfaces["veth7"], STAND_IN_ABSENT);
        assert_eq!(host.host_index("veth7"), None);
        // Two absent names: two stand-ins, neither a device's index.
        let p = read(&text, &Interfaces::host(entries, [])).expect("valid");
        let mut absent: Vec<u32> = p.interfaces.values().copied().collect();
        absent.sort_unstable();
        assert_eq!(
            absent,
            [STAND_IN_ABSENT, STAND_IN_ABSENT + 1, STAND_IN_ABSENT + 2]
        );
    }

    #[test]
    fn indexes_are_the_hosts_or_stand_ins() {
        let table = BTreeMap::new();
        let host = Interfaces::protected([("eth0".into(), 7), ("eth1".into(), 70_000)]);
        assert_eq!(host.index("eth1", &table), 70_000);
        assert!(host.checked());
        let named = Interfaces::named(["eth0", "eth1"].map(pattern));
        assert_eq!(named.index("eth1", &table), 2);
        let free = Interfaces::unchecked();
        assert!(!free.checked());
        assert_eq!(free.index("x", &table), 1);
        let table = BTreeMap::from([("x".to_owned(), 1), ("y".to_owned(), 2)]);
        assert_eq!(free.index("y", &table), 2);
        assert_eq!(free.index("z", &table), 3);
    }
}
