//! Client certificates (`client-ca`, `client-auth`): the request-time half.
//!
//! The TLS handshake verifies a client's certificate against its host's `client-ca` (the
//! proxy chooses the handshake's settings by the server name the client sends) and leaves a
//! [`ClientCertificate`] on the connection. This step, on a route with `client-ca`, reads it:
//!
//! - a verified certificate from the route's own CA is a login as `cert:<CN>` (the subject's
//!   common name), which the repository rules and basic auth see as a user, and whose
//!   subject goes upstream in `X-Client-Cert-Subject` (a client never sets that header: it
//!   is removed from every request, [`super::Forwarded`]);
//! - a connection made for another host (HTTP/2 connection reuse, or a `Host` that differs
//!   from the TLS server name) has not shown this host's CA a certificate: with
//!   `client-auth = "require"` it gets `421 Misdirected Request`, which makes browsers and
//!   HTTP/2 clients open a connection of its own; with `optional` it is no login;
//! - plain HTTP carries no certificate: `require` answers `403`.
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! client-ca = "/etc/berth/clients-ca.pem"
//! client-auth = "optional"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use pingora_core::tls::RootCertStore;
use pingora_error::Result;
use pingora_proxy::Session;

use super::watched::{Contents, Watched};
use crate::plugin::{Flow, Plugin, Reply, RequestCtx, Scheme};
use berth_core::route::{ClientAuth, ClientAuthMode, CERT_USER_PREFIX};

/// The largest `client-ca` file berth reads.
pub const CLIENT_CA_LIMIT: u64 = berth_core::files::CA_FILE_LIMIT;

/// The header that carries a verified client certificate's subject to the upstream.
pub const SUBJECT_HEADER: &str = "x-client-cert-subject";

/// The CA certificates of a `client-ca` file.
#[derive(Debug, Clone)]
pub struct ClientCa {
    /// The CAs, as rustls verifies against them.
    pub roots: Arc<RootCertStore>,
}

impl Default for ClientCa {
    fn default() -> ClientCa {
        ClientCa {
            roots: Arc::new(RootCertStore::empty()),
        }
    }
}

impl Contents for ClientCa {
    const WHAT: &'static str = "client-ca";
    const ENTRIES: &'static str = "CA certificates";

    fn read(path: &Path) -> std::result::Result<ClientCa, Vec<String>> {
        let bytes = berth_core::files::read_regular(path, CLIENT_CA_LIMIT).map_err(|e| vec![e])?;
        let mut roots = RootCertStore::empty();
        let mut errors = Vec::new();
        for (i, cert) in rustls_pemfile::certs(&mut &bytes[..]).enumerate() {
            match cert {
                Ok(der) => {
                    if let Err(e) = roots.add(der) {
                        errors.push(format!("certificate {}: {e}", i + 1));
                    }
                }
                Err(e) => errors.push(format!("certificate {}: {e}", i + 1)),
            }
        }
        if errors.is_empty() && roots.is_empty() {
            errors.push("holds no PEM certificate".to_string());
        }
        if errors.is_empty() {
            Ok(ClientCa {
                roots: Arc::new(roots),
            })
        } else {
            Err(errors)
        }
    }

    fn entries(&self) -> usize {
        self.roots.len()
    }
}

/// What a TLS connection's handshake verified about its client, for a host with
/// `client-ca` (connections for other hosts carry none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The `client-ca` of the host the handshake was for.
    pub ca: PathBuf,
    /// The certificate it verified, if the client sent one.
    pub verified: Option<CertIdentity>,
}

/// A verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The user it logs in as: `cert:<CN>`; `None` for a certificate without a common name
    /// (verified, and no login).
    pub user: Option<String>,
    /// Its subject, as RFC 4514 writes a distinguished name.
    pub subject: String,
}

/// This step's slot in [`RequestCtx::slots`]: the request's verified certificate.
#[derive(Debug, Clone)]
struct Verified(CertIdentity);

/// The client-certificate step of a route with `client-ca`.
#[derive(Debug)]
pub struct ClientCert {
    auth: ClientAuth,
    /// Keeps the CA file open (watched) while the route exists.
    _ca: Arc<Watched<ClientCa>>,
}

impl ClientCert {
    /// The step for a route verifying `auth`, whose CA file is `ca`.
    pub fn new(auth: ClientAuth, ca: Arc<Watched<ClientCa>>) -> ClientCert {
        ClientCert { auth, _ca: ca }
    }

    /// The verified client certificate of this request, on a route with `client-ca`.
    pub fn identity(ctx: &RequestCtx) -> Option<&CertIdentity> {
        ctx.slots.get::<Verified>().map(|v| &v.0)
    }

    /// The user a verified certificate logs in as (`cert:<CN>`).
    pub fn user(ctx: &RequestCtx) -> Option<&str> {
        Self::identity(ctx).and_then(|i| i.user.as_deref())
    }

    /// What this route decides about a connection that verified `connection`
    /// (`None`: none for a host with `client-ca`), over `scheme`.
    fn judge(&self, connection: Option<&ClientCertificate>, scheme: Scheme) -> Judged {
        let verified = connection
            .filter(|c| c.ca == self.auth.ca)
            .and_then(|c| c.verified.as_ref());
        match (verified, self.auth.mode) {
            (Some(identity), _) => Judged::Login(identity.clone()),
            (None, ClientAuthMode::Optional) => Judged::NoLogin,
            (None, ClientAuthMode::Require) if scheme == Scheme::Https => Judged::Misdirected,
            (None, ClientAuthMode::Require) => Judged::PlainHttp,
        }
    }
}

/// What a route with `client-ca` decides about a request's connection.
#[derive(Debug, PartialEq, Eq)]
enum Judged {
    Login(CertIdentity),
    NoLogin,
    Misdirected,
    PlainHttp,
}

#[async_trait]
impl Plugin for ClientCert {
    fn name(&self) -> &'static str {
        "client-cert"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let connection = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|s| s.extension.get::<ClientCertificate>());
        match self.judge(connection, ctx.downstream.scheme) {
            Judged::Login(identity) => {
                ctx.slots.insert(Verified(identity));
                Ok(Flow::Continue)
            }
            Judged::NoLogin => Ok(Flow::Continue),
            Judged::Misdirected => Ok(Flow::Respond(Reply::text(
                StatusCode::MISDIRECTED_REQUEST,
                "this host needs a client certificate on a connection of its own",
            ))),
            Judged::PlainHttp => Ok(Flow::Respond(Reply::text(
                StatusCode::FORBIDDEN,
                "this host needs a client certificate: use https",
            ))),
        }
    }
}

/// The identity of a client certificate (DER) that a handshake verified: its subject, and
/// the user `cert:<CN>` when it has one common name of printable text.
pub fn identity_of(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let mut names = subject.iter_common_name();
    let cn = match (names.next(), names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .ok()
            .filter(|n| !n.is_empty() && n.chars().all(|c| !c.is_control()))
            .map(str::to_string),
        _ => None,
    };
    // A header value carries it: printable ASCII, anything else escaped.
    let subject: String = subject
        .to_string()
        .chars()
        .flat_map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                vec![c]
            } else {
                format!("\\u{{{:x}}}", c as u32).chars().collect()
            }
        })
        .collect();
    Some(CertIdentity {
        user: cn.map(|n| format!("{CERT_USER_PREFIX}{n}")),
        subject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(mode: ClientAuthMode) -> ClientCert {
        let auth = ClientAuth {
            ca: PathBuf::from("/ca.pem"),
            mode,
        };
        ClientCert::new(
            auth,
            Arc::new(Watched::open(Path::new("/nonexistent/ca.pem"))),
        )
    }

    #[test]
    fn a_login_needs_a_certificate_verified_by_the_routes_own_ca() {
        let alice = CertIdentity {
            user: Some("cert:alice".into()),
            subject: "CN=alice".into(),
        };
        let by = |ca: &str, verified: Option<CertIdentity>| ClientCertificate {
            ca: PathBuf::from(ca),
            verified,
        };
        let own = by("/ca.pem", Some(alice.clone()));
        let other = by("/other.pem", Some(alice.clone()));
        let none = by("/ca.pem", None);
        let https = Scheme::Https;
        for mode in [ClientAuthMode::Optional, ClientAuthMode::Require] {
            assert_eq!(
                step(mode).judge(Some(&own), https),
                Judged::Login(alice.clone())
            );
        }
        let optional = step(ClientAuthMode::Optional);
        let require = step(ClientAuthMode::Require);
        for connection in [Some(&other), Some(&none), None] {
            assert_eq!(optional.judge(connection, https), Judged::NoLogin);
            assert_eq!(require.judge(connection, https), Judged::Misdirected);
            assert_eq!(require.judge(connection, Scheme::Http), Judged::PlainHttp);
        }
    }
}
