//! Downloads over TLS, one run: a large response from an origin that streams it (testkit's
//! `downloads`), fetched direct (plain HTTP/1.1), through berth and through nginx (streaming
//! config), with HTTP/1.1 and HTTP/2 (curl, whose HTTP/2 window is large) and HTTP/2 with a
//! 64 KiB stream window (h2load `-w 16`), which makes every write wait on the client's
//! window. With `--against`, a second berth binary is measured beside the first, interleaved:
//! how a Pingora patch is judged (vendor/PATCHES.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use berth_testkit::downloads::Downloads;
use berth_testkit::BerthProcess;

use crate::pki::BenchPki;
use berth_testkit::nginx::{Nginx, NginxFlavour};

/// What to run.
pub struct DownloadBench {
    /// MiB per download.
    pub mib: u64,
    /// Downloads per scenario and target (median reported).
    pub runs: usize,
    /// The berth binary.
    pub berth: PathBuf,
    /// Another berth binary, measured beside the first.
    pub against: Option<PathBuf>,
}

/// How a download is fetched.
#[derive(Clone, Copy)]
enum Client {
    CurlH1,
    CurlH2,
    H2loadWindow64k,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::CurlH1 => "download_tls_h1",
            Client::CurlH2 => "download_tls_h2",
            Client::H2loadWindow64k => "download_tls_h2_window64k",
        }
    }
}

/// Fetches `url` from 127.0.0.1 at `port` once; MB/s.
fn fetch(
    client: Client,
    url: &str,
    port: u16,
    ca: &std::path::Path,
    len: u64,
) -> Result<f64, String> {
    let started = Instant::now();
    let out = match client {
        Client::CurlH1 | Client::CurlH2 => Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}"])
            .arg(if matches!(client, Client::CurlH2) {
                "--http2"
            } else {
                "--http1.1"
            })
            .arg("--cacert")
            .arg(ca)
            .args(["--resolve", &format!("bench.test:{port}:127.0.0.1")])
            .arg(url)
            .output(),
        // h2load does not check the certificate.
        Client::H2loadWindow64k => Command::new("h2load")
            .args(["-n1", "-c1", "-m1", "-w16"])
            .arg(format!("--connect-to=127.0.0.1:{port}"))
            .arg(url)
            .output(),
    }
    .map_err(|e| {
        format!(
            "{}: {e} (apt-get install curl nghttp2-client)",
            client.name()
        )
    })?;
    let secs = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let complete = match client {
        Client::H2loadWindow64k => text.contains("1 succeeded"),
        _ => text.trim() == len.to_string(),
    };
    if !out.status.success() || !complete {
        return Err(format!(
            "{} {url}: incomplete: {text} {}",
            client.name(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(len as f64 / 1e6 / secs)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the downloads and returns a markdown table.
///
/// # Errors
/// When a server does not start or a download does not arrive whole.
pub fn run(bench: &DownloadBench) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = BenchPki::new(dir.path(), &["bench.test"])?;
    let origin = Downloads::start();
    let config = pki.berth_config(origin.addr, "");
    let start = |binary: &PathBuf| -> Result<(BerthProcess, SocketAddr), String> {
        let b = BerthProcess::start(binary, &config).map_err(|e| e.to_string())?;
        let https = b.https.ok_or("berth has no HTTPS listener")?;
        Ok((b, https))
    };
    let (_berth, berth_tls) = start(&bench.berth)?;
    let other = bench.against.as_ref().map(start).transpose()?;
    let nginx = Nginx::start_with_tls(
        NginxFlavour::Streaming,
        origin.addr,
        Some((&pki.cert, &pki.key)),
    )
    .map_err(|e| e.to_string())?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.pem()).map_err(|e| e.to_string())?;
    let len = bench.mib << 20;
    let url = |addr: SocketAddr, tls: bool| {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://bench.test:{}/{len}", addr.port())
    };
    let mut table = format!(
        "| scenario ({} MiB, MB/s, median of {}) | direct (plain h1) | berth | {}nginx (streaming) |\n|---|---|---|{}---|\n",
        bench.mib,
        bench.runs,
        if other.is_some() { "berth (against) | " } else { "" },
        if other.is_some() { "---|" } else { "" },
    );
    for client in [Client::CurlH1, Client::CurlH2, Client::H2loadWindow64k] {
        let (mut d, mut b, mut o, mut n) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..bench.runs.max(1) {
            let o_addr = origin.addr;
            d.push(fetch(
                Client::CurlH1,
                &url(o_addr, false),
                o_addr.port(),
                &ca,
                len,
            )?);
            b.push(fetch(
                client,
                &url(berth_tls, true),
                berth_tls.port(),
                &ca,
                len,
            )?);
            if let Some((_, addr)) = &other {
                o.push(fetch(client, &url(*addr, true), addr.port(), &ca, len)?);
            }
            n.push(fetch(
                client,
                &url(nginx.addr, true),
                nginx.addr.port(),
                &ca,
                len,
            )?);
        }
        let against = if other.is_some() {
            format!("{:.0} | ", median(o))
        } else {
            String::new()
        };
        table.push_str(&format!(
            "| `{}_{}mib` | {:.0} | {:.0} | {against}{:.0} |\n",
            client.name(),
            bench.mib,
            median(d),
            median(b),
            median(n)
        ));
    }
    Ok(table)
}
