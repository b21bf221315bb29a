//! berth's plugin API and its built-in plugins.
//!
//! A plugin implements one trait ([`Plugin`]) whose hooks carry Pingora's phase names; each
//! route owns a chain of them, built once from the route's settings ([`chain`]). Building a
//! chain reads the files a route names (htpasswd, token secret, CA certificates); at request
//! time the hooks read the challenge files ([`builtin::AcmeChallenge`]) and ask a forward-auth
//! service over the network ([`builtin::ForwardAuth`]); the htpasswd watcher re-reads
//! changed files ([`builtin::AuthFiles`]) and the prober checks upstreams' health
//! ([`health::Prober`]) in the background. The model they are built from — config, routes,
//! the route table — is `berth-core`'s.

pub mod blob_store;
pub mod builtin;
pub mod cache_storage;
pub mod chain;
pub mod client;
pub mod health;
pub mod pages;
pub mod plugin;
pub mod registry_cache;
pub mod rescue;
pub mod routing;

pub use chain::{build_table, ChainEnv, Route, Served, SharedTable};
pub use client::{Client, TrustedProxies};
pub use plugin::{Downstream, Flow, Page, Plugin, Reply, RequestCtx, Scheme};
