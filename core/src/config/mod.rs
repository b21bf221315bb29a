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

mod docker;
mod route;
mod source;
mod tls;

pub mod acme;
pub mod cache;
pub mod dns;
pub mod limits;
pub mod server;
pub mod units;

pub use crate::errors::*;
pub use docker::*;
pub use route::*;
pub use source::*;
pub use tls::*;

use units::parse_listen_addr;

use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::route::{
    builtin_defaults, Challenge, ClientAuth, RawSettings, RouteSettings, RouteSource, RouteSpec,
};

/// A list of CIDRs under `key`, each error naming its index.
fn cidrs(values: &[String], key: &str, errors: &mut Errors) -> Vec<ipnet::IpNet> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| errors.check(&format!("{key}[{i}]"), parse_cidr(v)))
        .collect()
}

/// The default configuration, embedded in the binary: `configs/berth.toml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../configs/berth.toml");

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
    /// Sources whose connections start with a PROXY protocol header (CIDRs).
    pub proxy_protocol: Vec<String>,
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
    pub acme: crate::config::acme::RawAcme,
    /// `[log]`.
    pub log: RawLog,
    /// `[forwarded]`.
    pub forwarded: RawForwarded,
    /// `[limits]`.
    pub limits: crate::config::limits::RawLimits,
    /// `[server]`.
    pub server: crate::config::server::RawServer,
    /// `[cache]`.
    pub cache: crate::config::cache::RawCache,
    /// `[defaults]`.
    pub defaults: RawSettings,
    /// `[[route]]` tables.
    #[serde(rename = "route")]
    pub routes: Vec<RawRoute>,
}

/// Validated `[listen]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Plain HTTP listener; `None` when set to `""`.
    pub http: Option<SocketAddr>,
    /// HTTPS listener; `None` when absent or `""`.
    pub https: Option<SocketAddr>,
    /// Metrics and admin listener (`/metrics`, `/routes`, `/healthz`); `None` when absent
    /// or `""`.
    pub metrics: Option<SocketAddr>,
    /// Sources whose connections to the HTTP and HTTPS listeners must start with a PROXY
    /// protocol header (v1 or v2), whose client address then stands for theirs.
    pub proxy_protocol: Vec<ipnet::IpNet>,
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
    pub acme: crate::config::acme::AcmeConfig,
    /// The access log.
    pub access_log: AccessLog,
    /// Peers whose `X-Forwarded-*` headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Downstream limits.
    pub limits: crate::config::limits::Limits,
    /// Upgrade and shutdown.
    pub server: crate::config::server::ServerSettings,
    /// The registry cache.
    pub cache: crate::config::cache::CacheConfig,
    /// Settings every route starts from.
    pub defaults: RouteSettings,
    /// Static routes from the file.
    pub routes: Vec<RouteSpec>,
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
        let tls = self.tls.validate(errors);
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
        let proxy_protocol = cidrs(&self.listen.proxy_protocol, "listen.proxy-protocol", errors);
        let trusted_proxies = cidrs(
            &self.forwarded.trusted_proxies,
            "forwarded.trusted-proxies",
            errors,
        );
        let limits = self.limits.validate(errors);
        let server = self.server.validate(errors);
        let cache = self.cache.validate(errors);
        let defaults = self.defaults.apply(&builtin_defaults(), "defaults", errors);
        let mut first_with: std::collections::HashMap<(String, String), (usize, String)> =
            std::collections::HashMap::new();
        let mut host_client_auth: std::collections::HashMap<String, (usize, Option<ClientAuth>)> =
            std::collections::HashMap::new();
        let mut routes = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let Some(spec) =
                r.validate(&format!("route[{i}]"), &defaults, RouteSource::File, errors)
            else {
                continue;
            };
            // Two routes for one host and path: only one could ever take requests, and the
            // settings of the other (its auth, say) would silently not apply. Paths that differ
            // only by case or a final `/` are one path to upstreams that ignore case or serve
            // `/a` for `/a/`: every request between them would be refused as ambiguous.
            let key = (
                spec.host.to_string(),
                spec.path
                    .to_ascii_lowercase()
                    .trim_end_matches('/')
                    .to_string(),
            );
            if let Some((first, path)) = first_with.get(&key) {
                let why = if *path == spec.path {
                    format!("same host and path as route[{first}] ({} {path})", key.0)
                } else {
                    format!(
                        "path {} differs from route[{first}]'s {path} (same host) only by case \
                         or a final /, which many upstreams read as one path",
                        spec.path
                    )
                };
                errors.push(
                    format!("route[{i}]"),
                    format!("{why}; merge the two routes"),
                );
                continue;
            }
            first_with.insert(key, (i, spec.path.clone()));
            // Client certificates are asked for in the handshake, before any path is known:
            // every route of a host says the same, or one says it for all.
            let host = spec.host.to_string();
            match host_client_auth.get(&host) {
                Some((first, auth)) if *auth != spec.client_auth => {
                    errors.push(
                        format!("route[{i}].client-ca"),
                        format!(
                            "route[{first}] for the same host {} client certificates \
                             differently; client-ca and client-auth are per host (the TLS \
                             handshake comes before the path): set the same on every route \
                             of {host}",
                            if auth.is_some() {
                                "verifies"
                            } else {
                                "does not verify"
                            }
                        ),
                    );
                    continue;
                }
                Some(_) => {}
                None => {
                    host_client_auth.insert(host, (i, spec.client_auth.clone()));
                }
            }
            let dns01 = spec.host.certificate_name().is_some_and(|name| {
                Challenge::effective(spec.acme_challenge, &[name]) == Ok(Challenge::Dns01)
            });
            if spec.acme && dns01 && acme.dns.is_none() {
                errors.push(
                    format!("route[{i}].acme-challenge"),
                    format!(
                        "{} is proved with dns-01, and no acme.dns-provider is set (rfc2136 or \
                         exec; see docs/certificates.md)",
                        spec.host
                    ),
                );
            }
            routes.push(spec);
        }
        Some(Config {
            listen: Listen {
                http,
                https,
                metrics,
                proxy_protocol,
            },
            tls,
            docker,
            acme,
            access_log,
            trusted_proxies,
            limits,
            server,
            cache,
            defaults,
            routes,
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
            crate::contract::CertDir::new("berth-state/certs")
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

        let c = parse("swarm = true\nswarm-poll = \"2s\"\n").expect("valid");
        assert_eq!(c.docker.swarm, DockerMode::On);
        assert_eq!(c.docker.swarm_poll, std::time::Duration::from_secs(2));
        let c = parse("").expect("valid");
        assert_eq!(c.docker.swarm, DockerMode::Auto);
        assert_eq!(c.docker.swarm_poll, DEFAULT_SWARM_POLL);
        let errs = errors_of(&format!("{base}swarm = \"yes\"\nswarm-poll = \"10ms\"\n"));
        assert_eq!(
            errs,
            [
                "docker.swarm: invalid value \"yes\": expected \"auto\", true or false",
                "docker.swarm-poll: must be at least 500ms"
            ]
        );
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
            "route[1].upstream-ca-file: \"/nonexistent/ca.pem\": cannot read",
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
    fn certificates_by_dns_01_need_a_provider_and_wildcards_need_dns_01() {
        let routes = r#"
[[route]]
host = "*.w.example.com"
upstreams = ["127.0.0.1:1"]
acme = true

[[route]]
host = "*.h.example.com"
upstreams = ["127.0.0.1:1"]
acme = true
acme-challenge = "http-01"

[[route]]
host = "a.example.com"
upstreams = ["127.0.0.1:1"]
acme = true
acme-challenge = "DNS-01"

[[route]]
host = "b.example.com"
upstreams = ["127.0.0.1:1"]
acme = true

[[route]]
host = "~^c$"
upstreams = ["127.0.0.1:1"]
acme = true

[[route]]
host = "d.example.com"
upstreams = ["127.0.0.1:1"]
acme-challenge = "tls-alpn-01"
"#;
        let errs = errors_of(&format!("[listen]\nhttp = \"127.0.0.1:8080\"\n{routes}"));
        let expected = [
            "route[0].acme-challenge: *.w.example.com is proved with dns-01, and no acme.dns-provider",
            "route[1].acme-challenge: \"*.h.example.com\" is a wildcard",
            "route[2].acme-challenge: a.example.com is proved with dns-01, and no acme.dns-provider",
            "route[4].acme: needs a plain host name or a leading wildcard",
            "route[5].acme-challenge: invalid challenge \"tls-alpn-01\"",
        ];
        for e in expected {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");

        // With a provider, the wildcard and the dns-01 route are fine.
        let with_dns = format!(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n[acme]\ndns-provider = \"exec\"\n\
             dns-exec = \"/bin/true\"\n{routes}"
        );
        let errs = errors_of(&with_dns);
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].starts_with("route[1].acme-challenge"), "{errs:#?}");
    }

    #[test]
    fn which_requests_go_without_credentials() {
        let base = "[listen]\nhttp = \"127.0.0.1:8080\"\n[[route]]\nhost = \"r.example.com\"\n\
                    upstreams = [\"127.0.0.1:1\"]\nauth.htpasswd = \"/etc/berth/htpasswd\"\n";
        let open = |extra: &str| {
            parse_config(&format!("{base}{extra}"))
                .map(|c| c.routes[0].auth.as_ref().map(|a| a.open.clone()))
                .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(open(""), Ok(Some(crate::route::OpenAccess::Nothing)));
        assert_eq!(
            open("auth.methods = [\"post\", \"PUT\", \"post\"]"),
            Ok(Some(crate::route::OpenAccess::MethodsOtherThan(vec![
                "POST".into(),
                "PUT".into()
            ])))
        );
        assert_eq!(
            open("auth.methods = [\"GET\"]"),
            Ok(Some(crate::route::OpenAccess::MethodsOtherThan(vec![
                "GET".into(),
                "HEAD".into()
            ]))),
            "GET brings HEAD"
        );
        assert_eq!(
            open("profile = \"registry\"\nauth.anonymous-read = true"),
            Ok(Some(crate::route::OpenAccess::RegistryReads))
        );
        for (extra, error) in [
            (
                "auth.anonymous-read = true",
                "route[0].auth.anonymous-read: only for profile = \"registry\"",
            ),
            (
                "profile = \"registry\"\nauth.anonymous-read = true\nauth.methods = [\"POST\"]",
                "route[0].auth: methods and anonymous-read",
            ),
            (
                "auth.methods = [\"PUTT\"]",
                "route[0].auth.methods[0]: unknown method \"PUTT\"",
            ),
            ("auth.methods = []", "route[0].auth.methods: empty"),
            (
                "auth.token-secret-file = \"/etc/berth/secret\"",
                "route[0].auth.token-secret-file: only with auth.anonymous-read",
            ),
            (
                "profile = \"registry\"\nauth.anonymous-read = true\nauth.token-secret-file = \"secret\"",
                "route[0].auth.token-secret-file: \"secret\" is not an absolute path",
            ),
            (
                "profile = \"registry\"\nauth.methods = [\"POST\"]",
                "route[0].auth.methods: not on the registry profile",
            ),
        ] {
            let errs = open(extra).expect_err(extra);
            assert!(
                errs.iter().any(|e| e.starts_with(error)),
                "{extra}: {errs:#?}"
            );
        }
    }

    #[test]
    fn forward_auth_and_rate_limits_are_validated() {
        let base = "[listen]\nhttp = \"127.0.0.1:8080\"\n[[route]]\nhost = \"app.example.com\"\n\
                    upstreams = [\"127.0.0.1:1\"]\n";
        let route = |extra: &str| {
            parse_config(&format!("{base}{extra}"))
                .map(|c| c.routes[0].clone())
                .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let r = route(
            "auth.forward = \"http://authelia:9091/api/authz/forward-auth?x=1\"\n\
             auth.forward-headers = [\"Remote-User\", \"remote-groups\", \"Remote-User\"]\n\
             auth.forward-cache = \"30s\"\nrate-limit = \"20r/s\"",
        )
        .expect("valid");
        assert!(r.auth.is_none());
        assert_eq!(
            r.forward_auth,
            Some(crate::route::ForwardAuthSpec {
                url: "http://authelia:9091/api/authz/forward-auth?x=1".into(),
                headers: vec!["remote-user".into(), "remote-groups".into()],
                cache: Some(std::time::Duration::from_secs(30)),
            })
        );
        let limit = r.rate_limit.expect("rate limit");
        assert_eq!(
            (limit.requests, limit.burst),
            (20, 20),
            "the burst defaults to the rate"
        );
        assert_eq!(limit.interval(), std::time::Duration::from_millis(50));
        let r = route("auth.forward = \"http://a:1/\"\nauth.forward-cache = \"off\"\nrate-limit = \"6r/m\"\nrate-burst = 2")
            .expect("valid");
        let forward = r.forward_auth.expect("forward auth");
        assert_eq!(forward.cache, None);
        assert_eq!(
            forward.headers,
            [
                "remote-user",
                "remote-groups",
                "remote-name",
                "remote-email"
            ],
            "Authelia's headers by default"
        );
        let limit = r.rate_limit.expect("rate limit");
        assert_eq!((limit.burst, limit.interval().as_secs()), (2, 10));
        for (extra, error) in [
            (
                "auth.forward = \"http://a:1/\"\nauth.htpasswd = \"/etc/htpasswd\"",
                "route[0].auth.htpasswd: not with auth.forward",
            ),
            (
                "auth.forward = \"http://a:1/\"\nauth.anonymous-read = true",
                "route[0].auth.anonymous-read: not with auth.forward",
            ),
            ("auth.forward = \"https://a/\"", "route[0].auth.forward: invalid auth.forward \"https://a/\": https is not supported"),
            ("auth.forward = \"authelia:9091\"", "route[0].auth.forward: invalid auth.forward"),
            (
                "auth.forward = \"http://u:s3cret@a/\"",
                "route[0].auth.forward: invalid auth.forward \"http://…@a/\": expected",
            ),
            (
                "auth.forward = \"authelia:9091/verify?token=s3cret\"",
                "route[0].auth.forward: invalid auth.forward \"authelia:9091/verify?…\"",
            ),
            (
                "auth.forward = \"http://a/\"\nauth.forward-headers = [\"Content-Length\"]",
                "route[0].auth.forward-headers[0]: \"Content-Length\" describes",
            ),
            (
                "auth.forward = \"http://a/\"\nauth.forward-headers = [\"Remote User\"]",
                "route[0].auth.forward-headers[0]: \"Remote User\" is not a header name",
            ),
            (
                "auth.forward = \"http://a/\"\nauth.forward-cache = \"soon\"",
                "route[0].auth.forward-cache:",
            ),
            (
                "auth.forward = \"http://a/\"\nauth.forward-cache = \"11m\"",
                "route[0].auth.forward-cache: 11m is longer than 10m",
            ),
            (
                "auth.htpasswd = \"/etc/htpasswd\"\nauth.forward-headers = [\"Remote-User\"]",
                "route[0].auth.forward-headers: needs auth.forward",
            ),
            ("rate-limit = \"20\"", "route[0].rate-limit: invalid rate-limit \"20\""),
            ("rate-limit = \"20r/d\"", "route[0].rate-limit: invalid rate-limit"),
            ("rate-limit = \"0r/s\"", "route[0].rate-limit: invalid rate-limit"),
            ("rate-limit = \"5r/s\"\nrate-burst = 0", "route[0].rate-limit: rate-burst 0"),
            ("rate-burst = 5", "route[0].rate-burst: needs rate-limit"),
            (
                "rate-limit = \"1r/h\"\nrate-burst = 4000000000",
                "route[0].rate-limit: rate-burst 4000000000 is more than 1000000",
            ),
        ] {
            let errs = route(extra).expect_err(extra);
            assert!(
                errs.iter().any(|e| e.starts_with(error)),
                "{extra}: {errs:#?}"
            );
        }
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

[[route]]
host = "registry.example.com"
path = "/app;v=1"
upstreams = ["127.0.0.1:5002"]

[[route]]
host = "registry.example.com"
path = '/app\x'
upstreams = ["127.0.0.1:5002"]

[[route]]
host = "registry.example.com"
path = "/V2/"
upstreams = ["127.0.0.1:5003"]
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
                "route[4].path: path \"/app;v=1\" can never match: upstreams read it in different ways (`;`, `\\`, `%2F`, `%5C` or `//`), so requests for it are refused",
                "route[5].path: path \"/app\\x\" can never match: upstreams read it in different ways (`;`, `\\`, `%2F`, `%5C` or `//`), so requests for it are refused",
                "route[6]: path /V2/ differs from route[2]'s /v2 (same host) only by case \
                         or a final /, which many upstreams read as one path; merge the two routes",
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
    fn the_cache_is_off_by_default_and_only_on_the_registry_profile() {
        let route = |host: &str, extra: &str| {
            format!("[[route]]\nhost = \"{host}\"\nupstreams = [\"127.0.0.1:1\"]\n{extra}\n")
        };
        let head = "[listen]\nhttp = \"127.0.0.1:8080\"\n";
        let text = format!(
            "{head}[cache]\ndir = \"/var/cache/berth\"\nmax-size = \"1GiB\"\n{}{}",
            route("r.test", "profile = \"registry\""),
            route("s.test", "profile = \"registry\"\ncache = true")
        );
        let config = parse_config(&text).expect("valid");
        let on: Vec<bool> = config.routes.iter().map(|r| r.cache).collect();
        assert_eq!(on, [false, true]);
        assert_eq!(config.cache.max_size, 1 << 30);
        assert_eq!(
            config.cache.dir,
            std::path::PathBuf::from("/var/cache/berth")
        );
        let config = parse_config(head).expect("valid");
        assert_eq!(config.cache, crate::config::cache::CacheConfig::default());
        let errs = errors_of(&format!("{head}{}", route("a.test", "cache = true")));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("route[0].cache: only on the registry profile"),
            "{errs:?}"
        );
    }

    #[test]
    fn compression_is_on_by_default_and_never_on_the_registry_profile() {
        let route = |host: &str, extra: &str| {
            format!("[[route]]\nhost = \"{host}\"\nupstreams = [\"127.0.0.1:1\"]\n{extra}\n")
        };
        let head = "[listen]\nhttp = \"127.0.0.1:8080\"\n";
        let text = format!(
            "{head}{}{}{}",
            route("a.test", ""),
            route("b.test", "compress = false"),
            route("r.test", "profile = \"registry\"")
        );
        let config = parse_config(&text).expect("valid");
        let on: Vec<bool> = config.routes.iter().map(|r| r.settings.compress).collect();
        assert_eq!(on, [true, false, false]);
        let text = format!(
            "{head}[defaults]\ncompress = false\n{}",
            route("a.test", "")
        );
        assert!(
            !parse_config(&text).expect("valid").routes[0]
                .settings
                .compress
        );
        let errs = errors_of(&format!(
            "{head}{}",
            route("r.test", "profile = \"registry\"\ncompress = true")
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("route[0].compress: never on the registry profile"),
            "{errs:?}"
        );
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_addresses() {
        let text = "[listen]\nhttp = \"127.0.0.1:1\"\n[forwarded]\ntrusted-proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\", \"nope\"]\n";
        let errs = errors_of(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("forwarded.trusted-proxies[3]: invalid CIDR \"nope\""));
        let text = "[listen]\nhttp = \"127.0.0.1:1\"\nproxy-protocol = [\"10.0.0.0/8\", \"192.0.2.7\", \"x\"]\n";
        let errs = errors_of(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("listen.proxy-protocol[2]: invalid CIDR \"x\""));
        let config =
            parse_config("[listen]\nhttp = \"127.0.0.1:1\"\nproxy-protocol = [\"192.0.2.7\"]\n")
                .expect("valid");
        assert_eq!(
            config.listen.proxy_protocol,
            ["192.0.2.7/32".parse::<ipnet::IpNet>().expect("net")]
        );
    }

    #[test]
    fn client_certificates_are_per_host_and_name_their_ca() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = dir.path().join("clients.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ca = ca.display();
        let route = |host: &str, path: &str, extra: &str| {
            format!(
                "[[route]]\nhost = \"{host}\"\npath = \"{path}\"\nupstreams = [\"127.0.0.1:1\"]\n{extra}\n"
            )
        };
        let listen = "[listen]\nhttp = \"127.0.0.1:8080\"\n";
        let config = parse_config(&format!(
            "{listen}{}{}{}",
            route("r.test", "/", &format!("client-ca = \"{ca}\"")),
            route(
                "r.test",
                "/v2",
                &format!("client-ca = \"{ca}\"\nclient-auth = \"require\"")
            ),
            route(
                "o.test",
                "/",
                &format!("client-ca = \"{ca}\"\nclient-auth = \"Optional\"")
            ),
        ))
        .expect("valid");
        let modes: Vec<_> = config
            .routes
            .iter()
            .map(|r| r.client_auth.as_ref().map(|a| a.mode))
            .collect();
        use crate::route::ClientAuthMode::{Optional, Require};
        assert_eq!(modes, [Some(Require), Some(Require), Some(Optional)]);
        let rules = "profile = \"registry\"\nauth.htpasswd = \"/h\"\n\
                     auth.repositories = [{ repositories = [\"ci/*\"], users = [\"cert:ci runner\"], allow = [\"push\"] }]";
        parse_config(&format!(
            "{listen}{}",
            route("r.test", "/", &format!("{rules}\nclient-ca = \"{ca}\""))
        ))
        .expect("cert: users with client-ca");
        for (routes, error) in [
            (
                route("r.test", "/", "client-auth = \"optional\""),
                "route[0].client-auth: needs client-ca",
            ),
            (
                route("192.0.2.7", "/", &format!("client-ca = \"{ca}\"")),
                "route[0].client-ca: a host that is an IP address",
            ),
            (
                route("r.test", "/", &format!("client-ca = \"{ca}\"\nclient-auth = \"maybe\"")),
                "route[0].client-auth: invalid client-auth \"maybe\"",
            ),
            (
                route("r.test", "/", "client-ca = \"ca.pem\""),
                "route[0].client-ca: \"ca.pem\" is not an absolute path",
            ),
            (
                route("r.test", "/", rules),
                "route[0].auth.repositories: names client-certificate identities (cert:...); set client-ca",
            ),
            (
                format!(
                    "{}{}",
                    route("r.test", "/", &format!("client-ca = \"{ca}\"")),
                    route("r.test", "/v2", "")
                ),
                "route[1].client-ca: route[0] for the same host verifies client certificates differently",
            ),
            (
                format!(
                    "{}{}",
                    route("r.test", "/", &format!("client-ca = \"{ca}\"")),
                    route("r.test", "/v2", &format!("client-ca = \"{ca}\"\nclient-auth = \"optional\""))
                ),
                "route[1].client-ca: route[0] for the same host verifies",
            ),
        ] {
            let e = parse_config(&format!("{listen}{routes}")).expect_err(error);
            assert!(format!("{e}").contains(error), "{error} in {e}");
        }
    }

    #[test]
    fn repository_rules_are_for_registry_routes_with_basic_auth() {
        let base = "[listen]\nhttp = \"127.0.0.1:8080\"\n[[route]]\nhost = \"r.test\"\n\
                    upstreams = [\"127.0.0.1:1\"]\nauth.htpasswd = \"/etc/berth/htpasswd\"\n";
        let rule = "auth.repositories = [{ repositories = [\"team-a/*\"], users = [\"@team-a\"], \
                    allow = [\"pull\", \"push\"] }]\n";
        let registry = "profile = \"registry\"\n";
        let config = parse_config(&format!(
            "{base}{registry}{rule}auth.groups = \"/etc/berth/groups\"\nauth.anonymous-read = true\n"
        ))
        .expect("valid");
        let auth = config.routes[0].auth.as_ref().expect("auth");
        let rules = auth.repositories.as_ref().expect("rules");
        // anonymous-read is the last rule: anyone without credentials pulls everything.
        assert_eq!(rules.0.len(), 2);
        assert_eq!(rules.0[1], crate::route::Rule::anonymous_pulls());
        assert!(auth.tokens());
        assert_eq!(
            auth.groups.as_deref(),
            Some(std::path::Path::new("/etc/berth/groups"))
        );
        // Rules speak the token flow, anonymous or not; basic auth alone does not.
        let config = parse_config(&format!(
            "{base}{registry}auth.repositories = [{{ repositories = [\"*\"], users = [\"*\"], allow = [\"pull\"] }}]\n"
        ))
        .expect("valid");
        assert!(config.routes[0].auth.as_ref().expect("auth").tokens());
        let config = parse_config(&format!("{base}{registry}")).expect("valid");
        assert!(!config.routes[0].auth.as_ref().expect("auth").tokens());
        for (extra, error) in [
            (
                format!("{rule}auth.groups = \"/g\"\n"),
                "route[0].auth.repositories: only for profile = \"registry\"",
            ),
            (
                format!("{registry}{rule}"),
                "route[0].auth.repositories: a rule names a @group: auth.groups must name",
            ),
            (
                format!("{registry}auth.groups = \"/g\"\n"),
                "route[0].auth.groups: only with auth.repositories",
            ),
            (
                format!("{registry}{rule}auth.groups = \"g\"\n"),
                "route[0].auth.groups: \"g\" is not an absolute path",
            ),
            (
                format!("{registry}auth.repositories-file = \"/nonexistent/rules.toml\"\n"),
                "route[0].auth.repositories-file: /nonexistent/rules.toml: cannot read",
            ),
            (
                format!("{registry}{rule}auth.repositories-file = \"/nonexistent/rules.toml\"\n"),
                "route[0].auth.repositories-file: not with auth.repositories",
            ),
            (
                format!("{registry}auth.token-secret-file = \"/s\"\n"),
                "route[0].auth.token-secret-file: only with auth.anonymous-read or auth.repositories",
            ),
            (
                format!("{registry}auth.repositories = [{{ repositories = [\"*\"], users = [\"*\"], allow = [\"pull\"], extra = 1 }}]\n"),
                "unknown field `extra`",
            ),
            (
                format!("{registry}auth.anonymous-read = true\nauth.repositories = [{{ repositories = [\"secret/*\"], users = [\"*\"], allow = [] }}]\n"),
                "route[0].auth.repositories[0]: refuses pulls to users, but auth.anonymous-read",
            ),
        ] {
            let errs = errors_of(&format!("{base}{extra}"));
            assert!(errs.iter().any(|e| e.contains(error)), "{error}: {errs:?}");
        }
    }
}
