//! Shared helpers for berth's integration tests: start the real binary with a config.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Request, Response};
use berth_testkit::BerthProcess;
use prometheus_parse::{Scrape, Value};

/// Starts the `berth` binary built for these tests on `config` (`{http}` = its listener).
pub(crate) fn berth(config: &str) -> BerthProcess {
    BerthProcess::start(Path::new(env!("CARGO_BIN_EXE_berth")), config)
        .unwrap_or_else(|e| panic!("berth did not start: {e}"))
}

/// A config with one listener, Docker discovery off, and the given extra TOML.
pub(crate) fn config(extra: &str) -> String {
    format!("[listen]\nhttp = \"{{http}}\"\n\n[docker]\nenabled = false\n\n{extra}")
}

/// A `[[route]]` table.
pub(crate) fn route(host: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[route]]\nhost = \"{host}\"\nupstreams = [{}]\n{extra}\n",
        ups.join(", ")
    )
}

/// Sends a request and panics with berth's log if the exchange fails.
pub(crate) async fn call(berth: &BerthProcess, req: &Request) -> Response {
    match send(berth.http, req).await {
        Ok(r) => r,
        Err(e) => panic!(
            "request {} {} failed: {e}\nberth log:\n{}",
            req.method,
            req.target,
            berth.log()
        ),
    }
}

/// `GET /metrics` from berth's admin listener (`{admin}` in its config).
pub(crate) async fn scrape_text(b: &BerthProcess) -> String {
    let admin = b.admin.unwrap();
    let r = send(admin, &Request::get(&admin.to_string(), "/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    r.text()
}

/// Parses the exposition text; every sample as `name{k="v",...}` → value.
pub(crate) fn parse(text: &str) -> HashMap<String, f64> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = format!("{}{{{}}}", s.metric, labels.join(","));
        let value = match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        };
        out.insert(key, value);
    }
    out
}

pub(crate) async fn scrape(b: &BerthProcess) -> HashMap<String, f64> {
    parse(&scrape_text(b).await)
}

pub(crate) fn value(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        panic!(
            "no sample {key}; have:\n{:#?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

/// Polls `/metrics` until `key` has `want` (metrics are recorded when a request has ended,
/// which for the client may be a moment earlier); then the metrics of a scrape started after
/// that: one scrape reads the families one after another, so the one that saw `key` change
/// may have read a family berth updated just before it at its earlier value.
pub(crate) async fn wait_for(b: &BerthProcess, key: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(b).await;
        if m.get(key) == Some(&want) {
            return scrape(b).await;
        }
        assert!(
            Instant::now() < deadline,
            "{key} is {:?}, want {want}\nberth log:\n{}",
            m.get(key),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the Docker CLI with its config in `config` (a login of its own); whether it
/// succeeded, and what it said on both outputs.
pub(crate) fn docker_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("docker")
            .arg("--config")
            .arg(config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("docker must be installed (scripts/test installs docker.io)")
    });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// Every file under `dir`, at any depth (what a registry stored).
pub(crate) fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
