//! Which certificate names may answer an SNI name, against the check TLS clients make: a
//! certificate with those SANs is made (rcgen) and rustls' verifier (webpki) is asked whether
//! it is valid for the name. berth must pick a certificate exactly when a rustls client would
//! accept it for that name.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use berth_proxy::tls::store::covers;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, DnsName, ServerName};

#[derive(Arbitrary, Debug)]
struct Input {
    sans: Vec<Name>,
    name: Name,
}

/// A DNS name built from short labels, so that the fuzzer reaches matches; `wildcard` puts
/// `*` in the leftmost label.
#[derive(Arbitrary, Debug)]
struct Name {
    wildcard: bool,
    labels: Vec<u8>,
}

const LABELS: [&str; 6] = ["a", "b", "example", "com", "x-1", "test"];

impl Name {
    fn text(&self) -> Option<String> {
        let mut labels: Vec<&str> = self
            .labels
            .iter()
            .take(5)
            .map(|b| LABELS[usize::from(*b) % LABELS.len()])
            .collect();
        if self.wildcard {
            labels.insert(0, "*");
        }
        (!labels.is_empty()).then(|| labels.join("."))
    }
}

fn key() -> &'static rcgen::KeyPair {
    static KEY: OnceLock<rcgen::KeyPair> = OnceLock::new();
    KEY.get_or_init(|| rcgen::KeyPair::generate().expect("key"))
}

/// Whether a rustls client accepts a certificate for `sans` when it asked for `name`.
fn client_accepts(sans: &[String], name: &str) -> Option<bool> {
    let params = rcgen::CertificateParams::new(sans.to_vec()).ok()?;
    let cert = params.self_signed(key()).ok()?;
    let der = CertificateDer::from(cert.der().to_vec());
    let end_entity = webpki::EndEntityCert::try_from(&der).ok()?;
    let dns = DnsName::try_from(name.to_string()).ok()?;
    Some(
        end_entity
            .verify_is_valid_for_subject_name(&ServerName::DnsName(dns))
            .is_ok(),
    )
}

fuzz_target!(|input: Input| {
    let Some(name) = input.name.text().filter(|n| !n.contains('*')) else {
        return;
    };
    let sans: Vec<String> = input.sans.iter().take(4).filter_map(Name::text).collect();
    if sans.is_empty() {
        return;
    }
    let Some(accepted) = client_accepts(&sans, &name) else {
        return;
    };
    assert_eq!(
        covers(&sans, &name),
        accepted,
        "SANs {sans:?}, SNI {name:?}: berth and a rustls client disagree"
    );
});
