//! Docker labels and nginx-proxy variables through the label schema: never a panic, and a
//! container is either routed with usable routes or skipped with errors naming it, and a file a
//! label names is never outside `docker.label-files`.
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use arbitrary::Arbitrary;
use berth_core::route::builtin_defaults;
use berth_core::labels::{
    acme_request, judge, ContainerRules, ContainerInfo, ContainerNetwork, Verdict, Health,
};
use libfuzzer_sys::fuzz_target;

/// Keys the schema knows, and the route keys it refuses, so the fuzzer reaches past "not for
/// berth" quickly.
fn keys() -> &'static [String] {
    static KEYS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = berth_core::labels::schema_names();
        keys.extend(
            berth_core::labels::REFUSED
                .iter()
                .map(|(k, _)| format!("berth.{k}")),
        );
        keys
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    labels: Vec<(u8, String)>,
    env: Vec<(u8, String)>,
    raw_labels: Vec<(String, String)>,
    ports: Vec<u16>,
    networks: Vec<(String, Option<[u8; 4]>)>,
    host_network: bool,
    own_networks: Vec<String>,
    preferred: Option<String>,
    health: u8,
}

fn key(i: u8) -> String {
    let keys = keys();
    keys[i as usize % keys.len()].clone()
}

fuzz_target!(|input: Input| {
    let mut labels: BTreeMap<String, String> = input.raw_labels.into_iter().collect();
    labels.extend(input.labels.into_iter().map(|(k, v)| (key(k), v)));
    let env = input.env.into_iter().map(|(k, v)| (key(k), v)).collect();
    let info = ContainerInfo {
        id: "0123456789abcdef".into(),
        name: "fuzzed".into(),
        labels,
        env,
        exposed_tcp_ports: input.ports,
        networks: input
            .networks
            .into_iter()
            .map(|(name, ip)| ContainerNetwork {
                name,
                ip: ip.map(|o| IpAddr::V4(Ipv4Addr::from(o))),
            })
            .collect(),
        network_mode: input.host_network.then(|| "host".to_string()),
        health: match input.health % 4 {
            0 => Health::None,
            1 => Health::Starting,
            2 => Health::Healthy,
            _ => Health::Unhealthy,
        },
        service: input.host_network.then(|| "svc".to_string()),
    };
    let rules = ContainerRules {
        preferred_network: input.preferred,
        own_networks: input.own_networks,
        ..ContainerRules::default()
    };
    match judge(&info, &rules, &builtin_defaults()) {
        Verdict::Routes(routes) => {
            for r in routes {
                assert!(!r.upstreams.is_empty());
                assert!(r.path.starts_with('/'));
                // Refused route keys stay the operator's.
                assert!(!r.upstream_tls.dangerous_skip_verify);
                // A file a label names is under docker.label-files (/etc/berth by default),
                // with no way out of it.
                let files = r
                    .auth
                    .iter()
                    .flat_map(|a| {
                        std::iter::once(a.htpasswd.as_path()).chain(a.token_secret_file.as_deref())
                    })
                    .chain(r.upstream_tls.ca_file.as_deref());
                for file in files {
                    let text = file.to_string_lossy();
                    assert!(text.starts_with("/etc/berth/"), "{text}");
                    assert!(!text.split('/').any(|s| s == ".." || s == "."), "{text}");
                }
            }
        }
        Verdict::Invalid(errors) => {
            assert!(!errors.is_empty());
            // Named by container, or for a Swarm task by service and task.
            let named = if info.service.is_some() {
                "service svc (task fuzzed)"
            } else {
                "container fuzzed"
            };
            for e in errors {
                assert!(e.to_string().starts_with(named), "{e}");
            }
        }
        Verdict::Ignored(_) | Verdict::Waiting(_) => {}
    }
    if let Ok(Some(request)) = acme_request(&info) {
        assert!(!request.hosts.is_empty());
        // Every name is one a certificate can carry, and a wildcard is never left to
        // HTTP-01, which cannot prove it.
        for h in &request.hosts {
            let base = h.strip_prefix("*.").unwrap_or(h);
            assert!(!base.is_empty() && !base.contains('*') && !h.starts_with('~'), "{h}");
            assert!(
                !(h.starts_with("*.") && request.challenge == berth_core::route::Challenge::Http01),
                "{h} by http-01"
            );
        }
    }
});
