//! Picks the certificate for each TLS handshake from the live snapshots: the certificate
//! store and the route table (for a route's `cert-name`). Synchronous and lock-free: two
//! `ArcSwap` loads and a few hash lookups per handshake.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use berth_plugins::SharedTable;

use super::store::CertStore;

/// rustls' resolver over berth's snapshots.
pub struct SniResolver {
    store: Arc<ArcSwap<CertStore>>,
    table: SharedTable,
}

impl SniResolver {
    /// A resolver over the live certificate store and route table.
    pub fn new(store: Arc<ArcSwap<CertStore>>, table: SharedTable) -> SniResolver {
        SniResolver { store, table }
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello
            .server_name()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let table = self.table.load();
        let cert_name = sni.as_deref().and_then(|name| {
            table
                .routes_for_host(name)
                .find_map(|r| r.spec.cert_name.clone())
        });
        let store = self.store.load();
        let chosen = store.select(sni.as_deref(), cert_name.as_deref());
        if chosen.is_none() {
            tracing::debug!(sni = ?sni, "no certificate for this name; handshake refused");
        }
        chosen.map(|e| e.key.clone())
    }
}
