//! The verifier and the trust store on certificates made by the tests (rcgen): every
//! rejection reason from a crafted certificate, a chain through an intermediate, CRLs.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime, pem::PemObject},
    server::danger::ClientCertVerifier,
};

use super::{Rejection, svid, trust::TrustPaths, trust::TrustStore, verifier::SvidVerifier};

#[path = "../../tests/support/pki.rs"]
mod pki;
use pki::{Ca, Leaf, svid_params};

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/ns/orders/sa/api";

/// Verifies `leaf` (with `chain` as intermediates) against `roots` and `crls`, as the endpoint
/// does.
fn verify(roots: &[&Ca], crls: &[&str], chain: &[&Ca], leaf: &Leaf) -> Result<(), Rejection> {
    let mut store = RootCertStore::empty();
    for ca in roots {
        store.add(CertificateDer::from(ca.der.clone())).unwrap();
    }
    let crls = crls
        .iter()
        .flat_map(|pem| CertificateRevocationListDer::pem_slice_iter(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let verifier = SvidVerifier::new(store, crls, TD.into()).unwrap();
    let intermediates: Vec<_> = chain
        .iter()
        .map(|c| CertificateDer::from(c.der.clone()))
        .collect();
    verifier
        .verify_client_cert(
            &CertificateDer::from(leaf.der.clone()),
            &intermediates,
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| Rejection::from_tls_error(&e))
}

fn root() -> Ca {
    Ca::root("root", Some(TD))
}

#[test]
fn a_valid_svid_is_accepted_directly_and_through_an_intermediate() {
    let root = root();
    let leaf = root.svid(ID, |_| {});
    assert_eq!(verify(&[&root], &[], &[], &leaf), Ok(()));
    let svid = svid::check_leaf(&leaf.der, TD).unwrap();
    assert_eq!(svid.id.to_string(), ID);
    assert_eq!(svid.serial, leaf.serial);
    assert!(svid.not_after > SystemTime::now() + Duration::from_mins(50));

    let int = root.intermediate("intermediate", None);
    let leaf = int.svid(ID, |_| {});
    assert_eq!(verify(&[&root], &[], &[&int], &leaf), Ok(()));
    assert_eq!(
        verify(&[&root], &[], &[], &leaf),
        Err(Rejection::UnknownCa),
        "without the intermediate the chain does not lead to the bundle"
    );
}

#[test]
fn every_malformed_spiffe_id_is_refused_with_its_own_reason() {
    let root = root();
    let long = format!("spiffe://{TD}/{}", "a".repeat(2048));
    for (uri, want) in [
        ("spiffe://other.org/ns/a", Rejection::WrongTrustDomain),
        ("SPIFFE://example.org/a", Rejection::BadScheme),
        ("https://example.org/a", Rejection::BadScheme),
        ("spiffe://Example.org/a", Rejection::TrustDomainNotLowerCase),
        ("spiffe://example.org:8443/a", Rejection::TrustDomainHasPort),
        (
            "spiffe://me@example.org/a",
            Rejection::TrustDomainHasUserinfo,
        ),
        ("spiffe://example.org/a//b", Rejection::EmptyPathSegment),
        ("spiffe://example.org/a/./b", Rejection::DotSegment),
        ("spiffe://example.org/a/../b", Rejection::DotSegment),
        ("spiffe://example.org/a/", Rejection::TrailingSlash),
        ("spiffe://example.org/a%41", Rejection::PercentEncoded),
        ("spiffe://example.org/a?b=c", Rejection::QueryOrFragment),
        ("spiffe://example.org/a#b", Rejection::QueryOrFragment),
        (long.as_str(), Rejection::IdTooLong),
        ("spiffe://example.org", Rejection::TrustDomainOnly),
        ("spiffe://example.org/a*b", Rejection::BadCharacters),
    ] {
        let leaf = root.svid(uri, |_| {});
        assert_eq!(verify(&[&root], &[], &[], &leaf), Err(want), "{uri}");
        assert_eq!(want.result(), "bad_svid");
    }
}

#[test]
fn one_uri_san_exactly() {
    let root = root();
    let none = root.sign(svid_params(&[]));
    assert_eq!(verify(&[&root], &[], &[], &none), Err(Rejection::NoUriSan));
    let mut dns_only = svid_params(&[]);
    dns_only.subject_alt_names = vec![SanType::DnsName("api.example.org".try_into().unwrap())];
    let dns_only = root.sign(dns_only);
    assert_eq!(
        verify(&[&root], &[], &[], &dns_only),
        Err(Rejection::NoUriSan)
    );
    let two = root.sign(svid_params(&[ID, "spiffe://example.org/other"]));
    assert_eq!(
        verify(&[&root], &[], &[], &two),
        Err(Rejection::MultipleUriSans)
    );
}

#[test]
fn the_leaf_must_be_a_signing_end_entity_for_client_auth() {
    let root = root();
    let with = |f: fn(&mut rcgen::CertificateParams)| root.svid(ID, f);

    // WebPKI refuses a CA leaf first; the SVID rule stays for the module on its own.
    let ca_leaf = with(|p| p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    assert_eq!(
        verify(&[&root], &[], &[], &ca_leaf),
        Err(Rejection::CaUsedAsLeaf)
    );
    assert_eq!(svid::check_leaf(&ca_leaf.der, TD), Err(Rejection::LeafIsCa));

    let kcs = with(|p| {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    assert_eq!(
        verify(&[&root], &[], &[], &kcs),
        Err(Rejection::KeyCertSign)
    );
    let crl = with(|p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
    });
    assert_eq!(verify(&[&root], &[], &[], &crl), Err(Rejection::CrlSign));
    let no_ds = with(|p| p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]);
    assert_eq!(
        verify(&[&root], &[], &[], &no_ds),
        Err(Rejection::NoDigitalSignature)
    );
    let without_ku = with(|p| p.key_usages = vec![]);
    assert_eq!(
        verify(&[&root], &[], &[], &without_ku),
        Err(Rejection::NoKeyUsage)
    );

    // EKU without clientAuth: WebPKI's client verifier refuses it first (bad_eku); the SVID
    // rule (no_client_auth) fires when the module is used on its own.
    let server_only = with(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]);
    assert_eq!(
        verify(&[&root], &[], &[], &server_only),
        Err(Rejection::BadEku)
    );
    assert_eq!(
        svid::check_leaf(&server_only.der, TD),
        Err(Rejection::NoClientAuth)
    );
    // No EKU at all is allowed (the rule is "clientAuth when EKU is present").
    let no_eku = with(|p| p.extended_key_usages = vec![]);
    assert_eq!(verify(&[&root], &[], &[], &no_eku), Ok(()));
}

#[test]
fn validity_and_issuer_and_signature() {
    let root = root();
    let now = SystemTime::now();
    let expired = root.svid(ID, |p| {
        p.not_before = (now - Duration::from_secs(7200)).into();
        p.not_after = (now - Duration::from_secs(3600)).into();
    });
    assert_eq!(
        verify(&[&root], &[], &[], &expired),
        Err(Rejection::Expired)
    );
    let early = root.svid(ID, |p| {
        p.not_before = (now + Duration::from_secs(3600)).into();
        p.not_after = (now + Duration::from_secs(7200)).into();
    });
    assert_eq!(
        verify(&[&root], &[], &[], &early),
        Err(Rejection::NotYetValid)
    );
    let stranger = Ca::root("stranger", Some(TD)).svid(ID, |_| {});
    assert_eq!(
        verify(&[&root], &[], &[], &stranger),
        Err(Rejection::UnknownCa)
    );
    let mut forged = root.svid(ID, |_| {});
    let last = forged.der.len() - 1;
    forged.der[last] ^= 0x01;
    assert_eq!(
        verify(&[&root], &[], &[], &forged),
        Err(Rejection::BadSignature)
    );
    let garbage = Leaf {
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        pem: String::new(),
        key_pem: String::new(),
        serial: vec![],
    };
    assert_eq!(
        verify(&[&root], &[], &[], &garbage),
        Err(Rejection::MalformedCertificate)
    );
}

#[test]
fn a_path_length_constraint_is_enforced() {
    let root = root();
    let int0 = root.intermediate("pathlen 0", Some(0));
    let int1 = int0.intermediate("below pathlen 0", None);
    let leaf = int1.svid(ID, |_| {});
    assert_eq!(
        verify(&[&root], &[], &[&int1, &int0], &leaf),
        Err(Rejection::PathLenExceeded)
    );
    let fine = int0.svid(ID, |_| {});
    assert_eq!(verify(&[&root], &[], &[&int0], &fine), Ok(()));
}

#[test]
fn revocation_is_by_issuer_and_serial_and_unknown_status_is_not_revoked() {
    let root = root();
    let int = root.intermediate("intermediate", None);
    let revoked = int.svid(ID, |_| {});
    let other = int.svid(ID, |_| {});
    let int_crl = int.crl(&[&revoked.serial]);
    assert_eq!(
        verify(&[&root], &[&int_crl], &[&int], &revoked),
        Err(Rejection::Revoked)
    );
    assert_eq!(verify(&[&root], &[&int_crl], &[&int], &other), Ok(()));
    // The same serial from another issuer is not the revoked certificate.
    let root_crl = root.crl(&[&revoked.serial]);
    assert_eq!(verify(&[&root], &[&root_crl], &[&int], &revoked), Ok(()));
    // No CRL loaded for the intermediate (its certificates' status is unknown): accepted.
    assert_eq!(verify(&[&root], &[], &[&int], &revoked), Ok(()));
    // The intermediate itself revoked by the root: every chain through it is.
    let root_crl = root.crl(&[&int.serial()]);
    assert_eq!(
        verify(&[&root], &[&root_crl], &[&int], &other),
        Err(Rejection::Revoked)
    );
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("boundary-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        // Replace by rename, as tools that rotate certificates do.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn paths(dir: &TempDir, root: &Ca, crl: Option<&str>) -> TrustPaths {
    let agent = root.svid("spiffe://example.org/agent", |_| {});
    TrustPaths {
        bundle: dir.write("bundle.pem", &root.pem),
        crl: crl.map(|c| dir.write("crl.pem", c)),
        certificate: dir.write("agent.pem", &agent.pem),
        key: dir.write("agent.key", &agent.key_pem),
        trust_domain: None,
    }
}

fn message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[test]
fn the_trust_domain_comes_from_the_bundle_or_the_config() {
    let dir = TempDir::new("identity-td");
    let root = root();
    let store = TrustStore::load(paths(&dir, &root, None)).unwrap();
    assert_eq!(store.trust_domain(), TD);
    assert!(store.agent_not_after() > SystemTime::now());

    let unnamed = Ca::root("unnamed", None);
    let p = paths(&dir, &unnamed, None);
    let e = message(TrustStore::load(p.clone()).unwrap_err());
    assert!(e.contains("bundle.pem") && e.contains("trustDomain"), "{e}");
    let store = TrustStore::load(TrustPaths {
        trust_domain: Some("configured.org".into()),
        ..p.clone()
    })
    .unwrap();
    assert_eq!(store.trust_domain(), "configured.org");
    let e = message(
        TrustStore::load(TrustPaths {
            trust_domain: Some("Bad/Domain".into()),
            ..p
        })
        .unwrap_err(),
    );
    assert!(e.contains("trust domain"), "{e}");

    let other = Ca::root("other", Some("other.org"));
    let p = paths(&dir, &root, None);
    dir.write("bundle.pem", &format!("{}{}", root.pem, other.pem));
    let e = message(TrustStore::load(p).unwrap_err());
    assert!(e.contains("different trust domains"), "{e}");
}

#[test]
fn bad_files_are_named_in_the_error() {
    let dir = TempDir::new("identity-bad");
    let root = root();
    let p = paths(&dir, &root, None);
    dir.write("agent.key", "not a key\n");
    let e = message(TrustStore::load(p.clone()).unwrap_err());
    assert!(e.contains("agent.key"), "{e}");
    let other = root.svid("spiffe://example.org/x", |_| {});
    dir.write("agent.key", &other.key_pem);
    let e = message(TrustStore::load(p.clone()).unwrap_err());
    assert!(
        e.contains("agent.key") && e.contains("does not go with"),
        "{e}"
    );
    let e = message(
        TrustStore::load(TrustPaths {
            bundle: Path::new("/nonexistent/bundle.pem").into(),
            ..p
        })
        .unwrap_err(),
    );
    assert!(e.contains("/nonexistent/bundle.pem"), "{e}");
}

#[test]
fn a_reload_reports_newly_revoked_and_a_bad_file_keeps_the_previous_config() {
    let dir = TempDir::new("identity-reload");
    let root = root();
    let a = root.svid(ID, |_| {});
    let b = root.svid(ID, |_| {});
    let store = TrustStore::load(paths(&dir, &root, Some(&root.crl(&[&a.serial])))).unwrap();
    assert_eq!(store.poll().unwrap(), None, "nothing changed");
    let before = store.server_config();

    dir.write("crl.pem", &root.crl(&[&a.serial, &b.serial]));
    let reload = store.poll().unwrap().expect("the CRL changed");
    let issuer = svid::check_leaf(&b.der, TD).unwrap().issuer;
    assert_eq!(reload.newly_revoked, 1);
    assert!(reload.state.revoked.contains(&(issuer, b.serial.clone())));
    assert_eq!(reload.state.revoked.len(), 2, "both listed");
    assert!(!std::sync::Arc::ptr_eq(&before, &store.server_config()));

    let good = store.server_config();
    dir.write(
        "crl.pem",
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    );
    let e = message(store.poll().unwrap_err());
    assert!(e.contains("crl.pem"), "{e}");
    assert!(
        std::sync::Arc::ptr_eq(&good, &store.server_config()),
        "the previous config stays"
    );
    assert_eq!(store.poll().unwrap(), None, "a bad file is reported once");

    // An emptied CRL file: nothing revoked any more, nothing newly revoked.
    dir.write("crl.pem", "");
    let emptied = store.poll().unwrap().unwrap();
    assert_eq!(emptied.newly_revoked, 0);
    assert_eq!(emptied.state.revoked, vec![]);
}

#[test]
fn the_identity_config_section_reads_as_documented() {
    let c: super::IdentityConfig = serde_yaml_ng::from_str(
        "listen: \"0.0.0.0:8444\"\ntrustBundle: /etc/boundary/bundle.pem\ncrl: /etc/boundary/crl.pem\n\
         certificate: /etc/boundary/agent.crt\nkey: /etc/boundary/agent.key\nlease: 30m\n\
         admins: [\"spiffe://example.org/admin\"]\n",
    )
    .unwrap();
    assert_eq!(c.listen, Some("0.0.0.0:8444".parse().unwrap()));
    assert_eq!(c.lease, Duration::from_mins(30));
    assert_eq!(
        c.trust_paths().crl,
        Some(PathBuf::from("/etc/boundary/crl.pem"))
    );
    assert_eq!(c.trust_domain, None);
    let minimal: super::IdentityConfig = serde_yaml_ng::from_str(
        "listen: \"\"\ntrustBundle: b.pem\ncertificate: a.pem\nkey: a.key\n",
    )
    .unwrap();
    assert_eq!(minimal.listen, None, "\"\" is off");
    assert_eq!(minimal.lease, Duration::from_hours(1), "the default lease");
    for (bad, why) in [
        (
            "trustBundle: b\ncertificate: a\nkey: k\nlistne: \"\"\n",
            "unknown field",
        ),
        ("trustBundle: b\ncertificate: a\nkey: k\nlease: 0s\n", "0"),
        (
            "trustBundle: b\ncertificate: a\nkey: k\nlease: 1w\n",
            "unit",
        ),
        (
            "trustBundle: b\ncertificate: a\nkey: k\nlisten: localhost\n",
            "IP address and port",
        ),
    ] {
        let e = serde_yaml_ng::from_str::<super::IdentityConfig>(bad).unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}
