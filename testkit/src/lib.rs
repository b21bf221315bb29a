//! Test and benchmark kit for berth: real processes and real sockets on loopback.
//!
//! - [`origin`]: an HTTP/1.1 origin that reads every request body in full, and answers with
//!   what it saw (headers, byte count, SHA-256) — the echo origin of the tests and the sink
//!   of the benchmarks.
//! - [`client`]: a raw HTTP/1.1 client that says exactly what goes on the wire (chunked or
//!   Content-Length bodies of random data, `Expect: 100-continue`, paced uploads, odd
//!   request lines).
//! - [`process`]: start `berth` and other servers on ephemeral ports, read their memory use.
//! - [`path_apps`]: Tomcat and a Node app, upstreams that read request paths their own way.
//! - [`pebble`]: a real ACME server whose HTTP-01 validation goes through berth.
//! - [`auth_service`]: a forward-auth service keeping the contract Authelia publishes.
//! - [`browser`]: headless chromium over the DevTools protocol, for pages berth serves.
//! - [`downloads`]: an origin of large streamed responses that counts its connections.
//! - [`docker`]: locally built test images, and containers and networks that clean up after
//!   themselves.

pub mod auth_service;
pub mod bind;
pub mod browser;
pub mod client;
pub mod docker;
pub mod downloads;
pub mod nginx;
pub mod oci;
pub mod origin;
pub mod path_apps;
pub mod pebble;
pub mod process;
pub mod registry;
pub mod swarm;
pub mod tls;

pub use client::{Body, Request, Response};
pub use origin::{Origin, Seen};
pub use process::{free_port, wait_until, BerthProcess};
