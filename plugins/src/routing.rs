//! Routing, step one: which host a request is for, and refusing what berth never proxies.
//!
//! Runs first in the proxy's `request_filter`, before the route (and so its chain) is known.
//! berth is never an open proxy: `CONNECT` is refused with 405, and an absolute-form target
//! (`GET http://other.example/ HTTP/1.1`) names the host that is routed — a host berth has
//! no route for gets the same 503 as an unknown `Host`. The host is compared lowercase,
//! without port and without a trailing dot; the path is compared normalised
//! ([`berth_core::path::route_path`]).

use http::{Method, StatusCode};
use pingora_http::RequestHeader;

use berth_core::route::host_of;

use crate::plugin::Reply;

/// The routing key of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name, lowercase, without port and trailing dot (IPv6 literals keep brackets).
    pub host: String,
    /// The authority as the client sent it (with its port), for `Host`-preserving upstreams.
    pub authority: String,
    /// Whether the request line used absolute form (the proxy turns it into origin form).
    pub absolute_form: bool,
}

fn bad_request(detail: &str) -> Reply {
    Reply::text(StatusCode::BAD_REQUEST, detail)
}

/// Finds the host a request is for.
///
/// # Errors
/// Returns the reply to send instead: 405 for `CONNECT`, 400 for a missing, repeated or
/// malformed `Host`, an absolute-form target with a scheme other than http(s), or an
/// HTTP/1.0 request with `Transfer-Encoding`.
pub fn request_target(req: &RequestHeader) -> Result<Target, Reply> {
    if req.method == Method::CONNECT {
        let mut reply = Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: berth is a reverse proxy, not a forward proxy",
        );
        reply.headers.push((
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        ));
        return Err(reply);
    }
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing. Pingora
    // would forward it, and the upstream might read its body differently: refuse it.
    if req.version == http::Version::HTTP_10
        && req.headers.contains_key(http::header::TRANSFER_ENCODING)
    {
        return Err(bad_request(
            "Transfer-Encoding in an HTTP/1.0 request (ambiguous framing)",
        ));
    }
    let (authority, absolute_form) = if let Some(a) = req.uri.authority() {
        // HTTP/2: Pingora builds the URI from `:scheme` and `:authority`.
        (a.as_str().to_string(), false)
    } else if let Some(uri) = absolute_target(req.raw_path())? {
        let authority = uri
            .authority()
            .ok_or_else(|| bad_request("absolute-form target without a host"))?;
        (authority.as_str().to_string(), true)
    } else {
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => h,
            (None, _) => return Err(bad_request("missing Host header")),
            (Some(_), Some(_)) => return Err(bad_request("more than one Host header")),
        };
        let host = host
            .to_str()
            .map_err(|_| bad_request("Host header is not ASCII"))?;
        (host.trim().to_string(), false)
    };
    let host = host_of(&authority).ok_or_else(|| bad_request("malformed Host"))?;
    Ok(Target {
        host,
        authority,
        absolute_form,
    })
}

/// Parses an HTTP/1 absolute-form request target (`http://host/path`); `None` for origin-form
/// (`/path`) and asterisk-form (`*`). Pingora keeps such a target verbatim in the raw path.
fn absolute_target(raw: &[u8]) -> Result<Option<http::Uri>, Reply> {
    if raw.first().is_none_or(|b| *b == b'/' || *b == b'*') {
        return Ok(None);
    }
    let uri = http::Uri::try_from(raw).map_err(|_| bad_request("malformed request target"))?;
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http") | Some("https") => Ok(Some(uri)),
        _ => Err(bad_request("request target must be an http or https URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, hosts: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).expect("request");
        for h in hosts {
            r.append_header("host", *h).expect("host");
        }
        r
    }

    #[test]
    fn targets() {
        let t = request_target(&req("GET", "/v2/", &["Reg.Example.com:8080"])).expect("ok");
        assert_eq!(
            t,
            Target {
                host: "reg.example.com".into(),
                authority: "Reg.Example.com:8080".into(),
                absolute_form: false
            }
        );
        let t = request_target(&req("GET", "http://other.test:81/x", &["reg.example.com"]))
            .expect("ok");
        assert_eq!((t.host.as_str(), t.absolute_form), ("other.test", true));
    }

    fn http10_chunked() -> RequestHeader {
        let mut r = req("POST", "/", &["a.test"]);
        r.set_version(http::Version::HTTP_10);
        r.append_header("transfer-encoding", "chunked").expect("te");
        r
    }

    #[test]
    fn refusals() {
        let cases = [
            (req("CONNECT", "evil.test:443", &["evil.test:443"]), 405),
            (req("GET", "/", &[]), 400),
            (req("GET", "/", &["a.test", "b.test"]), 400),
            (req("GET", "ftp://a.test/", &["a.test"]), 400),
            (req("GET", "/", &["a b"]), 400),
            (http10_chunked(), 400),
        ];
        for (r, code) in cases {
            let reply = request_target(&r).expect_err("refused");
            assert_eq!(reply.status.as_u16(), code, "{} {}", r.method, r.uri);
        }
    }
}
