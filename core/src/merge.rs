//! Merging the config file's routes with the routes discovered from containers into the one
//! list the route table is built from, resolving conflicts the same way every time:
//!
//! 1. A route from the config file wins over any container with the same host and path.
//! 2. Containers with the same host, path and settings are load-balanced: their upstreams are
//!    joined into one route (in container-name order).
//! 3. Containers with the same host and path but different settings: the container whose
//!    name sorts first wins; the others are left out of that route.
//!
//! 4. Client certificates are per host (the handshake comes before the path): a container
//!    route whose `client-ca`/`client-auth` differ from those of a route already there for
//!    its host (the config file's first, then containers in name order) is left out.
//!
//! Every conflict is returned as a sentence naming both sides, for the log and `/routes`.

use std::collections::HashMap;

use crate::route::{ClientAuth, RouteSource, RouteSpec};

/// The merged routes and the conflicts met on the way.
#[derive(Debug, Default)]
pub struct Merged {
    /// File routes first (in file order), then discovered routes in container-name order.
    pub routes: Vec<RouteSpec>,
    /// One sentence per conflict.
    pub conflicts: Vec<String>,
}

/// What two routes must share to be load-balanced: everything but upstreams and source.
fn settings_key(spec: &RouteSpec) -> String {
    let mut bare = spec.clone();
    bare.upstreams.clear();
    bare.source = RouteSource::File;
    bare.fingerprint()
}

/// Merges `file` routes with `discovered` ones, given per container as
/// `(container name, routes)`.
pub fn merge_routes(file: Vec<RouteSpec>, mut discovered: Vec<(String, Vec<RouteSpec>)>) -> Merged {
    discovered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged = Merged::default();
    // (host, path) → index in merged.routes, and whether it came from the file.
    let mut seen: HashMap<(String, String), (usize, bool)> = HashMap::new();
    // host → the client certificate settings of its first route, and that route's source.
    let mut host_auth: HashMap<String, (String, Option<ClientAuth>)> = HashMap::new();
    for spec in file {
        host_auth
            .entry(spec.host.to_string())
            .or_insert_with(|| (spec.source.to_string(), spec.client_auth.clone()));
        let key = (spec.host.to_string(), spec.path.clone());
        if seen.contains_key(&key) {
            // Duplicate file routes are refused when the config is read; never here.
            continue;
        }
        seen.insert(key, (merged.routes.len(), true));
        merged.routes.push(spec);
    }
    for (container, specs) in discovered {
        for spec in specs {
            let key = (spec.host.to_string(), spec.path.clone());
            let (first, auth) = host_auth
                .entry(key.0.clone())
                .or_insert_with(|| (spec.source.to_string(), spec.client_auth.clone()));
            if *auth != spec.client_auth {
                merged.conflicts.push(format!(
                    "{}: {} {} sets client certificates (client-ca, client-auth) otherwise \
                     than {first}'s route for the host, which the handshake follows; it is left out",
                    spec.source, key.0, key.1
                ));
                continue;
            }
            match seen.get(&key) {
                None => {
                    seen.insert(key, (merged.routes.len(), false));
                    merged.routes.push(spec);
                }
                Some(&(_, true)) => merged.conflicts.push(format!(
                    "{}: {} {} is also a route in the config file; \
                     the config file's route is used",
                    spec.source, key.0, key.1
                )),
                Some(&(index, false)) => {
                    let Some(existing) = merged.routes.get_mut(index) else {
                        continue;
                    };
                    let same = settings_key(existing) == settings_key(&spec);
                    match (&mut existing.source, &spec.source) {
                        (RouteSource::Containers(names), RouteSource::Containers(_)) => {
                            if names.contains(&container) {
                                merged.conflicts.push(format!(
                                    "container {container} lists {} {} twice; the first is used",
                                    key.0, key.1
                                ));
                            } else if same {
                                names.push(container.clone());
                                existing.upstreams.extend(spec.upstreams);
                            } else {
                                merged.conflicts.push(format!(
                                    "containers {} and {container} both route {} {} with \
                                     different settings; {}'s are used (first by name), \
                                     {container} is left out",
                                    names.join(", "),
                                    key.0,
                                    key.1,
                                    names.first().map_or("", String::as_str),
                                ));
                            }
                        }
                        // Tasks of one service (or several services) with the same settings
                        // are load-balanced, as containers are.
                        (RouteSource::Services(names), RouteSource::Services(new)) if same => {
                            for n in new {
                                if !names.contains(n) {
                                    names.push(n.clone());
                                }
                            }
                            existing.upstreams.extend(spec.upstreams);
                        }
                        (first, _) => merged.conflicts.push(format!(
                            "{} and {} both route {} {}{}; {first}'s route is used (first by \
                             name), the other is left out",
                            first,
                            spec.source,
                            key.0,
                            key.1,
                            if same { "" } else { " with different settings" },
                        )),
                    }
                }
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Errors, RawRoute};
    use crate::route::builtin_defaults;

    fn spec(host: &str, upstream: &str, source: RouteSource, max_body: Option<&str>) -> RouteSpec {
        let raw = RawRoute {
            host: Some(host.into()),
            upstreams: vec![upstream.into()],
            max_body: max_body.map(str::to_string),
            ..RawRoute::default()
        };
        let mut errors = Errors::default();
        raw.validate("t", &builtin_defaults(), source, &mut errors)
            .expect("valid")
    }

    fn from(
        name: &str,
        host: &str,
        upstream: &str,
        max_body: Option<&str>,
    ) -> (String, Vec<RouteSpec>) {
        let source = RouteSource::Containers(vec![name.into()]);
        (name.into(), vec![spec(host, upstream, source, max_body)])
    }

    #[test]
    fn same_settings_are_load_balanced_in_name_order() {
        let merged = merge_routes(
            Vec::new(),
            vec![
                from("web-2", "a.example.com", "10.0.0.2:80", None),
                from("web-1", "a.example.com", "10.0.0.1:80", None),
            ],
        );
        assert!(merged.conflicts.is_empty());
        assert_eq!(merged.routes.len(), 1);
        let r = &merged.routes[0];
        let addrs: Vec<String> = r.upstreams.iter().map(|u| u.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(
            r.source,
            RouteSource::Containers(vec!["web-1".into(), "web-2".into()])
        );
    }

    fn task(name: &str, service: &str, host: &str, upstream: &str) -> (String, Vec<RouteSpec>) {
        let source = RouteSource::Services(vec![service.into()]);
        (name.into(), vec![spec(host, upstream, source, None)])
    }

    #[test]
    fn tasks_of_a_service_are_load_balanced_under_the_service_name() {
        let merged = merge_routes(
            Vec::new(),
            vec![
                task("web.2", "web", "w.example.com", "10.0.1.6:80"),
                task("web.1", "web", "w.example.com", "10.0.1.5:80"),
                from("www", "w.example.com", "172.17.0.2:80", None),
                task("api.1", "api", "a.example.com", "10.0.1.9:80"),
            ],
        );
        assert_eq!(merged.routes.len(), 2, "{:?}", merged.routes);
        let a = &merged.routes[0];
        assert_eq!(a.source, RouteSource::Services(vec!["api".into()]));
        let w = &merged.routes[1];
        assert_eq!(w.source, RouteSource::Services(vec!["web".into()]));
        let addrs: Vec<String> = w.upstreams.iter().map(|u| u.addr.to_string()).collect();
        assert_eq!(addrs, ["10.0.1.5:80", "10.0.1.6:80"]);
        assert_eq!(merged.conflicts.len(), 1, "{:?}", merged.conflicts);
        assert!(
            merged.conflicts[0]
                .starts_with("service web and container www both route w.example.com /;"),
            "{:?}",
            merged.conflicts
        );
    }

    #[test]
    fn conflicts_resolve_the_documented_way() {
        let file = vec![spec(
            "f.example.com",
            "127.0.0.1:1",
            RouteSource::File,
            None,
        )];
        let merged = merge_routes(
            file,
            vec![
                from("zeta", "a.example.com", "10.0.0.9:80", Some("1MiB")),
                from("alpha", "a.example.com", "10.0.0.1:80", None),
                from("beta", "f.example.com", "10.0.0.2:80", None),
            ],
        );
        assert_eq!(merged.routes.len(), 2);
        assert_eq!(merged.routes[0].source, RouteSource::File);
        let a = &merged.routes[1];
        assert_eq!(a.upstreams.len(), 1);
        assert_eq!(a.upstreams[0].addr.to_string(), "10.0.0.1:80");
        assert_eq!(merged.conflicts.len(), 2, "{:?}", merged.conflicts);
        assert!(merged.conflicts[0].starts_with("container beta: f.example.com /"));
        assert!(merged.conflicts[1].contains("alpha and zeta"));
        assert!(merged.conflicts[1].contains("alpha's are used"));
    }

    #[test]
    fn a_container_cannot_set_a_hosts_client_certificates_otherwise() {
        let with_ca = |mut spec: RouteSpec, ca: &str, path: &str| {
            spec.client_auth = Some(ClientAuth {
                ca: ca.into(),
                mode: crate::route::ClientAuthMode::Require,
            });
            spec.path = path.into();
            spec
        };
        let file = vec![with_ca(
            spec("reg.example.com", "127.0.0.1:1", RouteSource::File, None),
            "/etc/berth/ca.pem",
            "/",
        )];
        let container = |name: &str, host: &str, ca: Option<&str>, path: &str| {
            let (n, mut specs) = from(name, host, "10.0.0.1:80", None);
            specs[0].path = path.into();
            if let Some(ca) = ca {
                specs[0] = with_ca(specs[0].clone(), ca, path);
            }
            (n, specs)
        };
        let merged = merge_routes(
            file,
            vec![
                // Another path of the file's host, with another CA or none: left out.
                container(
                    "evil",
                    "reg.example.com",
                    Some("/etc/berth/other.pem"),
                    "/zz",
                ),
                container("plain", "reg.example.com", None, "/v3"),
                // The same settings: routed.
                container("same", "reg.example.com", Some("/etc/berth/ca.pem"), "/v4"),
                // A new host: its first container decides; a later one that differs is out.
                container("a1", "new.example.com", Some("/etc/berth/ca.pem"), "/"),
                container("a2", "new.example.com", None, "/x"),
            ],
        );
        let routed: Vec<String> = merged
            .routes
            .iter()
            .map(|r| format!("{} {}", r.host, r.path))
            .collect();
        assert_eq!(
            routed,
            [
                "reg.example.com /",
                "new.example.com /",
                "reg.example.com /v4"
            ]
        );
        assert_eq!(merged.conflicts.len(), 3, "{:?}", merged.conflicts);
        assert!(merged
            .conflicts
            .iter()
            .all(|c| c.contains("sets client certificates")));
        assert!(merged.conflicts[0].starts_with("container a2: new.example.com /x"));
    }

    #[test]
    fn a_container_naming_one_host_twice_is_a_visible_conflict() {
        let (name, mut specs) = from("web", "a.example.com", "10.0.0.1:80", None);
        specs.extend(from("web", "a.example.com", "10.0.0.1:80", None).1);
        let merged = merge_routes(Vec::new(), vec![(name, specs)]);
        assert_eq!(merged.routes.len(), 1);
        assert_eq!(
            merged.routes[0].upstreams.len(),
            1,
            "not joined with itself"
        );
        assert_eq!(
            merged.conflicts,
            ["container web lists a.example.com / twice; the first is used"]
        );
    }
}
