//! The self-signed default certificate (`default-cert = "generate"`): created on first start
//! and kept in certs-dir, so HTTPS answers out of the box and the same certificate survives
//! restarts. Never overwrites an existing `default.crt`/`default.key`.

use berth_core::contract::CertDir;
use std::io;

use super::store::DEFAULT_NAME;

/// Creates `default.key` and `default.crt` in `certs` unless a `default.crt` is there.
/// Returns whether it generated one.
///
/// # Errors
/// When the key or certificate cannot be generated or written.
pub fn ensure_default_cert(certs: &CertDir) -> io::Result<bool> {
    if certs.crt(DEFAULT_NAME).exists() {
        return Ok(false);
    }
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(io::Error::other)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth default certificate");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "berth");
    let key = rcgen::KeyPair::generate().map_err(io::Error::other)?;
    let cert = params.self_signed(&key).map_err(io::Error::other)?;
    certs.write(
        DEFAULT_NAME,
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )?;
    Ok(true)
}
