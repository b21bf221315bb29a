//! Which certificates are wanted, and which of them are due. Pure functions: the worker
//! feeds them the config's routes, the containers Docker reports and what certs-dir holds.
//!
//! One certificate per container (its `LETSENCRYPT_HOST` / `berth.acme` host list as SANs,
//! named after the first host, as acme-companion does; a wildcard `*.example.com` names the
//! files `example.com`, where berth looks for wildcards) and one per static route with
//! `acme = true`. Routes that want the same file (`*.example.com` and `example.com`) get one
//! certificate naming both; otherwise the first source wants a file and a later one with
//! other names is reported. A container's DNS-01 certificate names only what
//! `acme.dns-names` allows. A certificate is due when it is missing, does not cover the
//! wanted names, or is in its renewal window (`renew-before`); a valid one that covers the
//! names is never re-issued, so restarts cannot burn the CA's rate limits.

use std::collections::BTreeMap;

use berth_core::config::acme::RenewBefore;
use berth_core::config::dns::DnsConfig;
use berth_core::config::ConfigError;
use berth_core::docker::Snapshot;
use berth_core::labels::acme_request;
use berth_core::route::{may_claim, Challenge, HostPattern, RouteSpec};

/// A certificate berth-acme keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// File stem in certs-dir: the first host (a wildcard's base name).
    pub name: String,
    /// Names on the certificate.
    pub hosts: Vec<String>,
    /// Account email asked for, if any (else `acme.email`).
    pub email: Option<String>,
    /// Who asked (`file`, `container registry`), for logs.
    pub source: String,
    /// How the names are proved.
    pub challenge: Challenge,
}

impl Wanted {
    fn new(
        hosts: Vec<String>,
        email: Option<String>,
        source: String,
        challenge: Challenge,
    ) -> Option<Wanted> {
        let first = hosts.first()?;
        Some(Wanted {
            name: first.strip_prefix("*.").unwrap_or(first).to_string(),
            hosts,
            email,
            source,
            challenge,
        })
    }
}

/// Certificates wanted by the config's routes and the running containers, by name (the
/// file stem in certs-dir). Routes of the config file that want the same file — `*.example.com`
/// and `example.com`, both kept as `example.com.crt` — get one certificate naming both, proved
/// by DNS-01. Otherwise the first source wants the file (the config file's routes first, then
/// containers by name), and a later one whose hosts it does not name is reported, rather than
/// folded in: a container could otherwise add a name nobody can prove to another's
/// certificate. Returns those conflicts and the problems of containers whose certificate keys
/// are invalid, too; a container may have DNS-01 prove only the names `acme.dns-names` allows
/// (`dns` is `None` when no provider is configured).
pub fn wanted(
    routes: &[RouteSpec],
    containers: &Snapshot,
    dns: Option<&DnsConfig>,
    allowed_hosts: &[HostPattern],
) -> (Vec<Wanted>, Vec<ConfigError>) {
    let mut by_name: BTreeMap<String, Wanted> = BTreeMap::new();
    for r in routes.iter().filter(|r| r.acme) {
        let Some(host) = r.host.certificate_name() else {
            continue;
        };
        let challenge = Challenge::effective(r.acme_challenge, std::slice::from_ref(&host))
            .unwrap_or(Challenge::Http01);
        let Some(w) = Wanted::new(vec![host], None, "file".to_string(), challenge) else {
            continue;
        };
        match by_name.get_mut(&w.name) {
            Some(first) => {
                for h in w.hosts {
                    if !first.hosts.contains(&h) {
                        first.hosts.push(h);
                    }
                }
                // A wildcard and its base in one certificate: only DNS-01 proves both.
                first.challenge = Challenge::effective(None, &first.hosts)
                    .unwrap_or(Challenge::Dns01)
                    .max(first.challenge)
                    .max(w.challenge);
            }
            None => {
                by_name.insert(w.name.clone(), w);
            }
        }
    }
    let mut errors = Vec::new();
    let mut infos: Vec<_> = containers.entries().map(|(_, info)| info).collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    for info in infos {
        let request = match acme_request(info) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        let source = match &info.service {
            Some(service) => format!("service {service}"),
            None => format!("container {}", info.name),
        };
        // docker.allowed-hosts: a container asks certificates only for what it may claim.
        let unclaimable: Vec<&str> = request
            .hosts
            .iter()
            .filter(|h| HostPattern::parse(h).is_ok_and(|p| !may_claim(allowed_hosts, &p)))
            .map(String::as_str)
            .collect();
        if !unclaimable.is_empty() {
            errors.push(ConfigError {
                path: source,
                message: format!(
                    "{} not among docker.allowed-hosts: containers may claim only the hosts the \
                     operator allows",
                    unclaimable.join(", ")
                ),
            });
            continue;
        }
        if request.challenge == Challenge::Dns01 {
            let refused: Vec<&String> = match dns {
                None => request.hosts.iter().collect(),
                Some(d) => request.hosts.iter().filter(|h| !d.allows(h)).collect(),
            };
            if !refused.is_empty() {
                let why = if dns.is_none() {
                    "no acme.dns-provider is set (rfc2136 or exec; see docs/certificates.md)"
                } else {
                    "acme.dns-names does not allow it: a container's DNS-01 certificate may name \
                     only what the operator allows (e.g. dns-names = [\"*.apps.example.com\"])"
                };
                errors.push(ConfigError {
                    path: source,
                    message: format!(
                        "{} would be proved with dns-01, and {why}",
                        refused
                            .iter()
                            .map(|h| h.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
                continue;
            }
        }
        let Some(w) = Wanted::new(request.hosts, request.email, source, request.challenge) else {
            continue;
        };
        match by_name.get(&w.name) {
            Some(first) => {
                let missing: Vec<&str> = w
                    .hosts
                    .iter()
                    .filter(|h| !first.hosts.contains(h))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    errors.push(ConfigError {
                        path: w.source.clone(),
                        message: format!(
                            "the certificate file {} is already wanted by {}, which does not \
                             name {}; ask for these names there, or under another first host",
                            w.name,
                            first.source,
                            missing.join(", ")
                        ),
                    });
                }
            }
            None => {
                by_name.insert(w.name.clone(), w);
            }
        }
    }
    (by_name.into_values().collect(), errors)
}

/// What certs-dir holds under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// DNS names of the leaf (lowercase).
    pub sans: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
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
    /// It is in its renewal window (or has expired).
    Expiring,
    /// Fine until this Unix time, when it enters the renewal window.
    NotUntil(i64),
}

/// When `existing` enters its renewal window (Unix time).
pub fn renew_at(existing: &Existing, renew_before: RenewBefore) -> i64 {
    existing
        .not_after
        .saturating_sub(renew_before.seconds_before_expiry(existing.not_before, existing.not_after))
}

/// Decides for `hosts` given what exists, the renewal rule and the time now.
pub fn due(
    existing: Option<&Existing>,
    hosts: &[String],
    renew_before: RenewBefore,
    now: i64,
) -> Due {
    let Some(e) = existing else {
        return Due::Missing;
    };
    if !hosts.iter().all(|h| e.sans.iter().any(|s| s == h)) {
        return Due::Uncovered;
    }
    let at = renew_at(e, renew_before);
    if now >= at {
        Due::Expiring
    } else {
        Due::NotUntil(at)
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
        not_before: cert.validity().not_before.timestamp(),
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
    fn one_certificate_per_file_and_dns_01_for_containers_only_where_allowed() {
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
            (
                "broken",
                vec![
                    ("LETSENCRYPT_HOST", "*.example.com"),
                    ("ACME_CHALLENGE", "HTTP-01"),
                ],
            ),
            ("again", vec![("ACME_HOST", "r.example.com")]),
            ("wild", vec![("LETSENCRYPT_HOST", "*.w.example.com")]),
            (
                "evil",
                vec![
                    ("LETSENCRYPT_HOST", "mail.example.com"),
                    ("ACME_CHALLENGE", "DNS-01"),
                ],
            ),
            (
                "mixed",
                vec![
                    ("LETSENCRYPT_HOST", "m.w.example.com, mail.example.com"),
                    ("ACME_CHALLENGE", "DNS-01"),
                ],
            ),
        ] {
            let c = container(name, &env);
            snapshot.containers.insert(c.id.clone(), c);
        }
        let config = berth_core::config::parse_config(
            "[listen]\nhttp = \"127.0.0.1:80\"\n[acme]\ndns-provider = \"exec\"\n\
             dns-exec = \"/bin/hook\"\ndns-names = [\"*.w.example.com\"]\n\
             [[route]]\nhost = \"*.f.example.com\"\nupstreams = [\"127.0.0.1:1\"]\nacme = true\n\
             [[route]]\nhost = \"f.example.com\"\nupstreams = [\"127.0.0.1:1\"]\nacme = true\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (found, errors) = wanted(&config.routes, &snapshot, config.acme.dns.as_ref(), &[]);
        let names: Vec<&str> = found.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["f.example.com", "r.example.com", "w.example.com"],
            "{found:?}"
        );
        // The operator's wildcard and base routes share a file: one certificate, by DNS-01.
        assert_eq!(found[0].hosts, ["*.f.example.com", "f.example.com"]);
        assert_eq!(found[0].challenge, Challenge::Dns01);
        // "again" sorts first and wants r.example.com; "registry" wants the same file with a
        // name "again" does not carry: reported, not folded into the other's certificate.
        assert_eq!(found[1].source, "container again");
        assert_eq!(found[1].hosts, ["r.example.com"]);
        assert_eq!(found[1].challenge, Challenge::Http01);
        // A container's wildcard, under its base name, by DNS-01, as dns-names allows.
        assert_eq!(found[2].hosts, ["*.w.example.com"]);
        assert_eq!(found[2].challenge, Challenge::Dns01);
        let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 4, "{said:#?}");
        // One name it may not have refuses the container's certificate as a whole; the
        // message names only that one.
        assert!(
            said.iter().any(|e| e.starts_with(
                "container mixed: mail.example.com would be proved with dns-01, and acme.dns-names"
            )),
            "{said:#?}"
        );
        assert!(
            said.iter().any(|e| e.starts_with("container broken")),
            "{said:#?}"
        );
        assert!(
            said.iter().any(|e| e.starts_with(
                "container evil: mail.example.com would be proved with dns-01, and acme.dns-names does not allow it"
            )),
            "{said:#?}"
        );
        assert!(
            said.iter().any(|e| e.starts_with(
                "container registry: the certificate file r.example.com is already wanted by container again, which does not name www.r.example.com"
            )),
            "{said:#?}"
        );

        // Without a DNS provider, no container gets DNS-01; the rest stands.
        let (found, errors) = wanted(&[], &snapshot, None, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            errors.iter().any(|e| e.to_string().starts_with(
                "container wild: *.w.example.com would be proved with dns-01, and no acme.dns-provider"
            )),
            "{errors:?}"
        );

        // docker.allowed-hosts: a container asks only for names it may claim.
        let allowed = [HostPattern::parse("r.example.com").expect("pattern")];
        let (found, errors) = wanted(&[], &snapshot, None, &allowed);
        assert!(
            found.iter().all(|w| w.hosts == ["r.example.com"]),
            "{found:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("not among docker.allowed-hosts")),
            "{errors:?}"
        );
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
            not_before: 0,
            not_after: 1_000_000,
            der: Vec::new(),
        };
        let fixed = RenewBefore::Fixed(std::time::Duration::from_secs(100));
        assert_eq!(due(None, &hosts, fixed, 0), Due::Missing);
        assert_eq!(due(Some(&e), &hosts, fixed, 0), Due::NotUntil(999_900));
        assert_eq!(due(Some(&e), &hosts, fixed, 999_900), Due::Expiring);
        let more = vec!["a.example.com".to_string(), "b.example.com".to_string()];
        assert_eq!(due(Some(&e), &more, fixed, 0), Due::Uncovered);
    }

    #[test]
    fn automatic_windows_for_6_45_and_90_day_certificates() {
        let day = 86_400;
        let issued = 1_800_000_000;
        for (days, renew_after_days) in [(90, 60), (45, 30), (6, 3)] {
            let e = Existing {
                sans: vec!["a.example.com".into()],
                not_before: issued,
                not_after: issued + days * day,
                der: Vec::new(),
            };
            let at = issued + renew_after_days * day;
            assert_eq!(
                renew_at(&e, RenewBefore::Auto),
                at,
                "{days}-day certificate"
            );
            assert_eq!(
                due(Some(&e), &e.sans, RenewBefore::Auto, at - 1),
                Due::NotUntil(at),
                "{days}-day certificate, a second before"
            );
            assert_eq!(
                due(Some(&e), &e.sans, RenewBefore::Auto, at),
                Due::Expiring,
                "{days}-day certificate, on time"
            );
        }
    }
}
