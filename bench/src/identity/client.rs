//! The mTLS client the latency and rate figures use: tokio-rustls, TLS 1.3, the workload's
//! ECDSA P-256 SVID, the agent verified against the bundle as a TLS server at its address.
//!
//! Every connection gets a fresh `ClientConfig` with resumption disabled (no session cache,
//! no tickets), so each handshake is a full one with the client certificate proven anew. The
//! signing key is parsed once (a workload keeps its key loaded; parsing it is not part of a
//! handshake).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use rustls::{
    ClientConfig, RootCertStore, SignatureScheme,
    client::{ResolvesClientCert, Resumption},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::pki::Leaf;

/// Connect, handshake and answer, each.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Presents the one SVID, whatever the server asks.
#[derive(Debug)]
struct Svid(Arc<CertifiedKey>);

impl ResolvesClientCert for Svid {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Clone)]
pub struct Client {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    svid: Arc<Svid>,
    pub endpoint: SocketAddr,
}

/// Where a connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Connect,
    Handshake,
    Answer,
}

impl Stage {
    pub fn label(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Handshake => "TLS handshake",
            Stage::Answer => "request/answer",
        }
    }
}

/// A handshake done: the stream, and when its steps ended.
pub struct Handshake {
    pub tls: TlsStream<TcpStream>,
    pub connect: Duration,
    pub handshake: Duration,
    /// When the client's side of the handshake completed (its Finished flushed).
    pub done: Instant,
}

impl Client {
    pub fn new(ca_pem: &str, leaf: &Leaf, endpoint: SocketAddr) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.context("the bundle's PEM")?)?;
        }
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).context("the SVID key")?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .context("load the SVID key")?;
        let chain = vec![CertificateDer::from(leaf.der.clone())];
        Ok(Self {
            provider,
            roots: Arc::new(roots),
            svid: Arc::new(Svid(Arc::new(CertifiedKey::new(chain, key)))),
            endpoint,
        })
    }

    /// A fresh config: no session state shared with any other connection.
    fn config(&self) -> anyhow::Result<Arc<ClientConfig>> {
        let mut c = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_cert_resolver(Arc::clone(&self.svid) as Arc<dyn ResolvesClientCert>);
        c.resumption = Resumption::disabled();
        Ok(Arc::new(c))
    }

    /// Connects from `src` and completes the TLS handshake.
    pub async fn handshake(&self, src: Ipv4Addr) -> Result<Handshake, (Stage, anyhow::Error)> {
        let start = Instant::now();
        let tcp = async {
            let s = TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
            let tcp = s.connect(self.endpoint).await?;
            tcp.set_nodelay(true)?;
            anyhow::Ok(tcp)
        };
        let tcp = match tokio::time::timeout(TIMEOUT, tcp).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err((Stage::Connect, e)),
            Err(_) => return Err((Stage::Connect, anyhow::anyhow!("timed out"))),
        };
        let connected = Instant::now();
        let config = self.config().map_err(|e| (Stage::Handshake, e))?;
        let name = ServerName::IpAddress(self.endpoint.ip().into());
        let tls = match tokio::time::timeout(TIMEOUT, TlsConnector::from(config).connect(name, tcp))
            .await
        {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Err((Stage::Handshake, e.into())),
            Err(_) => return Err((Stage::Handshake, anyhow::anyhow!("timed out"))),
        };
        let done = Instant::now();
        Ok(Handshake {
            tls,
            connect: connected - start,
            handshake: done - connected,
            done,
        })
    }
}

/// `POST /v1/register` on a handshaken stream: the answer's status and when its status line
/// arrived. The rest of the answer is read to the end (the endpoint closes).
pub async fn register(
    mut tls: TlsStream<TcpStream>,
) -> Result<(u16, Instant), (Stage, anyhow::Error)> {
    let asked = async {
        tls.write_all(
            b"POST /v1/register HTTP/1.1\r\nHost: boundary\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        tls.flush().await?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let at = loop {
            let n = tls.read(&mut chunk).await?;
            if n == 0 {
                bail!("closed before the status line");
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(2).any(|w| w == b"\r\n") {
                break Instant::now();
            }
        };
        let status = std::str::from_utf8(&buf)
            .ok()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .context("an HTTP status line")?;
        // Drain to the close (an EOF without close_notify is fine: the answer is in).
        let _ = tls.read_to_end(&mut buf).await;
        anyhow::Ok((status, at))
    };
    match tokio::time::timeout(TIMEOUT, asked).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((Stage::Answer, e)),
        Err(_) => Err((Stage::Answer, anyhow::anyhow!("timed out"))),
    }
}
