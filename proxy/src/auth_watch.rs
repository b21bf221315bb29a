//! The htpasswd watcher: a background service that looks at every htpasswd file in use once
//! a second and re-reads the ones that changed. Polling (a `stat` per file) rather than
//! inotify, because htpasswd files are often single files bind-mounted into berth's
//! container, where a rename on the host is invisible to inotify inside.
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! auth.htpasswd = "/etc/berth/htpasswd/registry"
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use berth_plugins::builtin::AuthFiles;

/// How often the files are looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Re-reads changed htpasswd files.
pub struct AuthWatcher {
    files: Arc<AuthFiles>,
}

impl AuthWatcher {
    /// Watches the files in `files`.
    pub fn new(files: Arc<AuthFiles>) -> AuthWatcher {
        AuthWatcher { files }
    }
}

#[async_trait]
impl BackgroundService for AuthWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let files = self.files.clone();
                    if let Err(e) = tokio::task::spawn_blocking(move || files.refresh()).await {
                        tracing::error!(error = %e, "htpasswd refresh failed");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
