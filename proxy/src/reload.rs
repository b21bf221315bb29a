//! Configuration reload on SIGHUP: a background service that re-reads the config file and,
//! when it is valid, swaps the new routes, defaults, trusted proxies and limits in live —
//! requests in flight keep the table they started with. An invalid file (or an htpasswd file
//! it names that cannot be used) is logged with every error and the running configuration
//! keeps serving. Listeners, certs-dir, Docker endpoint, challenge-dir and the access log
//! need a restart or an upgrade (`berth --upgrade`); a reload that changes them says so.
//!
//! ```sh
//! kill -HUP $(pidof berth)      # or: docker kill --signal HUP berth
//! ```
//!
//! The signal handler is installed when the server is built, before any listener opens, so a
//! SIGHUP can never end the process.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::IntCounterVec;
use tokio::sync::Notify;

use berth_core::config::limits::Limits;
use berth_core::config::Config;
use berth_core::sync::lock;
use berth_plugins::ChainEnv;

use crate::route_writer::{FileRoutes, RouteWriter};
use berth_core::config::{load_config, ConfigSource};

use crate::check::check_files;

/// Wakes the reloader once per SIGHUP.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn hangups() -> std::io::Result<Arc<Notify>> {
    let notify = Arc::new(Notify::new());
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    let wake = notify.clone();
    std::thread::Builder::new()
        .name("berth-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                wake.notify_one();
            }
        })?;
    Ok(notify)
}

/// The parts of a configuration that only a restart or an upgrade changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FixedParts {
    listen: berth_core::config::Listen,
    tls: berth_core::config::TlsConfig,
    docker: (
        berth_core::config::DockerMode,
        Option<berth_core::config::DockerEndpoint>,
    ),
    challenge_dir: std::path::PathBuf,
    access_log: berth_core::config::AccessLog,
}

impl FixedParts {
    fn of(config: &Config) -> FixedParts {
        FixedParts {
            listen: config.listen.clone(),
            tls: config.tls.clone(),
            docker: (config.docker.mode, config.docker.endpoint.clone()),
            challenge_dir: config.acme.challenge_dir.clone(),
            access_log: config.access_log.clone(),
        }
    }

    /// The keys whose values differ in `next`.
    fn changed_in(&self, next: &FixedParts) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != next.listen {
            keys.push("listen");
        }
        if self.tls != next.tls {
            keys.push("tls");
        }
        if self.docker != next.docker {
            keys.push("docker.enabled / docker.endpoint");
        }
        if self.challenge_dir != next.challenge_dir {
            keys.push("acme.challenge-dir");
        }
        if self.access_log != next.access_log {
            keys.push("log.access");
        }
        keys
    }
}

/// Re-reads the configuration on SIGHUP.
pub struct Reloader {
    wake: Arc<Notify>,
    state: Arc<State>,
}

struct State {
    source: ConfigSource,
    builder: Arc<Mutex<RouteWriter>>,
    limits: Arc<ArcSwap<Limits>>,
    /// What chains are built with besides the trusted proxies (kept across reloads).
    env: ChainEnv,
    fixed: Mutex<FixedParts>,
    counter: Option<IntCounterVec>,
}

impl Reloader {
    /// A reloader for the server built from `running` (read from `source`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: ConfigSource,
        running: &Config,
        wake: Arc<Notify>,
        builder: Arc<Mutex<RouteWriter>>,
        limits: Arc<ArcSwap<Limits>>,
        env: ChainEnv,
        counter: Option<IntCounterVec>,
    ) -> Reloader {
        Reloader {
            wake,
            state: Arc::new(State {
                source,
                builder,
                limits,
                env,
                fixed: Mutex::new(FixedParts::of(running)),
                counter,
            }),
        }
    }
}

impl State {
    fn count(&self, result: &str) {
        if let Some(c) = &self.counter {
            c.with_label_values(&[result]).inc();
        }
    }

    /// Reads, checks and applies the configuration once. Blocking: file reads and chain
    /// building.
    fn reload(&self) {
        let config = match load_config(&self.source) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!("reload: {}: {e}", self.source);
                }
                tracing::error!(
                    "reload: {} is not valid ({} errors); the running configuration stays",
                    self.source,
                    errors.0.len()
                );
                self.count("error");
                return;
            }
        };
        let problems = check_files(&config);
        if !problems.is_empty() {
            for p in &problems {
                tracing::error!("reload: {}: {p}", self.source);
            }
            tracing::error!(
                "reload: {} names files that cannot be used; the running configuration stays",
                self.source
            );
            self.count("error");
            return;
        }
        {
            let mut fixed = lock(&self.fixed);
            let next = FixedParts::of(&config);
            for key in fixed.changed_in(&next) {
                tracing::warn!(
                    "reload: {key} changed; that takes a restart or an upgrade (berth --upgrade)"
                );
            }
            // Warn once per change, not again on every later reload.
            *fixed = next;
        }
        let routes = config.routes.len();
        self.limits.store(Arc::new(config.limits));
        let env = ChainEnv {
            trusted_proxies: config.trusted_proxies.into(),
            ..self.env.clone()
        };
        lock(&self.builder).reconfigure(FileRoutes {
            routes: config.routes,
            defaults: config.defaults,
            preferred_network: config.docker.network,
            env,
        });
        tracing::info!("reload: {} applied ({routes} static routes)", self.source);
        self.count("ok");
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            tracing::info!("reload: SIGHUP received, reading {}", self.state.source);
            // Reading files and building chains: off the async threads.
            let state = self.state.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || state.reload()).await {
                tracing::error!(error = %e, "reload failed");
            }
        }
    }
}
