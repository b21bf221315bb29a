//! TLS termination: the certificate store read from certs-dir, the SNI resolver that picks a
//! certificate per handshake from the live snapshot, the watcher that hot-reloads the
//! directory, the generated default certificate, and on an edge of several the mirror of
//! berth-acme's certificate feed.
//!
//! ```toml
//! [listen]
//! https = "0.0.0.0:443"
//!
//! [tls]
//! certs-dir = "/var/lib/berth/certs"   # <host>.crt + <host>.key, default.crt + default.key
//! default-cert = "generate"            # or "none": unknown names are refused
//! ```

pub mod client_auth;
pub mod feed;
pub mod generate;
pub mod loader;
pub mod resolver;
pub mod store;
pub mod watcher;

pub use generate::ensure_default_cert;
pub use loader::Loader;
pub use resolver::SniResolver;
pub use store::CertStore;
pub use watcher::CertWatcher;
