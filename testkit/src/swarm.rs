//! A real Docker Swarm for tests: the single-node Swarm that `./scripts/swarm-daemon start`
//! runs beside the host's daemon (in a network namespace of its own, see that script), the
//! test images loaded into it, an image of berth made of the built binaries, and services and
//! overlay networks that remove themselves when dropped.
//!
//! Task addresses live on overlay networks that only containers reach, so berth runs as a
//! service on the overlay; tests reach it through host-mode published ports on the node's
//! address, [`NODE_IP`].

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::docker::{
    copy_with_libraries, docker_on, ensure_images, import, unique, BUSYBOX, REGISTRY,
};

/// The Swarm daemon's socket.
pub const SOCKET: &str = "unix:///run/berth-swarm/docker.sock";
/// The node's address, where host-mode published ports answer.
pub const NODE_IP: &str = "10.231.0.2";
/// The host's address as the node's containers reach it.
pub const HOST_IP: &str = "10.231.0.1";

/// Runs the docker CLI against the Swarm daemon; returns its trimmed stdout.
///
/// # Errors
/// When the command fails (its stderr is included).
pub fn sdocker(args: &[&str]) -> io::Result<String> {
    docker_on(Some(SOCKET), args)
}

/// The number of upstreams of `host`'s routes in `/routes` of the admin listener at
/// `admin` (`ip:port`); 0 when it does not answer.
pub fn route_upstreams(admin: &str, host: &str) -> usize {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "2"])
        .arg(format!("http://{admin}/routes"))
        .output();
    let Ok(out) = out else { return 0 };
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    page["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["host"] == host)
        .map(|r| r["upstreams"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Requires the Swarm daemon, a manager of an active Swarm, with the test images loaded. A
/// test that needs it fails without it — the test command starts it.
///
/// # Panics
/// When the daemon does not answer or is not in a Swarm, or the images cannot be loaded.
pub fn require() {
    let state = sdocker(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ]);
    assert_eq!(
        state.as_deref().ok(),
        Some("active true"),
        "no Swarm manager answers at {SOCKET} ({state:?}): run ./scripts/test, which starts \
         one with ./scripts/swarm-daemon start"
    );
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        remove_leftovers();
        ensure_images().map_err(|e| e.to_string())?;
        for image in [BUSYBOX, REGISTRY] {
            load(image).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    if let Err(e) = loaded {
        panic!("loading the test images into the Swarm daemon: {e}");
    }
}

/// Removes what test runs that are no longer alive left behind (a killed run's services
/// would otherwise be routed by every later test's berth): services, stacks' volumes,
/// secrets and networks named `berth-test-<pid>-...` whose process is gone.
fn remove_leftovers() {
    let dead = |name: &str| {
        name.strip_prefix("berth-test-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
    };
    let names = |args: &[&str]| -> Vec<String> {
        sdocker(args)
            .map(|out| {
                out.lines()
                    .map(str::to_string)
                    .filter(|n| dead(n))
                    .collect()
            })
            .unwrap_or_default()
    };
    for s in names(&["service", "ls", "--format", "{{.Name}}"]) {
        let _ = sdocker(&["service", "rm", &s]);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for v in names(&["volume", "ls", "--format", "{{.Name}}"]) {
        while sdocker(&["volume", "rm", &v]).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for s in names(&["secret", "ls", "--format", "{{.Name}}"]) {
        let _ = sdocker(&["secret", "rm", &s]);
    }
    for c in names(&["config", "ls", "--format", "{{.Name}}"]) {
        let _ = sdocker(&["config", "rm", &c]);
    }
    for n in names(&["network", "ls", "--format", "{{.Name}}"]) {
        while sdocker(&["network", "rm", &n]).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Copies `image` from the host's daemon into the Swarm daemon, unless it is there.
fn load(image: &str) -> io::Result<()> {
    if sdocker(&["image", "inspect", "--format", "{{.Id}}", image]).is_ok() {
        return Ok(());
    }
    copy_image(image, SOCKET)
}

/// `docker save image | docker -H to load`: an image of the host's daemon into another.
fn copy_image(image: &str, to: &str) -> io::Result<()> {
    let save = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = save
        .stdout
        .ok_or_else(|| io::Error::other("docker save gave no stdout"))?;
    let out = Command::new("docker")
        .args(["-H", to, "load"])
        .stdin(stdout)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "docker -H {to} load {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// Builds an image of berth in the Swarm daemon from the built binaries (debug symbols
/// stripped, with their libraries): `/usr/local/bin/berth` (the entrypoint) and
/// `/usr/local/bin/berth-acme`. One per test process; returns its name.
///
/// # Errors
/// When a binary is missing or the import fails.
pub fn berth_image(berth: &Path, berth_acme: &Path) -> io::Result<String> {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_berth_image(berth, berth_acme).map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn build_berth_image(berth: &Path, berth_acme: &Path) -> io::Result<String> {
    let root = tempfile::tempdir()?;
    let bin = root.path().join("usr/local/bin");
    std::fs::create_dir_all(&bin)?;
    for (binary, name) in [(berth, "berth"), (berth_acme, "berth-acme")] {
        copy_with_libraries(binary, &Path::new("/usr/local/bin").join(name), root.path())?;
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg(bin.join(name))
            .status()?;
        if !status.success() {
            return Err(io::Error::other("strip failed: install binutils"));
        }
    }
    for dir in ["tmp", "var/lib/berth", "etc/berth"] {
        std::fs::create_dir_all(root.path().join(dir))?;
    }
    let image = format!("berth-test/berth:{}", std::process::id());
    // Images of earlier test runs (one in use is kept: the removal fails).
    if let Ok(old) = sdocker(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "berth-test/berth",
    ]) {
        for stale in old.lines().filter(|i| *i != image) {
            let _ = sdocker(&["image", "rm", stale]);
        }
    }
    import(
        Some(SOCKET),
        root.path(),
        &image,
        &[
            "WORKDIR /var/lib/berth".to_string(),
            r#"ENTRYPOINT ["/usr/local/bin/berth"]"#.to_string(),
        ],
    )?;
    Ok(image)
}

/// What the tasks of service `name` wrote, standard output and standard error.
pub fn service_logs(name: &str) -> String {
    match Command::new("docker")
        .args(["-H", SOCKET, "service", "logs", "--raw", name])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => e.to_string(),
    }
}

/// berth as a service of the test Swarm: `image` on `network`, reading the Swarm daemon's
/// socket and `<conf_dir>/berth.toml`, with host-mode `ports` (`(target, published)`) and
/// any `extra` arguments of `docker service create` (a placement constraint, say).
///
/// # Errors
/// When the service cannot be created.
pub fn berth_service(
    image: &str,
    network: &str,
    conf_dir: &Path,
    ports: &[(u16, u16)],
    extra: &[&str],
) -> io::Result<Service> {
    let publish: Vec<String> = ports
        .iter()
        .map(|(target, published)| format!("mode=host,target={target},published={published}"))
        .collect();
    let conf = format!("type=bind,source={},target=/etc/berth", conf_dir.display());
    let mut args: Vec<&str> = vec!["--network", network];
    for p in &publish {
        args.extend(["--publish", p.as_str()]);
    }
    args.extend([
        "--mount",
        "type=bind,source=/run/berth-swarm/docker.sock,target=/var/run/docker.sock",
        "--mount",
        &conf,
    ]);
    args.extend_from_slice(extra);
    args.extend([image, "--config", "/etc/berth/berth.toml"]);
    Service::create("berth", &args)
}

/// A Swarm service, removed when dropped.
#[derive(Debug)]
pub struct Service {
    /// Its unique name.
    pub name: String,
}

impl Service {
    /// `docker service create --detach --name <unique> <args...>`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn create(what: &str, args: &[&str]) -> io::Result<Service> {
        let name = unique(what);
        let service = Service { name: name.clone() };
        let mut full = vec!["service", "create", "--detach", "--name", &name];
        full.extend_from_slice(args);
        sdocker(&full)?;
        Ok(service)
    }

    /// `docker service scale --detach <name>=<replicas>`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn scale(&self, replicas: u32) -> io::Result<()> {
        sdocker(&[
            "service",
            "scale",
            "--detach",
            &format!("{}={replicas}", self.name),
        ])
        .map(|_| ())
    }

    /// How many of its tasks Swarm reports running (and wants running).
    pub fn running_tasks(&self) -> usize {
        sdocker(&[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
            &self.name,
        ])
        .map(|out| out.lines().filter(|l| l.starts_with("Running")).count())
        .unwrap_or(0)
    }

    /// The service's logs (for failure messages).
    pub fn logs(&self) -> String {
        service_logs(&self.name)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = sdocker(&["service", "rm", &self.name]);
    }
}

/// An attachable, encrypted overlay network, removed when dropped (once its services'
/// tasks are gone).
#[derive(Debug)]
pub struct Overlay {
    /// Its unique name.
    pub name: String,
}

impl Overlay {
    /// `docker network create -d overlay --attachable --opt encrypted <unique>`.
    ///
    /// # Errors
    /// When the command fails.
    pub fn create(what: &str) -> io::Result<Overlay> {
        Overlay::create_with(what, true)
    }

    /// An overlay, encrypted or not (an encrypted one passes no traffic between the two
    /// nodes of the test Swarm on these machines; on one node it does).
    ///
    /// # Errors
    /// When the command fails.
    pub fn create_with(what: &str, encrypted: bool) -> io::Result<Overlay> {
        let name = unique(what);
        let mut args = vec!["network", "create", "-d", "overlay", "--attachable"];
        if encrypted {
            args.extend(["--opt", "encrypted"]);
        }
        args.push(&name);
        sdocker(&args)?;
        Ok(Overlay { name })
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // Removing a service leaves its tasks' endpoints for a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        while sdocker(&["network", "rm", &self.name]).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The second node's Docker socket (see `scripts/swarm-daemon join2`).
pub const SOCKET2: &str = "unix:///run/berth-swarm2/docker.sock";

/// A second node (a worker, in a network namespace of its own) joined to the test Swarm;
/// it leaves, is removed and is stopped when dropped.
#[derive(Debug)]
pub struct SecondNode {
    /// Its node id in the Swarm.
    pub id: String,
}

fn swarm_daemon(command: &str) -> io::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts/swarm-daemon");
    let out = Command::new(script)
        .arg(command)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "scripts/swarm-daemon {command}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl SecondNode {
    /// Starts and joins the second node, with the busybox test image loaded into it.
    ///
    /// # Errors
    /// When the node cannot be started or joined, or the image not loaded.
    pub fn join() -> io::Result<SecondNode> {
        let id = swarm_daemon("join2")?;
        let node = SecondNode {
            id: id.lines().last().unwrap_or_default().to_string(),
        };
        copy_image(BUSYBOX, SOCKET2)?;
        Ok(node)
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = swarm_daemon("leave2");
    }
}
