//! berth's plugin API and its built-in plugins.
//!
//! A plugin implements one trait ([`Plugin`]) whose hooks carry Pingora's phase names; each
//! route owns a chain of them, built once from the route's settings ([`chain`]). The hooks
//! work on the request they are handed and on snapshots; the only file I/O is the htpasswd
//! watcher's re-reads ([`builtin::AuthFiles`]) and the challenge files
//! ([`builtin::AcmeChallenge`]). The model they are built from — config, routes, the route
//! table — is `berth-core`'s.

pub mod builtin;
pub mod chain;
pub mod plugin;
pub mod rescue;
pub mod routing;

pub use chain::{build_table, ChainEnv, Route, SharedTable};
pub use plugin::{Downstream, Flow, Plugin, Reply, RequestCtx, Scheme};
