//! Forward auth (`auth.forward`, label `berth.auth.forward`): an auth service — Authelia,
//! Authentik, oauth2-proxy — decides on every request, as with Traefik's `forwardAuth` and
//! nginx's `auth_request`.
//!
//! Phase: `request_filter`, where basic auth would sit (after the HTTPS policy, the
//! allowlist and the rate limit), and before a byte of the request body is read: an upload
//! is never buffered while the service decides. `upstream_request_filter` then sets the
//! headers the service named.
//!
//! The contract (the one Traefik and Authelia publish): berth sends `GET <auth.forward>` with
//! - `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-Uri` and
//!   `X-Forwarded-For`, describing the client's request; from a peer in
//!   `forwarded.trusted-proxies` the values it sent are kept (and `X-Forwarded-For` appended
//!   to), from anyone else they are berth's own. `X-Forwarded-Uri` is the path as berth routes
//!   it (dot segments resolved, `//` merged, escapes of unreserved characters decoded) and
//!   the query as sent, so `/public/../admin` is judged as `/admin`; a path that is not UTF-8
//!   or has a dot segment with parameters (`/..;/`) is refused with 400;
//! - the client's `Cookie` (as one header), `Authorization`, `Accept`, `User-Agent` and
//!   `X-Requested-With` (a session, credentials, and what the service needs to choose
//!   between a 302 to its login page and a 401);
//! - no body.
//!
//! A 2xx answer lets the request through; the headers named in `auth.forward-headers`
//! (default: Authelia's `Remote-User`, `Remote-Groups`, `Remote-Name`, `Remote-Email`) are
//! copied from it onto the upstream request, and whatever the client sent under those names
//! — or under the same names spelled with `_` — is removed first, whether or not the service
//! answered with them. Any other answer (401, 403, a 302 to a login page) goes back to the
//! client as it came: status, headers (`Location`, `Set-Cookie`, `WWW-Authenticate`, ...) and
//! body (up to [`MAX_ANSWER`]). No answer within [`TIMEOUT`], or none at all, is a 503 —
//! never a pass. At most [`MAX_IN_FLIGHT`] questions per route are open at once.
//!
//! With `auth.forward-cache = "30s"` (at most 10 minutes), an allowed decision is reused for
//! that long for the very same question: a SHA-256 of everything the auth request says
//! (method, scheme, host, path and query, client address, cookies, credentials, ...). At
//! most [`CACHE_ENTRIES`] decisions per route. Refusals are never reused, and requests
//! without credentials are always asked about.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pingora_error::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use sha2::{Digest, Sha256};

use crate::plugin::{Flow, Page, Plugin, Reply, RequestCtx};
use berth_core::path::route_path;
use berth_core::route::ForwardAuthSpec;
use berth_core::sync::lock;

/// How long berth waits for the auth service's whole answer.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer body passed back to the client.
pub(crate) const MAX_ANSWER: usize = 64 * 1024;
/// Allowed decisions remembered per route; when it is full, the expired ones go, and if
/// none has expired, all of them.
pub(crate) const CACHE_ENTRIES: usize = 10_000;
/// Questions to the auth service at once per route; more wait (within [`TIMEOUT`]).
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Client request headers passed to the auth service as they are (`Cookie` is passed as one
/// header).
const PASSED: [HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::header::ACCEPT,
    http::header::USER_AGENT,
    HeaderName::from_static("x-requested-with"),
];

/// Answer headers never passed back to the client: they describe the service's connection
/// or a body berth re-frames.
const HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Headers for the upstream request, as the auth service named them.
pub(crate) type UserHeaders = Vec<(HeaderName, HeaderValue)>;

/// This step's slot in [`RequestCtx::slots`]: the headers the service's answer named for
/// the upstream request, once it allowed the request.
#[derive(Debug, Clone)]
struct Allowed(UserHeaders);

/// What the auth service decided.
#[derive(Debug)]
pub enum Decision {
    /// 2xx: pass, with these headers for the upstream.
    Allow(UserHeaders),
    /// Anything else: this answer goes to the client.
    Deny(Reply),
}

/// The forward-auth step of a route.
pub struct ForwardAuth {
    url: http::Uri,
    copied: Vec<HeaderName>,
    cache_for: Option<Duration>,
    cache: Mutex<HashMap<[u8; 32], (Instant, UserHeaders)>>,
    client: Client<HttpConnector, Empty<Bytes>>,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("url", &self.url)
            .field("copied", &self.copied)
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

impl ForwardAuth {
    /// Asks the service of `spec` about every request.
    pub fn new(spec: &ForwardAuthSpec) -> ForwardAuth {
        // The URL was validated with the route; an unparsable one (never) asks "/" on
        // localhost's port 9, which refuses: every request gets a 503, never a pass.
        let url = spec
            .url
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:9/"));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        connector.set_nodelay(true);
        ForwardAuth {
            url,
            copied: spec
                .headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            cache_for: spec.cache,
            cache: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build(connector),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// The request berth sends the auth service for a client request `head` that arrived
    /// from `ctx`'s peer.
    ///
    /// # Errors
    /// What makes the request unfit to be asked about: a path that is not UTF-8, a dot
    /// segment with parameters (`/..;/`, which some servers resolve and others do not), or a
    /// header value that cannot be passed on.
    pub fn auth_request(
        &self,
        head: &RequestHeader,
        ctx: &RequestCtx,
    ) -> std::result::Result<http::Request<Empty<Bytes>>, &'static str> {
        let client = &ctx.downstream.client;
        let sent = |name: &str| {
            client
                .trusted
                .then(|| head.headers.get(name).cloned())
                .flatten()
        };
        let uri = forwarded_uri(head.raw_path())?;
        let value = |v: &str| HeaderValue::from_str(v).map_err(|_| "a value that is not a header");
        let mut request = http::Request::get(self.url.clone())
            .header("x-forwarded-method", head.method.as_str())
            .header(
                "x-forwarded-proto",
                sent("x-forwarded-proto")
                    .unwrap_or(HeaderValue::from_static(ctx.downstream.scheme.as_str())),
            )
            .header(
                "x-forwarded-host",
                match sent("x-forwarded-host") {
                    Some(v) => v,
                    None => value(&ctx.authority)?,
                },
            )
            .header("x-forwarded-uri", value(&uri)?)
            .header("x-forwarded-for", client.forwarded_for(&head.headers));
        // Cookies come as one header, as HTTP/1.1 sends them (HTTP/2 clients split them).
        let cookies: Vec<&[u8]> = head
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if !cookies.is_empty() {
            let joined = HeaderValue::from_bytes(&cookies.join(&b"; "[..]))
                .map_err(|_| "a cookie that is not a header value")?;
            request = request.header(http::header::COOKIE, joined);
        }
        for name in &PASSED {
            for v in head.headers.get_all(name) {
                request = request.header(name, v);
            }
        }
        request
            .body(Empty::new())
            .map_err(|_| "a request that cannot be built")
    }

    /// Asks the service about `request`.
    pub async fn ask(&self, request: http::Request<Empty<Bytes>>) -> Decision {
        match tokio::time::timeout(TIMEOUT, self.exchange(request)).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(why)) => unavailable(&self.url, &why),
            Err(_) => unavailable(
                &self.url,
                &format!("no answer within {} s", TIMEOUT.as_secs()),
            ),
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Empty<Bytes>>,
    ) -> std::result::Result<Decision, String> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "closed".to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        if parts.status.is_success() {
            return Ok(Decision::Allow(self.named(&parts.headers)));
        }
        let mut reply = Reply {
            status: parts.status,
            headers: Vec::new(),
            body,
            page: Page::Verbatim,
        };
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(name) {
                reply.headers.push((name.clone(), value.clone()));
            }
        }
        Ok(Decision::Deny(reply))
    }

    /// The headers of a 2xx answer that go upstream.
    fn named(&self, headers: &HeaderMap) -> UserHeaders {
        self.copied
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect()
    }

    /// The cache key of an auth request: a SHA-256 of everything it tells the service
    /// (method, scheme, host, path and query, client address, cookies, credentials, `Accept`,
    /// `User-Agent`), so a decision is reused only for the very same question. `None` for a
    /// request without credentials, or with the cache off.
    fn cache_key(&self, request: &http::Request<Empty<Bytes>>) -> Option<[u8; 32]> {
        self.cache_for?;
        let headers = request.headers();
        if !headers.contains_key(http::header::AUTHORIZATION)
            && !headers.contains_key(http::header::COOKIE)
        {
            return None;
        }
        let mut h = Sha256::new();
        for (name, value) in headers {
            for part in [name.as_str().as_bytes(), value.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
        }
        Some(h.finalize().into())
    }

    fn cached(&self, key: &[u8; 32]) -> Option<UserHeaders> {
        let mut cache = lock(&self.cache);
        match cache.get(key) {
            Some((until, headers)) if Instant::now() < *until => Some(headers.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: [u8; 32], headers: &[(HeaderName, HeaderValue)]) {
        let Some(ttl) = self.cache_for else { return };
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, (until, _)| *until > now);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now() + ttl, headers.to_vec()));
    }
}

/// `X-Forwarded-Uri`: the path with escapes of unreserved characters decoded (as every
/// upstream reads them: `/%61dmin` is `/admin`) and the query as sent. A path that upstreams
/// read in different ways is refused instead, since the service would judge one reading
/// and the upstream might serve another: dot segments (`..`, `%2e%2e`), empty segments
/// (`//`), encoded slashes and backslashes (`%2F`, `%5C`, `\`), and `;` parameters
/// (`/admin;x/`, `/..;/`, which Java servers strip).
fn forwarded_uri(raw: &[u8]) -> std::result::Result<String, &'static str> {
    let raw = std::str::from_utf8(raw).map_err(|_| "a path that is not UTF-8")?;
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    // An absolute-form target (rewritten before the chain runs; kept for safety): its path.
    let path = if path.starts_with('/') {
        path
    } else {
        let after_scheme = path.split_once("://").map_or(path, |(_, rest)| rest);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    };
    if read_differently(path) {
        return Err("a path that upstreams read in different ways");
    }
    let judged = route_path(path);
    Ok(match query {
        Some(q) => format!("{judged}?{q}"),
        None => judged.into_owned(),
    })
}

/// Whether servers disagree about what `path` names (see [`forwarded_uri`]).
fn read_differently(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if path.contains([';', '\\']) || ["%2f", "%5c", "//"].iter().any(|s| lower.contains(s)) {
        return true;
    }
    lower
        .split('/')
        .skip(1)
        .any(|segment| matches!(segment.replace("%2e", ".").as_str(), "." | ".."))
}

/// An error with its causes (hyper's own message alone says "client error (Connect)").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unavailable(url: &http::Uri, why: &str) -> Decision {
    // The URL without its query, which may carry a secret.
    let service = format!(
        "{}://{}{}",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str()),
        url.path()
    );
    tracing::warn!(auth_service = %service, "forward auth: the auth service failed: {why}");
    Decision::Deny(Reply::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the authentication service is unavailable",
    ))
}

#[async_trait]
impl Plugin for ForwardAuth {
    fn name(&self) -> &'static str {
        "forward-auth"
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Flow> {
        let request = match self.auth_request(session.req_header(), ctx) {
            Ok(r) => r,
            Err(why) => {
                tracing::info!(host = %ctx.host, "forward auth: cannot ask about this request: {why}");
                return Ok(Flow::Respond(Reply::text(
                    StatusCode::BAD_REQUEST,
                    "malformed request",
                )));
            }
        };
        let key = self.cache_key(&request);
        if let Some(headers) = key.as_ref().and_then(|k| self.cached(k)) {
            ctx.slots.insert(Allowed(headers));
            return Ok(Flow::Continue);
        }
        match self.ask(request).await {
            Decision::Allow(headers) => {
                if let Some(key) = key {
                    self.remember(key, &headers);
                }
                ctx.slots.insert(Allowed(headers));
                Ok(Flow::Continue)
            }
            Decision::Deny(reply) => Ok(Flow::Respond(reply)),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The copied names, and the same names spelled with `_` (which CGI, PHP and Rack
        // read as the same variable), are the service's to set.
        let forged: Vec<HeaderName> = upstream_request
            .headers
            .keys()
            .filter(|name| {
                let dashed = name.as_str().replace('_', "-");
                self.copied
                    .iter()
                    .any(|c| c.as_str().replace('_', "-") == dashed)
            })
            .cloned()
            .collect();
        for name in &forged {
            upstream_request.remove_header(name);
        }
        if let Some(Allowed(headers)) = ctx.slots.get::<Allowed>() {
            for (name, value) in headers {
                upstream_request.append_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::client_of;
    use crate::plugin::Scheme;

    fn service() -> ForwardAuth {
        let spec = ForwardAuthSpec {
            url: "http://127.0.0.1:9/verify?secret=x".into(),
            headers: vec!["remote-user".into()],
            cache: Some(Duration::from_secs(60)),
        };
        ForwardAuth::new(&spec)
    }

    /// A request from `peer` with `head`'s headers, when 10.0.0.0/8 are trusted proxies.
    fn ctx(peer: &str, head: &RequestHeader) -> RequestCtx {
        let mut ctx = RequestCtx::new(Scheme::Http);
        let xff: Vec<&str> = head
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect();
        ctx.downstream.client = client_of(&["10.0.0.0/8"], Some(peer), &xff);
        ctx.authority = "app.test:8080".into();
        ctx.host = "app.test".into();
        ctx
    }

    fn head(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("PUT", target.as_bytes(), None).expect("request");
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).expect("header");
        }
        req
    }

    fn header<'a>(r: &'a http::Request<Empty<Bytes>>, name: &str) -> Vec<&'a str> {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("text"))
            .collect()
    }

    const CLAIMS: [(&str, &str); 5] = [
        ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example.com"),
        ("Cookie", "a=1"),
        ("cookie", "b=2"),
    ];

    #[test]
    fn a_trusted_proxys_claims_are_kept_and_anyone_elses_replaced() {
        let forward = service();
        let head = head("/x?y=1", &CLAIMS);
        let r = forward
            .auth_request(&head, &ctx("10.1.1.1", &head))
            .expect("request");
        assert_eq!(header(&r, "x-forwarded-for"), ["198.51.100.7, 10.1.1.1"]);
        assert_eq!(header(&r, "x-forwarded-proto"), ["https"]);
        assert_eq!(header(&r, "x-forwarded-host"), ["app.example.com"]);
        assert_eq!(header(&r, "x-forwarded-method"), ["PUT"]);
        assert_eq!(header(&r, "x-forwarded-uri"), ["/x?y=1"]);
        assert_eq!(header(&r, "cookie"), ["a=1; b=2"], "cookies as one header");
        let r = forward
            .auth_request(&head, &ctx("203.0.113.9", &head))
            .expect("request");
        assert_eq!(header(&r, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(header(&r, "x-forwarded-proto"), ["http"]);
        assert_eq!(header(&r, "x-forwarded-host"), ["app.test:8080"]);
    }

    #[test]
    fn the_service_judges_the_path_the_upstream_serves() {
        let ambiguous: std::result::Result<String, &str> =
            Err("a path that upstreams read in different ways");
        for (sent, judged) in [
            ("/%61dmin/x?q=%2e%2e", Ok("/admin/x?q=%2e%2e".to_string())),
            ("/caf%C3%A9/..x/.y", Ok("/caf%C3%A9/..x/.y".to_string())),
            ("http://app.test/%61dmin?x", Ok("/admin?x".to_string())),
            ("/public/../admin", ambiguous.clone()),
            ("/admin/../public", ambiguous.clone()),
            ("/public/%2e%2E/admin", ambiguous.clone()),
            ("/public/./admin", ambiguous.clone()),
            ("/admin/..", ambiguous.clone()),
            ("/admin%2F..%2Fpublic", ambiguous.clone()),
            ("/public//x", ambiguous.clone()),
            ("/public\\..\\admin", ambiguous.clone()),
            ("/public/%5c../admin", ambiguous.clone()),
            ("/public/..;/admin", ambiguous.clone()),
            ("/admin;x/secret", ambiguous.clone()),
        ] {
            assert_eq!(forwarded_uri(sent.as_bytes()), judged, "{sent}");
        }
        assert_eq!(forwarded_uri(b"/caf\xe9"), Err("a path that is not UTF-8"));
    }

    #[test]
    fn the_cache_key_is_the_whole_question() {
        let forward = service();
        let key = |target: &str, peer: &str, headers: &[(&str, &str)]| {
            let head = head(target, headers);
            let r = forward
                .auth_request(&head, &ctx(peer, &head))
                .expect("request");
            forward.cache_key(&r)
        };
        let cookie = [("Cookie", "session=1")];
        let base = key("/a", "192.0.2.1", &cookie);
        assert!(base.is_some());
        assert_eq!(base, key("/a", "192.0.2.1", &cookie));
        assert_ne!(base, key("/b", "192.0.2.1", &cookie), "path");
        assert_ne!(base, key("/a?x", "192.0.2.1", &cookie), "query");
        assert_ne!(base, key("/a", "192.0.2.2", &cookie), "client");
        assert_ne!(
            base,
            key("/a", "192.0.2.1", &[("Cookie", "session=2")]),
            "cookie"
        );
        let auth = key("/a", "192.0.2.1", &[("Authorization", "Basic YTpi")]);
        assert!(auth.is_some(), "Authorization alone is credentials");
        assert_ne!(
            auth,
            key("/a", "192.0.2.1", &[("Authorization", "Basic YTpj")])
        );
        assert_eq!(
            key("/a", "192.0.2.1", &[]),
            None,
            "no credentials, no cache"
        );
    }
}
