//! Observability overhead: small keep-alive GETs over plain HTTP/1.1 (wrk, 64 connections)
//! through berth with metrics and the access log on, and with both off, in alternating runs
//! of one session (scenario `small_get_h1_c64_observability`). Plain HTTP, so that TLS costs
//! do not hide the difference.

use std::path::Path;
use std::process::Command;

use berth_testkit::{BerthProcess, Origin};

/// One run: requests per second, and berth's CPU time per request (user + system), which
/// shared-machine noise disturbs far less than throughput.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// berth's CPU microseconds per request.
    pub cpu_us: f64,
}

/// Every run of both sides.
pub struct Outcome {
    /// Metrics and access log off.
    pub off: Vec<Run>,
    /// Metrics (scraped once a second) and an access log file on.
    pub on: Vec<Run>,
    /// The origin directly, for scale (requests per second).
    pub direct: f64,
}

/// CPU time (user + system) of a process so far, seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    berth_testkit::process::cpu_seconds(pid).ok_or_else(|| format!("/proc/{pid}/stat: unreadable"))
}

/// wrk against berth, with berth's CPU time measured around it.
fn measured(b: &BerthProcess, secs: u64) -> Result<Run, String> {
    let before = cpu_seconds(b.pid())?;
    let report = crate::wrk::run(&format!("http://{}/v2/", b.http), secs)?;
    let cpu = cpu_seconds(b.pid())? - before;
    Ok(Run {
        rps: report.rps,
        cpu_us: cpu * 1e6 / report.requests.max(1.0),
    })
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
    let direct = crate::wrk::run(&format!("http://{}/v2/", origin.addr), secs)?.rps;
    let mut outcome = Outcome {
        off: Vec::new(),
        on: Vec::new(),
        direct,
    };
    // ABBA order: whatever drifts during a session (connection state left by the previous
    // run, other tenants) falls on both sides alike.
    for i in 0..runs {
        if i % 2 == 0 {
            outcome.off.push(measured(&off, secs)?);
            outcome.on.push(measured(&on, secs)?);
        } else {
            outcome.on.push(measured(&on, secs)?);
            outcome.off.push(measured(&off, secs)?);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = scraper.join();
    Ok(outcome)
}

/// The median (the upper one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// The markdown table.
pub fn table(o: &Outcome) -> String {
    let rps = |v: &[Run]| median(&v.iter().map(|r| r.rps).collect::<Vec<_>>());
    let cpu = |v: &[Run]| median(&v.iter().map(|r| r.cpu_us).collect::<Vec<_>>());
    let runs = |v: &[Run]| {
        v.iter()
            .map(|r| format!("{:.0} / {:.1}", r.rps, r.cpu_us))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (off_cpu, on_cpu) = (cpu(&o.off), cpu(&o.on));
    format!(
        "| berth | req/s (median) | CPU µs per request (median) | runs (req/s / µs) |\n|---|---|---|---|\n\
         | metrics + access log off | {:.0} | {off_cpu:.1} | {} |\n\
         | metrics + access log on | {:.0} | {on_cpu:.1} | {} |\n\n\
         Overhead of metrics and access log: {:+.1} % CPU per request, {:+.1} % requests/s \
         (direct origin: {:.0} req/s).\n",
        rps(&o.off),
        runs(&o.off),
        rps(&o.on),
        runs(&o.on),
        (on_cpu / off_cpu - 1.0) * 100.0,
        (rps(&o.on) / rps(&o.off) - 1.0) * 100.0,
        o.direct
    )
}
