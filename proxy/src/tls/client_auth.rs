//! Client certificates in the TLS handshake (`client-ca`, `client-auth` on a route).
//!
//! rustls asks for client certificates per server config, and a server config is one per
//! listener; berth needs it per host, so that a host without `client-ca` asks for none (a
//! browser would otherwise offer its certificates to every site). [`ClientAuthChooser`]
//! picks each handshake's config from its ClientHello (vendor patch 0007): for a server
//! name whose routes set `client-ca`, a config that verifies against that file's CAs —
//! `require` refuses the handshake without a verified certificate, `optional` lets it go on
//! without one; for any other name, the listener's own, which asks for none. The configs are
//! built once per CA file version and reused, so a changed file (re-read within a second,
//! like htpasswd) is in force from the next handshake.
//!
//! After the handshake, [`ClientCertRecorder`] leaves a
//! [`ClientCertificate`] on the connection (its host's CA, and the certificate's identity),
//! which the route's [`berth_plugins::builtin::ClientCert`] step reads for every request.
//!
//! A handshake refused over a client certificate is counted in
//! `berth_client_cert_errors_total{host,reason}` (`missing`, `unknown-ca`, `expired`,
//! `invalid`) and logged once per client address, host and reason (a client retrying does
//! not fill the log).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora_core::listeners::tls::ChooseServerConfig;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use prometheus::IntCounterVec;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::{CertificateError, DistinguishedName, ServerConfig};

use berth_core::route::{ClientAuth, ClientAuthMode, HostPattern};
use berth_core::sync::lock;
use berth_plugins::builtin::{identity_of, AuthFiles, ClientCa, ClientCertificate};
use berth_plugins::SharedTable;

/// How many (client, host, reason) triples are remembered as logged; past it the memory
/// starts again (and each is logged once more).
const LOGGED_LIMIT: usize = 4096;

/// The client-certificate settings for `server_name`: those of the most specific host
/// pattern that takes the name (an exact host before a wildcard), whose routes all agree
/// (the config file and the merge of container routes make sure of it).
// The binding outlives the iterator that borrows the snapshot; returned directly, it would not.
#[allow(clippy::let_and_return)]
fn client_auth_for(table: &SharedTable, server_name: &str) -> Option<(HostPattern, ClientAuth)> {
    let name = server_name.trim_end_matches('.').to_ascii_lowercase();
    let table = table.load();
    let mut routes = table.routes_for_host(&name);
    let first = routes.next()?;
    let pattern = first.spec.host.to_string();
    let found = std::iter::once(first)
        .chain(routes)
        .take_while(|r| r.spec.host.to_string() == pattern)
        .find_map(|r| {
            r.spec
                .client_auth
                .clone()
                .map(|auth| (r.spec.host.clone(), auth))
        });
    found
}

/// What is built for one CA file version and mode: the handshake's config, and its
/// verifier (which checks a certificate again when the handshake is recorded).
struct Built {
    version: Arc<ClientCa>,
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Chooses each handshake's rustls config by the server name's `client-ca`.
pub struct ClientAuthChooser {
    table: SharedTable,
    files: Arc<AuthFiles>,
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: Vec<Vec<u8>>,
    built: Mutex<HashMap<(PathBuf, ClientAuthMode), Built>>,
    /// The config of a `require` host whose CA file was never readable: refuses everyone.
    refuse: std::sync::OnceLock<Arc<ServerConfig>>,
    errors: Option<IntCounterVec>,
    logged: Mutex<HashSet<(IpAddr, String, &'static str)>>,
}

impl std::fmt::Debug for ClientAuthChooser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuthChooser")
    }
}

impl ClientAuthChooser {
    /// Chooses by the routes of `table`, with the CA files of `files`; configs it builds
    /// serve certificates through `resolver` and offer `alpn`. Refusals are counted in
    /// `errors` (`berth_client_cert_errors_total`).
    pub fn new(
        table: SharedTable,
        files: Arc<AuthFiles>,
        resolver: Arc<dyn ResolvesServerCert>,
        alpn: Vec<Vec<u8>>,
        errors: Option<IntCounterVec>,
    ) -> ClientAuthChooser {
        ClientAuthChooser {
            table,
            files,
            resolver,
            alpn,
            built: Mutex::new(HashMap::new()),
            refuse: std::sync::OnceLock::new(),
            errors,
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// The config verifying against `auth`'s CA file as it reads now; `None` while the file
    /// was never readable (a `require` host then refuses every handshake, an `optional` one
    /// asks for no certificate).
    fn config_for(&self, auth: &ClientAuth) -> Option<Arc<ServerConfig>> {
        match self.built_for(auth) {
            Some((config, _)) => Some(config),
            None => (auth.mode == ClientAuthMode::Require).then(|| {
                self.refuse
                    .get_or_init(|| self.build(Arc::new(Refuse)))
                    .clone()
            }),
        }
    }

    /// The config and verifier for `auth`'s CA file as it reads now, with that version;
    /// `None` while the file was never readable.
    fn built_for(
        &self,
        auth: &ClientAuth,
    ) -> Option<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>)> {
        let file = self.files.client_ca_open(&auth.ca);
        let ca = file.as_ref().and_then(|f| f.get_loaded())?;
        let key = (auth.ca.clone(), auth.mode);
        let mut built = lock(&self.built);
        if let Some(b) = built.get(&key) {
            if Arc::ptr_eq(&b.version, &ca) {
                return Some((b.config.clone(), b.verifier.clone()));
            }
        }
        let builder = WebPkiClientVerifier::builder(ca.roots.clone());
        let builder = match auth.mode {
            ClientAuthMode::Optional => builder.allow_unauthenticated(),
            ClientAuthMode::Require => builder,
        };
        let verifier: Arc<dyn ClientCertVerifier> = match builder.build() {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(file = %auth.ca.display(), error = %e, "client-ca cannot verify certificates; handshakes for its hosts are refused");
                Arc::new(Refuse)
            }
        };
        let config = self.build(verifier.clone());
        built.insert(
            key,
            Built {
                version: ca,
                config: config.clone(),
                verifier: verifier.clone(),
            },
        );
        // Versions no route uses any more go.
        built.retain(|(path, _), _| self.files.client_ca_open(path).is_some());
        Some((config, verifier))
    }

    /// What a completed handshake for `server_name` verified: the host's CA file, the
    /// version in force now, and the certificate `chain` (leaf first) if it verifies against
    /// that version — checked again here, so that a CA file changed between the ClientHello
    /// and now never lends its name to a certificate the old one verified.
    fn record(
        &self,
        server_name: &str,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Option<ClientCertificate> {
        let (_, auth) = client_auth_for(&self.table, server_name)?;
        let version = self
            .files
            .client_ca_open(&auth.ca)
            .and_then(|f| f.get_loaded());
        let verified = match (self.built_for(&auth), chain) {
            (Some((_, verifier)), Some([leaf, intermediates @ ..])) => verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .ok()
                .and_then(|_| identity_of(leaf.as_ref())),
            _ => None,
        };
        // The version is read before the check: if the file changes in between, the
        // request-time comparison with the version then in force refuses the login.
        Some(ClientCertificate {
            ca: auth.ca,
            version,
            verified,
        })
    }

    fn build(&self, verifier: Arc<dyn ClientCertVerifier>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS12,
            &rustls::version::TLS13,
        ])
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = self.alpn.clone();
        Arc::new(config)
    }
}

impl ChooseServerConfig for ClientAuthChooser {
    fn choose(
        &self,
        hello: &ClientHello<'_>,
        _peer: Option<&SocketAddr>,
    ) -> Option<Arc<ServerConfig>> {
        let (_, auth) = client_auth_for(&self.table, hello.server_name()?)?;
        self.config_for(&auth)
    }

    fn failed(&self, server_name: Option<&str>, peer: Option<&SocketAddr>, error: &std::io::Error) {
        let Some(reason) = cert_error(error) else {
            return;
        };
        let Some((host, _)) = server_name.and_then(|n| client_auth_for(&self.table, n)) else {
            return;
        };
        let host = host.to_string();
        if let Some(errors) = &self.errors {
            errors.with_label_values(&[host.as_str(), reason]).inc();
        }
        let client = peer.map(|p| p.ip());
        let first = client.is_none_or(|ip| {
            let mut logged = lock(&self.logged);
            if logged.len() >= LOGGED_LIMIT {
                logged.clear();
            }
            logged.insert((ip, host.clone(), reason))
        });
        if first {
            tracing::warn!(
                host,
                client = ?client,
                reason,
                error = %error,
                "client certificate refused (logged once per client, host and reason)"
            );
        }
    }
}

/// Which client-certificate failure ended a handshake, if one did.
fn cert_error(error: &std::io::Error) -> Option<&'static str> {
    let rustls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match rustls {
        rustls::Error::NoCertificatesPresented => "missing",
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown-ca",
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "expired",
            _ => "invalid",
        },
        _ => return None,
    })
}

/// What [`Refuse`] says of every certificate and signature.
fn refused<T>() -> Result<T, rustls::Error> {
    Err(rustls::Error::InvalidCertificate(
        CertificateError::UnknownIssuer,
    ))
}

/// A verifier that takes no certificate: for a `require` host whose CA file was never
/// readable (or holds nothing rustls can verify against).
#[derive(Debug)]
struct Refuse;

impl ClientCertVerifier for Refuse {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        refused()
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        refused()
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        refused()
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Leaves a [`ClientCertificate`] on each TLS connection for a host with `client-ca`.
pub struct ClientCertRecorder(Arc<ClientAuthChooser>);

impl ClientCertRecorder {
    /// Records with the routes, files and verifiers of `chooser`.
    pub fn new(chooser: Arc<ClientAuthChooser>) -> ClientCertRecorder {
        ClientCertRecorder(chooser)
    }
}

#[async_trait]
impl TlsAccept for ClientCertRecorder {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let recorded = self
            .0
            .record(tls.server_name()?, tls.peer_cert_chain_der())?;
        Some(Arc::new(recorded))
    }
}
