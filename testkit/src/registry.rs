//! Debian's `docker-registry` (distribution 2.8) as a plain process with htpasswd auth, and
//! `skopeo` to push and pull through whatever sits in front of it.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_for_port};

/// User name of the test registry.
pub const USER: &str = "berth";
/// Password of the test registry.
pub const PASSWORD: &str = "s3cret-pass";

/// A running registry; killed when dropped.
pub struct Registry {
    child: Child,
    /// Where it listens (plain HTTP, or HTTPS when started with [`Registry::start_tls`]).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts `docker-registry serve` with filesystem storage in a temporary directory and
    /// htpasswd auth (bcrypt, made with `htpasswd -Bbn`) for [`USER`]/[`PASSWORD`].
    ///
    /// # Errors
    /// When `htpasswd` or `docker-registry` are missing or the registry does not listen.
    pub fn start() -> io::Result<Registry> {
        Registry::start_with(true, None)
    }

    /// Like [`Registry::start`], serving HTTPS itself with the given PEM certificate and key
    /// files (the "no proxy" case of the benchmarks).
    ///
    /// # Errors
    /// As [`Registry::start`].
    pub fn start_tls(cert: &Path, key: &Path) -> io::Result<Registry> {
        Registry::start_with(true, Some((cert, key)))
    }

    /// Starts the registry without any auth of its own (for a proxy that does the auth).
    ///
    /// # Errors
    /// As [`Registry::start`].
    pub fn start_open() -> io::Result<Registry> {
        Registry::start_with(false, None)
    }

    fn start_with(auth: bool, tls: Option<(&Path, &Path)>) -> io::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other("htpasswd failed"));
        }
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, &out.stdout)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let auth_section = if auth {
            format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        let tls_section = match tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: berth-test-secret\n\
             {tls_section}{auth_section}",
            storage.display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        let mut registry = Registry { child, addr, dir };
        if let Err(e) = wait_for_port(addr, Duration::from_secs(20)) {
            let _ = registry.child.kill();
            return Err(e);
        }
        Ok(registry)
    }

    /// The registry's storage root (`docker/registry/v2/...` below it once something is
    /// stored).
    pub fn storage(&self) -> std::path::PathBuf {
        self.dir.path().join("storage")
    }

    /// Kills the registry process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The requests the registry answered whose method is `method` and whose path starts with
    /// `prefix`, counted from its access log (one line per request, written as it completes;
    /// [`Registry::settle`] first for a count that includes every request made so far).
    pub fn requests(&self, method: &str, prefix: &str) -> usize {
        let wanted = format!("\"{method} {prefix}");
        self.log().lines().filter(|l| l.contains(&wanted)).count()
    }

    /// Waits until the registry has logged every request it answered before this call: asks
    /// it for `/v2/` with a mark of its own and waits for that request's line (lines are
    /// written as requests complete).
    ///
    /// # Errors
    /// When the registry does not answer, or its line does not appear within 10 s.
    pub fn settle(&self) -> io::Result<()> {
        use std::io::{Read, Write};
        static MARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mark = MARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = format!("/v2/?settle={mark}");
        let mut conn = std::net::TcpStream::connect(self.addr)?;
        write!(conn, "GET {target} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)?;
        let line = format!("\"GET {target} ");
        let started = std::time::Instant::now();
        while !self.log().contains(&line) {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other(format!(
                    "the registry never logged {target}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `skopeo` with the given arguments (plus `--insecure-policy`).
///
/// # Errors
/// When skopeo cannot be run; a failed copy is in the returned output's status.
pub fn skopeo(args: &[&str]) -> io::Result<Output> {
    skopeo_resolving(&[], args)
}

/// Runs `skopeo` with `names` resolving to 127.0.0.1: in a private mount namespace
/// (`unshare -m`, needs root) whose `/etc/hosts` says so, so a registry can be reached
/// under a real host name without touching the machine's own resolver.
///
/// # Errors
/// When skopeo cannot be run; a failed copy is in the returned output's status.
pub fn skopeo_resolving(names: &[&str], args: &[&str]) -> io::Result<Output> {
    skopeo_resolving_to("127.0.0.1", names, args)
}

/// [`skopeo_resolving`], with `names` resolving to `ip` (a Swarm node's address, say).
///
/// # Errors
/// When skopeo cannot be run; a failed copy is in the returned output's status.
pub fn skopeo_resolving_to(ip: &str, names: &[&str], args: &[&str]) -> io::Result<Output> {
    if names.is_empty() {
        return Command::new("skopeo")
            .arg("--insecure-policy")
            .args(args)
            .stdin(Stdio::null())
            .output();
    }
    let mut hosts = tempfile::NamedTempFile::new()?;
    let mut text = String::from("127.0.0.1 localhost\n");
    for n in names {
        text.push_str(&format!("{ip} {n}\n"));
    }
    std::io::Write::write_all(&mut hosts, text.as_bytes())?;
    Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec skopeo --insecure-policy \"$@\"")
        .arg(hosts.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// `skopeo copy` of an OCI layout to `docker://{authority}/{repo}:{tag}` over plain HTTP with
/// the test credentials.
///
/// # Errors
/// When skopeo fails; the error has its output.
/// `resolve`: host names that resolve to 127.0.0.1 for skopeo (see [`skopeo_resolving`]).
pub fn push(
    layout: &Path,
    tag: &str,
    authority: &str,
    repo: &str,
    resolve: &[&str],
) -> io::Result<()> {
    let src = format!("oci:{}:{tag}", layout.display());
    let dst = format!("docker://{authority}/{repo}:{tag}");
    let creds = format!("{USER}:{PASSWORD}");
    check(skopeo_resolving(
        resolve,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &src,
            &dst,
        ],
    )?)
}

/// `skopeo copy` back from the registry into a new OCI layout; returns its directory.
///
/// # Errors
/// When skopeo fails; the error has its output.
/// `resolve`: as for [`push`].
pub fn pull(
    authority: &str,
    repo: &str,
    tag: &str,
    into: &Path,
    resolve: &[&str],
) -> io::Result<PathBuf> {
    let src = format!("docker://{authority}/{repo}:{tag}");
    let dst = format!("oci:{}:{tag}", into.display());
    let creds = format!("{USER}:{PASSWORD}");
    check(skopeo_resolving(
        resolve,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &creds,
            &src,
            &dst,
        ],
    )?)?;
    Ok(into.to_path_buf())
}

fn check(out: Output) -> io::Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "skopeo failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}
