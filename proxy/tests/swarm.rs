//! berth on a real Docker Swarm (the single-node Swarm of `./scripts/swarm-daemon`): berth
//! runs as a service on an encrypted overlay network, reads services from the manager, and
//! balances a 3-replica service over its tasks' overlay addresses; scaling the service to 1
//! and back changes the upstreams within `docker.swarm-poll` + 1 s.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::free_port;
use berth_testkit::swarm::{berth_image, require, Overlay, Service, NODE_IP};

const HOST: &str = "web.swarm.test";

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

/// The upstream addresses of `host`'s route in `/routes` on the admin port.
fn upstreams(admin: u16) -> Vec<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{NODE_IP}:{admin}/routes"))
        .output()
        .unwrap();
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    page["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["host"] == HOST)
        .flat_map(|r| r["upstreams"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u["addr"].as_str().map(str::to_string))
        .collect()
}

fn wait_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replicated_service_is_balanced_over_its_tasks_and_follows_scaling() {
    require();
    let image = berth_image(Path::new(env!("CARGO_BIN_EXE_berth")), &berth_acme()).unwrap();
    let overlay = Overlay::create("edge").unwrap();
    let conf = tempfile::tempdir().unwrap();
    let poll = Duration::from_secs(1);
    std::fs::write(
        conf.path().join("berth.toml"),
        format!(
            "[listen]\nhttp = \"0.0.0.0:8080\"\nmetrics = \"0.0.0.0:9180\"\n\n\
             [docker]\nenabled = true\nendpoint = \"unix:///var/run/docker.sock\"\n\
             network = \"{}\"\nswarm = true\nswarm-poll = \"{}ms\"\n\n\
             [tls]\ncerts-dir = \"/var/lib/berth/certs\"\n\n\
             [acme]\nchallenge-dir = \"/var/lib/berth/challenges\"\n",
            overlay.name,
            poll.as_millis()
        ),
    )
    .unwrap();
    // Each task answers with its own hostname, so the test sees which task answered.
    let web = Service::create(
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
            berth_testkit::docker::BUSYBOX,
            "sh",
            "-c",
            "hostname > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    )
    .unwrap();
    let (http, admin) = (free_port(), free_port());
    let edge = Service::create(
        "berth",
        &[
            "--network",
            &overlay.name,
            "--publish",
            &format!("mode=host,target=8080,published={http}"),
            "--publish",
            &format!("mode=host,target=9180,published={admin}"),
            "--mount",
            "type=bind,source=/run/berth-swarm/docker.sock,target=/var/run/docker.sock",
            "--mount",
            &format!(
                "type=bind,source={},target=/etc/berth",
                conf.path().display()
            ),
            &image,
            "--config",
            "/etc/berth/berth.toml",
        ],
    )
    .unwrap();
    let logs = || format!("berth:\n{}", edge.logs());

    // Routed to three tasks; requests reach all three.
    wait_until(
        Duration::from_secs(60),
        "the service never had three routed tasks",
        || upstreams(admin).len() == 3 && get(http, HOST, "/").0 == "200",
        logs,
    );
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (code, body) = get(http, HOST, "/");
        assert_eq!(code, "200", "{body}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 3, "round robin over three tasks: {seen:?}");

    // Down to one: the service update is an event, so the route follows at once.
    let started = Instant::now();
    web.scale(1).unwrap();
    wait_until(
        poll + Duration::from_secs(1),
        "scaling down did not reach the route within swarm-poll + 1 s",
        || upstreams(admin).len() == 1,
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
        || upstreams(admin).len() == 3,
        logs,
    );
    eprintln!("scaled 1 -> 3: routed {took:?} after Swarm reported the tasks running");

    let metrics = Command::new("curl")
        .args(["-sS", &format!("http://{NODE_IP}:{admin}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("berth_routes{source=\"swarm\"} 1"),
        "{metrics}"
    );
    drop(edge);
    drop(web);
    drop(overlay);
}
