//! berth-acme: the certificate worker. It reads the same configuration file as berth, finds
//! which certificates are wanted (static routes with `acme = true`, containers with
//! `LETSENCRYPT_HOST` / `ACME_HOST` / `berth.acme=true`, through the label schema berth
//! uses), and obtains and renews them from an ACME CA with HTTP-01 challenges that berth
//! serves from the shared challenge directory. Certificates land in certs-dir in
//! acme-companion's layout, where berth hot-loads them: no signal, no restart.
//!
//! - [`wanted`]: which certificates, and which are due (pure);
//! - [`account`]: ACME accounts, created once per directory and email and kept on disk;
//! - [`issue`]: one order, from new order to the files in certs-dir;
//! - [`plan`]: the renewal decision for one certificate (pure): due, the CA's window,
//!   back-off, throttle, forced;
//! - [`worker`]: the loop — gathers the facts, carries out the plan, follows Docker events;
//! - [`metrics`]: `berth_acme_*` on its own listener;
//! - [`feed`]: the certificate feed edges on other hosts mirror (`acme.feed`).

pub mod account;
pub mod dns;
pub mod feed;
pub mod issue;
pub mod metrics;
pub mod plan;
pub mod wanted;
pub mod worker;

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ACME exchange failed (the CA's problem document, or a transport error).
    #[error("{0}")]
    Acme(instant_acme::Error),
    /// The CA did not take the new order.
    #[error("new order: {0}")]
    NewOrder(instant_acme::Error),
    /// The order did not validate or finish.
    #[error("{0}")]
    Order(String),
    /// Key or CSR generation failed.
    #[error("key: {0}")]
    Key(rcgen::Error),
    /// Reading or writing files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A DNS-01 challenge record could not be published or was not seen in time.
    #[error("dns-01: {0}")]
    Dns(String),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}
