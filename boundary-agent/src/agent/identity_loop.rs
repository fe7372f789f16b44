//! The agent's loop, for identities: requests from the control socket (list, revoke) and,
//! with the identity endpoint on, verified peers to bind, revoked certificates to unbind, and
//! the sweep of expired bindings.

use std::{net::IpAddr, sync::Arc};

use tokio::sync::mpsc;

use tracing::{debug, info, warn};

use super::{
    Agent, AgentError,
    bindings::{Outcome, Peer, Target},
    control::{BindingView, Request},
    lock,
};
use crate::{
    config::AgentConfig,
    identity::{
        Attested, BindOutcome, BindRequest, Revoked, Stats, TrustStore,
        server::{Control, serve_with_control},
    },
};

/// What the identity endpoint sends the agent's loop: verified peers to bind, and the
/// certificates a reloaded CRL lists.
pub(super) type Endpoint = (mpsc::Receiver<BindRequest>, mpsc::Receiver<Revoked>);

/// Starts the identity endpoint `config` asks for (on a thread of its own): the receivers of
/// the peers it verifies and of the certificates a reloaded CRL lists. The admins' control
/// API goes to `control`.
pub(super) fn start_endpoint(
    config: &AgentConfig,
    trust: &Arc<TrustStore>,
    control: &mpsc::Sender<Request>,
    handshakes: Arc<Stats>,
) -> Result<Option<Endpoint>, AgentError> {
    let Some((identity, address)) = config.identity.as_ref().and_then(|i| Some((i, i.listen?)))
    else {
        return Ok(None);
    };
    let (binds, bind_rx) = mpsc::channel(1024);
    let (revoked, revoked_rx) = mpsc::channel(16);
    let admin = (!identity.admins.is_empty()).then(|| Control {
        admins: identity.admins.clone(),
        tx: control.clone(),
    });
    let bound = serve_with_control(
        address,
        Arc::clone(trust),
        binds,
        revoked,
        handshakes,
        admin,
    )?;
    info!(address = %bound, trust_domain = %trust.trust_domain(), "identity endpoint listening");
    Ok(Some((bind_rx, revoked_rx)))
}

impl Agent {
    pub(super) fn on_control(&mut self, request: Request) {
        match request {
            Request::List(reply) => {
                let mut list: Vec<BindingView> = self
                    .statics
                    .iter()
                    .map(|(a, id)| BindingView {
                        address: a.to_string(),
                        spiffe_id: id.clone(),
                        source: "static".to_owned(),
                        expires: None,
                        serial: None,
                    })
                    .collect();
                if let Some(b) = &self.bindings {
                    list.extend(b.list().map(BindingView::earned));
                }
                let _ = reply.send(list);
            }
            Request::Revoke(target, reply) => {
                let _ = reply.send(self.revoke(&target));
            }
            // Answered by the loop itself, which holds the service manager's notifier.
            Request::Reload(reply) => {
                let _ = reply.send(Err("reload is answered by the agent's loop".to_owned()));
            }
        }
    }

    fn revoke(&mut self, target: &str) -> Result<Vec<BindingView>, String> {
        let target = if let Ok(a) = target.parse::<IpAddr>() {
            if let Some(id) = self.statics.get(&a) {
                return Err(format!(
                    "{a} is bound to {id} by the policy: change the policy to unbind it"
                ));
            }
            Target::Address(a)
        } else if target.starts_with("spiffe://") {
            Target::Id(target.to_owned())
        } else {
            return Err(format!("{target:?} is neither an address nor a SPIFFE ID"));
        };
        let Some(bindings) = self.bindings.as_mut() else {
            return Err("the identity endpoint is off: no binding is earned".to_owned());
        };
        let gone = bindings.revoke(&mut self.datapath, &target);
        for b in &gone {
            info!(addr = %b.addr, id = %b.id, "earned binding revoked (identity revoke)");
        }
        self.count_bindings();
        Ok(gone.iter().map(BindingView::earned).collect())
    }

    /// Binds a peer the identity endpoint verified; the endpoint answers it with this.
    pub(super) fn on_attested(&mut self, a: &Attested) -> BindOutcome {
        let peer = Peer {
            addr: a.peer,
            id: &a.id,
            serial: &a.serial,
            issuer: &a.issuer,
            not_after: a.not_after,
            chain: &a.chain,
            anchor: &a.anchor,
        };
        match self.on_verified(&peer) {
            Outcome::Bound { expires, .. } => BindOutcome::Bound { expires },
            Outcome::Conflict { holder } => match holder.parse() {
                Ok(holder) => BindOutcome::Conflict { holder },
                Err(_) => BindOutcome::Unavailable(format!("bound to {holder}")),
            },
            Outcome::StaticElsewhere { .. } => BindOutcome::StaticElsewhere,
            Outcome::Unavailable(why) => BindOutcome::Unavailable(why),
        }
    }

    /// Binds a verified peer (see `bindings.rs`); logs what it got.
    fn on_verified(&mut self, peer: &Peer<'_>) -> Outcome {
        let Some(bindings) = self.bindings.as_mut() else {
            return Outcome::Unavailable("the identity endpoint is off".to_owned());
        };
        let outcome = bindings.bind(&mut self.datapath, peer);
        match &outcome {
            // The endpoint logs bindings and refusals, throttled (a thousand handshakes a
            // second must not mean a thousand log lines); here only at debug.
            Outcome::Bound { renewed, .. } => {
                debug!(addr = %peer.addr, id = %peer.id, renewed, "peer bound to its SPIFFE ID");
            }
            Outcome::Conflict { holder } => {
                debug!(addr = %peer.addr, id = %peer.id, holder, "refused: the address is bound to another ID (address_conflict)");
            }
            Outcome::StaticElsewhere { holder } => {
                debug!(addr = %peer.addr, id = %peer.id, holder, "refused: the policy binds the address to another ID");
            }
            Outcome::Unavailable(why) => {
                warn!(addr = %peer.addr, id = %peer.id, why, "not bound");
            }
        }
        if bindings.stale() {
            let live = self.live.clone();
            self.reload(live, "a binding's write failed");
        }
        self.count_bindings();
        outcome
    }

    /// Takes out what the trust material (reloaded, or as loaded at start) no longer vouches
    /// for: a certificate the CRLs list, a CA the bundle dropped.
    pub(super) fn on_trust(&mut self, trust: &Revoked) {
        let Some(bindings) = self.bindings.as_mut() else {
            return;
        };
        for b in bindings.check_trust(&mut self.datapath, trust) {
            info!(addr = %b.addr, id = %b.id, "earned binding revoked (a CRL lists its chain, or the bundle no longer holds its CA)");
        }
        self.count_bindings();
    }

    /// Takes out expired bindings (the datapath already ignores them).
    pub(super) fn sweep_bindings(&mut self) {
        let Some(bindings) = self.bindings.as_mut() else {
            return;
        };
        let gone = bindings.expire(&mut self.datapath);
        for b in &gone {
            info!(addr = %b.addr, id = %b.id, "earned binding expired");
        }
        if !gone.is_empty() {
            self.count_bindings();
        }
    }

    fn count_bindings(&self) {
        let earned = self.bindings.as_ref().map_or(0, |b| b.len() as u64);
        lock(&self.state).earned_bindings = earned;
    }
}
