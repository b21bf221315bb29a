//! Docker Swarm services as the label schema sees them: each running task of a service
//! becomes a [`ContainerInfo`] with the service's labels (`deploy.labels` in compose) over its
//! container labels, the container spec's environment, and the task's addresses on its
//! networks (never `ingress`). Tasks of one service with the same host and path are then
//! load-balanced like containers are. With `berth.swarm.lb = "vip"` the service is one entry
//! instead, addressed by its virtual IPs, and Swarm balances behind it.
//!
//! Swarm only reports a task `running` once its health check passes (a failing one is
//! replaced), so running tasks are the healthy ones. Services are read from a manager.
//! The task list comes from the Engine API directly (`GET /tasks`): the client library's
//! task model leaves out the tasks' network attachments, which is where their addresses are.
//!
//! ```text
//! docker service create --name web --replicas 3 --network edge \
//!        --label berth.host=web.example.com --label berth.port=8080 app:latest
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use bollard::models::{EndpointSpecModeEnum, Service};
use serde::Deserialize;

use crate::labels::{ContainerInfo, ContainerNetwork, Health, LABEL_PREFIX};

/// The label that selects how a service is reached: `task` (default) or `vip`.
pub const LB_LABEL: &str = "berth.swarm.lb";

/// A service reduced to what berth reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Service id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Container labels, then the service's own labels over them.
    pub labels: BTreeMap<String, String>,
    /// The container spec's environment.
    pub env: BTreeMap<String, String>,
    /// The container spec's image (to look up its exposed ports).
    pub image: Option<String>,
    /// `dnsrr` services have no virtual IP.
    pub dnsrr: bool,
    /// Virtual IPs by network id.
    pub vips: Vec<(String, IpAddr)>,
}

/// A task as the Engine API lists it (the fields berth reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawTask {
    /// Task id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service it belongs to.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// Replica number (replicated services).
    #[serde(default)]
    pub slot: Option<u64>,
    /// Node it runs on (names global services' tasks).
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// Current state.
    #[serde(default)]
    pub status: RawTaskStatus,
    /// What Swarm wants it to be.
    #[serde(default)]
    pub desired_state: String,
    /// Addresses per network.
    #[serde(default)]
    pub networks_attachments: Vec<RawAttachment>,
}

/// A task's state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawTaskStatus {
    /// `running`, `starting`, `failed`, ...
    #[serde(default)]
    pub state: String,
}

/// A task's attachment to one network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawAttachment {
    /// The network.
    #[serde(default)]
    pub network: RawNetwork,
    /// CIDR addresses (`10.0.1.5/24`).
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A network as a task attachment names it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawNetwork {
    /// Network id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its spec.
    #[serde(default)]
    pub spec: RawNetworkSpec,
}

/// The parts of a network spec berth reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawNetworkSpec {
    /// Network name.
    #[serde(default)]
    pub name: String,
    /// The routing mesh's network, never an upstream.
    #[serde(default)]
    pub ingress: bool,
}

/// `10.0.1.5/24` → `10.0.1.5`.
fn address(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

fn env_map(entries: Option<Vec<String>>) -> BTreeMap<String, String> {
    entries
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Reduces a listed service; `None` without an id or a name.
pub fn service_view(s: Service) -> Option<ServiceView> {
    let spec = s.spec.unwrap_or_default();
    let name = spec.name?;
    let container = spec
        .task_template
        .and_then(|t| t.container_spec)
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> =
        container.labels.unwrap_or_default().into_iter().collect();
    labels.extend(spec.labels.unwrap_or_default());
    let endpoint = s.endpoint.unwrap_or_default();
    let mode = spec
        .endpoint_spec
        .and_then(|e| e.mode)
        .or_else(|| endpoint.spec.and_then(|e| e.mode));
    let vips = endpoint
        .virtual_ips
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Some((v.network_id?, address(&v.addr?)?)))
        .collect();
    Some(ServiceView {
        id: s.id?,
        name,
        labels,
        env: env_map(container.env),
        image: container.image,
        dnsrr: mode == Some(EndpointSpecModeEnum::DNSRR),
        vips,
    })
}

/// Whether berth has anything to read on this service: a `berth.` label or an nginx-proxy /
/// acme-companion variable.
fn concerns_berth(s: &ServiceView) -> bool {
    s.labels.keys().any(|k| k.starts_with(LABEL_PREFIX))
        || ["VIRTUAL_HOST", "LETSENCRYPT_HOST", "ACME_HOST"]
            .iter()
            .any(|v| s.env.contains_key(*v))
}

/// A network as `entries` needs it: its name, and whether it is the routing mesh's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkName {
    /// Network name.
    pub name: String,
    /// The ingress (routing mesh) network, whatever its name: never an upstream.
    pub ingress: bool,
}

/// What the label schema reads for each running task (or, with `berth.swarm.lb = "vip"`,
/// for each service with a running task), keyed by task or service id. `ports` gives the
/// exposed TCP ports of images, where known; `networks` names networks by id.
pub fn entries(
    services: &[ServiceView],
    tasks: &[RawTask],
    networks: &HashMap<String, NetworkName>,
    ports: &HashMap<String, Vec<u16>>,
) -> BTreeMap<String, Arc<ContainerInfo>> {
    let mut out = BTreeMap::new();
    for s in services.iter().filter(|s| concerns_berth(s)) {
        let running: Vec<&RawTask> = tasks
            .iter()
            .filter(|t| t.service_id == s.id && t.status.state == "running")
            .filter(|t| t.desired_state.is_empty() || t.desired_state == "running")
            .collect();
        if running.is_empty() {
            continue;
        }
        let base = ContainerInfo {
            id: s.id.clone(),
            name: s.name.clone(),
            labels: s.labels.clone(),
            env: s.env.clone(),
            exposed_tcp_ports: s
                .image
                .as_ref()
                .and_then(|i| ports.get(i))
                .cloned()
                .unwrap_or_default(),
            networks: Vec::new(),
            network_mode: None,
            health: Health::None,
            service: Some(s.name.clone()),
        };
        let vip = s
            .labels
            .get(LB_LABEL)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("vip"));
        if vip {
            let mut networks: Vec<ContainerNetwork> = s
                .vips
                .iter()
                .filter_map(|(id, ip)| {
                    let network = networks.get(id)?;
                    (!network.ingress).then(|| ContainerNetwork {
                        name: network.name.clone(),
                        ip: Some(*ip),
                    })
                })
                .collect();
            networks.sort_by(|a, b| a.name.cmp(&b.name));
            out.insert(
                format!("service:{}", s.id),
                Arc::new(ContainerInfo { networks, ..base }),
            );
            continue;
        }
        for t in running {
            let mut networks: Vec<ContainerNetwork> = t
                .networks_attachments
                .iter()
                .filter(|a| {
                    let known = networks.get(&a.network.id).is_some_and(|n| n.ingress);
                    !a.network.spec.ingress && !known
                })
                .map(|a| ContainerNetwork {
                    name: a.network.spec.name.clone(),
                    ip: a.addresses.iter().find_map(|c| address(c)),
                })
                .collect();
            networks.sort_by(|a, b| a.name.cmp(&b.name));
            let name = match t.slot {
                Some(slot) => format!("{}.{slot}", s.name),
                None => format!(
                    "{}.{}",
                    s.name,
                    t.node_id.chars().take(12).collect::<String>()
                ),
            };
            out.insert(
                format!("task:{}", t.id),
                Arc::new(ContainerInfo {
                    id: t.id.clone(),
                    name,
                    networks,
                    ..base.clone()
                }),
            );
        }
    }
    out
}

/// Whether a container belongs to a Swarm task (Swarm labels its containers so); such
/// containers are read through their service when berth reads Swarm.
pub fn is_task_container(info: &ContainerInfo) -> bool {
    info.labels.contains_key("com.docker.swarm.service.id")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `e` is the overlay; `ing` the routing mesh, named like any other network.
    fn networks() -> HashMap<String, NetworkName> {
        let n = |name: &str, ingress| NetworkName {
            name: name.into(),
            ingress,
        };
        [
            ("e".into(), n("edge", false)),
            ("ing".into(), n("mesh", true)),
        ]
        .into()
    }

    fn tasks_json() -> Vec<RawTask> {
        serde_json::from_value(serde_json::json!([
            {"ID": "t1", "ServiceID": "s1", "Slot": 1, "NodeID": "n1",
             "Status": {"State": "running"}, "DesiredState": "running",
             "NetworksAttachments": [
                {"Network": {"ID": "ing", "Spec": {"Name": "mesh"}},
                 "Addresses": ["10.0.0.5/24"]},
                {"Network": {"ID": "e", "Spec": {"Name": "edge"}}, "Addresses": ["10.0.1.5/24"]}
             ]},
            {"ID": "t2", "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
             "Status": {"State": "running"}, "DesiredState": "running",
             "NetworksAttachments": [
                {"Network": {"ID": "other", "Spec": {"Name": "mesh2", "Ingress": true}},
                 "Addresses": ["10.0.9.5/24"]},
                {"Network": {"ID": "e", "Spec": {"Name": "edge"}}, "Addresses": ["10.0.1.6/24"]}
             ]},
            {"ID": "q1", "ServiceID": "s3", "Slot": 1, "NodeID": "n1",
             "Status": {"State": "running"}, "DesiredState": "running",
             "NetworksAttachments": [
                {"Network": {"ID": "e", "Spec": {"Name": "edge"}}, "Addresses": ["10.0.1.8/24"]}
             ]},
            {"ID": "t3", "ServiceID": "s1", "Slot": 3, "NodeID": "n1",
             "Status": {"State": "starting"}, "DesiredState": "running",
             "NetworksAttachments": [
                {"Network": {"ID": "e", "Spec": {"Name": "edge"}}, "Addresses": ["10.0.1.7/24"]}
             ]},
            {"ID": "t4", "ServiceID": "s1", "Slot": 1, "NodeID": "n1",
             "Status": {"State": "running"}, "DesiredState": "shutdown"},
            {"ID": "g1", "ServiceID": "s2", "NodeID": "abcdef0123456789",
             "Status": {"State": "running"}, "DesiredState": "running",
             "NetworksAttachments": [
                {"Network": {"ID": "e", "Spec": {"Name": "edge"}}, "Addresses": ["10.0.1.9/24"]}
             ]}
        ]))
        .expect("tasks")
    }

    fn service(json: serde_json::Value) -> ServiceView {
        service_view(serde_json::from_value(json).expect("service")).expect("view")
    }

    fn web() -> ServiceView {
        service(serde_json::json!({
            "ID": "s1",
            "Spec": {
                "Name": "web",
                "Labels": {"berth.host": "web.example.com", "berth.port": "8080"},
                "TaskTemplate": {"ContainerSpec": {
                    "Image": "app:1",
                    "Labels": {"berth.port": "9999", "berth.path": "/"},
                    "Env": ["VIRTUAL_HOST=old.example.com", "A=b=c"]
                }},
                "EndpointSpec": {"Mode": "vip"}
            },
            "Endpoint": {"VirtualIPs": [
                {"NetworkID": "ing", "Addr": "10.0.0.2/24"},
                {"NetworkID": "e", "Addr": "10.0.1.2/24"}
            ]}
        }))
    }

    #[test]
    fn services_are_read_with_service_labels_over_container_labels() {
        let s = web();
        assert_eq!(s.name, "web");
        assert_eq!(s.labels.get("berth.port").map(String::as_str), Some("8080"));
        assert_eq!(s.labels.get("berth.path").map(String::as_str), Some("/"));
        assert_eq!(s.env.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(s.image.as_deref(), Some("app:1"));
        assert!(!s.dnsrr);
        assert_eq!(s.vips.len(), 2);
    }

    #[test]
    fn running_tasks_become_entries_with_their_overlay_addresses() {
        let names = networks();
        let global = service(serde_json::json!({
            "ID": "s2",
            "Spec": {"Name": "agent", "TaskTemplate": {"ContainerSpec": {
                "Env": ["VIRTUAL_HOST=agent.example.com"]}}}
        }));
        let quiet = service(serde_json::json!({"ID": "s3", "Spec": {"Name": "db"}}));
        let ports: HashMap<String, Vec<u16>> = [("app:1".into(), vec![8080])].into();
        let out = entries(&[web(), global, quiet], &tasks_json(), &names, &ports);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["task:g1", "task:t1", "task:t2"],
            "starting and shut-down tasks are left out"
        );
        let t1 = &out["task:t1"];
        assert_eq!(t1.name, "web.1");
        assert_eq!(t1.service.as_deref(), Some("web"));
        assert_eq!(t1.exposed_tcp_ports, [8080]);
        assert_eq!(t1.networks.len(), 1, "never ingress (known by its id)");
        assert_eq!(
            out["task:t2"].networks.len(),
            1,
            "never ingress (flagged in the attachment)"
        );
        assert_eq!(t1.networks[0].ip, Some("10.0.1.5".parse().expect("ip")));
        assert_eq!(out["task:g1"].name, "agent.abcdef012345");
        assert!(out["task:g1"].exposed_tcp_ports.is_empty());
    }

    #[test]
    fn vip_mode_is_one_entry_on_the_virtual_ip() {
        let names = networks();
        let mut s = web();
        s.labels.insert(LB_LABEL.into(), "vip".into());
        let out = entries(&[s.clone()], &tasks_json(), &names, &HashMap::new());
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(keys, ["service:s1"]);
        let e = &out["service:s1"];
        assert_eq!(e.name, "web");
        assert_eq!(e.networks.len(), 1);
        assert_eq!(e.networks[0].ip, Some("10.0.1.2".parse().expect("ip")));

        // No running task: nothing to route to, whatever the mode.
        let none: Vec<RawTask> = Vec::new();
        assert!(entries(&[s], &none, &names, &HashMap::new()).is_empty());
    }

    #[test]
    fn dnsrr_services_have_no_virtual_ip() {
        let s = service(serde_json::json!({
            "ID": "s1",
            "Spec": {"Name": "web", "Labels": {"berth.host": "w.example.com"},
                     "EndpointSpec": {"Mode": "dnsrr"}},
            "Endpoint": {}
        }));
        assert!(s.dnsrr && s.vips.is_empty());
        let out = entries(&[s], &tasks_json(), &networks(), &HashMap::new());
        assert_eq!(out.len(), 2, "its tasks are routed as usual");
    }
}
