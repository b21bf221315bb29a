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
use berth_core::labels::ContainerRules;
use berth_core::sync::lock;
use berth_plugins::{ChainEnv, TrustedProxies};

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
    crate::supervise::spawn_supervised_thread("berth-sighup", move || {
        for _ in signals.forever() {
            wake.notify_one();
        }
    })?;
    Ok(notify)
}

/// Stops the process at once on SIGINT (Ctrl-C), with exit status 130. Pingora's own fast
/// shutdown on SIGINT stops its runtimes without telling its accept loops, which then spin
/// on "Accept() failed" errors and keep the process from exiting; in-flight requests end
/// either way. For a graceful stop that lets uploads finish, send SIGTERM.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn stop_on_interrupt() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])?;
    crate::supervise::spawn_supervised_thread("berth-sigint", move || {
        if signals.forever().next().is_some() {
            std::process::exit(130);
        }
    })?;
    Ok(())
}

/// The parts of a configuration that only a restart or an upgrade changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FixedParts {
    listen: berth_core::config::Listen,
    tls: berth_core::config::TlsConfig,
    docker: (
        berth_core::config::DockerMode,
        Option<berth_core::config::DockerEndpoint>,
        (berth_core::config::DockerMode, std::time::Duration),
    ),
    challenge_dir: (berth_core::contract::ChallengeDir, Option<String>),
    access_log: berth_core::config::AccessLog,
    server: berth_core::config::server::ServerSettings,
    cache: berth_core::config::cache::CacheConfig,
}

impl FixedParts {
    fn of(config: &Config) -> FixedParts {
        FixedParts {
            listen: config.listen.clone(),
            tls: config.tls.clone(),
            docker: (
                config.docker.mode,
                config.docker.endpoint.clone(),
                (config.docker.swarm, config.docker.swarm_poll),
            ),
            challenge_dir: (
                config.acme.challenge_dir.clone(),
                config.acme.account_thumbprint.clone(),
            ),
            access_log: config.access_log.clone(),
            server: config.server.clone(),
            cache: config.cache.clone(),
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
            keys.push("docker.enabled / docker.endpoint / docker.swarm / docker.swarm-poll");
        }
        if self.challenge_dir != next.challenge_dir {
            keys.push("acme.challenge-dir / acme.account-thumbprint");
        }
        if self.access_log != next.access_log {
            keys.push("log.access");
        }
        if self.server != next.server {
            keys.push("server");
        }
        if self.cache != next.cache {
            keys.push("cache");
        }
        keys
    }
}

/// The fixed parts berth runs with, and those of the last file read.
#[derive(Debug)]
struct Fixed {
    running: FixedParts,
    last: FixedParts,
}

impl Fixed {
    /// The keys to warn about when `next` is read: those that differ both from what runs and
    /// from the last file read (that one was warned about already). A file that puts a key
    /// back as it runs is not warned about.
    fn warn_for(&mut self, next: FixedParts) -> Vec<&'static str> {
        let since_last = self.last.changed_in(&next);
        let keys = self
            .running
            .changed_in(&next)
            .into_iter()
            .filter(|key| since_last.contains(key))
            .collect();
        self.last = next;
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
    /// What chains are built with (kept across reloads).
    env: ChainEnv,
    fixed: Mutex<Fixed>,
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
                fixed: Mutex::new(Fixed {
                    running: FixedParts::of(running),
                    last: FixedParts::of(running),
                }),
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
            for key in lock(&self.fixed).warn_for(FixedParts::of(&config)) {
                tracing::warn!(
                    "reload: {key} changed; that takes a restart or an upgrade (berth --upgrade)"
                );
            }
        }
        let routes = config.routes.len();
        self.limits.store(Arc::new(config.limits));
        lock(&self.builder).reconfigure(FileRoutes {
            routes: config.routes,
            defaults: config.defaults,
            container_rules: ContainerRules {
                preferred_network: config.docker.network,
                label_files: config.docker.label_files,
                allowed_hosts: config.docker.allowed_hosts,
                own_networks: Vec::new(),
            },
            env: self.env.clone(),
            trust: TrustedProxies::new(config.trusted_proxies),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(extra: &str) -> FixedParts {
        let listen = if extra.starts_with("[listen]") {
            ""
        } else {
            "[listen]\nhttp = \"127.0.0.1:8080\"\n"
        };
        let text = format!("{listen}[docker]\nenabled = false\n{extra}");
        FixedParts::of(&berth_core::config::parse_config(&text).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn every_fixed_part_is_compared_by_value() {
        let base = parts("");
        assert_eq!(base.changed_in(&parts("")), Vec::<&str>::new());
        let cases = [
            ("[listen]\nhttp = \"127.0.0.1:8081\"", "listen"),
            ("[tls]\ncerts-dir = \"/elsewhere\"", "tls"),
            (
                "[acme]\nchallenge-dir = \"/elsewhere\"",
                "acme.challenge-dir / acme.account-thumbprint",
            ),
            (
                "[acme]\naccount-thumbprint = \"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\"",
                "acme.challenge-dir / acme.account-thumbprint",
            ),
            (
                "swarm-poll = \"9s\"",
                "docker.enabled / docker.endpoint / docker.swarm / docker.swarm-poll",
            ),
            ("[log]\naccess = \"off\"", "log.access"),
            ("[server]\ngrace-period = \"3s\"", "server"),
        ];
        for (extra, key) in cases {
            assert_eq!(base.changed_in(&parts(extra)), [key], "{extra}");
        }
        let docker = parts("");
        let other = FixedParts {
            docker: (berth_core::config::DockerMode::On, None, docker.docker.2),
            ..docker.clone()
        };
        assert_eq!(
            docker.changed_in(&other),
            ["docker.enabled / docker.endpoint / docker.swarm / docker.swarm-poll"]
        );
    }

    #[test]
    fn a_change_is_warned_once_and_a_change_back_not_at_all() {
        let (running, moved) = (parts(""), parts("[server]\ngrace-period = \"3s\""));
        let mut fixed = Fixed {
            running: running.clone(),
            last: running.clone(),
        };
        assert_eq!(fixed.warn_for(moved.clone()), ["server"]);
        assert_eq!(fixed.warn_for(moved), Vec::<&str>::new());
        assert_eq!(fixed.warn_for(running.clone()), Vec::<&str>::new());
        assert_eq!(
            fixed.warn_for(parts("[server]\ngrace-period = \"4s\"")),
            ["server"]
        );
        assert_eq!(fixed.warn_for(running), Vec::<&str>::new());
    }
}
