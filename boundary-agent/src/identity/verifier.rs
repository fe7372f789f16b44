//! The endpoint's client-certificate verifier: rustls' webpki verifier first (the chain to the
//! trust bundle, validity, CRLs, CA and EKU constraints), then the SVID rules (`svid.rs`).
//!
//! Revocation: every loaded CRL is checked for every certificate of the chain (not only the
//! leaf), by issuer and serial. A certificate whose issuer has **no CRL loaded** has an
//! unknown status, and unknown counts as not revoked (`allow_unknown_revocation_status`): a
//! CA that publishes no CRL, or whose CRL is not deployed yet, must not break every chain
//! through it. Expired CRLs are still used (rustls' default): a stale list of revoked serials
//! is still a list of revoked serials.
//!
//! Errors: a chain failure keeps rustls' own error, so the client gets the matching TLS alert
//! (`certificate_expired`, `unknown_ca`, `certificate_revoked`...); an SVID rule's failure is
//! `InvalidCertificate(Other(Rejection))`. [`Rejection::from_tls_error`] recovers the exact
//! reason from the server's handshake error either way.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime},
    server::{
        VerifierBuilderError, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::{Rejection, svid};

/// The crypto provider of every TLS config here: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// webpki, then the SVID rules for `trust_domain`. The client certificate is required.
#[derive(Debug)]
pub struct SvidVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl SvidVerifier {
    pub fn new(
        roots: RootCertStore,
        crls: Vec<CertificateRevocationListDer<'static>>,
        trust_domain: String,
    ) -> Result<Self, VerifierBuilderError> {
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(crls)
            .allow_unknown_revocation_status()
            .build()?;
        Ok(Self {
            inner,
            trust_domain,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// A rejection as the verifier returns it to rustls.
pub fn rejection_error(r: Rejection) -> TlsError {
    TlsError::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(r),
    )))
}

impl ClientCertVerifier for SvidVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        svid::check_leaf(end_entity, &self.trust_domain).map_err(rejection_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
