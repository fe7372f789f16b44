//! What the checks between a policy's values know while it is read: its trust domain (and
//! the SPIFFE IDs read before it), the workload names taken, the addresses bound to
//! identities and owned by workloads, and the identity or workload being read.
//!
//! serde gives a value nothing but its text. Kept beside the reader for one read
//! ([`reading`]), as `values::checking_interfaces` keeps the agent's interfaces and
//! `ratelimit::counting_sources` the per-source tables, this lets each check run in the
//! visitor of the value at fault, so that its error carries that value's line and column.
//! Between two values the later one is at fault (the second workload named `web`, the second
//! owner of an address), and a conflict is refused at the value that makes it certain:
//!
//! - an address another workload owns: at the address when the earlier owner lists no
//!   interfaces (it owns the address on every one) or when this workload's `interfaces:`
//!   came first; else at the first of its interfaces the earlier owner lists too; else, when
//!   it lists none (known only once it is read), at the workload;
//! - a SPIFFE ID of another trust domain than `trustDomain`: at the ID, or at `trustDomain`
//!   when it comes after the ID.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use boundary_common::Direction;

use super::{
    interfaces::Owners,
    syntax::{RawIdentity, RawWorkload},
};

thread_local! {
    /// The policy read so far, while one is read ([`reading`]).
    static SO_FAR: RefCell<Option<SoFar>> = const { RefCell::new(None) };
}

#[derive(Default)]
struct SoFar {
    /// The policy's `trustDomain`, once read.
    trust_domain: Option<String>,
    /// Until it is read: the first SPIFFE ID (or pattern) read of each trust domain.
    domains: Vec<(String, String)>,
    /// The addresses the identities read so far bind, and to which ID.
    bound: BTreeMap<IpAddr, String>,
    /// The names of the workloads read so far.
    workloads: BTreeSet<String>,
    /// Who owns the addresses of the workloads read so far.
    owners: Owners,
    /// The identity or workload being read.
    entry: Option<Entry>,
}

enum Entry {
    /// An identity, with the addresses read so far.
    Identity(Vec<IpAddr>),
    Workload(WorkloadSoFar),
}

#[derive(Default)]
struct WorkloadSoFar {
    name: Option<String>,
    addresses: Vec<IpAddr>,
    /// Its `interfaces:` as far as they are read; `None` until then.
    interfaces: Option<Vec<String>>,
    /// The names of its rules read so far, with their direction.
    rules: BTreeSet<(&'static str, String)>,
}

/// Runs `read` (a policy's deserialization, on this thread) with each check below seeing the
/// values read before its own; outside it they check nothing.
pub(super) fn reading<T>(read: impl FnOnce() -> T) -> T {
    /// Puts the previous state back, also when `read` panics.
    struct Restore(Option<SoFar>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SO_FAR.set(self.0.take());
        }
    }
    let _restore = Restore(SO_FAR.replace(Some(SoFar::default())));
    read()
}

/// Runs `check` on the policy read so far, if one is being read.
fn check(check: impl FnOnce(&mut SoFar) -> Result<(), String>) -> Result<(), String> {
    SO_FAR.with_borrow_mut(|s| s.as_mut().map_or(Ok(()), check))
}

/// Runs `read` with `entry` as the identity or workload being read.
fn entering<T>(entry: Entry, read: impl FnOnce() -> T) -> T {
    /// Puts the entry read before back, also when `read` panics.
    struct Leave(Option<Entry>);
    impl Drop for Leave {
        fn drop(&mut self) {
            let before = self.0.take();
            SO_FAR.with_borrow_mut(|s| {
                if let Some(s) = s {
                    s.entry = before;
                }
            });
        }
    }
    let before = SO_FAR.with_borrow_mut(|s| s.as_mut().and_then(|s| s.entry.replace(entry)));
    let _leave = Leave(before);
    read()
}

/// The policy's `trustDomain`, read: refused if a SPIFFE ID read before it is of another.
pub(super) fn trust_domain(td: &str) -> Result<(), String> {
    check(|s| {
        if let Some((other, id)) = s.domains.iter().find(|(d, _)| d != td) {
            return Err(format!(
                "trust domain {other:?} of {id} (above) is not this policy's trustDomain {td:?}"
            ));
        }
        s.trust_domain = Some(td.to_owned());
        Ok(())
    })
}

/// A SPIFFE ID or pattern (`text`) of trust domain `td`, read: refused if the policy's
/// `trustDomain`, read before it, is another.
pub(super) fn spiffe(td: &str, text: &str) -> Result<(), String> {
    check(|s| match &s.trust_domain {
        Some(ours) if ours != td => Err(format!(
            "trust domain {td:?} is not this policy's trustDomain {ours:?}"
        )),
        Some(_) => Ok(()),
        None => {
            if !s.domains.iter().any(|(d, _)| d == td) {
                s.domains.push((td.to_owned(), text.to_owned()));
            }
            Ok(())
        }
    })
}

/// Runs `read` (one identity's deserialization) with its addresses checked against those
/// bound before them; binds them to its ID once it is read.
pub(super) fn identity<E>(read: impl FnOnce() -> Result<RawIdentity, E>) -> Result<RawIdentity, E> {
    let raw = entering(Entry::Identity(Vec::new()), read)?;
    SO_FAR.with_borrow_mut(|s| {
        if let Some(s) = s {
            for a in &raw.addresses.0 {
                s.bound.insert(a.0, raw.id.0.to_string());
            }
        }
    });
    Ok(raw)
}

/// Runs `read` (one workload's deserialization, in the visitor of its mapping) with its
/// values checked against the workloads before it; then claims its addresses. An address
/// an earlier workload owns on some interfaces is refused here, at the workload, when this
/// one lists none: only the end of its mapping tells.
pub(super) fn workload<E: serde::de::Error>(
    read: impl FnOnce() -> Result<RawWorkload, E>,
) -> Result<RawWorkload, E> {
    let raw = entering(Entry::Workload(WorkloadSoFar::default()), read)?;
    check(|s| {
        let interfaces: Vec<String> = raw
            .interfaces
            .iter()
            .flat_map(|l| &l.0)
            .map(|i| i.0.as_str().to_owned())
            .collect();
        for a in &raw.addresses.0 {
            s.owners.claim(a.0, &raw.name.0, &interfaces)?;
        }
        Ok(())
    })
    .map_err(E::custom)?;
    Ok(raw)
}

/// A workload's name, read: refused if an earlier workload has it.
pub(super) fn workload_name(name: &str) -> Result<(), String> {
    check(|s| {
        if !s.workloads.insert(name.to_owned()) {
            return Err(format!("{name:?} is used by an earlier workload"));
        }
        if let Some(Entry::Workload(w)) = &mut s.entry {
            w.name = Some(name.to_owned());
        }
        Ok(())
    })
}

/// An address in an identity's or a workload's `addresses:`, read: refused if listed before
/// in the same list, if an earlier identity binds it (identities), or if an earlier workload
/// owns it on an interface this one is known to be on (workloads; see the module's notes).
pub(super) fn address(a: IpAddr) -> Result<(), String> {
    check(|s| match &mut s.entry {
        Some(Entry::Identity(addresses)) => {
            if addresses.contains(&a) {
                return Err(format!("{a} is listed twice"));
            }
            if let Some(id) = s.bound.get(&a) {
                return Err(format!("{a} is already bound to {id}"));
            }
            addresses.push(a);
            Ok(())
        }
        Some(Entry::Workload(w)) => {
            if w.addresses.contains(&a) {
                return Err(format!("{a} is listed twice"));
            }
            s.owners.conflict(a, w.interfaces.as_deref())?;
            w.addresses.push(a);
            Ok(())
        }
        None => Ok(()),
    })
}

/// An interface in a workload's `interfaces:`, read: refused if listed before, or if an
/// earlier workload owns one of this workload's addresses (read before it) on it.
pub(super) fn interface(name: &str) -> Result<(), String> {
    check(|s| {
        let Some(Entry::Workload(w)) = &mut s.entry else {
            return Ok(());
        };
        let listed = w.interfaces.get_or_insert_default();
        if listed.iter().any(|n| n == name) {
            return Err(format!("{name} is listed twice"));
        }
        listed.push(name.to_owned());
        let on = [name.to_owned()];
        for &a in &w.addresses {
            s.owners.conflict(a, Some(&on))?;
        }
        Ok(())
    })
}

/// A rule's name, read: refused if an earlier rule of the same workload and direction has it.
pub(super) fn rule_name(direction: Direction, name: &str) -> Result<(), String> {
    check(|s| {
        let Some(Entry::Workload(w)) = &mut s.entry else {
            return Ok(());
        };
        let dir = direction.as_str();
        if w.rules.insert((dir, name.to_owned())) {
            return Ok(());
        }
        // The workload's name may come after its rules.
        let of = w.name.as_deref().unwrap_or("this workload");
        Err(format!(
            "{name:?} names two {dir} rules of {of}: a rule's name is what its counters are kept by, so it must be unique in its list"
        ))
    })
}

#[cfg(test)]
mod tests {
    use crate::policy::Policy;

    #[test]
    fn each_read_starts_afresh() {
        let text = "apiVersion: boundary.dev/v1
trustDomain: example.org
identities: [{ id: spiffe://example.org/a, addresses: [10.0.0.9] }]
workloads:
  - name: web
    addresses: [10.0.0.1]
    ingress: [{ name: in, from: { spiffe: spiffe://example.org/a } }]
";
        assert!(Policy::from_str("p.yaml", text).is_ok());
        // The same names, addresses and binding again: nothing of the first read is left.
        assert!(Policy::from_str("p.yaml", text).is_ok());
        // Nor of a read refused halfway, nor of its trust domain.
        let e = Policy::from_str("p.yaml", &format!("{text}  - name: web\n"))
            .expect_err("web twice")
            .to_string();
        assert!(e.contains("\"web\" is used by an earlier workload"), "{e}");
        let other = text.replace("example.org", "other.org");
        assert!(Policy::from_str("p.yaml", &other).is_ok());
        assert!(Policy::from_str("p.yaml", text).is_ok());
    }
}
