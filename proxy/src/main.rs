//! `berth`: parse the command line, load the configuration, run the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth_core::config::{load_config, ConfigSource};
use berth_proxy::{build_server, check_files};

// glibc's allocator returns freed body buffers to the kernel and takes them back for the
// next chunk; under load that costs page faults and cross-CPU TLB shootdowns on every
// 64 KiB chunk. mimalloc keeps them in user space.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The doc comment is `berth --help`, written for a terminal: `[[route]]` is a config
// section, not a link.
#[allow(rustdoc::broken_intra_doc_links)]
/// berth — an edge proxy for self-hosted container registries.
///
/// Terminates TLS (certificates hot-loaded from tls.certs-dir), routes by host to the
/// [[route]]s of the config file and to Docker containers with berth.* labels or
/// nginx-proxy's VIRTUAL_HOST, streams uploads of any size, and serves /metrics,
/// /routes and /healthz on the admin listener. Certificates come from berth-acme.
#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    after_help = "\
Without --config berth runs on its embedded default: HTTP on 0.0.0.0:8080, HTTPS on
0.0.0.0:8443, admin on 127.0.0.1:9180, certificates under ./berth-state/certs/.

Examples:
  berth                                     # the embedded default
  berth --config /etc/berth/berth.toml      # your own configuration
  berth check --config /etc/berth/berth.toml
  kill -HUP $(pidof berth)                  # reload the config file (routes, limits, ...)

Reference: docs/configuration.md, docs/labels.md, docs/operations.md"
)]
struct Cli {
    /// Configuration file (TOML). Without it, berth runs on its embedded default.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running berth with the same config: start this
    /// process, then send the running one SIGQUIT. No connection is refused meanwhile.
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the configuration (and the files it names), list every error with its key
    /// path, and exit non-zero if there is one.
    #[command(after_help = "\
Example:
  $ berth check --config bad.toml
  berth: bad.toml is not valid:
    listen.htp: unknown key
    route[2].upstreams[1]: invalid socket address \"x:y\"; write e.g. \"127.0.0.1:5000\"")]
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = ConfigSource::from_arg(cli.config);
    let config = match load_config(&source) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("berth: {source} is not valid:");
            for e in &errors.0 {
                eprintln!("  {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Check) = cli.command {
        let problems = check_files(&config);
        if !problems.is_empty() {
            eprintln!("berth: {source} names files that cannot be used:");
            for p in &problems {
                eprintln!("  {p}");
            }
            return ExitCode::FAILURE;
        }
        println!("berth: {source} is valid ({} routes)", config.routes.len());
        return ExitCode::SUCCESS;
    }
    berth_core::logging::init();
    let routes = config.routes.len();
    let (server, listeners) = match build_server(config, source.clone(), cli.upgrade) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("berth: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("berth: running on {source} with {routes} static routes");
    for l in &listeners {
        println!("berth: {l}");
    }
    berth_proxy::memory::start_purger();
    server.run_forever()
}
