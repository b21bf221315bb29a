//! Real Docker for tests: the `docker` CLI against the local daemon, images built locally
//! with `docker import` (nothing can be pulled), and containers and networks that remove
//! themselves when dropped — also when the test fails.
//!
//! Images:
//! - [`BUSYBOX`]: a static busybox; by default `httpd -f -p 80 -h /www`, serving
//!   `/www/index.html` (`busybox`).
//! - [`REGISTRY`]: Debian's `docker-registry` binary with its libraries, listening on 5000
//!   with htpasswd auth for [`crate::registry::USER`] / [`crate::registry::PASSWORD`].

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::registry::{PASSWORD, USER};

/// The busybox test image.
pub const BUSYBOX: &str = "berth-test/busybox:1";
/// The registry test image.
pub const REGISTRY: &str = "berth-test/registry:1";

/// Runs the docker CLI; returns its trimmed stdout.
///
/// # Errors
/// When the command fails (its stderr is included).
pub fn docker(args: &[&str]) -> io::Result<String> {
    docker_on(None, args)
}

/// Runs the docker CLI against the daemon at `host` (`-H`; the default one when `None`);
/// returns its trimmed stdout.
///
/// # Errors
/// When the command fails (its stderr is included).
pub fn docker_on(host: Option<&str>, args: &[&str]) -> io::Result<String> {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    let out = cmd.args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Whether a Docker daemon answers.
pub fn available() -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"]).is_ok()
}

/// Requires a Docker daemon that answers, and builds the test images. A test that needs
/// Docker fails without it — it never passes by skipping: the test command starts a daemon.
///
/// # Panics
/// Without a daemon, and when the test images cannot be built.
pub fn require() {
    assert!(
        available(),
        "no Docker daemon answers: run ./scripts/test, which starts one"
    );
    if let Err(e) = ensure_images() {
        panic!("building the test images: {e}");
    }
}

/// Held shared by every test that uses the Docker daemon, and alone by a test that
/// restarts it: tests of one binary run side by side.
static DAEMON: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// [`require`], holding the daemon shared: it is not restarted while the guard lives.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    let guard = DAEMON.read().await;
    require();
    guard
}

/// [`shared`], for a test that is not async.
pub fn shared_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    let guard = DAEMON.blocking_read();
    require();
    guard
}

/// [`require`], holding the daemon alone: no other test uses it while the guard lives.
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    let guard = DAEMON.write().await;
    require();
    guard
}

/// Runs a registry container configured exactly as the seed recipe configures one for
/// nginx-proxy and acme-companion: `VIRTUAL_HOST` and `LETSENCRYPT_HOST` = `host`,
/// `VIRTUAL_PORT=5000`, `LETSENCRYPT_EMAIL`.
///
/// # Errors
/// When the container does not start.
pub fn run_seed_registry(what: &str, host: &str) -> io::Result<Container> {
    Container::run(
        what,
        &[
            "-e",
            &format!("VIRTUAL_HOST={host}"),
            "-e",
            "VIRTUAL_PORT=5000",
            "-e",
            &format!("LETSENCRYPT_HOST={host}"),
            "-e",
            "LETSENCRYPT_EMAIL=ops@example.test",
            REGISTRY,
        ],
    )
}

/// A name no other test (or test run) uses: `berth-test-<pid>-<n>-<what>`.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "berth-test-{}-{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Builds the test images once per process (and only if they are missing).
///
/// # Errors
/// When an image cannot be built; the message says what was missing.
pub fn ensure_images() -> io::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_if_missing(BUSYBOX, build_busybox)
                .and_then(|()| build_if_missing(REGISTRY, build_registry))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(io::Error::other)
}

fn build_if_missing(image: &str, build: fn(&Path) -> io::Result<Vec<String>>) -> io::Result<()> {
    if docker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok() {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    let changes = build(root.path())?;
    import(None, root.path(), image, &changes)
}

/// `docker import` of the directory `root` as `image`, with Dockerfile-style `changes`, into
/// the daemon at `host` (the default one when `None`).
///
/// # Errors
/// When tar or the import fails.
pub fn import(host: Option<&str>, root: &Path, image: &str, changes: &[String]) -> io::Result<()> {
    let mut args = Vec::new();
    if let Some(h) = host {
        args.push("-H".to_string());
        args.push(h.to_string());
    }
    args.push("import".to_string());
    for c in changes {
        args.push("--change".into());
        args.push(c.clone());
    }
    args.push("-".into());
    args.push(image.into());
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = tar
        .stdout
        .ok_or_else(|| io::Error::other("tar gave no stdout"))?;
    let out = Command::new("docker").args(&args).stdin(stdout).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "docker import {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Copies `binary` to `at` under `root` (an image's root), with the shared libraries `ldd`
/// names at their own paths.
///
/// # Errors
/// When a file cannot be read or written.
pub fn copy_with_libraries(binary: &Path, at: &Path, root: &Path) -> io::Result<()> {
    let mut files = vec![(binary.to_path_buf(), at.to_path_buf())];
    let ldd = Command::new("ldd").arg(binary).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push((p.into(), p.into()));
        }
    }
    for (from, to) in files {
        let target = root.join(to.strip_prefix("/").unwrap_or(&to));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&from, &target)?;
    }
    Ok(())
}

fn build_busybox(root: &Path) -> io::Result<Vec<String>> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err(io::Error::other(
            "/bin/busybox is missing: install busybox-static",
        ));
    }
    for dir in ["bin", "www", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    let applets = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    std::fs::write(root.join("www/index.html"), "busybox\n")?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    Ok(vec![
        "ENV PATH=/bin".into(),
        r#"CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]"#.into(),
    ])
}

fn build_registry(root: &Path) -> io::Result<Vec<String>> {
    let binary = Path::new("/usr/bin/docker-registry");
    if !binary.exists() {
        return Err(io::Error::other(
            "/usr/bin/docker-registry is missing: install docker-registry",
        ));
    }
    copy_with_libraries(binary, binary, root)?;
    for dir in ["tmp", "var/lib/registry", "etc/docker/registry", "auth"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()?;
    if !htpasswd.status.success() {
        return Err(io::Error::other("htpasswd failed: install apache2-utils"));
    }
    std::fs::write(root.join("auth/htpasswd"), &htpasswd.stdout)?;
    std::fs::write(
        root.join("etc/docker/registry/config.yml"),
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n\
         http:\n  addr: :5000\n  secret: berth-test-secret\n\
         auth:\n  htpasswd:\n    realm: berth-test\n    path: /auth/htpasswd\n",
    )?;
    Ok(vec![
        "EXPOSE 5000".into(),
        r#"ENTRYPOINT ["/usr/bin/docker-registry", "serve", "/etc/docker/registry/config.yml"]"#
            .into(),
    ])
}

/// A container that is removed (`docker rm -f`) when dropped.
#[derive(Debug)]
pub struct Container {
    /// Its unique name.
    pub name: String,
}

impl Container {
    /// `docker run -d --name <unique> <args...>`.
    ///
    /// # Errors
    /// When `docker run` fails.
    pub fn run(what: &str, args: &[&str]) -> io::Result<Container> {
        let name = unique(what);
        let mut full = vec!["run", "-d", "--name", &name];
        full.extend_from_slice(args);
        // Name it first, so that a failed start is still removed.
        let container = Container { name: name.clone() };
        docker(&full)?;
        Ok(container)
    }

    /// The container's address on `network`.
    ///
    /// # Errors
    /// When inspect fails or the container has no address there.
    pub fn ip(&self, network: &str) -> io::Result<String> {
        let format = format!("{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}");
        let ip = docker(&["inspect", "--format", &format, &self.name])?;
        if ip.is_empty() {
            Err(io::Error::other(format!(
                "{} has no address on {network}",
                self.name
            )))
        } else {
            Ok(ip)
        }
    }

    /// `docker stop -t 1`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn stop(&self) -> io::Result<()> {
        docker(&["stop", "-t", "1", &self.name]).map(|_| ())
    }

    /// `docker exec <name> <args...>`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn exec(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["exec", self.name.as_str()];
        full.extend_from_slice(args);
        docker(&full)
    }

    /// Waits until the container's health status is `want`.
    ///
    /// # Errors
    /// When it is not within `limit`.
    pub fn wait_health(&self, want: &str, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let status = docker(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &self.name,
            ])?;
            if status == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{} health is {status}, not {want}",
                    self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// A user-defined bridge network, removed when dropped.
#[derive(Debug)]
pub struct Network {
    /// Its unique name.
    pub name: String,
}

impl Network {
    /// `docker network create <unique>`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn create(what: &str) -> io::Result<Network> {
        let name = unique(what);
        docker(&["network", "create", &name])?;
        Ok(Network { name })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// Names in the machine's `/etc/hosts` for as long as the guard lives: for what the Docker
/// daemon resolves itself (a registry's name), which no private mount namespace of a test
/// can change. Each line carries a marker of this process; dropping the guard removes
/// them.
pub struct HostsEntries {
    marker: String,
}

impl HostsEntries {
    /// Appends `ip names...` to `/etc/hosts`.
    ///
    /// # Errors
    /// When `/etc/hosts` cannot be written (the tests run as root).
    pub fn add(ip: &str, names: &[&str]) -> io::Result<HostsEntries> {
        use std::io::Write;
        let marker = format!("# berth-test {}", std::process::id());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open("/etc/hosts")?;
        writeln!(file, "{ip} {} {marker}", names.join(" "))?;
        Ok(HostsEntries { marker })
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = text
                .lines()
                .filter(|l| !l.ends_with(&self.marker))
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

/// The address of the Docker daemon's default bridge on this machine (`docker0`).
///
/// # Errors
/// When the daemon does not answer or has no bridge network.
pub fn bridge_gateway() -> io::Result<String> {
    // The IPv4 gateway among the network's address pools (a daemon may list an IPv6 pool, or
    // one without a gateway, first); else the address of the bridge interface itself.
    let pools = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
    ])?;
    if let Some(v4) = pools
        .split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
    {
        return Ok(v4.to_string());
    }
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "docker0"])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
        .map(str::to_string)
        .ok_or_else(|| {
            io::Error::other(format!(
                "the bridge network has no IPv4 gateway (pools: {pools:?}) and docker0 no address"
            ))
        })
}
