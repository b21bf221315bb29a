//! Response compression, one run: the same files fetched through berth (`compress`, its
//! default), nginx with `gzip on` (level 5, the usual snippet's) and Caddy with `encode` (its
//! `encode zstd gzip`, at their default levels), each in front of the same nginx serving the files. For each
//! coding a proxy offers, 4 clients (curl, HTTP/1.1, keep-alive) fetch every file
//! `fetches` times asking for that coding alone; the proxy's CPU time (user + system, its
//! processes only, from /proc) is divided by the megabytes it compressed, and the ratio is
//! the bytes it was given over the bytes it sent. `identity` is the same traffic with no
//! coding asked for: what proxying alone costs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testkit::free_port;
use berth_testkit::nginx::Nginx;
use berth_testkit::BerthProcess;

use crate::peers::{cpu_seconds, Proc};

/// How the figures were taken, for the report.
pub const METHOD: &str = "Response compression (`compression`): two files of about 2 MiB each \
(English text as an HTML page, generated JSON) served by nginx, fetched through each proxy by \
curl (HTTP/1.1, 4 transfers at once, keep-alive) asking for one coding at a time \
(`Accept-Encoding: gzip`, ...). The ratio is the bytes the proxy was given over the bytes it \
sent; the CPU time is the proxy's own (user + system, every process and thread) over the \
megabytes it was given. `identity` asks for no coding: what proxying alone costs. nginx is \
set up as the usual snippet has it (`gzip on; gzip_comp_level 5; gzip_types ...`), Caddy with \
`encode zstd gzip` (its documented form, default levels); neither offers br without a module.";

/// What to run.
pub struct CompressionBench {
    /// Fetches of each file per proxy and coding.
    pub fetches: usize,
    /// The berth binary.
    pub berth: PathBuf,
}

/// One proxy and coding's figures.
#[derive(Debug, Clone)]
pub struct CompressionRow {
    /// Which proxy.
    pub proxy: &'static str,
    /// `identity`, `gzip`, `br` or `zstd`.
    pub coding: &'static str,
    /// Megabytes the proxy received from the origin.
    pub mb_in: f64,
    /// Uncompressed bytes over the bytes sent to the clients.
    pub ratio: f64,
    /// CPU milliseconds per megabyte received.
    pub cpu_ms_per_mb: f64,
}

const BERTH: &str = "berth";
const NGINX: &str = "nginx, gzip on (level 5)";
const CADDY: &str = "Caddy, encode";

/// The corpus: real English text (every `copyright` file under /usr/share/doc, as an HTML
/// page) and generated JSON, about 2 MiB each.
fn corpus(dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut text = String::from("<!doctype html>\n<html><body>\n");
    let mut docs: Vec<PathBuf> = std::fs::read_dir("/usr/share/doc")
        .map_err(|e| format!("/usr/share/doc: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("copyright")))
        .filter(|p| p.is_file())
        .collect();
    docs.sort();
    for doc in docs {
        if text.len() > 2 << 20 {
            break;
        }
        let body = std::fs::read_to_string(&doc).unwrap_or_default();
        for para in body.split("\n\n") {
            let _ = writeln!(text, "<p>{}</p>", para.replace('<', "&lt;"));
        }
    }
    text.push_str("</body></html>\n");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut json = String::from("[");
    let mut i = 0u64;
    while json.len() < 2 << 20 {
        let r = next();
        let _ = write!(
            json,
            "{}{{\"id\":{i},\"name\":\"item-{:x}\",\"price\":{}.{:02},\"in_stock\":{},\"tags\":[\"{}\",\"{}\"]}}",
            if i == 0 { "" } else { "," },
            r >> 40,
            r % 1000,
            (r >> 10) % 100,
            r % 3 == 0,
            ["red", "green", "blue", "large", "small"][(r % 5) as usize],
            ["sale", "new", "classic"][((r >> 8) % 3) as usize],
        );
        i += 1;
    }
    json.push(']');
    let files = [("page.html", text), ("data.json", json)];
    files
        .iter()
        .map(|(name, body)| {
            std::fs::write(dir.join(name), body).map_err(|e| format!("{name}: {e}"))?;
            Ok((format!("/{name}"), body.len() as u64))
        })
        .collect()
}

/// Fetches every file `fetches` times, 4 at a time, asking for `coding`; the bytes received.
fn fetch_all(
    addr: SocketAddr,
    host: &str,
    files: &[(String, u64)],
    fetches: usize,
    coding: &str,
) -> Result<u64, String> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--parallel",
        "--parallel-max",
        "4",
        "-w",
        "%{http_code} %{size_download}\n",
    ])
    .args(["-H", &format!("Host: {host}")])
    .args(["-H", &format!("Accept-Encoding: {coding}")]);
    for _ in 0..fetches {
        for (path, _) in files {
            cmd.args(["-o", "/dev/null"])
                .arg(format!("http://{addr}{path}"));
        }
    }
    let out = cmd.output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut total = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (code, size) = line.split_once(' ').unwrap_or(("", ""));
        if code != "200" {
            return Err(format!("{host} answered {code} asking for {coding}"));
        }
        total += size.parse::<u64>().map_err(|e| format!("{line}: {e}"))?;
    }
    Ok(total)
}

/// Runs the comparison.
///
/// # Errors
/// When a proxy does not start or a fetch fails.
pub fn run(bench: &CompressionBench) -> Result<Vec<CompressionRow>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("www");
    std::fs::create_dir(&root).map_err(|e| e.to_string())?;
    let files = corpus(&root)?;
    let origin = Nginx::static_files(&root, "")
        .map_err(|e| format!("nginx (apt-get install nginx-light): {e}"))?;
    let berth = BerthProcess::start(
        &bench.berth,
        &format!(
            "[listen]\nhttp = \"{{http}}\"\n\n[docker]\nenabled = false\n\n[[route]]\nhost = \"bench.test\"\nupstreams = [\"{}\"]\n",
            origin.addr
        ),
    )
    .map_err(|e| format!("berth: {e}"))?;
    let types = "text/plain text/css application/json application/javascript text/xml application/xml image/svg+xml";
    let nginx = Nginx::start_raw(
        "worker_processes auto;",
        &format!("upstream origin {{ server {}; keepalive 16; }}\n    gzip on;\n    gzip_comp_level 5;\n    gzip_min_length 256;\n    gzip_proxied any;\n    gzip_vary on;\n    gzip_types {types};\n", origin.addr),
        "proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        location / { proxy_pass http://origin; }",
        None,
        1024,
    )
    .map_err(|e| format!("nginx: {e}"))?;
    let caddy_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n    admin off\n    auto_https off\n    storage file_system {}\n}}\nhttp://bench.test:{} {{\n    bind 127.0.0.1\n    encode zstd gzip\n    reverse_proxy {}\n}}\n",
            dir.path().join("caddy-data").display(),
            caddy_addr.port(),
            origin.addr
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = Command::new("caddy");
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env("XDG_CONFIG_HOME", dir.path().join("xdg-config"));
    let caddy = Proc::spawn(
        cmd,
        "caddy",
        "caddy",
        caddy_addr,
        &dir.path().join("caddy.log"),
    )?;

    let proxies: [(&'static str, SocketAddr, Vec<u32>, &[&'static str]); 3] = [
        (
            BERTH,
            berth.http,
            vec![berth.pid()],
            &["identity", "gzip", "br", "zstd"],
        ),
        (NGINX, nginx.addr, nginx.pids(), &["identity", "gzip"]),
        (
            CADDY,
            caddy.addr,
            vec![caddy.pid()],
            &["identity", "gzip", "zstd"],
        ),
    ];
    let plain: u64 = files.iter().map(|(_, n)| n).sum::<u64>() * bench.fetches as u64;
    let mut rows = Vec::new();
    for (proxy, addr, pids, codings) in &proxies {
        // Warm: connections to the origin, the proxy's caches and allocator.
        fetch_all(*addr, "bench.test", &files, 1, "gzip")?;
        for coding in *codings {
            let before = cpu_seconds(pids)?;
            let sent = fetch_all(*addr, "bench.test", &files, bench.fetches, coding)?;
            let spent = cpu_seconds(pids)? - before;
            let mb = plain as f64 / 1e6;
            // A proxy that was asked for a coding and sent the bytes as they were is set up
            // wrong, and its figures would compare nothing.
            if *coding != "identity" && plain < sent * 3 / 2 {
                return Err(format!("{proxy} did not compress with {coding}"));
            }
            rows.push(CompressionRow {
                proxy,
                coding,
                mb_in: mb,
                ratio: plain as f64 / sent.max(1) as f64,
                cpu_ms_per_mb: spent * 1000.0 / mb,
            });
        }
    }
    Ok(rows)
}

/// The table: one line per proxy and coding.
pub fn markdown(rows: &[CompressionRow]) -> String {
    let mut out = String::from(
        "| proxy | coding | ratio ↑ | CPU ms per MB ↓ | MB compressed |\n|---|---|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.0} |",
            r.proxy, r.coding, r.ratio, r.cpu_ms_per_mb, r.mb_in
        );
    }
    out
}
