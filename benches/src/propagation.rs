//! Route propagation latency with the real Docker daemon: from `docker run` returning to the
//! first successful request through berth, and from `docker stop` returning to berth
//! answering 503, over many containers (scenario `docker_route_propagation`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Request};
use berth_testkit::docker::{available, ensure_images, Container, BUSYBOX};
use berth_testkit::BerthProcess;

use crate::report::{Better, Row};

/// Latencies measured for one container.
pub struct Sample {
    /// `docker run` returned → first 200.
    pub start: Duration,
    /// `docker stop` returned → first 503.
    pub stop: Duration,
}

/// Polls `host` through berth until it answers `want`.
async fn until_status(addr: SocketAddr, host: &str, want: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let request = Request::get(host, "/");
    loop {
        // A request that berth still sends to a stopped container's address would wait for
        // ARP to give up; give up on it sooner and ask again.
        let probe = tokio::time::timeout(Duration::from_millis(50), send(addr, &request));
        if let Ok(Ok(r)) = probe.await {
            if r.status == want {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(format!("{host} did not answer {want} within 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts and stops `n` labelled containers one after another.
///
/// # Errors
/// When Docker is not there or a route does not appear or disappear in time.
pub fn run(berth: &Path, n: usize) -> Result<Vec<Sample>, String> {
    if !available() {
        return Err("no Docker daemon answers".to_string());
    }
    ensure_images().map_err(|e| e.to_string())?;
    let b = BerthProcess::start(
        berth,
        "[listen]\nhttp = \"{http}\"\n[docker]\nenabled = true\n",
    )
    .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let host = format!("p{i}.bench.test");
        let label = format!("berth.host={host}");
        let c = Container::run("prop", &["-l", &label, BUSYBOX]).map_err(|e| e.to_string())?;
        let start = rt.block_on(until_status(b.http, &host, 200))?;
        c.stop().map_err(|e| e.to_string())?;
        let stop = rt.block_on(until_status(b.http, &host, 503))?;
        samples.push(Sample { start, stop });
    }
    Ok(samples)
}

/// The value at `p` (0..=1) of `sorted`, nearest rank; zero when there is none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A markdown table of latency percentiles: a header naming the scenario and count columns,
/// then one row per `(name, sorted samples)`, in ms with `decimals`.
fn latency_table(
    header: &str,
    count: &str,
    rows: &[(&str, Vec<Duration>)],
    decimals: usize,
) -> String {
    let ms = |d: Duration| format!("{:.*}", decimals, d.as_secs_f64() * 1000.0);
    let mut out =
        format!("| {header} | {count} | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|\n");
    for (name, v) in rows {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(v.last().copied().unwrap_or_default())
        ));
    }
    out
}

/// The markdown table for the samples.
pub fn table(samples: &[Sample]) -> String {
    latency_table(
        "scenario",
        "containers",
        &[
            (
                "docker run returned → first 200 through berth",
                sorted(samples.iter().map(|s| s.start)),
            ),
            (
                "docker stop returned → 503 from berth",
                sorted(samples.iter().map(|s| s.stop)),
            ),
        ],
        1,
    )
}

/// A report row of the `p` percentile of `v` (sorted), in ms.
fn row(scenario: &str, v: &[Duration], p: f64) -> Row {
    Row {
        section: "Route propagation from Docker events",
        scenario: scenario.to_string(),
        unit: "ms",
        better: Better::Lower,
        berth: percentile(v, p).as_secs_f64() * 1000.0,
        ..Row::default()
    }
}

/// The samples as report rows (berth only: the peers' equivalent is not measured here).
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let start = sorted(samples.iter().map(|s| s.start));
    let stop = sorted(samples.iter().map(|s| s.stop));
    vec![
        row("docker_run_to_routed_p50", &start, 0.5),
        row("docker_run_to_routed_p90", &start, 0.9),
        row("docker_stop_to_503_p50", &stop, 0.5),
        row("docker_stop_to_503_p90", &stop, 0.9),
    ]
}

/// Latencies measured for one scaling of a Swarm service (1 → 2 → 1 replicas).
pub struct SwarmSample {
    /// Swarm reports the new task running → berth routes to it.
    pub up: Duration,
    /// `docker service scale` to 1 returned → berth routes to one task.
    pub down: Duration,
}

fn poll_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<Instant, String> {
    let started = Instant::now();
    loop {
        if check() {
            return Ok(Instant::now());
        }
        if started.elapsed() > limit {
            return Err(format!("{what} within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Scales a service between 1 and 2 replicas `n` times on the Swarm of
/// `./scripts/swarm-daemon`, with berth running as a service there at the default
/// `docker.swarm-poll` (5 s) (scenario `swarm_route_propagation`).
///
/// # Errors
/// When the Swarm daemon is not there or a route does not follow in time.
pub fn run_swarm(berth: &Path, berth_acme: &Path, n: usize) -> Result<Vec<SwarmSample>, String> {
    use berth_testkit::swarm::{
        berth_image, berth_service, route_upstreams, sdocker, Overlay, Service, NODE_IP,
    };
    let state = sdocker(&["info", "--format", "{{.Swarm.ControlAvailable}}"]);
    if state.as_deref().ok() != Some("true") {
        return Err("no Swarm manager answers: run ./scripts/swarm-daemon start".to_string());
    }
    berth_testkit::swarm::require();
    let image = berth_image(berth, berth_acme).map_err(|e| e.to_string())?;
    let overlay = Overlay::create("bench").map_err(|e| e.to_string())?;
    let conf = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(
        conf.path().join("berth.toml"),
        format!(
            "[listen]\nhttp = \"0.0.0.0:8080\"\nmetrics = \"0.0.0.0:9180\"\n\n\
             [docker]\nenabled = true\nendpoint = \"unix:///var/run/docker.sock\"\n\
             network = \"{}\"\n\n[log]\naccess = \"off\"\n",
            overlay.name
        ),
    )
    .map_err(|e| e.to_string())?;
    let host = "scale.bench.test";
    let web = Service::create(
        "scale",
        &[
            "--network",
            &overlay.name,
            "--label",
            &format!("berth.host={host}"),
            BUSYBOX,
        ],
    )
    .map_err(|e| e.to_string())?;
    let admin_port = berth_testkit::free_port();
    let _edge = berth_service(
        &image,
        &overlay.name,
        conf.path(),
        &[(9180, admin_port)],
        &[],
    )
    .map_err(|e| e.to_string())?;
    let admin = format!("{NODE_IP}:{admin_port}");
    poll_until(
        Duration::from_secs(60),
        "the service was not routed",
        || route_upstreams(&admin, host) == 1,
    )?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        web.scale(2).map_err(|e| e.to_string())?;
        let running = poll_until(Duration::from_secs(60), "Swarm did not run 2 tasks", || {
            web.running_tasks() == 2
        })?;
        let routed = poll_until(Duration::from_secs(30), "2 tasks were not routed", || {
            route_upstreams(&admin, host) == 2
        })?;
        let scaled = Instant::now();
        web.scale(1).map_err(|e| e.to_string())?;
        let unrouted = poll_until(Duration::from_secs(30), "1 task was not routed", || {
            route_upstreams(&admin, host) == 1
        })?;
        samples.push(SwarmSample {
            up: routed.saturating_duration_since(running),
            down: unrouted.saturating_duration_since(scaled),
        });
        // The removed task must be gone before the next round counts running tasks.
        poll_until(
            Duration::from_secs(60),
            "Swarm did not stop the task",
            || web.running_tasks() == 1,
        )?;
    }
    Ok(samples)
}

fn sorted(v: impl Iterator<Item = Duration>) -> Vec<Duration> {
    let mut v: Vec<Duration> = v.collect();
    v.sort();
    v
}

/// The markdown table for the Swarm samples.
pub fn swarm_table(samples: &[SwarmSample]) -> String {
    latency_table(
        "scenario (docker.swarm-poll = 5 s)",
        "scalings",
        &[
            (
                "Swarm reports a new task running → berth routes to it",
                sorted(samples.iter().map(|s| s.up)),
            ),
            (
                "docker service scale (down) returned → berth stops routing to the task",
                sorted(samples.iter().map(|s| s.down)),
            ),
        ],
        0,
    )
}

/// The Swarm samples as report rows.
pub fn swarm_rows(samples: &[SwarmSample]) -> Vec<Row> {
    let up = sorted(samples.iter().map(|s| s.up));
    let down = sorted(samples.iter().map(|s| s.down));
    // The goal: the default swarm-poll (5 s) + 1 s, Traefik's Swarm provider polls every 15 s.
    let p90 = row("swarm_task_running_to_routed_p90", &up, 0.9);
    let met = p90.berth <= 6000.0;
    vec![
        row("swarm_task_running_to_routed_p50", &up, 0.5),
        p90.goal_text("≤ 6000 ms (swarm-poll + 1 s)".to_string(), met),
        row("swarm_scale_down_to_unrouted_p50", &down, 0.5),
        row("swarm_scale_down_to_unrouted_p90", &down, 0.9),
    ]
}
