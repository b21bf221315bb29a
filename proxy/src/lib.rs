//! berth's proxy: the Pingora server wiring, the `ProxyHttp` implementation that runs each
//! route's plugin chain, and the checks `berth check` adds to the config schema's. The binary (`src/main.rs`) only parses
//! the command line and calls into this crate.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth_watch;
pub mod check;
pub mod connections;
pub mod docker_routes;
pub mod memory;
pub mod metrics;
pub mod observe;
pub mod reload;
pub mod route_writer;
pub mod server;
pub mod supervise;
pub mod tls;

pub use app::Berth;
pub use check::check_files;
pub use server::build_server;
