//! The endpoint's trust material, from the files the agent config names: the trust bundle
//! (CA certificates), the CRLs, and the agent's own certificate chain and key. [`TrustStore`]
//! holds the TLS config built from them and rebuilds it when a file changes.
//!
//! A reload is all or nothing: every file is read and checked and the new config built before
//! it replaces the old one. A bad new file is reported (once per change) and the previous
//! config stays in use. Changes are noticed by each file's size, mtime and inode (a rename
//! over it counts), polled by the endpoint every second.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::NoServerSessionStorage,
};
use x509_parser::{certificate::X509Certificate, prelude::FromDer, revocation_list};

use super::{
    Revoked,
    svid::{self, system_time},
    verifier::{SvidVerifier, provider},
};
use crate::policy::spiffe::SpiffeId;

/// The files the trust material is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPaths {
    pub bundle: PathBuf,
    pub crl: Option<PathBuf>,
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Given, it must be a valid trust domain; absent, the bundle's CAs name it.
    pub trust_domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what}", file.display())]
    Invalid { file: PathBuf, what: String },
    #[error("trust domain: {0}")]
    TrustDomain(String),
    #[error("cannot build the TLS configuration: {0}")]
    Tls(String),
}

fn invalid(file: &Path, what: impl Into<String>) -> TrustError {
    TrustError::Invalid {
        file: file.to_owned(),
        what: what.into(),
    }
}

/// One consistent load of every file.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    pub trust_domain: String,
    /// The agent's own certificate's notAfter.
    pub agent_not_after: SystemTime,
    /// `(issuer Name DER, serial)` of every certificate the loaded CRLs list.
    pub revoked: BTreeSet<(Vec<u8>, Vec<u8>)>,
    /// The subject Name DER of every certificate of the bundle.
    pub anchors: BTreeSet<Vec<u8>>,
    stamps: Vec<Option<Stamp>>,
}

impl Loaded {
    /// What the binding side checks its bindings against.
    pub fn state(&self) -> Revoked {
        Revoked {
            revoked: self.revoked.iter().cloned().collect(),
            anchors: self.anchors.iter().cloned().collect(),
        }
    }
}

/// What tells a file changed: size, mtime and inode (a replacement by rename changes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ino: u64,
    dev: u64,
}

/// What a reload changed that the agent must act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// How many certificates the new CRLs list that the previous ones did not.
    pub newly_revoked: usize,
    /// The whole new state, for the binding side.
    pub state: Revoked,
}

/// The current trust material, reloaded from disk on change.
#[derive(Debug)]
pub struct TrustStore {
    paths: TrustPaths,
    current: Mutex<Arc<Loaded>>,
    /// The stamps of the last load that failed: not retried (nor reported) until a file
    /// changes again.
    failed: Mutex<Option<Vec<Option<Stamp>>>>,
}

impl TrustStore {
    /// Loads every file; any problem is an error naming the file.
    pub fn load(paths: TrustPaths) -> Result<Self, TrustError> {
        let loaded = load(&paths)?;
        Ok(Self {
            paths,
            current: Mutex::new(Arc::new(loaded)),
            failed: Mutex::new(None),
        })
    }

    pub fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The TLS config new handshakes use.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current().config)
    }

    pub fn trust_domain(&self) -> String {
        self.current().trust_domain.clone()
    }

    /// The agent's own certificate's notAfter (for a "seconds until it expires" gauge).
    pub fn agent_not_after(&self) -> SystemTime {
        self.current().agent_not_after
    }

    /// Reloads if a file changed since the last load. `Ok(None)`: nothing changed (or the
    /// files are as they were when a reload last failed). `Err`: a file changed and the new
    /// set is bad; the previous config stays, and the same files are not reported again.
    pub fn poll(&self) -> Result<Option<Reload>, TrustError> {
        let stamps = stamps(&self.paths);
        if stamps == self.current().stamps {
            return Ok(None);
        }
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.as_ref() == Some(&stamps) {
            return Ok(None);
        }
        let loaded = match load(&self.paths) {
            Ok(l) => l,
            Err(e) => {
                *failed = Some(stamps);
                return Err(e);
            }
        };
        *failed = None;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let newly_revoked = loaded.revoked.difference(&current.revoked).count();
        let state = loaded.state();
        *current = Arc::new(loaded);
        Ok(Some(Reload {
            newly_revoked,
            state,
        }))
    }
}

fn all_paths(paths: &TrustPaths) -> Vec<&Path> {
    let mut all = vec![paths.bundle.as_path()];
    all.extend(paths.crl.as_deref());
    all.extend([paths.certificate.as_path(), paths.key.as_path()]);
    all
}

fn stamps(paths: &TrustPaths) -> Vec<Option<Stamp>> {
    all_paths(paths)
        .into_iter()
        .map(|p| {
            fs::metadata(p).ok().map(|m| Stamp {
                len: m.len(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ino: m.ino(),
                dev: m.dev(),
            })
        })
        .collect()
}

fn read(file: &Path) -> Result<Vec<u8>, TrustError> {
    fs::read(file).map_err(|source| TrustError::Read {
        file: file.to_owned(),
        source,
    })
}

fn load(paths: &TrustPaths) -> Result<Loaded, TrustError> {
    // Stamps first: a file that changes while it is read is read again at the next poll.
    let stamps = stamps(paths);
    let (roots, trust_domain, anchors) = load_bundle(&paths.bundle, paths.trust_domain.as_deref())?;
    let (crls, revoked) = match &paths.crl {
        Some(file) => load_crls(file)?,
        None => (Vec::new(), BTreeSet::new()),
    };
    let (chain, agent_not_after) = load_chain(&paths.certificate)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&paths.key)?)
        .map_err(|e| invalid(&paths.key, format!("no usable private key (PEM): {e}")))?;
    let verifier = SvidVerifier::new(roots, crls, trust_domain.clone()).map_err(|e| {
        invalid(
            paths.crl.as_deref().unwrap_or(&paths.bundle),
            format!("cannot build the client verifier: {e}"),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TrustError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(|e| {
            invalid(
                &paths.key,
                format!(
                    "does not go with the certificate {}: {e}",
                    paths.certificate.display()
                ),
            )
        })?;
    // No resumption: every connection proves its certificate again, so a revoked or
    // rotated-out certificate cannot ride on an old session.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // No ALPN: a client that offers only h2 (a gRPC stack) is still verified and bound (the
    // handshake is what binds); with no protocol agreed it speaks HTTP/1.1 or nothing.
    Ok(Loaded {
        config: Arc::new(config),
        trust_domain,
        agent_not_after,
        revoked,
        anchors,
        stamps,
    })
}

/// The CA certificates and the trust domain (configured, or the one every CA names).
fn load_bundle(
    file: &Path,
    configured: Option<&str>,
) -> Result<(RootCertStore, String, BTreeSet<Vec<u8>>), TrustError> {
    let certs = CertificateDer::pem_slice_iter(&read(file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(file, "no CERTIFICATE in the trust bundle"));
    }
    let mut roots = RootCertStore::empty();
    let mut domains = BTreeSet::new();
    let mut anchors = BTreeSet::new();
    let mut unnamed = 0;
    for (i, cert) in certs.into_iter().enumerate() {
        let n = i + 1;
        let (_, parsed) = X509Certificate::from_der(&cert)
            .map_err(|_| invalid(file, format!("certificate {n} cannot be parsed")))?;
        anchors.insert(parsed.subject().as_raw().to_vec());
        let named: Vec<String> = svid::uri_sans(&cert)
            .map_err(|_| invalid(file, format!("certificate {n} cannot be parsed")))?
            .iter()
            .filter_map(|u| SpiffeId::from_str(u).ok())
            .map(|id| id.trust_domain().to_owned())
            .collect();
        if named.is_empty() {
            unnamed += 1;
        }
        domains.extend(named);
        roots
            .add(cert)
            .map_err(|e| invalid(file, format!("certificate {n} is not a usable CA: {e}")))?;
    }
    let trust_domain = match configured {
        Some(td) => {
            let id = SpiffeId::from_str(&format!("spiffe://{td}"))
                .map_err(|e| TrustError::TrustDomain(e.to_string()))?;
            if !id.path().is_empty() {
                return Err(TrustError::TrustDomain(format!(
                    "{td:?} is not a trust domain (no '/' in it)"
                )));
            }
            td.to_owned()
        }
        None => match (domains.len(), unnamed) {
            (1, 0) => domains.pop_first().unwrap_or_default(),
            (0, _) => {
                return Err(invalid(
                    file,
                    "no CA names a trust domain (a spiffe://td URI SAN); set identity.trustDomain",
                ));
            }
            (1, _) => {
                return Err(invalid(
                    file,
                    "some CAs name no trust domain (no spiffe://td URI SAN); set identity.trustDomain",
                ));
            }
            _ => {
                return Err(invalid(
                    file,
                    format!(
                        "the CAs name different trust domains ({}); set identity.trustDomain",
                        domains.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        },
    };
    Ok((roots, trust_domain, anchors))
}

type RevokedSet = BTreeSet<(Vec<u8>, Vec<u8>)>;

/// The CRLs of a PEM file, and what they list. An empty file is no CRL (nothing revoked).
fn load_crls(
    file: &Path,
) -> Result<(Vec<CertificateRevocationListDer<'static>>, RevokedSet), TrustError> {
    let text = read(file)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, format!("not a PEM CRL file: {e}")))?;
    if crls.is_empty() && !text.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            file,
            "no X509 CRL block in it (an empty file means no CRL)",
        ));
    }
    let mut revoked = BTreeSet::new();
    for (i, crl) in crls.iter().enumerate() {
        let (_, parsed) = revocation_list::CertificateRevocationList::from_der(crl)
            .map_err(|e| invalid(file, format!("CRL {} cannot be parsed: {e}", i + 1)))?;
        let issuer = parsed.issuer().as_raw().to_vec();
        revoked.extend(
            parsed
                .iter_revoked_certificates()
                .map(|r| (issuer.clone(), r.raw_serial().to_vec())),
        );
    }
    Ok((crls, revoked))
}

/// The agent's certificate chain (leaf first) and the leaf's notAfter.
fn load_chain(file: &Path) -> Result<(Vec<CertificateDer<'static>>, SystemTime), TrustError> {
    let chain = CertificateDer::pem_slice_iter(&read(file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(file, "no CERTIFICATE in it"));
    };
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| invalid(file, format!("the first certificate cannot be parsed: {e}")))?;
    let not_after = system_time(cert.validity().not_after);
    Ok((chain, not_after))
}
