//! Identity over mTLS: a workload presents its X.509-SVID to the agent's identity endpoint, the
//! agent verifies it ([`verifier`], [`svid`]) and asks the binding side to bind the peer's
//! source address to its SPIFFE ID ([`BindRequest`]).
//!
//! - [`rejection`]: every reason a handshake is refused, with its metric labels.
//! - [`svid`]: the SPIFFE X.509-SVID rules on a leaf certificate.
//! - [`verifier`]: the rustls client-certificate verifier (webpki chain, CRLs, then [`svid`]).
//! - [`trust`]: the trust bundle, CRLs and the agent's own certificate, reloaded on change.
//! - [`server`]: the mTLS endpoint on a thread and runtime of its own.
//! - [`stats`]: handshake counters by `(result, reason)`.
//! - [`register`]: the client workloads run to register and renew.

pub mod duration;
pub mod register;
pub mod rejection;
pub mod server;
pub mod stats;
pub mod svid;
#[cfg(test)]
mod tests;
pub mod throttle;
pub mod trust;
pub mod verifier;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use serde::Deserialize;

pub use self::{
    rejection::Rejection,
    server::{ServeError, serve},
    stats::Stats,
    svid::Svid,
    trust::{TrustError, TrustStore},
};
use crate::policy::spiffe::SpiffeId;

/// A peer whose certificate the endpoint verified: what the binding side needs to bind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The peer's source address as this host sees it (an IPv4-mapped IPv6 address as IPv4).
    pub peer: IpAddr,
    pub id: SpiffeId,
    /// The leaf certificate's serial number (the DER INTEGER's content octets).
    pub serial: Vec<u8>,
    /// The DER of the leaf's issuer Name: with `serial`, what a CRL revokes.
    pub issuer: Vec<u8>,
    /// The earliest notAfter of the chain the peer presented (the leaf's or an
    /// intermediate's): a binding cannot outlive any certificate it was verified through.
    pub not_after: SystemTime,
    /// `(issuer Name DER, serial)` of every certificate the peer presented, leaf first: a CRL
    /// that lists any of them ends the binding.
    pub chain: Vec<(Vec<u8>, Vec<u8>)>,
    /// The issuer Name DER of the last certificate presented: the bundle CA the chain ends at.
    /// A bundle reload without that CA ends the binding.
    pub anchor: Vec<u8>,
}

/// What the binding side answered a [`BindRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindOutcome {
    /// Bound (or renewed) until `expires`.
    Bound { expires: SystemTime },
    /// The address is bound to another live ID.
    Conflict { holder: SpiffeId },
    /// The address is statically bound to another ID by the policy.
    StaticElsewhere,
    /// The binding side could not act (datapath unavailable, shutting down...).
    Unavailable(String),
}

/// A verified peer to bind; the endpoint waits for the answer on `reply`.
#[derive(Debug)]
pub struct BindRequest {
    pub attested: Attested,
    pub reply: tokio::sync::oneshot::Sender<BindOutcome>,
}

/// The trust material after a reload, as the binding side needs it: what the CRLs list and
/// which CAs the bundle holds. Bindings made with a listed certificate, or through a CA no
/// longer in the bundle, are to be removed. Sent after every reload (and once at start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// `(issuer Name DER, serial)` of every certificate the CRLs list.
    pub revoked: Vec<(Vec<u8>, Vec<u8>)>,
    /// The subject Name DER of every certificate of the bundle.
    pub anchors: Vec<Vec<u8>>,
}

/// The agent config's `identity:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityConfig {
    /// The mTLS endpoint's address; absent (or `""`) = no endpoint.
    #[serde(default, deserialize_with = "duration::optional_addr")]
    pub listen: Option<SocketAddr>,
    /// One or more CA certificates (PEM).
    pub trust_bundle: PathBuf,
    /// The trust domain peers must belong to; by default the bundle's CAs' (`spiffe://td`
    /// URI SAN).
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// One or more CRLs (PEM), reloaded on change.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// The agent's own certificate chain (PEM, leaf first) and its key.
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// How long a binding lasts at most (it also ends at the certificate's notAfter):
    /// `90s`, `30m`, `1h`, `1d`. Default 1h.
    #[serde(default = "duration::default_lease", with = "duration::serde_duration")]
    pub lease: Duration,
    /// SPIFFE IDs allowed to use the control API over this endpoint.
    #[serde(default)]
    pub admins: Vec<String>,
}

impl IdentityConfig {
    /// The trust files' paths, as [`TrustStore::load`] takes them.
    pub fn trust_paths(&self) -> trust::TrustPaths {
        trust::TrustPaths {
            bundle: self.trust_bundle.clone(),
            crl: self.crl.clone(),
            certificate: self.certificate.clone(),
            key: self.key.clone(),
            trust_domain: self.trust_domain.clone(),
        }
    }
}
