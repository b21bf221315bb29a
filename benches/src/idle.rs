//! Idle keep-alive TLS connections, berth beside nginx and HAProxy in one run: N clients
//! connect over TLS (HTTP/1.1, then HTTP/2), each makes one small GET and then holds its
//! connection open without a word, as Docker daemons, CI runners and browsers keep theirs.
//! Measured: the proxy's resident memory before, with all N held (kB per connection), and
//! `settle` after the clients closed (whether the memory was given back).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_testkit::process::memory_kib;
use berth_testkit::BerthProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::peers::Proc;
use crate::pki::BenchPki;
use berth_testkit::nginx::Nginx;

/// What to run.
pub struct IdleBench {
    /// Connections held at once.
    pub conns: usize,
    /// How long after the clients closed the memory is read again.
    pub settle: Duration,
    /// The berth binary.
    pub berth: PathBuf,
}

/// One proxy and protocol.
#[derive(Debug, Clone)]
pub struct IdleRow {
    /// Which proxy.
    pub name: &'static str,
    /// `HTTP/1.1` or `HTTP/2`.
    pub proto: &'static str,
    /// Connections held.
    pub conns: usize,
    /// RSS before the clients connected, KiB.
    pub before_kib: u64,
    /// RSS with every connection open and idle, KiB.
    pub held_kib: u64,
    /// RSS `settle` after the clients closed, KiB.
    pub after_kib: u64,
}

impl IdleRow {
    /// What one idle connection costs, kB (10^3 bytes); negative if the RSS fell meanwhile.
    pub fn kb_per_conn(&self) -> f64 {
        (self.held_kib as f64 - self.before_kib as f64) * 1.024 / self.conns.max(1) as f64
    }
}

/// The names the table and goals refer to.
pub const BERTH: &str = "berth";
const NGINX: &str = "nginx";
const HAPROXY: &str = "HAProxy";
const H1: &str = "HTTP/1.1";
const H2: &str = "HTTP/2";

/// Starts the proxies, then holds the connections against each in turn.
///
/// # Errors
/// When a proxy does not start, or a connection or its request fails.
pub fn run(bench: &IdleBench) -> Result<Vec<IdleRow>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = BenchPki::new(dir.path(), &["bench.test"])?;
    let (cert, key, combined) = (&pki.cert, &pki.key, &pki.combined);

    let origin =
        Nginx::origin().map_err(|e| format!("nginx origin (apt-get install nginx): {e}"))?;
    let o = origin.addr;
    let config = pki.berth_config(
        o,
        &format!(
            "[log]\naccess = \"off\"\n[limits]\nmax-connections = {}\n",
            bench.conns + 64
        ),
    );
    let client = Arc::new(pki.ca.client_config());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    // Fresh processes for each protocol, so that neither starts with the other's memory.
    for proto in [H1, H2] {
        let berth =
            BerthProcess::start(&bench.berth, &config).map_err(|e| format!("berth: {e}"))?;
        let berth_addr = berth.https.ok_or("berth has no HTTPS listener")?;
        let nginx = Nginx::start_for_connections(o, cert, key, bench.conns)
            .map_err(|e| format!("nginx: {e}"))?;
        // HAProxy refuses to start unless it has descriptors for a server connection per
        // client (2 × maxconn + some): under a lower limit it holds fewer connections.
        let haproxy_conns = bench.conns.min(
            (crate::peers::open_files_hard_limit().saturating_sub(256) / 2).saturating_sub(64),
        );
        let haproxy = Proc::haproxy(dir.path(), o, combined, haproxy_conns + 64)?;
        for (name, addr, pids, conns) in [
            (BERTH, berth_addr, vec![berth.pid()], bench.conns),
            (NGINX, nginx.addr, nginx.pids(), bench.conns),
            (HAPROXY, haproxy.addr, vec![haproxy.pid()], haproxy_conns),
        ] {
            let before_kib = rss_kib(&pids)?;
            let held = runtime.block_on(open_all(addr, proto, conns, client.clone()))?;
            // Let the proxy finish whatever it does after a response before reading.
            std::thread::sleep(Duration::from_secs(1));
            let held_kib = rss_kib(&pids)?;
            let open = established_to(addr.port())?;
            if open < conns {
                return Err(format!(
                    "{name} {proto}: only {open} of {conns} connections were still open when \
                     its memory was read"
                ));
            }
            drop(held);
            std::thread::sleep(bench.settle);
            let row = IdleRow {
                name,
                proto,
                conns,
                before_kib,
                held_kib,
                after_kib: rss_kib(&pids)?,
            };
            eprintln!(
                "idle_tls {name:>8} {proto}: {} connections, {:.1} kB each; RSS {} → {} → {} KiB",
                row.conns,
                row.kb_per_conn(),
                row.before_kib,
                row.held_kib,
                row.after_kib
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Established TCP connections whose local port is `port` (the proxy's side), from
/// /proc/net/tcp.
fn established_to(port: u16) -> Result<usize, String> {
    let table =
        std::fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
    let local = format!(":{port:04X}");
    Ok(table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count())
}

fn rss_kib(pids: &[u32]) -> Result<u64, String> {
    pids.iter()
        .map(|&pid| {
            memory_kib(pid)
                .map(|(rss, _)| rss)
                .ok_or_else(|| format!("/proc/{pid}/status: unreadable"))
        })
        .sum()
}

/// One idle client: whatever keeps its connection open.
enum Held {
    H1 {
        _tls: Box<tokio_rustls::client::TlsStream<TcpStream>>,
    },
    H2 {
        _send: h2::client::SendRequest<bytes::Bytes>,
        driver: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::H2 { driver, .. } = self {
            driver.abort();
        }
    }
}

/// Opens `n` connections (at most 256 handshakes at a time), each with one GET answered.
async fn open_all(
    addr: SocketAddr,
    proto: &'static str,
    n: usize,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<Held>, String> {
    let mut h1 = (*config).clone();
    h1.alpn_protocols = vec![if proto == H2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(h1));
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (connector, gate) = (connector.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            open(addr, proto, &connector).await
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        held.push(done.map_err(|e| e.to_string())??);
    }
    Ok(held)
}

async fn open(
    addr: SocketAddr,
    proto: &'static str,
    connector: &tokio_rustls::TlsConnector,
) -> Result<Held, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("bench.test").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    if proto == H1 {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\nok\n") {
            let n = tls.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!(
                    "{addr} closed before answering: {}",
                    String::from_utf8_lossy(&answer)
                ));
            }
            answer.extend_from_slice(&buf[..n]);
        }
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(format!("{addr}: {}", String::from_utf8_lossy(&answer)));
        }
        return Ok(Held::H1 {
            _tls: Box::new(tls),
        });
    }
    let (mut send, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| format!("HTTP/2 to {addr}: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = http::Request::get("https://bench.test/")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, _) = send
        .send_request(request, true)
        .map_err(|e| format!("HTTP/2 request to {addr}: {e}"))?;
    let response = response
        .await
        .map_err(|e| format!("HTTP/2 answer from {addr}: {e}"))?;
    if response.status() != 200 {
        return Err(format!("{addr}: HTTP/2 status {}", response.status()));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(Held::H2 {
        _send: send,
        driver,
    })
}

/// The table: one line per proxy and protocol.
pub fn markdown(rows: &[IdleRow], settle: Duration) -> String {
    let mut out = format!(
        "| proxy | protocol | connections | kB per idle connection ↓ | RSS before | RSS with all open | RSS {} s after they closed |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
        settle.as_secs()
    );
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    for r in rows {
        let name = if r.name == BERTH {
            format!("**{}**", r.name)
        } else {
            r.name.to_string()
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {:.1} | {} | {} | {} |\n",
            r.proto,
            r.conns,
            r.kb_per_conn(),
            mib(r.before_kib),
            mib(r.held_kib),
            mib(r.after_kib)
        ));
    }
    out
}

/// The goals, one line each, for berth's rows.
pub fn goals(rows: &[IdleRow]) -> Vec<(String, bool)> {
    let mut goals = Vec::new();
    for r in rows.iter().filter(|r| r.name == BERTH) {
        let kb = r.kb_per_conn();
        goals.push((
            format!(
                "idle TLS connections, {}: ≤ 32 kB each: {kb:.1} kB",
                r.proto
            ),
            kb <= 32.0,
        ));
        // 10,000 connections at this rate on top of the starting RSS (320 MiB is 10,000 ×
        // 32 kB and about 15 MiB of the process itself).
        let ten_k_mib = (r.before_kib as f64 * 1.024 + kb * 10_000.0) / 1.024 / 1024.0;
        goals.push((
            format!(
                "10,000 idle TLS connections, {}, under 320 MiB: {ten_k_mib:.0} MiB",
                r.proto
            ),
            ten_k_mib < 320.0,
        ));
        let back = r.after_kib as f64 / r.before_kib.max(1) as f64;
        goals.push((
            format!(
                "RSS after the {} clients closed within 20 % of before: {:+.0} %",
                r.proto,
                (back - 1.0) * 100.0
            ),
            back <= 1.2,
        ));
    }
    goals
}

/// How the idle connections are measured, for the report's method notes.
pub fn method(conns: usize, settle: Duration) -> String {
    format!(
        "{conns} TLS connections per proxy and protocol, opened 256 at a time by one client \
         (tokio, rustls, the h2 crate), each making one small GET and then held open without a \
         word; kB per connection is the growth of the proxy's RSS (nginx: master and workers \
         summed) divided by the connections; RSS is read again {} s after the client closed \
         them, and every connection is checked to be still open when the memory is read. Each \
         protocol starts fresh processes. berth as the other benches run it; nginx with the \
         streaming configuration, `ssl http2`, its connection arrays (about 0.4 kB per \
         `worker_connections` and worker) allocated at start and so not counted; HAProxy as \
         in the small-GET comparison with `maxconn` raised, and fewer connections where the \
         file-descriptor limit is below the two per client it insists on.",
        settle.as_secs()
    )
}
