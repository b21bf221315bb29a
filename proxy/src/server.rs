//! Builds the Pingora server from a validated configuration: the shared route table, one
//! proxy service per listener, and the server's own settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy;

use berth_core::config::server::ServerSettings;
use berth_core::config::{DefaultCert, TlsConfig};
use berth_core::contract::ChallengeDir;
use berth_core::docker::{endpoint_to_follow, DockerStatus, DockerWatcher};
use berth_core::labels::ContainerRules;
use berth_plugins::builtin::{AcmeChallenge, AuthFiles, OwnCertificate, SharedThumbprint};
use berth_plugins::registry_cache::RegistryCache;

use berth_core::config::{Config, ConfigSource};
use berth_core::table::RouteTable;
use berth_plugins::{ChainEnv, Scheme, Served, SharedTable, TrustedProxies};

use crate::admin::{Admin, AdminState};
use crate::app::Berth;
use crate::auth_watch::AuthWatcher;
use crate::connections::{Drain, Guarded, ListenerMetrics};
use crate::docker_routes::DockerRoutes;
use crate::metrics::{Live, LiveState, Metrics};
use crate::observe;
use crate::reload::{hangups, stop_on_interrupt, Reloader};
use crate::route_writer::{FileRoutes, Report, RouteWriter};
use crate::supervise::{bind_listener, Health, Supervisor};
use crate::tls::client_auth::{ClientAuthChooser, ClientCertRecorder};
use crate::tls::feed::{FeedMirror, FeedStatus};
use crate::tls::store::LiveStore;
use crate::tls::{ensure_default_cert, CertStore, CertWatcher, Loader, SniResolver};

/// HTTP/2 flow-control window per stream. Pingora's default (64 KiB) holds one upload to a
/// few hundred MB/s. Measured on 2 cores with 512 MiB h2 uploads (`docs/benchmarks.md`): one
/// upload runs as fast with 512 KiB as with 1 MiB or 4 MiB, and 17 % slower with 256 KiB
/// (more WINDOW_UPDATEs, more wake-ups); 64 concurrent uploads peak at about 75 MiB RSS with
/// 512 KiB against 100-105 MiB with 1 MiB, since a stream whose upstream reads slower than the
/// client sends has up to this much buffered in berth.
pub const H2_STREAM_WINDOW: u32 = 512 << 10;
/// HTTP/2 flow-control window per connection, all its streams together: four streams at full
/// window (`docker push` sends up to five layers at once; one connection with 4 uploads ran
/// no faster with 16 MiB).
pub const H2_CONNECTION_WINDOW: u32 = 4 * H2_STREAM_WINDOW;

/// Response bytes one HTTP/2 stream may have queued in berth beyond its client's window, on
/// top of the 64 KiB read from the upstream ahead of it (`vendor/PATCHES.md`, 0001).
pub const H2_SEND_BUFFER: usize = 64 << 10;

fn h2_options(max_header_size: usize) -> pingora_core::protocols::http::v2::server::H2Options {
    let mut options = pingora_core::protocols::http::v2::server::default_h2_options();
    options
        .initial_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // What one stream may have queued in berth for the client beyond what its window
        // has taken: h2's default, 400 KiB, let 100 streams of a client that stops reading its
        // socket hold 40 MB of one connection.
        .max_send_buffer_size(H2_SEND_BUFFER)
        // limits.max-header-size for HTTP/2: a larger header block gets 431.
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
    options
}

/// A client-facing listener on `addr`. Its connections read straight from the socket:
/// Pingora's default 64 KiB read buffer per connection was most of what an idle keep-alive
/// connection cost (108 kB per idle TLS connection with it, 41 kB without). Measured here
/// without it: small GETs over TLS unchanged, one TLS upload within 2 % of the time (with
/// about 7 % more CPU in berth, as rustls then reads the socket 4 KiB at a time).
fn proxy_listener(addr: SocketAddr) -> pingora_core::listeners::ListenerConfig {
    pingora_core::listeners::ListenerConfig::tcp(addr.to_string())
        .l4_buffer(pingora_core::listeners::L4BufferSettings::default().read(0))
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
        // ... and everything of a connection stays there too (a Pingora patch, vendor/
        // PATCHES.md 0003): every thread accepts, and a connection's tasks and its HTTP/2
        // streams are spawned on its own thread instead of a random one; idle upstream
        // connections are pooled per thread (0004).
        thread_local_connections: true,
        listener_tasks_per_fd: threads,
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
    /// The certificate feed's token could not be read.
    #[error("tls.feed-token-file: {0}")]
    Feed(String),
    /// A listening address could not be bound.
    #[error("{key} {addr}: cannot listen: {source}")]
    Listen {
        /// The config key (`listen.http`, ...).
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn metrics_err(e: prometheus::Error) -> StartError {
    StartError::Metrics(e.to_string())
}

/// The certificate store and its reload counts, for metrics.
type CertState = crate::metrics::CertState;

/// What is being built: the server, the start-up message's lines, and the open-connection
/// counts of the proxy listeners (for the drain on shutdown).
struct Wiring {
    server: Server,
    lines: Vec<String>,
    open_counts: Vec<Arc<std::sync::atomic::AtomicUsize>>,
    /// Every service goes through it: a service that dies ends the process.
    supervisor: Supervisor,
    health: Arc<Health>,
    /// The listening sockets berth bound before Pingora starts (none during an upgrade,
    /// where the running berth hands its sockets over).
    bound: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl Wiring {
    /// Adds a background service, supervised.
    fn add_service(
        &mut self,
        service: impl pingora_core::services::ServiceWithDependents + 'static,
    ) {
        self.server.add_service(self.supervisor.service(service));
    }

    /// Adds a listening service on `addr`, supervised, with the socket bound for it.
    fn add_listening(
        &mut self,
        service: impl pingora_core::services::ServiceWithDependents + 'static,
        addr: SocketAddr,
    ) {
        let bound = self
            .bound
            .iter()
            .position(|(a, _)| *a == addr)
            .map(|i| self.bound.swap_remove(i).1);
        self.server
            .add_service(self.supervisor.listening(service, addr, bound));
    }
}

/// Binds every listening address of `listen` now, so that one that is taken is a start-up
/// error naming it (after [`crate::supervise::BIND_WINDOW`] of retries).
fn bind_listeners(
    listen: &berth_core::config::Listen,
) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, StartError> {
    let wanted = [
        ("listen.http", listen.http),
        ("listen.https", listen.https),
        ("listen.metrics", listen.metrics),
    ];
    let mut bound = Vec::new();
    for (key, addr) in wanted {
        let Some(addr) = addr else { continue };
        let socket =
            bind_listener(addr).map_err(|source| StartError::Listen { key, addr, source })?;
        bound.push((addr, socket));
    }
    Ok(bound)
}

/// What the listeners share: the route table, the observer (metrics and access log), the live
/// limits, and the metric handles.
struct Shared {
    table: SharedTable,
    cache: Arc<RegistryCache>,
    observer: Arc<observe::Observer>,
    limits: Arc<ArcSwap<berth_core::config::limits::Limits>>,
    metrics: Option<Arc<Metrics>>,
}

impl Shared {
    /// The metric handles of one listener.
    fn listener_metrics(&self, listener: &str) -> ListenerMetrics {
        let refused = |reason: &str| {
            self.metrics
                .as_ref()
                .map(|m| m.refused_connections.with_label_values(&[listener, reason]))
        };
        ListenerMetrics {
            open: self
                .metrics
                .as_ref()
                .map(|m| m.open_connections.with_label_values(&[listener])),
            over_limit: refused("max_connections"),
            header_timeout: refused("header_timeout"),
            header_too_large: refused("header_too_large"),
            bad_request: refused("bad_request"),
            proxy_protocol: refused("proxy_protocol"),
        }
    }
}

/// Builds the server, one subsystem at a time: Pingora itself, the certificate store, the
/// route table and its writer, Docker, metrics and the access log, config reload, the HTTP
/// and HTTPS listeners, the admin listener, and the drain. Returns the server and one line
/// per listener and watcher, for the start-up message.
///
/// # Errors
/// When a subsystem cannot be set up (certs-dir, the access log, the upgrade socket's
/// directory, the signal handler, a Docker endpoint that cannot be used).
pub fn build_server(
    config: Config,
    source: ConfigSource,
    upgrade: bool,
) -> Result<(Server, Vec<String>), StartError> {
    // Before anything listens: a SIGHUP must never end the process.
    let hangups = hangups().map_err(|e| StartError::Signals(e.to_string()))?;
    stop_on_interrupt().map_err(|e| StartError::Signals(e.to_string()))?;
    // During an upgrade the running berth holds the addresses and hands them over.
    let bound = if upgrade {
        Vec::new()
    } else {
        bind_listeners(&config.listen)?
    };
    let health = Arc::new(Health::default());
    let mut w = Wiring {
        server: pingora_server(&config.server, upgrade)?,
        lines: Vec::new(),
        open_counts: Vec::new(),
        supervisor: Supervisor::new(health.clone()),
        health,
        bound,
    };
    // Certificates first: the routes' HTTPS policy asks the store whether a host has one.
    let certs = match config.listen.https {
        Some(addr) => Some((addr, load_certificates(&config.tls)?)),
        None => None,
    };
    let env = chain_env(certs.as_ref().map(|(addr, (_, store))| (*addr, store)));
    let auth_files = env.auth_files.clone();
    w.add_service(background_service(
        "htpasswd watcher",
        AuthWatcher::new(env.auth_files.clone()),
    ));
    // Upstream health checks, for the routes that ask for them (none: the prober idles).
    w.add_service(background_service(
        "health checks",
        berth_plugins::health::Prober::new(env.health.clone()),
    ));
    let (table, writer, report) = route_table(&config, &env);
    let docker_status = docker(&mut w, &config, &writer)?;
    let thumbprint: SharedThumbprint = Arc::new(ArcSwapOption::from(
        config.acme.account_thumbprint.clone().map(Arc::new),
    ));
    let feed_status = cert_feed(&mut w, &config.tls, &thumbprint)?;
    // Metrics exist only with an admin listener to serve them.
    let metrics = match config.listen.metrics {
        Some(_) => Some(Arc::new(Metrics::new().map_err(metrics_err)?)),
        None => None,
    };
    let cache = registry_cache(&config);
    let shared = Shared {
        cache,
        observer: observe::observer(metrics.clone(), &config.access_log)
            .map_err(|e| StartError::AccessLog(e.to_string()))?,
        limits: Arc::new(ArcSwap::from_pointee(config.limits)),
        table,
        metrics,
    };
    w.add_service(background_service(
        "config reload",
        Reloader::new(
            source,
            &config,
            hangups,
            writer,
            shared.limits.clone(),
            env,
            shared.metrics.as_ref().map(|m| m.config_reloads.clone()),
        ),
    ));
    if let Some(addr) = config.listen.http {
        http_listener(
            &mut w,
            &shared,
            addr,
            &config.acme.challenge_dir,
            thumbprint,
            &config.listen.proxy_protocol,
        );
    }
    let cert_state = match certs {
        Some((addr, (loader, store))) => Some(https_listener(
            &mut w,
            &shared,
            addr,
            &config,
            (loader, store),
            auth_files,
        )?),
        None => None,
    };
    if let Some(addr) = config.listen.metrics {
        let live = Live {
            certs: cert_state,
            docker: docker_status,
            feed: feed_status,
            cache: Some(shared.cache.clone()),
        };
        admin_listener(&mut w, &shared, addr, report, live, config.acme.metrics)?;
    }
    let drain = Drain::new(std::mem::take(&mut w.open_counts));
    w.add_service(background_service("drain", drain));
    Ok((w.server, w.lines))
}

/// The registry cache: opened at once (in the background) when a route of the configuration
/// caches or a previous run left a cache; else when a route that caches first asks for it (a
/// label, a reload).
fn registry_cache(config: &Config) -> Arc<RegistryCache> {
    let cache = Arc::new(RegistryCache::new(config.cache.clone()));
    if config.routes.iter().any(|r| r.cache) || config.cache.dir.join("sha256").is_dir() {
        cache.open_in_background();
    }
    cache
}

/// Pingora's server, bootstrapped: with `upgrade` this waits (about 5 s at most) for the
/// running berth, sent SIGQUIT, to hand over its listening sockets.
fn pingora_server(settings: &ServerSettings, upgrade: bool) -> Result<Server, StartError> {
    if let Some(dir) = settings.upgrade_socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            StartError::Upgrade(format!("{}: {e}", settings.upgrade_socket.display()))
        })?;
    }
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(settings));
    server.bootstrap();
    Ok(server)
}

/// What every route's chain is built with: the certificate lookup of the HTTPS policy (with
/// the HTTPS port), the shared htpasswd files, the upstreams' health.
fn chain_env(https: Option<(SocketAddr, &Arc<ArcSwap<CertStore>>)>) -> ChainEnv {
    ChainEnv {
        https: https.map(|(addr, store)| {
            let lookup: Arc<dyn OwnCertificate> = Arc::new(LiveStore(store.clone()));
            (addr.port(), lookup)
        }),
        auth_files: Arc::default(),
        health: Arc::default(),
    }
}

/// The route table and its one writer, built from the file's routes (containers join when
/// Docker reports them; a reload hands the writer new file routes).
fn route_table(
    config: &Config,
    env: &ChainEnv,
) -> (SharedTable, Arc<Mutex<RouteWriter>>, Arc<ArcSwap<Report>>) {
    let trust = TrustedProxies::new(config.trusted_proxies.clone());
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(Served {
        routes: RouteTable::new(Vec::new()),
        trust: trust.clone(),
        pages: Arc::default(),
    }));
    let mut writer = RouteWriter::new(
        FileRoutes {
            routes: config.routes.clone(),
            defaults: config.defaults.clone(),
            container_rules: ContainerRules {
                preferred_network: config.docker.network.clone(),
                label_files: config.docker.label_files.clone(),
                allowed_hosts: config.docker.allowed_hosts.clone(),
                own_networks: Vec::new(),
            },
            env: env.clone(),
            trust,
        },
        table.clone(),
    );
    writer.rebuild(&Arc::default());
    let report = writer.report();
    (table, Arc::new(Mutex::new(writer)), report)
}

/// The Docker service, when `[docker]` asks for it and an endpoint answers the rules; its
/// connection state, for metrics and `/routes`.
fn docker(
    w: &mut Wiring,
    config: &Config,
    writer: &Arc<Mutex<RouteWriter>>,
) -> Result<Option<Arc<DockerStatus>>, StartError> {
    match endpoint_to_follow(&config.docker).map_err(StartError::Docker)? {
        Ok(endpoint) => {
            let (watcher, snapshots) = DockerWatcher::new(endpoint.clone());
            let watcher = watcher.with_swarm(config.docker.swarm, config.docker.swarm_poll);
            let service = DockerRoutes::new(watcher, snapshots, writer.clone());
            let status = service.status();
            w.add_service(background_service("docker discovery", service));
            w.lines
                .push(format!("docker discovery: following {endpoint}"));
            Ok(Some(status))
        }
        Err(reason) => {
            w.lines.push(format!("docker discovery: {reason}"));
            Ok(None)
        }
    }
}

/// The certificate feed mirror, on an edge with `tls.feed`; its connection state, for
/// metrics. It keeps `thumbprint` up to date for stateless HTTP-01 answers.
fn cert_feed(
    w: &mut Wiring,
    tls: &TlsConfig,
    thumbprint: &SharedThumbprint,
) -> Result<Option<Arc<FeedStatus>>, StartError> {
    let Some(feed) = &tls.feed else {
        return Ok(None);
    };
    let mirror = FeedMirror::new(feed, tls.certs_dir.clone(), thumbprint.clone())
        .map_err(StartError::Feed)?;
    let status = mirror.status();
    w.add_service(background_service("certificate feed", mirror));
    w.lines.push(format!(
        "certificate feed: mirroring http://{} into {}",
        feed.authority,
        tls.certs_dir.path().display()
    ));
    Ok(Some(status))
}

/// The plain HTTP listener, which also answers ACME challenges.
fn http_listener(
    w: &mut Wiring,
    shared: &Shared,
    addr: SocketAddr,
    challenge_dir: &ChallengeDir,
    thumbprint: SharedThumbprint,
    proxy_protocol: &[ipnet::IpNet],
) {
    let app = Berth::new(
        Scheme::Http,
        shared.table.clone(),
        shared.observer.clone(),
        shared.limits.clone(),
        shared.cache.clone(),
    )
    .with_challenges(AcmeChallenge::new(challenge_dir.clone(), thumbprint));
    let proxy = http_proxy(&w.server.configuration, app);
    let guarded = Guarded::new(
        proxy,
        "http",
        shared.limits.clone(),
        shared.listener_metrics("http"),
    )
    .with_proxy_protocol(proxy_protocol.to_vec());
    w.open_counts.push(guarded.open_connections());
    let mut service = Service::new("berth http".to_string(), guarded);
    service.add_listener(proxy_listener(addr));
    w.add_listening(service, addr);
    w.lines.push(format!(
        "listening on http://{addr} (ACME challenges from {})",
        challenge_dir.path().display()
    ));
}

/// The HTTPS listener and the certificate watcher; the certificate state, for metrics.
fn https_listener(
    w: &mut Wiring,
    shared: &Shared,
    addr: SocketAddr,
    config: &Config,
    (loader, store): (Loader, Arc<ArcSwap<CertStore>>),
    auth_files: Arc<AuthFiles>,
) -> Result<CertState, StartError> {
    let dir = loader.dir().to_path_buf();
    let state = (store.clone(), loader.counts.clone());
    let resolver = Arc::new(SniResolver::new(store.clone(), shared.table.clone()));
    // Hosts with client-ca get a handshake config of their own (tls/client_auth.rs), and
    // each connection for one the certificate it verified.
    let chooser = Arc::new(ClientAuthChooser::new(
        shared.table.clone(),
        auth_files,
        resolver.clone(),
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        shared
            .metrics
            .as_ref()
            .map(|m| m.client_cert_errors.clone()),
    ));
    let mut tls = TlsSettings::with_callbacks(Box::new(ClientCertRecorder::new(chooser.clone())))
        .map_err(|e| StartError::Tls(e.to_string()))?;
    tls.set_cert_resolver(resolver);
    tls.enable_h2();
    tls.set_server_config_chooser(chooser);
    let mut proxy = http_proxy(
        &w.server.configuration,
        Berth::new(
            Scheme::Https,
            shared.table.clone(),
            shared.observer.clone(),
            shared.limits.clone(),
            shared.cache.clone(),
        ),
    );
    proxy.h2_options = Some(h2_options(config.limits.max_header_size));
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(config.limits.keepalive_timeout).filter(|d| !d.is_zero());
    proxy.server_options = Some(options);
    // berth terminates TLS itself (Guarded), so that handshakes are bounded by
    // limits.header-timeout and counted in limits.max-connections.
    let guarded = Guarded::new(
        proxy,
        "https",
        shared.limits.clone(),
        shared.listener_metrics("https"),
    )
    .with_proxy_protocol(config.listen.proxy_protocol.clone())
    .with_tls(tls.build());
    w.open_counts.push(guarded.open_connections());
    let mut service = Service::new("berth https".to_string(), guarded);
    service.add_listener(proxy_listener(addr));
    w.add_listening(service, addr);
    w.add_service(background_service(
        "certificate watcher",
        CertWatcher::new(loader, store),
    ));
    w.lines.push(format!(
        "listening on https://{addr} (certificates from {})",
        dir.display()
    ));
    Ok(state)
}

/// The admin listener: the dashboard and its data, `/metrics`, `/healthz`.
fn admin_listener(
    w: &mut Wiring,
    shared: &Shared,
    addr: SocketAddr,
    report: Arc<ArcSwap<Report>>,
    live: Live,
    acme_metrics: Option<SocketAddr>,
) -> Result<(), StartError> {
    let Some(metrics) = shared.metrics.clone() else {
        return Ok(());
    };
    let state = AdminState {
        table: shared.table.clone(),
        report,
        docker: live.docker.clone(),
        metrics: metrics.clone(),
        certs: live.certs.as_ref().map(|(store, _)| store.clone()),
        acme: acme_metrics,
        health: w.health.clone(),
    };
    let live = LiveState::new(shared.table.clone(), live).map_err(metrics_err)?;
    metrics.register(Box::new(live)).map_err(metrics_err)?;
    let mut service = Service::new("berth admin".to_string(), Admin::new(state));
    service.add_tcp(&addr.to_string());
    w.add_listening(service, addr);
    w.lines.push(format!(
        "listening on http://{addr} (admin: the dashboard at /, /metrics, /routes, /certificates, /traffic, /status, /healthz)"
    ));
    Ok(())
}

/// Prepares certs-dir (creating it, and the default certificate when asked) and loads it.
fn load_certificates(tls: &TlsConfig) -> Result<(Loader, Arc<ArcSwap<CertStore>>), StartError> {
    let certs = tls.certs_dir.clone();
    let io_err = |source| StartError::CertsDir {
        dir: certs.path().to_path_buf(),
        source,
    };
    std::fs::create_dir_all(certs.path()).map_err(io_err)?;
    if tls.default_cert == DefaultCert::Generate && ensure_default_cert(&certs).map_err(io_err)? {
        tracing::info!(dir = %certs.path().display(), "generated a self-signed default certificate");
    }
    let mut loader = Loader::new(certs.clone());
    let initial = loader.rescan(&CertStore::default()).unwrap_or_default();
    Ok((loader, Arc::new(ArcSwap::from_pointee(initial))))
}
