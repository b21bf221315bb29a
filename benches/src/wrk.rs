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

impl WrkReport {
    /// The p99 latency in milliseconds (wrk prints `850.00us`, `7.56ms` or `1.02s`).
    pub fn p99_ms(&self) -> Option<f64> {
        let (number, scale) = if let Some(v) = self.p99.strip_suffix("us") {
            (v, 0.001)
        } else if let Some(v) = self.p99.strip_suffix("ms") {
            (v, 1.0)
        } else if let Some(v) = self.p99.strip_suffix('s') {
            (v, 1000.0)
        } else {
            return None;
        };
        number.parse::<f64>().ok().map(|v| v * scale)
    }
}

/// `wrk -t2 -c64 -d<secs>s --latency -H "Host: bench.test" <url>`.
///
/// # Errors
/// When wrk cannot run, reports errors or non-2xx answers, or prints no figures.
pub fn run(url: &str, secs: u64) -> Result<WrkReport, String> {
    run_with(url, secs, &["Host: bench.test".to_string()])
}

/// `wrk -t2 -c64 -d<secs>s --latency -H <header>... <url>`.
///
/// # Errors
/// As [`run`].
pub fn run_with(url: &str, secs: u64, headers: &[String]) -> Result<WrkReport, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{secs}s"), "--latency"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
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

#[cfg(test)]
mod tests {
    use super::WrkReport;

    fn p99(text: &str) -> Option<f64> {
        WrkReport {
            rps: 0.0,
            requests: 0.0,
            p99: text.to_string(),
        }
        .p99_ms()
    }

    #[test]
    fn p99_is_read_in_each_unit_wrk_prints() {
        for (text, ms) in [("850.00us", 0.85), ("7.56ms", 7.56), ("1.02s", 1020.0)] {
            let got = p99(text).unwrap_or(f64::NAN);
            assert!((got - ms).abs() < 1e-9, "{text}: {got}");
        }
        assert_eq!(p99("?"), None);
        assert_eq!(p99("ms"), None);
    }
}
