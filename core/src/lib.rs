//! What `berth` and `berth-acme` share, with no Pingora in it: the configuration schema
//! ([`config`], a module per section), the route
//! model, a module per family of route keys, and the table ([`route`], [`path`], [`table`],
//! [`merge`]), the Docker client and label
//! schema ([`docker`], [`labels`]), the file contract between the two processes
//! ([`contract`]), the small files routes name ([`files`]), the PROXY protocol header
//! ([`proxy_protocol`]), and the logging setup both binaries use.
//!
//! Pure but for: [`docker`] (the Docker API), [`feed`] (the certificate feed), [`contract`]
//! (atomic writes), [`logging`], and the reads of files that config and labels name
//! ([`files`]; [`config`] reads its own file and checks the files its keys name).

pub mod compress;
pub mod config;
pub mod contract;
pub mod docker;
mod errors;
pub mod feed;
pub mod files;
pub mod labels;
pub mod logging;
pub mod merge;
pub mod path;
pub mod proxy_protocol;
pub mod route;
pub mod sync;
pub mod table;
pub mod units;
