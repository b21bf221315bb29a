//! The floor of the small-request benchmark: a Pingora proxy with one fixed upstream and
//! nothing of berth's — no routing, plugins, limits, head gate, metrics or logging — built
//! with the same Pingora version, TLS library, allocator and server settings as berth (one
//! thread per core, no work stealing). What berth costs on top of Pingora is its figure minus
//! this one.
//!
//!   bare-pingora LISTEN UPSTREAM CERT KEY     # e.g. 127.0.0.1:9443 127.0.0.1:8080 c.pem k.pem

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
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream, cert, key] = args.as_slice() else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM CERT KEY");
        return std::process::ExitCode::from(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("bare-pingora: {upstream}: not an IP address and port");
        return std::process::ExitCode::from(2);
    };
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora_proxy::http_proxy_service(&server.configuration, Bare { upstream });
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
