//! Counting open client connections per listener (`berth_open_connections{listener}`): a thin
//! wrapper around Pingora's per-connection entry point. A connection is counted from the end
//! of its TLS handshake until it closes; an idle keep-alive connection waiting for its next
//! request counts, as it holds a socket.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use prometheus::IntGauge;

/// Wraps a server application and keeps `gauge` at the number of connections inside it.
pub struct Counted<A> {
    inner: Arc<A>,
    gauge: Option<IntGauge>,
}

impl<A> Counted<A> {
    /// Wraps `inner`; without a gauge nothing is counted.
    pub fn new(inner: A, gauge: Option<IntGauge>) -> Counted<A> {
        Counted {
            inner: Arc::new(inner),
            gauge,
        }
    }
}

/// Decrements the gauge when dropped, so a cancelled connection task is uncounted too.
struct Open<'a>(&'a IntGauge);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Pingora calls this once per connection and again for each reuse of a keep-alive
        // connection; counting inside the call covers both without double counting.
        let _open = self.gauge.as_ref().map(|g| {
            g.inc();
            Open(g)
        });
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
