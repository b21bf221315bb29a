//! Running wrk (small keep-alive GETs, 2 threads, 64 connections) and reading its report.

use std::process::Command;

/// What wrk reported.
pub struct WrkReport {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: f64,
    /// The 99th percentile latency as wrk prints it (`1.23ms`).
    pub p99: String,
}

/// `wrk -t2 -c64 -d<secs>s --latency -H "Host: bench.test" <url>`.
///
/// # Errors
/// When wrk cannot run, reports errors or non-2xx answers, or prints no figures.
pub fn run(url: &str, secs: u64) -> Result<WrkReport, String> {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{secs}s"), "--latency"])
        .args(["-H", "Host: bench.test", url])
        .output()
        .map_err(|e| format!("wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk against {url} saw errors: {text}"));
    }
    let field = |starts: &str, index: usize| {
        text.lines()
            .find(|l| l.trim_start().starts_with(starts))
            .and_then(|l| l.split_whitespace().nth(index))
            .map(str::to_string)
    };
    let number = |v: Option<String>, what: &str| {
        v.and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("wrk output without {what}: {text}"))
    };
    // "  123456 requests in 8.00s, 12.34MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string);
    Ok(WrkReport {
        rps: number(field("Requests/sec:", 1), "Requests/sec")?,
        requests: number(requests, "a request count")?,
        p99: field("99%", 1).unwrap_or_else(|| "?".to_string()),
    })
}
