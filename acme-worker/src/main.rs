//! `berth-acme`: parse the command line, read the configuration, run the worker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use berth_acme::feed::Published;
use berth_acme::metrics::Metrics;
use berth_acme::worker::Worker;
use berth_core::config::{load_config, Config, ConfigSource, DockerEndpoint};
use berth_core::docker::{endpoint_to_follow, list_once, DockerWatcher, Snapshot};
use berth_core::feed::FEED_PATH;

/// berth-acme — obtains and renews the certificates berth serves.
///
/// Reads the same config file as berth. For every [[route]] with acme = true and every
/// container with LETSENCRYPT_HOST / ACME_HOST or berth.acme=true, it orders a certificate
/// from the ACME CA (acme.directory, Let's Encrypt by default) with HTTP-01 challenges that
/// berth answers, or DNS-01 records published through acme.dns-provider (wildcards), and
/// writes <host>.key and <host>.crt into tls.certs-dir, where berth picks them up. It renews
/// them when a third of their lifetime remains (acme.renew-before), or in the CA's ARI
/// window when that is earlier.
#[derive(Debug, Parser)]
#[command(
    name = "berth-acme",
    version,
    after_help = "\
Examples:
  berth-acme --config /etc/berth/berth.toml        # daemon: follows Docker, renews on time
  berth-acme --config /etc/berth/berth.toml once   # do what is due now, then exit (cron)
  berth-acme --config /etc/berth/berth.toml once --force-renewal   # renew everything now

Reference: docs/certificates.md"
)]
struct Cli {
    /// Configuration file (TOML), the same file berth reads. Without it, the embedded default.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Order every certificate once now, due or not (a key that may have leaked, a new
    /// key type); then renew on time as usual.
    #[arg(long, global = true)]
    force_renewal: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Issue or renew whatever is due now, then exit (non-zero if an order failed).
    #[command(after_help = "Example:\n  berth-acme --config /etc/berth/berth.toml once")]
    Once,
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let source = ConfigSource::from_arg(path);
    load_config(&source).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|e| format!("  {e}")).collect();
        format!("{source} is not valid:\n{}", lines.join("\n"))
    })
}

/// The Docker endpoint to follow, if discovery is on (the same rule as berth's).
fn docker_endpoint(config: &Config) -> Result<Option<DockerEndpoint>, String> {
    Ok(endpoint_to_follow(&config.docker)?.ok())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    berth_core::logging::init();
    let config = match load(cli.config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("berth-acme: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth-acme: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Once) => once(config, cli.force_renewal).await,
            None => daemon(config, cli.force_renewal).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-acme: {e}");
            ExitCode::FAILURE
        }
    }
}

fn metrics() -> Result<Arc<Metrics>, String> {
    Metrics::new().map(Arc::new).map_err(|e| e.to_string())
}

async fn once(config: Arc<Config>, force: bool) -> Result<ExitCode, String> {
    let containers = match docker_endpoint(&config)? {
        Some(endpoint) => list_once(&endpoint)
            .await
            .map_err(|e| format!("docker {endpoint}: {e}"))?,
        None => Snapshot::default(),
    };
    let mut worker = Worker::new(config.clone(), metrics()?).force_renewal(force);
    let (report, _) = worker.pass(&containers).await;
    println!(
        "berth-acme: {} issued, {} failed, {} put off by acme.max-orders-per-minute",
        report.issued.len(),
        report.failed.len(),
        report.throttled.len()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn daemon(config: Arc<Config>, force: bool) -> Result<ExitCode, String> {
    let metrics = metrics()?;
    if let Some(addr) = config.acme.metrics {
        berth_acme::metrics::serve(addr, metrics.clone())
            .await
            .map_err(|e| format!("acme.metrics {addr}: {e}"))?;
        println!("berth-acme: metrics on http://{addr}/metrics");
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut snapshots = match docker_endpoint(&config)? {
        Some(endpoint) => {
            println!("berth-acme: following docker at {endpoint}");
            let (watcher, rx) = DockerWatcher::new(endpoint);
            let watcher = watcher.with_swarm(config.docker.swarm, config.docker.swarm_poll);
            let shutdown = shutdown_rx.clone();
            tokio::spawn(async move { watcher.run(shutdown).await });
            Some(rx)
        }
        None => None,
    };
    println!(
        "berth-acme: directory {}, certificates into {}",
        config.acme.directory,
        config.tls.certs_dir.path().display()
    );
    let mut worker = Worker::new(config.clone(), metrics).force_renewal(force);
    if let Some((addr, token_file)) = &config.acme.feed {
        let token = berth_core::feed::read_token(token_file)
            .map_err(|e| format!("acme.feed-token-file: {e}"))?;
        let (published, published_rx) = tokio::sync::watch::channel(Published::default());
        let (served, served_rx) = tokio::sync::watch::channel(0);
        let certs_dir = config.tls.certs_dir.clone();
        let bound = berth_acme::feed::serve(*addr, token, certs_dir, published_rx, served)
            .await
            .map_err(|e| format!("acme.feed {addr}: {e}"))?;
        println!("berth-acme: certificate feed on http://{bound}{FEED_PATH}");
        worker = worker.with_feed(published, served_rx);
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let containers = snapshots
            .as_mut()
            .map(|rx| rx.borrow_and_update().as_ref().clone())
            .unwrap_or_default();
        let (_, next) = worker.pass(&containers).await;
        tracing::debug!(next_in_secs = next.as_secs(), "acme: pass done");
        let changed = async {
            match snapshots.as_mut() {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    // Let a burst of events (start, connect, health) settle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = changed => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    let _ = shutdown_tx.send(true);
    Ok(ExitCode::SUCCESS)
}
