//! The built-in plugins. Each module says which phases it uses.

mod acme_challenge;
mod allow;
mod auth;
mod auth_files;
mod body;
mod client_cert;
mod compress;
mod forward_auth;
mod forwarded;
mod htpasswd;
mod https;
mod maintenance;
mod rate_limit;
mod registry;
pub mod registry_token;
mod sticky;
mod timeouts;
mod upstream_tls;
mod watched;

pub use acme_challenge::{AcmeChallenge, SharedThumbprint};
pub use allow::Allow;
pub use auth::{BasicAuth, RepositoryRules};
pub use auth_files::AuthFiles;
pub use body::{BodyLimit, BodyRate};
pub use client_cert::{
    identity_of, CertIdentity, ClientCa, ClientCert, ClientCertificate, CLIENT_CA_LIMIT,
    SUBJECT_HEADER,
};
pub use compress::{Compress, BROTLI_QUALITY, GZIP_LEVEL, WINDOW_LOG, ZSTD_LEVEL};
pub use forward_auth::{Decision, ForwardAuth};
pub use forwarded::{forward_headers, Forwarded};
pub use htpasswd::{
    parse_basic, parse_htpasswd, read_htpasswd, Htpasswd, HtpasswdFile, HTPASSWD_LIMIT,
    VERIFIED_CACHE,
};
pub use https::{redirect_location, redirect_status, HttpsPolicy, OwnCertificate};
pub use maintenance::{Maintenance, RETRY_AFTER_SECS};
pub use rate_limit::{ClientKey, RateLimiter};
pub use registry::{
    is_blob_upload, rewrite_location, RegistryProfile, UploadResult, DISTRIBUTION_API_VERSION,
};
pub use sticky::{Sticky, COOKIE_NAME};
pub use timeouts::Timeouts;
pub use upstream_tls::UpstreamTlsOptions;
pub use watched::{Contents, Reload, Watched, GROUPS_LIMIT};
