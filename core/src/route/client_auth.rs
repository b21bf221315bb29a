//! Client certificates: `client-ca` (the PEM file of the CAs whose certificates a host
//! takes) and `client-auth` (`require`: no verified certificate, no handshake; `optional`:
//! a verified certificate is a login, none is no login).

use std::path::PathBuf;

use serde::Serialize;

use crate::errors::Errors;

/// Whether a host's TLS handshake needs a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client may send a certificate; a verified one is a login.
    Optional,
    /// No verified certificate, no handshake (the default with `client-ca`).
    Require,
}

/// How a route's host verifies client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ClientAuth {
    /// The PEM file of the CAs whose certificates the host takes.
    pub ca: PathBuf,
    /// Whether a certificate is needed.
    pub mode: ClientAuthMode,
}

/// The prefix of a client certificate's identity where rules name users (`cert:ci-runner`).
pub const CERT_USER_PREFIX: &str = "cert:";

/// Validates `client-ca` and `client-auth`; `key` names a key in errors.
pub fn validate_client_auth(
    ca: Option<&str>,
    mode: Option<&str>,
    key: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<ClientAuth> {
    let mode = match mode.map(str::trim) {
        None => None,
        Some(m) if m.eq_ignore_ascii_case("require") => Some(ClientAuthMode::Require),
        Some(m) if m.eq_ignore_ascii_case("optional") => Some(ClientAuthMode::Optional),
        Some(other) => {
            errors.push(
                key("client-auth"),
                format!(
                    "invalid client-auth \"{}\": expected \"require\" or \"optional\"",
                    crate::logging::shown(other, 64)
                ),
            );
            return None;
        }
    };
    let Some(ca) = ca else {
        if mode.is_some() {
            errors.push(
                key("client-auth"),
                "needs client-ca (the CAs whose client certificates the host takes)",
            );
        }
        return None;
    };
    // Read when the route is built and whenever it changes, as an htpasswd file is (and
    // by `berth check`): a file missing at start is logged, and fails closed.
    if !ca.starts_with('/') {
        errors.push(
            key("client-ca"),
            format!(
                "\"{}\" is not an absolute path",
                crate::logging::shown(ca, 256)
            ),
        );
        return None;
    }
    Some(ClientAuth {
        ca: PathBuf::from(ca),
        mode: mode.unwrap_or(ClientAuthMode::Require),
    })
}
