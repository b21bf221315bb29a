//! The Docker client both binaries use to follow containers (bollard). It is the one module
//! of this crate that does I/O; everything it learns is handed out as an immutable
//! [`Snapshot`] through a `tokio::sync::watch` channel, and what a container *means* is
//! decided by the pure label schema in [`crate::labels`].
//!
//! How it stays in sync: connect and negotiate the API version (Debian's dockerd speaks 1.41,
//! older than bollard's default), subscribe to the events stream with `since` set to just
//! before listing, list and inspect every running container, publish; then re-inspect a
//! container on each event that concerns it (start, die, stop, kill, destroy, pause,
//! unpause, rename, health_status, network connect/disconnect) and publish when what berth
//! sees of it changed. Handling is idempotent, so events replayed by `since` do no harm.
//! When the daemon goes away the last snapshot stays published (berth keeps serving the last
//! known routes); the watcher reconnects with backoff and re-lists everything, so nothing
//! that happened in between is lost. Only read endpoints of the API are used.
//!
//! When the daemon is a Swarm manager (and `docker.swarm` allows it), the watcher also reads
//! services and their tasks ([`swarm`]): at once on a service event, and every
//! `docker.swarm-poll`, since task changes are not announced on every manager. Containers of
//! Swarm tasks are then read through their service, not as containers.
//!
//! ```toml
//! [docker]
//! enabled = "auto"                       # auto | true | false
//! endpoint = "unix:///var/run/docker.sock"
//! network = ""                           # preferred network for container addresses
//! swarm = "auto"                         # auto | true | false
//! swarm-poll = "5s"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::config::{parse_docker_endpoint, DockerEndpoint, DockerMode, DEFAULT_DOCKER_ENDPOINT};
use crate::labels::ContainerInfo;

mod container;
pub mod swarm;

pub use container::{container_info, own_container_id};

/// Container events that can change what a container looks like to berth.
const CONTAINER_ACTIONS: [&str; 9] = [
    "start",
    "die",
    "stop",
    "kill",
    "destroy",
    "pause",
    "unpause",
    "rename",
    "health_status",
];
/// Network events that can change a container's addresses.
const NETWORK_ACTIONS: [&str; 2] = ["connect", "disconnect"];
/// Service events (Swarm managers): the service's spec or existence changed.
const SERVICE_ACTIONS: [&str; 3] = ["create", "update", "remove"];
/// After a service event, when to read the tasks again (Swarm acts on the change a moment
/// after announcing it).
const SERVICE_SETTLE: Duration = Duration::from_millis(500);
/// Largest Engine API answer read directly (the task list of a large Swarm).
const MAX_ENGINE_ANSWER: usize = 64 * 1024 * 1024;

/// Time allowed for one API call (list, inspect, the events stream's first answer).
const API_TIMEOUT_SECS: u64 = 10;
/// First and longest wait between reconnection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the watcher knows, published whole on every change.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Running containers by id.
    pub containers: BTreeMap<String, Arc<ContainerInfo>>,
    /// Swarm tasks (`task:<id>`) and virtual-IP services (`service:<id>`), when berth reads
    /// Swarm.
    pub services: BTreeMap<String, Arc<ContainerInfo>>,
    /// Networks of the container berth itself runs in, if it runs in one.
    pub own_networks: Vec<String>,
}

impl Snapshot {
    /// Containers, then Swarm entries, by key.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Arc<ContainerInfo>)> {
        self.containers.iter().chain(self.services.iter())
    }

    /// The container or Swarm entry under `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<ContainerInfo>> {
        self.containers.get(key).or_else(|| self.services.get(key))
    }
}

/// Live state of the connection, for metrics and `/routes`.
#[derive(Debug, Default)]
pub struct DockerStatus {
    connected: AtomicBool,
    swarm: AtomicBool,
    events: Mutex<BTreeMap<String, u64>>,
}

impl DockerStatus {
    /// Whether the events stream is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether Swarm services are being read (the daemon is a manager and `docker.swarm`
    /// allows it).
    pub fn swarm(&self) -> bool {
        self.swarm.load(Ordering::Relaxed)
    }

    /// Events received so far, by action (`start`, `die`, `health_status`, `connect`, ...).
    pub fn events(&self) -> BTreeMap<String, u64> {
        self.events.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count(&self, action: &str) {
        if let Ok(mut m) = self.events.lock() {
            *m.entry(action.to_string()).or_default() += 1;
        }
    }
}

/// Why a session with the daemon ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("the events stream ended")]
    StreamEnded,
    #[error("{0}")]
    Engine(String),
}

/// Follows the containers (and, on a Swarm manager, the services) of one Docker daemon.
#[derive(Debug)]
pub struct DockerWatcher {
    endpoint: DockerEndpoint,
    tx: watch::Sender<Arc<Snapshot>>,
    status: Arc<DockerStatus>,
    swarm: DockerMode,
    swarm_poll: Duration,
}

/// Resolves the endpoint to use: the configured one, else `DOCKER_HOST`, else the default
/// socket.
///
/// # Errors
/// When `DOCKER_HOST` is set to something that is not a `unix://` or `tcp://` address.
pub fn resolve_endpoint(configured: Option<&DockerEndpoint>) -> Result<DockerEndpoint, String> {
    if let Some(e) = configured {
        return Ok(e.clone());
    }
    match std::env::var("DOCKER_HOST") {
        Ok(v) if !v.trim().is_empty() => {
            parse_docker_endpoint(&v).map_err(|e| format!("DOCKER_HOST: {e}"))
        }
        _ => parse_docker_endpoint(DEFAULT_DOCKER_ENDPOINT),
    }
}

/// The endpoint to follow when discovery is on, or why it is off (`Err` inside `Ok`): `false`
/// turns it off; `auto` turns it on when the endpoint's socket exists (a `tcp://` endpoint
/// always counts).
///
/// # Errors
/// When `DOCKER_HOST` is malformed.
pub fn endpoint_to_follow(
    config: &crate::config::DockerConfig,
) -> Result<Result<DockerEndpoint, String>, String> {
    use crate::config::DockerMode;
    if config.mode == DockerMode::Off {
        return Ok(Err("off (docker.enabled = false)".to_string()));
    }
    let endpoint = resolve_endpoint(config.endpoint.as_ref())?;
    if config.mode == DockerMode::Auto {
        if let DockerEndpoint::Unix(path) = &endpoint {
            if !path.exists() {
                return Ok(Err(format!("off (no socket at {})", path.display())));
            }
        }
    }
    Ok(Ok(endpoint))
}

impl DockerWatcher {
    /// A watcher for `endpoint`, and the receiving end of its snapshots.
    pub fn new(endpoint: DockerEndpoint) -> (DockerWatcher, watch::Receiver<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let watcher = DockerWatcher {
            endpoint,
            tx,
            status: Arc::default(),
            swarm: DockerMode::Auto,
            swarm_poll: crate::config::DEFAULT_SWARM_POLL,
        };
        (watcher, rx)
    }

    /// Reads Swarm services as `mode` says (`Auto`: when the daemon is a manager), tasks
    /// every `poll`.
    #[must_use]
    pub fn with_swarm(mut self, mode: DockerMode, poll: Duration) -> DockerWatcher {
        self.swarm = mode;
        self.swarm_poll = poll;
        self
    }

    /// The connection state, shared.
    pub fn status(&self) -> Arc<DockerStatus> {
        self.status.clone()
    }

    /// Runs until `shutdown` turns true (or its sender goes away).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_FIRST;
        let mut failing = false;
        loop {
            let mut was_connected = false;
            let result = tokio::select! {
                r = self.session(&mut was_connected) => r,
                _ = shutdown.changed() => return,
            };
            self.status.connected.store(false, Ordering::Relaxed);
            if was_connected {
                backoff = BACKOFF_FIRST;
                failing = false;
            }
            if let Err(e) = result {
                if failing {
                    tracing::debug!(endpoint = %self.endpoint, "docker: still unreachable: {e}");
                } else {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        "docker: {e}; keeping the last known routes and retrying"
                    );
                    failing = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn connect(&self) -> Result<Docker, bollard::errors::Error> {
        match &self.endpoint {
            DockerEndpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            DockerEndpoint::Tcp(addr) => Docker::connect_with_http(
                &format!("tcp://{addr}"),
                API_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
        }
    }

    /// Whether to read Swarm services from this daemon: a manager, unless `docker.swarm`
    /// is false.
    async fn swarm_on(&self, docker: &Docker) -> Result<bool, SessionError> {
        if self.swarm == DockerMode::Off {
            return Ok(false);
        }
        let manager = match docker.info().await {
            Ok(info) => info
                .swarm
                .and_then(|s| s.control_available)
                .unwrap_or(false),
            Err(e) => {
                // Not knowing is not "no": the session is retried rather than run without
                // the services.
                return Err(e.into());
            }
        };
        if !manager && self.swarm == DockerMode::On {
            tracing::warn!(
                endpoint = %self.endpoint,
                "docker: docker.swarm = true, but this daemon is not a Swarm manager; reading \
                 containers only (point docker.endpoint at a manager)"
            );
        }
        Ok(manager)
    }

    /// One connection: list everything, then follow events until the stream fails.
    async fn session(&self, connected: &mut bool) -> Result<(), SessionError> {
        let docker = self.connect()?.negotiate_version().await?;
        let swarm = self.swarm_on(&docker).await?;
        self.status.swarm.store(swarm, Ordering::Relaxed);
        // Events from one second before the listing on are replayed (`since` has whole-second
        // resolution), so a change between listing and subscribing is not lost.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let mut types = vec!["container", "network"];
        let mut actions: Vec<&str> = CONTAINER_ACTIONS
            .iter()
            .chain(&NETWORK_ACTIONS)
            .copied()
            .collect();
        if swarm {
            types.push("service");
            actions.extend(SERVICE_ACTIONS);
        }
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        filters.insert("type", types);
        filters.insert("event", actions);
        let options = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));

        let mut swarm_reader = swarm.then(|| SwarmReader::new(&self.endpoint, &docker));
        let mut snapshot = list(&docker, swarm).await?;
        if let Some(reader) = swarm_reader.as_mut() {
            snapshot.services = reader.read(&docker).await?;
        }
        tracing::info!(
            endpoint = %self.endpoint,
            containers = snapshot.containers.len(),
            swarm,
            swarm_entries = snapshot.services.len(),
            "docker: connected"
        );
        self.tx.send_replace(Arc::new(snapshot));
        self.status.connected.store(true, Ordering::Relaxed);
        *connected = true;

        let mut poll = tokio::time::interval(self.swarm_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                _ = poll.tick(), if swarm_reader.is_some() => {
                    self.refresh_swarm(&docker, swarm_reader.as_mut()).await?;
                    continue;
                }
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionError::StreamEnded),
            };
            if event.typ == Some(EventMessageTypeEnum::SERVICE) {
                if let Some(action) = event.action.as_deref() {
                    self.status.count(&format!("service_{action}"));
                }
                self.refresh_swarm(&docker, swarm_reader.as_mut()).await?;
                // Swarm changes the tasks shortly after it announces the service change
                // (a scale-down marks tasks for shutdown a moment later): look again soon.
                poll.reset_after(SERVICE_SETTLE.min(self.swarm_poll));
                continue;
            }
            let Some((action, id)) = event_target(&event) else {
                continue;
            };
            self.status.count(&action);
            let of_task = event
                .actor
                .as_ref()
                .and_then(|a| a.attributes.as_ref())
                .is_some_and(|a| a.contains_key("com.docker.swarm.task.id"));
            if swarm && of_task {
                // A task's container started or stopped on this node: its service is read
                // now, and again a moment later (Swarm reports the task running only after
                // its container started), rather than at the next poll.
                self.refresh_swarm(&docker, swarm_reader.as_mut()).await?;
                poll.reset_after(SERVICE_SETTLE.min(self.swarm_poll));
                continue;
            }
            let info = inspect(&docker, &id)
                .await?
                .filter(|i| !(swarm && swarm::is_task_container(i)));
            let current = self.tx.borrow().containers.get(&id).cloned();
            if current.as_deref() == info.as_ref() {
                continue;
            }
            tracing::debug!(container = %id, action = %action, "docker: container changed");
            self.tx.send_modify(|snapshot| {
                let s = Arc::make_mut(snapshot);
                match info {
                    Some(info) => {
                        s.containers.insert(id, Arc::new(info));
                    }
                    None => {
                        s.containers.remove(&id);
                    }
                }
            });
        }
    }

    /// Reads services and tasks again and publishes when they changed. A failed read (no
    /// leader for a moment, a timeout) keeps what was last read and is retried at the next
    /// poll; only the events stream ends a session.
    async fn refresh_swarm(
        &self,
        docker: &Docker,
        reader: Option<&mut SwarmReader>,
    ) -> Result<(), SessionError> {
        let Some(reader) = reader else {
            return Ok(());
        };
        let services = match reader.read(docker).await {
            Ok(s) => {
                if reader.failing {
                    tracing::info!("docker: swarm services readable again");
                    reader.failing = false;
                }
                s
            }
            Err(e) => {
                if !reader.failing {
                    tracing::warn!("docker: reading swarm services failed: {e}; keeping the last ones and retrying");
                    reader.failing = true;
                }
                return Ok(());
            }
        };
        if self.tx.borrow().services == services {
            return Ok(());
        }
        tracing::debug!(entries = services.len(), "docker: swarm tasks changed");
        self.tx
            .send_modify(|snapshot| Arc::make_mut(snapshot).services = services);
        Ok(())
    }
}

/// Reads Swarm services, their running tasks and the networks, and remembers the exposed
/// ports of images it has looked up.
struct SwarmReader {
    endpoint: DockerEndpoint,
    /// `/v1.41` — the negotiated API version, for the requests made without the client.
    prefix: String,
    /// Exposed ports of images found on this daemon (an image it does not have is asked
    /// about again on the next read).
    image_ports: HashMap<String, Vec<u16>>,
    /// The last read failed (logged once).
    failing: bool,
}

impl SwarmReader {
    fn new(endpoint: &DockerEndpoint, docker: &Docker) -> SwarmReader {
        let v = docker.client_version();
        SwarmReader {
            endpoint: endpoint.clone(),
            prefix: format!("/v{}.{}", v.major_version, v.minor_version),
            image_ports: HashMap::new(),
            failing: false,
        }
    }

    async fn read(
        &mut self,
        docker: &Docker,
    ) -> Result<BTreeMap<String, Arc<ContainerInfo>>, SessionError> {
        let services: Vec<swarm::ServiceView> = docker
            .list_services(None::<bollard::query_parameters::ListServicesOptions>)
            .await?
            .into_iter()
            .filter_map(swarm::service_view)
            .collect();
        // {"desired-state":["running"]}
        let path = format!(
            "{}/tasks?filters=%7B%22desired-state%22%3A%5B%22running%22%5D%7D",
            self.prefix
        );
        let body = engine_get(&self.endpoint, &path).await?;
        let tasks: Vec<swarm::RawTask> = serde_json::from_slice(&body)
            .map_err(|e| SessionError::Engine(format!("GET /tasks: {e}")))?;
        let networks: HashMap<String, swarm::NetworkName> = docker
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await?
            .into_iter()
            .filter_map(|n| {
                let name = swarm::NetworkName {
                    name: n.name?,
                    ingress: n.ingress == Some(true),
                };
                Some((n.id?, name))
            })
            .collect();
        let images: std::collections::HashSet<String> =
            services.iter().filter_map(|s| s.image.clone()).collect();
        self.image_ports.retain(|image, _| images.contains(image));
        for image in images {
            if self.image_ports.contains_key(&image) {
                continue;
            }
            // An image this daemon has not pulled leaves the port to labels (or 80); it is
            // asked about again next time.
            if let Ok(i) = docker.inspect_image(&image).await {
                let ports = tcp_ports(i.config.and_then(|c| c.exposed_ports).unwrap_or_default());
                self.image_ports.insert(image, ports);
            }
        }
        Ok(swarm::entries(
            &services,
            &tasks,
            &networks,
            &self.image_ports,
        ))
    }
}

/// Exposed TCP ports from `["5000/tcp", "53/udp"]`, sorted.
fn tcp_ports(exposed: impl IntoIterator<Item = String>) -> Vec<u16> {
    let mut ports: Vec<u16> = exposed
        .into_iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

type Http1 = (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
);

/// An HTTP/1 client connection over a freshly connected stream, driven by a task.
async fn http1<S>(stream: std::io::Result<S>) -> Result<Http1, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stream = stream.map_err(|e| e.to_string())?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    Ok((
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

/// `GET path` on the Engine API, without the client library (whose task model leaves out
/// what berth needs); the body of a 200.
async fn engine_get(endpoint: &DockerEndpoint, path: &str) -> Result<bytes::Bytes, SessionError> {
    use http_body_util::{BodyExt, Empty, Limited};
    let fail = |e: String| SessionError::Engine(format!("GET {path}: {e}"));
    let exchange = async {
        let (mut sender, conn) = match endpoint {
            DockerEndpoint::Unix(p) => http1(tokio::net::UnixStream::connect(p).await).await,
            DockerEndpoint::Tcp(a) => http1(tokio::net::TcpStream::connect(a).await).await,
        }
        .map_err(fail)?;
        let request = http::Request::get(path)
            .header(http::header::HOST, "docker")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ENGINE_ANSWER)
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        conn.abort();
        if status.is_success() {
            Ok(body)
        } else {
            Err(fail(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            )))
        }
    };
    tokio::time::timeout(Duration::from_secs(API_TIMEOUT_SECS), exchange)
        .await
        .unwrap_or_else(|_| Err(fail("timed out".to_string())))
}

/// Lists and inspects every running container once (for one-shot runs such as
/// `berth-acme once`).
///
/// # Errors
/// When the daemon cannot be reached or answers with an error.
pub async fn list_once(endpoint: &DockerEndpoint) -> Result<Snapshot, bollard::errors::Error> {
    let (watcher, _rx) = DockerWatcher::new(endpoint.clone());
    let docker = watcher.connect()?.negotiate_version().await?;
    let to_docker = |e: SessionError| match e {
        SessionError::Docker(e) => e,
        other => bollard::errors::Error::IOError {
            err: std::io::Error::other(other.to_string()),
        },
    };
    let swarm = watcher.swarm_on(&docker).await.map_err(to_docker)?;
    let mut snapshot = list(&docker, swarm).await?;
    if swarm {
        let mut reader = SwarmReader::new(endpoint, &docker);
        snapshot.services = reader.read(&docker).await.map_err(to_docker)?;
    }
    Ok(snapshot)
}

/// Every running container, inspected (with `swarm`, those of Swarm tasks are left to their
/// service), and berth's own networks.
async fn list(docker: &Docker, swarm: bool) -> Result<Snapshot, bollard::errors::Error> {
    let own_networks = own_networks(docker).await;
    let summaries = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
        .await?;
    let mut containers = BTreeMap::new();
    for summary in summaries {
        let Some(id) = summary.id else { continue };
        if let Some(info) = inspect(docker, &id).await? {
            if swarm && swarm::is_task_container(&info) {
                continue;
            }
            containers.insert(id, Arc::new(info));
        }
    }
    Ok(Snapshot {
        containers,
        services: BTreeMap::new(),
        own_networks,
    })
}

/// The action (without a `health_status:` verdict) and the container an event concerns.
fn event_target(event: &EventMessage) -> Option<(String, String)> {
    let action = event
        .action
        .as_deref()?
        .split(':')
        .next()?
        .trim()
        .to_string();
    let actor = event.actor.as_ref()?;
    let id = match event.typ {
        Some(EventMessageTypeEnum::CONTAINER) => actor.id.clone()?,
        Some(EventMessageTypeEnum::NETWORK) => actor.attributes.as_ref()?.get("container")?.clone(),
        _ => return None,
    };
    Some((action, id))
}

/// Inspects a container; `None` when it is gone or not running.
async fn inspect(
    docker: &Docker,
    id: &str,
) -> Result<Option<ContainerInfo>, bollard::errors::Error> {
    match docker.inspect_container(id, None).await {
        Ok(response) => Ok(container_info(response)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The networks of the container berth runs in, found through its id in
/// `/proc/self/mountinfo` (Docker bind-mounts `/etc/hostname` from the container's own
/// directory); empty when berth does not run in a container.
async fn own_networks(docker: &Docker) -> Vec<String> {
    let Ok(mountinfo) = tokio::fs::read_to_string("/proc/self/mountinfo").await else {
        return Vec::new();
    };
    let Some(id) = own_container_id(&mountinfo) else {
        return Vec::new();
    };
    match docker.inspect_container(&id, None).await {
        Ok(c) => c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}
