//! TLS towards `proto = "https"` upstreams. Certificates are verified by default against the
//! system roots; `upstream-ca-file` adds a private CA to them, `upstream-sni` names the host
//! to ask for and verify (default: the request's host), and only a key spelled
//! `dangerous-skip-verify` turns verification off.
//!
//! Phase: `upstream_peer`. The CA list (system roots plus the file) is built once, when the
//! route is built, never on the request path.
//!
//! Pooled upstream connections are shared by the routes whose peers hash alike, and Pingora's
//! peer hash has no place for the CA list: a connection one route verified against its CA file
//! would be reused by another route to the same address and name that trusts a different one.
//! The peer's `group_key` therefore carries a digest of the CA certificates, so that routes
//! share pooled connections only when they trust the same certificates.
//!
//! ```toml
//! [[route]]
//! host = "internal.example.com"
//! upstreams = ["10.0.0.5:8443"]
//! proto = "https"
//! upstream-ca-file = "/etc/berth/internal-ca.pem"
//! upstream-sni = "backend.internal"
//! ```

use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, WrappedX509};

use crate::plugin::{Plugin, RequestCtx};
use berth_core::route::UpstreamTls;

/// Applies a route's upstream TLS options to each connection.
pub struct UpstreamTlsOptions {
    ca: Option<Arc<[WrappedX509]>>,
    /// A digest of the CA certificates, as the peers' pool `group_key`; 0 without a CA file.
    trust_key: u64,
    sni: Option<String>,
    skip_verify: bool,
}

impl std::fmt::Debug for UpstreamTlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsOptions")
            .field("ca_certs", &self.ca.as_ref().map(|c| c.len()))
            .field("trust_key", &self.trust_key)
            .field("sni", &self.sni)
            .field("skip_verify", &self.skip_verify)
            .finish()
    }
}

/// The system roots plus the certificates of a PEM file, as Pingora's per-peer CA list.
/// Certificates that do not parse are skipped with a warning.
fn ca_list(file: &std::path::Path) -> Arc<[WrappedX509]> {
    let mut ders: Vec<Vec<u8>> = match rustls_native_certs::load_native_certs() {
        Ok(certs) => certs.into_iter().map(|c| c.to_vec()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the system's CA certificates");
            Vec::new()
        }
    };
    match berth_core::files::read_ca_file(file) {
        Ok(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                match cert {
                    Ok(c) => ders.push(c.to_vec()),
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "skipping a CA certificate")
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "cannot read upstream-ca-file")
        }
    }
    ders.into_iter()
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .map(|der| WrappedX509::new(der, parse_x509))
        .collect()
}

/// A digest of a CA list, never 0 (the key of peers without a CA file).
fn trust_key(ca: &[WrappedX509]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for cert in ca {
        cert.borrow_raw_cert().hash(&mut hasher);
    }
    hasher.finish().max(1)
}

impl UpstreamTlsOptions {
    /// Builds the options for a route, loading its CA file.
    pub fn new(tls: &UpstreamTls) -> UpstreamTlsOptions {
        let ca = tls.ca_file.as_deref().map(ca_list);
        UpstreamTlsOptions {
            trust_key: ca.as_deref().map_or(0, trust_key),
            ca,
            sni: tls.sni.clone(),
            skip_verify: tls.dangerous_skip_verify,
        }
    }
}

impl Plugin for UpstreamTlsOptions {
    fn name(&self) -> &'static str {
        "upstream-tls"
    }

    fn upstream_peer(&self, peer: &mut HttpPeer, _ctx: &RequestCtx) {
        if let Some(ca) = &self.ca {
            peer.options.ca = Some(ca.clone());
            peer.group_key = self.trust_key;
        }
        if let Some(sni) = &self.sni {
            peer.sni.clone_from(sni);
        }
        if self.skip_verify {
            peer.options.verify_cert = false;
            peer.options.verify_hostname = false;
        }
    }
}
