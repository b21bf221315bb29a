//! berth's plugin API, built-in plugins, route model and configuration schema.
//!
//! Both binaries use this crate: `berth` runs the plugin chains; the ACME worker reads the
//! same configuration, route model and Docker label schema. Nothing here does I/O beyond what
//! a plugin hook is handed — except [`docker`], the Docker client both binaries share — so
//! every core is testable without sockets.

pub mod acme;
pub mod builtin;
pub mod chain;
pub mod config;
pub mod docker;
pub mod files;
pub mod labels;
pub mod lifecycle;
pub mod limits;
pub mod logging;
pub mod merge;
pub mod path;
pub mod plugin;
pub mod rescue;
pub mod route;
pub mod routing;
pub mod sync;
pub mod table;
pub mod units;

pub use chain::{build_table, ChainEnv, Route};
pub use plugin::{Downstream, Flow, Plugin, Reply, RequestCtx, Scheme};
