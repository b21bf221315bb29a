//! Builds the Pingora server from a validated configuration: the shared route table, one
//! proxy service per listener, and the server's own settings.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_proxy::http_proxy_service_with_name;

use berth_plugins::config::{parse_config, Config, ConfigErrors, EMBEDDED_DEFAULT};
use berth_plugins::{build_table, ChainEnv, Scheme};

use crate::app::{Berth, SharedTable};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `configs/berth.toml`, compiled into the binary.
    Embedded,
    /// A file given with `--config`.
    File(PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Embedded => f.write_str("the embedded default configuration"),
            ConfigSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Reads and validates the configuration.
///
/// # Errors
/// Returns every problem found, or one that says the file could not be read.
pub fn load_config(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    match source {
        ConfigSource::Embedded => parse_config(EMBEDDED_DEFAULT),
        ConfigSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigErrors(vec![berth_plugins::config::ConfigError {
                    path: String::new(),
                    message: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            parse_config(&text)
        }
    }
}

/// The Pingora server settings berth uses.
fn server_conf() -> ServerConf {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    ServerConf {
        threads,
        // A stopping berth waits this long for in-flight requests before it exits.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    }
}

/// Builds the server: the shared route table and a proxy service per listener. Returns the
/// server and a description of each listener, for the start-up message.
pub fn build_server(config: Config) -> (Server, Vec<String>) {
    let mut server = Server::new_with_opt_and_conf(None, server_conf());
    server.bootstrap();
    let env = ChainEnv {
        trusted_proxies: config.trusted_proxies.into(),
    };
    let table: SharedTable = Arc::new(ArcSwap::from_pointee(build_table(config.routes, &env)));
    let mut listeners = Vec::new();
    if let Some(addr) = config.listen.http {
        let mut service = http_proxy_service_with_name(
            &server.configuration,
            Berth::new(Scheme::Http, table.clone()),
            "berth http",
        );
        service.add_tcp(&addr.to_string());
        server.add_service(service);
        listeners.push(format!("http://{addr}"));
    }
    (server, listeners)
}
