//! Upstream TLS: `proto = "https"`, and how the upstream's certificate is checked
//! (`upstream-ca-file`, `upstream-sni`, `dangerous-skip-verify`).

use serde::Serialize;

use crate::errors::Errors;
use crate::files::check_ca_file;

/// Protocol spoken to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProto {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS, certificate verified against the system roots.
    Https,
}

impl UpstreamProto {
    /// Parses `http` or `https` (any case); absent is `http`.
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: Option<&str>) -> Result<UpstreamProto, String> {
        match value.map(str::trim) {
            None => Ok(UpstreamProto::Http),
            Some(p) if p.eq_ignore_ascii_case("http") => Ok(UpstreamProto::Http),
            Some(p) if p.eq_ignore_ascii_case("https") => Ok(UpstreamProto::Https),
            Some(other) => Err(format!(
                "invalid proto \"{other}\": expected \"http\" or \"https\""
            )),
        }
    }
}

/// How berth talks TLS to a route's upstreams (`proto = "https"`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpstreamTls {
    /// A PEM file of extra CA certificates trusted besides the system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The name sent as SNI and verified in the upstream's certificate; default: the
    /// request's host.
    pub sni: Option<String>,
    /// Accept any certificate. Named so that nobody sets it by accident.
    pub dangerous_skip_verify: bool,
}

/// A route's upstream TLS keys as written.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawUpstreamTls<'a> {
    /// `upstream-ca-file`.
    pub ca_file: Option<&'a str>,
    /// `upstream-sni`.
    pub sni: Option<&'a str>,
    /// `dangerous-skip-verify`.
    pub dangerous_skip_verify: Option<bool>,
}

impl RawUpstreamTls<'_> {
    /// Validates the keys for a route speaking `proto`; `key` names a key in errors.
    pub fn validate(
        &self,
        proto: UpstreamProto,
        key: &dyn Fn(&str) -> String,
        errors: &mut Errors,
    ) -> UpstreamTls {
        let set =
            self.ca_file.is_some() || self.sni.is_some() || self.dangerous_skip_verify.is_some();
        if set && proto != UpstreamProto::Https {
            errors.push(
                key("proto"),
                "upstream-ca-file, upstream-sni and dangerous-skip-verify need proto = \"https\"",
            );
        }
        let ca_file = self.ca_file.and_then(|path| {
            errors
                .check(&key("upstream-ca-file"), check_ca_file(path))
                .map(|()| std::path::PathBuf::from(path))
        });
        let sni = self.sni.and_then(|name| {
            errors.check(
                &key("upstream-sni"),
                super::host::host_of(name)
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
}
