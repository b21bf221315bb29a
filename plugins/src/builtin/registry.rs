//! The registry profile (`profile = "registry"`): what a Docker registry (distribution)
//! needs from a proxy, in one word. The settings part (unlimited body, 900 s read timeout)
//! is applied when the route is validated; this plugin does the rest.
//!
//! Phases: `upstream_peer` (HTTP/1.1 to the registry), `upstream_response_filter` (a
//! `Location` that the registry built with the wrong scheme, host or port — because it saw
//! its own address or plain HTTP — is rewritten to what the client used),
//! `response_filter` (`Docker-Distribution-Api-Version: registry/2.0` on responses berth
//! generates itself, so `docker` reads berth's 413/502/504 as registry errors).
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! ```

use std::net::SocketAddr;

use http::Uri;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::plugin::{Plugin, RequestCtx, Scheme};

/// Header name and value the registry API uses to identify itself.
pub const DISTRIBUTION_API_VERSION: (&str, &str) =
    ("docker-distribution-api-version", "registry/2.0");

/// Whether a request is a blob upload of the registry API: `PATCH`, `PUT` or `POST` under
/// `/v2/<name>/blobs/uploads/` (callers count it when it carried body bytes).
pub fn is_blob_upload(method: &http::Method, path: &str) -> bool {
    let writes = matches!(
        *method,
        http::Method::PATCH | http::Method::PUT | http::Method::POST
    );
    writes
        && path
            .strip_prefix("/v2/")
            .and_then(|rest| rest.find("/blobs/uploads/"))
            .is_some_and(|at| at > 0)
}

/// How a blob upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadResult {
    /// The registry took it (2xx/3xx).
    Completed,
    /// The client went away or stalled mid-upload.
    ClientAborted,
    /// Refused with a 4xx (auth, range, size limit).
    Rejected,
    /// The registry failed, vanished or timed out.
    UpstreamError,
}

impl UploadResult {
    /// Classifies an upload by the status sent to the client and the error that ended it.
    pub fn of(status: u16, error: Option<&pingora_error::Error>) -> UploadResult {
        let downstream =
            error.is_some_and(|e| *e.esource() == pingora_error::ErrorSource::Downstream);
        match (error, status) {
            (None, 100..=399) => UploadResult::Completed,
            _ if downstream => UploadResult::ClientAborted,
            (_, 400..=499) => UploadResult::Rejected,
            _ => UploadResult::UpstreamError,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadResult::Completed => "completed",
            UploadResult::ClientAborted => "client_aborted",
            UploadResult::Rejected => "rejected",
            UploadResult::UpstreamError => "upstream_error",
        }
    }
}

/// The registry profile's plugin.
#[derive(Debug)]
pub struct RegistryProfile;

/// Rewrites an absolute `Location` that points at the request's own host (under any scheme
/// or port) or at the upstream's address, so that it uses the scheme and authority the client
/// used. Relative locations and locations on other hosts (storage redirects) are left alone.
/// Returns `None` when nothing changes.
pub fn rewrite_location(
    location: &str,
    scheme: Scheme,
    authority: &str,
    host: &str,
    upstream: Option<SocketAddr>,
) -> Option<String> {
    let uri: Uri = location.parse().ok()?;
    let loc_authority = uri.authority()?;
    let loc_host = loc_authority
        .host()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let is_upstream = upstream.is_some_and(|u| {
        let ip = match u {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        loc_host == ip && loc_authority.port_u16().is_none_or(|p| p == u.port())
    });
    if loc_host != host && !is_upstream {
        return None;
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let rewritten = format!("{}://{authority}{path}", scheme.as_str());
    (rewritten != location).then_some(rewritten)
}

impl Plugin for RegistryProfile {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn upstream_peer(&self, peer: &mut HttpPeer, _ctx: &RequestCtx) {
        peer.options.alpn = ALPN::H1;
    }

    fn upstream_response_filter(
        &self,
        _session: &Session,
        upstream_response: &mut ResponseHeader,
        ctx: &RequestCtx,
    ) -> Result<()> {
        let location = upstream_response
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        if let Some(new) = location.and_then(|l| {
            rewrite_location(
                l,
                ctx.downstream.scheme,
                &ctx.authority,
                &ctx.host,
                ctx.upstream,
            )
        }) {
            upstream_response.insert_header(http::header::LOCATION, new)?;
        }
        Ok(())
    }

    fn response_filter(
        &self,
        _session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.generated {
            response.insert_header(DISTRIBUTION_API_VERSION.0, DISTRIBUTION_API_VERSION.1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_uploads_are_recognised() {
        use http::Method;
        let yes = [
            (Method::PATCH, "/v2/app/blobs/uploads/3f1c"),
            (Method::PUT, "/v2/team/app/blobs/uploads/3f1c"),
            (Method::POST, "/v2/app/blobs/uploads/"),
        ];
        for (m, p) in yes {
            assert!(is_blob_upload(&m, p), "{m} {p}");
        }
        let no = [
            (Method::GET, "/v2/app/blobs/uploads/3f1c"),
            (Method::PUT, "/v2/app/manifests/v1"),
            (Method::PATCH, "/v2//blobs/uploads/x"),
            (Method::PATCH, "/other/app/blobs/uploads/x"),
        ];
        for (m, p) in no {
            assert!(!is_blob_upload(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn upload_results() {
        use pingora_error::{Error, ErrorSource, ErrorType};
        let down = Error::create(
            ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
            None,
            None,
        );
        let up = Error::create(ErrorType::ReadTimedout, ErrorSource::Upstream, None, None);
        assert_eq!(UploadResult::of(202, None), UploadResult::Completed);
        assert_eq!(
            UploadResult::of(0, Some(&down)),
            UploadResult::ClientAborted
        );
        assert_eq!(UploadResult::of(401, None), UploadResult::Rejected);
        assert_eq!(
            UploadResult::of(504, Some(&up)),
            UploadResult::UpstreamError
        );
        assert_eq!(UploadResult::of(500, None), UploadResult::UpstreamError);
    }

    #[test]
    fn locations_are_rewritten_to_what_the_client_used() {
        let up: Option<SocketAddr> = Some("127.0.0.1:5000".parse().expect("addr"));
        let uuid = "/v2/lib/blobs/uploads/0f3c?_state=abc";
        let cases = [
            // registry saw plain http: scheme fixed
            (
                format!("http://reg.example.com{uuid}"),
                Some(format!("https://reg.example.com:8443{uuid}")),
            ),
            // registry built the URL from its own address
            (
                format!("http://127.0.0.1:5000{uuid}"),
                Some(format!("https://reg.example.com:8443{uuid}")),
            ),
            // wrong port
            (
                format!("https://reg.example.com:5000{uuid}"),
                Some(format!("https://reg.example.com:8443{uuid}")),
            ),
            // already right
            (format!("https://reg.example.com:8443{uuid}"), None),
            // relative: left alone
            (uuid.to_string(), None),
            // a storage redirect elsewhere: left alone
            ("https://s3.example.net/bucket/blob?sig=1".to_string(), None),
            // another port on the upstream's IP is not the upstream
            (format!("http://127.0.0.1:9000{uuid}"), None),
        ];
        for (location, expected) in cases {
            assert_eq!(
                rewrite_location(
                    &location,
                    Scheme::Https,
                    "reg.example.com:8443",
                    "reg.example.com",
                    up
                ),
                expected,
                "{location}"
            );
        }
    }
}
