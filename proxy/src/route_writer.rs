//! The one writer of the route table: the config file's routes plus what the label schema
//! makes of each container, merged, built into chains and swapped in whole. It is fed by the
//! Docker service ([`crate::docker_routes`], on every change the daemon reports) and by
//! SIGHUP ([`crate::reload`], with a new config file).
//!
//! A rebuild only re-reads containers whose inspect data changed, reuses the plugin chains of
//! routes that did not change (so round-robin positions and upstream TLS settings survive),
//! and logs only what changed: a container routed, left out, waiting for its health check,
//! skipped for a bad label, or in conflict with another. The outcome is also kept as a
//! [`Report`] for `/routes`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use berth_core::docker::Snapshot;
use berth_core::logging::shown;

/// The most characters of one message `/routes` shows.
const SHOWN_CHARS: usize = 512;
use berth_core::labels::{judge, ContainerInfo, ContainerRules, Health, Verdict};
use berth_core::merge::merge_routes;
use berth_core::route::{RouteSettings, RouteSpec};
use berth_core::table::RouteTable;
use berth_plugins::pages::ErrorPages;
use berth_plugins::{ChainEnv, Route};

use berth_plugins::{Served, SharedTable, TrustedProxies};

/// What discovery made of the containers, for `/routes`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// Containers that have berth labels or nginx-proxy variables, by name.
    pub containers: Vec<ContainerReport>,
    /// Conflicts between routes, and how they were resolved.
    pub conflicts: Vec<String>,
}

/// One container's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerReport {
    /// Container name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// `routed`, `waiting` (health check), `disabled` or `invalid`.
    pub state: &'static str,
    /// Hosts routed, the health verdict, or the errors.
    pub detail: Vec<String>,
}

/// What the config file contributes to the route table; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct FileRoutes {
    /// The file's `[[route]]`s.
    pub routes: Vec<RouteSpec>,
    /// `[defaults]`, which containers' routes start from too.
    pub defaults: RouteSettings,
    /// `docker.network` and `docker.label-files` (berth's own networks are filled in from
    /// each snapshot).
    pub container_rules: ContainerRules,
    /// What chains are built with (certificate lookup, htpasswd files).
    pub env: ChainEnv,
    /// `forwarded.trusted-proxies`, swapped in with the table.
    pub trust: TrustedProxies,
}

/// The routes of the config file and the table they are merged into.
pub struct RouteWriter {
    static_routes: Vec<RouteSpec>,
    defaults: RouteSettings,
    container_rules: ContainerRules,
    env: ChainEnv,
    trust: TrustedProxies,
    /// `[defaults] error-pages`, read at start and at each reload.
    pages: Arc<ErrorPages>,
    table: SharedTable,
    report: Arc<ArcSwap<Report>>,
    /// Last outcome per container id, with the inspect data it came from.
    outcomes: HashMap<String, (Arc<ContainerInfo>, Verdict)>,
    /// Routes of the current table by their serialised spec, for reuse.
    built: HashMap<String, Arc<Route>>,
    conflicts: BTreeSet<String>,
    /// The containers of the last rebuild, for rebuilding after a reload.
    last: Arc<Snapshot>,
}

/// The pages of `[defaults] error-pages`, for answers no route gives.
fn default_pages(defaults: &RouteSettings) -> Arc<ErrorPages> {
    defaults
        .error_pages
        .as_deref()
        .map(ErrorPages::shared)
        .unwrap_or_default()
}

impl RouteWriter {
    /// A builder that merges discovered routes into `table` next to the file's routes.
    pub fn new(file: FileRoutes, table: SharedTable) -> RouteWriter {
        RouteWriter {
            static_routes: file.routes,
            pages: default_pages(&file.defaults),
            defaults: file.defaults,
            container_rules: file.container_rules,
            env: file.env,
            trust: file.trust,
            table,
            report: Arc::default(),
            outcomes: HashMap::new(),
            built: HashMap::new(),
            conflicts: BTreeSet::new(),
            last: Arc::default(),
        }
    }

    /// Takes new file routes and settings (a reload) and rebuilds the table with the
    /// containers last seen. Every container is judged again (the defaults may have
    /// changed); routes whose spec did not change keep their chain, and with it their
    /// round-robin position. A route with an
    /// `upstream-ca-file` is always built again: the file is read when a chain is built, and
    /// a reload is how a replaced CA file is taken in; `error-pages` are read again in place.
    pub fn reconfigure(&mut self, file: FileRoutes) {
        self.built
            .retain(|_, route| route.spec.upstream_tls.ca_file.is_none());
        // Pages are read again (once per directory), each route keeping its chain.
        ErrorPages::forget_all();
        for route in self.built.values() {
            route.reread_pages();
        }
        self.static_routes = file.routes;
        self.pages = default_pages(&file.defaults);
        self.defaults = file.defaults;
        self.container_rules = file.container_rules;
        self.env = file.env;
        self.trust = file.trust;
        self.outcomes.clear();
        let last = self.last.clone();
        self.rebuild(&last);
    }

    /// The report `/routes` shows, kept up to date by [`RouteWriter::rebuild`].
    pub fn report(&self) -> Arc<ArcSwap<Report>> {
        self.report.clone()
    }

    /// Rebuilds the table from a snapshot of the containers and swaps it in.
    pub fn rebuild(&mut self, snapshot: &Arc<Snapshot>) {
        self.last = snapshot.clone();
        let rules = ContainerRules {
            own_networks: snapshot.own_networks.clone(),
            ..self.container_rules.clone()
        };
        self.outcomes.retain(|id, (info, outcome)| {
            let kept = snapshot.get(id).is_some();
            if !kept && matches!(outcome, Verdict::Routes(_) | Verdict::Waiting(_)) {
                tracing::info!("docker: {} gone; its routes are removed", described(info));
            }
            kept
        });
        for (id, info) in snapshot.entries() {
            let unchanged = self
                .outcomes
                .get(id)
                .is_some_and(|(seen, _)| Arc::ptr_eq(seen, info) || **seen == **info);
            if unchanged {
                continue;
            }
            let outcome = judge(info, &rules, &self.defaults);
            log_outcome(info, &outcome);
            self.outcomes.insert(id.clone(), (info.clone(), outcome));
        }

        let discovered: Vec<(String, Vec<RouteSpec>)> = self
            .outcomes
            .values()
            .filter_map(|(info, outcome)| match outcome {
                Verdict::Routes(routes) => Some((info.name.clone(), routes.clone())),
                _ => None,
            })
            .collect();
        let merged = merge_routes(self.static_routes.clone(), discovered);
        let conflicts: BTreeSet<String> = merged.conflicts.iter().cloned().collect();
        for c in conflicts.difference(&self.conflicts) {
            tracing::warn!("docker: {c}");
        }
        self.conflicts = conflicts;

        let mut built = HashMap::with_capacity(merged.routes.len());
        let mut routes = Vec::with_capacity(merged.routes.len());
        for spec in merged.routes {
            let key = spec.fingerprint();
            let route = match self.built.get(&key) {
                Some(r) => r.clone(),
                None => Arc::new(Route::build(spec, &self.env)),
            };
            built.insert(key, route.clone());
            routes.push(route);
        }
        self.built = built;
        self.table.store(Arc::new(Served {
            routes: RouteTable::new(routes),
            trust: self.trust.clone(),
            pages: self.pages.clone(),
        }));
        self.report
            .store(Arc::new(self.make_report(merged.conflicts)));
    }

    fn make_report(&self, conflicts: Vec<String>) -> Report {
        let mut containers: Vec<ContainerReport> = self
            .outcomes
            .values()
            .filter_map(|(info, outcome)| {
                let (state, detail) = match outcome {
                    Verdict::Routes(routes) => (
                        "routed",
                        routes
                            .iter()
                            .map(|r| format!("{}{}", r.host, r.path))
                            .collect(),
                    ),
                    Verdict::Waiting(h) => ("waiting", vec![format!("health: {}", health(*h))]),
                    // Errors quote label values: escaped and cut, as in the log.
                    Verdict::Invalid(errors) => (
                        "invalid",
                        errors
                            .iter()
                            .map(|e| shown(&e.to_string(), SHOWN_CHARS))
                            .collect(),
                    ),
                    Verdict::Ignored(reason) if reason.starts_with("berth.enable") => {
                        ("disabled", vec![(*reason).to_string()])
                    }
                    Verdict::Ignored(_) => return None,
                };
                Some(ContainerReport {
                    name: info.name.clone(),
                    id: info.id.chars().take(12).collect(),
                    state,
                    detail,
                })
            })
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Report {
            containers,
            conflicts,
        }
    }
}

fn health(h: Health) -> &'static str {
    match h {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

/// `container web` or `task web.2 of service web`, for log lines.
fn described(info: &ContainerInfo) -> String {
    match &info.service {
        Some(service) if *service != info.name => {
            format!("task {} of service {service}", info.name)
        }
        Some(service) => format!("service {service}"),
        None => format!("container {}", info.name),
    }
}

fn log_outcome(info: &ContainerInfo, outcome: &Verdict) {
    let what = described(info);
    match outcome {
        Verdict::Routes(routes) => {
            for r in routes {
                let upstreams: Vec<String> =
                    r.upstreams.iter().map(|u| u.addr.to_string()).collect();
                tracing::info!(
                    "docker: {what}: routing {}{} to {}",
                    r.host,
                    r.path,
                    upstreams.join(", ")
                );
            }
        }
        Verdict::Waiting(h) => tracing::info!(
            "docker: {what}: health {}; left out until it is healthy",
            health(*h)
        ),
        Verdict::Invalid(errors) => {
            for e in errors {
                let e = shown(&e.to_string(), SHOWN_CHARS);
                tracing::warn!("docker: {e}; {what} skipped");
            }
        }
        Verdict::Ignored(reason) => {
            tracing::debug!("docker: {what}: not routed: {reason}");
        }
    }
}
