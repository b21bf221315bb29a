//! Observability overhead: small keep-alive GETs over plain HTTP/1.1 (wrk, 64 connections)
//! through berth with metrics and the access log on, and with both off, in alternating runs
//! of one session (scenario `small_get_h1_c64_observability`). Plain HTTP, so that TLS costs
//! do not hide the difference.

use std::path::Path;
use std::process::Command;

use berth_testkit::{BerthProcess, Origin};

/// Requests per second, one number per run.
pub struct Outcome {
    /// Metrics and access log off.
    pub off: Vec<f64>,
    /// Metrics (scraped once a second) and an access log file on.
    pub on: Vec<f64>,
    /// The origin directly, for scale.
    pub direct: f64,
}

fn wrk(port: u16, secs: u64) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{secs}s"),
            "-H",
            "Host: bench.test",
        ])
        .arg(format!("http://127.0.0.1:{port}/v2/"))
        .output()
        .map_err(|e| format!("wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors: {text}"));
    }
    text.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("wrk output without Requests/sec: {text}"))
}

/// Runs `runs` alternating pairs of `secs` seconds each.
///
/// # Errors
/// When berth or wrk cannot run.
pub fn run(berth: &Path, runs: usize, secs: u64) -> Result<Outcome, String> {
    let origin = Origin::start("bench");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let route = format!(
        "[docker]\nenabled = false\n[[route]]\nhost = \"bench.test\"\nupstreams = [\"{}\"]\n",
        origin.addr
    );
    let off = BerthProcess::start(
        berth,
        &format!("[listen]\nhttp = \"{{http}}\"\n[log]\naccess = \"off\"\n{route}"),
    )
    .map_err(|e| e.to_string())?;
    let on = BerthProcess::start(
        berth,
        &format!(
            "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n[log]\naccess = \"{}\"\n{route}",
            dir.path().join("access.log").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    // Prometheus scrapes while the load runs, as it would in production.
    let admin = on.admin.ok_or("no admin listener")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Command::new("curl")
                    .args(["-s", "-o", "/dev/null"])
                    .arg(format!("http://{admin}/metrics"))
                    .status();
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        })
    };
    let direct = wrk(origin.addr.port(), secs)?;
    let mut outcome = Outcome {
        off: Vec::new(),
        on: Vec::new(),
        direct,
    };
    for _ in 0..runs {
        outcome.off.push(wrk(off.http.port(), secs)?);
        outcome.on.push(wrk(on.http.port(), secs)?);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = scraper.join();
    Ok(outcome)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// The markdown table.
pub fn table(o: &Outcome) -> String {
    let (off, on) = (median(&o.off), median(&o.on));
    let runs = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "| berth | req/s (median) | runs | vs direct |\n|---|---|---|---|\n\
         | metrics + access log off | {off:.0} | {} | {:.2}× |\n\
         | metrics + access log on | {on:.0} | {} | {:.2}× |\n\n\
         Overhead of metrics and access log: {:.1} % (direct origin: {:.0} req/s).\n",
        runs(&o.off),
        off / o.direct,
        runs(&o.on),
        on / o.direct,
        (1.0 - on / off) * 100.0,
        o.direct
    )
}
