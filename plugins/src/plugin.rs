//! The plugin API: one trait whose hooks carry the names of Pingora's phases, a result enum
//! instead of bare booleans, and the per-request context every plugin shares.
//!
//! A plugin instance is built and validated once, when a route is built from config
//! ([`crate::chain::build_chain`]); per-request state lives in [`RequestCtx`]. The proxy's
//! `ProxyHttp` implementation calls each hook on every plugin of the route's chain, in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::chain::Route;
use crate::client::Client;

/// What a hook wants to happen next.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin and phase.
    Continue,
    /// Stop and answer the client with this response; nothing goes upstream.
    Respond(Reply),
}

/// A response that berth generates itself (errors, redirects).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Extra headers (`Content-Type` and `Content-Length` are added when written).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Short plain-text body.
    pub body: Bytes,
    /// Which of the operator's pages stands for this reply ([`crate::pages`]).
    pub page: Page,
}

/// Which of the operator's pages (`error-pages`) a reply is shown as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The status code's (`502.html`): berth's own answers.
    Status,
    /// `maintenance.html`, else the status code's.
    Maintenance,
    /// The `[defaults]` pages, whatever the route: an answer that stands for "no route".
    NoRoute,
    /// None: the reply is someone else's answer, sent as it is (a forward-auth service's).
    Verbatim,
}

impl Reply {
    /// A plain-text reply: `"<code> <reason>: <detail>\n"`.
    pub fn text(status: StatusCode, detail: &str) -> Reply {
        let reason = status.canonical_reason().unwrap_or("");
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::from(format!("{} {reason}: {detail}\n", status.as_u16())),
            page: Page::Status,
        }
    }

    /// The answer for a request no route serves: 503 with a short body. Routes that refuse a
    /// scheme (`nohttp`, `nohttps`) answer the same, so a refusal looks like an unknown host.
    pub fn no_route() -> Reply {
        let mut reply = Reply::text(StatusCode::SERVICE_UNAVAILABLE, "no route for this host");
        reply.page = Page::NoRoute;
        reply
    }

    /// Builds the response header (status, extra headers, `Content-Type` unless they have
    /// one, `Content-Length`).
    ///
    /// # Errors
    /// Fails only if a header cannot be inserted (never for the values berth generates).
    pub fn header(&self) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(self.headers.len() + 3))?;
        for (name, value) in &self.headers {
            resp.append_header(name.clone(), value.clone())?;
        }
        if !self
            .headers
            .iter()
            .any(|(name, _)| name == http::header::CONTENT_TYPE)
        {
            resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        }
        resp.insert_header(http::header::CONTENT_LENGTH, self.body.len().to_string())?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        Ok(resp)
    }
}

/// The scheme of the listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What berth knows about the downstream side of a request.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// Scheme of the listener.
    pub scheme: Scheme,
    /// Who the client is: the peer, whether it is trusted, the effective address
    /// (worked out once, before routing).
    pub client: Client,
    /// Local port of the listener the request arrived on.
    pub local_port: u16,
}

/// Per-request state shared by the proxy loop and the plugins (Pingora's `CTX`).
#[derive(Debug)]
pub struct RequestCtx {
    /// Where the request came from.
    pub downstream: Downstream,
    /// The request's host name, lowercase, without port.
    pub host: String,
    /// The authority the client used (`Host` header or absolute-form target), with its port.
    pub authority: String,
    /// The matched route, once routing has run.
    pub route: Option<Arc<Route>>,
    /// Request body bytes received from the client so far.
    pub body_bytes: u64,
    /// When the first request body byte arrived.
    pub body_started: Option<Instant>,
    /// When berth began to wait for the request body: once every request filter passed.
    pub body_wait_began: Option<Instant>,
    /// Where the next attempt starts looking, as an offset from `first_upstream`: past every
    /// upstream that could not be connected to so far. (A retry after a reused connection
    /// failed stays on the same upstream.)
    pub tries: usize,
    /// The index of the current attempt's upstream in its route.
    pub upstream_index: Option<usize>,
    /// Index of the first upstream tried (round robin start).
    pub first_upstream: usize,
    /// The upstream of the current attempt.
    pub upstream: Option<SocketAddr>,
    /// When the current upstream connection attempt began.
    pub connect_started: Option<Instant>,
    /// A reply a body hook asked for, sent by the proxy's error handler.
    pub pending_reply: Option<Reply>,
    /// True while a response that berth generated itself is being filtered.
    pub generated: bool,
    /// Plugins' own state for this request, one typed slot per plugin that keeps any: a
    /// plugin stores a type of its own module (which nothing else can name) and offers
    /// what others may read as functions (`RateLimiter::refused`).
    pub slots: http::Extensions,
    /// When the request started.
    pub started: Instant,
}

impl RequestCtx {
    /// A fresh context for a request on a listener of `scheme`.
    pub fn new(scheme: Scheme) -> RequestCtx {
        RequestCtx {
            downstream: Downstream {
                scheme,
                client: Client::default(),
                local_port: 0,
            },
            host: String::new(),
            authority: String::new(),
            route: None,
            body_bytes: 0,
            body_started: None,
            body_wait_began: None,
            tries: 0,
            upstream_index: None,
            first_upstream: 0,
            upstream: None,
            connect_started: None,
            pending_reply: None,
            generated: false,
            slots: http::Extensions::new(),
            started: Instant::now(),
        }
    }
}

/// A step in a route's chain. Every hook defaults to doing nothing.
///
/// Hooks run in chain order (see [`crate::chain::build_chain`]) in these phases:
/// `request_filter` (after routing, before anything goes upstream), `upstream_peer` (adjust
/// the connection to the chosen upstream), `upstream_request_filter` (headers sent upstream),
/// `request_body_filter` (each body chunk from the client), `upstream_response_filter` (the
/// upstream's response header), `response_filter` (every response header sent to the client,
/// including berth's own, with [`RequestCtx::generated`] set), `response_body_filter` (each
/// chunk of an upstream's response body), `logging` (once at the end).
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Short name for logs and `/routes`.
    fn name(&self) -> &'static str;

    /// Inspects the request before anything is sent upstream.
    async fn request_filter(&self, _session: &mut Session, _ctx: &mut RequestCtx) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Adjusts the connection to the chosen upstream (timeouts, TLS options).
    fn upstream_peer(&self, _peer: &mut HttpPeer, _ctx: &RequestCtx) {}

    /// Rewrites the request header sent upstream.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees each chunk of the request body; [`RequestCtx::body_bytes`] already counts it.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<Flow> {
        Ok(Flow::Continue)
    }

    /// Rewrites the upstream's response header.
    fn upstream_response_filter(
        &self,
        _session: &Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &RequestCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Rewrites every response header sent to the client.
    fn response_filter(
        &self,
        _session: &Session,
        _response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Rewrites each chunk of an upstream's response body on its way to the client (berth's
    /// own answers are written whole and pass no step); `end_of_stream` marks the last call.
    fn response_body_filter(
        &self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Runs once when the request is done, with the error that ended it, if any.
    async fn logging(&self, _session: &mut Session, _error: Option<&Error>, _ctx: &mut RequestCtx) {
    }
}
