//! A test PKI made with rcgen: CAs, intermediates, SVID leaves and CRLs, ECDSA P-256
//! throughout. Shared by the identity unit tests (`src/identity/tests.rs`) and the endpoint's
//! integration test.

use std::{
    sync::atomic::{AtomicU8, Ordering},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType,
    SerialNumber,
};

/// Serial numbers unique within a test binary (first octet below 0x80: no sign padding).
fn next_serial() -> Vec<u8> {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    vec![0x42, NEXT.fetch_add(1, Ordering::Relaxed), 0x07]
}

/// A CA (root or intermediate): its certificate and what signs with it.
pub struct Ca {
    pub der: Vec<u8>,
    serial: Vec<u8>,
    pub pem: String,
    params: CertificateParams,
    key: KeyPair,
}

/// A signed leaf and its key.
pub struct Leaf {
    pub der: Vec<u8>,
    pub pem: String,
    pub key_pem: String,
    pub serial: Vec<u8>,
}

fn ca_params(cn: &str, trust_domain: Option<&str>, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(path_len.map_or(
        BasicConstraints::Unconstrained,
        BasicConstraints::Constrained,
    ));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Some(td) = trust_domain {
        p.subject_alt_names = vec![SanType::URI(format!("spiffe://{td}").try_into().unwrap())];
    }
    p.serial_number = Some(SerialNumber::from_slice(&next_serial()));
    p
}

impl Ca {
    /// A self-signed root naming `trust_domain` in a URI SAN (if given).
    pub fn root(cn: &str, trust_domain: Option<&str>) -> Self {
        Self::root_with(ca_params(cn, trust_domain, None))
    }

    pub fn root_with(params: CertificateParams) -> Self {
        let serial = params
            .serial_number
            .as_ref()
            .map(SerialNumber::to_bytes)
            .unwrap_or_default();
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self {
            der: cert.der().to_vec(),
            serial,
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// This CA certificate's serial number.
    pub fn serial(&self) -> Vec<u8> {
        self.serial.clone()
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, cn: &str, path_len: Option<u8>) -> Self {
        let params = ca_params(cn, None, path_len);
        let serial = params
            .serial_number
            .as_ref()
            .map(SerialNumber::to_bytes)
            .unwrap_or_default();
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.issuer())
            .expect("intermediate");
        Self {
            der: cert.der().to_vec(),
            serial,
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// A leaf signed by this CA, from `params` as given.
    pub fn sign(&self, mut params: CertificateParams) -> Leaf {
        let serial = next_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer()).expect("leaf");
        Leaf {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    /// A valid SVID for `uri`, changed by `f` first.
    pub fn svid(&self, uri: &str, f: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut p = svid_params(&[uri]);
        f(&mut p);
        self.sign(p)
    }

    /// A CRL of this CA listing `serials` (PEM).
    pub fn crl(&self, serials: &[&[u8]]) -> String {
        let now = SystemTime::now();
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::from_secs(60)).into(),
            next_update: (now + Duration::from_secs(3600)).into(),
            crl_number: SerialNumber::from_slice(&next_serial()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: (now - Duration::from_secs(30)).into(),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer())
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }
}

/// A valid X.509-SVID's parameters: the URI SANs given, not a CA, keyUsage digitalSignature,
/// EKU clientAuth and serverAuth, valid from a minute ago for an hour.
pub fn svid_params(uris: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "workload");
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).to_owned().try_into().expect("IA5 URI")))
        .collect();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let now = SystemTime::now();
    p.not_before = (now - Duration::from_secs(60)).into();
    p.not_after = (now + Duration::from_secs(3600)).into();
    p
}
