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
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The `client-ca` of the host the handshake was for.
    pub ca: PathBuf,
    /// The version of that file the certificate was verified against (`None`: never read).
    pub version: Option<Arc<ClientCa>>,
    /// The certificate it verified, if the client sent one.
    pub verified: Option<CertIdentity>,
}

/// A verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The user it logs in as: `cert:<CN>`; `None` for a certificate without a common name
    /// (verified, and no login).
    pub user: Option<String>,
    /// Its subject, as RFC 4514 writes a distinguished name (most specific first, special
    /// characters escaped with `\`, every byte outside printable ASCII as `\XX`).
    pub subject: String,
}

/// This step's slot in [`RequestCtx::slots`]: the request's verified certificate.
#[derive(Debug, Clone)]
struct Verified(CertIdentity);

/// The client-certificate step of a route with `client-ca`.
#[derive(Debug)]
pub struct ClientCert {
    auth: ClientAuth,
    /// The CA file (watched, kept open while the route exists).
    ca: Arc<Watched<ClientCa>>,
}

impl ClientCert {
    /// The step for a route verifying `auth`, whose CA file is `ca`.
    pub fn new(auth: ClientAuth, ca: Arc<Watched<ClientCa>>) -> ClientCert {
        ClientCert { auth, ca }
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
    /// (`None`: none for a host with `client-ca`), over `scheme`, while its CA file reads
    /// `current`. A certificate counts only if it was verified against this very version
    /// of the route's CA file: a changed file (a CA taken out) ends the logins of
    /// connections verified before, which then get a handshake of their own.
    fn judge(
        &self,
        connection: Option<&ClientCertificate>,
        current: Option<&Arc<ClientCa>>,
        scheme: Scheme,
    ) -> Judged {
        let verified = connection
            .filter(|c| c.ca == self.auth.ca)
            .filter(|c| {
                c.version
                    .as_ref()
                    .zip(current)
                    .is_some_and(|(v, now)| Arc::ptr_eq(v, now))
            })
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
        let current = self.ca.get_loaded();
        match self.judge(connection, current.as_ref(), ctx.downstream.scheme) {
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
/// the user `cert:<CN>` when it has exactly one common name of plain text (no control or
/// bidirectional-formatting characters).
pub fn identity_of(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let mut names = subject.iter_common_name();
    let cn = match (names.next(), names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .ok()
            .filter(|n| !n.is_empty() && !n.chars().any(unfit))
            .map(str::to_string),
        _ => None,
    };
    Some(CertIdentity {
        user: cn.map(|n| format!("{CERT_USER_PREFIX}{n}")),
        subject: rfc4514(subject),
    })
}

/// Characters a user name may not hold: controls, and those that reorder or hide text.
fn unfit(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A distinguished name as RFC 4514 writes it, in printable ASCII: the relative names most
/// specific first, joined by `,` (attributes of one by `+`), each `TYPE=value` with the
/// usual short type names (else the dotted OID), `"+,;<>\` escaped with `\`, a leading
/// `#` or space and a trailing space escaped, and every other byte outside printable ASCII
/// (UTF-8 included) as `\XX`; a value that is not a string is `#` and its bytes in hex.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    use std::fmt::Write;
    let short = |oid: &str| match oid {
        "2.5.4.3" => "CN".to_string(),
        "2.5.4.6" => "C".to_string(),
        "2.5.4.7" => "L".to_string(),
        "2.5.4.8" => "ST".to_string(),
        "2.5.4.9" => "STREET".to_string(),
        "2.5.4.10" => "O".to_string(),
        "2.5.4.11" => "OU".to_string(),
        "0.9.2342.19200300.100.1.1" => "UID".to_string(),
        "0.9.2342.19200300.100.1.25" => "DC".to_string(),
        other => other.to_string(),
    };
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let mut out = format!("{}=", short(&attr.attr_type().to_id_string()));
            match attr.as_str() {
                Ok(text) => {
                    let bytes = text.as_bytes();
                    for (i, &b) in bytes.iter().enumerate() {
                        let edge = (i == 0 && (b == b'#' || b == b' '))
                            || (i + 1 == bytes.len() && b == b' ');
                        if edge || b"\"+,;<>\\".contains(&b) {
                            out.push('\\');
                            out.push(b as char);
                        } else if (0x21..0x7f).contains(&b) || b == b' ' {
                            out.push(b as char);
                        } else {
                            let _ = write!(out, "\\{b:02X}");
                        }
                    }
                }
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().data.iter() {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            }
            parts.push(out);
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
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
        let version = Arc::new(ClientCa::default());
        let by = |ca: &str, verified: Option<CertIdentity>| ClientCertificate {
            ca: PathBuf::from(ca),
            version: Some(version.clone()),
            verified,
        };
        let own = by("/ca.pem", Some(alice.clone()));
        let other = by("/other.pem", Some(alice.clone()));
        let none = by("/ca.pem", None);
        let https = Scheme::Https;
        let now = Some(&version);
        for mode in [ClientAuthMode::Optional, ClientAuthMode::Require] {
            assert_eq!(
                step(mode).judge(Some(&own), now, https),
                Judged::Login(alice.clone())
            );
        }
        let optional = step(ClientAuthMode::Optional);
        let require = step(ClientAuthMode::Require);
        // Verified against a version of the file that is no longer in force, or while none
        // is: no login.
        let changed = Arc::new(ClientCa::default());
        for current in [Some(&changed), None] {
            assert_eq!(optional.judge(Some(&own), current, https), Judged::NoLogin);
            assert_eq!(
                require.judge(Some(&own), current, https),
                Judged::Misdirected
            );
        }
        for connection in [Some(&other), Some(&none), None] {
            assert_eq!(optional.judge(connection, now, https), Judged::NoLogin);
            assert_eq!(require.judge(connection, now, https), Judged::Misdirected);
            assert_eq!(
                require.judge(connection, now, Scheme::Http),
                Judged::PlainHttp
            );
        }
    }

    fn cert_with(subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn identities_are_one_plain_common_name_and_subjects_are_unambiguous() {
        use rcgen::DnType::{CommonName, CustomDnType, OrganizationName};
        let id = |s: &[(rcgen::DnType, &str)]| identity_of(&cert_with(s)).expect("parses");
        let one = id(&[(OrganizationName, "Example"), (CommonName, "ci-runner")]);
        assert_eq!(one.user.as_deref(), Some("cert:ci-runner"));
        // RFC 4514's order (the last relative name first), as openssl's RFC 2253 option
        // prints it.
        let der = cert_with(&[(OrganizationName, "Example"), (CommonName, "ci-runner")]);
        let file = std::env::temp_dir().join(format!("berth-subject-{}.der", std::process::id()));
        std::fs::write(&file, &der).expect("write");
        let out = std::process::Command::new("openssl")
            .args([
                "x509", "-inform", "DER", "-noout", "-subject", "-nameopt", "RFC2253", "-in",
            ])
            .arg(&file)
            .output()
            .expect("openssl");
        std::fs::remove_file(&file).expect("clean up");
        let openssl = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            format!("subject={}", identity_of(&der).expect("parses").subject),
            openssl.trim()
        );
        assert!(one.subject.contains("CN=ci-runner") && one.subject.contains("O=Example"));
        // A CN that holds what separates attributes is escaped, so it cannot pass for two.
        let tricky = id(&[(CommonName, "alice, O=admins")]);
        assert_eq!(tricky.subject, "CN=alice\\, O=admins");
        let plain = id(&[(OrganizationName, "admins"), (CommonName, "alice")]);
        assert_ne!(tricky.subject, plain.subject);
        // Outside printable ASCII: the UTF-8 bytes, escaped; a backslash itself escaped.
        assert_eq!(id(&[(CommonName, "caf\u{e9}")]).subject, "CN=caf\\C3\\A9");
        assert_eq!(id(&[(CommonName, "caf\\u{e9}")]).subject, "CN=caf\\\\u{e9}");
        assert_eq!(id(&[(CommonName, " #x ")]).subject, "CN=\\ #x\\ ");
        // No user: no CN, two CNs, a control or a bidirectional-formatting character.
        for subject in [
            vec![(OrganizationName, "Example")],
            vec![(CommonName, "a"), (CustomDnType(vec![2, 5, 4, 3]), "b")],
            vec![(CommonName, "ci\nrunner")],
            vec![(CommonName, "evil\u{202e}nimda")],
        ] {
            let identity = id(&subject);
            assert_eq!(identity.user, None, "{subject:?}: {identity:?}");
            assert!(
                identity.subject.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{identity:?}"
            );
        }
    }
}
