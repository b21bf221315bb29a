//! Upstreams that read request paths their own way, for the tests of path-scoped routes:
//! Debian's Tomcat (a servlet container: `;parameters` removed from each segment) serving
//! static files, and a Node app that routes on `new URL(req.url, base)` (WHATWG: `\` read as
//! `/`, dot segments removed, a leading `//` read as an authority). Each serves
//! `/admin/secret.txt` with the body `admin secret` and anything else with `public page`,
//! and stops when dropped.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_for_port};

/// Where Debian's `tomcat10` package puts Tomcat.
const CATALINA_HOME: &str = "/usr/share/tomcat10";

/// A running upstream process with its files; killed when dropped.
pub struct PathApp {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl PathApp {
    /// Starts Tomcat (Debian's `tomcat10`) on an ephemeral loopback port, serving static files
    /// with its default servlet: `/admin/secret.txt` and `/index.txt`.
    ///
    /// # Errors
    /// When Tomcat is not installed or does not listen within 60 s (its log is included).
    pub fn tomcat() -> io::Result<PathApp> {
        let dir = tempfile::tempdir()?;
        let base = dir.path();
        for sub in ["conf", "webapps/ROOT/admin", "logs", "temp", "work"] {
            std::fs::create_dir_all(base.join(sub))?;
        }
        std::fs::copy("/etc/tomcat10/web.xml", base.join("conf/web.xml")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("/etc/tomcat10/web.xml: {e} (install tomcat10)"),
            )
        })?;
        std::fs::write(base.join("webapps/ROOT/admin/secret.txt"), "admin secret")?;
        std::fs::write(base.join("webapps/ROOT/index.txt"), "public page")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // No shutdown port (-1): the process is stopped by a signal.
        std::fs::write(
            base.join("conf/server.xml"),
            format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{}" address="127.0.0.1" protocol="HTTP/1.1" />
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false" />
    </Engine>
  </Service>
</Server>
"#,
                addr.port()
            ),
        )?;
        // catalina.sh `run` execs java in the foreground: killing the child stops Tomcat.
        let child = spawn(
            crate::process::tied(Path::new(CATALINA_HOME).join("bin/catalina.sh"))
                .arg("run")
                .env("CATALINA_HOME", CATALINA_HOME)
                .env("CATALINA_BASE", base)
                .env("CATALINA_TMPDIR", base.join("temp")),
            base,
        )?;
        PathApp { addr, child, dir }.ready(Duration::from_secs(60))
    }

    /// Starts a Node app that routes on the WHATWG reading of the request target, as the
    /// frameworks on Node, Deno and Bun do.
    ///
    /// # Errors
    /// When `node` is not installed or the app does not listen within 20 s.
    pub fn node() -> io::Result<PathApp> {
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let script = dir.path().join("app.js");
        std::fs::write(
            &script,
            r#"const http = require("http");
const [host, port] = [process.argv[2], Number(process.argv[3])];
http.createServer((req, res) => {
  const path = new URL(req.url, "http://app.test").pathname;
  const body = path === "/admin/secret.txt" ? "admin secret" : "public page";
  res.writeHead(200, { "content-type": "text/plain", "x-read-as": path });
  res.end(body);
}).listen(port, host);
"#,
        )?;
        let child = spawn(
            crate::process::tied("node")
                .arg(&script)
                .arg(addr.ip().to_string())
                .arg(addr.port().to_string()),
            dir.path(),
        )?;
        PathApp { addr, child, dir }.ready(Duration::from_secs(20))
    }

    fn ready(mut self, limit: Duration) -> io::Result<PathApp> {
        if let Err(e) = wait_for_port(self.addr, limit) {
            let _ = self.child.kill();
            return Err(io::Error::new(e.kind(), format!("{e}\n{}", self.log())));
        }
        Ok(self)
    }

    /// What the process has written to its stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("app.log")).unwrap_or_default()
    }
}

fn spawn(command: &mut Command, dir: &Path) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("app.log"))?;
    command
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
}

impl Drop for PathApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
