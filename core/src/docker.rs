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
//! ```toml
//! [docker]
//! enabled = "auto"                       # auto | true | false
//! endpoint = "unix:///var/run/docker.sock"
//! network = ""                           # preferred network for container addresses
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::config::{parse_docker_endpoint, DockerEndpoint, DEFAULT_DOCKER_ENDPOINT};
use crate::labels::{ContainerInfo, ContainerNetwork, Health};

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
    /// Networks of the container berth itself runs in, if it runs in one.
    pub own_networks: Vec<String>,
}

/// Live state of the connection, for metrics and `/routes`.
#[derive(Debug, Default)]
pub struct DockerStatus {
    connected: AtomicBool,
    events: Mutex<BTreeMap<String, u64>>,
}

impl DockerStatus {
    /// Whether the events stream is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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
}

/// Follows the containers of one Docker daemon.
#[derive(Debug)]
pub struct DockerWatcher {
    endpoint: DockerEndpoint,
    tx: watch::Sender<Arc<Snapshot>>,
    status: Arc<DockerStatus>,
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
        };
        (watcher, rx)
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

    /// One connection: list everything, then follow events until the stream fails.
    async fn session(&self, connected: &mut bool) -> Result<(), SessionError> {
        let docker = self.connect()?.negotiate_version().await?;
        // Events from one second before the listing on are replayed (`since` has whole-second
        // resolution), so a change between listing and subscribing is not lost.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let mut filters: HashMap<&str, Vec<&str>> = HashMap::new();
        filters.insert("type", vec!["container", "network"]);
        filters.insert(
            "event",
            CONTAINER_ACTIONS
                .iter()
                .chain(&NETWORK_ACTIONS)
                .copied()
                .collect(),
        );
        let options = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut events = docker.events(Some(options));

        let snapshot = list(&docker).await?;
        tracing::info!(
            endpoint = %self.endpoint,
            containers = snapshot.containers.len(),
            "docker: connected"
        );
        self.tx.send_replace(Arc::new(snapshot));
        self.status.connected.store(true, Ordering::Relaxed);
        *connected = true;

        loop {
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionError::StreamEnded),
            };
            let Some((action, id)) = event_target(&event) else {
                continue;
            };
            self.status.count(&action);
            let info = inspect(&docker, &id).await?;
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
}

/// Lists and inspects every running container once (for one-shot runs such as
/// `berth-acme once`).
///
/// # Errors
/// When the daemon cannot be reached or answers with an error.
pub async fn list_once(endpoint: &DockerEndpoint) -> Result<Snapshot, bollard::errors::Error> {
    let (watcher, _rx) = DockerWatcher::new(endpoint.clone());
    let docker = watcher.connect()?.negotiate_version().await?;
    list(&docker).await
}

/// Every running container, inspected, and berth's own networks.
async fn list(docker: &Docker) -> Result<Snapshot, bollard::errors::Error> {
    let own_networks = own_networks(docker).await;
    let summaries = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
        .await?;
    let mut containers = BTreeMap::new();
    for summary in summaries {
        let Some(id) = summary.id else { continue };
        if let Some(info) = inspect(docker, &id).await? {
            containers.insert(id, Arc::new(info));
        }
    }
    Ok(Snapshot {
        containers,
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

/// Reduces Docker's inspect answer to what the label schema reads; `None` unless running.
pub fn container_info(c: ContainerInspectResponse) -> Option<ContainerInfo> {
    let state = c.state.unwrap_or_default();
    let running =
        state.running == Some(true) && state.paused != Some(true) && state.restarting != Some(true);
    if !running {
        return None;
    }
    let health = match state.health.and_then(|h| h.status) {
        Some(bollard::models::HealthStatusEnum::STARTING) => Health::Starting,
        Some(bollard::models::HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(bollard::models::HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::None,
    };
    let config = c.config.unwrap_or_default();
    let env = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect();
    let mut exposed_tcp_ports: Vec<u16> = config
        .exposed_ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    exposed_tcp_ports.sort_unstable();
    exposed_tcp_ports.dedup();
    let mut networks: Vec<ContainerNetwork> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let parse = |s: Option<String>| s.and_then(|s| s.parse::<IpAddr>().ok());
            let ip = parse(ep.ip_address).or_else(|| parse(ep.global_ipv6_address));
            ContainerNetwork { name, ip }
        })
        .collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    Some(ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env,
        exposed_tcp_ports,
        networks,
        network_mode: c.host_config.and_then(|h| h.network_mode),
        health,
    })
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

/// Finds `/containers/<64 hex digits>/` in mountinfo text.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.get(..64)?;
        let ok = id.bytes().all(|b| b.is_ascii_hexdigit()) && rest[64..].starts_with('/');
        ok.then(|| id.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_container_id() {
        let id = "a".repeat(64);
        let text = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&text), Some(id));
        assert_eq!(
            own_container_id("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
        assert_eq!(own_container_id("x /containers/abc/hostname"), None);
    }

    #[test]
    fn inspect_answers_become_container_info() {
        let json = serde_json::json!({
            "Id": "c0ffee",
            "Name": "/registry",
            "State": {"Running": true, "Health": {"Status": "healthy"}},
            "Config": {
                "Labels": {"berth.port": "5000"},
                "Env": ["VIRTUAL_HOST=r.example.com", "EMPTY=", "A=b=c"],
                "ExposedPorts": {"5000/tcp": {}, "53/udp": {}}
            },
            "HostConfig": {"NetworkMode": "default"},
            "NetworkSettings": {"Networks": {
                "zeta": {"IPAddress": "10.9.0.2"},
                "alpha": {"IPAddress": "", "GlobalIPv6Address": "fd00::2"}
            }}
        });
        let response: ContainerInspectResponse = serde_json::from_value(json).expect("json");
        let info = container_info(response).expect("running");
        assert_eq!(info.name, "registry");
        assert_eq!(info.health, Health::Healthy);
        assert_eq!(info.env.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(info.env.get("EMPTY").map(String::as_str), Some(""));
        assert_eq!(info.exposed_tcp_ports, [5000]);
        let names: Vec<&str> = info.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(info.networks[0].ip, Some("fd00::2".parse().expect("ip")));

        let stopped: ContainerInspectResponse =
            serde_json::from_value(serde_json::json!({"State": {"Running": false}})).expect("json");
        assert!(container_info(stopped).is_none());
    }
}
