//! The settings every route has and `[defaults]` may set: plain HTTP versus HTTPS
//! (`https`, `hsts`), the body limits (`max-body`, `min-body-rate`) and the timeouts
//! (`connect-timeout`, `read-timeout`, `write-timeout`), response compression (`compress`),
//! berth's own error pages (`error-pages`) and maintenance (`maintenance`,
//! `maintenance-reads`) — as written, validated, and their built-in values. A profile presets some of them ([`super::registry`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::errors::Errors;
use crate::files::FilePath;
use crate::units::{parse_duration, parse_size};

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
    /// Slowest average a request body may arrive at, after [`BODY_RATE_GRACE`].
    pub min_body_rate: Option<String>,
    /// Compress responses for clients that accept it ([`crate::compress`]).
    pub compress: Option<bool>,
    /// The directory of the operator's pages for berth's own answers (`502.html`, ...).
    pub error_pages: Option<FilePath>,
    /// Answer 503 and the maintenance page instead of proxying.
    pub maintenance: Option<bool>,
    /// During maintenance, let reads through (GET and HEAD; on the registry profile, pulls).
    pub maintenance_reads: Option<bool>,
}

impl RawSettings {
    /// Overlays the keys that are set onto `base`, recording bad values under `prefix`.
    pub fn apply(&self, base: &RouteSettings, prefix: &str, errors: &mut Errors) -> RouteSettings {
        let mut s = base.clone();
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(v) = &self.https {
            if let Some(mode) = errors.check(&key("https"), HttpsMode::parse(v)) {
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
        if let Some(v) = &self.min_body_rate {
            if let Some(n) = errors.check(&key("min-body-rate"), parse_byte_rate(v)) {
                s.min_body_rate = n;
            }
        }
        if let Some(on) = self.compress {
            s.compress = on;
        }
        if let Some(dir) = &self.error_pages {
            let dir = dir.trim();
            if dir.is_empty() {
                s.error_pages = None;
            } else if !dir.starts_with('/') {
                errors.push(
                    key("error-pages"),
                    format!("\"{dir}\" is not an absolute path; write e.g. \"/etc/berth/errors\""),
                );
            } else {
                s.error_pages = Some(dir.to_string());
            }
        }
        if let Some(on) = self.maintenance {
            s.maintenance = on;
        }
        if let Some(on) = self.maintenance_reads {
            s.maintenance_reads = on;
        }
        s
    }
}

/// What to do about plain HTTP versus HTTPS for a route (nginx-proxy's `HTTPS_METHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpsMode {
    /// Plain HTTP is redirected to HTTPS once the host has a certificate of its own.
    Redirect,
    /// Both are served, no redirect, no HSTS.
    NoRedirect,
    /// Only HTTPS is served.
    NoHttp,
    /// Only plain HTTP is served.
    NoHttps,
}

impl HttpsMode {
    /// Parses `redirect`, `noredirect`, `nohttp` or `nohttps`.
    ///
    /// # Errors
    /// A message naming the value otherwise.
    pub fn parse(value: &str) -> Result<HttpsMode, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "redirect" => Ok(HttpsMode::Redirect),
            "noredirect" => Ok(HttpsMode::NoRedirect),
            "nohttp" => Ok(HttpsMode::NoHttp),
            "nohttps" => Ok(HttpsMode::NoHttps),
            _ => Err(format!(
                "invalid https mode \"{value}\": expected redirect, noredirect, nohttp or nohttps"
            )),
        }
    }
}

/// Settings every route has; `[defaults]` supplies them, a profile presets some, and the
/// route itself may override each one.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSettings {
    /// HTTP/HTTPS behaviour.
    pub https: HttpsMode,
    /// `Strict-Transport-Security` value for HTTPS responses; `None` = off.
    #[serde(serialize_with = "ser_header_opt")]
    pub hsts: Option<http::HeaderValue>,
    /// Largest request body accepted, in bytes; 0 = unlimited.
    pub max_body: u64,
    /// Time allowed to establish the upstream connection.
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    /// Longest idle time between two reads (from the client or from the upstream).
    #[serde(serialize_with = "ser_duration")]
    pub read_timeout: Duration,
    /// Longest time a write (to the client or to the upstream) may block.
    #[serde(serialize_with = "ser_duration")]
    pub write_timeout: Duration,
    /// Slowest average, in bytes a second, a request body may arrive at once
    /// [`BODY_RATE_GRACE`] has passed; 0 = no minimum.
    pub min_body_rate: u64,
    /// Responses are compressed for clients that accept it ([`crate::compress`]).
    pub compress: bool,
    /// The directory of the operator's pages for berth's own answers; `None`: berth's own.
    pub error_pages: Option<String>,
    /// Requests are answered 503 and the maintenance page instead of being proxied.
    pub maintenance: bool,
    /// During maintenance, reads pass: GET and HEAD (on the registry profile, pulls and the
    /// API's version check).
    pub maintenance_reads: bool,
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

fn ser_header_opt<S: serde::Serializer>(
    h: &Option<http::HeaderValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // Escaped, so that two values never read the same (a value need not be UTF-8).
    match h {
        Some(v) => s.collect_str(&v.as_bytes().escape_ascii()),
        None => s.serialize_str("off"),
    }
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
        min_body_rate: DEFAULT_MIN_BODY_RATE,
        compress: true,
        error_pages: None,
        maintenance: false,
        maintenance_reads: false,
    }
}

/// `min-body-rate` when `[defaults]` sets none: Apache's `mod_reqtimeout` default, 500 bytes
/// a second, a tenth of what a poor mobile link carries.
pub const DEFAULT_MIN_BODY_RATE: u64 = 500;

/// How long a request body may take before `min-body-rate` applies (also the longest a client
/// may wait before its first body byte): Apache's `mod_reqtimeout` grace for bodies.
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(20);

/// Parses a byte rate: `500B/s`, `1KiB/s`, or `0` (no minimum).
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_byte_rate(value: &str) -> Result<u64, String> {
    let v = value.trim();
    if v == "0" {
        return Ok(0);
    }
    v.strip_suffix("/s")
        .and_then(|size| parse_size(size).ok())
        .ok_or_else(|| {
            format!(
                "invalid rate \"{value}\": write e.g. \"500B/s\", \"1KiB/s\" or \"0\" (no minimum)"
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_rates_are_sizes_a_second() {
        assert_eq!(parse_byte_rate("500B/s"), Ok(500));
        assert_eq!(parse_byte_rate(" 1KiB/s "), Ok(1024));
        assert_eq!(parse_byte_rate("0"), Ok(0));
        for bad in ["500", "fast", "-1B/s", "1KiB/m", ""] {
            let e = parse_byte_rate(bad).expect_err(bad);
            assert!(e.starts_with("invalid rate"), "{e}");
        }
    }
}
