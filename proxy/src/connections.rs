//! The downstream guard: a thin wrapper around Pingora's per-connection entry point that
//! enforces `[limits]` and counts open connections per listener
//! (`berth_open_connections{listener}`).
//!
//! - **max-connections**: a connection over the limit is closed at once, before any TLS
//!   handshake, and counted in `berth_connections_refused_total`.
//! - **TLS handshakes** happen here, not in Pingora's listener: each is counted against
//!   max-connections while it runs and must finish within `header-timeout` of the accept
//!   (Pingora's own, fixed, is 60 s); the first request head's deadline runs from the same
//!   accept, so handshake and head together get `header-timeout`.
//! - **header-timeout** and **max-header-size**: for HTTP/1, berth reads each request head
//!   itself before Pingora parses it. The head must be complete within `header-timeout` — of
//!   the accept for a connection's first request, of the request's first byte on a reused
//!   connection — and no larger than `max-header-size`; otherwise the client gets 408 or 431
//!   and the connection is closed. A slowloris client dripping a byte every few seconds is
//!   therefore cut after `header-timeout`, however it paces itself. The head read here is
//!   handed to Pingora as already-received bytes, so nothing is read twice. The gate judges
//!   a head exactly as Pingora's parser will, including the request lines Pingora repairs by
//!   percent-escaping the target (`GET /a b HTTP/1.1`): such a head is read under the same
//!   deadline and size limit. Bytes that can never be an HTTP/1 request head (a TLS handshake
//!   on the plain port, garbage) get berth's own 400 at once.
//! - **keepalive-timeout**: the idle wait for the next request on a connection.
//!
//! **PROXY protocol** (`[listen] proxy-protocol`): a connection from a listed source must
//! start with a v1 or v2 header within `header-timeout` of the accept, before TLS; the client
//! it names becomes the connection's peer for everything after (the client address of every
//! request: `X-Forwarded-For`, `allow`, rate limits, logs). A connection from a listed source
//! without a valid header is closed (`reason="proxy_protocol"`); from any other source a
//! header is never read as one: the bytes are the client's own (an HTTP head that starts with
//! `PROXY ` gets 400, a TLS handshake fails).
//!
//! HTTP/2 connections (ALPN `h2`) must send the client connection preface within
//! `header-timeout` of the accept too (berth reads it, then replays it to Pingora, whose
//! HTTP/2 handshake would wait for it forever); after that they go to Pingora: their header blocks are
//! limited to `max-header-size` by the HTTP/2 server's `SETTINGS_MAX_HEADER_LIST_SIZE` (431
//! beyond it), and idle connections are closed after `keepalive-timeout` through Pingora's
//! `h2_idle_timeout`. Both are read when berth starts: a reload changes them for HTTP/1 only.
//!
//! ```toml
//! [limits]
//! header-timeout = "15s"
//! max-header-size = "64KiB"
//! max-connections = 16384
//! keepalive-timeout = "75s"
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use berth_core::config::limits::Limits;
use berth_core::proxy_protocol;
use ipnet::IpNet;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use std::os::unix::io::AsRawFd;

/// How long berth tries to deliver its own 408 / 431 before it closes anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one warning about refused connections per listener in this many seconds.
const WARN_EVERY_SECS: u64 = 10;

/// The metric handles of one listener.
#[derive(Clone, Default)]
pub struct ListenerMetrics {
    /// `berth_open_connections{listener}`.
    pub open: Option<IntGauge>,
    /// `berth_connections_refused_total{listener,reason=max_connections}`.
    pub over_limit: Option<IntCounter>,
    /// `...{reason=header_timeout}`.
    pub header_timeout: Option<IntCounter>,
    /// `...{reason=header_too_large}`.
    pub header_too_large: Option<IntCounter>,
    /// `...{reason=bad_request}`.
    pub bad_request: Option<IntCounter>,
    /// `...{reason=proxy_protocol}`.
    pub proxy_protocol: Option<IntCounter>,
}

/// Wraps Pingora's HTTP application for one listener.
pub struct Guarded<A> {
    inner: Arc<A>,
    name: &'static str,
    /// The TLS acceptor, for the HTTPS listener (its socket is plain TCP to Pingora).
    tls: Option<Acceptor>,
    /// Sources whose connections start with a PROXY protocol header.
    proxy_protocol: Vec<IpNet>,
    limits: Arc<ArcSwap<Limits>>,
    metrics: ListenerMetrics,
    open: Arc<AtomicUsize>,
    last_warning: AtomicU64,
    last_proxy_warning: AtomicU64,
}

impl<A> Guarded<A> {
    /// Wraps `inner` for the listener called `name`, enforcing the live `limits`.
    pub fn new(
        inner: A,
        name: &'static str,
        limits: Arc<ArcSwap<Limits>>,
        metrics: ListenerMetrics,
    ) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            name,
            tls: None,
            proxy_protocol: Vec::new(),
            limits,
            metrics,
            open: Arc::default(),
            last_warning: AtomicU64::new(0),
            last_proxy_warning: AtomicU64::new(0),
        }
    }

    /// Terminates TLS with `acceptor` before anything else (the listener is added to Pingora
    /// as plain TCP), so the handshake is under `header-timeout` and `max-connections`.
    pub fn with_tls(mut self, acceptor: Acceptor) -> Guarded<A> {
        self.tls = Some(acceptor);
        self
    }

    /// Reads a PROXY protocol header first on connections from `sources`.
    pub fn with_proxy_protocol(mut self, sources: Vec<IpNet>) -> Guarded<A> {
        self.proxy_protocol = sources;
        self
    }

    /// On a connection from a source of `[listen] proxy-protocol`: reads its PROXY header
    /// within `header-timeout` of `accepted`, gives back what followed it, and makes the
    /// client it names the connection's peer. Other connections pass untouched.
    async fn proxy_header(
        &self,
        stream: Stream,
        accepted: Instant,
        limits: &Limits,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        // A peer is judged as its IPv4 address, and as the IPv4-mapped IPv6 one, so the
        // list may name either.
        let listed = peer.is_some_and(|p| {
            let ip = p.ip().to_canonical();
            let mapped = match ip {
                std::net::IpAddr::V4(v4) => std::net::IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            };
            self.proxy_protocol
                .iter()
                .any(|n| n.contains(&ip) || n.contains(&mapped))
        });
        if !listed {
            return Some(stream);
        }
        let mut l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => l4,
            Err(_) => return None,
        };
        let deadline = accepted + limits.header_timeout;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        let refused = |why: &str| {
            count(&self.metrics.proxy_protocol);
            if due(&self.last_proxy_warning) {
                tracing::warn!(
                    listener = self.name,
                    peer = ?peer,
                    "PROXY protocol: {why}; connection closed (logged at most every {WARN_EVERY_SECS} s; all are counted)"
                );
            }
        };
        loop {
            match proxy_protocol::parse(&buf) {
                proxy_protocol::Parsed::Complete(header, used) => {
                    l4.rewind(&buf[used..]);
                    // The client it names is the peer; a header that names none (LOCAL,
                    // UNKNOWN: the balancer may be speaking for anyone) leaves no readable
                    // client, never the balancer's own address.
                    let source = match header {
                        proxy_protocol::Header::Proxied { source, .. } => Some(
                            pingora_core::protocols::l4::socket::SocketAddr::Inet(source),
                        ),
                        proxy_protocol::Header::Local => None,
                    };
                    let digest = SocketDigest::from_raw_fd(l4.as_raw_fd());
                    let _ = digest.peer_addr.set(source);
                    l4.set_socket_digest(digest);
                    return Some(l4);
                }
                proxy_protocol::Parsed::Invalid(why) => {
                    refused(why);
                    return None;
                }
                proxy_protocol::Parsed::Partial => {}
            }
            match tokio::time::timeout_at(deadline, l4.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                // Closed before a byte: a balancer's bare TCP health check, as an idle
                // client's close is on the HTTP listener — nothing to refuse.
                Ok(_) if buf.is_empty() => return None,
                Ok(_) => {
                    refused("closed before a whole header");
                    return None;
                }
                Err(_) => {
                    refused("no whole header within limits.header-timeout");
                    return None;
                }
            }
        }
    }

    /// The TLS handshake, within `header-timeout` of `accepted`.
    async fn tls_handshake(
        &self,
        acceptor: &Acceptor,
        stream: Stream,
        accepted: Instant,
        limits: &Limits,
    ) -> Option<Stream> {
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::error!(
                    listener = self.name,
                    "not a TCP connection; cannot start TLS"
                );
                return None;
            }
        };
        let deadline = accepted + limits.header_timeout;
        match tokio::time::timeout_at(deadline, acceptor.tls_handshake(l4)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(listener = self.name, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                count(&self.metrics.header_timeout);
                tracing::debug!(
                    listener = self.name,
                    "TLS handshake not finished within limits.header-timeout"
                );
                None
            }
        }
    }

    /// Reads the HTTP/2 client preface within `header-timeout` of `accepted` and returns the
    /// stream with the preface to be read again (by Pingora's HTTP/2 handshake).
    async fn h2_preface(
        &self,
        mut stream: Stream,
        accepted: Instant,
        limits: &Limits,
    ) -> Option<Stream> {
        let mut preface = [0u8; H2_PREFACE.len()];
        let deadline = accepted + limits.header_timeout;
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut preface)).await {
            Ok(Ok(_)) if preface == *H2_PREFACE => Some(Box::new(Replayed {
                prefix: bytes::Bytes::copy_from_slice(&preface),
                inner: stream,
            })),
            Ok(Ok(_)) => {
                count(&self.metrics.bad_request);
                tracing::debug!(
                    listener = self.name,
                    "not an HTTP/2 connection preface after ALPN h2"
                );
                None
            }
            Ok(Err(_)) => None,
            Err(_) => {
                count(&self.metrics.header_timeout);
                tracing::debug!(
                    listener = self.name,
                    "no HTTP/2 preface within limits.header-timeout"
                );
                None
            }
        }
    }

    /// The number of client connections open on this listener, live.
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    fn warn_refused(&self, max: usize) {
        if due(&self.last_warning) {
            tracing::warn!(
                listener = self.name,
                "{max} client connections open (limits.max-connections); refusing more"
            );
        }
    }
}

/// Whether a warning kept in `last` (seconds since the epoch) may be logged now: at most one
/// every [`WARN_EVERY_SECS`].
fn due(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let then = last.load(Ordering::Relaxed);
    now >= then + WARN_EVERY_SECS
        && last
            .compare_exchange(then, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A client stream with bytes berth has already read put back in front, so that the next
/// reader (Pingora's HTTP/2 server) sees the connection from its start. Everything else is
/// the stream's own.
#[derive(Debug)]
struct Replayed {
    prefix: bytes::Bytes,
    inner: Stream,
}

impl tokio::io::AsyncRead for Replayed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Replayed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl pingora_core::protocols::Shutdown for Replayed {
    async fn shutdown(&mut self) {
        pingora_core::protocols::Shutdown::shutdown(&mut *self.inner).await;
    }
}

impl pingora_core::protocols::UniqueID for Replayed {
    fn id(&self) -> pingora_core::protocols::UniqueIDType {
        self.inner.id()
    }
}

impl pingora_core::protocols::Ssl for Replayed {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl pingora_core::protocols::GetTimingDigest for Replayed {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl pingora_core::protocols::GetProxyDigest for Replayed {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl pingora_core::protocols::GetSocketDigest for Replayed {
    fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: pingora_core::protocols::SocketDigest) {
        self.inner.set_socket_digest(socket_digest);
    }
}

impl pingora_core::protocols::Peek for Replayed {}

/// Holds one slot of the listener's connection count until dropped.
struct Slot<'a> {
    open: &'a AtomicUsize,
    gauge: Option<&'a IntGauge>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(g) = self.gauge {
            g.dec();
        }
    }
}

/// What reading a request head came to.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head is complete; these bytes start with it (and may hold the start of the body).
    Complete(BytesMut),
    /// The client went away, or stayed idle between requests; close quietly.
    Closed,
    /// The head did not arrive in time.
    TimedOut,
    /// The head is larger than allowed.
    TooLarge,
    /// These bytes can never become a request head Pingora accepts.
    Invalid,
}

/// How far a buffer gets as an HTTP/1 request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is complete and this long.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP/1 request head, whatever follows (a TLS handshake on the plain port,
    /// garbage): berth answers 400.
    Invalid,
}

/// Parses as much of a request head as `buf` holds, with the verdict Pingora's HTTP/1 parser
/// reaches on the same bytes: headers beyond the 256th are invalid, and a request line
/// httparse refuses only for its target or version is judged again with the target escaped
/// (see [`escape_request_target`]).
pub fn parse_head(buf: &[u8]) -> Parsed {
    match httparse_head(buf) {
        Ok(parsed) => parsed,
        Err(httparse::Error::Token | httparse::Error::Version) => {
            let Some(escaped) = escape_request_target(buf) else {
                return Parsed::Invalid;
            };
            // Each escaped byte became three: the head ends that much earlier in `buf`.
            let added = escaped.len() - buf.len();
            match httparse_head(&escaped) {
                Ok(Parsed::Complete(n)) => Parsed::Complete(n - added),
                Ok(parsed) => parsed,
                Err(_) => Parsed::Invalid,
            }
        }
        Err(_) => Parsed::Invalid,
    }
}

fn httparse_head(buf: &[u8]) -> Result<Parsed, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    Ok(match httparse::Request::new(&mut headers).parse(buf)? {
        httparse::Status::Complete(n) => Parsed::Complete(n),
        httparse::Status::Partial => Parsed::Partial,
    })
}

/// A request line `METHOD TARGET HTTP/x[.y]` on the first line of the buffer.
static REQUEST_LINE: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // a constant pattern
    regex::bytes::Regex::new(r"^\w+ (?P<target>.+) HTTP/\d(?:\.\d)?").unwrap()
});

/// `buf` with the request target's bytes that httparse refuses (controls, space, `"`, `<`,
/// `>`, and non-ASCII) percent-escaped, or `None` when there is no such request line or
/// nothing to escape. Pingora repairs refused request lines this way before it gives up on
/// them, so the gate must too: otherwise a head the gate calls invalid would be read by
/// Pingora alone, without berth's deadline and size limit.
pub fn escape_request_target(buf: &[u8]) -> Option<Vec<u8>> {
    let target = REQUEST_LINE.captures(buf)?.name("target")?;
    let refused = |b: u8| !(0x20..0x7f).contains(&b) || matches!(b, b' ' | b'"' | b'<' | b'>');
    if !target.as_bytes().iter().any(|&b| refused(b)) {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    out.extend_from_slice(&buf[..target.start()]);
    for &b in target.as_bytes() {
        if refused(b) {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&buf[target.end()..]);
    Some(out)
}

/// Headers per request that Pingora's HTTP/1 parser accepts.
const MAX_HEADERS: usize = 256;

/// Reads one request head. `accepted`: when the connection was accepted, for its first
/// request (the deadline runs from then); `None` on a reused connection (it runs from the
/// request's first byte, after an idle wait of up to `keepalive-timeout`).
async fn read_head(
    stream: &mut Stream,
    accepted: Option<Instant>,
    limits: &Limits,
    shutdown: &ShutdownWatch,
) -> Head {
    // An idle keep-alive connection waits here holding this buffer: small until the first
    // bytes come (most heads fit; a larger one gets another read).
    let mut buf = BytesMut::with_capacity(1024);
    let mut shutdown = shutdown.clone();
    // Before the first byte: a new connection counts against the header timeout; a reused
    // one may idle for the keep-alive timeout.
    let idle_until = match accepted {
        Some(at) => at + limits.header_timeout,
        None => Instant::now() + limits.keepalive_timeout,
    };
    let read = tokio::select! {
        r = tokio::time::timeout_at(idle_until, stream.read_buf(&mut buf)) => r,
        _ = shutdown.changed() => return Head::Closed,
    };
    match read {
        Ok(Ok(n)) if n > 0 => {}
        // Nothing sent at all: close without a word, as for an idle keep-alive connection.
        _ => return Head::Closed,
    }
    let deadline = accepted.unwrap_or_else(Instant::now) + limits.header_timeout;
    loop {
        match parse_head(&buf) {
            Parsed::Complete(end) if end > limits.max_header_size => return Head::TooLarge,
            Parsed::Complete(_) => return Head::Complete(buf),
            Parsed::Invalid => return Head::Invalid,
            Parsed::Partial if buf.len() > limits.max_header_size => return Head::TooLarge,
            Parsed::Partial => {}
        }
        // A bounded read: what berth hands Pingora (the head and whatever body came with it)
        // stays under Pingora's own 1 MiB ceiling.
        buf.reserve(4096);
        let mut chunk = bytes::BufMut::limit(&mut buf, berth_core::config::limits::HEAD_READ_CHUNK);
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut chunk)).await {
            Err(_) => return Head::TimedOut,
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Head::Closed,
        }
    }
}

/// Sends one of berth's own refusals and closes the connection.
async fn refuse(mut stream: Stream, status: &str, detail: &str) {
    let body = format!("{status}: {detail}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        Ok::<(), std::io::Error>(())
    })
    .await;
}

fn count(counter: &Option<IntCounter>) {
    if let Some(c) = counter {
        c.inc();
    }
}

/// Pingora's keep-alive setting for a timeout (`None` = close after the response).
fn keepalive(limits: &Limits) -> Option<u64> {
    let secs = limits.keepalive_timeout.as_secs();
    (secs > 0).then_some(secs)
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let accepted = Instant::now();
        let limits = **self.limits.load();
        let open = self.open.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &self.metrics.open {
            g.inc();
        }
        let _slot = Slot {
            open: &self.open,
            gauge: self.metrics.open.as_ref(),
        };
        if open >= limits.max_connections {
            count(&self.metrics.over_limit);
            self.warn_refused(limits.max_connections);
            return None;
        }
        // The header, handshake and preface reads are boxed: this future lives as long as the
        // connection, and would otherwise keep room for their (larger) state all along.
        let stream = if self.proxy_protocol.is_empty() {
            stream
        } else {
            Box::pin(self.proxy_header(stream, accepted, &limits)).await?
        };
        let mut stream = match &self.tls {
            Some(acceptor) => {
                Box::pin(self.tls_handshake(acceptor, stream, accepted, &limits)).await?
            }
            None => stream,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let stream = Box::pin(self.h2_preface(stream, accepted, &limits)).await?;
            return self.inner.process_new(stream, shutdown).await;
        }

        let request_limit = self
            .inner
            .server_options()
            .and_then(|o| o.keepalive_request_limit);
        let mut persisted: Option<HttpPersistentSettings> = None;
        let mut first = Some(accepted);
        loop {
            let limits = **self.limits.load();
            let head = match read_head(&mut stream, first, &limits, shutdown).await {
                Head::Complete(head) => head,
                Head::Closed => return None,
                Head::TimedOut => {
                    count(&self.metrics.header_timeout);
                    let detail = format!(
                        "the request head did not arrive within {}s (limits.header-timeout)",
                        limits.header_timeout.as_secs_f64()
                    );
                    refuse(stream, "408 Request Timeout", &detail).await;
                    return None;
                }
                Head::TooLarge => {
                    count(&self.metrics.header_too_large);
                    let detail = format!(
                        "the request head is larger than {} bytes (limits.max-header-size)",
                        limits.max_header_size
                    );
                    refuse(stream, "431 Request Header Fields Too Large", &detail).await;
                    return None;
                }
                Head::Invalid => {
                    count(&self.metrics.bad_request);
                    let detail = "this is not an HTTP/1.1 request head";
                    refuse(stream, "400 Bad Request", detail).await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match persisted.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(request_limit),
            }
            session.set_keepalive(if *shutdown.borrow() {
                None
            } else {
                keepalive(&limits)
            });
            session.set_pipelined_prefix(head);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, persisted) = reused.consume();
            first = None;
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

/// Ends the process as soon as the last client connection has closed once a graceful
/// shutdown (SIGTERM, or SIGQUIT for an upgrade) has begun, instead of sleeping through the
/// whole grace period; Pingora still ends it when `server.grace-period` is over.
pub struct Drain {
    open: Vec<Arc<AtomicUsize>>,
}

impl Drain {
    /// Watches the open-connection counts of every proxy listener.
    pub fn new(open: Vec<Arc<AtomicUsize>>) -> Drain {
        Drain { open }
    }

    fn open(&self) -> usize {
        self.open.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        tracing::info!(
            open = self.open(),
            "shutting down: waiting for open connections to finish"
        );
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if self.open() == 0 {
                break;
            }
        }
        // Give the access log's writer (it wakes every 50 ms) time to write the last lines.
        tokio::time::sleep(crate::access_log::WRITE_EVERY * 3).await;
        tracing::info!("shutting down: every connection has closed; exiting");
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_as_far_as_they_go() {
        let table: [(&[u8], Parsed); 13] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Parsed::Complete(27)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody",
                Parsed::Complete(27),
            ),
            (b"GET / HTTP/1.1\nHost: a\n\nbody", Parsed::Complete(24)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Parsed::Partial),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Parsed::Partial),
            (b"GET / HTT", Parsed::Partial),
            // A TLS ClientHello sent to the plain-HTTP port.
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                Parsed::Invalid,
            ),
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", Parsed::Invalid),
            // Targets Pingora escapes: judged like the escaped line.
            (b"GET /a b HTTP/1.1\r\nHost: x\r\n", Parsed::Partial),
            (
                b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\nbody",
                Parsed::Complete(30),
            ),
            (b"GET /a\"<> HTTP/1.1\r\n", Parsed::Partial),
            // A broken line that escaping cannot repair, or not yet a whole request line.
            (b"GET /a b", Parsed::Invalid),
            (b"GET /a b HTTP/x\r\n", Parsed::Invalid),
        ];
        for (buf, expected) in table {
            assert_eq!(
                parse_head(buf),
                expected,
                "{}",
                String::from_utf8_lossy(buf)
            );
        }
    }
}
