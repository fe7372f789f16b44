//! The SPIFFE X.509-SVID rules on a leaf certificate, each with its own [`Rejection`].
//!
//! The chain itself (signatures, validity, revocation, CA constraints) is webpki's job, done
//! before these checks (`verifier.rs`). What the SVID specification adds, checked here:
//!
//! - exactly one URI SAN, a SPIFFE ID of the expected trust domain, with a path;
//! - the leaf is not a CA (basicConstraints cA), and its keyUsage is present, has
//!   digitalSignature and neither keyCertSign nor cRLSign. A leaf **without** keyUsage is
//!   refused (`no_key_usage`): the X.509-SVID specification (section 4.3) says leaf SVIDs
//!   MUST carry it with digitalSignature;
//! - when extendedKeyUsage is present it includes clientAuth (webpki's client verifier refuses
//!   such a chain first, as `bad_eku`; this rule keeps the check if this module is used on
//!   its own). anyExtendedKeyUsage alone does not count as clientAuth.
//!
//! The URI is checked as a raw string, one rule at a time, before
//! [`SpiffeId`](crate::policy::spiffe::SpiffeId)'s parser sees it: the parser says whether it is a
//! SPIFFE ID, these rules say which rule it breaks.

use std::{
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, prelude::FromDer, time::ASN1Time,
};

use super::Rejection;
use crate::policy::spiffe::SpiffeId;

/// The longest SPIFFE ID the specification allows, in bytes.
pub const MAX_ID_BYTES: usize = 2048;

/// A leaf certificate that passed the SVID rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svid {
    pub id: SpiffeId,
    /// The serial number's content octets, as a CRL lists them.
    pub serial: Vec<u8>,
    /// The DER of the issuer Name.
    pub issuer: Vec<u8>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// What a verified chain (as the peer presented it, leaf first) says beyond its leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// `(issuer Name DER, serial)` of every certificate.
    pub links: Vec<(Vec<u8>, Vec<u8>)>,
    /// The issuer Name DER of the last one: the bundle CA the chain ends at.
    pub anchor: Vec<u8>,
    /// The earliest notAfter.
    pub not_after: SystemTime,
}

/// Reads a verified chain (DER, leaf first).
pub fn chain_of(certs: &[impl AsRef<[u8]>]) -> Result<Chain, Rejection> {
    let mut links = Vec::with_capacity(certs.len());
    let mut anchor = Vec::new();
    let mut not_after: Option<SystemTime> = None;
    for der in certs {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|_| Rejection::MalformedCertificate)?;
        let issuer = cert.issuer().as_raw().to_vec();
        let t = system_time(cert.validity().not_after);
        not_after = Some(not_after.map_or(t, |n| n.min(t)));
        links.push((issuer.clone(), cert.raw_serial().to_vec()));
        anchor = issuer;
    }
    Ok(Chain {
        links,
        anchor,
        not_after: not_after.ok_or(Rejection::NoClientCert)?,
    })
}

/// Checks the SVID rules on a leaf certificate (DER) whose chain is already verified.
pub fn check_leaf(der: &[u8], trust_domain: &str) -> Result<Svid, Rejection> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|_| Rejection::MalformedCertificate)?;
    if !rest.is_empty() {
        return Err(Rejection::MalformedCertificate);
    }
    check_constraints(&cert)?;
    let uri = single_uri(&cert)?;
    let id = check_uri(uri, trust_domain)?;
    Ok(Svid {
        id,
        serial: cert.raw_serial().to_vec(),
        issuer: cert.issuer().as_raw().to_vec(),
        not_before: system_time(cert.validity().not_before),
        not_after: system_time(cert.validity().not_after),
    })
}

/// The URI SANs of a certificate (DER), whatever they hold.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, Rejection> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| Rejection::MalformedCertificate)?;
    Ok(uris(&cert)?.into_iter().map(str::to_owned).collect())
}

fn uris<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, Rejection> {
    let san = cert
        .subject_alternative_name()
        .map_err(|_| Rejection::MalformedCertificate)?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn single_uri<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, Rejection> {
    match uris(cert)?.as_slice() {
        [] => Err(Rejection::NoUriSan),
        [one] => Ok(one),
        _ => Err(Rejection::MultipleUriSans),
    }
}

fn check_constraints(cert: &X509Certificate<'_>) -> Result<(), Rejection> {
    let malformed = |_| Rejection::MalformedCertificate;
    if cert
        .basic_constraints()
        .map_err(malformed)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(Rejection::LeafIsCa);
    }
    let Some(ku) = cert.key_usage().map_err(malformed)? else {
        return Err(Rejection::NoKeyUsage);
    };
    if ku.value.key_cert_sign() {
        return Err(Rejection::KeyCertSign);
    }
    if ku.value.crl_sign() {
        return Err(Rejection::CrlSign);
    }
    if !ku.value.digital_signature() {
        return Err(Rejection::NoDigitalSignature);
    }
    if let Some(eku) = cert.extended_key_usage().map_err(malformed)?
        && !eku.value.client_auth
    {
        return Err(Rejection::NoClientAuth);
    }
    Ok(())
}

/// Checks a URI SAN as a SPIFFE ID of `trust_domain`, one rule at a time.
pub fn check_uri(uri: &str, trust_domain: &str) -> Result<SpiffeId, Rejection> {
    if uri.len() > MAX_ID_BYTES {
        return Err(Rejection::IdTooLong);
    }
    let rest = uri.strip_prefix("spiffe://").ok_or(Rejection::BadScheme)?;
    if rest.contains(['?', '#']) {
        return Err(Rejection::QueryOrFragment);
    }
    if rest.contains('%') {
        return Err(Rejection::PercentEncoded);
    }
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains('@') {
        return Err(Rejection::TrustDomainHasUserinfo);
    }
    if authority.contains(':') {
        return Err(Rejection::TrustDomainHasPort);
    }
    if authority.is_empty() {
        return Err(Rejection::EmptyTrustDomain);
    }
    if authority.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(Rejection::TrustDomainNotLowerCase);
    }
    if path.is_empty() {
        return Err(Rejection::TrustDomainOnly);
    }
    if path.ends_with('/') {
        return Err(Rejection::TrailingSlash);
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(Rejection::EmptyPathSegment);
        }
        if segment == "." || segment == ".." {
            return Err(Rejection::DotSegment);
        }
    }
    let id = SpiffeId::from_str(uri).map_err(|_| Rejection::BadCharacters)?;
    if id.trust_domain() != trust_domain {
        return Err(Rejection::WrongTrustDomain);
    }
    Ok(id)
}

/// An ASN.1 time as a `SystemTime` (times before 1970 as 1970: no certificate we accept has
/// one that matters).
pub fn system_time(t: ASN1Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_malformed_id_has_its_own_reason() {
        let long = format!("spiffe://td/{}", "a".repeat(MAX_ID_BYTES));
        for (uri, want) in [
            ("SPIFFE://td/a", Rejection::BadScheme),
            ("https://td/a", Rejection::BadScheme),
            ("spiffe:td/a", Rejection::BadScheme),
            ("spiffe://TD/a", Rejection::TrustDomainNotLowerCase),
            ("spiffe://td:443/a", Rejection::TrustDomainHasPort),
            ("spiffe://u@td/a", Rejection::TrustDomainHasUserinfo),
            ("spiffe:///a", Rejection::EmptyTrustDomain),
            ("spiffe://other/a", Rejection::WrongTrustDomain),
            ("spiffe://td/a//b", Rejection::EmptyPathSegment),
            ("spiffe://td/a/./b", Rejection::DotSegment),
            ("spiffe://td/a/..", Rejection::DotSegment),
            ("spiffe://td/a/", Rejection::TrailingSlash),
            ("spiffe://td/", Rejection::TrailingSlash),
            ("spiffe://td/a%2Fb", Rejection::PercentEncoded),
            ("spiffe://td/a?x=1", Rejection::QueryOrFragment),
            ("spiffe://td/a#f", Rejection::QueryOrFragment),
            (long.as_str(), Rejection::IdTooLong),
            ("spiffe://td", Rejection::TrustDomainOnly),
            ("spiffe://td/a b", Rejection::BadCharacters),
            ("spiffe://t$d/a", Rejection::BadCharacters),
        ] {
            assert_eq!(check_uri(uri, "td"), Err(want), "{uri}");
        }
        assert_eq!(
            check_uri("spiffe://td/ns/a/sa/b", "td")
                .unwrap()
                .to_string(),
            "spiffe://td/ns/a/sa/b"
        );
        let longest = format!("spiffe://td/{}", "a".repeat(MAX_ID_BYTES - 12));
        assert_eq!(longest.len(), MAX_ID_BYTES);
        assert!(check_uri(&longest, "td").is_ok());
    }
}
