//! Builds the Pingora server from a validated configuration: the shared route table, one
//! proxy service per listener, and the server's own settings.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy;

use berth_core::config::server::ServerSettings;
use berth_core::config::{DefaultCert, TlsConfig};
use berth_core::docker::{endpoint_to_follow, DockerWatcher};
use berth_plugins::builtin::{AcmeChallenge, OwnCertificate};

use berth_core::config::{Config, ConfigSource};
use berth_core::table::RouteTable;
use berth_plugins::{ChainEnv, Scheme, SharedTable};

use crate::admin::Admin;
use crate::app::Berth;
use crate::auth_watch::AuthWatcher;
use crate::connections::{Drain, Guarded, ListenerMetrics};
use crate::docker_routes::DockerRoutes;
use crate::metrics::{LiveState, Metrics};
use crate::observe;
use crate::reload::{hangups, Reloader};
use crate::route_writer::{FileRoutes, RouteWriter};
use crate::tls::store::LiveStore;
use crate::tls::{ensure_default_cert, CertStore, CertWatcher, Loader, SniResolver};

/// HTTP/2 flow-control window per stream. Pingora's default (64 KiB) holds one upload to a
/// few hundred MB/s; 1 MiB lets an h2 upload run at HTTP/1.1 speed. The cost is memory: a
/// stream whose upstream reads slower than the client sends has up to this much buffered in
/// berth (measured: 64 concurrent 1 GiB h2 uploads peaked at 340 MiB RSS with 4 MiB windows,
/// 123 MiB with 1 MiB, at the same throughput).
pub const H2_STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 flow-control window per connection (all its streams together).
pub const H2_CONNECTION_WINDOW: u32 = 4 << 20;

fn h2_options(max_header_size: usize) -> pingora_core::protocols::http::v2::server::H2Options {
    let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
    options
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // limits.max-header-size for HTTP/2: a larger header block gets 431.
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
    options
}

/// The Pingora server settings berth uses.
fn server_conf(settings: &ServerSettings) -> ServerConf {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    ServerConf {
        upgrade_sock: settings.upgrade_socket.display().to_string(),
        threads,
        // One runtime per thread, as nginx has one event loop per worker: a connection stays
        // on the thread that accepted it. Measured here: small requests +20-30 % and uploads
        // level with or ahead of nginx, where tokio's work stealing woke threads per request.
        work_stealing: false,
        // A stopping berth waits at most this long for in-flight requests; it exits as soon
        // as the last connection has closed (see `Drain`).
        grace_period_seconds: Some(settings.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The certificate directory could not be prepared.
    #[error("tls.certs-dir {dir}: {source}")]
    CertsDir {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The TLS listener could not be set up.
    #[error("listen.https: {0}")]
    Tls(String),
    /// Docker discovery was asked for but has no usable endpoint.
    #[error("docker: {0}")]
    Docker(String),
    /// The access log could not be opened.
    #[error("log.access: {0}")]
    AccessLog(String),
    /// The upgrade socket's directory could not be created.
    #[error("server.upgrade-socket: {0}")]
    Upgrade(String),
    /// The SIGHUP handler could not be installed.
    #[error("signals: {0}")]
    Signals(String),
    /// A metric could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(String),
}

fn metrics_err(e: prometheus::Error) -> StartError {
    StartError::Metrics(e.to_string())
}

/// Builds the server: the shared route table, a proxy service per listener, for HTTPS the
/// certificate store with its watcher, Docker discovery and the admin listener. Returns the
/// server and one line per listener and watcher, for the start-up message.
///
/// # Errors
/// When certs-dir cannot be created or the default certificate cannot be written.
pub fn build_server(
    config: Config,
    source: ConfigSource,
    upgrade: bool,
) -> Result<(Server, Vec<String>), StartError> {
    // Before anything listens: a SIGHUP must never end the process.
    let hangups = hangups().map_err(|e| StartError::Signals(e.to_string()))?;
    if let Some(dir) = config.server.upgrade_socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::Upgrade(format!("{}: {e}", config.server.upgrade_socket.display()))
        })?;
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(&config.server));
    // With --upgrade this waits (about 5 s at most) for the running berth, sent SIGQUIT, to
    // hand over its listening sockets.
    server.bootstrap();
    let mut listeners = Vec::new();

    // Certificates first: the routes' HTTPS policy asks the store whether a host has one.
    let certs = match config.listen.https {
        Some(addr) => Some((addr, load_certificates(&config.tls)?)),
        None => None,
    };
    let env = ChainEnv {
        trusted_proxies: config.trusted_proxies.clone().into(),
        https: certs.as_ref().map(|(addr, (_, store))| {
            let lookup: Arc<dyn OwnCertificate> = Arc::new(LiveStore(store.clone()));
            (addr.port(), lookup)
        }),
        auth_files: Arc::default(),
    };
    // One builder makes the table from the file's routes (and the containers', with Docker
    // discovery); a reload hands it new file routes.
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(RouteTable::new(Vec::new())));
    let mut builder = RouteWriter::new(
        FileRoutes {
            routes: config.routes.clone(),
            defaults: config.defaults.clone(),
            preferred_network: config.docker.network.clone(),
            env: env.clone(),
        },
        table.clone(),
    );
    builder.rebuild(&Arc::default());
    let report = builder.report();
    let builder = Arc::new(Mutex::new(builder));

    server.add_service(background_service(
        "htpasswd watcher",
        AuthWatcher::new(env.auth_files.clone()),
    ));

    // Docker discovery rebuilds the table from the file's routes plus the containers'.
    let mut docker_status = None;
    match endpoint_to_follow(&config.docker).map_err(StartError::Docker)? {
        Ok(endpoint) => {
            let (watcher, snapshots) = DockerWatcher::new(endpoint.clone());
            let discovery = DockerRoutes::new(watcher, snapshots, builder.clone());
            docker_status = Some(discovery.status());
            server.add_service(background_service("docker discovery", discovery));
            listeners.push(format!("docker discovery: following {endpoint}"));
        }
        Err(reason) => listeners.push(format!("docker discovery: {reason}")),
    }

    // Metrics exist only with an admin listener to serve them.
    let metrics = match config.listen.metrics {
        Some(_) => Some(Arc::new(Metrics::new().map_err(metrics_err)?)),
        None => None,
    };
    let observer = observe::observer(metrics.clone(), &config.access_log)
        .map_err(|e| StartError::AccessLog(e.to_string()))?;
    let limits = Arc::new(ArcSwap::from_pointee(config.limits));
    let mut open_counts = Vec::new();
    server.add_service(background_service(
        "config reload",
        Reloader::new(
            source,
            &config,
            hangups,
            builder,
            limits.clone(),
            env.clone(),
            metrics.as_ref().map(|m| m.config_reloads.clone()),
        ),
    ));
    let listener_metrics = |listener: &str| {
        let refused = |reason: &str| {
            metrics
                .as_ref()
                .map(|m| m.refused_connections.with_label_values(&[listener, reason]))
        };
        ListenerMetrics {
            open: metrics
                .as_ref()
                .map(|m| m.open_connections.with_label_values(&[listener])),
            over_limit: refused("max_connections"),
            header_timeout: refused("header_timeout"),
            header_too_large: refused("header_too_large"),
            bad_request: refused("bad_request"),
        }
    };

    if let Some(addr) = config.listen.http {
        let app = Berth::new(Scheme::Http, table.clone(), observer.clone())
            .with_challenges(AcmeChallenge::new(config.acme.challenge_dir.clone()));
        let proxy = http_proxy(&server.configuration, app);
        let guarded = Guarded::new(proxy, "http", limits.clone(), listener_metrics("http"));
        open_counts.push(guarded.open_connections());
        let mut service = Service::new("berth http".to_string(), guarded);
        service.add_tcp(&addr.to_string());
        server.add_service(service);
        listeners.push(format!(
            "listening on http://{addr} (ACME challenges from {})",
            config.acme.challenge_dir.display()
        ));
    }
    let mut cert_state = None;
    if let Some((addr, (loader, store))) = certs {
        let dir = loader.dir().to_path_buf();
        cert_state = Some((store.clone(), loader.counts.clone()));
        let mut tls =
            TlsSettings::intermediate("", "").map_err(|e| StartError::Tls(e.to_string()))?;
        tls.set_cert_resolver(Arc::new(SniResolver::new(store.clone(), table.clone())));
        tls.enable_h2();
        let mut proxy = http_proxy(
            &server.configuration,
            Berth::new(Scheme::Https, table.clone(), observer.clone()),
        );
        proxy.h2_options = Some(h2_options(config.limits.max_header_size));
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(config.limits.keepalive_timeout).filter(|d| !d.is_zero());
        proxy.server_options = Some(options);
        // berth terminates TLS itself (Guarded), so that handshakes are bounded by
        // limits.header-timeout and counted in limits.max-connections.
        let guarded = Guarded::new(proxy, "https", limits.clone(), listener_metrics("https"))
            .with_tls(tls.build());
        open_counts.push(guarded.open_connections());
        let mut service = Service::new("berth https".to_string(), guarded);
        service.add_tcp(&addr.to_string());
        server.add_service(service);
        server.add_service(background_service(
            "certificate watcher",
            CertWatcher::new(loader, store),
        ));
        listeners.push(format!(
            "listening on https://{addr} (certificates from {})",
            dir.display()
        ));
    }

    if let (Some(addr), Some(metrics)) = (config.listen.metrics, metrics) {
        let live = LiveState::new(table.clone(), cert_state, docker_status.clone())
            .map_err(metrics_err)?;
        metrics.register(Box::new(live)).map_err(metrics_err)?;
        let admin = Admin::new(table.clone(), report, docker_status, metrics);
        let mut service = Service::new("berth admin".to_string(), admin);
        service.add_tcp(&addr.to_string());
        server.add_service(service);
        listeners.push(format!(
            "listening on http://{addr} (admin: /metrics, /routes, /healthz)"
        ));
    }
    server.add_service(background_service("drain", Drain::new(open_counts)));
    Ok((server, listeners))
}

/// Prepares certs-dir (creating it, and the default certificate when asked) and loads it.
fn load_certificates(tls: &TlsConfig) -> Result<(Loader, Arc<ArcSwap<CertStore>>), StartError> {
    let dir = tls.certs_dir.clone();
    let io_err = |source| StartError::CertsDir {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    if tls.default_cert == DefaultCert::Generate && ensure_default_cert(&dir).map_err(io_err)? {
        tracing::info!(dir = %dir.display(), "generated a self-signed default certificate");
    }
    let mut loader = Loader::new(dir.clone());
    let initial = loader.rescan(&CertStore::default()).unwrap_or_default();
    Ok((loader, Arc::new(ArcSwap::from_pointee(initial))))
}
