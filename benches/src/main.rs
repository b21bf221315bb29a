//! berth's benchmark harness: upload throughput and proxy memory, berth vs direct vs nginx,
//! measured side by side in one run on this machine.
//!
//! ```text
//! cargo build --release --bin berth && cargo run --release -p berth-benches -- upload
//! ```
//! writes `benches/results/upload-plain.md` and prints the table.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use berth_testkit::client::{send, Body, Request};
use berth_testkit::process::PeakRss;
use berth_testkit::{BerthProcess, Origin};

mod nginx;
mod overhead;
mod propagation;
mod tls;
mod wrk;

use nginx::{Nginx, NginxFlavour};

#[derive(Debug, Parser)]
#[command(about = "berth benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// What every upload benchmark takes.
#[derive(Debug, clap::Args)]
struct UploadArgs {
    /// Body size per upload, MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Repetitions per upload scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The berth binary (release build); default target/release/berth.
    #[arg(long)]
    berth: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Plain-HTTP/1.1 upload throughput to a full-read sink: direct, berth, nginx.
    Upload {
        #[command(flatten)]
        args: UploadArgs,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/upload-plain.md")]
        out: PathBuf,
    },
    /// Small GETs with metrics and access log on vs off.
    Overhead {
        /// Alternating pairs of runs (the median of each side is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds of wrk per run.
        #[arg(long, default_value_t = 8)]
        secs: u64,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/overhead.md")]
        out: PathBuf,
    },
    /// Docker route propagation: `docker run` → first 200, `docker stop` → 503.
    Propagation {
        /// Containers started and stopped, one after another.
        #[arg(long, default_value_t = 50)]
        containers: usize,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/propagation.md")]
        out: PathBuf,
    },
    /// TLS: uploads over h1 and h2, small GETs (wrk), certificate reload latency.
    Tls {
        #[command(flatten)]
        args: UploadArgs,
        /// Seconds of wrk per target.
        #[arg(long, default_value_t = 10)]
        wrk_secs: u64,
        /// Where to write the markdown report.
        #[arg(long, default_value = "benches/results/tls.md")]
        out: PathBuf,
    },
}

/// One target the load is sent to.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// Process ids whose memory is sampled (empty for direct).
    pids: Box<dyn Fn() -> Vec<u32>>,
}

struct Outcome {
    mb_per_s: f64,
    peak_rss_kib: u64,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Upload { args, out } => upload(args.mib, &args.concurrency, args.runs, args.berth, &out),
        Cmd::Overhead {
            runs,
            secs,
            berth,
            out,
        } => berth_binary(berth)
            .and_then(|berth| overhead::run(&berth, runs, secs))
            .and_then(|outcome| {
                let report = format!(
                    "{}\n\nSmall GETs over plain HTTP/1.1 with keep-alive (`small_get_h1_c64_observability`: \
                     wrk, 2 threads, 64 connections, {secs} s per run, runs alternating in ABBA order), berth with \
                     Prometheus metrics (scraped every second) and a JSON access log to a file, \
                     against berth with both off.\n\n{}",
                    measured_on(),
                    overhead::table(&outcome)
                );
                write_report(&out, &report)
            }),
        Cmd::Propagation {
            containers,
            berth,
            out,
        } => berth_binary(berth)
            .and_then(|berth| propagation::run(&berth, containers))
            .and_then(|samples| {
                let daemon = berth_testkit::docker::docker(&[
                    "version",
                    "--format",
                    "{{.Server.Version}} (API {{.Server.APIVersion}})",
                ])
                .unwrap_or_default();
                let report = format!(
                    "{} Docker {daemon}.\n\nRoute propagation with Docker discovery (`docker_route_propagation`): \
                     containers started and stopped one at a time; each latency is measured from the \
                     docker command returning to the first answer from berth that reflects it.\n\n{}",
                    measured_on(),
                    propagation::table(&samples)
                );
                write_report(&out, &report)
            }),
        Cmd::Tls {
            args,
            wrk_secs,
            out,
        } => {
            let (runs, mib) = (args.runs, args.mib);
            berth_binary(args.berth)
                .and_then(|berth| {
                    tls::run(&tls::TlsBench {
                        mib,
                        concurrency: args.concurrency,
                        runs,
                        wrk_secs,
                        berth,
                    })
                })
                .and_then(|table| {
                    let header = machine_header(runs, mib).replace(
                        "Upload throughput over plain HTTP/1.1",
                        "TLS uploads (curl, HTTP/1.1 and HTTP/2), small GETs (wrk) and certificate reloads; uploads go",
                    );
                    write_report(&out, &format!("{header}\n{table}"))
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-benches: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The "Measured <date> on <machine> ..." line of the reports.
fn measured_on() -> String {
    machine_header(0, 0)
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn berth_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    let path = given.unwrap_or_else(|| workspace_root().join("target/release/berth"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release --bin berth` first",
            path.display()
        ))
    }
}

fn write_report(out: &Path, report: &str) -> Result<(), String> {
    let root = workspace_root();
    println!("{report}");
    if let Some(dir) = root.join(out).parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(root.join(out), report).map_err(|e| e.to_string())
}

fn upload(
    mib: u64,
    concurrency: &[usize],
    runs: usize,
    berth_bin: Option<PathBuf>,
    out: &Path,
) -> Result<(), String> {
    let berth_bin = berth_binary(berth_bin)?;
    let sink = Origin::start("sink");
    let config = format!(
        "[listen]\nhttp = \"{{http}}\"\n[docker]\nenabled = false\n[[route]]\nhost = \"bench.test\"\nupstreams = [\"{}\"]\nprofile = \"registry\"\n",
        sink.addr
    );
    let berth = BerthProcess::start(&berth_bin, &config).map_err(|e| e.to_string())?;
    let stream = Nginx::start(NginxFlavour::Streaming, sink.addr).map_err(|e| e.to_string())?;
    let seed = Nginx::start(NginxFlavour::SeedRecipe, sink.addr).map_err(|e| e.to_string())?;
    let berth_pid = berth.pid();
    let targets = [
        Target {
            name: "direct",
            addr: sink.addr,
            pids: Box::new(Vec::new),
        },
        Target {
            name: "berth",
            addr: berth.http,
            pids: Box::new(move || vec![berth_pid]),
        },
        Target {
            name: "nginx-streaming",
            addr: stream.addr,
            pids: {
                let pids = stream.pids();
                Box::new(move || pids.clone())
            },
        },
        Target {
            name: "nginx-seed-recipe",
            addr: seed.addr,
            pids: {
                let pids = seed.pids();
                Box::new(move || pids.clone())
            },
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let len = mib << 20;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| scenario | direct MB/s | berth MB/s | nginx streaming MB/s | nginx seed recipe MB/s | berth / nginx streaming | berth / direct | berth peak RSS | nginx streaming peak RSS |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &c in concurrency {
        for chunked in [false, true] {
            let framing = if chunked { "chunked" } else { "cl" };
            let scenario = format!("upload_plain_h1_{framing}_c{c}_{mib}mib");
            let mut results = Vec::new();
            for t in &targets {
                let mut samples = Vec::new();
                for _ in 0..runs {
                    samples.push(rt.block_on(run_uploads(t, c, len, chunked))?);
                }
                samples.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
                let median = &samples[samples.len() / 2];
                let peak = samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0);
                eprintln!(
                    "{scenario} {:>18}: {:8.1} MB/s, peak RSS {} KiB",
                    t.name, median.mb_per_s, peak
                );
                results.push((median.mb_per_s, peak));
            }
            let (direct, berth_r, nginx_s, nginx_seed) =
                (results[0], results[1], results[2], results[3]);
            let _ = writeln!(
                table,
                "| `{scenario}` | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× | {:.1} MiB | {:.1} MiB |",
                direct.0,
                berth_r.0,
                nginx_s.0,
                nginx_seed.0,
                berth_r.0 / nginx_s.0,
                berth_r.0 / direct.0,
                berth_r.1 as f64 / 1024.0,
                nginx_s.1 as f64 / 1024.0,
            );
        }
    }
    let header = machine_header(runs, mib);
    write_report(out, &format!("{header}\n{table}"))
}

/// Runs `c` concurrent uploads of `len` bytes each against `t` and samples its memory.
async fn run_uploads(t: &Target, c: usize, len: u64, chunked: bool) -> Result<Outcome, String> {
    let sampler = PeakRss::start((t.pids)());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..c {
        let addr = t.addr;
        tasks.push(tokio::spawn(async move {
            let req = Request::new(
                "PATCH",
                "bench.test",
                &format!("/v2/bench/blobs/uploads/{i}"),
            )
            .body(Body::Repeat { len, chunked });
            send(addr, &req).await
        }));
    }
    let mut result = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(r)) if r.status == 200 => match r.seen() {
                Ok(seen) if seen.body_bytes == len => {}
                Ok(seen) => {
                    result = Err(format!(
                        "{}: sink got {} of {len} bytes",
                        t.name, seen.body_bytes
                    ))
                }
                Err(e) => result = Err(format!("{}: {e}", t.name)),
            },
            Ok(Ok(r)) => result = Err(format!("{}: status {} {}", t.name, r.status, r.text())),
            Ok(Err(e)) => result = Err(format!("{}: {e}", t.name)),
            Err(e) => result = Err(format!("{}: {e}", t.name)),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let peak_rss_kib = sampler.stop();
    result?;
    Ok(Outcome {
        mb_per_s: (len * c as u64) as f64 / secs / 1e6,
        peak_rss_kib,
    })
}

fn machine_header(runs: usize, mib: u64) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nginx = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Upload throughput over plain HTTP/1.1 to a sink that reads and hashes the whole body \
         before answering; {mib} MiB per upload; median of {runs} runs; MB = 10^6 bytes.\n\
         Measured {date} on {cores} cores ({cpu}); client, proxy and sink share the machine. \
         berth {}, {nginx}.\n",
        env!("CARGO_PKG_VERSION")
    )
}
