//! HTTPS policy per route (`https`, nginx-proxy's `HTTPS_METHOD`) and HSTS.
//!
//! Phases: `request_filter` — on plain HTTP, `redirect` answers 301 (GET, HEAD) or 308
//! (other methods; under the registry profile every method but GET) to the same host, path
//! and query over HTTPS, but only when an HTTPS listener exists and the host has a
//! certificate of its own (not the generated default), so a fresh host stays reachable while
//! its first certificate is issued; `nohttp` answers plain HTTP with the same 503 as an
//! unknown host; `nohttps` does that on HTTPS. `response_filter` — every HTTPS response of
//! the route, berth's own errors included, carries `Strict-Transport-Security` unless the
//! mode is `noredirect` or `hsts = "off"`.
//!
//! ```toml
//! [defaults]
//! https = "redirect"            # redirect | noredirect | nohttp | nohttps
//! hsts = "max-age=31536000"     # or "off"
//! ```
//!
//! The ACME challenge plugin sits before this one, so `/.well-known/acme-challenge/` stays
//! reachable over plain HTTP in every mode but `nohttp`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderValue, Method, StatusCode};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::plugin::{Flow, Plugin, Reply, RequestCtx, Scheme};
use berth_core::route::HttpsMode;

/// Whether a host has a certificate of its own (not the default), asked at request time.
pub trait OwnCertificate: Send + Sync {
    /// True when a handshake for `host` would get a certificate that covers it.
    fn has_own_certificate(&self, host: &str, cert_name: Option<&str>) -> bool;
}

/// The `https` / `hsts` plugin of a route.
pub struct HttpsPolicy {
    mode: HttpsMode,
    hsts: Option<HeaderValue>,
    registry: bool,
    cert_name: Option<String>,
    /// HTTPS listener port and certificate lookup; `None` when berth serves no HTTPS.
    https: Option<(u16, Arc<dyn OwnCertificate>)>,
}

impl std::fmt::Debug for HttpsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsPolicy")
            .field("mode", &self.mode)
            .field("hsts", &self.hsts)
            .finish()
    }
}

impl HttpsPolicy {
    /// A policy for one route.
    pub fn new(
        mode: HttpsMode,
        hsts: Option<HeaderValue>,
        registry: bool,
        cert_name: Option<String>,
        https: Option<(u16, Arc<dyn OwnCertificate>)>,
    ) -> HttpsPolicy {
        HttpsPolicy {
            mode,
            hsts,
            registry,
            cert_name,
            https,
        }
    }
}

/// The status of a redirect to HTTPS: 301 keeps GET and HEAD, 308 keeps the method and body
/// of everything else. Docker clients need 308 for every non-GET method.
pub fn redirect_status(method: &Method, registry: bool) -> StatusCode {
    let keeps_as_get = method == Method::GET || (method == Method::HEAD && !registry);
    if keeps_as_get {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    }
}

/// The HTTPS URL for a plain-HTTP request. The port: a `Host` with an explicit port, or a
/// request that reached the HTTP listener on port 80, maps to the HTTPS listener's port
/// (left out when it is 443); a `Host` without port on another listener port means a port
/// mapping in front of berth (80 → 8080), so the HTTPS side is taken to be 443 too.
pub fn redirect_location(
    authority: &str,
    path_and_query: &str,
    http_port: u16,
    https_port: u16,
) -> String {
    let (host, has_port) = split_port(authority);
    let explicit = has_port || http_port == 80;
    if explicit && https_port != 443 {
        format!("https://{host}:{https_port}{path_and_query}")
    } else {
        format!("https://{host}{path_and_query}")
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets) into the host and whether a port follows.
fn split_port(authority: &str) -> (&str, bool) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => (&authority[..=end], authority[end + 1..].starts_with(':')),
            None => (authority, false),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, true)
        }
        _ => (authority, false),
    }
}

fn not_served() -> Flow {
    Flow::Respond(Reply::no_route())
}

#[async_trait]
impl Plugin for HttpsPolicy {
    fn name(&self) -> &'static str {
        "https"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        match (ctx.downstream.scheme, self.mode) {
            (Scheme::Http, HttpsMode::NoHttp) | (Scheme::Https, HttpsMode::NoHttps) => {
                Ok(not_served())
            }
            (Scheme::Http, HttpsMode::Redirect) => {
                let Some((https_port, certs)) = &self.https else {
                    return Ok(Flow::Continue);
                };
                if !certs.has_own_certificate(&ctx.host, self.cert_name.as_deref()) {
                    return Ok(Flow::Continue);
                }
                let req = session.req_header();
                let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let location = redirect_location(
                    &ctx.authority,
                    target,
                    ctx.downstream.local_port,
                    *https_port,
                );
                let mut reply =
                    Reply::text(redirect_status(&req.method, self.registry), "use HTTPS");
                reply.body = bytes::Bytes::from(format!("{location}\n"));
                match HeaderValue::from_str(&location) {
                    Ok(v) => reply.headers.push((http::header::LOCATION, v)),
                    Err(_) => return Ok(Flow::Continue),
                }
                Ok(Flow::Respond(reply))
            }
            _ => Ok(Flow::Continue),
        }
    }

    fn response_filter(
        &self,
        _session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let sends_hsts = ctx.downstream.scheme == Scheme::Https
            && matches!(self.mode, HttpsMode::Redirect | HttpsMode::NoHttp);
        if let (true, Some(hsts)) = (sends_hsts, &self.hsts) {
            response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_codes_per_method() {
        let cases = [
            (Method::GET, false, 301),
            (Method::HEAD, false, 301),
            (Method::POST, false, 308),
            (Method::PUT, false, 308),
            (Method::PATCH, false, 308),
            (Method::DELETE, false, 308),
            (Method::GET, true, 301),
            (Method::HEAD, true, 308),
            (Method::POST, true, 308),
        ];
        for (method, registry, code) in cases {
            assert_eq!(
                redirect_status(&method, registry).as_u16(),
                code,
                "{method} registry={registry}"
            );
        }
    }

    #[test]
    fn redirect_locations_keep_host_path_query_and_map_ports() {
        // (authority, http listener port, https listener port, expected)
        let cases = [
            ("a.test", 80, 443, "https://a.test/v2/x?y=1"),
            ("a.test:80", 80, 443, "https://a.test/v2/x?y=1"),
            ("a.test", 80, 8443, "https://a.test:8443/v2/x?y=1"),
            ("a.test:8080", 8080, 8443, "https://a.test:8443/v2/x?y=1"),
            ("a.test", 8080, 8443, "https://a.test/v2/x?y=1"), // behind a port mapping
            ("[::1]:8080", 8080, 8443, "https://[::1]:8443/v2/x?y=1"),
            ("[::1]", 80, 443, "https://[::1]/v2/x?y=1"),
        ];
        for (authority, http, https, expected) in cases {
            assert_eq!(
                redirect_location(authority, "/v2/x?y=1", http, https),
                expected,
                "{authority}"
            );
        }
    }
}
