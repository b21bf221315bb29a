//! `berth`: parse the command line, load the configuration, run the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth_proxy::{build_server, check_files, load_config, ConfigSource};

// glibc's allocator returns freed body buffers to the kernel and takes them back for the
// next chunk; under load that costs page faults and cross-CPU TLB shootdowns on every
// 64 KiB chunk. mimalloc keeps them in user space.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// berth — an edge proxy for self-hosted container registries.
#[derive(Debug, Parser)]
#[command(version, about)]
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
    /// Validate the configuration, list every error with its key path, and exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let source = cli
        .config
        .map_or(ConfigSource::Embedded, ConfigSource::File);
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
    berth_plugins::logging::init();
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
    server.run_forever()
}
