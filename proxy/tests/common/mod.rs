//! Shared helpers for berth's integration tests: start the real binary with a config.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;

use berth_testkit::client::{send, Request, Response};
use berth_testkit::BerthProcess;

/// Starts the `berth` binary built for these tests on `config` (`{http}` = its listener).
pub fn berth(config: &str) -> BerthProcess {
    BerthProcess::start(Path::new(env!("CARGO_BIN_EXE_berth")), config)
        .unwrap_or_else(|e| panic!("berth did not start: {e}"))
}

/// A config with one listener, Docker discovery off, and the given extra TOML.
pub fn config(extra: &str) -> String {
    format!("[listen]\nhttp = \"{{http}}\"\n\n[docker]\nenabled = false\n\n{extra}")
}

/// A `[[route]]` table.
pub fn route(host: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[route]]\nhost = \"{host}\"\nupstreams = [{}]\n{extra}\n",
        ups.join(", ")
    )
}

/// Sends a request and panics with berth's log if the exchange fails.
pub async fn call(berth: &BerthProcess, req: &Request) -> Response {
    match send(berth.http, req).await {
        Ok(r) => r,
        Err(e) => panic!(
            "request {} {} failed: {e}\nberth log:\n{}",
            req.method,
            req.target,
            berth.log()
        ),
    }
}
