//! berth on a real Docker Swarm (the single-node Swarm of `./scripts/swarm-daemon`): berth
//! runs as a service on an encrypted overlay network, reads services from the manager, and
//! balances a 3-replica service over its tasks' overlay addresses; scaling the service to 1
//! and back changes the upstreams within `docker.swarm-poll` + 1 s.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::swarm::{berth_image, berth_service, require, Overlay, Service, NODE_IP};
use berth_testkit::{free_port, wait_until};

const HOST: &str = "web.swarm.test";

/// Each test's berth reads every service of the Swarm: one test at a time.
static SWARM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn swarm_alone() -> std::sync::MutexGuard<'static, ()> {
    SWARM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `berth-acme` binary beside `berth`.
fn berth_acme() -> std::path::PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth")).with_file_name("berth-acme")
}

/// `GET /` for `host` through the edge at `port`: status and body.
fn get(port: u16, host: &str, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{NODE_IP}:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.trim().to_string())
}

/// A config directory for an edge on `network`, reading Docker (and Swarm) through the
/// node's socket; `docker` adds to `[docker]`.
fn edge_config(network: &str, docker: &str) -> tempfile::TempDir {
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(
        conf.path().join("berth.toml"),
        format!(
            "[listen]\nhttp = \"0.0.0.0:8080\"\nmetrics = \"0.0.0.0:9180\"\n\n\
             [docker]\nenabled = true\nendpoint = \"unix:///var/run/docker.sock\"\n\
             network = \"{network}\"\n{docker}\n\n\
             [tls]\ncerts-dir = \"/var/lib/berth/certs\"\n\n\
             [acme]\nchallenge-dir = \"/var/lib/berth/challenges\"\n"
        ),
    )
    .unwrap();
    conf
}

/// A service of busybox httpd tasks that answer with their own hostname (so a test sees
/// which task answered), created with `args` ahead of the image.
fn hostname_web(what: &str, args: &[&str]) -> Service {
    let mut all = args.to_vec();
    all.extend([
        berth_testkit::docker::BUSYBOX,
        "sh",
        "-c",
        "hostname > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    Service::create(what, &all).unwrap()
}

/// The number of upstreams of `HOST`'s route in `/routes` on the admin port.
fn upstreams(admin: u16) -> usize {
    berth_testkit::swarm::route_upstreams(&format!("{NODE_IP}:{admin}"), HOST)
}

#[test]
fn a_replicated_service_is_balanced_over_its_tasks_and_follows_scaling() {
    let _alone = swarm_alone();
    let _daemon = berth_testkit::docker::shared_blocking();
    require();
    let image = berth_image(Path::new(env!("CARGO_BIN_EXE_berth")), &berth_acme()).unwrap();
    let overlay = Overlay::create("edge").unwrap();
    let poll = Duration::from_secs(3);
    let conf = edge_config(
        &overlay.name,
        &format!("swarm = true\nswarm-poll = \"{}ms\"", poll.as_millis()),
    );
    // Each task answers with its own hostname, so the test sees which task answered.
    let web = hostname_web(
        "web",
        &[
            "--replicas",
            "3",
            "--network",
            &overlay.name,
            "--label",
            &format!("berth.host={HOST}"),
            "--label",
            "berth.port=80",
        ],
    );
    let (http, admin) = (free_port(), free_port());
    let edge = berth_service(
        &image,
        &overlay.name,
        conf.path(),
        &[(8080, http), (9180, admin)],
        &[],
    )
    .unwrap();
    let logs = || format!("berth:\n{}", edge.logs());

    // Routed to three tasks; requests reach all three.
    wait_until(
        Duration::from_secs(60),
        "the service never had three routed tasks",
        || upstreams(admin) == 3 && get(http, HOST, "/").0 == "200",
        logs,
    );
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (code, body) = get(http, HOST, "/");
        assert_eq!(code, "200", "{body}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 3, "round robin over three tasks: {seen:?}");

    // Down to one: the service update is an event, so the route follows at once. Seen on a
    // second edge that reads the tasks once at start and then never again within this test
    // (swarm-poll = 1h): only the event can tell it.
    let quiet_conf = edge_config(&overlay.name, "swarm = true\nswarm-poll = \"1h\"");
    let quiet_admin = free_port();
    let quiet = berth_service(
        &image,
        &overlay.name,
        quiet_conf.path(),
        &[(9180, quiet_admin)],
        &[],
    )
    .unwrap();
    let quiet_upstreams =
        || berth_testkit::swarm::route_upstreams(&format!("{NODE_IP}:{quiet_admin}"), HOST);
    wait_until(
        Duration::from_secs(60),
        "the second edge never routed the three tasks",
        || quiet_upstreams() == 3,
        || quiet.logs(),
    );
    let started = Instant::now();
    web.scale(1).unwrap();
    wait_until(
        Duration::from_secs(10),
        "scaling down did not reach an edge that does not poll (the service event)",
        || quiet_upstreams() == 1,
        || quiet.logs(),
    );
    eprintln!(
        "scaled 3 -> 1: the edge that does not poll followed after {:?}",
        started.elapsed()
    );
    drop(quiet);
    wait_until(
        Duration::from_millis(2500),
        "scaling down did not reach the route before the next poll (the service event)",
        || upstreams(admin) == 1,
        logs,
    );
    eprintln!("scaled 3 -> 1: one upstream after {:?}", started.elapsed());
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        seen.insert(get(http, HOST, "/").1);
    }
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Back to three: new tasks are found by the poll once Swarm reports them running.
    web.scale(3).unwrap();
    wait_until(
        Duration::from_secs(60),
        "Swarm never ran three tasks again",
        || web.running_tasks() == 3,
        || web.logs(),
    );
    let took = wait_until(
        poll + Duration::from_secs(1),
        "three running tasks were not routed within swarm-poll + 1 s",
        || upstreams(admin) == 3,
        logs,
    );
    eprintln!("scaled 1 -> 3: routed {took:?} after Swarm reported the tasks running");

    // berth.swarm.lb=vip: one upstream, the service's virtual IP on the overlay (traffic
    // through it needs IPVS, which this machine's kernel lacks, so only the route is
    // checked); asked of a dnsrr service, which has none, it is an error naming the service.
    let vip = Service::create(
        "vip",
        &[
            "--network",
            &overlay.name,
            "--label",
            "berth.host=vip.swarm.test",
            "--label",
            "berth.swarm.lb=vip",
            berth_testkit::docker::BUSYBOX,
        ],
    )
    .unwrap();
    let dnsrr = Service::create(
        "dnsrr",
        &[
            "--network",
            &overlay.name,
            "--endpoint-mode",
            "dnsrr",
            "--label",
            "berth.host=dnsrr.swarm.test",
            "--label",
            "berth.swarm.lb=vip",
            berth_testkit::docker::BUSYBOX,
        ],
    )
    .unwrap();
    let expected_vip = berth_testkit::swarm::sdocker(&[
        "service",
        "inspect",
        "--format",
        "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}",
        &vip.name,
    ])
    .unwrap();
    let page = || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://{NODE_IP}:{admin}/routes"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(
        Duration::from_secs(30),
        "the vip service was not routed to its virtual IP, or the dnsrr one not refused",
        || {
            let p = page();
            let vip_addr = expected_vip
                .split_whitespace()
                .map(|a| a.split('/').next().unwrap_or(""))
                .find(|a| p.contains(&format!("\"{a}:80\"")));
            vip_addr.is_some()
                && p.contains("berth.swarm.lb=vip, but the service has no virtual IP")
        },
        || format!("{}\n{}", page(), logs()),
    );
    let routed: serde_json::Value = serde_json::from_str(&page()).unwrap();
    let dnsrr_routes: Vec<&serde_json::Value> = routed["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == "dnsrr.swarm.test")
        .collect();
    assert!(dnsrr_routes.is_empty(), "{dnsrr_routes:?}");
    assert!(
        routed["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["host"] == "vip.swarm.test"),
        "the check above reads the hosts where they are: {routed}"
    );
    drop(vip);
    drop(dnsrr);

    // The two are gone again (service removal is an event): one route from Swarm.
    let metrics = || {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://{NODE_IP}:{admin}/metrics")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(
        Duration::from_secs(10),
        "berth_routes{source=\"swarm\"} is not 1",
        || {
            metrics()
                .lines()
                .any(|l| l == "berth_routes{source=\"swarm\"} 1")
        },
        metrics,
    );
    drop(edge);
    drop(web);
    drop(overlay);
}

/// `docker stack deploy` of `configs/swarm-stack.yml` as written (images, ports, the config
/// file, secrets and the network given through its variables; a test override adds pebble's
/// CA and a second edge on other ports): the registry, with the seed's variables, is served
/// by both edges with one certificate pebble issued through one of them, pushed to and
/// pulled from with skopeo through each; with berth-acme gone both edges keep serving; an
/// edge started later is served within seconds.
#[test]
fn the_swarm_stack_serves_a_registry_behind_two_edges_with_one_certificate() {
    use berth_testkit::oci::{build_image, manifest_digest};
    use berth_testkit::pebble::Pebble;
    use berth_testkit::registry::{skopeo_resolving_to, PASSWORD, USER};
    use berth_testkit::swarm::{sdocker, HOST_IP};

    let _alone = swarm_alone();
    let _daemon = berth_testkit::docker::shared_blocking();
    require();
    let image = berth_image(Path::new(env!("CARGO_BIN_EXE_berth")), &berth_acme()).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let overlay = Overlay::create("stack").unwrap();
    let host = "registry.swarm.test";
    let (http_a, https_a, http_b, https_b, http_c, https_c) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    // Certificates live 100 s and renew 60 s ahead: the first renewal is due 40 s after the
    // first issue, while both edges serve it.
    let pebble = Pebble::start_at(
        HOST_IP.parse().unwrap(),
        NODE_IP.parse().unwrap(),
        http_a,
        false,
        Some(100),
    )
    .unwrap();
    let stack = berth_testkit::docker::unique("stack");
    let secret = |what: &str, value: &[u8]| {
        let name = berth_testkit::docker::unique(what);
        let file = work.path().join(&name);
        std::fs::write(&file, value).unwrap();
        sdocker(&["secret", "create", &name, &file.display().to_string()]).unwrap();
        name
    };
    let token = secret("feed", b"5f0e7c2a9b1d4e6f8a0c2e4b6d8f0a1c\n");
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .unwrap()
        .stdout;
    let htpasswd = secret("htpasswd", &htpasswd);
    // The stack's own berth.toml, pointed at pebble and this test's network.
    let config = std::fs::read_to_string(repo.join("configs/swarm/berth.toml"))
        .unwrap()
        .replace(
            "directory = \"https://acme-v02.api.letsencrypt.org/directory\"",
            &format!(
                "directory = \"{}\"\nca-bundle = \"/etc/berth/pebble-ca.pem\"",
                pebble.directory
            ),
        )
        .replace(
            "network = \"berth-edge\"",
            &format!("network = \"{}\"", overlay.name),
        )
        .replace("swarm-poll = \"5s\"", "swarm-poll = \"1s\"")
        .replace("renew-before = \"auto\"", "renew-before = \"60s\"");
    let config_file = work.path().join("berth.toml");
    std::fs::write(&config_file, config).unwrap();
    let override_file = work.path().join("override.yml");
    std::fs::write(
        &override_file,
        format!(
            "version: \"3.8\"\n\
             services:\n\
             \x20 berth:\n    user: \"0\"\n    configs:\n\
             \x20     - {{ source: berth-config, target: /etc/berth/berth.toml }}\n\
             \x20     - {{ source: pebble-ca, target: /etc/berth/pebble-ca.pem }}\n\
             \x20 berth-acme:\n    user: \"0\"\n    configs:\n\
             \x20     - {{ source: berth-config, target: /etc/berth/berth.toml }}\n\
             \x20     - {{ source: pebble-ca, target: /etc/berth/pebble-ca.pem }}\n\
             configs:\n  pebble-ca:\n    file: {}\n",
            pebble.tls_ca.display()
        ),
    )
    .unwrap();
    let deploy = Command::new("docker")
        .args(["-H", berth_testkit::swarm::SOCKET, "stack", "deploy", "-c"])
        .arg(repo.join("configs/swarm-stack.yml"))
        .arg("-c")
        .arg(&override_file)
        .arg(&stack)
        .env("BERTH_IMAGE", &image)
        .env("REGISTRY_IMAGE", berth_testkit::docker::REGISTRY)
        .env("REGISTRY_HOST", host)
        .env("HTTP_PORT", http_a.to_string())
        .env("HTTPS_PORT", https_a.to_string())
        .env("DOCKER_SOCKET", "/run/berth-swarm/docker.sock")
        .env("EDGE_NETWORK", &overlay.name)
        .env("BERTH_CONFIG", &config_file)
        .env("FEED_TOKEN_SECRET", &token)
        .env("HTPASSWD_SECRET", &htpasswd)
        .output()
        .unwrap();
    let _cleanup = StackCleanup {
        stack: stack.clone(),
        secrets: vec![token.clone(), htpasswd.clone()],
    };
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    let logs = |service: &str| berth_testkit::swarm::service_logs(&format!("{stack}_{service}"));
    let all_logs = || {
        format!(
            "berth:\n{}\nberth-acme:\n{}\npebble:\n{}",
            logs("berth"),
            logs("berth-acme"),
            pebble.log()
        )
    };
    let root = pebble.issuing_root().unwrap();
    let verified = |port: u16| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
            ])
            .arg(&root)
            .arg("--resolve")
            .arg(format!("{host}:{port}:{NODE_IP}"))
            .arg(format!("https://{host}:{port}/v2/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_until(
        Duration::from_secs(120),
        "edge A never served the registry with pebble's certificate",
        || verified(https_a) == "401",
        all_logs,
    );

    // Another edge of the stack's image, config and token, on other ports.
    let extra_edge = |what: &str, http: u16, https: u16| {
        Service::create(
            what,
            &[
                "--network",
                &overlay.name,
                "--publish",
                &format!("mode=host,target=80,published={http}"),
                "--publish",
                &format!("mode=host,target=443,published={https}"),
                "--mount",
                "type=bind,source=/run/berth-swarm/docker.sock,target=/var/run/docker.sock",
                "--config",
                &format!("source={stack}_berth-config,target=/etc/berth/berth.toml"),
                "--config",
                &format!("source={stack}_pebble-ca,target=/etc/berth/pebble-ca.pem"),
                "--secret",
                &format!("source={token},target=berth-feed-token"),
                &image,
                "--config",
                "/etc/berth/berth.toml",
            ],
        )
        .unwrap()
    };
    // A second edge (same image and config, other ports) is served the same certificate.
    let second = extra_edge("edge-b", http_b, https_b);
    let took = wait_until(
        Duration::from_secs(30),
        "edge B was never served the certificate",
        || verified(https_b) == "401",
        || second.logs(),
    );
    eprintln!("edge B served the certificate {took:?} after it was created");
    assert_eq!(pebble.issued(), 1, "{}", pebble.log());

    // skopeo pushes through edge A and pulls through edge B, over verified TLS.
    let certs = work.path().join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&root, certs.join("ca.crt")).unwrap();
    let certs = certs.display().to_string();
    let layout = work.path().join("image");
    let built = build_image(&layout, "v1", &[8 << 20, 4 << 20], 41).unwrap();
    let creds = format!("{USER}:{PASSWORD}");
    let push = skopeo_resolving_to(
        NODE_IP,
        &[host],
        &[
            "copy",
            "--dest-cert-dir",
            &certs,
            "--dest-creds",
            &creds,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{host}:{https_a}/swarm/app:v1"),
        ],
    )
    .unwrap();
    assert!(
        push.status.success(),
        "push: {}\n{}",
        String::from_utf8_lossy(&push.stderr),
        all_logs()
    );
    let back = work.path().join("back");
    let pull = skopeo_resolving_to(
        NODE_IP,
        &[host],
        &[
            "copy",
            "--src-cert-dir",
            &certs,
            "--src-creds",
            &creds,
            &format!("docker://{host}:{https_b}/swarm/app:v1"),
            &format!("oci:{}:v1", back.display()),
        ],
    )
    .unwrap();
    assert!(
        pull.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    assert_eq!(manifest_digest(&back, "v1").unwrap(), built.manifest_digest);

    // berth-acme gone: both edges keep serving.
    let renewals_before = pebble.orders();
    sdocker(&[
        "service",
        "scale",
        "--detach",
        &format!("{stack}_berth-acme=0"),
    ])
    .unwrap();
    wait_until(
        Duration::from_secs(30),
        "berth-acme never stopped",
        || {
            sdocker(&[
                "service",
                "ps",
                "-q",
                "--filter",
                "desired-state=running",
                &format!("{stack}_berth-acme"),
            ])
            .map(|o| o.is_empty())
            .unwrap_or(false)
        },
        all_logs,
    );
    // Both edges have found the feed gone (and retried) before they are asked.
    let retried = "serving the certificates this edge has and retrying";
    wait_until(
        Duration::from_secs(30),
        "the edges never noticed berth-acme was gone",
        || logs("berth").contains(retried) && second.logs().contains(retried),
        all_logs,
    );
    for port in [https_a, https_b] {
        assert_eq!(verified(port), "401", "{}", all_logs());
    }

    let serial = |port: u16| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo | openssl s_client -connect {NODE_IP}:{port} -servername {host} 2>/dev/null \
                 | openssl x509 -noout -serial"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let first = serial(https_a);
    assert!(first.starts_with("serial="), "{first}");
    assert_eq!(serial(https_b), first);

    // Back: it renews when the window opens, and both edges serve the renewed certificate
    // without a restart; a third edge started afterwards serves it within seconds.
    sdocker(&[
        "service",
        "scale",
        "--detach",
        &format!("{stack}_berth-acme=1"),
    ])
    .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the certificate was never renewed",
        || pebble.orders() > renewals_before && serial(https_a) != first,
        all_logs,
    );
    let renewed = serial(https_a);
    let took = wait_until(
        Duration::from_secs(10),
        "edge B never served the renewed certificate",
        || serial(https_b) == renewed,
        || second.logs(),
    );
    eprintln!("edge B served the renewal {took:?} after edge A");
    let third = extra_edge("edge-c", http_c, https_c);
    let took = wait_until(
        Duration::from_secs(30),
        "edge C was never served the certificate",
        || verified(https_c) == "401" && serial(https_c) == serial(https_a),
        || third.logs(),
    );
    eprintln!("edge C served the certificate {took:?} after it was created");
    drop(third);
    drop(second);
}

/// Removes a deployed stack and its secrets when dropped.
struct StackCleanup {
    stack: String,
    secrets: Vec<String>,
}

impl Drop for StackCleanup {
    fn drop(&mut self) {
        use berth_testkit::swarm::sdocker;
        let _ = sdocker(&["stack", "rm", &self.stack]);
        // `stack rm` keeps the stack's volumes; they go once no task uses them.
        let deadline = Instant::now() + Duration::from_secs(20);
        let volumes = sdocker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}_", self.stack),
        ])
        .unwrap_or_default();
        for v in volumes.lines() {
            while sdocker(&["volume", "rm", v]).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Secrets in use by a task being removed are refused for a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in &self.secrets {
            while sdocker(&["secret", "rm", s]).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// A second Swarm node (a worker in a namespace of its own, joined for this test): a task
/// placed on it is routed by the edge on the first node, across the overlay. The overlay is
/// not encrypted here: on these machines an encrypted overlay passes no traffic between the
/// two nodes (IPsec between network namespaces of one host), while a plain one does.
#[test]
fn a_task_on_a_second_node_is_routed_by_an_edge_on_the_first() {
    use berth_testkit::swarm::SecondNode;
    let _alone = swarm_alone();
    let _daemon = berth_testkit::docker::shared_blocking();
    require();
    let image = berth_image(Path::new(env!("CARGO_BIN_EXE_berth")), &berth_acme()).unwrap();
    let node2 = SecondNode::join().unwrap();
    let overlay = Overlay::create_with("two-nodes", false).unwrap();
    let conf = edge_config(&overlay.name, "swarm-poll = \"1s\"");
    let far = hostname_web(
        "far",
        &[
            "--network",
            &overlay.name,
            "--constraint",
            &format!("node.id=={}", node2.id),
            "--label",
            "berth.host=far.swarm.test",
        ],
    );
    let (http, admin) = (free_port(), free_port());
    let edge = berth_service(
        &image,
        &overlay.name,
        conf.path(),
        &[(8080, http), (9180, admin)],
        &["--constraint", "node.role==manager"],
    )
    .unwrap();
    let answered = wait_until(
        Duration::from_secs(60),
        "the task on the second node was never answered through the edge",
        || get(http, "far.swarm.test", "/").0 == "200",
        || format!("edge:\n{}\nfar:\n{}", edge.logs(), far.logs()),
    );
    eprintln!("task on node 2 answered through the edge on node 1 after {answered:?}");
    let (_, body) = get(http, "far.swarm.test", "/");
    // The task that answered runs on the second node (both nodes share a hostname here:
    // compared by node id).
    let task = berth_testkit::swarm::sdocker(&[
        "service",
        "ps",
        "-q",
        "--filter",
        "desired-state=running",
        &far.name,
    ])
    .unwrap();
    let node = berth_testkit::swarm::sdocker(&["inspect", "--format", "{{.NodeID}}", task.trim()])
        .unwrap();
    assert_eq!(node, node2.id, "the task runs on the second node");
    assert!(!body.is_empty(), "the task answered with its hostname");
    drop(edge);
    drop(far);
    drop(overlay);
    drop(node2);
}
