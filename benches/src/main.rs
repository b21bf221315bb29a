//! berth's benchmark harness: upload throughput and proxy memory, berth vs direct vs nginx,
//! measured side by side in one run on this machine.
//!
//! ```text
//! cargo build --release --bin berth && cargo run --release -p berth-benches -- report
//! ```
//! runs the whole comparison and writes `benches/results/latest.md` and
//! `benches/results/latest.png`; the other subcommands run one part each.

// A binary: its modules' `pub` items are the crate's own, and nothing outside uses them.
#![allow(unreachable_pub)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use berth_testkit::client::{send, Body, Request};
use berth_testkit::process::PeakRss;
use berth_testkit::{BerthProcess, Origin};

mod compression;
mod download;
mod idle;
mod overhead;
mod peers;
mod pki;
mod plugins;
mod propagation;
mod pull_cache;
mod registry;
mod report;
mod tls;
mod wrk;

use berth_testkit::nginx::{Nginx, NginxFlavour};

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
    /// Small GETs through routes that differ by one request step each (allowlist, rate
    /// limit, basic auth, forward auth with and without its cache), against none.
    Plugins {
        /// Rounds; each runs every step once, in rotating order (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seconds of wrk per step and round.
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/plugins.md")]
        out: PathBuf,
    },
    /// Docker route propagation: `docker run` → first 200, `docker stop` → 503; and on the
    /// Swarm of `./scripts/swarm-daemon`, a service scaled up and down.
    Propagation {
        /// Containers started and stopped, one after another.
        #[arg(long, default_value_t = 50)]
        containers: usize,
        /// Times a Swarm service is scaled 1 → 2 → 1 (0: no Swarm part).
        #[arg(long, default_value_t = 10)]
        swarm_scalings: usize,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/propagation.md")]
        out: PathBuf,
    },
    /// Idle keep-alive TLS connections held against berth, nginx and HAProxy: kB per
    /// connection, and RSS after they close.
    Idle {
        /// Connections held at once.
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Seconds after the clients closed when RSS is read again.
        #[arg(long, default_value_t = 30)]
        settle_secs: u64,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/idle.md")]
        out: PathBuf,
    },
    /// Small GETs over TLS through berth, HAProxy, Caddy, nginx (two ways) and a bare Pingora
    /// proxy: req/s, p99 and CPU per request.
    Peers {
        /// Seconds of wrk per proxy.
        #[arg(long, default_value_t = 10)]
        wrk_secs: u64,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Another berth binary (another build), measured beside the first.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/peers.md")]
        out: PathBuf,
    },
    /// TLS: uploads over h1 and h2, certificate reload latency.
    Tls {
        #[command(flatten)]
        args: UploadArgs,
        /// Repetitions per upload scenario above concurrency 1.
        #[arg(long, default_value_t = 1)]
        concurrent_runs: usize,
        /// Uploads at once over one HTTP/2 connection, against as many HTTP/1.1 connections
        /// (0: not measured).
        #[arg(long, default_value_t = 4)]
        streams: usize,
        /// Where to write the markdown report.
        #[arg(long, default_value = "benches/results/tls.md")]
        out: PathBuf,
    },
    /// Response compression: ratio and CPU per MB of berth (gzip, br, zstd), nginx's gzip and
    /// Caddy's encode, on the same files.
    Compression {
        /// Fetches of each file per proxy and coding.
        #[arg(long, default_value_t = 40)]
        fetches: usize,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/compression.md")]
        out: PathBuf,
    },
    /// Downloads over TLS (HTTP/1.1, HTTP/2, HTTP/2 with a 64 KiB window): direct, berth (and
    /// a second berth binary with --against), nginx.
    Download {
        /// MiB per download.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Downloads per scenario and target (median reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Another berth binary, measured beside the first.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Where to write the markdown table.
        #[arg(long, default_value = "benches/results/download.md")]
        out: PathBuf,
    },
    /// Pulls of one image through berth's registry cache (cold, warm, warm by 4 clients at
    /// once), beside direct pulls and a pull-through registry (`docker-registry` with
    /// `proxy.remoteurl`); the registry's request counts for each.
    PullCache {
        /// Cold/warm rounds (the median is reported); each cold pull starts from an empty
        /// cache.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// MiB of the image's four layers together.
        #[arg(long, default_value_t = 256)]
        mib: u64,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown report.
        #[arg(long, default_value = "benches/results/pull-cache.md")]
        out: PathBuf,
    },
    /// Everything, in one run: registry push and blob uploads over TLS, TLS uploads with
    /// peak RSS, small GETs, route propagation and certificate reloads; a markdown report
    /// with ratios and goals, and a PNG chart.
    Report {
        /// Repetitions of the blob upload and concurrency-1 scenarios (median reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// skopeo pushes per target (median reported): a push takes a few seconds, so
        /// more of them are needed to see past the noise.
        #[arg(long, default_value_t = 5)]
        push_runs: usize,
        /// Repetitions of the TLS uploads above concurrency 1.
        #[arg(long, default_value_t = 1)]
        concurrent_runs: usize,
        /// TLS upload concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// MiB per TLS upload.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// MiB per registry blob upload.
        #[arg(long, default_value_t = 512)]
        patch_mib: u64,
        /// Registry blob upload concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        patch_concurrency: Vec<usize>,
        /// Seconds of wrk per target.
        #[arg(long, default_value_t = 10)]
        wrk_secs: u64,
        /// Containers started and stopped for route propagation.
        #[arg(long, default_value_t = 30)]
        containers: usize,
        /// Idle TLS connections held per proxy and protocol.
        #[arg(long, default_value_t = 10_000)]
        idle_conns: usize,
        /// The berth binary (release build); default target/release/berth.
        #[arg(long)]
        berth: Option<PathBuf>,
        /// Where to write the markdown report (the chart goes beside it, `.png`).
        #[arg(long, default_value = "benches/results/latest.md")]
        out: PathBuf,
        /// Also put the tables and the chart into docs/benchmarks.md, between its
        /// `<!-- report:begin -->` and `<!-- report:end -->` lines.
        #[arg(long)]
        docs: bool,
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
        Cmd::Download {
            mib,
            runs,
            berth,
            against,
            out,
        } => berth_binary(berth).and_then(|berth| {
            let table = download::run(&download::DownloadBench {
                mib,
                runs,
                berth,
                against,
            })?;
            write_report(&out, &format!("# Downloads over TLS ({})\n\n{table}", today()))
        }),
        Cmd::PullCache {
            runs,
            mib,
            berth,
            out,
        } => berth_binary(berth).and_then(|berth| {
            let outcome = pull_cache::run(&pull_cache::PullCacheBench { runs, mib, berth })?;
            let report = format!(
                "# Pulls through the registry cache\n\n\
                 Measured {} on {} cores ({}); skopeo, berth and the registries share the \
                 machine.\n\n{}\n\n{}\n\n{}\n## Goals\n\n{}",
                today(),
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                cpu_model(),
                tool_versions(&[
                    ("", "docker-registry", &["--version"]),
                    ("", "skopeo", &["--version"]),
                ]),
                pull_cache::method(&outcome),
                pull_cache::markdown(&outcome),
                goal_lines(&pull_cache::goals(&outcome)),
            );
            write_report(&out, &report)
        }),
        Cmd::Compression {
            fetches,
            berth,
            out,
        } => berth_binary(berth).and_then(|berth| {
            let rows = compression::run(&compression::CompressionBench { fetches, berth })?;
            let report = format!(
                "{}\n\n{}\n\n{}",
                measured_on(),
                compression::METHOD,
                compression::markdown(&rows)
            );
            write_report(&out, &report)
        }),
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
        Cmd::Plugins {
            runs,
            secs,
            berth,
            out,
        } => berth_binary(berth)
            .and_then(|berth| plugins::run(&berth, runs, secs))
            .and_then(|outcome| {
                let report = format!(
                    "{}\n\nSmall GETs over plain HTTP/1.1 with keep-alive (`small_get_h1_c64_plugins`: \
                     wrk, 2 threads, 64 connections, {secs} s per step, {runs} rounds in rotating order), \
                     to one berth (metrics and access log off) whose routes differ by one request \
                     step each. Forward auth asks a local auth service (a small hyper server on the \
                     same machine); basic auth sends a user whose bcrypt check is remembered.\n\n{}",
                    measured_on(),
                    plugins::table(&outcome)
                );
                write_report(&out, &report)
            }),
        Cmd::Propagation {
            containers,
            swarm_scalings,
            berth,
            out,
        } => berth_binary(berth)
            .and_then(|berth| {
                let samples = propagation::run(&berth, containers)?;
                let swarm = match swarm_scalings {
                    0 => String::new(),
                    n => format!(
                        "\n\nOn Docker Swarm (`swarm_route_propagation`, berth as a service on the \
                         single-node Swarm of `scripts/swarm-daemon`, a service scaled 1 → 2 → 1 \
                         replicas {n} times; the goal is p90 ≤ swarm-poll + 1 s):\n\n{}",
                        propagation::swarm_table(&propagation::run_swarm(
                            &berth,
                            &berth_acme_binary(&berth)?,
                            n
                        )?)
                    ),
                };
                Ok((samples, swarm))
            })
            .and_then(|(samples, swarm)| {
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
                ) + &swarm;
                write_report(&out, &report)
            }),
        Cmd::Peers {
            wrk_secs,
            berth,
            against,
            out,
        } => berth_binary(berth).and_then(|berth| {
            let rows = peers::run(&peers::PeersBench {
                secs: wrk_secs,
                berth,
                bare_pingora: bare_pingora()?,
                against,
            })?;
            write_report(
                &out,
                &format!(
                    "{}\n\n{}\n\n{}\n\n{}\n{}",
                    measured_on(),
                    versions(),
                    peers::method(wrk_secs),
                    peers::markdown(&rows),
                    peer_goals(&rows)
                ),
            )
        }),
        Cmd::Idle {
            conns,
            settle_secs,
            berth,
            out,
        } => berth_binary(berth).and_then(|berth| {
            let settle = Duration::from_secs(settle_secs);
            let rows = idle::run(&idle::IdleBench {
                conns,
                settle,
                berth,
            })?;
            write_report(
                &out,
                &format!(
                    "# Idle keep-alive TLS connections\n\n{}\n\n{}\n\n{}\n{}",
                    measured_on(),
                    idle::method(conns, settle),
                    idle::markdown(&rows, settle),
                    goal_lines(&idle::goals(&rows))
                ),
            )
        }),
        Cmd::Tls {
            args,
            concurrent_runs,
            streams,
            out,
        } => {
            let (runs, mib) = (args.runs, args.mib);
            berth_binary(args.berth)
                .and_then(|berth| {
                    tls::run(&tls::TlsBench {
                        mib,
                        concurrency: args.concurrency,
                        runs,
                        concurrent_runs,
                        streams,
                        reloads: 10,
                        berth,
                    })
                })
                .and_then(|rows| {
                    let header = machine_header(runs, mib).replace(
                        "Upload throughput over plain HTTP/1.1",
                        "TLS uploads (h2load, HTTP/1.1 and HTTP/2) and certificate reloads; uploads go",
                    );
                    write_report(&out, &format!("{header}\n{}", report::markdown(&rows)))
                })
        }
        Cmd::Report {
            runs,
            push_runs,
            concurrent_runs,
            concurrency,
            mib,
            patch_mib,
            patch_concurrency,
            wrk_secs,
            containers,
            idle_conns,
            berth,
            out,
            docs,
        } => berth_binary(berth).and_then(|berth| {
            // Checked first, so that a missing daemon does not cost the half hour before it.
            if !berth_testkit::docker::available() {
                return Err(
                    "no Docker daemon answers: start dockerd (route propagation needs it)".into(),
                );
            }
            let started = Instant::now();
            let mut rows = registry::run(&registry::RegistryBench {
                push_runs,
                patch_mib,
                patch_concurrency,
                patch_runs: runs,
                berth: berth.clone(),
            })?;
            rows.extend(tls::run(&tls::TlsBench {
                mib,
                concurrency,
                runs,
                concurrent_runs,
                streams: 4,
                reloads: 10,
                berth: berth.clone(),
            })?);
            let peers = peers::run(&peers::PeersBench {
                against: None,
                secs: wrk_secs,
                berth: berth.clone(),
                bare_pingora: bare_pingora()?,
            })?;
            let settle = Duration::from_secs(30);
            let idle = idle::run(&idle::IdleBench {
                conns: idle_conns,
                settle,
                berth: berth.clone(),
            })?;
            let idle = Idle {
                table: idle::markdown(&idle, settle),
                goals: goal_lines(&idle::goals(&idle)),
                method: idle::method(idle_conns, settle),
            };
            rows.extend(propagation::rows(&propagation::run(&berth, containers)?));
            rows.extend(propagation::swarm_rows(&propagation::run_swarm(
                &berth,
                &berth_acme_binary(&berth)?,
                10,
            )?));
            let chart = out.with_extension("png");
            let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
            report::chart(
                &rows,
                &format!(
                    "berth vs nginx, speed relative to no proxy — {}, {cores} cores, one run",
                    today()
                ),
                &workspace_root().join(&chart),
            )?;
            let text = full_report(
                &rows,
                &peers,
                &idle,
                Repeats { runs, push_runs, concurrent_runs },
                mib,
                patch_mib,
                wrk_secs,
                containers,
                &chart,
                started,
            );
            write_report(&out, &text)?;
            if docs {
                update_docs(&rows, &peers, &idle, &chart, &out)?;
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-benches: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The idle-connection part of the report, rendered.
struct Idle {
    table: String,
    goals: String,
    method: String,
}

/// How often each kind of scenario was repeated.
struct Repeats {
    runs: usize,
    push_runs: usize,
    concurrent_runs: usize,
}

/// The markdown of the `report` subcommand.
#[allow(clippy::too_many_arguments)]
fn full_report(
    rows: &[report::Row],
    peers: &[peers::PeerRow],
    idle: &Idle,
    repeats: Repeats,
    mib: u64,
    patch_mib: u64,
    wrk_secs: u64,
    containers: usize,
    chart: &Path,
    started: Instant,
) -> String {
    let Repeats {
        runs,
        push_runs,
        concurrent_runs,
    } = repeats;
    let chart_name = chart
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    format!(
        "# berth benchmark report\n\n{}\n\n{}\n\n\
         Every figure below comes from this one run ({:.1} minutes), targets taking turns. \
         Medians of {runs} runs; skopeo pushes {push_runs} per target; TLS uploads above \
         concurrency 1 {concurrent_runs} run{}. \
         MB = 10^6 bytes; ↑ higher is better, ↓ lower is better; ratios are berth's figure divided \
         by the other's (so for ↓ rows below 1.00× is better). Peak RSS is sampled from /proc \
         every few milliseconds (nginx: master and workers summed).\n\n\
         - **Registry**: Debian's docker-registry with htpasswd (bcrypt) auth and filesystem storage. \
         *direct* is the registry serving TLS itself; berth and both nginx configurations terminate \
         TLS in front of a second, plain registry instance. Pushes are `skopeo copy` of a new \
         3-layer 320 MiB image each time, TLS verified. Blob uploads are `POST`, one chunked `PATCH` \
         of {patch_mib} MiB, `PUT ?digest=` with curl over HTTP/1.1, each upload in its own repository.\n\
         - **TLS uploads**: {mib} MiB per upload, one connection per upload, to a sink that reads \
         and hashes the whole body before answering; the client is h2load (nghttp2) for every \
         target and protocol (`-d FILE`, up to 2 threads) — curl's HTTP/2 uploads stalled at 30 \
         MB/s in total with 64 processes; *direct* is plain HTTP/1.1 to the sink.\n\
         - **nginx streaming**: `client_max_body_size 0; proxy_request_buffering off; \
         proxy_http_version 1.1;`. **nginx seed recipe**: what the nginx-proxy recipe ends up with \
         (`client_max_body_size 0; chunked_transfer_encoding on; proxy_read_timeout 900;`, request \
         buffering on). Both with `ssl http2`, TLS 1.2/1.3, `worker_processes auto`.\n\
         {}\n\
         - **Certificate reload**: a renewed certificate is put in place by rename; berth notices \
         it by itself, nginx is sent SIGHUP (as acme-companion does); latency until the first new \
         handshake gets the new certificate, 10 renewals each.\n\
         - **Route propagation**: {containers} labelled containers started and stopped one at a \
         time; from the docker command returning to berth's first answer that reflects it. \
         nginx-proxy (docker-gen + reload) is not measured here.\n\n\
         - **Idle connections**: {}\n\n\
         ![speed relative to direct]({chart_name})\n\n{}\n### Small GETs over TLS beside the peers\n\n{}\n\
         ### Idle keep-alive TLS connections\n\n{}\n## Goals\n\n{}{}{}",
        measured_on(),
        versions(),
        started.elapsed().as_secs_f64() / 60.0,
        if concurrent_runs == 1 { "" } else { "s" },
        peers::method(wrk_secs),
        idle.method,
        report::markdown(rows),
        peers::markdown(peers),
        idle.table,
        report::goals(rows),
        peer_goals(peers),
        idle.goals,
    )
}

const README_BEGIN: &str = "<!-- report:begin -->";
const README_END: &str = "<!-- report:end -->";

/// Replaces the part of docs/benchmarks.md between the report markers with this run's
/// tables. `out` and `chart` are relative to the workspace root; the page links them from
/// `docs/`.
fn update_docs(
    rows: &[report::Row],
    peers: &[peers::PeerRow],
    idle: &Idle,
    chart: &Path,
    out: &Path,
) -> Result<(), String> {
    const PAGE: &str = "docs/benchmarks.md";
    let path = workspace_root().join(PAGE);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{PAGE}: {e}"))?;
    let section = format!(
        "{}\n\n{}\n\nMethod and notes: [`{}`](../{}).\n\n![speed relative to direct](../{})\n\n{}\
         ### Small GETs over TLS beside the peers\n\n{}\n### Idle keep-alive TLS connections\n\n{}\n\
         Goals:\n\n{}{}{}",
        measured_on(),
        versions(),
        out.display(),
        out.display(),
        chart.display(),
        report::markdown(rows),
        peers::markdown(peers),
        idle.table,
        report::goals(rows),
        peer_goals(peers),
        idle.goals,
    );
    let updated = replace_marked(&text, &section).map_err(|e| format!("{PAGE}: {e}"))?;
    std::fs::write(&path, updated).map_err(|e| format!("{PAGE}: {e}"))
}

/// `text` with what lies between the report markers replaced by `section`.
fn replace_marked(text: &str, section: &str) -> Result<String, String> {
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        return Err(format!("no {README_BEGIN} … {README_END} section"));
    };
    if end < begin {
        return Err(format!("{README_END} comes before {README_BEGIN}"));
    }
    Ok(format!(
        "{}{README_BEGIN}\n{}\n{}",
        &text[..begin],
        section.trim_end(),
        &text[end..]
    ))
}

/// The versions of everything measured, one markdown list.
fn versions() -> String {
    tool_versions(&[
        ("", "nginx", &["-v"]),
        ("docker-registry ", "docker-registry", &["--version"]),
        ("", "skopeo", &["--version"]),
        ("", "curl", &["--version"]),
        ("", "h2load", &["--version"]),
        ("", "wrk", &["-v"]),
        (
            "Docker ",
            "docker",
            &["version", "--format", "{{.Server.Version}}"],
        ),
    ])
}

/// The machine, berth, and each of `tools` (`(prefix, command, arguments)`: the first line
/// the command prints, after the prefix), one markdown list.
fn tool_versions(tools: &[(&str, &str, &[&str])]) -> String {
    let kernel = first_line("uname", &["-srm"]);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| {
            format!("{:.0} GiB", kib as f64 / 1048576.0)
        });
    let mut list = format!(
        "- machine: {os}, {kernel}, {memory} memory\n- berth {} (release build)",
        env!("CARGO_PKG_VERSION")
    );
    for (prefix, cmd, args) in tools {
        let _ = write!(list, "\n- {prefix}{}", first_line(cmd, args));
    }
    list
}

/// The first line `cmd` prints (on stdout, else stderr), or "not found".
fn first_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "not found".to_string())
}

/// The "Measured `<date>` on `<machine>` ..." line of the reports.
fn measured_on() -> String {
    machine_header(0, 0)
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// The goals of the peer comparison as report lines.
fn peer_goals(rows: &[peers::PeerRow]) -> String {
    goal_lines(&peers::goals(rows))
}

/// Goals as report lines.
fn goal_lines(goals: &[(String, bool)]) -> String {
    goals
        .iter()
        .map(|(text, met)| format!("- {text} — {}\n", if *met { "met" } else { "**not met**" }))
        .collect()
}

/// The bare Pingora proxy, built beside this harness (`cargo build --release -p
/// berth-benches`).
fn bare_pingora() -> Result<PathBuf, String> {
    let path = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("bare-pingora");
    built(path, "cargo build --release -p berth-benches")
}

/// `berth-acme` beside `berth` (the Swarm image holds both).
fn berth_acme_binary(berth: &Path) -> Result<PathBuf, String> {
    built(
        berth.with_file_name("berth-acme"),
        "cargo build --release --bin berth-acme",
    )
}

fn berth_binary(given: Option<PathBuf>) -> Result<PathBuf, String> {
    built(
        given.unwrap_or_else(|| workspace_root().join("target/release/berth")),
        "cargo build --release --bin berth",
    )
}

/// `path` if it exists; otherwise an error saying which command builds it.
fn built(path: PathBuf, build: &str) -> Result<PathBuf, String> {
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} not found: run `{build}` first", path.display()))
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

/// The processor's model name, from /proc/cpuinfo.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default()
}

fn machine_header(runs: usize, mib: u64) -> String {
    let cpu = cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nginx = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let date = today();
    format!(
        "Upload throughput over plain HTTP/1.1 to a sink that reads and hashes the whole body \
         before answering; {mib} MiB per upload; median of {runs} runs; MB = 10^6 bytes.\n\
         Measured {date} on {cores} cores ({cpu}); client, proxy and sink share the machine. \
         berth {}, {nginx}.\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The current UTC date and time, `2026-11-27 11:15 UTC`.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::replace_marked;

    #[test]
    fn only_the_marked_part_of_the_readme_is_replaced() {
        let text = "intro\n<!-- report:begin -->\nold table\n<!-- report:end -->\nafter\n";
        let once = replace_marked(text, "new table\n").expect("both markers are there");
        assert_eq!(
            once,
            "intro\n<!-- report:begin -->\nnew table\n<!-- report:end -->\nafter\n"
        );
        assert_eq!(replace_marked(&once, "new table").as_ref(), Ok(&once));
        assert!(replace_marked("no markers", "x").is_err());
        assert!(replace_marked("<!-- report:end --> <!-- report:begin -->", "x").is_err());
    }
}
