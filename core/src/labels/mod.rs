//! The Docker label schema: what a container's labels and environment turn into. Pure
//! functions over [`ContainerInfo`], used by `berth` (routes) and `berth-acme` (which hosts
//! need certificates), so both read a container the same way.
//!
//! Native labels (`berth.host`, `berth.port`, ...) win over the nginx-proxy / acme-companion
//! environment variables (`VIRTUAL_HOST`, `VIRTUAL_PORT`, ...), which are honoured so an
//! existing stack moves over without edits.
//!
//! A route label is the route key of the same name (`berth.auth.realm` is `auth.realm`):
//! the labels decode, as a tree, into the file's own [`RawRoute`] and go through the same
//! [`RawRoute::validate`], so a new route key has its label without a line here. What is read
//! by hand is short and listed: the container's own keys (hosts, port, network,
//! certificate), nginx-proxy's variables, the route keys a container
//! may not set ([`REFUSED`]). A route key that names a file is a
//! [`crate::files::FilePath`], which decodes from a label only under `docker.label-files`,
//! whatever its name. A bad value makes the whole container invalid, with every problem named
//! by container and key; other containers are not affected.
//!
//! ```text
//! docker run -l berth.host=registry.example.com -l berth.profile=registry registry:2
//! docker run -e VIRTUAL_HOST=registry.example.com -e VIRTUAL_PORT=5000 \
//!            -e LETSENCRYPT_HOST=registry.example.com registry:2
//! ```

mod decode;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub use decode::{comma_list, keys_of, parse_bool, Keys};
use decode::{Tree, Value};

use crate::config::{ConfigError, Errors, RawRoute};
use crate::route::{Challenge, HostPattern, RouteSettings, RouteSource, RouteSpec};

/// The ranges nginx-proxy calls "internal" (`NETWORK_ACCESS=internal`): loopback, the
/// RFC 1918 ranges, IPv6 unique-local and link-local.
pub const INTERNAL_NETWORKS: [&str; 7] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
];

/// Prefix of the native labels.
pub const LABEL_PREFIX: &str = "berth.";

/// A container as the schema sees it: what Docker's inspect says, reduced to what matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Environment (`KEY=VALUE` entries split at the first `=`; a later entry wins).
    pub env: BTreeMap<String, String>,
    /// Exposed TCP ports, sorted.
    pub exposed_tcp_ports: Vec<u16>,
    /// Networks the container is attached to, sorted by name.
    pub networks: Vec<ContainerNetwork>,
    /// `host` when the container shares the host's network stack.
    pub network_mode: Option<String>,
    /// The health check's verdict.
    pub health: Health,
    /// The Swarm service this task (or, with `berth.swarm.lb = "vip"`, this service entry)
    /// belongs to; `None` for a plain container.
    pub service: Option<String>,
}

/// One network attachment of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNetwork {
    /// Network name.
    pub name: String,
    /// The container's address on it (IPv4 preferred), if it has one.
    pub ip: Option<IpAddr>,
}

/// What a container's health check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check.
    None,
    /// Checked, no verdict yet.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// What the config file and berth's own container decide about every container: how to pick
/// its address among its networks, and where its labels may name files.
#[derive(Debug, Clone, Default)]
pub struct ContainerRules {
    /// `docker.network` from the config file (a `berth.network` label overrides it).
    pub preferred_network: Option<String>,
    /// Networks of berth's own container, when berth runs in one.
    pub own_networks: Vec<String>,
    /// `docker.label-files`: where `berth.auth.htpasswd` and `berth.auth.token-secret-file`
    /// may point.
    pub label_files: crate::files::LabelFiles,
    /// `docker.allowed-hosts`: the hosts and patterns a container may claim (empty: any).
    pub allowed_hosts: Vec<HostPattern>,
}

/// What berth makes of a container.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Routed: one route per host.
    Routes(Vec<RouteSpec>),
    /// Not routed, on purpose (no host, or `berth.enable=false`).
    Ignored(&'static str),
    /// Valid, but left out until its health check passes.
    Waiting(Health),
    /// A label or variable is wrong; every problem is listed.
    Invalid(Vec<ConfigError>),
}

/// A certificate a container asks for (acme-companion's `LETSENCRYPT_HOST`, or
/// `berth.acme=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeRequest {
    /// Names on the certificate; the first names the files.
    pub hosts: Vec<String>,
    /// Account email, when the container names one.
    pub email: Option<String>,
    /// How the names are proved (`berth.acme.challenge`, `ACME_CHALLENGE`; `dns-01` for
    /// wildcards, `http-01` otherwise).
    pub challenge: Challenge,
}

/// Labels about the container itself rather than a route key, read here by hand: which hosts
/// (one route each), where it listens, whether it is routed, and the certificate it asks for
/// (which `berth-acme` reads too).
const CONTAINER_KEYS: [&str; 8] = [
    "host",
    "port",
    "network",
    "enable",
    "swarm.lb",
    "acme",
    "acme.email",
    "acme.challenge",
];

/// Route keys whose label is one of [`CONTAINER_KEYS`]: `(route key, label)`.
const ROUTE_KEYS_AS_CONTAINER_KEYS: [(&str, &str); 3] = [
    ("host", "host"),
    ("acme", "acme"),
    ("acme-challenge", "acme.challenge"),
];

/// Route keys a container may not set, and why: whoever may start a container may set its
/// labels, and these are the operator's to decide.
pub const REFUSED: [(&str, &str); 3] = [
    (
        "upstreams",
        "the upstream is the container itself, at its address and berth.port",
    ),
    (
        "dangerous-skip-verify",
        "turning off the check of an upstream's certificate is for the config file",
    ),
    (
        "auth.repositories",
        "repository rules are a list of tables, which a label cannot carry: name a file of \
         [[rule]] tables with berth.auth.repositories-file",
    ),
];

/// nginx-proxy's and acme-companion's variables, each standing for a label when the label is
/// not set.
const ALIASES: [(&str, &[&str]); 9] = [
    ("host", &["VIRTUAL_HOST"]),
    ("port", &["VIRTUAL_PORT"]),
    ("proto", &["VIRTUAL_PROTO"]),
    ("path", &["VIRTUAL_PATH"]),
    ("https", &["HTTPS_METHOD"]),
    ("hsts", &["HSTS"]),
    ("cert-name", &["CERT_NAME"]),
    ("acme.email", &["LETSENCRYPT_EMAIL", "ACME_EMAIL"]),
    ("acme.challenge", &["ACME_CHALLENGE"]),
];

/// The certificate's names (acme-companion), which have no label: `berth.acme=true` takes
/// the container's hosts instead.
const ACME_HOST_VARIABLES: [&str; 2] = ["LETSENCRYPT_HOST", "ACME_HOST"];

/// nginx-proxy's `NETWORK_ACCESS=internal`, which stands for a `berth.allow` of
/// [`INTERNAL_NETWORKS`].
const NETWORK_ACCESS: &str = "NETWORK_ACCESS";

/// The route keys ([`RawRoute`]'s), and which of them name files.
pub fn route_keys() -> decode::Keys {
    // RawRoute holds only strings, numbers, lists and tables, which the probe walks; a test
    // holds it to that.
    keys_of::<RawRoute>().unwrap_or_default()
}

/// The labels decoded into [`RawRoute`], without the prefix: every route key except those
/// read by hand and those refused.
fn route_labels() -> Vec<String> {
    route_keys()
        .all
        .into_iter()
        .filter(|k| {
            !REFUSED.iter().any(|(r, _)| r == k)
                && !ROUTE_KEYS_AS_CONTAINER_KEYS.iter().any(|(r, _)| r == k)
        })
        .collect()
}

/// Every name a container can carry for berth: the native labels (with their prefix) and the
/// nginx-proxy / acme-companion environment variables (for documentation checks and tools).
pub fn schema_names() -> Vec<String> {
    let mut names: Vec<String> = CONTAINER_KEYS
        .iter()
        .map(|k| (*k).to_string())
        .chain(route_labels())
        .map(|k| format!("{LABEL_PREFIX}{k}"))
        .collect();
    for (_, vars) in ALIASES {
        names.extend(vars.iter().map(|v| (*v).to_string()));
    }
    names.extend(ACME_HOST_VARIABLES.iter().map(|v| (*v).to_string()));
    names.push(NETWORK_ACCESS.to_string());
    names
}

/// A value and where it came from (`label berth.port`, `env VIRTUAL_PORT`).
struct Found<'a> {
    value: &'a str,
    origin: String,
}

impl ContainerInfo {
    /// The label `berth.<key>`, else the first of its variables that is set.
    fn get(&self, key: &str) -> Option<Found<'_>> {
        let name = format!("{LABEL_PREFIX}{key}");
        if let Some(v) = self.labels.get(&name) {
            return Some(Found {
                value: v,
                origin: format!("label {name}"),
            });
        }
        let vars = ALIASES.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        self.variable(vars.unwrap_or_default())
    }

    /// The first of `vars` that is set.
    fn variable(&self, vars: &[&str]) -> Option<Found<'_>> {
        vars.iter().find_map(|var| {
            self.env.get(*var).map(|v| Found {
                value: v,
                origin: format!("env {var}"),
            })
        })
    }

    fn error_path(&self, origin: &str) -> String {
        match &self.service {
            Some(service) if *service != self.name => {
                format!("service {service} (task {}), {origin}", self.name)
            }
            Some(service) => format!("service {service}, {origin}"),
            None => format!("container {}, {origin}", self.name),
        }
    }

    /// The route keys the container sets, by label or variable, as a tree to decode; every
    /// label that cannot be one is an error.
    fn route_tree(&self, errors: &mut Errors) -> Tree {
        let mut tree = Tree::default();
        let mut put = |tree: &mut Tree, key: &str, found: Found<'_>| {
            let value = Value {
                text: found.value.trim().to_string(),
                origin: found.origin,
            };
            let origin = value.origin.clone();
            if let Err(e) = tree.insert(key, value) {
                errors.push(self.error_path(&origin), e);
            }
        };
        for (name, value) in &self.labels {
            let Some(key) = name.strip_prefix(LABEL_PREFIX) else {
                continue;
            };
            if !CONTAINER_KEYS.contains(&key) {
                let origin = format!("label {name}");
                put(&mut tree, key, Found { value, origin });
            }
        }
        for (key, vars) in ALIASES {
            if CONTAINER_KEYS.contains(&key) || tree.get(key).is_some() {
                continue;
            }
            if let Some(found) = self.variable(vars) {
                put(&mut tree, key, found);
            }
        }
        if tree.get("allow").is_none() {
            if let Some(found) = self.variable(&[NETWORK_ACCESS]) {
                match found.value.trim().to_ascii_lowercase().as_str() {
                    "external" | "" => {}
                    "internal" => {
                        let value = INTERNAL_NETWORKS.join(",");
                        let origin = found.origin;
                        put(
                            &mut tree,
                            "allow",
                            Found {
                                value: &value,
                                origin,
                            },
                        );
                    }
                    other => errors.push(
                        self.error_path(&found.origin),
                        format!("invalid value \"{other}\": expected \"external\" or \"internal\""),
                    ),
                }
            }
        }
        for (key, why) in REFUSED {
            if let Some(origin) = tree.take(key) {
                errors.push(
                    self.error_path(&origin),
                    format!("a container may not set {key}: {why}"),
                );
            }
        }
        // A route key whose label has another spelling is no label under its own.
        for (key, label) in ROUTE_KEYS_AS_CONTAINER_KEYS {
            if key == label {
                continue;
            }
            if let Some(origin) = tree.take(key) {
                errors.push(
                    self.error_path(&origin),
                    format!("unknown label: the label for {key} is {LABEL_PREFIX}{label}"),
                );
            }
        }
        tree
    }

    /// The route keys the container sets, decoded as a `[[route]]` of the file is; files only
    /// under `docker.label-files`.
    fn route(&self, rules: &ContainerRules, errors: &mut Errors) -> (RawRoute, Tree) {
        let tree = self.route_tree(errors);
        // Files are read by berth: only under docker.label-files, whatever the container says.
        let check_file = |path: &str| {
            rules
                .label_files
                .check(path)
                .map(|p| p.display().to_string())
        };
        let (raw, problems, unknown) = decode::decode::<RawRoute>(tree.clone(), &check_file);
        for p in problems {
            errors.push(self.error_path(&p.origin), p.message);
        }
        for key in unknown {
            let mut origins = tree.origins_under(&key);
            if origins.is_empty() {
                origins.push(format!("label {LABEL_PREFIX}{key}"));
            }
            for origin in origins {
                errors.push(
                    self.error_path(&origin),
                    "unknown label (see the label list in the README)",
                );
            }
        }
        (raw, tree)
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid port \"{value}\": expected a number from 1 to 65535"
        )),
    }
}

/// What berth makes of `info`: its routes, or why it has none.
pub fn judge(info: &ContainerInfo, rules: &ContainerRules, defaults: &RouteSettings) -> Verdict {
    let mut errors = Errors::default();
    if let Some(found) = info.get("enable") {
        match parse_bool(found.value) {
            Ok(false) => return Verdict::Ignored("berth.enable=false"),
            Ok(true) => {}
            Err(e) => errors.push(info.error_path(&found.origin), e),
        }
    }
    // The certificate keys are part of the schema too: a typo there is reported here, by the
    // proxy, not only by the ACME worker.
    acme_checked(info, &mut errors);
    let (mut raw, tree) = info.route(rules, &mut errors);
    let Some(hosts) = info.get("host") else {
        // A certificate without a route is fine (the ACME worker still issues it).
        return if errors.is_empty() {
            Verdict::Ignored("no berth.host label or VIRTUAL_HOST variable")
        } else {
            Verdict::Invalid(errors.into_inner())
        };
    };
    let host_list = comma_list(hosts.value);
    if host_list.is_empty() {
        errors.push(info.error_path(&hosts.origin), "empty host list");
    }
    for host in &host_list {
        if let Ok(pattern) = HostPattern::parse(host) {
            if !crate::route::may_claim(&rules.allowed_hosts, &pattern) {
                errors.push(
                    info.error_path(&hosts.origin),
                    format!(
                        "\"{host}\" is not among docker.allowed-hosts: containers may claim only \
                         the hosts the operator allows"
                    ),
                );
            }
        }
    }
    let port = match info.get("port") {
        Some(found) => errors.check(&info.error_path(&found.origin), parse_port(found.value)),
        None => Some(default_port(info)),
    };
    let ip = upstream_ip(info, rules, &mut errors);
    if let (Some(ip), Some(port)) = (ip, port) {
        raw.upstreams = vec![SocketAddr::new(ip, port).to_string()];
    }
    if !errors.is_empty() {
        return Verdict::Invalid(errors.into_inner());
    }
    let mut routes = Vec::new();
    let mut route_errors = Errors::default();
    for host in host_list {
        let raw = RawRoute {
            host: Some(host),
            ..raw.clone()
        };
        let source = match &info.service {
            Some(service) => RouteSource::Services(vec![service.clone()]),
            None => RouteSource::Containers(vec![info.name.clone()]),
        };
        if let Some(mut spec) = raw.validate("", defaults, source, &mut route_errors) {
            for u in &mut spec.upstreams {
                u.container = Some(info.name.clone());
            }
            routes.push(spec);
        }
    }
    if !route_errors.is_empty() {
        return Verdict::Invalid(rename_route_errors(info, &tree, route_errors.into_inner()));
    }
    match info.health {
        Health::Starting | Health::Unhealthy => Verdict::Waiting(info.health),
        Health::None | Health::Healthy => Verdict::Routes(routes),
    }
}

/// The address berth sends to: on `berth.network` (or `docker.network`), else by the rule of
/// [`address`]; with `berth.swarm.lb=vip`, the service's virtual IP.
fn upstream_ip(
    info: &ContainerInfo,
    rules: &ContainerRules,
    errors: &mut Errors,
) -> Option<IpAddr> {
    let preferred = info
        .get("network")
        .map(|f| f.value.trim().to_string())
        .or_else(|| rules.preferred_network.clone());
    let vip = match info.get("swarm.lb") {
        Some(found) => match found.value.trim().to_ascii_lowercase().as_str() {
            "vip" => true,
            "task" => false,
            other => {
                errors.push(
                    info.error_path(&found.origin),
                    format!("invalid value \"{other}\": expected \"task\" or \"vip\""),
                );
                false
            }
        },
        None => false,
    };
    let ip = address(info, preferred.as_deref(), &rules.own_networks);
    if ip.is_none() {
        let message = if vip && info.service.is_some() {
            "berth.swarm.lb=vip, but the service has no virtual IP on a network berth can use \
             (endpoint mode dnsrr, or only the ingress network); leave the label out to route \
             to its tasks"
        } else {
            "no IP address on any network; attach it to a network berth can reach"
        };
        errors.push(info.error_path("networks"), message);
    }
    ip
}

/// Errors from [`RawRoute::validate`] carry paths like `.read-timeout`; name the label or
/// variable the value came from instead, once per key.
fn rename_route_errors(
    info: &ContainerInfo,
    tree: &Tree,
    errors: Vec<ConfigError>,
) -> Vec<ConfigError> {
    let mut out: Vec<ConfigError> = Vec::new();
    for e in errors {
        let field = e.path.trim_start_matches('.');
        let field = field.split('[').next().unwrap_or(field);
        let origin = tree
            .get(field)
            .map(|v| v.origin.clone())
            .or_else(|| {
                // A group (`auth`): the labels under it.
                let under = tree.origins_under(field);
                (!under.is_empty()).then(|| under.join(", "))
            })
            .or_else(|| info.get(field).map(|f| f.origin))
            .unwrap_or_else(|| format!("label {LABEL_PREFIX}{field}"));
        let renamed = ConfigError {
            path: info.error_path(&origin),
            message: e.message,
        };
        if !out.contains(&renamed) {
            out.push(renamed);
        }
    }
    out
}

/// The port when no label or variable names one: the single exposed TCP port, else 80.
fn default_port(info: &ContainerInfo) -> u16 {
    match info.exposed_tcp_ports.as_slice() {
        [only] => *only,
        _ => 80,
    }
}

/// The container's address: on the preferred network, else on a network shared with berth's
/// own container, else on the first network (by name) that gives it one. A container on the
/// host's network is reached on 127.0.0.1.
fn address(info: &ContainerInfo, preferred: Option<&str>, own: &[String]) -> Option<IpAddr> {
    let with_ip = |name: &str| {
        info.networks
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.ip)
    };
    preferred
        .filter(|p| !p.is_empty())
        .and_then(with_ip)
        .or_else(|| own.iter().find_map(|n| with_ip(n)))
        .or_else(|| info.networks.iter().find_map(|n| n.ip))
        .or_else(|| {
            (info.network_mode.as_deref() == Some("host"))
                .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
}

/// The certificate a container asks for, if any.
///
/// Hosts come from `LETSENCRYPT_HOST` / `ACME_HOST`; with `berth.acme=true` and neither set,
/// from the container's exact host names. `berth.acme=false` opts out. The email comes
/// from `berth.acme.email`, `LETSENCRYPT_EMAIL` or `ACME_EMAIL`.
///
/// # Errors
/// Every problem with those keys, named by container and key.
pub fn acme_request(info: &ContainerInfo) -> Result<Option<AcmeRequest>, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let request = acme_checked(info, &mut errors);
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors.into_inner())
    }
}

fn acme_checked(info: &ContainerInfo, errors: &mut Errors) -> Option<AcmeRequest> {
    let enabled = match info.get("acme") {
        Some(found) => errors.check(&info.error_path(&found.origin), parse_bool(found.value)),
        None => None,
    };
    if enabled == Some(false) {
        return None;
    }
    let (hosts, hosts_origin) = match (info.variable(&ACME_HOST_VARIABLES), enabled) {
        (Some(found), _) => {
            let names = comma_list(found.value);
            let mut hosts = Vec::new();
            for name in &names {
                match HostPattern::parse(name) {
                    Ok(pattern) => match pattern.certificate_name() {
                        Some(h) => hosts.push(h),
                        None => errors.push(
                            info.error_path(&found.origin),
                            format!(
                                "\"{name}\": a certificate names plain hosts or leading \
                                 wildcards (*.example.com), never a regex or a trailing wildcard"
                            ),
                        ),
                    },
                    Err(e) => errors.push(info.error_path(&found.origin), e),
                }
            }
            if names.is_empty() {
                errors.push(info.error_path(&found.origin), "empty host list");
            }
            (hosts, found.origin)
        }
        (None, Some(true)) => {
            let hosts: Vec<String> = info
                .get("host")
                .map(|f| comma_list(f.value))
                .unwrap_or_default()
                .iter()
                .filter_map(|h| {
                    HostPattern::parse(h)
                        .ok()
                        .as_ref()
                        .and_then(HostPattern::certificate_name)
                })
                .collect();
            if hosts.is_empty() {
                errors.push(
                    info.error_path("label berth.acme"),
                    "true, but the container has no plain host name to put on a certificate",
                );
            }
            let origin = info
                .get("host")
                .map_or_else(|| "label berth.acme".to_string(), |f| f.origin);
            (hosts, origin)
        }
        (None, _) => return None,
    };
    let email = info.get("acme.email").and_then(|found| {
        let v = found.value.trim();
        if v.contains('@') && !v.contains(char::is_whitespace) {
            Some(v.to_string())
        } else {
            errors.push(
                info.error_path(&found.origin),
                format!("invalid email \"{v}\""),
            );
            None
        }
    });
    let mut unique = Vec::new();
    for h in hosts {
        let stored = h.strip_prefix("*.").unwrap_or(&h);
        if let Err(e) = crate::contract::check_cert_name(stored) {
            errors.push(info.error_path(&hosts_origin), e);
        } else if !unique.contains(&h) {
            unique.push(h);
        }
    }
    let found = info.get("acme.challenge");
    let origin = info.error_path(found.as_ref().map_or("label berth.acme", |f| &f.origin));
    let asked = found.and_then(|f| errors.check(&origin, Challenge::parse(f.value)));
    if unique.is_empty() {
        return None;
    }
    let challenge = errors.check(&origin, Challenge::effective(asked, &unique))?;
    Some(AcmeRequest {
        hosts: unique,
        email,
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::builtin_defaults;
    use crate::route::{HttpsMode, Profile, UpstreamProto};

    fn container(labels: &[(&str, &str)], env: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            id: "0123456789ab".into(),
            name: "web".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            exposed_tcp_ports: Vec::new(),
            networks: vec![ContainerNetwork {
                name: "bridge".into(),
                ip: Some("172.17.0.5".parse().expect("ip")),
            }],
            network_mode: Some("default".into()),
            health: Health::None,
            service: None,
        }
    }

    fn routes(info: &ContainerInfo) -> Vec<RouteSpec> {
        match judge(info, &ContainerRules::default(), &builtin_defaults()) {
            Verdict::Routes(r) => r,
            other => panic!("expected routes, got {other:?}"),
        }
    }

    fn errors(info: &ContainerInfo) -> Vec<String> {
        match judge(info, &ContainerRules::default(), &builtin_defaults()) {
            Verdict::Invalid(e) => e.iter().map(ToString::to_string).collect(),
            other => panic!("expected errors, got {other:?}"),
        }
    }

    #[test]
    fn swarm_tasks_are_routed_under_their_service_and_named_in_errors() {
        let mut task = container(
            &[("berth.host", "w.example.com"), ("berth.port", "8080")],
            &[],
        );
        task.name = "web.2".into();
        task.service = Some("web".into());
        let r = routes(&task);
        assert_eq!(r[0].source, RouteSource::Services(vec!["web".into()]));
        assert_eq!(r[0].upstreams[0].container.as_deref(), Some("web.2"));

        task.labels
            .insert("berth.swarm.lb".into(), "round-robin".into());
        assert_eq!(
            errors(&task),
            [
                "service web (task web.2), label berth.swarm.lb: invalid value \"round-robin\": \
              expected \"task\" or \"vip\""
            ]
        );

        // vip asked for, but no virtual IP (a dnsrr service): the error says what to do.
        let mut vip = container(
            &[("berth.host", "w.example.com"), ("berth.swarm.lb", "vip")],
            &[],
        );
        vip.service = Some("web".into());
        vip.networks.clear();
        let e = errors(&vip);
        assert!(
            e[0].starts_with(
                "service web, networks: berth.swarm.lb=vip, but the service has no virtual IP"
            ),
            "{e:?}"
        );
        // The same label on a plain container is accepted and changes nothing.
        let plain = container(
            &[("berth.host", "w.example.com"), ("berth.swarm.lb", "vip")],
            &[],
        );
        assert_eq!(
            routes(&plain)[0].source,
            RouteSource::Containers(vec!["web".into()])
        );
    }

    #[test]
    fn the_seed_recipe_env_is_routed() {
        let info = container(
            &[],
            &[
                ("VIRTUAL_HOST", "registry.example.com"),
                ("VIRTUAL_PORT", "5000"),
                ("LETSENCRYPT_HOST", "registry.example.com"),
                ("LETSENCRYPT_EMAIL", "ops@example.com"),
            ],
        );
        let r = routes(&info);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].host.to_string(), "registry.example.com");
        assert_eq!(r[0].path, "/");
        assert_eq!(r[0].upstreams[0].addr.to_string(), "172.17.0.5:5000");
        assert_eq!(r[0].upstreams[0].container.as_deref(), Some("web"));
        assert_eq!(r[0].source, RouteSource::Containers(vec!["web".into()]));
        assert_eq!(
            acme_request(&info),
            Ok(Some(AcmeRequest {
                hosts: vec!["registry.example.com".into()],
                email: Some("ops@example.com".into()),
                challenge: Challenge::Http01,
            }))
        );
    }

    #[test]
    fn labels_win_over_env_and_lists_make_one_route_per_host() {
        let info = container(
            &[
                (
                    "berth.host",
                    "a.example.com, *.b.example.com,~^c[0-9]+\\.example\\.com$",
                ),
                ("berth.port", "8080"),
                ("berth.profile", "registry"),
                ("berth.https", "noredirect"),
                ("berth.path", "/v2"),
            ],
            &[
                ("VIRTUAL_HOST", "ignored.example.com"),
                ("VIRTUAL_PORT", "1"),
            ],
        );
        let r = routes(&info);
        let hosts: Vec<String> = r.iter().map(|s| s.host.to_string()).collect();
        assert_eq!(
            hosts,
            [
                "a.example.com",
                "*.b.example.com",
                "~^c[0-9]+\\.example\\.com$"
            ]
        );
        for s in &r {
            assert_eq!(s.upstreams[0].addr.port(), 8080);
            assert_eq!(s.profile, Some(Profile::Registry));
            assert_eq!(s.settings.https, HttpsMode::NoRedirect);
            assert_eq!(s.path, "/v2");
        }
    }

    #[test]
    fn nginx_proxy_variables_are_honoured() {
        let info = container(
            &[],
            &[
                ("VIRTUAL_HOST", "app.example.com"),
                ("VIRTUAL_PROTO", "https"),
                ("VIRTUAL_PATH", "/api"),
                ("HTTPS_METHOD", "nohttp"),
                ("HSTS", "off"),
                ("CERT_NAME", "shared.example.com"),
                ("NETWORK_ACCESS", "internal"),
            ],
        );
        let r = routes(&info);
        assert_eq!(r[0].proto, UpstreamProto::Https);
        assert_eq!(r[0].path, "/api");
        assert_eq!(r[0].settings.https, HttpsMode::NoHttp);
        assert_eq!(r[0].settings.hsts, None);
        assert_eq!(r[0].cert_name.as_deref(), Some("shared.example.com"));
        assert_eq!(r[0].allow.len(), INTERNAL_NETWORKS.len());
    }

    /// What the container's route labels decode to, as text, with their errors.
    fn decoded(labels: &[(&str, &str)], rules: &ContainerRules) -> (String, Vec<String>) {
        let mut errors = Errors::default();
        let (raw, _) = container(labels, &[]).route(rules, &mut errors);
        let shown = errors
            .into_inner()
            .iter()
            .map(ToString::to_string)
            .collect();
        (format!("{raw:?}"), shown)
    }

    #[test]
    fn every_route_key_has_a_label_or_is_refused_by_name() {
        let rules = ContainerRules::default();
        let (nothing, _) = decoded(&[], &rules);
        let names = schema_names();
        let keys = keys_of::<RawRoute>().expect("the probe walks every route key");
        assert_eq!(route_keys(), keys);
        // A key that names a file is typed so: the label decoder checks it, whatever its name.
        for key in &keys.all {
            if key.ends_with("-file") || key.ends_with("htpasswd") {
                assert!(keys.files.contains(key), "{key} is not a FilePath");
            }
        }
        for key in keys.all.clone() {
            if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
                let label = format!("berth.{key}");
                let (_, e) = decoded(&[(&label, "1")], &rules);
                assert_eq!(
                    e,
                    [format!(
                        "container web, label {label}: a container may not set {key}: {why}"
                    )]
                );
                assert!(!names.contains(&label), "{label} is refused, not a label");
                continue;
            }
            if let Some((_, label)) = ROUTE_KEYS_AS_CONTAINER_KEYS.iter().find(|(k, _)| *k == key) {
                assert!(CONTAINER_KEYS.contains(label), "{key}: {label}");
                if key != *label {
                    let spelled = format!("berth.{key}");
                    let (_, e) = decoded(&[(&spelled, "1")], &rules);
                    assert_eq!(e.len(), 1, "{spelled}: {e:?}");
                    assert!(e[0].contains("unknown label"), "{e:?}");
                }
                continue;
            }
            // "1" decodes as every type: a string, true, a number, a one-item list.
            let is_file = keys.files.contains(&key);
            let value = if is_file { "/etc/berth/file" } else { "1" };
            let label = format!("berth.{key}");
            let (set, e) = decoded(&[(&label, value)], &rules);
            assert_eq!(e, Vec::<String>::new(), "{label}");
            if is_file {
                let (_, e) = decoded(&[(&label, "/elsewhere/file")], &rules);
                assert_eq!(e.len(), 1, "{label}: {e:?}");
                assert!(e[0].contains("outside docker.label-files"), "{e:?}");
            }
            assert_ne!(set, nothing, "{label} changes nothing");
            assert!(names.contains(&label), "{label} is not in the schema");
        }
        for (key, _) in REFUSED.iter().chain(&ROUTE_KEYS_AS_CONTAINER_KEYS) {
            assert!(keys.all.iter().any(|k| k == key), "{key} is no route key");
        }
    }

    #[test]
    fn labels_decode_as_the_file_does_and_unknown_ones_are_named() {
        let rules = ContainerRules::default();
        let (_, e) = decoded(
            &[
                ("berth.auth.realm", "r"),
                ("berth.auth.relam", "r"),
                ("berth.rate-limt", "1r/s"),
                ("berth.max-body.x", "1"),
                ("berth.auth", "on"),
            ],
            &rules,
        );
        assert_eq!(
            e,
            [
                "container web, label berth.auth.realm: auth is set as a value (label \
                 berth.auth), so it cannot hold keys",
                "container web, label berth.auth.relam: auth is set as a value (label \
                 berth.auth), so it cannot hold keys",
                "container web, label berth.auth: is a group of keys (auth.*), not a value",
                "container web, label berth.max-body.x: has keys under it (max-body.*), but \
                 takes a value",
                "container web, label berth.rate-limt: unknown label (see the label list in \
                 the README)",
            ]
        );
        let (_, e) = decoded(&[("berth.auth.relam", "r")], &rules);
        assert_eq!(
            e,
            ["container web, label berth.auth.relam: unknown label (see the label list in the README)"]
        );
        let (raw, e) = decoded(
            &[
                ("berth.auth.methods", " post, PUT ,, "),
                ("berth.auth.anonymous-read", "No"),
                ("berth.rate-burst", " 7 "),
            ],
            &rules,
        );
        assert!(e.is_empty(), "{e:?}");
        assert!(raw.contains(r#"methods: Some(["post", "PUT"])"#), "{raw}");
        assert!(raw.contains("anonymous_read: Some(false)"), "{raw}");
        assert!(raw.contains("rate_burst: Some(7)"), "{raw}");
    }

    #[test]
    fn repository_rules_and_client_certificates_come_from_files_a_label_names() {
        let dir = std::env::temp_dir().join(format!("berth-labels-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let rules = file(
            "rules.toml",
            "[[rule]]\nrepositories = [\"team-a/*\"]\nusers = [\"@team-a\", \"cert:ci\"]\n\
             allow = [\"pull\", \"push\"]\n\n[[rule]]\nrepositories = [\"*\"]\nusers = [\"*\"]\n\
             allow = [\"pull\"]\n",
        );
        let groups = file("groups", "team-a: alice\n");
        let htpasswd = file("htpasswd", "");
        let ca = file(
            "clients.pem",
            "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
        );
        let bad = file(
            "bad.toml",
            "[[rule]]\nrepositories = [\"*\"]\nusers = [\"*\"]\nallow = [\"write\"]\n",
        );
        let allowed = ContainerRules {
            label_files: crate::files::LabelFiles::new(&[dir.display().to_string()])
                .expect("label files"),
            ..ContainerRules::default()
        };
        let labels = |rules_file: &str| {
            vec![
                ("berth.host", "r.example.com".to_string()),
                ("berth.profile", "registry".to_string()),
                ("berth.auth.htpasswd", htpasswd.clone()),
                ("berth.auth.repositories-file", rules_file.to_string()),
                ("berth.auth.groups", groups.clone()),
                ("berth.client-ca", ca.clone()),
                ("berth.client-auth", "optional".to_string()),
            ]
        };
        let owned = labels(&rules);
        let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = match judge(&container(&refs, &[]), &allowed, &builtin_defaults()) {
            Verdict::Routes(r) => r,
            other => panic!("expected routes, got {other:?}"),
        };
        let auth = r[0].auth.as_ref().expect("auth");
        let decided = auth.repositories.as_ref().expect("rules");
        assert_eq!(decided.0.len(), 2);
        assert!(decided.names_certificates());
        assert_eq!(auth.groups.as_deref(), Some(std::path::Path::new(&groups)));
        let client = r[0].client_auth.as_ref().expect("client-ca");
        assert_eq!(client.mode, crate::route::ClientAuthMode::Optional);
        // A bad rules file skips the container, naming the file's rule.
        let owned = labels(&bad);
        let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let verdict = judge(&container(&refs, &[]), &allowed, &builtin_defaults());
        assert!(!matches!(verdict, Verdict::Routes(_)), "{verdict:?}");
        let text = format!("{verdict:?}");
        assert!(
            text.contains("label berth.auth.repositories-file")
                && text.contains("unknown action \\\"write\\\""),
            "{text}"
        );
        // Outside docker.label-files, none of the three is read.
        let e = errors(&container(&refs, &[]));
        for label in [
            "berth.auth.repositories-file",
            "berth.auth.groups",
            "berth.client-ca",
        ] {
            assert!(
                e.iter()
                    .any(|m| m.contains(label) && m.contains("outside docker.label-files")),
                "{label}: {e:?}"
            );
        }
        // The rules themselves are no label.
        let e = errors(&container(
            &[
                ("berth.host", "r.example.com"),
                ("berth.auth.repositories", "x"),
            ],
            &[],
        ));
        assert!(e[0].contains("berth.auth.repositories-file"), "{e:?}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn upstream_tls_labels_name_files_only_where_the_operator_allows() {
        let dir = std::env::temp_dir().join(format!("berth-labels-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
        )
        .expect("ca");
        let ca = ca.display().to_string();
        let allowed = ContainerRules {
            label_files: crate::files::LabelFiles::new(&[dir.display().to_string()])
                .expect("label files"),
            ..ContainerRules::default()
        };
        let labels = [
            ("berth.host", "a.example.com"),
            ("berth.proto", "HTTPS"),
            ("berth.upstream-sni", "internal.example"),
            ("berth.upstream-ca-file", ca.as_str()),
        ];
        let r = match judge(&container(&labels, &[]), &allowed, &builtin_defaults()) {
            Verdict::Routes(r) => r,
            other => panic!("expected routes, got {other:?}"),
        };
        assert_eq!(r[0].proto, UpstreamProto::Https);
        assert_eq!(r[0].upstream_tls.sni.as_deref(), Some("internal.example"));
        assert_eq!(
            r[0].upstream_tls.ca_file.as_deref(),
            Some(std::path::Path::new(&ca))
        );
        // The same file outside docker.label-files is never read.
        let e = errors(&container(&labels, &[]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "container web, label berth.upstream-ca-file: \"{ca}\" is outside docker.label-files"
            )),
            "{e:?}"
        );
        let e = errors(&container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.proto", "https"),
                ("berth.dangerous-skip-verify", "true"),
                ("berth.upstreams", "10.0.0.1:80"),
            ],
            &[],
        ));
        assert_eq!(
            e,
            [
                "container web, label berth.upstreams: a container may not set upstreams: the \
                 upstream is the container itself, at its address and berth.port",
                "container web, label berth.dangerous-skip-verify: a container may not set \
                 dangerous-skip-verify: turning off the check of an upstream's certificate is \
                 for the config file",
            ]
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn every_error_names_the_label_or_variable_it_came_from() {
        let rules = ContainerRules::default();
        let (_, e) = decoded(
            &[
                ("berth.port.x", "1"),
                ("berth.swarm.lbb", "vip"),
                ("berth.auth.x.y", "1"),
                ("berth.upstreams.0", "10.0.0.1:80"),
            ],
            &rules,
        );
        assert_eq!(
            e,
            [
                "container web, label berth.upstreams.0: a container may not set upstreams: \
                 the upstream is the container itself, at its address and berth.port",
                "container web, label berth.auth.x.y: unknown label (see the label list in the \
                 README)",
                "container web, label berth.port.x: unknown label (see the label list in the \
                 README)",
                "container web, label berth.swarm.lbb: unknown label (see the label list in the \
                 README)",
            ]
        );
        let e = errors(&container(&[], &[("VIRTUAL_HOST", "a.example.com:80")]));
        assert!(
            e[0].starts_with("container web, env VIRTUAL_HOST: invalid host"),
            "{e:?}"
        );
    }

    #[test]
    fn certificates_are_asked_only_for_names_a_file_can_carry() {
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(60),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        assert_eq!(long.len(), 252);
        let info = container(
            &[("berth.host", long.as_str()), ("berth.acme", "true")],
            &[],
        );
        let e = acme_request(&info).expect_err("too long for a file");
        assert!(
            e[0].to_string()
                .starts_with("container web, label berth.host: \"")
                && e[0].to_string().contains("longer than 251 characters"),
            "{e:?}"
        );
        let info = container(
            &[],
            &[
                ("VIRTUAL_HOST", "a.example.com"),
                ("LETSENCRYPT_HOST", long.as_str()),
            ],
        );
        let e = acme_request(&info).expect_err("too long for a file");
        assert!(
            e[0].to_string()
                .starts_with("container web, env LETSENCRYPT_HOST:"),
            "{e:?}"
        );
        let fits = &long[1..];
        let info = container(&[("berth.host", fits), ("berth.acme", "true")], &[]);
        assert!(matches!(acme_request(&info), Ok(Some(_))));
    }

    #[test]
    fn errors_about_a_group_name_its_labels() {
        let e = errors(&container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.methods", "POST"),
                ("berth.auth.anonymous-read", "true"),
                ("berth.auth.htpasswd", "/etc/berth/htpasswd"),
            ],
            &[],
        ));
        assert!(
            e.iter().any(|x| x.starts_with(
                "container web, label berth.auth.anonymous-read, label berth.auth.htpasswd, \
                 label berth.auth.methods: methods and anonymous-read"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn a_fifo_a_label_names_is_never_waited_on() {
        let dir = std::env::temp_dir().join(format!("berth-labels-fifo-{}", std::process::id()));
        let inside = dir.join("inside");
        std::fs::create_dir_all(&inside).expect("dir");
        let rules = ContainerRules {
            label_files: crate::files::LabelFiles::new(&[inside.display().to_string()])
                .expect("label files"),
            ..ContainerRules::default()
        };
        for fifo in [inside.join("ca.pem"), dir.join("outside.pem")] {
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo");
            assert!(made.success());
            let info = container(
                &[
                    ("berth.host", "a.example.com"),
                    ("berth.proto", "https"),
                    ("berth.upstream-ca-file", &fifo.display().to_string()),
                ],
                &[],
            );
            let (tx, rx) = std::sync::mpsc::channel();
            let rules = rules.clone();
            std::thread::spawn(move || {
                let _ = tx.send(judge(&info, &rules, &builtin_defaults()));
            });
            let verdict = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("judging {} waited on the FIFO", fifo.display()));
            match verdict {
                Verdict::Invalid(e) => assert!(
                    e[0].to_string()
                        .starts_with("container web, label berth.upstream-ca-file:"),
                    "{e:?}"
                ),
                other => panic!("expected an error, got {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn auth_labels_make_basic_auth() {
        let info = container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.htpasswd", "/etc/berth/secrets/htpasswd"),
            ],
            &[],
        );
        let auth = routes(&info)[0].auth.clone().expect("auth");
        assert_eq!(
            auth.htpasswd,
            std::path::PathBuf::from("/etc/berth/secrets/htpasswd")
        );
        assert_eq!(auth.realm, "berth");

        let info = container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.realm", "Registry"),
            ],
            &[],
        );
        assert_eq!(
            errors(&info),
            ["container web, label berth.auth.htpasswd: missing; basic auth needs the path of an htpasswd file"]
        );
        let info = container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.htpasswd", "htpasswd"),
            ],
            &[],
        );
        assert_eq!(
            errors(&info),
            ["container web, label berth.auth.htpasswd: \"htpasswd\" is not an absolute path"]
        );
    }

    #[test]
    fn port_defaults_to_the_single_exposed_port_else_80() {
        let mut info = container(&[("berth.host", "a.example.com")], &[]);
        assert_eq!(routes(&info)[0].upstreams[0].addr.port(), 80);
        info.exposed_tcp_ports = vec![5000];
        assert_eq!(routes(&info)[0].upstreams[0].addr.port(), 5000);
        info.exposed_tcp_ports = vec![5000, 5001];
        assert_eq!(routes(&info)[0].upstreams[0].addr.port(), 80);
    }

    #[test]
    fn address_follows_the_documented_rule() {
        let mut info = container(&[("berth.host", "a.example.com")], &[]);
        let net = |name: &str, ip: Option<&str>| ContainerNetwork {
            name: name.into(),
            ip: ip.map(|s| s.parse().expect("ip")),
        };
        info.networks = vec![
            net("alpha", None),
            net("back", Some("10.1.0.2")),
            net("front", Some("10.2.0.2")),
        ];
        let addr = |info: &ContainerInfo, rules: &ContainerRules| match judge(
            info,
            rules,
            &builtin_defaults(),
        ) {
            Verdict::Routes(r) => r[0].upstreams[0].addr.ip().to_string(),
            other => panic!("{other:?}"),
        };
        // First network by name that gives an address.
        assert_eq!(addr(&info, &ContainerRules::default()), "10.1.0.2");
        // A network shared with berth's own container.
        let shared = ContainerRules {
            own_networks: vec!["front".into()],
            ..ContainerRules::default()
        };
        assert_eq!(addr(&info, &shared), "10.2.0.2");
        // docker.network beats both; the label beats docker.network.
        let preferred = ContainerRules {
            preferred_network: Some("back".into()),
            own_networks: vec!["front".into()],
            ..ContainerRules::default()
        };
        assert_eq!(addr(&info, &preferred), "10.1.0.2");
        info.labels.insert("berth.network".into(), "front".into());
        assert_eq!(addr(&info, &preferred), "10.2.0.2");
        // A preferred network the container is not on falls through to the next rule.
        info.labels
            .insert("berth.network".into(), "elsewhere".into());
        assert_eq!(addr(&info, &ContainerRules::default()), "10.1.0.2");
        // Host networking.
        info.networks = vec![net("host", None)];
        info.network_mode = Some("host".into());
        assert_eq!(addr(&info, &ContainerRules::default()), "127.0.0.1");
    }

    #[test]
    fn bad_values_are_named_by_container_and_key() {
        let info = container(
            &[("berth.host", "a.example.com"), ("berth.port", "abc")],
            &[],
        );
        assert_eq!(
            errors(&info),
            ["container web, label berth.port: invalid port \"abc\": expected a number from 1 to 65535"]
        );
        let info = container(
            &[("berth.host", "a.example.com, b.example.com")],
            &[("HTTPS_METHOD", "sometimes"), ("VIRTUAL_PROTO", "uwsgi")],
        );
        let e = errors(&info);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("container web, env VIRTUAL_PROTO: invalid proto \"uwsgi\""));
        assert!(e[1].starts_with("container web, env HTTPS_METHOD: invalid https mode"));
        let e = errors(&container(
            &[("berth.host", "a.example.com"), ("berth.prot", "https")],
            &[],
        ));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("container web, label berth.prot: unknown label"));
        let e = errors(&container(&[("berth.host", "a.example.com:80")], &[]));
        assert!(e[0].starts_with("container web, label berth.host: invalid host"));
        let e = errors(&container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.read-timeout", "soon"),
            ],
            &[],
        ));
        assert!(
            e[0].starts_with("container web, label berth.read-timeout:"),
            "{e:?}"
        );
        let mut info = container(&[("berth.host", "a.example.com")], &[]);
        info.networks.clear();
        assert!(errors(&info)[0].starts_with("container web, networks: no IP address"));
    }

    #[test]
    fn opted_out_unlabelled_and_unhealthy_containers() {
        let d = |info: &ContainerInfo| judge(info, &ContainerRules::default(), &builtin_defaults());
        let info = container(
            &[("berth.enable", "false")],
            &[("VIRTUAL_HOST", "a.example.com")],
        );
        assert!(matches!(d(&info), Verdict::Ignored(_)));
        assert!(matches!(d(&container(&[], &[])), Verdict::Ignored(_)));
        let mut info = container(&[("berth.host", "a.example.com")], &[]);
        info.health = Health::Unhealthy;
        assert!(matches!(d(&info), Verdict::Waiting(Health::Unhealthy)));
        info.health = Health::Starting;
        assert!(matches!(d(&info), Verdict::Waiting(Health::Starting)));
        info.health = Health::Healthy;
        assert!(matches!(d(&info), Verdict::Routes(_)));
    }

    #[test]
    fn auth_labels_say_which_requests_go_without_credentials() {
        let info = container(
            &[
                ("berth.host", "r.example.com"),
                ("berth.profile", "registry"),
                ("berth.auth.htpasswd", "/etc/berth/htpasswd"),
                ("berth.auth.anonymous-read", "true"),
            ],
            &[],
        );
        let r = routes(&info);
        assert_eq!(
            r[0].auth.as_ref().map(|a| a.open.clone()),
            Some(crate::route::OpenAccess::RegistryReads)
        );
        let info = container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.htpasswd", "/etc/berth/htpasswd"),
                ("berth.auth.methods", "POST, delete"),
            ],
            &[],
        );
        assert_eq!(
            routes(&info)[0].auth.as_ref().map(|a| a.open.clone()),
            Some(crate::route::OpenAccess::MethodsOtherThan(vec![
                "POST".into(),
                "DELETE".into()
            ]))
        );
        let bad = container(
            &[
                ("berth.host", "a.example.com"),
                ("berth.auth.htpasswd", "/etc/berth/htpasswd"),
                ("berth.auth.anonymous-read", "yes please"),
            ],
            &[],
        );
        let e = errors(&bad);
        assert!(
            e[0].starts_with("container web, label berth.auth.anonymous-read:"),
            "{e:?}"
        );
    }

    #[test]
    fn forward_auth_and_rate_limit_labels() {
        let info = container(
            &[
                ("berth.host", "app.example.com"),
                (
                    "berth.auth.forward",
                    "http://authelia:9091/api/authz/forward-auth",
                ),
                ("berth.auth.forward-headers", "Remote-User, Remote-Groups"),
                ("berth.auth.forward-cache", "1m"),
                ("berth.rate-limit", "10r/s"),
                ("berth.rate-burst", "30"),
            ],
            &[],
        );
        let r = routes(&info);
        let forward = r[0].forward_auth.clone().expect("forward auth");
        assert_eq!(forward.headers, ["remote-user", "remote-groups"]);
        assert_eq!(forward.cache, Some(std::time::Duration::from_secs(60)));
        let limit = r[0].rate_limit.expect("rate limit");
        assert_eq!((limit.requests, limit.burst), (10, 30));

        for (labels, error) in [
            (
                vec![("berth.rate-burst", "lots"), ("berth.rate-limit", "1r/s")],
                "container web, label berth.rate-burst: invalid value \"lots\": expected a whole number",
            ),
            (
                vec![("berth.rate-limit", "fast")],
                "container web, label berth.rate-limit: invalid rate-limit \"fast\"",
            ),
            (
                vec![
                    ("berth.auth.forward", "http://a/"),
                    ("berth.auth.htpasswd", "/etc/berth/htpasswd"),
                ],
                "container web, label berth.auth.htpasswd: not with auth.forward",
            ),
            (
                vec![("berth.auth.forward", "ftp://a/")],
                "container web, label berth.auth.forward: invalid auth.forward",
            ),
        ] {
            let mut all = vec![("berth.host", "app.example.com")];
            all.extend(labels);
            let e = errors(&container(&all, &[]));
            assert!(e.iter().any(|x| x.starts_with(error)), "{all:?}: {e:#?}");
        }
    }

    #[test]
    fn containers_claim_only_the_hosts_the_operator_allows() {
        let rules = ContainerRules {
            allowed_hosts: vec![
                HostPattern::parse("*.apps.example.com").expect("pattern"),
                HostPattern::parse("registry.example.com").expect("pattern"),
            ],
            ..ContainerRules::default()
        };
        let judged = |hosts: &str| {
            judge(
                &container(&[("berth.host", hosts)], &[]),
                &rules,
                &builtin_defaults(),
            )
        };
        assert!(matches!(
            judged("wiki.apps.example.com"),
            Verdict::Routes(_)
        ));
        assert!(matches!(
            judged("registry.example.com, *.x.apps.example.com"),
            Verdict::Routes(_)
        ));
        for refused in [
            "~.",
            "evil.test",
            "*.example.com",
            "wiki.apps.example.com, evil.test",
        ] {
            match judged(refused) {
                Verdict::Invalid(e) => assert!(
                    e.iter()
                        .any(|e| e.to_string().contains("is not among docker.allowed-hosts")),
                    "{refused}: {e:?}"
                ),
                other => panic!("{refused}: {other:?}"),
            }
        }
    }

    #[test]
    fn acme_requests() {
        let info = container(
            &[
                ("berth.host", "a.example.com,*.w.example.com"),
                ("berth.acme", "true"),
            ],
            &[("ACME_EMAIL", "me@example.com")],
        );
        assert_eq!(
            acme_request(&info),
            Ok(Some(AcmeRequest {
                hosts: vec!["a.example.com".into(), "*.w.example.com".into()],
                email: Some("me@example.com".into()),
                challenge: Challenge::Dns01,
            }))
        );
        let off = container(
            &[("berth.acme", "false")],
            &[("LETSENCRYPT_HOST", "a.example.com")],
        );
        assert_eq!(acme_request(&off), Ok(None));
        // A wildcard is proved with dns-01 unless http-01 is asked for, which cannot work.
        let wild = container(&[], &[("LETSENCRYPT_HOST", "*.example.com")]);
        assert_eq!(
            acme_request(&wild).map(|r| r.map(|r| r.challenge)),
            Ok(Some(Challenge::Dns01))
        );
        let wild_http = container(
            &[],
            &[
                ("LETSENCRYPT_HOST", "*.example.com"),
                ("ACME_CHALLENGE", "HTTP-01"),
            ],
        );
        let e = acme_request(&wild_http).expect_err("wildcard over http-01");
        assert!(
            e[0].to_string()
                .starts_with("container web, env ACME_CHALLENGE: \"*.example.com\" is a wildcard"),
            "{e:?}"
        );
        assert!(e[0].to_string().contains("acme.dns-provider"), "{e:?}");
        let dns = container(
            &[("berth.acme.challenge", "dns-01")],
            &[
                ("ACME_CHALLENGE", "HTTP-01"),
                ("LETSENCRYPT_HOST", "a.example.com"),
            ],
        );
        assert_eq!(
            acme_request(&dns).map(|r| r.map(|r| r.challenge)),
            Ok(Some(Challenge::Dns01)),
            "the label wins over the variable"
        );
        let bad = container(
            &[("berth.acme.challenge", "tls-alpn-01")],
            &[("LETSENCRYPT_HOST", "a.example.com")],
        );
        assert!(acme_request(&bad).expect_err("bad")[0]
            .to_string()
            .contains("label berth.acme.challenge: invalid challenge \"tls-alpn-01\""));
        let regex = container(&[], &[("LETSENCRYPT_HOST", "~^a$")]);
        assert!(acme_request(&regex).is_err());
        let email = container(
            &[("berth.acme.email", "not an email")],
            &[("LETSENCRYPT_HOST", "a.example.com")],
        );
        assert!(acme_request(&email).is_err());
        assert_eq!(acme_request(&container(&[], &[])), Ok(None));
    }
}
