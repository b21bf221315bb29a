//! `[[route]]`: a route as written, and its conversion into a validated [`RouteSpec`], one
//! family of keys after the other. Docker labels go through the same [`RawRoute::validate`].
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! auth.htpasswd = "/etc/berth/htpasswd"
//! ```

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::errors::Errors;
use crate::files::FilePath;
use crate::route::{
    check_registry_auth, validate_acme, validate_client_auth, HostPattern, Lb, Profile, RateLimit,
    RawAuth, RawHealth, RawSettings, RawUpstreamTls, RouteSettings, RouteSource, RouteSpec,
    Upstream, UpstreamProto,
};

/// A `[[route]]` as written (or as decoded from a container's labels).
///
/// The keys are flat, as users write them; each family of keys is validated by its own
/// module of [`crate::route`], which keeps its raw form, its validation and its validated
/// spec together. The keys are not grouped with `#[serde(flatten)]`: with flatten, serde
/// hands unknown keys to the flattened struct and drops them there, so `serde_ignored` would
/// never report a typo in a route (and labels, all text, could not be typed).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawRoute {
    /// Host pattern.
    pub host: Option<String>,
    /// Path prefix (default `/`).
    pub path: Option<String>,
    /// Upstream socket addresses.
    pub upstreams: Vec<String>,
    /// `round-robin` (default), `least-conn`, `ip-hash` or `cookie`.
    pub lb: Option<String>,
    /// The path each upstream is checked on (`""`: no checks).
    pub health_check: Option<String>,
    /// Time from one check of an upstream to its next.
    pub health_interval: Option<String>,
    /// Time a check may take.
    pub health_timeout: Option<String>,
    /// Failed checks in a row that take an upstream out.
    pub health_fails: Option<u32>,
    /// Passed checks in a row that bring an upstream back.
    pub health_passes: Option<u32>,
    /// `http` (default) or `https`.
    pub proto: Option<String>,
    /// Optional preset: `registry`.
    pub profile: Option<String>,
    /// Certificate (file name stem in certs-dir) to serve instead of the host's own.
    pub cert_name: Option<String>,
    /// The CAs whose client certificates the host verifies (PEM file).
    pub client_ca: Option<FilePath>,
    /// `require` (default with `client-ca`) or `optional`.
    pub client_auth: Option<String>,
    /// Extra CA certificates (PEM file) for verifying `https` upstreams.
    pub upstream_ca_file: Option<FilePath>,
    /// SNI (and verified name) for `https` upstreams.
    pub upstream_sni: Option<String>,
    /// Accept any upstream certificate.
    pub dangerous_skip_verify: Option<bool>,
    /// Client CIDRs allowed; others get 403.
    pub allow: Option<Vec<String>>,
    /// Basic auth (`auth.htpasswd`, `auth.realm`, ...) or forward auth (`auth.forward`).
    pub auth: Option<RawAuth>,
    /// Requests per client: `"20r/s"`, `"100r/m"`.
    pub rate_limit: Option<String>,
    /// Requests a client may send at once (default: the rate's count).
    pub rate_burst: Option<u32>,
    /// berth-acme obtains and renews a certificate for this host.
    pub acme: Option<bool>,
    /// `http-01` or `dns-01`: how berth-acme proves the host.
    pub acme_challenge: Option<String>,
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
    /// Slowest average a request body may arrive at, after [`crate::route::BODY_RATE_GRACE`].
    pub min_body_rate: Option<String>,
    /// Compress responses for clients that accept it (default true; never on the registry
    /// profile).
    pub compress: Option<bool>,
    /// The directory of the operator's pages for berth's own answers (`502.html`, ...).
    pub error_pages: Option<FilePath>,
    /// Answer 503 and the maintenance page instead of proxying.
    pub maintenance: Option<bool>,
    /// During maintenance, let reads through (on the registry profile, pulls).
    pub maintenance_reads: Option<bool>,
    /// Serve blobs and manifests fetched by digest from the cache (the registry profile only).
    pub cache: Option<bool>,
}

/// Checks a certificate name: the stem of `<name>.crt` in certs-dir, by the one rule of
/// [`crate::contract::valid_cert_name`] (a host-like name without path separators).
///
/// # Errors
/// Returns a message naming the value when it could not be a file stem in certs-dir.
pub fn parse_cert_name(value: &str) -> Result<String, String> {
    if crate::contract::valid_cert_name(value) {
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

impl RawRoute {
    /// The keys `[defaults]` may set too.
    fn settings(&self) -> RawSettings {
        RawSettings {
            https: self.https.clone(),
            hsts: self.hsts.clone(),
            max_body: self.max_body.clone(),
            connect_timeout: self.connect_timeout.clone(),
            read_timeout: self.read_timeout.clone(),
            write_timeout: self.write_timeout.clone(),
            min_body_rate: self.min_body_rate.clone(),
            compress: self.compress,
            error_pages: self.error_pages.clone(),
            maintenance: self.maintenance,
            maintenance_reads: self.maintenance_reads,
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
        let before = errors.len();
        let key = |k: &str| format!("{prefix}.{k}");
        let host = match &self.host {
            Some(h) => errors.check(&key("host"), HostPattern::parse(h)),
            None => {
                errors.push(key("host"), "missing; every route needs a host");
                None
            }
        };
        let path = self.path.clone().unwrap_or_else(|| "/".to_string());
        errors.check(&key("path"), check_path(&path));
        let upstreams = self.upstreams(&key, errors);
        let lb = errors
            .check(&key("lb"), Lb::parse(self.lb.as_deref()))
            .unwrap_or_default();
        let health_check = RawHealth {
            check: self.health_check.as_deref(),
            interval: self.health_interval.as_deref(),
            timeout: self.health_timeout.as_deref(),
            fails: self.health_fails,
            passes: self.health_passes,
        }
        .validate(&key, errors);
        let proto = errors
            .check(&key("proto"), UpstreamProto::parse(self.proto.as_deref()))
            .unwrap_or(UpstreamProto::Http);
        let upstream_tls = RawUpstreamTls {
            ca_file: self.upstream_ca_file.as_deref(),
            sni: self.upstream_sni.as_deref(),
            dangerous_skip_verify: self.dangerous_skip_verify,
        }
        .validate(proto, &key, errors);
        let profile = errors
            .check(&key("profile"), Profile::parse(self.profile.as_deref()))
            .flatten();
        let cert_name = match self.cert_name.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(name) => errors.check(&key("cert-name"), parse_cert_name(name)),
        };
        let client_auth = validate_client_auth(
            self.client_ca.as_deref(),
            self.client_auth.as_deref(),
            &key,
            errors,
        );
        let acme_challenge = validate_acme(
            self.acme,
            self.acme_challenge.as_deref(),
            host.as_ref(),
            &key,
            errors,
        );
        let allow = self.allow(&key, errors);
        let (auth, forward_auth) = self
            .auth
            .as_ref()
            .map_or((None, None), |a| a.validate(&key, errors));
        let rate_limit =
            RateLimit::validate(self.rate_limit.as_deref(), self.rate_burst, &key, errors);
        check_registry_auth(profile, auth.as_ref(), &key, errors);
        let names_certificates = auth
            .as_ref()
            .and_then(|a| a.repositories.as_ref())
            .is_some_and(|r| r.names_certificates());
        let ip_host = host.as_ref().map(|h| h.to_string()).is_some_and(|h| {
            h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        });
        if client_auth.is_some() && ip_host {
            errors.push(
                key("client-ca"),
                "a host that is an IP address: clients send no server name (SNI) for one, so \
                 no handshake could be told to ask for a certificate",
            );
        }
        let pattern_host = host
            .as_ref()
            .is_some_and(|h| !matches!(h, HostPattern::Exact(_)));
        if health_check.is_some()
            && pattern_host
            && proto == UpstreamProto::Https
            && upstream_tls.sni.is_none()
        {
            errors.push(
                key("health-check"),
                "a wildcard or regex host's https upstreams are reached with the name each \
                 request asks for; set upstream-sni, the name its checks (and requests) verify",
            );
        }
        if names_certificates && client_auth.is_none() {
            errors.push(
                key("auth.repositories"),
                "names client-certificate identities (cert:...); set client-ca, whose \
                 certificates they are",
            );
        }
        let mut base = defaults.clone();
        if let Some(p) = profile {
            p.preset(&mut base);
        }
        let settings = self.settings().apply(&base, prefix, errors);
        if profile == Some(Profile::Registry) && self.compress == Some(true) {
            errors.push(
                key("compress"),
                "never on the registry profile: layers are compressed already, and a digest \
                 names a manifest's or blob's bytes exactly as the registry sends them",
            );
        }
        let cache = self.cache.unwrap_or(false);
        if cache && profile != Some(Profile::Registry) {
            errors.push(
                key("cache"),
                "only on the registry profile: the cache keeps what a digest names (blobs and \
                 manifests by digest), which only a registry's paths say; set profile = \
                 \"registry\"",
            );
        }
        if errors.len() != before {
            return None;
        }
        Some(RouteSpec {
            host: host?,
            path,
            upstreams,
            lb,
            health_check,
            proto,
            upstream_tls,
            profile,
            settings,
            cert_name,
            client_auth,
            allow,
            auth,
            forward_auth,
            rate_limit,
            acme: self.acme.unwrap_or(false),
            acme_challenge,
            cache,
            source,
        })
    }

    fn upstreams(&self, key: &dyn Fn(&str) -> String, errors: &mut Errors) -> Vec<Upstream> {
        if self.upstreams.is_empty() {
            errors.push(
                key("upstreams"),
                "empty; every route needs at least one upstream",
            );
        }
        self.upstreams
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
            .collect()
    }

    fn allow(&self, key: &dyn Fn(&str) -> String, errors: &mut Errors) -> Vec<IpNet> {
        if self.allow.as_ref().is_some_and(Vec::is_empty) {
            errors.push(
                key("allow"),
                "empty list would refuse every client; remove the key to allow everyone",
            );
        }
        self.allow
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, v)| errors.check(&format!("{}[{i}]", key("allow")), parse_cidr(v)))
            .collect()
    }
}

/// Checks a route's path prefix: it starts with `/`, and requests can reach it (it is
/// written as requests are routed, normalised, and every upstream reads it one way).
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        return Err(format!("invalid path \"{path}\": must start with \"/\""));
    }
    let routed = crate::path::route_path(path);
    if crate::path::readings(path).iter().any(|r| r != path) && routed == path {
        return Err(format!(
            "path \"{path}\" can never match: upstreams read it in different ways \
             (`;`, `\\`, `%2F`, `%5C` or `//`), so requests for it are refused"
        ));
    }
    if routed != path {
        return Err(format!(
            "path \"{path}\" can never match: requests are routed by their normalised \
             path; write \"{routed}\""
        ));
    }
    Ok(())
}
