//! Keeping the datapath on the interfaces the config selects while they come and go (pod
//! veths, NICs re-created by a driver reload): the configured set is the config's exact names
//! and every interface a pattern matches; what is new, or re-created with a new index, is
//! attached; what vanished is forgotten (its links, defunct with their device, unpinned).
//!
//! [`plan`] is the pure diff (entries + the kernel's links + what was done before -> actions);
//! [`Reconciler`] carries the actions out and keeps what was done. Run at start, on every
//! rtnetlink link event (`link_events.rs`), and on the agent's poll as a backstop.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};

use crate::{
    config::{AgentConfig, InterfaceName, InterfacePattern},
    datapath::{Datapath, DatapathError, IngressAttach, netdev::ARPHRD_ETHER, rtnetlink::Link},
    metrics::InterfaceStatus,
};

/// What became of an interface the config selects, at one index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub index: u32,
    pub state: Protection,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Attached, ingress enforced as said.
    Protected(IngressAttach),
    /// It has no Ethernet header (link type): nothing is attached, for good at this index.
    NotEthernet(u16),
    /// The attach failed (why): retried on the poll.
    Failed(String),
}

/// One step of a reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Unpin the links of an interface that is gone (or no longer selected).
    Forget { name: String },
    /// Attach to an interface that is new, re-created (another index: the old links are
    /// defunct) or whose attach failed before.
    Attach { name: String, index: u32 },
    /// Leave unprotected an interface without an Ethernet header.
    Refuse {
        name: String,
        index: u32,
        link_type: u16,
    },
}

/// Whether `name` is one of the interfaces `entries` select.
pub fn selected(entries: &[InterfacePattern], name: &str) -> bool {
    entries.iter().any(|e| e.matches(name))
}

/// The actions that bring `known` (what was done) and `pinned` (names with link pins) in line
/// with `links` (the kernel's) as `entries` select them: forgets first (a renamed device's
/// old links go before its new name is attached), then attaches and refusals by name.
/// Failed attaches are tried again only when `retry_failed` (the poll, not every event).
pub fn plan(
    entries: &[InterfacePattern],
    links: &[Link],
    known: &BTreeMap<String, Known>,
    pinned: &[String],
    retry_failed: bool,
) -> Vec<Action> {
    let present: BTreeMap<&str, &Link> = links
        .iter()
        .filter(|l| selected(entries, &l.name))
        .map(|l| (l.name.as_str(), l))
        .collect();
    let mut gone: BTreeSet<&str> = known
        .keys()
        .map(String::as_str)
        .chain(
            pinned
                .iter()
                .map(String::as_str)
                .filter(|n| selected(entries, n)),
        )
        .filter(|n| !present.contains_key(n))
        .collect();
    let mut actions: Vec<Action> = std::mem::take(&mut gone)
        .into_iter()
        .map(|n| Action::Forget { name: n.to_owned() })
        .collect();
    for (name, link) in present {
        let before = known.get(name).filter(|k| k.index == link.index);
        let settled = match before.map(|k| &k.state) {
            Some(Protection::Protected(_) | Protection::NotEthernet(_)) => true,
            Some(Protection::Failed(_)) => !retry_failed,
            None => false,
        };
        if settled {
            continue;
        }
        actions.push(if link.link_type == ARPHRD_ETHER {
            Action::Attach {
                name: name.to_owned(),
                index: link.index,
            }
        } else {
            Action::Refuse {
                name: name.to_owned(),
                index: link.index,
                link_type: link.link_type,
            }
        });
    }
    actions
}

/// Carries out [`plan`]s and remembers what they did.
#[derive(Debug, Default)]
pub struct Reconciler {
    known: BTreeMap<String, Known>,
    /// (name, index) already warned about as up and unprotected: warned once.
    warned: BTreeSet<(String, u32)>,
}

impl Reconciler {
    /// Reconciles the datapath with `links`. With `strict` (the agent's start), a failure on
    /// an interface the config names exactly is returned, as a refusal to start; otherwise
    /// failures leave the interface unprotected, logged and exported.
    pub fn run(
        &mut self,
        datapath: &mut Datapath,
        config: &AgentConfig,
        links: &[Link],
        strict: bool,
        retry_failed: bool,
    ) -> Result<(), DatapathError> {
        let pinned = datapath.pinned_interfaces()?;
        for action in plan(
            &config.interfaces,
            links,
            &self.known,
            &pinned,
            retry_failed,
        ) {
            match action {
                Action::Forget { name } => {
                    let unpinned = datapath.forget(&name)?;
                    self.known.remove(&name);
                    self.warned.retain(|(n, _)| *n != name);
                    info!(interface = %name, unpinned, "interface gone: forgotten");
                }
                Action::Refuse {
                    name,
                    index,
                    link_type,
                } => {
                    // Links pinned for an earlier device of this name are defunct.
                    datapath.forget(&name)?;
                    self.known.insert(
                        name,
                        Known {
                            index,
                            state: Protection::NotEthernet(link_type),
                        },
                    );
                }
                Action::Attach { name, index } => {
                    let iface = InterfaceName::try_from(name.clone())
                        .expect("the kernel's interface names are valid");
                    let exact = config.interfaces.iter().any(|e| e.exact() == Some(&iface));
                    let result = datapath.drop_defunct(&name, index).and_then(|_| {
                        datapath.attach(
                            &iface,
                            config.ingress_for(&name),
                            config.xdp_mode,
                            config.allow_generic_fallback,
                        )
                    });
                    let state = match result {
                        Ok(ingress) => {
                            info!(interface = %name, ifindex = index, ingress = %ingress, "enforcing");
                            Protection::Protected(ingress)
                        }
                        Err(e) if strict && exact => return Err(e),
                        Err(e) => Protection::Failed(crate::report::chain(&e)),
                    };
                    if matches!(state, Protection::Protected(_)) {
                        self.warned.remove(&(name.clone(), index));
                    }
                    self.known.insert(name, Known { index, state });
                }
            }
        }
        self.warn_unprotected(links);
        Ok(())
    }

    /// Warns, once per interface and index, about an interface the config selects that is up
    /// and unprotected; the same one down is said at INFO (it carries no traffic yet).
    fn warn_unprotected(&mut self, links: &[Link]) {
        for (name, k) in &self.known {
            let why = match &k.state {
                Protection::Protected(_) => continue,
                Protection::NotEthernet(t) => format!(
                    "it has no Ethernet header (link type {t}, not 1): Boundary parses frames from the Ethernet header"
                ),
                Protection::Failed(why) => why.clone(),
            };
            let up = links.iter().any(|l| l.index == k.index && l.up);
            let key = (name.clone(), k.index);
            if self.warned.contains(&key) {
                continue;
            }
            if up {
                warn!(interface = %name, ifindex = k.index, reason = %why, "interface matches the config and is up, but is NOT protected");
                self.warned.insert(key);
            } else {
                info!(interface = %name, ifindex = k.index, reason = %why, "interface matches the config but cannot be protected (it is down)");
            }
        }
    }

    /// Every interface the config selects, present or (named exactly) absent, as exported.
    pub fn status(&self, entries: &[InterfacePattern], links: &[Link]) -> Vec<InterfaceStatus> {
        let mut out: Vec<InterfaceStatus> = links
            .iter()
            .filter(|l| selected(entries, &l.name))
            .map(|l| {
                let known = self.known.get(&l.name).filter(|k| k.index == l.index);
                let (ingress, problem) = match known.map(|k| &k.state) {
                    Some(Protection::Protected(a)) => (Some((a.hook(), a.mode())), None),
                    Some(Protection::NotEthernet(t)) => {
                        (None, Some(format!("no Ethernet header (link type {t})")))
                    }
                    Some(Protection::Failed(why)) => (None, Some(why.clone())),
                    None => (None, Some("not attached yet".to_owned())),
                };
                InterfaceStatus {
                    name: l.name.clone(),
                    present: true,
                    up: l.up,
                    ingress,
                    problem,
                }
            })
            .collect();
        for name in entries.iter().filter_map(InterfacePattern::exact) {
            if !out.iter().any(|s| s.name == name.as_str()) {
                out.push(InterfaceStatus {
                    name: name.to_string(),
                    present: false,
                    up: false,
                    ingress: None,
                    problem: Some("absent".to_owned()),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// The configured interfaces present in `links`, with their indexes: what a workload's
/// `interfaces:` compile to.
pub fn indexes(entries: &[InterfacePattern], links: &[Link]) -> Vec<(String, u32)> {
    links
        .iter()
        .filter(|l| selected(entries, &l.name))
        .map(|l| (l.name.clone(), l.index))
        .collect()
}

/// At start, before anything is loaded: an interface the config names exactly that is
/// present without an Ethernet header is a mistake in the config, refused as before (a pattern
/// that matches one leaves it unprotected instead). An absent one is only warned about: it
/// carries no traffic, and is attached when it appears.
pub fn check_exact(config: &AgentConfig, links: &[Link]) -> Result<(), DatapathError> {
    for name in config.interfaces.iter().filter_map(InterfacePattern::exact) {
        match links.iter().find(|l| l.name == name.as_str()) {
            Some(l) if l.link_type != ARPHRD_ETHER => {
                return Err(DatapathError::NotEthernet {
                    interface: name.to_string(),
                    link_type: l.link_type,
                });
            }
            Some(_) => {}
            None => {
                warn!(interface = %name, "configured interface is absent: it is attached when it appears");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::XdpMode;

    fn entries(list: &[&str]) -> Vec<InterfacePattern> {
        list.iter()
            .map(|s| InterfacePattern::try_from((*s).to_owned()).expect("valid"))
            .collect()
    }

    fn link(name: &str, index: u32) -> Link {
        Link {
            index,
            name: name.into(),
            link_type: ARPHRD_ETHER,
            up: true,
        }
    }

    fn protected(index: u32) -> Known {
        Known {
            index,
            state: Protection::Protected(IngressAttach::Xdp(XdpMode::Native)),
        }
    }

    fn attach(name: &str, index: u32) -> Action {
        Action::Attach {
            name: name.into(),
            index,
        }
    }

    #[test]
    fn new_interfaces_are_attached_and_others_left_alone() {
        let e = entries(&["eth0", "bnd1x*"]);
        let links = [
            link("lo", 1),
            link("eth0", 2),
            link("bnd1xa", 7),
            link("veth3", 8),
        ];
        assert_eq!(
            plan(&e, &links, &BTreeMap::new(), &[], false),
            [attach("bnd1xa", 7), attach("eth0", 2)]
        );
        // Nothing to do once done.
        let known = BTreeMap::from([
            ("eth0".into(), protected(2)),
            ("bnd1xa".into(), protected(7)),
        ]);
        assert_eq!(plan(&e, &links, &known, &[], true), []);
    }

    #[test]
    fn a_recreated_interface_is_attached_afresh_and_a_vanished_one_forgotten() {
        let e = entries(&["bnd1x*"]);
        let known = BTreeMap::from([
            ("bnd1xa".into(), protected(7)),
            ("bnd1xb".into(), protected(9)),
        ]);
        // bnd1xa came back as index 12; bnd1xb is gone.
        let links = [link("bnd1xa", 12)];
        assert_eq!(
            plan(
                &e,
                &links,
                &known,
                &["bnd1xa".into(), "bnd1xb".into()],
                false
            ),
            [
                Action::Forget {
                    name: "bnd1xb".into()
                },
                attach("bnd1xa", 12)
            ]
        );
        // A rename: the old name is forgotten before the new one is attached.
        let links = [link("bnd1xz", 7), link("bnd1xb", 9)];
        assert_eq!(
            plan(&e, &links, &known, &[], false),
            [
                Action::Forget {
                    name: "bnd1xa".into()
                },
                attach("bnd1xz", 7)
            ]
        );
    }

    #[test]
    fn pins_of_absent_configured_names_go_and_unconfigured_pins_stay() {
        // At start: pins left for bnd1xq (gone while no agent ran) and for eth5 (not
        // configured: `detach_others`' business, not the reconcile's).
        let e = entries(&["bnd1x*", "eth0"]);
        assert_eq!(
            plan(
                &e,
                &[],
                &BTreeMap::new(),
                &["bnd1xq".into(), "eth5".into()],
                false
            ),
            [Action::Forget {
                name: "bnd1xq".into()
            }]
        );
    }

    #[test]
    fn non_ethernet_is_refused_once_and_failures_retried_on_the_poll() {
        let e = entries(&["bnd1x*"]);
        let mut tun = link("bnd1xt", 4);
        tun.link_type = 65534;
        let links = [tun, link("bnd1xa", 5)];
        assert_eq!(
            plan(&e, &links, &BTreeMap::new(), &[], false),
            [
                attach("bnd1xa", 5),
                Action::Refuse {
                    name: "bnd1xt".into(),
                    index: 4,
                    link_type: 65534
                },
            ]
        );
        let known = BTreeMap::from([
            (
                "bnd1xt".into(),
                Known {
                    index: 4,
                    state: Protection::NotEthernet(65534),
                },
            ),
            (
                "bnd1xa".into(),
                Known {
                    index: 5,
                    state: Protection::Failed("native XDP failed".into()),
                },
            ),
        ]);
        assert_eq!(plan(&e, &links, &known, &[], false), []);
        assert_eq!(plan(&e, &links, &known, &[], true), [attach("bnd1xa", 5)]);
    }

    #[test]
    fn status_lists_absent_exact_names_and_unprotected_matches() {
        let e = entries(&["eth9", "bnd1x*"]);
        let r = Reconciler {
            known: BTreeMap::from([("bnd1xa".into(), protected(5))]),
            warned: BTreeSet::new(),
        };
        let mut down = link("bnd1xb", 6);
        down.up = false;
        let s = r.status(&e, &[link("bnd1xa", 5), down, link("lo", 1)]);
        let row = |n: &str| s.iter().find(|x| x.name == n).expect(n);
        assert_eq!(s.len(), 3);
        assert_eq!(row("bnd1xa").ingress, Some(("xdp", "native")));
        assert!(row("bnd1xb").ingress.is_none() && !row("bnd1xb").up);
        assert!(!row("eth9").present && row("eth9").ingress.is_none());
    }
}
