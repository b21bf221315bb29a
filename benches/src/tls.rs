//! TLS benchmarks, berth vs nginx (streaming config, TLS, HTTP/2) vs direct plain, one run:
//! - 1 GiB uploads over TLS with HTTP/1.1 and HTTP/2 (h2load as the client: curl's HTTP/2
//!   uploads could not drive more than a few connections here), at each concurrency (small
//!   GETs are measured beside every peer, in `peers`);
//! - certificate reload latency: rename → first handshake that gets the new certificate
//!   (berth watches its directory; nginx is sent SIGHUP, as acme-companion does).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_testkit::process::PeakRss;
use berth_testkit::tls::{install, replace, Pem, TestCa};
use berth_testkit::{BerthProcess, Origin};

use crate::pki::BenchPki;
use crate::propagation::percentile;
use crate::report::{Against, Better, Row};
use berth_testkit::nginx::{Nginx, NginxFlavour};

/// What to run.
pub struct TlsBench {
    /// MiB per upload.
    pub mib: u64,
    /// Concurrency levels for uploads.
    pub concurrency: Vec<usize>,
    /// Repetitions per upload scenario at concurrency 1 (median reported).
    pub runs: usize,
    /// Repetitions per upload scenario above concurrency 1.
    pub concurrent_runs: usize,
    /// Uploads sent at once over one HTTP/2 connection, as `docker push` sends layers; measured
    /// against as many HTTP/1.1 connections.
    pub streams: usize,
    /// Certificate renewals timed per server.
    pub reloads: usize,
    /// The berth binary.
    pub berth: PathBuf,
}

struct Target {
    name: &'static str,
    url_base: String,
    pids: Vec<u32>,
}

const UPLOADS: &str = "TLS uploads to a full-read sink (direct is plain HTTP/1.1)";
const RELOAD: &str = "Certificate reload";

/// Runs everything and returns the rows.
///
/// # Errors
/// When a server does not start or an upload does not arrive complete.
pub fn run(bench: &TlsBench) -> Result<Vec<Row>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = BenchPki::new(dir.path(), &["bench.test"])?;
    let (ca, certs, cert_file, key_file) = (&pki.ca, &pki.certs, &pki.cert, &pki.key);
    let body = dir.path().join("body");
    std::fs::File::create(&body)
        .and_then(|f| f.set_len(bench.mib << 20))
        .map_err(|e| e.to_string())?;

    let sink = Origin::start("sink");
    let config = pki.berth_config(sink.addr, "");
    let berth = BerthProcess::start(&bench.berth, &config).map_err(|e| e.to_string())?;
    let berth_tls = berth.https.ok_or("berth has no HTTPS listener")?;
    let nginx = Nginx::start_with_tls(
        NginxFlavour::Streaming,
        sink.addr,
        Some((cert_file, key_file)),
    )
    .map_err(|e| e.to_string())?;

    let direct = Target {
        name: "direct (plain)",
        url_base: format!("http://bench.test:{}", sink.addr.port()),
        pids: Vec::new(),
    };
    let berth_t = Target {
        name: "berth",
        url_base: format!("https://bench.test:{}", berth_tls.port()),
        pids: vec![berth.pid()],
    };
    let nginx_t = Target {
        name: "nginx",
        url_base: format!("https://bench.test:{}", nginx.addr.port()),
        pids: nginx.pids(),
    };

    let mut rows = Vec::new();
    let len = bench.mib << 20;
    for &c in &bench.concurrency {
        let runs = if c == 1 {
            bench.runs
        } else {
            bench.concurrent_runs
        };
        let d = median(runs, || upload(&direct, &sink, &body, Mode::H1(c), len))?;
        let mut h1_berth = 0.0;
        for (proto, h2) in [("h1", false), ("h2", true)] {
            let mode = if h2 { Mode::H2(c, 1) } else { Mode::H1(c) };
            let b = median(runs, || upload(&berth_t, &sink, &body, mode, len))?;
            let n = median(runs, || upload(&nginx_t, &sink, &body, mode, len))?;
            let row = upload_row(
                format!("upload_tls_{proto}_cl_c{c}_{}mib", bench.mib),
                d,
                b,
                n,
            );
            rows.push(if proto == "h1" {
                h1_berth = b.0;
                row.goal(Against::NginxStreaming, 1.3)
            } else {
                let met = b.0 >= 0.9 * h1_berth;
                row.goal_text(format!("≥ 0.90× berth h1 ({h1_berth:.0})"), met)
            });
        }
    }

    if bench.streams > 1 {
        rows.extend(multiplexed(
            bench,
            &[&direct, &berth_t, &nginx_t],
            &sink,
            &body,
        )?);
    }

    let mut berth_reloads = reload_latency(ca, berth_tls, bench.reloads, |pem| {
        install(certs, "bench.test", pem).map_err(|e| e.to_string())
    })?;
    let mut nginx_reloads = reload_latency(ca, nginx.addr, bench.reloads, |pem| {
        replace(key_file, pem.key.as_bytes())
            .and_then(|()| replace(cert_file, pem.cert.as_bytes()))
            .map_err(|e| e.to_string())?;
        nginx.reload()
    })?;
    berth_reloads.sort();
    nginx_reloads.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (name, pick) in [("p50", 0.5), ("max", 1.0)] {
        let b = ms(percentile(&berth_reloads, pick));
        let n = ms(percentile(&nginx_reloads, pick));
        let row = Row {
            section: RELOAD,
            scenario: format!("cert_reload_{name}"),
            unit: "ms",
            better: Better::Lower,
            berth: b,
            nginx_streaming: Some(n),
            ..Row::default()
        };
        rows.push(if name == "max" {
            row.goal_text("≤ 1000 ms".to_string(), b <= 1000.0)
        } else {
            row
        });
    }
    Ok(rows)
}

/// `streams` uploads at once over one HTTP/2 connection (as `docker push` sends layers)
/// against as many HTTP/1.1 connections; the goal is the HTTP/2 figure at 0.9× of berth's
/// own HTTP/1.1 one.
fn multiplexed(
    bench: &TlsBench,
    [direct, berth, nginx]: &[&Target; 3],
    sink: &Origin,
    body: &Path,
) -> Result<Vec<Row>, String> {
    let (n, len, runs) = (bench.streams, bench.mib << 20, bench.concurrent_runs);
    let d = median(runs, || upload(direct, sink, body, Mode::H1(n), len))?;
    let mut rows = Vec::new();
    let mut h1_berth = 0.0;
    for (scenario, mode) in [
        (
            format!("upload_tls_h1_{n}conns_{}mib", bench.mib),
            Mode::H1(n),
        ),
        (
            format!("upload_tls_h2_1conn_{n}streams_{}mib", bench.mib),
            Mode::H2(1, n),
        ),
    ] {
        let b = median(runs, || upload(berth, sink, body, mode, len))?;
        let ng = median(runs, || upload(nginx, sink, body, mode, len))?;
        let row = upload_row(scenario, d, b, ng);
        rows.push(match mode {
            Mode::H1(_) => {
                h1_berth = b.0;
                row
            }
            Mode::H2(..) => row.goal_text(
                format!("≥ 0.90× berth h1, {n} connections ({h1_berth:.0})"),
                b.0 >= 0.9 * h1_berth,
            ),
        });
    }
    Ok(rows)
}

/// One upload scenario's row from the (MB/s, peak RSS KiB) of direct, berth and nginx,
/// printed as it is measured.
fn upload_row(scenario: String, direct: (f64, u64), berth: (f64, u64), nginx: (f64, u64)) -> Row {
    eprintln!(
        "{scenario}: direct {:.0}, berth {:.0}, nginx {:.0} MB/s",
        direct.0, berth.0, nginx.0
    );
    Row {
        section: UPLOADS,
        scenario,
        unit: "MB/s",
        direct: Some(direct.0),
        berth: berth.0,
        nginx_streaming: Some(nginx.0),
        berth_rss_kib: Some(berth.1),
        nginx_rss_kib: Some(nginx.1),
        chart: true,
        ..Row::default()
    }
}

/// How h2load sends the uploads.
#[derive(Clone, Copy)]
enum Mode {
    /// HTTP/1.1, this many connections, one upload each.
    H1(usize),
    /// HTTP/2, this many connections with this many concurrent uploads on each.
    H2(usize, usize),
}

/// Median throughput and the largest peak RSS over `runs` runs.
fn median(
    runs: usize,
    mut f: impl FnMut() -> Result<(f64, u64), String>,
) -> Result<(f64, u64), String> {
    let mut samples = Vec::new();
    for _ in 0..runs.max(1) {
        samples.push(f()?);
    }
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((samples[samples.len() / 2].0, peak))
}

/// Concurrent uploads of `body` with h2load (one process; HTTP/1.1 or HTTP/2, see [`Mode`]);
/// aggregate MB/s and the target's peak RSS. Every upload must have been answered by the sink,
/// which answers only once it has read the whole body, and no body may have broken off on the
/// way.
fn upload(
    t: &Target,
    sink: &Origin,
    body: &Path,
    mode: Mode,
    len: u64,
) -> Result<(f64, u64), String> {
    let (hits, broken) = (sink.hits(), sink.broken_bodies());
    let port = t.url_base.rsplit(':').next().unwrap_or("0");
    let (conns, streams) = match mode {
        Mode::H1(conns) => (conns, 1),
        Mode::H2(conns, streams) => (conns, streams),
    };
    let c = conns * streams;
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-n",
        &c.to_string(),
        "-c",
        &conns.to_string(),
        "-m",
        &streams.to_string(),
        "-t",
        &conns.clamp(1, 2).to_string(),
    ]);
    if matches!(mode, Mode::H1(_)) {
        cmd.arg("--h1");
    }
    cmd.arg("-d")
        .arg(body)
        .arg(format!("--connect-to=127.0.0.1:{port}"))
        .arg(format!("{}/v2/bench/blobs/uploads/", t.url_base))
        .stdin(Stdio::null());
    let sampler = PeakRss::start(t.pids.clone());
    let started = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("h2load (apt-get install nghttp2-client): {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    let peak = sampler.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    // "requests: 16 total, 16 started, 16 done, 16 succeeded, 0 failed, 0 errored, 0 timeout"
    let succeeded = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|f| f.trim_end().ends_with("succeeded"))
                .and_then(|f| f.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
        });
    let answered = sink.hits() - hits;
    let broke = sink.broken_bodies() - broken;
    if succeeded != Some(c) || answered != c as u64 || broke != 0 {
        return Err(format!(
            "{}: {c} uploads of {len} bytes: h2load says {succeeded:?} succeeded, the sink answered \
             {answered}, {broke} bodies broke off\n{text}{}",
            t.name,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(((len * c as u64) as f64 / secs / 1e6, peak))
}

/// Renews the certificate `n` times (`renew` puts it in place) and measures how long until a
/// new handshake gets it.
fn reload_latency(
    ca: &TestCa,
    addr: SocketAddr,
    n: usize,
    mut renew: impl FnMut(&Pem) -> Result<(), String>,
) -> Result<Vec<Duration>, String> {
    let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    // A resumed session carries no certificate: every probe must be a full handshake.
    client.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(client);
    let mut latencies = Vec::new();
    for i in 0..n {
        let marker = format!("r{i}.bench.test");
        let pem = ca.issue(&["bench.test", &marker]);
        let started = Instant::now();
        renew(&pem)?;
        loop {
            if served_sans(&config, addr)?.iter().any(|s| s == &marker) {
                latencies.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the renewed certificate was not served within 10 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(latencies)
}

fn served_sans(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<Vec<String>, String> {
    let name = rustls::pki_types::ServerName::try_from("bench.test").map_err(|e| e.to_string())?;
    let mut conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n");
    let _ = tls.read(&mut [0u8; 1]);
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Ok(Vec::new());
    };
    let (_, x509) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| e.to_string())?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for n in &ext.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                sans.push(d.to_string());
            }
        }
    }
    Ok(sans)
}

/// Accepts any server certificate: the benchmark only reads which one was served.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
