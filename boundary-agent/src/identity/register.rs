//! The client a workload runs to register with an agent's identity endpoint (and to renew):
//! presents its SVID over mTLS, sends `POST /v1/register` and reads the answer.
//!
//! The agent's own certificate is verified against `ca` (a trust bundle, PEM): its chain
//! must lead to a CA of the bundle, and it must either be valid for the host name or address
//! the client connected to, or carry a SPIFFE ID in the client's own trust domain (an agent's
//! SVID usually names no host). Without `ca` nothing about the agent is verified: only for
//! tests (`--insecure-skip-agent-verify`).

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
    StreamOwned,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

use super::{svid, verifier::provider};
use crate::policy::spiffe::SpiffeId;

/// What to register with, and how.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// The workload's SVID chain (PEM, leaf first) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The bundle the agent's certificate is verified against; `None`: not verified.
    pub ca: Option<PathBuf>,
    /// `host:port` of the agent's identity endpoint.
    pub agent: String,
    /// For connecting, the handshake and the answer, each.
    pub timeout: Duration,
}

/// The endpoint's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Registered {
    pub fn is_bound(&self) -> bool {
        self.status == 200
    }

    fn field(&self, name: &str) -> &str {
        self.body.get(name).and_then(|v| v.as_str()).unwrap_or("?")
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        if self.is_bound() {
            format!(
                "bound {} at {} until {}",
                self.field("spiffeId"),
                self.field("address"),
                self.field("expires")
            )
        } else {
            let mut s = format!("refused ({}): {}", self.status, self.field("error"));
            if let Some(holder) = self.body.get("holder").and_then(|v| v.as_str()) {
                let _ = write!(s, ", the address is bound to {holder}");
            }
            if let Some(detail) = self.body.get("detail").and_then(|v| v.as_str()) {
                let _ = write!(s, ": {detail}");
            }
            s
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {what}", file.display())]
    Invalid { file: PathBuf, what: String },
    #[error("{agent:?} is not host:port")]
    Agent { agent: String },
    #[error("cannot connect to {agent}: {source}")]
    Connect {
        agent: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS exchange with {agent} failed: {source}")]
    Tls {
        agent: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{agent} answered something that is not the identity endpoint's answer: {what}")]
    Answer { agent: String, what: String },
}

impl RegisterError {
    /// Bad input (a file, an address) rather than a failure of the exchange.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RegisterError::Read { .. }
                | RegisterError::Invalid { .. }
                | RegisterError::Agent { .. }
        )
    }
}

fn read(file: &Path) -> Result<Vec<u8>, RegisterError> {
    std::fs::read(file).map_err(|source| RegisterError::Read {
        file: file.to_owned(),
        source,
    })
}

fn invalid(file: &Path, what: impl Into<String>) -> RegisterError {
    RegisterError::Invalid {
        file: file.to_owned(),
        what: what.into(),
    }
}

/// Reads the files (again: a rotated SVID is picked up), connects, registers.
pub fn register(opts: &RegisterOptions) -> Result<Registered, RegisterError> {
    let config = client_config(opts)?;
    let (host, _) = opts
        .agent
        .rsplit_once(':')
        .ok_or_else(|| RegisterError::Agent {
            agent: opts.agent.clone(),
        })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|_| RegisterError::Agent {
        agent: opts.agent.clone(),
    })?;
    let connect = |source| RegisterError::Connect {
        agent: opts.agent.clone(),
        source,
    };
    let addr = opts
        .agent
        .to_socket_addrs()
        .map_err(connect)?
        .next()
        .ok_or_else(|| RegisterError::Agent {
            agent: opts.agent.clone(),
        })?;
    let tcp = TcpStream::connect_timeout(&addr, opts.timeout).map_err(connect)?;
    // The handshake's last flight and the request are small writes in a row: without this,
    // Nagle holds the second until the first is acknowledged (40 ms of delayed ACK).
    tcp.set_nodelay(true).map_err(connect)?;
    tcp.set_read_timeout(Some(opts.timeout)).map_err(connect)?;
    tcp.set_write_timeout(Some(opts.timeout)).map_err(connect)?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| RegisterError::Tls {
        agent: opts.agent.clone(),
        source: std::io::Error::other(e),
    })?;
    let mut tls = StreamOwned::new(conn, tcp);
    let tls_err = |source| RegisterError::Tls {
        agent: opts.agent.clone(),
        source,
    };
    let request = format!(
        "POST /v1/register HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).map_err(tls_err)?;
    tls.flush().map_err(tls_err)?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // A peer that closes without close_notify, after a whole answer: the answer stands.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(tls_err(e)),
    }
    parse_response(&response).map_err(|what| RegisterError::Answer {
        agent: opts.agent.clone(),
        what,
    })
}

fn parse_response(response: &[u8]) -> Result<Registered, String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no end of the HTTP head")?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("no HTTP status line")?;
    let body = serde_json::from_str(body.trim()).map_err(|e| format!("body not JSON: {e}"))?;
    Ok(Registered { status, body })
}

fn client_config(opts: &RegisterOptions) -> Result<ClientConfig, RegisterError> {
    let chain = CertificateDer::pem_slice_iter(&read(&opts.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&opts.cert, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(&opts.cert, "no CERTIFICATE in it"));
    };
    let own_domain = svid::uri_sans(leaf)
        .map_err(|r| invalid(&opts.cert, r.to_string()))?
        .iter()
        .find_map(|u| SpiffeId::from_str(u).ok())
        .map(|id| id.trust_domain().to_owned());
    let key = PrivateKeyDer::from_pem_slice(&read(&opts.key)?)
        .map_err(|e| invalid(&opts.key, format!("no usable private key (PEM): {e}")))?;
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let check = match &opts.ca {
        None => AgentCheck::Insecure,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                let cert = cert.map_err(|e| invalid(ca, format!("not a PEM bundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(ca, format!("not a usable CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid(ca, "no CERTIFICATE in the bundle"));
            }
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| invalid(ca, e.to_string()))?;
            AgentCheck::Bundle { inner, own_domain }
        }
    };
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(&opts.cert, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AgentVerifier { check, algorithms }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            invalid(
                &opts.key,
                format!("does not go with {}: {e}", opts.cert.display()),
            )
        })
}

#[derive(Debug)]
enum AgentCheck {
    Bundle {
        inner: Arc<WebPkiServerVerifier>,
        own_domain: Option<String>,
    },
    Insecure,
}

/// webpki against the bundle; a name mismatch is excused for an agent whose SVID is in the
/// client's own trust domain.
#[derive(Debug)]
struct AgentVerifier {
    check: AgentCheck,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AgentVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let AgentCheck::Bundle { inner, own_domain } = &self.check else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if own_domain.as_deref().is_some_and(|td| {
                svid::uri_sans(end_entity).is_ok_and(|uris| {
                    uris.iter()
                        .filter_map(|u| SpiffeId::from_str(u).ok())
                        .any(|id| id.trust_domain() == td)
                })
            }) =>
            {
                // The chain verified (webpki checks the name last); the agent is a member of
                // our trust domain.
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
