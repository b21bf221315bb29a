//! The certificate feed mirror (`tls.feed`): on an edge that shares no filesystem with
//! `berth-acme`, a background service fetches berth-acme's feed ([`berth_core::feed`]) and
//! writes every certificate pair into this edge's own certs-dir (atomically, key first),
//! where the certificate watcher hot-loads it like any other file. It also keeps the ACME
//! account's thumbprint, with which the HTTP listener answers HTTP-01 challenges itself.
//!
//! The first fetch happens at start; after that the service asks with the last `ETag` and
//! `?wait=`, so the feed answers the moment something changes (a renewal reaches every edge
//! at once) and otherwise after [`WAIT`]. Only authenticated answers count: a document sealed
//! for this request, or a `304` in answer to this edge's `If-None-Match` whose proof opens
//! ([`berth_core::feed::FeedKeys::unchanged_proven`]). A `304` without one is refused, and the
//! next request asks for the whole document. When the feed cannot be reached (or answers
//! nothing authenticated) the edge keeps serving what it has and retries with backoff; the
//! failure is logged once, and so is the recovery; `berth_cert_feed_connected` is 1 only
//! after an authenticated answer, and [`STALE_AFTER`] without one is a warning.
//!
//! ```toml
//! [tls]
//! certs-dir = "/var/lib/berth/certs"
//! feed = "http://berth-acme:9182"
//! feed-token-file = "/run/secrets/berth-feed-token"
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use berth_core::config::CertFeed;
use berth_core::contract::CertDir;
use berth_core::feed::{
    mirror, printable, request_nonce, valid_thumbprint, FeedDocument, FeedKeys, FEED_PATH,
    MAX_DOCUMENT_BYTES, PROOF_HEADER,
};

/// How long the feed may hold a request before answering "unchanged".
pub const WAIT: Duration = Duration::from_secs(30);
/// Time allowed to connect to the feed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an answer beyond the wait.
const ANSWER_SLACK: Duration = Duration::from_secs(15);
/// How long an edge goes without an authenticated answer before it warns.
pub const STALE_AFTER: Duration = Duration::from_secs(180);
/// First and longest wait between attempts after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Whether the last exchange with the feed succeeded, for `/metrics`.
#[derive(Debug, Default)]
pub struct FeedStatus {
    connected: AtomicBool,
}

impl FeedStatus {
    /// Whether the last fetch got an answer.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// How long after a failed write the document is fetched again.
const RETRY_WRITE: Duration = Duration::from_secs(10);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("no answer in time")]
    Timeout,
    #[error(
        "the feed refused the token (401); check tls.feed-token-file against acme.feed-token-file"
    )]
    Unauthorized,
    #[error("the feed answered {0}")]
    Status(http::StatusCode),
    #[error("the document is not readable: {0}")]
    Body(String),
    #[error("the feed answered 304 (unchanged) to a request that named no document")]
    UnaskedUnchanged,
    #[error(
        "the feed answered 304 (unchanged) without a proof that opens with this token: not \
         berth-acme, or a berth-acme older than this edge; asking for the whole document next"
    )]
    UnprovenUnchanged,
}

enum Fetched {
    Document(FeedDocument),
    Unchanged,
}

/// The mirror service.
pub struct FeedMirror {
    authority: String,
    keys: FeedKeys,
    certs_dir: CertDir,
    thumbprint: Arc<ArcSwapOption<String>>,
    /// `acme.account-thumbprint`: when set, it wins over the feed's.
    configured_thumbprint: Option<String>,
    status: Arc<FeedStatus>,
}

impl FeedMirror {
    /// Mirrors `feed` into `certs_dir`, publishing the account thumbprint into `thumbprint`
    /// (unless `thumbprint` already holds one, from `acme.account-thumbprint`, which wins).
    ///
    /// # Errors
    /// When the token file cannot be read (a message naming the file, never the token).
    pub fn new(
        feed: &CertFeed,
        certs_dir: CertDir,
        thumbprint: Arc<ArcSwapOption<String>>,
    ) -> Result<FeedMirror, String> {
        let token = berth_core::feed::read_token(&feed.token_file)?;
        let configured_thumbprint = thumbprint.load().as_deref().cloned();
        Ok(FeedMirror {
            authority: feed.authority.clone(),
            keys: FeedKeys::derive(&token),
            certs_dir,
            thumbprint,
            configured_thumbprint,
            status: Arc::default(),
        })
    }

    /// The connection state, shared.
    pub fn status(&self) -> Arc<FeedStatus> {
        self.status.clone()
    }

    /// One exchange; with `wait`, the feed may hold it until something changes.
    async fn fetch(&self, etag: Option<&str>, wait: bool) -> Result<Fetched, FetchError> {
        let wait = if wait && etag.is_some() {
            WAIT
        } else {
            Duration::ZERO
        };
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.authority),
        )
        .await
        .map_err(|_| FetchError::Connect(self.authority.clone(), "timed out".into()))?
        .map_err(|e| FetchError::Connect(self.authority.clone(), e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let nonce = request_nonce().map_err(|e| FetchError::Body(e.to_string()))?;
        let mut request =
            http::Request::get(format!("{FEED_PATH}?wait={}&nonce={nonce}", wait.as_secs()))
                .header(http::header::HOST, &self.authority)
                .header(http::header::AUTHORIZATION, self.keys.authorization());
        if let Some(tag) = etag {
            request = request.header(http::header::IF_NONE_MATCH, tag);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Body(e.to_string()))?;
        let exchange = async {
            let response = sender.send_request(request).await?;
            let status = response.status();
            match status {
                http::StatusCode::OK => {
                    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                        .collect()
                        .await
                        .map_err(|e| FetchError::Body(e.to_string()))?
                        .to_bytes();
                    let doc = self
                        .keys
                        .open(&body)
                        .map_err(|e| FetchError::Body(e.to_string()))?;
                    if doc.request_nonce.as_deref() != Some(nonce.as_str()) {
                        return Err(FetchError::Body(
                            "the answer is not to this request (replayed?)".to_string(),
                        ));
                    }
                    Ok(Fetched::Document(doc))
                }
                http::StatusCode::NOT_MODIFIED => {
                    let Some(asked) = etag else {
                        return Err(FetchError::UnaskedUnchanged);
                    };
                    let proof = response
                        .headers()
                        .get(PROOF_HEADER)
                        .and_then(|v| v.to_str().ok());
                    match proof {
                        Some(p) if self.keys.unchanged_proven(p, &nonce, asked) => {
                            Ok(Fetched::Unchanged)
                        }
                        _ => Err(FetchError::UnprovenUnchanged),
                    }
                }
                http::StatusCode::UNAUTHORIZED => Err(FetchError::Unauthorized),
                other => Err(FetchError::Status(other)),
            }
        };
        let result = tokio::time::timeout(wait + ANSWER_SLACK, exchange)
            .await
            .unwrap_or(Err(FetchError::Timeout));
        driver.abort();
        result
    }

    /// Writes the document's certificates and takes its thumbprint; `false` when a write
    /// failed (the document is then fetched again after a pause). Refusals — a name or a
    /// pair the edge will not take — are not failures: the same document repeats them.
    async fn apply(&self, doc: FeedDocument) -> bool {
        match doc.thumbprint.as_deref() {
            Some(t)
                if self
                    .configured_thumbprint
                    .as_deref()
                    .is_some_and(|c| c != t) =>
            {
                tracing::warn!(
                    thumbprint = %printable(t),
                    "certificate feed: its thumbprint differs from acme.account-thumbprint; \
                     keeping the configured one"
                );
            }
            Some(t) if valid_thumbprint(t) => {
                let known = self.thumbprint.load();
                if known.as_deref().map(String::as_str) != Some(t) {
                    tracing::info!(thumbprint = %t, "certificate feed: answering HTTP-01 challenges with the account's thumbprint");
                    self.thumbprint.store(Some(Arc::new(t.to_string())));
                }
            }
            Some(t) => {
                tracing::warn!(thumbprint = %printable(t), "certificate feed: invalid thumbprint ignored")
            }
            None => {}
        }
        let certs = self.certs_dir.clone();
        let Ok(outcome) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(certs.path()).map(|()| mirror(&doc, &certs))
        })
        .await
        else {
            return false;
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(dir = %self.certs_dir.path().display(), "certificate feed: cannot create certs-dir: {e}");
                return false;
            }
        };
        if !outcome.written.is_empty() {
            tracing::info!(
                certificates = ?outcome.written,
                unchanged = outcome.unchanged,
                "certificate feed: certificates written to certs-dir"
            );
        }
        for (name, why) in &outcome.failed {
            tracing::warn!(cert = %printable(name), "certificate feed: not written: {why}");
        }
        !outcome.retry
    }

    async fn run(&self, mut shutdown: ShutdownWatch) {
        let mut etag: Option<String> = None;
        let mut backoff = BACKOFF_FIRST;
        let mut failing = false;
        let mut last_authenticated = std::time::Instant::now();
        let mut stale_warned = false;
        loop {
            if !stale_warned && last_authenticated.elapsed() >= STALE_AFTER {
                tracing::warn!(
                    feed = %self.authority,
                    "certificate feed: no authenticated answer for {} s; this edge serves the \
                     certificates it has and mirrors nothing new until one arrives",
                    last_authenticated.elapsed().as_secs()
                );
                stale_warned = true;
            }
            let started = std::time::Instant::now();
            let fetched = tokio::select! {
                // After a failure, ask without waiting: the state is known at once.
                r = self.fetch(etag.as_deref(), !failing) => r,
                _ = shutdown.changed() => return,
            };
            let pause = match fetched {
                Ok(fetched) => {
                    self.status.connected.store(true, Ordering::Relaxed);
                    last_authenticated = std::time::Instant::now();
                    stale_warned = false;
                    if failing {
                        tracing::info!(feed = %self.authority, "certificate feed: reachable again");
                        failing = false;
                    }
                    backoff = BACKOFF_FIRST;
                    match fetched {
                        // A feed that answers "unchanged" without holding the request is
                        // not polled faster than once a second.
                        Fetched::Unchanged => (started.elapsed() < Duration::from_secs(1))
                            .then_some(Duration::from_secs(1)),
                        // The tag is the sealed document's own, never the unauthenticated
                        // `ETag` header: a "304 unchanged" is then proven against what this
                        // edge holds. Refusals repeat on every fetch of the same document:
                        // its tag is kept (it is not fetched again until it changes) and
                        // they are logged once; a write that failed is tried again, the
                        // document fetched whole after a pause.
                        Fetched::Document(doc) => {
                            let tag = doc.etag();
                            if self.apply(doc).await {
                                etag = Some(tag);
                                None
                            } else {
                                etag = None;
                                Some(RETRY_WRITE)
                            }
                        }
                    }
                }
                Err(e) => {
                    self.status.connected.store(false, Ordering::Relaxed);
                    // An unproven "unchanged" may come from a berth-acme that predates the
                    // proof: the whole document, which is sealed, settles it.
                    if matches!(e, FetchError::UnprovenUnchanged) {
                        etag = None;
                    }
                    if failing {
                        tracing::debug!(feed = %self.authority, "certificate feed: still failing: {e}");
                    } else {
                        tracing::warn!(
                            feed = %self.authority,
                            "certificate feed: {e}; serving the certificates this edge has and retrying"
                        );
                        failing = true;
                    }
                    let wait = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    Some(wait)
                }
            };
            if let Some(pause) = pause {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for FeedMirror {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}
