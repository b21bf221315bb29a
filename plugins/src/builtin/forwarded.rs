//! Forwarding headers: tell the upstream who the client is and how it reached berth.
//!
//! Phase: `upstream_request_filter`. `Host` passes unchanged (with its port). Sets
//! `X-Real-IP` (always: the client's address, [`crate::client`], or none when a trusted
//! proxy named no readable client), `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host`, `X-Forwarded-Port` and `X-Forwarded-Ssl`. The others the client sent
//! are kept only when the peer is inside `forwarded.trusted-proxies` (then berth appends to
//! `X-Forwarded-For`);
//! anyone else's are overwritten, and the headers frameworks take as the request's path,
//! scheme or client address ([`UNTRUSTED_OVERRIDES`]: `Forwarded`, `X-Original-URL`,
//! `True-Client-IP`, ...) are dropped. Any of these spelled with `_` for `-` is dropped
//! whoever sent it (CGI, WSGI and PHP read both spellings as one variable). The `Proxy`
//! request header is always dropped (httpoxy). `X-Client-Cert-Subject` is berth's alone:
//! removed from every request, trusted proxy or not, and set to the subject of the
//! client certificate the route verified ([`super::ClientCert`]), if any.
//!
//! ```toml
//! [forwarded]
//! trusted-proxies = ["10.0.0.0/8"]
//! ```

use async_trait::async_trait;
use pingora_error::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::client_cert::{ClientCert, SUBJECT_HEADER};
use crate::plugin::{Downstream, Plugin, RequestCtx};

const X_REAL_IP: &str = "x-real-ip";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_FORWARDED_SSL: &str = "x-forwarded-ssl";

/// Headers that frameworks read as the request's path (`X-Original-URL`, `X-Rewrite-URL`:
/// IIS rewrite, Symfony, Laminas; `X-Forwarded-URI`, `X-Original-URI`, `X-Forwarded-Path`,
/// `X-Envoy-Original-Path`: auth proxies and meshes), its host (`X-Original-Host`, `X-Host`,
/// `X-Forwarded-Server`), its scheme or prefix (`X-Forwarded-Scheme`, `X-Forwarded-Prefix`:
/// Rails, Spring, ASP.NET; `X-Forwarded-Protocol`, `X-Url-Scheme`, `Front-End-Https`:
/// gunicorn, Rack), its method (`X-HTTP-Method-Override`, `X-HTTP-Method`,
/// `X-Method-Override`, `X-Original-Method`, `X-Forwarded-Method`: Express, Symfony,
/// ASP.NET, auth proxies — berth's access rules judge the method as sent), or the client's address (`True-Client-IP`, `X-Client-IP`, `CF-Connecting-IP`,
/// `Client-IP`, `X-Cluster-Client-IP`, `Fastly-Client-IP`), besides RFC 7239's `Forwarded`:
/// berth sets none of them, so only a trusted proxy's are passed on.
pub(crate) const UNTRUSTED_OVERRIDES: &[&str] = &[
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-original-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    "x-original-host",
    "x-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-protocol",
    "x-url-scheme",
    "front-end-https",
    "x-forwarded-prefix",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "client-ip",
    "x-cluster-client-ip",
    "fastly-client-ip",
];

/// The forwarding headers berth sets itself.
const SET_BY_BERTH: &[&str] = &[
    X_REAL_IP,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_SSL,
];

/// Sets the forwarding headers, trusting client-sent ones only from configured peers.
#[derive(Debug)]
pub struct Forwarded;

/// Rewrites the forwarding headers of `req` for a request that arrived from `downstream`
/// with `authority` (the `Host` the client used).
///
/// # Errors
/// Fails only if a header value cannot be built (never for addresses and ports).
pub fn forward_headers(
    req: &mut RequestHeader,
    downstream: &Downstream,
    authority: &str,
) -> Result<()> {
    let client = &downstream.client;
    let trusted = client.trusted;
    req.remove_header("proxy");
    req.remove_header(SUBJECT_HEADER);
    // `X_Forwarded_For` and friends: the same variable as the dashed name to CGI and WSGI.
    let underscored: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| {
            let dashed = name.as_str().replace('_', "-");
            SET_BY_BERTH.contains(&dashed.as_str())
                || UNTRUSTED_OVERRIDES.contains(&dashed.as_str())
                || dashed == SUBJECT_HEADER
        })
        .cloned()
        .collect();
    for name in underscored {
        req.remove_header(&name);
    }
    let kept = |req: &RequestHeader, name: &str| trusted && req.headers.contains_key(name);

    // X-Real-IP is always berth's: the client it judged the request by, or none.
    match client.real_ip() {
        Some(ip) => req.insert_header(X_REAL_IP, ip)?,
        None => {
            req.remove_header(X_REAL_IP);
        }
    }
    let xff = client.forwarded_for(&req.headers);
    req.insert_header(X_FORWARDED_FOR, xff)?;
    if !kept(req, X_FORWARDED_PROTO) {
        req.insert_header(X_FORWARDED_PROTO, downstream.scheme.as_str())?;
    }
    if !kept(req, X_FORWARDED_HOST) {
        req.insert_header(X_FORWARDED_HOST, authority)?;
    }
    if !kept(req, X_FORWARDED_PORT) {
        req.insert_header(X_FORWARDED_PORT, downstream.local_port.to_string())?;
    }
    if !kept(req, X_FORWARDED_SSL) {
        let ssl = if downstream.scheme == crate::plugin::Scheme::Https {
            "on"
        } else {
            "off"
        };
        req.insert_header(X_FORWARDED_SSL, ssl)?;
    }
    if !trusted {
        for name in UNTRUSTED_OVERRIDES {
            req.remove_header(*name);
        }
    }
    Ok(())
}

#[async_trait]
impl Plugin for Forwarded {
    fn name(&self) -> &'static str {
        "forwarded"
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        forward_headers(upstream_request, &ctx.downstream, &ctx.authority)?;
        if let Some(identity) = ClientCert::identity(ctx) {
            upstream_request.insert_header(SUBJECT_HEADER, identity.subject.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::TrustedProxies;
    use crate::plugin::Scheme;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("PUT", b"/v2/x", None).expect("request");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        req
    }

    fn get(req: &RequestHeader, name: &str) -> Option<String> {
        let all: Vec<_> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_string())
            .collect();
        (!all.is_empty()).then(|| all.join(" | "))
    }

    /// A request from 192.0.2.10 on a listener of `scheme`; `trusted`: whether that peer is
    /// a trusted proxy.
    fn downstream(scheme: Scheme, req: &RequestHeader, trusted: bool) -> Downstream {
        let nets: Vec<ipnet::IpNet> = if trusted {
            vec!["192.0.2.0/24".parse().expect("net")]
        } else {
            Vec::new()
        };
        let peer = Some("192.0.2.10".parse().expect("ip"));
        Downstream {
            scheme,
            client: TrustedProxies::new(nets).client(peer, &req.headers),
            local_port: 8443,
        }
    }

    const SPOOFED: &[(&str, &str)] = &[
        ("Host", "reg.example.com:8443"),
        ("X-Real-IP", "7.7.7.7"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Forwarded-Port", "1"),
        ("X-Forwarded-Ssl", "on"),
        ("Forwarded", "for=6.6.6.6"),
        ("Proxy", "http://evil.test:8080"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Forwarded-Prefix", "/admin"),
        ("True-Client-IP", "6.6.6.6"),
        ("X-Client-IP", "6.6.6.6"),
        ("CF-Connecting-IP", "6.6.6.6"),
        ("X-Forwarded-URI", "/admin"),
        ("X-Original-URI", "/admin"),
        ("X-Forwarded-Path", "/admin"),
        ("X-Envoy-Original-Path", "/admin"),
        ("X-Original-Host", "evil.test"),
        ("X-Host", "evil.test"),
        ("X-Forwarded-Server", "evil.test"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("Client-IP", "6.6.6.6"),
        ("X-Cluster-Client-IP", "6.6.6.6"),
        ("Fastly-Client-IP", "6.6.6.6"),
        ("X-Forwarded-Protocol", "https"),
        ("X-Url-Scheme", "https"),
        ("Front-End-Https", "on"),
        ("X-Original-Method", "DELETE"),
        ("X-Forwarded-Method", "DELETE"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Original_URL", "/admin"),
        ("True_Client_IP", "6.6.6.6"),
    ];

    #[test]
    fn untrusted_peer_gets_every_header_overwritten() {
        let mut req = request(SPOOFED);
        let from = downstream(Scheme::Http, &req, false);
        forward_headers(&mut req, &from, "reg.example.com:8443").expect("rewrite");
        let expected = [
            ("host", Some("reg.example.com:8443")),
            ("x-real-ip", Some("192.0.2.10")),
            ("x-forwarded-for", Some("192.0.2.10")),
            ("x-forwarded-proto", Some("http")),
            ("x-forwarded-host", Some("reg.example.com:8443")),
            ("x-forwarded-port", Some("8443")),
            ("x-forwarded-ssl", Some("off")),
            ("forwarded", None),
            ("proxy", None),
            ("x-original-url", None),
            ("x-rewrite-url", None),
            ("x-forwarded-scheme", None),
            ("x-forwarded-prefix", None),
            ("true-client-ip", None),
            ("x-client-ip", None),
            ("cf-connecting-ip", None),
            ("x-forwarded-uri", None),
            ("x-original-uri", None),
            ("x-forwarded-path", None),
            ("x-envoy-original-path", None),
            ("x-original-host", None),
            ("x-host", None),
            ("x-forwarded-server", None),
            ("x-http-method-override", None),
            ("x-http-method", None),
            ("x-method-override", None),
            ("client-ip", None),
            ("x-cluster-client-ip", None),
            ("fastly-client-ip", None),
            ("x-forwarded-protocol", None),
            ("x-url-scheme", None),
            ("front-end-https", None),
            ("x-original-method", None),
            ("x-forwarded-method", None),
            ("x_forwarded_for", None),
            ("x_original_url", None),
            ("true_client_ip", None),
        ];
        for (name, value) in expected {
            assert_eq!(get(&req, name).as_deref(), value, "{name}");
        }
    }

    #[test]
    fn trusted_peer_keeps_its_headers_and_xff_is_appended() {
        let mut req = request(SPOOFED);
        let from = downstream(Scheme::Https, &req, true);
        forward_headers(&mut req, &from, "ignored").expect("rewrite");
        let expected = [
            // The client the proxy named, not the X-Real-IP it passed on.
            ("x-real-ip", Some("6.6.6.6")),
            ("x-forwarded-for", Some("6.6.6.6, 192.0.2.10")),
            ("x-forwarded-proto", Some("gopher")),
            ("x-forwarded-host", Some("evil.test")),
            ("x-forwarded-port", Some("1")),
            ("forwarded", Some("for=6.6.6.6")),
            ("proxy", None),
            ("x-original-url", Some("/admin")),
            ("true-client-ip", Some("6.6.6.6")),
            ("cf-connecting-ip", Some("6.6.6.6")),
            ("x-http-method-override", Some("DELETE")),
            ("x-forwarded-uri", Some("/admin")),
            ("x_forwarded_for", None),
            ("x_original_url", None),
        ];
        for (name, value) in expected {
            assert_eq!(get(&req, name).as_deref(), value, "{name}");
        }
    }

    #[test]
    fn trusted_peer_without_headers_gets_them_set() {
        let mut req = request(&[
            ("Host", "a.test"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
        ]);
        let from = downstream(Scheme::Https, &req, true);
        forward_headers(&mut req, &from, "a.test").expect("rewrite");
        assert_eq!(
            get(&req, "x-forwarded-for").as_deref(),
            Some("10.0.0.1, 10.0.0.2, 192.0.2.10")
        );
        assert_eq!(get(&req, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(get(&req, "x-forwarded-ssl").as_deref(), Some("on"));
        // X-Real-IP is the client the proxy named, not the proxy.
        assert_eq!(get(&req, "x-real-ip").as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn a_trusted_proxy_that_names_nobody_gets_no_real_ip() {
        let mut req = request(&[("X-Forwarded-For", "unknown"), ("X-Real-IP", "10.0.0.9")]);
        let from = downstream(Scheme::Http, &req, true);
        forward_headers(&mut req, &from, "a.test").expect("rewrite");
        assert_eq!(
            get(&req, "x-forwarded-for").as_deref(),
            Some("unknown, 192.0.2.10")
        );
        assert_eq!(get(&req, "x-real-ip"), None);
    }
}
