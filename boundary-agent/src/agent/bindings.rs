//! Earned bindings as the agent keeps them: made when a peer's SVID is verified, renewed when it
//! presents one again, taken out when they expire, when a CRL lists the certificate, or on
//! `identity revoke`. The one place that writes them into the datapath (through
//! [`Datapath::bind`]), from the agent's loop only.
//!
//! One address, one identity: a peer whose address is bound to another live ID is refused
//! (several workloads behind one NAT address must not widen each other's access), and a
//! static binding of the policy is never replaced.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use boundary_common::maps::{CHAIN_MAX, MAX_EARNED, issuer_hash};
use tracing::{info, warn};

use crate::{
    datapath::{
        Datapath,
        maps::{EarnedBinding, monotonic_ns},
    },
    identity::Revoked,
    policy::{Binder, Earned, Policy, Tables, spiffe::SpiffeId},
};

/// What a verified peer asked for, and got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Bound (or renewed) until `expires`.
    Bound { expires: SystemTime, renewed: bool },
    /// The address is bound to another live ID.
    Conflict { holder: String },
    /// The policy binds the address to another ID.
    StaticElsewhere { holder: String },
    /// Not bound, for a reason of the agent's (no policy yet, tables full, a write failed).
    Unavailable(String),
}

/// A verified peer: the address it connected from and what its certificate says.
#[derive(Clone, Debug)]
pub struct Peer<'a> {
    pub addr: IpAddr,
    pub id: &'a SpiffeId,
    pub serial: &'a [u8],
    /// DER of the certificate's issuer name.
    pub issuer: &'a [u8],
    /// The earliest notAfter of the chain presented.
    pub not_after: SystemTime,
    /// `(issuer DER, serial)` of every certificate presented, leaf first.
    pub chain: &'a [(Vec<u8>, Vec<u8>)],
    /// The issuer DER of the last certificate presented.
    pub anchor: &'a [u8],
}

/// Which bindings `identity revoke` takes out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Address(IpAddr),
    Id(String),
}

pub struct Bindings {
    lease: Duration,
    /// The identity endpoint's address (a failsafe entry of every compile, see
    /// [`Earned::endpoint`]).
    endpoint: std::net::SocketAddr,
    /// For the live generation; `None` before a policy is applied, or after a write failed
    /// (the agent then applies the policy again, which rebuilds it).
    binder: Option<Binder>,
    earned: BTreeMap<IpAddr, EarnedBinding>,
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl Bindings {
    /// The bindings recorded in the pins (a previous agent's), none lasting longer than
    /// `lease` from when it was made or renewed (a shorter lease applies at once), the
    /// expired ones left out.
    pub fn restore(datapath: &Datapath, lease: Duration, endpoint: std::net::SocketAddr) -> Self {
        let now = monotonic_ns();
        let wall = unix(SystemTime::now());
        let lease_ns = i128::try_from(lease.as_nanos()).unwrap_or(i128::MAX / 4);
        let earned: BTreeMap<IpAddr, EarnedBinding> = datapath
            .maps()
            .earned()
            .into_iter()
            .map(|mut b| {
                // Made `age` ago by the wall clock: its lease ends `lease - age` from now.
                let age_ns = i128::from(wall.saturating_sub(b.renewed)) * 1_000_000_000;
                let longest = i128::from(now) + lease_ns - age_ns;
                b.expires =
                    u64::try_from(longest.clamp(0, i128::from(b.expires))).unwrap_or(b.expires);
                (b.addr, b)
            })
            .filter(|(_, b)| b.expires > now)
            .collect();
        if !earned.is_empty() {
            info!(
                bindings = earned.len(),
                "earned bindings kept from the pins"
            );
        }
        Self {
            lease,
            endpoint,
            binder: None,
            earned,
        }
    }

    /// What a compile of the policy includes: the live earned bindings.
    pub fn for_compile(&self) -> Earned {
        let now = monotonic_ns();
        Earned {
            enabled: true,
            bindings: self
                .earned
                .values()
                .filter(|b| b.expires > now)
                .filter_map(|b| Some((b.addr, (b.id.parse().ok()?, b.expires))))
                .collect(),
            endpoint: Some(self.endpoint),
        }
    }

    /// After a generation swap: binds further addresses against the new tables. An earned
    /// binding of an address the policy now binds statically is dropped (the static one won
    /// in the compile).
    pub fn rebuild(&mut self, datapath: &mut Datapath, policy: &Policy, tables: &Tables) {
        self.binder = Some(Binder::new(policy, tables));
        let covered = self.take_out(datapath, |b| {
            tables.identities.contains_key(&b.addr) && !tables.earned.contains_key(&b.addr)
        });
        for b in covered {
            warn!(addr = %b.addr, id = %b.id, "an earned binding gave way to the policy's static binding of its address");
        }
    }

    /// Whether the datapath may disagree with what is kept (a write failed part way): the
    /// policy must be applied again.
    pub fn stale(&self) -> bool {
        self.binder.is_none()
    }

    pub fn len(&self) -> usize {
        self.earned.len()
    }

    pub fn list(&self) -> impl Iterator<Item = &EarnedBinding> {
        self.earned.values()
    }

    /// Binds (or renews) a verified peer.
    pub fn bind(&mut self, datapath: &mut Datapath, peer: &Peer<'_>) -> Outcome {
        let Some(binder) = self.binder.as_mut() else {
            return Outcome::Unavailable("no policy is live yet".to_owned());
        };
        if let Some(holder) = binder.static_binding(peer.addr) {
            return if holder == peer.id {
                Outcome::Bound {
                    expires: peer.not_after,
                    renewed: true,
                }
            } else {
                Outcome::StaticElsewhere {
                    holder: holder.to_string(),
                }
            };
        }
        let now = monotonic_ns();
        let id = peer.id.to_string();
        let renewed = match self.earned.get(&peer.addr) {
            Some(b) if b.expires > now && b.id != id => {
                return Outcome::Conflict {
                    holder: b.id.clone(),
                };
            }
            Some(b) => b.id == id && b.expires > now,
            None => false,
        };
        if !renewed && self.earned.len() >= MAX_EARNED as usize {
            return Outcome::Unavailable(format!("{MAX_EARNED} earned bindings already"));
        }
        let wall = SystemTime::now();
        let left = peer
            .not_after
            .duration_since(wall)
            .unwrap_or_default()
            .min(self.lease);
        if left.is_zero() {
            return Outcome::Unavailable("the certificate has expired".to_owned());
        }
        let intermediates = peer.chain.get(1..).unwrap_or_default();
        if intermediates.len() > CHAIN_MAX {
            return Outcome::Unavailable(format!(
                "a chain of {} intermediates (at most {CHAIN_MAX} are kept for revocation)",
                intermediates.len()
            ));
        }
        let earned = EarnedBinding {
            addr: peer.addr,
            id,
            expires: now + u64::try_from(left.as_nanos()).unwrap_or(u64::MAX / 2),
            not_after: unix(peer.not_after),
            renewed: unix(wall),
            issuer: issuer_hash(peer.issuer),
            serial: peer.serial.to_vec(),
            chain: intermediates
                .iter()
                .map(|(issuer, serial)| (issuer_hash(issuer), serial.clone()))
                .collect(),
            anchor: issuer_hash(peer.anchor),
        };
        let binding = binder.bind(peer.addr, peer.id);
        match datapath.bind(&earned, &binding) {
            Ok(()) => {
                self.earned.insert(peer.addr, earned);
                Outcome::Bound {
                    expires: wall + left,
                    renewed,
                }
            }
            Err(e) => {
                // The binder counts an identity whose entries may not all be in: rebuilt by
                // the next apply.
                self.binder = None;
                let _ = datapath.unbind(peer.addr);
                self.earned.remove(&peer.addr);
                Outcome::Unavailable(format!("writing the binding failed: {e}"))
            }
        }
    }

    /// Takes out the bindings past their deadline (the datapath already ignores them);
    /// returns them.
    pub fn expire(&mut self, datapath: &mut Datapath) -> Vec<EarnedBinding> {
        let now = monotonic_ns();
        self.take_out(datapath, |b| b.expires <= now)
    }

    /// Takes out the bindings the trust material no longer vouches for: made with a
    /// certificate (leaf or intermediate) the CRLs list, or through a CA the bundle no longer
    /// holds.
    pub fn check_trust(&mut self, datapath: &mut Datapath, trust: &Revoked) -> Vec<EarnedBinding> {
        let revoked: Vec<(u64, &[u8])> = trust
            .revoked
            .iter()
            .map(|(issuer, serial)| (issuer_hash(issuer), serial.as_slice()))
            .collect();
        let anchors: BTreeSet<u64> = trust.anchors.iter().map(|a| issuer_hash(a)).collect();
        let listed = |issuer: u64, serial: &[u8]| {
            revoked
                .iter()
                .any(|(i, s)| *i == issuer && same_serial(s, serial))
        };
        self.take_out(datapath, |b| {
            listed(b.issuer, &b.serial)
                || b.chain.iter().any(|(i, s)| listed(*i, s))
                || !anchors.contains(&b.anchor)
        })
    }

    /// Takes out the bindings of an address or an ID.
    pub fn revoke(&mut self, datapath: &mut Datapath, target: &Target) -> Vec<EarnedBinding> {
        self.take_out(datapath, |b| match target {
            Target::Address(a) => b.addr == *a,
            Target::Id(id) => b.id == *id,
        })
    }

    fn take_out(
        &mut self,
        datapath: &mut Datapath,
        which: impl Fn(&EarnedBinding) -> bool,
    ) -> Vec<EarnedBinding> {
        let gone: Vec<IpAddr> = self
            .earned
            .values()
            .filter(|b| which(b))
            .map(|b| b.addr)
            .collect();
        let mut out = Vec::new();
        for addr in gone {
            match datapath.unbind(addr) {
                Ok(()) => out.extend(self.earned.remove(&addr)),
                Err(e) => {
                    warn!(%addr, error = %e, "cannot take an earned binding out; retrying");
                }
            }
        }
        out
    }
}

/// At start, once the policy is applied: what the pins kept is checked against the trust
/// material as it is now (a CRL or a bundle changed while no agent ran); with the endpoint
/// off, the records go (earned bindings were left out of the policy just applied, and must
/// not come back when it is on again).
pub fn check_at_start(
    datapath: &mut Datapath,
    bindings: Option<&mut Bindings>,
    trust: Option<&crate::identity::TrustStore>,
) {
    match (bindings, trust) {
        (Some(b), Some(t)) => {
            let gone = b.check_trust(datapath, &t.current().state());
            if !gone.is_empty() {
                warn!(
                    bindings = gone.len(),
                    "earned bindings the CRLs or the bundle no longer vouch for were removed"
                );
            }
        }
        _ => forget_all(datapath),
    }
}

/// Removes every earned binding recorded (the agent runs without the identity endpoint).
fn forget_all(datapath: &mut Datapath) {
    let recorded = datapath.maps().earned();
    if recorded.is_empty() {
        return;
    }
    for b in &recorded {
        if let Err(e) = datapath.unbind(b.addr) {
            warn!(addr = %b.addr, error = %e, "cannot remove an earned binding's record");
        }
    }
    info!(
        bindings = recorded.len(),
        "earned bindings removed: the identity endpoint is off"
    );
}

/// Serials compared as integers: DER may carry a leading zero byte that a CRL parser drops.
fn same_serial(a: &[u8], b: &[u8]) -> bool {
    let trim = |s: &[u8]| -> Vec<u8> { s.iter().copied().skip_while(|b| *b == 0).collect() };
    trim(a) == trim(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_as_integers() {
        assert!(same_serial(&[0, 0x80, 1], &[0x80, 1]));
        assert!(!same_serial(&[0x80, 1], &[0x80, 2]));
    }
}
