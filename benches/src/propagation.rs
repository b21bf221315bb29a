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

/// The markdown table for the samples.
pub fn table(samples: &[Sample]) -> String {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let mut start: Vec<Duration> = samples.iter().map(|s| s.start).collect();
    let mut stop: Vec<Duration> = samples.iter().map(|s| s.stop).collect();
    start.sort();
    stop.sort();
    let row = |name: &str, v: &[Duration]| {
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(v.last().copied().unwrap_or_default())
        )
    };
    let mut out = String::from(
        "| scenario | containers | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|\n",
    );
    out.push_str(&row(
        "docker run returned → first 200 through berth",
        &start,
    ));
    out.push_str(&row("docker stop returned → 503 from berth", &stop));
    out
}

/// The samples as report rows (berth only: the peers' equivalent is not measured here).
pub fn rows(samples: &[Sample]) -> Vec<Row> {
    let mut start: Vec<Duration> = samples.iter().map(|s| s.start).collect();
    let mut stop: Vec<Duration> = samples.iter().map(|s| s.stop).collect();
    start.sort();
    stop.sort();
    let row = |scenario: &str, v: &[Duration], p: f64| Row {
        section: "Route propagation from Docker events",
        scenario: scenario.to_string(),
        unit: "ms",
        better: Better::Lower,
        berth: percentile(v, p).as_secs_f64() * 1000.0,
        ..Row::default()
    };
    vec![
        row("docker_run_to_routed_p50", &start, 0.5),
        row("docker_run_to_routed_p90", &start, 0.9),
        row("docker_stop_to_503_p50", &stop, 0.5),
        row("docker_stop_to_503_p90", &stop, 0.9),
    ]
}
