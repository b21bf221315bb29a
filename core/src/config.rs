//! The configuration file: serde structs that mirror the TOML (first layer) and their
//! conversion into validated types (second layer). Docker labels go through the same
//! [`RawRoute::validate`] as `[[route]]` tables do.
//!
//! Every error is collected with its key path (`route[2].upstreams[0]: invalid socket address
//! "x:y"`), so `berth check` can list them all at once. Unknown keys are errors too: they are
//! collected with `serde_ignored` rather than `deny_unknown_fields`, which would stop at the
//! first one.
//!
//! ```toml
//! [listen]
//! http = "0.0.0.0:8080"
//!
//! [forwarded]
//! trusted-proxies = ["10.0.0.0/8"]
//!
//! [defaults]
//! max-body = "0"
//! read-timeout = "900s"
//!
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::route::{
    AuthSpec, HostPattern, Profile, RouteSettings, RouteSource, RouteSpec, Upstream, UpstreamProto,
    UpstreamTls,
};
use crate::units::{parse_duration, parse_size};

/// The default configuration, embedded in the binary: `configs/berth.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../configs/berth.toml");

/// Realm sent in `WWW-Authenticate` when a route's `auth.realm` names none.
pub const DEFAULT_REALM: &str = "berth";

/// One problem in a configuration, with the key path it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `route[2].upstreams[0]`; empty for file-level problems.
    pub path: String,
    /// What is wrong, for humans.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors while validating.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Runs a parser and records its error at `path`.
    pub fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                self.push(path, message);
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded problems.
    pub fn into_inner(self) -> Vec<ConfigError> {
        self.0
    }
}

/// `[listen]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawListen {
    /// Plain HTTP listener address.
    pub http: Option<String>,
    /// HTTPS listener address.
    pub https: Option<String>,
    /// Metrics and admin listener address.
    pub metrics: Option<String>,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawTls {
    /// Directory of `<host>.crt` / `<host>.key` pairs.
    pub certs_dir: Option<String>,
    /// `generate` or `none`.
    pub default_cert: Option<String>,
}

/// `[docker]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawDocker {
    /// `auto`, `true` or `false`.
    pub enabled: Option<toml::Value>,
    /// `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub endpoint: Option<String>,
    /// Preferred network when a container has several.
    pub network: Option<String>,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawLog {
    /// `stdout`, `off`, or a file path.
    pub access: Option<String>,
}

/// `[forwarded]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawForwarded {
    /// CIDRs whose `X-Forwarded-*` headers are kept.
    pub trusted_proxies: Vec<String>,
}

/// The per-route settings as written, in `[defaults]` or in a `[[route]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawSettings {
    /// `redirect`, `noredirect`, `nohttp` or `nohttps`.
    pub https: Option<String>,
    /// `Strict-Transport-Security` value, or `off`.
    pub hsts: Option<String>,
    /// Largest request body (`0` = unlimited).
    pub max_body: Option<String>,
    /// Upstream connect timeout.
    pub connect_timeout: Option<String>,
    /// Idle time allowed between reads.
    pub read_timeout: Option<String>,
    /// Time a write may block.
    pub write_timeout: Option<String>,
}

/// A `[[route]]` as written (or as assembled from a container's labels).
///
/// The settings keys repeat those of [`RawSettings`] rather than `#[serde(flatten)]` them:
/// with flatten, serde hands unknown keys to the flattened struct and drops them there, so
/// `serde_ignored` would never report a typo in a route.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawRoute {
    /// Host pattern.
    pub host: Option<String>,
    /// Path prefix (default `/`).
    pub path: Option<String>,
    /// Upstream socket addresses.
    pub upstreams: Vec<String>,
    /// `http` (default) or `https`.
    pub proto: Option<String>,
    /// Optional preset: `registry`.
    pub profile: Option<String>,
    /// Certificate (file name stem in certs-dir) to serve instead of the host's own.
    pub cert_name: Option<String>,
    /// Extra CA certificates (PEM file) for verifying `https` upstreams.
    pub upstream_ca_file: Option<String>,
    /// SNI (and verified name) for `https` upstreams.
    pub upstream_sni: Option<String>,
    /// Accept any upstream certificate.
    pub dangerous_skip_verify: Option<bool>,
    /// Client CIDRs allowed; others get 403.
    pub allow: Option<Vec<String>>,
    /// Basic auth (`auth.htpasswd`, `auth.realm`).
    pub auth: Option<RawAuth>,
    /// berth-acme obtains and renews a certificate for this host.
    pub acme: Option<bool>,
    /// `redirect`, `noredirect`, `nohttp` or `nohttps`.
    pub https: Option<String>,
    /// `Strict-Transport-Security` value, or `off`.
    pub hsts: Option<String>,
    /// Largest request body (`0` = unlimited).
    pub max_body: Option<String>,
    /// Upstream connect timeout.
    pub connect_timeout: Option<String>,
    /// Idle time allowed between reads.
    pub read_timeout: Option<String>,
    /// Time a write may block.
    pub write_timeout: Option<String>,
}

/// A route's `auth` table as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawAuth {
    /// Path of an htpasswd file with bcrypt entries.
    pub htpasswd: Option<String>,
    /// Realm named in `WWW-Authenticate` (default `berth`).
    pub realm: Option<String>,
}

impl RawAuth {
    fn validate(&self, key: &dyn Fn(&str) -> String, errors: &mut Errors) -> Option<AuthSpec> {
        let realm = match self.realm.as_deref() {
            None => Some(DEFAULT_REALM.to_string()),
            Some(r) => errors.check(&key("auth.realm"), parse_realm(r)),
        };
        match self.htpasswd.as_deref().map(str::trim) {
            Some(path) if path.starts_with('/') => Some(AuthSpec {
                htpasswd: path.into(),
                realm: realm?,
            }),
            Some(path) => {
                errors.push(
                    key("auth.htpasswd"),
                    format!("\"{path}\" is not an absolute path"),
                );
                None
            }
            None => {
                errors.push(
                    key("auth.htpasswd"),
                    "missing; basic auth needs the path of an htpasswd file",
                );
                None
            }
        }
    }
}

/// A realm is quoted in `WWW-Authenticate`: printable ASCII without quotes or backslashes.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_realm(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "invalid realm \"{}\": use up to 128 printable ASCII characters without quotes or backslashes",
            value.escape_debug()
        ))
    }
}

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawConfig {
    /// `[listen]`.
    pub listen: RawListen,
    /// `[tls]`.
    pub tls: RawTls,
    /// `[docker]`.
    pub docker: RawDocker,
    /// `[acme]`.
    pub acme: crate::acme::RawAcme,
    /// `[log]`.
    pub log: RawLog,
    /// `[forwarded]`.
    pub forwarded: RawForwarded,
    /// `[limits]`.
    pub limits: crate::limits::RawLimits,
    /// `[server]`.
    pub server: crate::lifecycle::RawServer,
    /// `[defaults]`.
    pub defaults: RawSettings,
    /// `[[route]]` tables.
    #[serde(rename = "route")]
    pub routes: Vec<RawRoute>,
}

/// Validated `[listen]`.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Plain HTTP listener; `None` when set to `""`.
    pub http: Option<SocketAddr>,
    /// HTTPS listener; `None` when absent or `""`.
    pub https: Option<SocketAddr>,
    /// Metrics and admin listener (`/metrics`, `/routes`, `/healthz`); `None` when absent
    /// or `""`.
    pub metrics: Option<SocketAddr>,
}

/// What to serve to a client whose SNI name has no certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultCert {
    /// `default.crt` from certs-dir, generated (self-signed) on first start if missing.
    Generate,
    /// `default.crt` if present, else the handshake is refused.
    None,
}

/// Validated `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Directory of certificates, acme-companion layout.
    pub certs_dir: std::path::PathBuf,
    /// Default-certificate policy.
    pub default_cert: DefaultCert,
}

/// Whether to discover routes from Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerMode {
    /// On when the endpoint's socket exists at start (a `tcp://` endpoint always counts).
    Auto,
    /// On; an unreachable daemon is logged as a warning and retried.
    On,
    /// Off.
    Off,
}

/// Where the Docker daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A Unix socket.
    Unix(std::path::PathBuf),
    /// Plain HTTP (`tcp://host:port`), e.g. a socket proxy.
    Tcp(String),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The Docker socket used when neither `docker.endpoint` nor `DOCKER_HOST` names one.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Parses `unix:///path` or `tcp://host:port`.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_docker_endpoint(value: &str) -> Result<DockerEndpoint, String> {
    let v = value.trim();
    if let Some(path) = v.strip_prefix("unix://") {
        if path.starts_with('/') {
            return Ok(DockerEndpoint::Unix(path.into()));
        }
    } else if let Some(addr) = v
        .strip_prefix("tcp://")
        .or_else(|| v.strip_prefix("http://"))
    {
        let addr = addr.trim_end_matches('/');
        if crate::route::host_of(addr).is_some() && addr.rsplit_once(':').is_some() {
            return Ok(DockerEndpoint::Tcp(addr.to_string()));
        }
    }
    Err(format!(
        "invalid endpoint \"{value}\": expected \"unix:///var/run/docker.sock\" or \"tcp://host:2375\""
    ))
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// Not written.
    Off,
    /// One JSON line per request on standard output.
    Stdout,
    /// Appended to this file.
    File(std::path::PathBuf),
}

/// Validated `[docker]`.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Whether discovery runs.
    pub mode: DockerMode,
    /// The daemon's address; `None`: `DOCKER_HOST`, else [`DEFAULT_DOCKER_ENDPOINT`].
    pub endpoint: Option<DockerEndpoint>,
    /// Preferred network for container addresses.
    pub network: Option<String>,
}

/// Where certificates live when `tls.certs-dir` is not set.
pub const DEFAULT_CERTS_DIR: &str = "berth-state/certs";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners.
    pub listen: Listen,
    /// Certificates.
    pub tls: TlsConfig,
    /// Docker discovery.
    pub docker: DockerConfig,
    /// Certificates from ACME (the challenge directory is berth's part of it).
    pub acme: crate::acme::AcmeConfig,
    /// The access log.
    pub access_log: AccessLog,
    /// Peers whose `X-Forwarded-*` headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Downstream limits.
    pub limits: crate::limits::Limits,
    /// Upgrade and shutdown.
    pub server: crate::lifecycle::ServerSettings,
    /// Settings every route starts from.
    pub defaults: RouteSettings,
    /// Static routes from the file.
    pub routes: Vec<RouteSpec>,
}

/// Built-in values of the `[defaults]` keys.
pub fn builtin_defaults() -> RouteSettings {
    RouteSettings {
        https: crate::route::HttpsMode::Redirect,
        hsts: Some(http::HeaderValue::from_static("max-age=31536000")),
        max_body: 0,
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(900),
        write_timeout: Duration::from_secs(900),
    }
}

/// Parses and validates a configuration file's text.
///
/// # Errors
/// Returns every problem found: TOML syntax, unknown keys, and invalid values, each with its
/// key path.
pub fn parse_config(text: &str) -> Result<Config, ConfigErrors> {
    let mut unknown = Vec::new();
    let deserializer = toml::Deserializer::new(text);
    let raw: RawConfig = serde_ignored::deserialize(deserializer, |path| {
        unknown.push(ConfigError {
            path: key_path(&path),
            message: "unknown key".to_string(),
        });
    })
    .map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_string(),
        }])
    })?;
    let mut errors = Errors(unknown);
    let config = raw.validate(&mut errors);
    match config {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(ConfigErrors(errors.into_inner())),
    }
}

/// Formats a serde_ignored path as `route[2].foo`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => {
            let parent = key_path(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn parse_listen_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    value.trim().parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("invalid socket address \"{value}\"; write e.g. \"0.0.0.0:80\" or \"[::]:80\"")
    })
}

/// Checks that a CA file can be read and holds at least one PEM certificate.
///
/// # Errors
/// A message naming the file otherwise.
pub fn check_ca_file(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
    if text.contains("-----BEGIN CERTIFICATE-----") {
        Ok(())
    } else {
        Err(format!("\"{path}\" holds no PEM certificate"))
    }
}

/// Parses an HSTS setting: `off`, or a `Strict-Transport-Security` value that starts with
/// `max-age=<seconds>`.
///
/// # Errors
/// A message naming the value when it is neither.
pub fn parse_hsts(value: &str) -> Result<Option<http::HeaderValue>, String> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let max_age_ok = v
        .strip_prefix("max-age=")
        .map(|rest| rest.split(';').next().unwrap_or("").trim())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !max_age_ok {
        return Err(format!(
            "invalid hsts \"{value}\": expected \"off\" or e.g. \"max-age=31536000; includeSubDomains\""
        ));
    }
    http::HeaderValue::from_str(v)
        .map(Some)
        .map_err(|_| format!("invalid hsts \"{value}\": not a valid header value"))
}

/// Checks a certificate name: the stem of `<name>.crt` in certs-dir, so a host-like name
/// without path separators.
///
/// # Errors
/// Returns a message naming the value when it could not be a file stem in certs-dir.
pub fn parse_cert_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(format!(
            "invalid cert-name \"{value}\": expected a name like \"example.com\" (the stem of example.com.crt)"
        ))
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, taken as `/32` or `/128`).
///
/// # Errors
/// Returns a message naming the value when it is neither.
pub fn parse_cidr(value: &str) -> Result<IpNet, String> {
    let v = value.trim();
    v.parse::<IpNet>()
        .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("invalid CIDR \"{value}\"; write e.g. \"10.0.0.0/8\" or \"192.0.2.7\"")
        })
}

impl RawConfig {
    /// Converts into a validated [`Config`], recording every problem in `errors`.
    pub fn validate(&self, errors: &mut Errors) -> Option<Config> {
        let http = match &self.listen.http {
            Some(v) => errors.check("listen.http", parse_listen_addr(v)).flatten(),
            None => None,
        };
        let https = match &self.listen.https {
            Some(v) => errors.check("listen.https", parse_listen_addr(v)).flatten(),
            None => None,
        };
        let metrics = match &self.listen.metrics {
            Some(v) => errors
                .check("listen.metrics", parse_listen_addr(v))
                .flatten(),
            None => None,
        };
        if http.is_none() && https.is_none() {
            errors.push(
                "listen",
                "no listener configured; set listen.http or listen.https",
            );
        }
        let certs_dir = match self.tls.certs_dir.as_deref().map(str::trim) {
            None => DEFAULT_CERTS_DIR.into(),
            Some("") => {
                errors.push("tls.certs-dir", "empty; name a directory");
                DEFAULT_CERTS_DIR.into()
            }
            Some(dir) => std::path::PathBuf::from(dir),
        };
        let default_cert = match self.tls.default_cert.as_deref().map(str::trim) {
            None | Some("generate") => DefaultCert::Generate,
            Some("none") => DefaultCert::None,
            Some(other) => {
                errors.push(
                    "tls.default-cert",
                    format!("invalid value \"{other}\": expected \"generate\" or \"none\""),
                );
                DefaultCert::Generate
            }
        };
        let docker = self.docker.validate(errors);
        let acme = self.acme.validate(errors);
        let access_log = match self.log.access.as_deref().map(str::trim) {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some(path) if path.starts_with('/') || path.starts_with('.') => {
                AccessLog::File(path.into())
            }
            Some(other) => {
                errors.push(
                    "log.access",
                    format!(
                        "invalid value \"{other}\": expected \"stdout\", \"off\" or a file path \
                         (starting with / or ./)"
                    ),
                );
                AccessLog::Stdout
            }
        };
        let trusted_proxies = self
            .forwarded
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                errors.check(&format!("forwarded.trusted-proxies[{i}]"), parse_cidr(v))
            })
            .collect();
        let limits = self.limits.validate(errors);
        let server = self.server.validate(errors);
        let defaults = self.defaults.apply(&builtin_defaults(), "defaults", errors);
        let mut first_with: std::collections::HashMap<(String, String), usize> =
            std::collections::HashMap::new();
        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let Some(spec) =
                r.validate(&format!("route[{i}]"), &defaults, RouteSource::File, errors)
            else {
                continue;
            };
            // Two routes for one host and path: only one could ever take requests, and the
            // settings of the other (its auth, say) would silently not apply.
            let key = (spec.host.to_string(), spec.path.clone());
            if let Some(first) = first_with.get(&key) {
                errors.push(
                    format!("route[{i}]"),
                    format!(
                        "same host and path as route[{first}] ({} {}); merge the two routes",
                        key.0, key.1
                    ),
                );
                continue;
            }
            first_with.insert(key, i);
            routes.push(spec);
        }
        Some(Config {
            listen: Listen {
                http,
                https,
                metrics,
            },
            tls: TlsConfig {
                certs_dir,
                default_cert,
            },
            docker,
            acme,
            access_log,
            trusted_proxies,
            limits,
            server,
            defaults,
            routes,
        })
    }
}

impl RawDocker {
    fn validate(&self, errors: &mut Errors) -> DockerConfig {
        let mode = match &self.enabled {
            None => DockerMode::Auto,
            Some(toml::Value::Boolean(true)) => DockerMode::On,
            Some(toml::Value::Boolean(false)) => DockerMode::Off,
            Some(toml::Value::String(s)) => match s.trim() {
                "auto" => DockerMode::Auto,
                "true" => DockerMode::On,
                "false" => DockerMode::Off,
                other => {
                    errors.push(
                        "docker.enabled",
                        format!("invalid value \"{other}\": expected \"auto\", true or false"),
                    );
                    DockerMode::Auto
                }
            },
            Some(other) => {
                errors.push(
                    "docker.enabled",
                    format!("invalid value {other}: expected \"auto\", true or false"),
                );
                DockerMode::Auto
            }
        };
        let endpoint = match self.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => errors.check("docker.endpoint", parse_docker_endpoint(v)),
        };
        let network = self
            .network
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        DockerConfig {
            mode,
            endpoint,
            network,
        }
    }
}

impl RawSettings {
    /// Overlays the keys that are set onto `base`, recording bad values under `prefix`.
    pub fn apply(&self, base: &RouteSettings, prefix: &str, errors: &mut Errors) -> RouteSettings {
        let mut s = base.clone();
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(v) = &self.https {
            if let Some(mode) = errors.check(&key("https"), crate::route::HttpsMode::parse(v)) {
                s.https = mode;
            }
        }
        if let Some(v) = &self.hsts {
            if let Some(h) = errors.check(&key("hsts"), parse_hsts(v)) {
                s.hsts = h;
            }
        }
        if let Some(v) = &self.max_body {
            if let Some(n) = errors.check(&key("max-body"), parse_size(v)) {
                s.max_body = n;
            }
        }
        for (name, value, slot) in [
            (
                "connect-timeout",
                &self.connect_timeout,
                &mut s.connect_timeout,
            ),
            ("read-timeout", &self.read_timeout, &mut s.read_timeout),
            ("write-timeout", &self.write_timeout, &mut s.write_timeout),
        ] {
            if let Some(v) = value {
                if let Some(d) = errors.check(&key(name), parse_duration(v)) {
                    *slot = d;
                }
            }
        }
        s
    }
}

/// Applies a profile's presets to settings that came from `[defaults]`.
fn apply_profile(profile: Profile, settings: &mut RouteSettings) {
    match profile {
        Profile::Registry => {
            settings.max_body = 0;
            settings.read_timeout = Duration::from_secs(900);
        }
    }
}

impl RawRoute {
    fn settings(&self) -> RawSettings {
        RawSettings {
            https: self.https.clone(),
            hsts: self.hsts.clone(),
            max_body: self.max_body.clone(),
            connect_timeout: self.connect_timeout.clone(),
            read_timeout: self.read_timeout.clone(),
            write_timeout: self.write_timeout.clone(),
        }
    }

    fn upstream_tls(&self, prefix: &str, proto: UpstreamProto, errors: &mut Errors) -> UpstreamTls {
        let key = |k: &str| format!("{prefix}.{k}");
        let set = self.upstream_ca_file.is_some()
            || self.upstream_sni.is_some()
            || self.dangerous_skip_verify.is_some();
        if set && proto != UpstreamProto::Https {
            errors.push(
                key("proto"),
                "upstream-ca-file, upstream-sni and dangerous-skip-verify need proto = \"https\"",
            );
        }
        let ca_file = self.upstream_ca_file.as_deref().and_then(|path| {
            errors
                .check(&key("upstream-ca-file"), check_ca_file(path))
                .map(|()| std::path::PathBuf::from(path))
        });
        let sni = self.upstream_sni.as_deref().and_then(|name| {
            errors.check(
                &key("upstream-sni"),
                crate::route::host_of(name)
                    .filter(|h| !h.contains(':') && !h.starts_with('['))
                    .ok_or_else(|| {
                        format!("invalid upstream-sni \"{name}\": expected a host name")
                    }),
            )
        });
        UpstreamTls {
            ca_file,
            sni,
            dangerous_skip_verify: self.dangerous_skip_verify.unwrap_or(false),
        }
    }

    /// Converts into a validated [`RouteSpec`]; `prefix` is the key path used in errors
    /// (`route[2]`, or a container's name and label for discovered routes).
    pub fn validate(
        &self,
        prefix: &str,
        defaults: &RouteSettings,
        source: RouteSource,
        errors: &mut Errors,
    ) -> Option<RouteSpec> {
        let before = errors.0.len();
        let key = |k: &str| format!("{prefix}.{k}");
        let host = match &self.host {
            Some(h) => errors.check(&key("host"), HostPattern::parse(h)),
            None => {
                errors.push(key("host"), "missing; every route needs a host");
                None
            }
        };
        let path = self.path.clone().unwrap_or_else(|| "/".to_string());
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            errors.push(
                key("path"),
                format!("invalid path \"{path}\": must start with \"/\""),
            );
        } else if crate::path::route_path(&path) != path.as_str() {
            errors.push(
                key("path"),
                format!(
                    "path \"{path}\" can never match: requests are routed by their normalised \
                     path; write \"{}\"",
                    crate::path::route_path(&path)
                ),
            );
        }
        if self.upstreams.is_empty() {
            errors.push(
                key("upstreams"),
                "empty; every route needs at least one upstream",
            );
        }
        let upstreams: Vec<Upstream> = self
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let parsed = u.trim().parse::<SocketAddr>().map_err(|_| {
                    format!("invalid socket address \"{u}\"; write e.g. \"127.0.0.1:5000\"")
                });
                errors.check(&format!("{}[{i}]", key("upstreams")), parsed)
            })
            .map(|addr| Upstream {
                addr,
                container: None,
            })
            .collect();
        let proto = match self.proto.as_deref().map(str::trim) {
            None | Some("http") => UpstreamProto::Http,
            Some("https") => UpstreamProto::Https,
            Some(other) => {
                errors.push(
                    key("proto"),
                    format!("invalid proto \"{other}\": expected \"http\" or \"https\""),
                );
                UpstreamProto::Http
            }
        };
        let profile = match self.profile.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("registry") => Some(Profile::Registry),
            Some(other) => {
                errors.push(
                    key("profile"),
                    format!("unknown profile \"{other}\": expected \"registry\""),
                );
                None
            }
        };
        let upstream_tls = self.upstream_tls(prefix, proto, errors);
        let cert_name = match self.cert_name.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => errors.check(&key("cert-name"), parse_cert_name(name)),
        };
        if self.acme == Some(true) && !matches!(host, Some(HostPattern::Exact(_))) {
            errors.push(
                key("acme"),
                "needs a plain host name (wildcards and regexes cannot get an HTTP-01 certificate)",
            );
        }
        let allow = self
            .allow
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, v)| errors.check(&format!("{}[{i}]", key("allow")), parse_cidr(v)))
            .collect();
        let auth = self.auth.as_ref().and_then(|a| a.validate(&key, errors));
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            errors.push(
                key("allow"),
                "empty list would refuse every client; remove the key to allow everyone",
            );
        }
        let mut base = defaults.clone();
        if let Some(p) = profile {
            apply_profile(p, &mut base);
        }
        let settings = self.settings().apply(&base, prefix, errors);
        if errors.0.len() != before {
            return None;
        }
        Some(RouteSpec {
            host: host?,
            path,
            upstreams,
            proto,
            upstream_tls,
            profile,
            settings,
            cert_name,
            allow,
            auth,
            acme: self.acme.unwrap_or(false),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<String> {
        match parse_config(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn embedded_default_is_valid() {
        let config = parse_config(EMBEDDED_DEFAULT).expect("embedded default must parse");
        assert_eq!(
            config.listen.http,
            Some("0.0.0.0:8080".parse().expect("addr"))
        );
        assert_eq!(
            config.listen.https,
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        assert_eq!(
            config.tls.certs_dir,
            std::path::PathBuf::from("berth-state/certs")
        );
        assert_eq!(config.tls.default_cert, DefaultCert::Generate);
        assert_eq!(config.defaults.https, crate::route::HttpsMode::Redirect);
        assert_eq!(
            config
                .defaults
                .hsts
                .as_ref()
                .map(|h| h.to_str().expect("ascii")),
            Some("max-age=31536000")
        );
        assert_eq!(
            config.listen.metrics,
            Some("127.0.0.1:9180".parse().expect("addr"))
        );
        assert_eq!(config.docker.mode, DockerMode::Auto);
        assert_eq!(
            config.acme.metrics,
            Some("127.0.0.1:9181".parse().expect("addr"))
        );
        assert_eq!(config.docker.endpoint, None);
        assert_eq!(config.docker.network, None);
    }

    #[test]
    fn docker_section() {
        let base = "[listen]\nhttp = \"127.0.0.1:1\"\n[docker]\n";
        let parse = |extra: &str| parse_config(&format!("{base}{extra}"));
        let c = parse("enabled = true\nendpoint = \"tcp://127.0.0.1:2375\"\nnetwork = \"web\"\n")
            .expect("valid");
        assert_eq!(c.docker.mode, DockerMode::On);
        assert_eq!(
            c.docker.endpoint,
            Some(DockerEndpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(c.docker.network.as_deref(), Some("web"));
        let c =
            parse("enabled = \"false\"\nendpoint = \"unix:///run/docker.sock\"\n").expect("valid");
        assert_eq!(c.docker.mode, DockerMode::Off);
        assert_eq!(
            c.docker.endpoint,
            Some(DockerEndpoint::Unix("/run/docker.sock".into()))
        );
        let errs = errors_of(&format!(
            "{base}enabled = \"sometimes\"\nendpoint = \"/var/run/docker.sock\"\nnetwrk = \"x\"\n"
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e == "docker.netwrk: unknown key"));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("docker.enabled: invalid value \"sometimes\"")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("docker.endpoint: invalid endpoint \"/var/run/docker.sock\"")));
    }

    #[test]
    fn allow_lists_are_checked() {
        let route = "[listen]\nhttp = \"127.0.0.1:1\"\n[[route]]\nhost = \"a.example.com\"\nupstreams = [\"127.0.0.1:2\"]\n";
        let c = parse_config(&format!("{route}allow = [\"10.0.0.0/8\", \"192.0.2.1\"]\n"))
            .expect("valid");
        assert_eq!(c.routes[0].allow.len(), 2);
        let errs = errors_of(&format!("{route}allow = [\"10.0.0.0/33\"]\n"));
        assert!(
            errs[0].starts_with("route[0].allow[0]: invalid CIDR"),
            "{errs:?}"
        );
        let errs = errors_of(&format!("{route}allow = []\n"));
        assert!(
            errs[0].starts_with("route[0].allow: empty list"),
            "{errs:?}"
        );
        let errs = errors_of("[listen]\nmetrics = \"localhost\"\n");
        assert!(errs
            .iter()
            .any(|e| e.starts_with("listen.metrics: invalid socket address")));
    }

    #[test]
    fn upstream_tls_keys_are_checked() {
        let text = r#"
[listen]
http = "127.0.0.1:1"
[[route]]
host = "a.test"
upstreams = ["127.0.0.1:1"]
dangerous-skip-verify = true
[[route]]
host = "b.test"
upstreams = ["127.0.0.1:1"]
proto = "https"
upstream-ca-file = "/nonexistent/ca.pem"
upstream-sni = "bad name"
"#;
        let errs = errors_of(text);
        for e in [
            "route[0].proto: upstream-ca-file, upstream-sni and dangerous-skip-verify need proto = \"https\"",
            "route[1].upstream-ca-file: cannot read \"/nonexistent/ca.pem\"",
            "route[1].upstream-sni: invalid upstream-sni \"bad name\"",
        ] {
            assert!(errs.iter().any(|x| x.starts_with(e)), "missing {e:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), 3, "{errs:#?}");
    }

    #[test]
    fn https_modes_hsts_and_tls_keys() {
        let text = r#"
[listen]
https = "127.0.0.1:8443"
[tls]
default-cert = "maybe"
[defaults]
https = "sometimes"
hsts = "max-age=abc"
[[route]]
host = "a.test"
upstreams = ["127.0.0.1:1"]
https = "NoHttp"
hsts = "off"
cert-name = "../etc/passwd"
[[route]]
host = "b.test"
upstreams = ["127.0.0.1:1"]
hsts = "max-age=600; includeSubDomains"
"#;
        let errs = errors_of(text);
        for e in [
            "tls.default-cert: invalid value \"maybe\"",
            "defaults.https: invalid https mode \"sometimes\"",
            "defaults.hsts: invalid hsts \"max-age=abc\"",
            "route[0].cert-name: invalid cert-name \"../etc/passwd\"",
        ] {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), 4, "{errs:#?}");
        let fixed = text
            .replace("default-cert = \"maybe\"", "")
            .replace("https = \"sometimes\"", "")
            .replace("hsts = \"max-age=abc\"", "")
            .replace(
                "cert-name = \"../etc/passwd\"",
                "cert-name = \"Example.com\"",
            );
        let config = parse_config(&fixed).expect("valid");
        let a = &config.routes[0];
        assert_eq!(a.settings.https, crate::route::HttpsMode::NoHttp);
        assert!(a.settings.hsts.is_none());
        assert_eq!(a.cert_name.as_deref(), Some("example.com"));
        let b = &config.routes[1];
        assert_eq!(
            b.settings.hsts.as_ref().map(|h| h.to_str().expect("ascii")),
            Some("max-age=600; includeSubDomains")
        );
        assert!(config.listen.http.is_none());
    }

    #[test]
    fn every_error_is_listed_with_its_key_path() {
        let text = r#"
[listen]
http = "127.0.0.1:8080"
htp = "typo"

[defaults]
read-timeout = "soon"

[[route]]
host = "a.example.com"
upstreams = ["127.0.0.1:1"]

[[route]]
host = "b.example.com"
upstreams = ["127.0.0.1:2"]

[[route]]
host = "c.example.com"
upstreams = ["127.0.0.1:3", "x:y"]
max-body = "lots"
profil = "registry"
"#;
        let errs = errors_of(text);
        let expected = [
            "listen.htp: unknown key",
            "route[2].profil: unknown key",
            "defaults.read-timeout: invalid duration \"soon\"",
            "route[2].upstreams[1]: invalid socket address \"x:y\"",
            "route[2].max-body: invalid size \"lots\"",
        ];
        for e in expected {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let errs = errors_of("[listen\nhttp = 1");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("line 1"), "{errs:?}");
    }

    #[test]
    fn a_second_route_for_the_same_host_and_path_is_an_error_naming_both() {
        let text = r#"
[listen]
http = "127.0.0.1:8080"

[[route]]
host = "registry.example.com"
upstreams = ["127.0.0.1:5000"]

[[route]]
host = "Registry.Example.com"
path = "/"
upstreams = ["127.0.0.1:5001"]
auth.htpasswd = "/etc/berth/htpasswd"

[[route]]
host = "registry.example.com"
path = "/v2"
upstreams = ["127.0.0.1:5002"]

[[route]]
host = "registry.example.com"
path = "/v2//x/../y"
upstreams = ["127.0.0.1:5002"]
"#;
        let errors: Vec<String> = parse_config(text)
            .expect_err("invalid")
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "route[1]: same host and path as route[0] (registry.example.com /); merge the two routes",
                "route[3].path: path \"/v2//x/../y\" can never match: requests are routed by their normalised path; write \"/v2/y\"",
            ]
        );
    }

    #[test]
    fn routes_require_host_and_upstreams() {
        let errs = errors_of("[listen]\nhttp = \"127.0.0.1:1\"\n[[route]]\npath = \"x\"\n");
        assert!(
            errs.iter().any(|e| e.starts_with("route[0].host: missing")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("route[0].path: invalid path")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("route[0].upstreams: empty")),
            "{errs:?}"
        );
    }

    #[test]
    fn profile_presets_sit_between_defaults_and_route() {
        let text = r#"
[listen]
http = "127.0.0.1:8080"
[defaults]
max-body = "1MiB"
read-timeout = "30s"
[[route]]
host = "r.example.com"
upstreams = ["127.0.0.1:5000"]
profile = "registry"
[[route]]
host = "s.example.com"
upstreams = ["127.0.0.1:5000"]
profile = "registry"
read-timeout = "1h"
[[route]]
host = "t.example.com"
upstreams = ["127.0.0.1:5000"]
"#;
        let config = parse_config(text).expect("valid");
        let s: Vec<_> = config.routes.iter().map(|r| &r.settings).collect();
        assert_eq!((s[0].max_body, s[0].read_timeout.as_secs()), (0, 900));
        assert_eq!((s[1].max_body, s[1].read_timeout.as_secs()), (0, 3600));
        assert_eq!((s[2].max_body, s[2].read_timeout.as_secs()), (1 << 20, 30));
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_addresses() {
        let text = "[listen]\nhttp = \"127.0.0.1:1\"\n[forwarded]\ntrusted-proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\", \"nope\"]\n";
        let errs = errors_of(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("forwarded.trusted-proxies[3]: invalid CIDR \"nope\""));
    }
}
