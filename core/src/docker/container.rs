//! A running container reduced to what the label schema reads ([`ContainerInfo`]), from
//! Docker's inspect answer; and how berth finds its own container.

use std::net::IpAddr;

use bollard::models::ContainerInspectResponse;

use crate::labels::{ContainerInfo, ContainerNetwork, Health};

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
        service: None,
    })
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
