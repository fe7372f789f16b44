//! Why a handshake was refused: one reason per check, each with its metric labels.
//!
//! `reason()` is the fine label (`boundary_handshakes_total{reason}`), `result()` the coarse
//! class the issue names (`{result}`). Both are `&'static str` from one list, so the label
//! values are bounded and cannot drift from the enum.

use std::fmt;

use rustls::{CertificateError, Error as TlsError};

macro_rules! rejections {
    ($($(#[$doc:meta])* $variant:ident => $reason:literal, $result:literal, $text:literal;)*) => {
        /// Why a handshake was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Rejection {
            $($(#[$doc])* $variant,)*
        }

        impl Rejection {
            /// Every rejection, in declaration order.
            pub const ALL: &[Rejection] = &[$(Rejection::$variant,)*];

            /// The `reason` label: `snake_case`, unique.
            pub fn reason(self) -> &'static str {
                match self { $(Rejection::$variant => $reason,)* }
            }

            /// The `result` label: the coarse class.
            pub fn result(self) -> &'static str {
                match self { $(Rejection::$variant => $result,)* }
            }

            fn text(self) -> &'static str {
                match self { $(Rejection::$variant => $text,)* }
            }
        }
    };
}

rejections! {
    // The TLS handshake and the webpki chain.
    /// The client presented no certificate (it is required).
    NoClientCert => "no_client_cert", "no_client_cert", "no client certificate presented";
    Expired => "expired", "expired", "a certificate in the chain has expired";
    NotYetValid => "not_yet_valid", "not_yet_valid", "a certificate in the chain is not valid yet";
    UnknownCa => "unknown_ca", "unknown_ca", "the chain does not lead to a CA of the trust bundle";
    Revoked => "revoked", "revoked", "a certificate in the chain is revoked by a loaded CRL";
    BadSignature => "bad_signature", "bad_certificate", "a signature in the chain does not verify";
    /// webpki: the leaf has basicConstraints cA=TRUE.
    CaUsedAsLeaf => "ca_used_as_leaf", "bad_certificate", "the leaf certificate is a CA certificate";
    /// webpki: the leaf's extendedKeyUsage lacks clientAuth.
    BadEku => "bad_eku", "bad_certificate", "the leaf's extended key usage does not allow client authentication";
    PathLenExceeded => "path_len_exceeded", "bad_certificate", "a CA's path length constraint is exceeded";
    UnsupportedAlgorithm => "unsupported_algorithm", "bad_certificate", "a signature algorithm in the chain is not supported";
    MalformedCertificate => "malformed_certificate", "bad_certificate", "a certificate cannot be parsed";
    /// A certificate failure webpki reports that none of the above names (name constraints,
    /// an unhandled critical extension...).
    BadCertificate => "bad_certificate", "bad_certificate", "the certificate chain is not acceptable";
    /// A loaded CRL for an issuer in the chain cannot be used (its signature does not verify,
    /// an unsupported form): the chain is refused rather than its revocation guessed.
    BadCrl => "bad_crl", "bad_certificate", "a CRL for the chain cannot be used";
    /// The handshake failed for a reason that is not about the certificate (no TLS 1.3, no
    /// common cipher suite, a peer that closed or sent garbage, a timeout).
    OtherTls => "other_tls", "tls_error", "the TLS handshake failed";
    HandshakeTimeout => "handshake_timeout", "tls_error", "the TLS handshake did not complete in time";
    /// Every connection slot was taken and this one, the oldest, was closed for a new one.
    Evicted => "evicted", "tls_error", "the connection was closed to make room for a newer one";

    // The SPIFFE X.509-SVID rules (svid.rs).
    NoUriSan => "no_uri_san", "bad_svid", "the leaf has no URI SAN";
    MultipleUriSans => "multiple_uri_sans", "bad_svid", "the leaf has more than one URI SAN";
    BadScheme => "bad_scheme", "bad_svid", "the URI SAN's scheme is not spiffe (lower case)";
    EmptyTrustDomain => "empty_trust_domain", "bad_svid", "the SPIFFE ID's trust domain is empty";
    TrustDomainNotLowerCase => "trust_domain_not_lower_case", "bad_svid", "the SPIFFE ID's trust domain is not lower case";
    TrustDomainHasPort => "trust_domain_has_port", "bad_svid", "the SPIFFE ID's trust domain has a port";
    TrustDomainHasUserinfo => "trust_domain_has_userinfo", "bad_svid", "the SPIFFE ID's trust domain has user info";
    WrongTrustDomain => "wrong_trust_domain", "bad_svid", "the SPIFFE ID belongs to another trust domain";
    EmptyPathSegment => "empty_path_segment", "bad_svid", "the SPIFFE ID's path has an empty segment";
    DotSegment => "dot_segment", "bad_svid", "the SPIFFE ID's path has a '.' or '..' segment";
    TrailingSlash => "trailing_slash", "bad_svid", "the SPIFFE ID's path ends with '/'";
    PercentEncoded => "percent_encoded", "bad_svid", "the SPIFFE ID is percent-encoded";
    QueryOrFragment => "query_or_fragment", "bad_svid", "the SPIFFE ID has a query or a fragment";
    IdTooLong => "id_too_long", "bad_svid", "the SPIFFE ID is longer than 2048 bytes";
    TrustDomainOnly => "trust_domain_only", "bad_svid", "the SPIFFE ID names a trust domain, not a workload (no path)";
    BadCharacters => "bad_characters", "bad_svid", "the SPIFFE ID has characters the specification does not allow";
    LeafIsCa => "leaf_is_ca", "bad_svid", "the leaf has basicConstraints cA=TRUE";
    KeyCertSign => "key_cert_sign", "bad_svid", "the leaf's key usage includes keyCertSign";
    CrlSign => "crl_sign", "bad_svid", "the leaf's key usage includes cRLSign";
    NoDigitalSignature => "no_digital_signature", "bad_svid", "the leaf's key usage lacks digitalSignature";
    NoKeyUsage => "no_key_usage", "bad_svid", "the leaf has no key usage extension (an SVID must)";
    NoClientAuth => "no_client_auth", "bad_svid", "the leaf's extended key usage lacks clientAuth";
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text(), self.reason())
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// The rejection a failed server handshake's error stands for: an SVID rule's own reason
    /// when the verifier refused the certificate with one, the verifier's certificate error
    /// mapped otherwise.
    pub fn from_tls_error(e: &TlsError) -> Self {
        match e {
            TlsError::NoCertificatesPresented => Rejection::NoClientCert,
            TlsError::InvalidCertificate(c) => Self::from_certificate_error(c),
            TlsError::InvalidCertRevocationList(_) => Rejection::BadCrl,
            _ => Rejection::OtherTls,
        }
    }

    /// The rejection for a rustls certificate error. rustls maps most webpki errors to a
    /// variant of its own and hands over the others (CA as leaf, path length, ...) as
    /// `Other(webpki::Error)`; our verifier hands over a [`Rejection`] as `Other` too.
    pub fn from_certificate_error(e: &CertificateError) -> Self {
        #[expect(
            deprecated,
            reason = "rustls still produces the old variants in places"
        )]
        match e {
            CertificateError::BadEncoding => Rejection::MalformedCertificate,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                Rejection::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Rejection::NotYetValid
            }
            CertificateError::Revoked => Rejection::Revoked,
            CertificateError::UnknownIssuer => Rejection::UnknownCa,
            CertificateError::BadSignature => Rejection::BadSignature,
            CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                Rejection::UnsupportedAlgorithm
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Rejection::BadEku
            }
            CertificateError::Other(other) => {
                if let Some(r) = other.0.downcast_ref::<Rejection>() {
                    *r
                } else if let Some(w) = other.0.downcast_ref::<webpki::Error>() {
                    Self::from_webpki_error(w)
                } else {
                    Rejection::BadCertificate
                }
            }
            _ => Rejection::BadCertificate,
        }
    }

    /// The webpki errors rustls passes through as `Other`.
    fn from_webpki_error(e: &webpki::Error) -> Self {
        #[expect(
            deprecated,
            reason = "webpki still produces the old variants in places"
        )]
        match e {
            webpki::Error::CaUsedAsEndEntity => Rejection::CaUsedAsLeaf,
            webpki::Error::PathLenConstraintViolated => Rejection::PathLenExceeded,
            webpki::Error::BadDer
            | webpki::Error::BadDerTime
            | webpki::Error::TrailingData(_)
            | webpki::Error::MalformedExtensions
            | webpki::Error::ExtensionValueInvalid
            | webpki::Error::InvalidSerialNumber
            | webpki::Error::UnsupportedCertVersion => Rejection::MalformedCertificate,
            webpki::Error::EmptyEkuExtension
            | webpki::Error::RequiredEkuNotFound
            | webpki::Error::RequiredEkuNotFoundContext(_) => Rejection::BadEku,
            webpki::Error::SignatureAlgorithmMismatch => Rejection::UnsupportedAlgorithm,
            _ => Rejection::BadCertificate,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn reasons_are_unique_snake_case_and_results_are_the_issues_classes() {
        let reasons: BTreeSet<_> = Rejection::ALL.iter().map(|r| r.reason()).collect();
        assert_eq!(
            reasons.len(),
            Rejection::ALL.len(),
            "a reason label is reused"
        );
        for r in Rejection::ALL {
            assert!(
                r.reason()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{r:?}"
            );
            assert!(
                [
                    "expired",
                    "not_yet_valid",
                    "unknown_ca",
                    "revoked",
                    "bad_svid",
                    "no_client_cert",
                    "bad_certificate",
                    "tls_error"
                ]
                .contains(&r.result()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn a_rejection_survives_the_trip_through_a_rustls_error() {
        let e = TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(Rejection::TrailingSlash),
        )));
        assert_eq!(Rejection::from_tls_error(&e), Rejection::TrailingSlash);
        let e = TlsError::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(webpki::Error::PathLenConstraintViolated),
        )));
        assert_eq!(Rejection::from_tls_error(&e), Rejection::PathLenExceeded);
        assert_eq!(
            Rejection::from_tls_error(&TlsError::NoCertificatesPresented),
            Rejection::NoClientCert
        );
    }
}
