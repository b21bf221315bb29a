//! `[docker]`: whether and where berth follows a Docker daemon.
//!
//! ```toml
//! [docker]
//! enabled = "auto"                 # auto | true | false
//! endpoint = "unix:///var/run/docker.sock"
//! network = ""
//! swarm = "auto"                   # auto (on when the daemon is a Swarm manager) | true | false
//! swarm-poll = "5s"                # how often Swarm tasks are re-read
//! label-files = ["/etc/berth"]     # where labels may name files (berth.auth.htpasswd, ...)
//! allowed-hosts = []               # hosts and patterns containers may claim; [] = any
//! ```

use std::fmt;

use serde::Deserialize;

use crate::errors::Errors;

/// `[docker]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RawDocker {
    /// `auto`, `true` or `false`.
    pub enabled: Option<toml::Value>,
    /// `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub endpoint: Option<String>,
    /// Preferred network when a container has several.
    pub network: Option<String>,
    /// `auto`, `true` or `false`: read Swarm services.
    pub swarm: Option<toml::Value>,
    /// How often Swarm tasks are re-read.
    pub swarm_poll: Option<String>,
    /// Directories under which labels may name files.
    pub label_files: Option<Vec<String>>,
    /// Hosts and host patterns containers may claim.
    pub allowed_hosts: Option<Vec<String>>,
}

/// Whether to discover routes from Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerMode {
    /// On when the endpoint's socket exists at start (a `tcp://` endpoint always counts).
    Auto,
    /// On; an unreachable daemon is logged as a warning and retried.
    On,
    /// Off.
    Off,
}

/// Where the Docker daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEndpoint {
    /// A Unix socket.
    Unix(std::path::PathBuf),
    /// Plain HTTP (`tcp://host:port`), e.g. a socket proxy.
    Tcp(String),
}

impl fmt::Display for DockerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerEndpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerEndpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The Docker socket used when neither `docker.endpoint` nor `DOCKER_HOST` names one.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// Parses `unix:///path` or `tcp://host:port`.
///
/// # Errors
/// A message naming the value otherwise.
pub fn parse_docker_endpoint(value: &str) -> Result<DockerEndpoint, String> {
    let v = value.trim();
    if let Some(path) = v.strip_prefix("unix://") {
        if path.starts_with('/') {
            return Ok(DockerEndpoint::Unix(path.into()));
        }
    } else if let Some(addr) = v
        .strip_prefix("tcp://")
        .or_else(|| v.strip_prefix("http://"))
    {
        let addr = addr.trim_end_matches('/');
        if crate::route::host_of(addr).is_some() && addr.rsplit_once(':').is_some() {
            return Ok(DockerEndpoint::Tcp(addr.to_string()));
        }
    }
    Err(format!(
        "invalid endpoint \"{value}\": expected \"unix:///var/run/docker.sock\" or \"tcp://host:2375\""
    ))
}

/// How often Swarm tasks are re-read when `docker.swarm-poll` is not set.
pub const DEFAULT_SWARM_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// Validated `[docker]`.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Whether discovery runs.
    pub mode: DockerMode,
    /// The daemon's address; `None`: `DOCKER_HOST`, else [`DEFAULT_DOCKER_ENDPOINT`].
    pub endpoint: Option<DockerEndpoint>,
    /// Preferred network for container addresses.
    pub network: Option<String>,
    /// Whether Swarm services are read (`Auto`: when the daemon is a manager).
    pub swarm: DockerMode,
    /// How often Swarm tasks are re-read.
    pub swarm_poll: std::time::Duration,
    /// Where labels may name files.
    pub label_files: crate::files::LabelFiles,
    /// Hosts and host patterns containers may claim (routes and certificates); empty: any.
    pub allowed_hosts: Vec<crate::route::HostPattern>,
}

/// `auto`, `true` / `false` (booleans or strings) for `key`.
fn tri_state(value: Option<&toml::Value>, key: &str, errors: &mut Errors) -> DockerMode {
    match value {
        None => DockerMode::Auto,
        Some(toml::Value::Boolean(true)) => DockerMode::On,
        Some(toml::Value::Boolean(false)) => DockerMode::Off,
        Some(toml::Value::String(s)) => match s.trim() {
            "auto" => DockerMode::Auto,
            "true" => DockerMode::On,
            "false" => DockerMode::Off,
            other => {
                errors.push(
                    key,
                    format!("invalid value \"{other}\": expected \"auto\", true or false"),
                );
                DockerMode::Auto
            }
        },
        Some(other) => {
            errors.push(
                key,
                format!("invalid value {other}: expected \"auto\", true or false"),
            );
            DockerMode::Auto
        }
    }
}

impl RawDocker {
    pub(super) fn validate(&self, errors: &mut Errors) -> DockerConfig {
        let mode = tri_state(self.enabled.as_ref(), "docker.enabled", errors);
        let swarm = tri_state(self.swarm.as_ref(), "docker.swarm", errors);
        let swarm_poll = match self.swarm_poll.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_SWARM_POLL,
            Some(v) => match errors.check("docker.swarm-poll", super::units::parse_duration(v)) {
                Some(d) if d >= std::time::Duration::from_millis(500) => d,
                Some(_) => {
                    errors.push("docker.swarm-poll", "must be at least 500ms");
                    DEFAULT_SWARM_POLL
                }
                None => DEFAULT_SWARM_POLL,
            },
        };
        let endpoint = match self.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => errors.check("docker.endpoint", parse_docker_endpoint(v)),
        };
        let network = self
            .network
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let label_files = match &self.label_files {
            None => crate::files::LabelFiles::default(),
            Some(dirs) => errors
                .check("docker.label-files", crate::files::LabelFiles::new(dirs))
                .unwrap_or_default(),
        };
        let allowed_hosts = self
            .allowed_hosts
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, h)| {
                errors.check(
                    &format!("docker.allowed-hosts[{i}]"),
                    crate::route::HostPattern::parse(h),
                )
            })
            .collect();
        DockerConfig {
            mode,
            endpoint,
            network,
            swarm,
            swarm_poll,
            label_files,
            allowed_hosts,
        }
    }
}
