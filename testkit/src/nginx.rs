//! Debian's nginx, as the comparison peer in benchmarks (configured three ways) and as a
//! static file server in tests:
//! - `Streaming`: what a careful operator writes for a registry (`client_max_body_size 0;
//!   proxy_request_buffering off; proxy_http_version 1.1;`);
//! - `SeedRecipe`: what the nginx-proxy recipe ends up with after its fixes
//!   (`client_max_body_size 0; chunked_transfer_encoding on; proxy_read_timeout 900;`,
//!   request buffering left on, so bodies are spooled to disk first);
//! - `NginxProxy`: what nginx-proxy's template generates for a container (HTTP/1.1 to the
//!   upstream, `Connection: close`, so no upstream keep-alive).

use std::io;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;
use crate::process::wait_for_port;

/// Which nginx configuration.
#[derive(Debug, Clone, Copy)]
pub enum NginxFlavour {
    /// Streaming uploads.
    Streaming,
    /// The seed recipe's buffering proxy.
    SeedRecipe,
    /// What nginx-proxy's template generates: no upstream keep-alive.
    NginxProxy,
}

/// A running nginx; stopped when dropped.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx in the foreground with its own prefix directory, proxying to `upstream`.
    ///
    /// # Errors
    /// When nginx is missing or does not listen.
    pub fn start(flavour: NginxFlavour, upstream: SocketAddr) -> io::Result<Nginx> {
        Self::start_with_tls(flavour, upstream, None)
    }

    /// Like [`Nginx::start`], listening with TLS (and HTTP/2) when `tls` names a certificate
    /// and key file.
    ///
    /// # Errors
    /// When nginx is missing or does not listen.
    pub fn start_with_tls(
        flavour: NginxFlavour,
        upstream: SocketAddr,
        tls: Option<(&std::path::Path, &std::path::Path)>,
    ) -> io::Result<Nginx> {
        let (keepalive, body) = match flavour {
            NginxFlavour::Streaming => (
                " keepalive 64;",
                "client_max_body_size 0;\n        proxy_request_buffering off;\n        proxy_http_version 1.1;\n        proxy_set_header Connection \"\";",
            ),
            NginxFlavour::SeedRecipe => (
                " keepalive 64;",
                "client_max_body_size 0;\n        chunked_transfer_encoding on;\n        proxy_read_timeout 900;",
            ),
            // nginx-proxy's template: HTTP/1.1 upstream, buffering off, and `Connection:
            // $proxy_connection`, which is `close` for a request that is no upgrade unless a
            // container asks for keep-alive.
            NginxFlavour::NginxProxy => (
                "",
                "client_max_body_size 0;\n        proxy_http_version 1.1;\n        proxy_buffering off;\n        proxy_set_header Connection close;",
            ),
        };
        let server = format!(
            "{body}\n        proxy_set_header Host $http_host;\n\
             proxy_set_header X-Real-IP $remote_addr;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             proxy_set_header X-Forwarded-Proto $scheme;\n        location / {{ proxy_pass http://sink; }}"
        );
        Nginx::start_raw(
            "worker_processes auto;",
            &format!("upstream sink {{ server {upstream};{keepalive} }}\n"),
            &server,
            tls,
            4096,
        )
    }

    /// The streaming configuration with TLS, for `connections` clients at once: one worker
    /// per core, each allowed that many connections (and file descriptors).
    ///
    /// # Errors
    /// When nginx is missing or does not listen.
    pub fn start_for_connections(
        upstream: SocketAddr,
        cert: &std::path::Path,
        key: &std::path::Path,
        connections: usize,
    ) -> io::Result<Nginx> {
        let n = connections + 64;
        Nginx::start_raw(
            &format!("worker_processes auto;\nworker_rlimit_nofile {};", 2 * n),
            &format!("upstream sink {{ server {upstream}; keepalive 64; }}\n"),
            "proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        \
             location / { proxy_pass http://sink; }",
            Some((cert, key)),
            n,
        )
    }

    /// nginx with `main` directives, `http` directives and one server block holding
    /// `server`, listening on a free port (TLS 1.2/1.3 and HTTP/2 when `tls` names a
    /// certificate and key file).
    pub fn start_raw(
        main: &str,
        http: &str,
        server: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
        worker_connections: usize,
    ) -> io::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let user = if is_root() { "user root;\n" } else { "" };
        let listen = match tls {
            Some((cert, key)) => format!(
                "listen {addr} ssl http2;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;",
                cert.display(),
                key.display()
            ),
            None => format!("listen {addr};"),
        };
        let d = dir.path().display();
        let conf = format!(
            "{user}{main}\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections {worker_connections}; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
             {http}\
             server {{\n        {listen}\n        {server}\n    }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        if let Err(e) = wait_for_port(addr, Duration::from_secs(10)) {
            let _ = nginx.child.kill();
            return Err(e);
        }
        Ok(nginx)
    }

    /// The origin of the small-GET comparison: one worker answering `ok\n` to everything,
    /// keeping connections open for as many requests as come.
    ///
    /// # Errors
    /// When nginx is missing or does not listen.
    pub fn origin() -> io::Result<Nginx> {
        Nginx::start_raw(
            "worker_processes 1;",
            "",
            "keepalive_requests 10000000;\n        location / { return 200 \"ok\\n\"; }",
            None,
            4096,
        )
    }

    /// nginx serving the files under `root` as they are (its own `ETag`, `Accept-Ranges`,
    /// ranges and types from Debian's `mime.types`), with `server` directives added
    /// (locations of a test's own).
    ///
    /// # Errors
    /// When nginx is missing or does not listen.
    pub fn static_files(root: &std::path::Path, server: &str) -> io::Result<Nginx> {
        Nginx::start_raw(
            "worker_processes 1;",
            "include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n",
            &format!("root {};\n        {server}", root.display()),
            None,
            1024,
        )
    }

    /// Asks the master to reload its configuration and certificates (SIGHUP), as
    /// acme-companion does after a renewal.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn reload(&self) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err("nginx did not take SIGHUP".to_string())
        }
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut pids = vec![master];
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
        pids
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM via kill(1) lets the master stop its workers; fall back to SIGKILL.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
