//! The self-signed default certificate (`default-cert = "generate"`): created on first start
//! and kept in certs-dir, so HTTPS answers out of the box and the same certificate survives
//! restarts. Never overwrites an existing `default.crt`/`default.key`.

use std::io;
use std::path::Path;

use berth_core::contract::write_atomic;

use super::store::DEFAULT_NAME;

/// Creates `default.key` and `default.crt` in `dir` unless a `default.crt` is there.
/// Returns whether it generated one.
///
/// # Errors
/// When the key or certificate cannot be generated or written.
pub fn ensure_default_cert(dir: &Path) -> io::Result<bool> {
    let crt = dir.join(format!("{DEFAULT_NAME}.crt"));
    if crt.exists() {
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
    write_atomic(
        &dir.join(format!("{DEFAULT_NAME}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
    Ok(true)
}
