//! The certificate watcher: a background service that reloads certs-dir when it changes
//! (inotify through `notify`, recursively, so acme-companion's `<host>/fullchain.pem`
//! targets are seen) and rescans it periodically as a safety net. Parsing happens in a
//! blocking task; the new snapshot is swapped in whole. Handshakes in progress and open
//! connections keep the certificate they started with.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use berth_core::sync::lock;

use super::loader::Loader;
use super::store::CertStore;

/// How often the directory is rescanned even without a change notification.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How long to wait after a notification for related changes (key then certificate).
const SETTLE: Duration = Duration::from_millis(50);

/// Reloads the certificate store when certs-dir changes.
pub struct CertWatcher {
    loader: Arc<Mutex<Loader>>,
    store: Arc<ArcSwap<CertStore>>,
}

impl CertWatcher {
    /// Watches `loader`'s directory and swaps new snapshots into `store`.
    pub fn new(loader: Loader, store: Arc<ArcSwap<CertStore>>) -> CertWatcher {
        CertWatcher {
            loader: Arc::new(Mutex::new(loader)),
            store,
        }
    }

    /// Rescans; returns when a pair whose halves disagree must be looked at again.
    async fn rescan(&self) -> Option<std::time::Instant> {
        let (loader, store) = (self.loader.clone(), self.store.clone());
        let joined = tokio::task::spawn_blocking(move || {
            let mut loader = lock(&loader);
            let current = store.load();
            if let Some(next) = loader.rescan(&current) {
                store.store(Arc::new(next));
            }
            loader.settle_deadline()
        })
        .await;
        joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "certificate rescan failed");
            None
        })
    }
}

#[async_trait]
impl BackgroundService for CertWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let dir = lock(&self.loader).dir().to_path_buf();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::Recursive).map(|()| w));
        let _watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the certificate directory; rescanning every {}s instead", RESCAN_EVERY.as_secs());
                None
            }
        };
        let mut tick = tokio::time::interval(RESCAN_EVERY);
        tick.tick().await; // the first tick is immediate: the rescan below stands for it
                           // The store was loaded before the watch existed: a certificate written in between
                           // (the certificate feed mirrors its first document at start-up) raised no event, so
                           // look once more now that changes are seen. A pair found half-written is judged once
                           // its settle time is over.
        let mut halves = self.rescan().await;
        loop {
            let settle = async {
                match halves {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    halves = self.rescan().await;
                }
                () = settle => halves = self.rescan().await,
                _ = tick.tick() => halves = self.rescan().await,
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_certificate_written_before_the_watch_began_is_loaded_at_once() {
        let dir = tempfile::tempdir().expect("dir");
        let mut loader = Loader::new(berth_core::contract::CertDir::new(dir.path()));
        let store = Arc::new(ArcSwap::from_pointee(
            loader.rescan(&CertStore::default()).unwrap_or_default(),
        ));
        // Written after the store was loaded and before the watcher runs: no event for it.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["late.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join("late.test.key"), key.serialize_pem()).expect("key");
        std::fs::write(dir.path().join("late.test.crt"), cert.pem()).expect("crt");
        let watcher = Arc::new(CertWatcher::new(loader, store.clone()));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let running = watcher.clone();
        let task = tokio::spawn(async move { running.start(shutdown).await });
        // Well before the periodic rescan (RESCAN_EVERY) would find it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.load().get("late.test").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the certificate written before the watch was not loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
