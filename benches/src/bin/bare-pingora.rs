//! The floor of the small-request benchmark: a Pingora proxy with one fixed upstream and
//! nothing of berth's — no routing, plugins, limits, head gate, metrics or logging — built
//! with the same Pingora version, TLS library, allocator and server settings as berth (one
//! thread per core, no work stealing). What berth costs on top of Pingora is its figure minus
//! this one.
//!
//!   bare-pingora LISTEN UPSTREAM CERT KEY [--thread-local]
//!
//! `--thread-local` turns on what berth turns on from vendor/PATCHES.md 0003: every thread
//! accepts, a connection's tasks stay on its thread, and each thread pools its own upstream
//! connections. Without it, this is stock Pingora's behaviour.

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

// berth's allocator, so that the difference is berth's code and not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends every request to one upstream over plain HTTP/1.1 (connections pooled by Pingora).
struct Bare {
    upstream: std::net::SocketAddr,
    thread_local: bool,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if self.thread_local {
            peer.group_key = thread_group();
        }
        Ok(Box::new(peer))
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (thread_local, args) = match args.as_slice() {
        [rest @ .., last] if last == "--thread-local" => (true, rest),
        all => (false, all),
    };
    let [listen, upstream, cert, key] = args else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM CERT KEY [--thread-local]");
        return std::process::ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bare-pingora: {upstream}: not an IP address and port");
        return std::process::ExitCode::from(2);
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let conf = ServerConf {
        threads,
        work_stealing: false,
        thread_local_connections: thread_local,
        listener_tasks_per_fd: if thread_local { threads } else { 1 },
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora_proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream,
            thread_local,
        },
    );
    let mut tls = match pingora_core::listeners::tls::TlsSettings::intermediate(cert, key) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("bare-pingora: {cert} / {key}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tls.enable_h2();
    service.add_tls_with_settings(listen, None, tls);
    server.add_service(service);
    server.run_forever()
}

/// This thread's upstream connection pool: a number of its own.
fn thread_group() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static GROUP: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    GROUP.with(|g| *g)
}
