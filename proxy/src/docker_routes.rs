//! The Docker service: follows the Docker daemon ([`berth_core::docker::DockerWatcher`]) and
//! hands every new snapshot of the containers to the route table's writer
//! ([`crate::route_writer::RouteWriter`]).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use berth_core::docker::{DockerStatus, DockerWatcher, Snapshot};
use berth_core::sync::lock;

use crate::route_writer::RouteWriter;

/// The background service: the Docker watcher and the route table's writer, together.
pub struct DockerRoutes {
    watcher: DockerWatcher,
    snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    builder: Arc<Mutex<RouteWriter>>,
}

impl DockerRoutes {
    /// Joins a watcher (and its snapshot channel) to a route builder.
    pub fn new(
        watcher: DockerWatcher,
        snapshots: tokio::sync::watch::Receiver<Arc<Snapshot>>,
        builder: Arc<Mutex<RouteWriter>>,
    ) -> DockerRoutes {
        DockerRoutes {
            watcher,
            snapshots,
            builder,
        }
    }

    /// The connection state.
    pub fn status(&self) -> Arc<DockerStatus> {
        self.watcher.status()
    }

    async fn follow(&self, mut shutdown: ShutdownWatch) {
        let mut snapshots = self.snapshots.clone();
        loop {
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
            let snapshot = snapshots.borrow_and_update().clone();
            let builder = self.builder.clone();
            // Building a chain may read a CA file: keep it off the async threads.
            let joined = tokio::task::spawn_blocking(move || {
                lock(&builder).rebuild(&snapshot);
            })
            .await;
            if let Err(e) = joined {
                tracing::error!(error = %e, "route rebuild failed");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DockerRoutes {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(self.watcher.run(shutdown.clone()), self.follow(shutdown));
    }
}
