//! Which certificates are wanted, and which of them are due. Pure functions: the worker
//! feeds them the config's routes, the containers Docker reports and what certs-dir holds.
//!
//! One certificate per container (its `LETSENCRYPT_HOST` / `berth.acme` host list as SANs,
//! named after the first host, as acme-companion does) and one per static route with
//! `acme = true`. A certificate is due when it is missing, does not cover the wanted names,
//! or expires within `renew-before`; a valid one that covers the names is never re-issued,
//! so restarts cannot burn the CA's rate limits.

use std::collections::BTreeMap;

use berth_core::config::ConfigError;
use berth_core::docker::Snapshot;
use berth_core::labels::acme_request;
use berth_core::route::{HostPattern, RouteSpec};

/// A certificate berth-acme keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// File stem in certs-dir: the first host.
    pub name: String,
    /// Names on the certificate.
    pub hosts: Vec<String>,
    /// Account email asked for, if any (else `acme.email`).
    pub email: Option<String>,
    /// Who asked (`file`, `container registry`), for logs.
    pub source: String,
}

/// Certificates wanted by the config's routes and the running containers, by name. Where two
/// sources want the same name, the config file's wins, then the container first by name.
/// Returns the problems of containers whose certificate keys are invalid, too.
pub fn wanted(routes: &[RouteSpec], containers: &Snapshot) -> (Vec<Wanted>, Vec<ConfigError>) {
    let mut by_name: BTreeMap<String, Wanted> = BTreeMap::new();
    for r in routes.iter().filter(|r| r.acme) {
        if let HostPattern::Exact(host) = &r.host {
            by_name.entry(host.clone()).or_insert_with(|| Wanted {
                name: host.clone(),
                hosts: vec![host.clone()],
                email: None,
                source: "file".to_string(),
            });
        }
    }
    let mut errors = Vec::new();
    let mut infos: Vec<_> = containers.entries().map(|(_, info)| info).collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    for info in infos {
        match acme_request(info) {
            Ok(Some(request)) => {
                let Some(first) = request.hosts.first().cloned() else {
                    continue;
                };
                by_name.entry(first.clone()).or_insert_with(|| Wanted {
                    name: first,
                    hosts: request.hosts,
                    email: request.email,
                    source: match &info.service {
                        Some(service) => format!("service {service}"),
                        None => format!("container {}", info.name),
                    },
                });
            }
            Ok(None) => {}
            Err(e) => errors.extend(e),
        }
    }
    (by_name.into_values().collect(), errors)
}

/// What certs-dir holds under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// DNS names of the leaf (lowercase).
    pub sans: Vec<String>,
    /// Expiry, Unix seconds.
    pub not_after: i64,
    /// The leaf, DER (to ask the CA about it).
    pub der: Vec<u8>,
}

/// Whether, and why, a certificate must be (re-)issued now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing usable in certs-dir.
    Missing,
    /// It does not name every wanted host.
    Uncovered,
    /// It expires within `renew-before` (or has expired).
    Expiring,
    /// Fine until this Unix time, when it enters the renewal window.
    NotUntil(i64),
}

/// Decides for `hosts` given what exists, the renewal window and the time now.
pub fn due(existing: Option<&Existing>, hosts: &[String], renew_before_secs: i64, now: i64) -> Due {
    let Some(e) = existing else {
        return Due::Missing;
    };
    if !hosts.iter().all(|h| e.sans.iter().any(|s| s == h)) {
        return Due::Uncovered;
    }
    let renew_at = e.not_after - renew_before_secs;
    if now >= renew_at {
        Due::Expiring
    } else {
        Due::NotUntil(renew_at)
    }
}

/// The moment to renew inside a CA's suggested window (ACME Renewal Information, RFC 9773):
/// `fraction` (0..1, drawn once per certificate) of the way from `start` to `end`, so that
/// many clients do not all renew at the window's first second.
pub fn ari_renew_at(start: i64, end: i64, fraction: f64) -> i64 {
    let span = (end - start).max(0) as f64;
    start + (span * fraction.clamp(0.0, 1.0)) as i64
}

/// Reads a PEM certificate chain's leaf: its DNS names and validity.
///
/// # Errors
/// A message when the text holds no parsable certificate.
pub fn read_leaf(pem: &[u8]) -> Result<Existing, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = block.parse_x509().map_err(|e| e.to_string())?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(n) = name {
                sans.push(n.to_ascii_lowercase());
            }
        }
    }
    Ok(Existing {
        sans,
        not_after: cert.validity().not_after.timestamp(),
        der: block.contents.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::labels::{ContainerInfo, ContainerNetwork, Health};
    use std::sync::Arc;

    fn container(name: &str, env: &[(&str, &str)]) -> Arc<ContainerInfo> {
        Arc::new(ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            labels: Default::default(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exposed_tcp_ports: vec![],
            networks: vec![ContainerNetwork {
                name: "bridge".into(),
                ip: None,
            }],
            network_mode: None,
            health: Health::None,
            service: None,
        })
    }

    #[test]
    fn one_certificate_per_container_named_after_its_first_host() {
        let mut snapshot = Snapshot::default();
        for (name, env) in [
            (
                "registry",
                vec![
                    ("LETSENCRYPT_HOST", "r.example.com, www.r.example.com"),
                    ("LETSENCRYPT_EMAIL", "ops@example.com"),
                ],
            ),
            ("plain", vec![("VIRTUAL_HOST", "p.example.com")]),
            ("broken", vec![("LETSENCRYPT_HOST", "*.example.com")]),
            ("again", vec![("ACME_HOST", "r.example.com")]),
        ] {
            let c = container(name, &env);
            snapshot.containers.insert(c.id.clone(), c);
        }
        let (wanted, errors) = wanted(&[], &snapshot);
        assert_eq!(wanted.len(), 1, "{wanted:?}");
        assert_eq!(wanted[0].name, "r.example.com");
        // "again" sorts first and wants the same name; the first container by name wins.
        assert_eq!(wanted[0].source, "container again");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("container broken"));
    }

    #[test]
    fn ari_windows() {
        assert_eq!(ari_renew_at(1000, 2000, 0.0), 1000);
        assert_eq!(ari_renew_at(1000, 2000, 0.25), 1250);
        assert_eq!(ari_renew_at(1000, 2000, 7.0), 2000);
        // A window that ends before it starts means "renew now".
        assert_eq!(ari_renew_at(1000, 900, 0.5), 1000);
    }

    #[test]
    fn due_decisions() {
        let hosts = vec!["a.example.com".to_string()];
        let e = Existing {
            sans: hosts.clone(),
            not_after: 1_000_000,
            der: Vec::new(),
        };
        assert_eq!(due(None, &hosts, 100, 0), Due::Missing);
        assert_eq!(due(Some(&e), &hosts, 100, 0), Due::NotUntil(999_900));
        assert_eq!(due(Some(&e), &hosts, 100, 999_900), Due::Expiring);
        let more = vec!["a.example.com".to_string(), "b.example.com".to_string()];
        assert_eq!(due(Some(&e), &more, 100, 0), Due::Uncovered);
    }
}
