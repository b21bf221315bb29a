//! The certificate feed (`acme.feed`): serves every certificate pair of certs-dir and the ACME
//! account's thumbprint to the edges, as [`berth_core::feed`] describes, to clients that
//! present the bearer token of `acme.feed-token-file`.
//!
//! `GET /v1/certificates` answers the document, sealed with the key derived from the token
//! ([`FeedKeys`]), with its `ETag`. With `If-None-Match` naming
//! the current tag and `?wait=N`, the request is held until the worker publishes a change
//! ([`Published`]) or N seconds (at most 60) pass, then answered `304` if nothing changed. A
//! request without the derived bearer gets `401` and nothing else, and what a client with the
//! bearer gets opens only with the token: private keys never leave readable without it.
//!
//! ```toml
//! [acme]
//! feed = "0.0.0.0:9182"
//! feed-token-file = "/run/secrets/berth-feed-token"
//! ```

use berth_core::contract::CertDir;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::sync::watch;

use berth_core::feed::{
    collect, valid_nonce, FeedDocument, FeedKeys, FEED_PATH, MAX_WAIT_SECS, PROOF_HEADER,
};

/// What the worker publishes to the feed: the account thumbprint, and a counter bumped
/// whenever certificates were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// RFC 7638 thumbprint of the account orders are placed with.
    pub thumbprint: Option<String>,
    /// Bumped after certificates were written.
    pub generation: u64,
}

struct FeedState {
    keys: FeedKeys,
    certs_dir: CertDir,
    published: watch::Receiver<Published>,
    /// Counts documents served that carried a thumbprint.
    served: watch::Sender<u64>,
}

/// Serves the feed on `addr` until the process ends; counts into `served` every document
/// handed out with a thumbprint in it (the worker waits for one before its first order, so
/// the edges can answer the CA). Returns the bound address.
///
/// # Errors
/// When the address cannot be bound or certs-dir cannot be created.
pub async fn serve(
    addr: SocketAddr,
    token: String,
    certs_dir: CertDir,
    published: watch::Receiver<Published>,
    served: watch::Sender<u64>,
) -> std::io::Result<SocketAddr> {
    tokio::fs::create_dir_all(certs_dir.path()).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = Arc::new(FeedState {
        keys: FeedKeys::derive(&token),
        certs_dir,
        published,
        served,
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: do not spin on the error.
                    tracing::warn!("acme feed: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, &req, peer).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A client gets 10 s to send its request head (no slow-loris holding sockets).
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

/// The value of `name` in the query.
fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `wait=N` from the query, capped.
fn wait_of(query: Option<&str>) -> Duration {
    let secs = param(query, "wait")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_WAIT_SECS);
    Duration::from_secs(secs)
}

async fn document(state: &FeedState) -> Option<FeedDocument> {
    let dir = state.certs_dir.clone();
    let thumbprint = state.published.borrow().thumbprint.clone();
    match tokio::task::spawn_blocking(move || collect(&dir, thumbprint)).await {
        Ok(Ok(doc)) => Some(doc),
        Ok(Err(e)) => {
            tracing::warn!(dir = %state.certs_dir.path().display(), "acme feed: cannot read certs-dir: {e}");
            None
        }
        Err(_) => None,
    }
}

async fn answer<B>(state: &FeedState, req: &Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if req.uri().path() != FEED_PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != hyper::Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !state.keys.authorizes(auth) {
        tracing::debug!(%peer, "acme feed: request without the right token refused");
        let mut r = plain(StatusCode::UNAUTHORIZED, "token required\n");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let nonce = match param(req.uri().query(), "nonce") {
        Some(n) if valid_nonce(n) => Some(n.to_string()),
        Some(_) => return plain(StatusCode::BAD_REQUEST, "nonce: 16 to 64 hex digits\n"),
        None => None,
    };
    let known = req
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let deadline = tokio::time::Instant::now() + wait_of(req.uri().query());
    let mut published = state.published.clone();
    published.mark_unchanged();
    loop {
        let Some(mut doc) = document(state).await else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "certs-dir unreadable\n");
        };
        let etag = doc.etag();
        if known.as_deref() != Some(etag.as_str()) {
            doc.request_nonce = nonce;
            let body = match state.keys.seal(&doc) {
                Ok(b) => b,
                Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR, "sealing failed\n"),
            };
            tracing::debug!(%peer, certificates = doc.certificates.len(), "acme feed: document sent");
            if doc.thumbprint.is_some() {
                state.served.send_modify(|n| *n += 1);
            }
            return Response::builder()
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .header(hyper::header::ETAG, etag)
                .header(hyper::header::CACHE_CONTROL, "no-store")
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default();
        }
        // Unchanged: hold the request until the worker publishes or the wait runs out.
        let changed = tokio::time::timeout_at(deadline, published.changed()).await;
        match changed {
            Ok(Ok(())) => {
                published.mark_unchanged();
            }
            Ok(Err(_)) | Err(_) => {
                let mut r = plain(StatusCode::NOT_MODIFIED, "");
                if let Ok(v) = hyper::header::HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(hyper::header::ETAG, v);
                }
                // "Unchanged", authenticated like a document: bound to this request's nonce
                // and the tag the edge named.
                let proof = nonce
                    .as_deref()
                    .and_then(|n| state.keys.prove_unchanged(n, &etag).ok())
                    .and_then(|p| hyper::header::HeaderValue::from_str(&p).ok());
                if let Some(proof) = proof {
                    r.headers_mut().insert(PROOF_HEADER, proof);
                }
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_read_and_capped() {
        assert_eq!(wait_of(None), Duration::ZERO);
        assert_eq!(wait_of(Some("wait=25")), Duration::from_secs(25));
        assert_eq!(wait_of(Some("a=1&wait=7")), Duration::from_secs(7));
        assert_eq!(
            wait_of(Some("wait=9999")),
            Duration::from_secs(MAX_WAIT_SECS)
        );
        assert_eq!(wait_of(Some("wait=x")), Duration::ZERO);
        assert_eq!(wait_of(Some("nowait=5")), Duration::ZERO);
        assert_eq!(param(Some("wait=1&nonce=ab"), "nonce"), Some("ab"));
    }
}
