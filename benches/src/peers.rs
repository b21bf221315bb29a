//! Small GETs over TLS through berth and its peers, side by side in one run: HAProxy, Caddy,
//! nginx with upstream keep-alive, nginx as nginx-proxy generates it (no upstream keep-alive),
//! and a bare Pingora proxy (`bare-pingora`, Pingora's own floor). Every proxy terminates TLS
//! with the same certificate in front of the same nginx origin answering a small body; the
//! client is wrk (2 threads, 64 keep-alive connections). Beside req/s and p99, the CPU time
//! each proxy spent per request (user + system, from /proc, the proxy's processes only).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_testkit::free_port;
use berth_testkit::process::wait_for_port;
use berth_testkit::BerthProcess;

use crate::pki::BenchPki;
use berth_testkit::nginx::{Nginx, NginxFlavour};

/// What to run.
pub struct PeersBench {
    /// wrk duration per proxy, seconds.
    pub secs: u64,
    /// The berth binary.
    pub berth: PathBuf,
    /// The bare Pingora proxy binary.
    pub bare_pingora: PathBuf,
    /// Another berth binary (another build), measured beside the first.
    pub against: Option<PathBuf>,
}

/// One proxy's figures.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// Which proxy and configuration.
    pub name: &'static str,
    /// Requests per second.
    pub rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// CPU time of the proxy's processes per request, µs.
    pub cpu_us: f64,
}

/// The names the table and the goals refer to.
pub const BERTH: &str = "berth";
/// Pingora with nothing on top, as it behaves stock.
pub const BARE: &str = "bare Pingora";
/// The same with berth's thread-local connections (vendor/PATCHES.md 0003) turned on.
pub const BARE_LOCAL: &str = "bare Pingora, thread-local connections";
/// The berth binary given with `--against`.
pub const AGAINST: &str = "berth (--against build)";
const NGINX_KEEPALIVE: &str = "nginx, upstream keep-alive";
const NGINX_PROXY: &str = "nginx as nginx-proxy generates it";
const HAPROXY: &str = "HAProxy";
const CADDY: &str = "Caddy";

/// Starts every proxy, then measures them one after another.
///
/// # Errors
/// When a proxy is missing (naming the package), does not start, or wrk sees errors.
pub fn run(bench: &PeersBench) -> Result<Vec<PeerRow>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    // wrk sends the URL's host as SNI, 127.0.0.1 here; Caddy picks certificates by SNI
    // alone, so the address is on the certificate too.
    let pki = BenchPki::new(dir.path(), &["bench.test", "127.0.0.1"])?;
    let (cert, key, combined) = (&pki.cert, &pki.key, &pki.combined);

    let origin =
        Nginx::origin().map_err(|e| format!("nginx origin (apt-get install nginx): {e}"))?;
    let o = origin.addr;
    let config = pki.berth_config(o, "[log]\naccess = \"off\"\n");
    let berth = BerthProcess::start(&bench.berth, &config).map_err(|e| format!("berth: {e}"))?;
    let berth_port = berth.https.ok_or("berth has no HTTPS listener")?.port();
    let bare = Proc::bare_pingora(&bench.bare_pingora, o, cert, key, false)?;
    let bare_local = Proc::bare_pingora(&bench.bare_pingora, o, cert, key, true)?;
    let against = match &bench.against {
        Some(binary) => Some(
            BerthProcess::start(binary, &config).map_err(|e| format!("berth --against: {e}"))?,
        ),
        None => None,
    };
    let tls = Some((cert.as_path(), key.as_path()));
    let keepalive = Nginx::start_with_tls(NginxFlavour::Streaming, o, tls)
        .map_err(|e| format!("nginx: {e}"))?;
    let generated = Nginx::start_with_tls(NginxFlavour::NginxProxy, o, tls)
        .map_err(|e| format!("nginx: {e}"))?;
    let haproxy = Proc::haproxy(dir.path(), o, combined, 4096)?;
    let caddy = Proc::caddy(dir.path(), o, cert, key)?;

    let mut targets: Vec<(&'static str, u16, Vec<u32>)> = vec![
        (BERTH, berth_port, vec![berth.pid()]),
        (BARE, bare.addr.port(), vec![bare.pid()]),
        (BARE_LOCAL, bare_local.addr.port(), vec![bare_local.pid()]),
        (HAPROXY, haproxy.addr.port(), vec![haproxy.pid()]),
        (NGINX_KEEPALIVE, keepalive.addr.port(), keepalive.pids()),
        (NGINX_PROXY, generated.addr.port(), generated.pids()),
        (CADDY, caddy.addr.port(), vec![caddy.pid()]),
    ];
    if let Some(other) = &against {
        let port = other
            .https
            .ok_or("berth --against has no HTTPS listener")?
            .port();
        targets.insert(1, (AGAINST, port, vec![other.pid()]));
    }
    let mut rows = Vec::new();
    for (name, port, pids) in targets {
        let url = format!("https://127.0.0.1:{port}/");
        // A short warm-up, so that every proxy has its upstream connections open.
        crate::wrk::run(&url, 1).map_err(|e| format!("{name}: {e}"))?;
        let before = cpu_seconds(&pids)?;
        let report = crate::wrk::run(&url, bench.secs).map_err(|e| format!("{name}: {e}"))?;
        let cpu = cpu_seconds(&pids)? - before;
        let row = PeerRow {
            name,
            rps: report.rps,
            p99_ms: report.p99_ms(),
            cpu_us: cpu * 1e6 / report.requests.max(1.0),
        };
        eprintln!(
            "get_tls_keepalive_c64 {name:>34}: {:.0} req/s, p99 {:.2} ms, {:.1} µs CPU/request",
            row.rps,
            row.p99_ms.unwrap_or(f64::NAN),
            row.cpu_us
        );
        rows.push(row);
    }
    Ok(rows)
}

/// The user and system time of `pids` (every thread), in seconds.
pub(crate) fn cpu_seconds(pids: &[u32]) -> Result<f64, String> {
    pids.iter()
        .map(|&pid| {
            berth_testkit::process::cpu_seconds(pid)
                .ok_or_else(|| format!("/proc/{pid}/stat: unreadable"))
        })
        .sum()
}

/// A proxy process of the comparison; killed when dropped.
pub(crate) struct Proc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Proc {
    /// Starts `cmd` with its output in `log`, and waits until it listens on `addr`.
    pub(crate) fn spawn(
        mut cmd: Command,
        what: &str,
        package: &str,
        addr: SocketAddr,
        log: &Path,
    ) -> Result<Proc, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{what} (apt-get install {package}): {e}"))?;
        let mut proc = Proc { child, addr };
        if let Err(e) = wait_for_port(addr, Duration::from_secs(15)) {
            let _ = proc.child.kill();
            let said = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("{what} did not listen on {addr}: {e}\n{said}"));
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn bare_pingora(
        binary: &Path,
        upstream: SocketAddr,
        cert: &Path,
        key: &Path,
        thread_local: bool,
    ) -> Result<Proc, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(binary);
        cmd.arg(addr.to_string())
            .arg(upstream.to_string())
            .arg(cert)
            .arg(key);
        if thread_local {
            cmd.arg("--thread-local");
        }
        Proc::spawn(
            cmd,
            "bare-pingora",
            "(cargo build --release -p berth-benches)",
            addr,
            &cert.with_file_name(if thread_local {
                "bare-pingora-thread-local.log"
            } else {
                "bare-pingora.log"
            }),
        )
    }

    /// HAProxy as its users set it up for a registry: TLS with ALPN h2 and http/1.1, long
    /// timeouts, connections to the upstream kept alive and reused (its default), one thread
    /// per core, at most `maxconn` client connections.
    pub fn haproxy(
        dir: &Path,
        upstream: SocketAddr,
        pem: &Path,
        maxconn: usize,
    ) -> Result<Proc, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        // HAProxy wants descriptors for a server connection per client (2 × maxconn).
        let fds = 2 * maxconn + 128;
        let conf = format!(
            "global\n    maxconn {maxconn}\n    ulimit-n {fds}\n    nbthread {threads}\n    ssl-default-bind-options ssl-min-ver TLSv1.2\n\
             defaults\n    mode http\n    timeout connect 5s\n    timeout client 900s\n    timeout server 900s\n\
             \x20   timeout http-request 60s\n    option forwardfor\n    http-reuse safe\n\
             frontend edge\n    bind {addr} ssl crt {} alpn h2,http/1.1\n    http-request set-header X-Forwarded-Proto https\n\
             \x20   default_backend registry\n\
             backend registry\n    server origin {upstream}\n",
            pem.display()
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&path);
        Proc::spawn(cmd, "haproxy", "haproxy", addr, &dir.join("haproxy.log"))
    }

    /// Caddy as its users set it up: a site with its certificate files and `reverse_proxy`
    /// (which streams and keeps upstream connections alive by default); no admin endpoint,
    /// no automatic HTTPS (nothing can be fetched here).
    fn caddy(dir: &Path, upstream: SocketAddr, cert: &Path, key: &Path) -> Result<Proc, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = format!(
            "{{\n    admin off\n    auto_https off\n    default_sni bench.test\n    storage file_system {}\n}}\n\
             https://bench.test:{port} {{\n    bind 127.0.0.1\n    tls {} {}\n    reverse_proxy {upstream}\n}}\n",
            dir.join("caddy-data").display(),
            cert.display(),
            key.display(),
            port = addr.port(),
        );
        let path = dir.join("Caddyfile");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("caddy");
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&path)
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"));
        Proc::spawn(cmd, "caddy", "caddy", addr, &dir.join("caddy.log"))
    }
}

/// This process's hard limit on open files (`/proc/self/limits`), or 65536 if unreadable.
pub(crate) fn open_files_hard_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(65536)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The best peer: the highest req/s among the proxies other than berth and bare Pingora.
fn best_peer(rows: &[PeerRow]) -> Option<&PeerRow> {
    rows.iter()
        .filter(|r| ![BERTH, BARE, BARE_LOCAL, AGAINST].contains(&r.name))
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
}

fn row<'a>(rows: &'a [PeerRow], name: &str) -> Option<&'a PeerRow> {
    rows.iter().find(|r| r.name == name)
}

/// The table: one line per proxy, best req/s first, with berth's ratios to each.
pub fn markdown(rows: &[PeerRow]) -> String {
    let mut sorted: Vec<&PeerRow> = rows.iter().collect();
    sorted.sort_by(|a, b| b.rps.total_cmp(&a.rps));
    let berth = row(rows, BERTH);
    let mut out = String::from(
        "| proxy | req/s ↑ | p99 ms ↓ | CPU µs per request ↓ | berth ÷ this (req/s) | berth ÷ this (CPU) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in sorted {
        let bold = |s: String| {
            if r.name == BERTH {
                format!("**{s}**")
            } else {
                s
            }
        };
        let ratio = |f: fn(&PeerRow) -> f64| {
            berth
                .filter(|_| r.name != BERTH && f(r) > 0.0)
                .map_or("—".to_string(), |b| format!("{:.2}×", f(b) / f(r)))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            bold(r.name.to_string()),
            bold(format!("{:.0}", r.rps)),
            bold(r.p99_ms.map_or("—".to_string(), |p| format!("{p:.1}"))),
            bold(format!("{:.1}", r.cpu_us)),
            ratio(|r| r.rps),
            ratio(|r| r.cpu_us),
        );
    }
    out
}

/// The goals of the small-request path, each with whether this run met it.
pub fn goals(rows: &[PeerRow]) -> Vec<(String, bool)> {
    let (Some(berth), Some(best)) = (row(rows, BERTH), best_peer(rows)) else {
        return vec![(
            "small GETs: berth and at least one peer measured".to_string(),
            false,
        )];
    };
    let mut goals = vec![
        (
            format!(
                "small GETs: berth ≥ 0.85× the best peer ({}, {:.0} req/s): {:.2}×",
                best.name,
                best.rps,
                berth.rps / best.rps
            ),
            berth.rps >= 0.85 * best.rps,
        ),
        match (berth.p99_ms, best.p99_ms) {
            (Some(b), Some(p)) => (
                format!("small GETs: berth's p99 ≤ the best peer's ({p:.1} ms): {b:.1} ms"),
                b <= p,
            ),
            _ => ("small GETs: p99 measured".to_string(), false),
        },
    ];
    if let Some(n) = row(rows, NGINX_KEEPALIVE) {
        goals.push((
            format!(
                "small GETs: berth's CPU per request ≤ 1.3× nginx's ({:.1} µs): {:.1} µs, {:.2}×",
                n.cpu_us,
                berth.cpu_us,
                berth.cpu_us / n.cpu_us
            ),
            berth.cpu_us <= 1.3 * n.cpu_us,
        ));
    }
    // Against bare Pingora with the same patches turned on (stock when it was not measured).
    if let Some(bare) = row(rows, BARE_LOCAL).or_else(|| row(rows, BARE)) {
        let over = berth.cpu_us / bare.cpu_us - 1.0;
        goals.push((
            format!(
                "small GETs: berth's CPU per request ≤ 1.15× {}'s ({:.1} µs): {:+.0} %",
                bare.name,
                bare.cpu_us,
                over * 100.0
            ),
            over <= 0.15,
        ));
    }
    goals
}

/// How the proxies were set up, for the report.
pub fn method(secs: u64) -> String {
    format!(
        "- **Small GETs beside the peers**: wrk, 2 threads, 64 keep-alive connections over TLS, \
         {secs} s per proxy after a 1 s warm-up, all against one nginx origin (one worker) \
         answering a 3-byte body. berth: the registry profile. *bare Pingora*: a Pingora \
         `ProxyHttp` with one fixed upstream and nothing else, same Pingora, TLS library, \
         allocator (mimalloc) and server settings as berth. HAProxy: `http-reuse safe`, `option forwardfor`, one thread \
         per core. nginx: `worker_processes auto`, `proxy_http_version 1.1`, `keepalive 64` in \
         the upstream; *as nginx-proxy generates it*: the same without upstream keep-alive \
         (nginx-proxy's default). Caddy: `reverse_proxy` with its defaults. CPU per request is \
         the user + system time of the proxy's processes (nginx: master and workers) during the \
         run, from /proc, divided by the requests wrk completed."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &'static str, rps: f64, p99: f64, cpu: f64) -> PeerRow {
        PeerRow {
            name,
            rps,
            p99_ms: Some(p99),
            cpu_us: cpu,
        }
    }

    #[test]
    fn goals_compare_berth_with_the_best_peer_nginx_and_bare_pingora() {
        let rows = [
            peer(BERTH, 13000.0, 9.0, 60.0),
            peer(BARE, 20000.0, 7.0, 50.0),
            peer(HAPROXY, 16000.0, 8.0, 40.0),
            peer(NGINX_KEEPALIVE, 14000.0, 10.0, 50.0),
        ];
        let goals = goals(&rows);
        let met: Vec<bool> = goals.iter().map(|g| g.1).collect();
        // 0.81× HAProxy's req/s, above its p99, 1.2× nginx's CPU, 20 % over bare Pingora.
        assert_eq!(met, [false, false, true, false], "{goals:?}");
        assert!(goals[0].0.contains("HAProxy"), "{goals:?}");
        // 0.88× HAProxy, its p99, 1.1× nginx's CPU, 10 % over bare Pingora: all met.
        let faster = [
            peer(BERTH, 14000.0, 8.0, 55.0),
            rows[1].clone(),
            rows[2].clone(),
            rows[3].clone(),
        ];
        let met: Vec<bool> = super::goals(&faster).iter().map(|g| g.1).collect();
        assert_eq!(met, [true, true, true, true]);
        // With the patched bare Pingora measured, berth is held to it, not to stock.
        let mut patched = faster.to_vec();
        patched.push(peer(BARE_LOCAL, 24000.0, 6.0, 40.0));
        let goals = super::goals(&patched);
        assert!(!goals[3].1 && goals[3].0.contains(BARE_LOCAL), "{goals:?}");
        // Neither the patched bare Pingora nor another berth build is a peer.
        patched.push(peer(AGAINST, 30000.0, 5.0, 30.0));
        assert!(super::goals(&patched)[0].0.contains("HAProxy"));
        let table = markdown(&rows);
        assert!(table.contains("| **berth** | **13000** |"), "{table}");
        assert!(
            table.contains("| HAProxy | 16000 | 8.0 | 40.0 | 0.81× | 1.50× |"),
            "{table}"
        );
    }
}
