//! What each optional request step costs: small keep-alive GETs over plain HTTP/1.1 (wrk, 64
//! connections) to one berth whose routes differ by one step each — none, the allowlist, a
//! rate limit that never refuses, basic auth with a remembered user, forward auth asking a
//! local auth service on every request, and forward auth with its decision cache — in
//! rotating order within one session (scenario `small_get_h1_c64_plugins`). Metrics and
//! the access log are off, so only the step differs. berth's CPU time per request is the
//! figure to read: the auth service's own work is not in it, while its answers' latency is
//! in the requests per second.

use std::path::Path;
use std::process::Command;

use crate::overhead::{cpu_seconds, median};
use berth_testkit::auth_service::AuthService;
use berth_testkit::{BerthProcess, Origin};

/// One step's route: its host, the route keys that add the step, and the extra header wrk
/// sends.
struct Case {
    label: &'static str,
    host: &'static str,
    keys: String,
    header: Option<&'static str>,
}

/// One run: requests per second and berth's CPU microseconds per request.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// berth's CPU microseconds per request.
    pub cpu_us: f64,
}

/// Every run of every step, in the order of the table.
pub struct Outcome {
    /// (step, runs).
    pub steps: Vec<(&'static str, Vec<Run>)>,
    /// The origin directly, for scale (requests per second).
    pub direct: f64,
}

/// `alice:secret` (what the auth service and the htpasswd file both know).
const ALICE: &str = "Authorization: Basic YWxpY2U6c2VjcmV0";

fn htpasswd(file: &Path) -> Result<(), String> {
    let out = Command::new("htpasswd")
        .arg("-cbB")
        .arg(file)
        .args(["alice", "secret"])
        .output()
        .map_err(|e| format!("htpasswd (apt-get install apache2-utils): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs `runs` rounds of `secs` seconds per step.
///
/// # Errors
/// When berth, wrk or htpasswd cannot run, or a step answers anything but 2xx.
pub fn run(berth: &Path, runs: usize, secs: u64) -> Result<Outcome, String> {
    let origin = Origin::start("bench");
    let auth = AuthService::start();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("htpasswd");
    htpasswd(&file)?;
    let forward = format!(
        "auth.forward = \"{}\"\nauth.forward-headers = [\"Remote-User\", \"Remote-Groups\"]",
        auth.url()
    );
    let cases = [
        Case {
            label: "none (baseline)",
            host: "bench.test",
            keys: String::new(),
            header: None,
        },
        Case {
            label: "allow (allowlist)",
            host: "allow.test",
            keys: "allow = [\"127.0.0.0/8\"]".into(),
            header: None,
        },
        Case {
            label: "rate-limit (never over)",
            host: "rate.test",
            keys: "rate-limit = \"1000000r/s\"".into(),
            header: None,
        },
        Case {
            label: "basic auth (user remembered)",
            host: "basic.test",
            keys: format!("auth.htpasswd = \"{}\"", file.display()),
            header: Some(ALICE),
        },
        Case {
            label: "forward auth (asked every request)",
            host: "forward.test",
            keys: forward.clone(),
            header: Some(ALICE),
        },
        Case {
            label: "forward auth + forward-cache",
            host: "cached.test",
            keys: format!("{forward}\nauth.forward-cache = \"10m\""),
            header: Some(ALICE),
        },
    ];
    let mut config =
        "[listen]\nhttp = \"{http}\"\n[log]\naccess = \"off\"\n[docker]\nenabled = false\n"
            .to_string();
    for c in &cases {
        config.push_str(&format!(
            "[[route]]\nhost = \"{}\"\nupstreams = [\"{}\"]\n{}\n",
            c.host, origin.addr, c.keys
        ));
    }
    let b = BerthProcess::start(berth, &config).map_err(|e| e.to_string())?;
    let direct = crate::wrk::run(&format!("http://{}/", origin.addr), secs)?.rps;
    let mut steps: Vec<(&'static str, Vec<Run>)> =
        cases.iter().map(|c| (c.label, Vec::new())).collect();
    // Each round starts one step later, so no step always runs first or after the same one.
    for round in 0..runs {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let c = &cases[i];
            let mut headers = vec![format!("Host: {}", c.host)];
            headers.extend(c.header.map(str::to_string));
            let before = cpu_seconds(b.pid())?;
            let report = crate::wrk::run_with(&format!("http://{}/", b.http), secs, &headers)?;
            let cpu = cpu_seconds(b.pid())? - before;
            steps[i].1.push(Run {
                rps: report.rps,
                cpu_us: cpu * 1e6 / report.requests.max(1.0),
            });
        }
    }
    Ok(Outcome { steps, direct })
}

/// The markdown table: each step against the baseline (the first).
pub fn table(o: &Outcome) -> String {
    let rps = |v: &[Run]| median(&v.iter().map(|r| r.rps).collect::<Vec<_>>());
    let cpu = |v: &[Run]| median(&v.iter().map(|r| r.cpu_us).collect::<Vec<_>>());
    let (base_rps, base_cpu) = o
        .steps
        .first()
        .map_or((1.0, 1.0), |(_, runs)| (rps(runs), cpu(runs)));
    let mut out = String::from(
        "| step on the route | req/s (median) | vs none | berth CPU µs per request (median) | vs none | runs (req/s / µs) |\n\
         |---|---|---|---|---|---|\n",
    );
    for (label, runs) in &o.steps {
        let all = runs
            .iter()
            .map(|r| format!("{:.0} / {:.1}", r.rps, r.cpu_us))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {label} | {:.0} | {:+.1} % | {:.1} | {:+.1} % | {all} |\n",
            rps(runs),
            (rps(runs) / base_rps - 1.0) * 100.0,
            cpu(runs),
            (cpu(runs) / base_cpu - 1.0) * 100.0,
        ));
    }
    out.push_str(&format!("\nThe origin directly: {:.0} req/s.\n", o.direct));
    out
}
