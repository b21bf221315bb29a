//! Running `berth` (and other servers) as real processes on ephemeral loopback ports.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command for `program` that cannot outlive the test that starts it: run through
/// `setpriv --pdeathsig KILL` (util-linux), so the kernel kills it when the thread that
/// spawned it — the test's — ends, even when the test process ends without running
/// destructors (a test binary's last test finishing while another thread still holds a
/// server, a test killed by a timeout). A `Drop` that kills the child stays the normal way
/// out; this is for when it does not run. Call it from the test's own thread (not from a
/// short-lived helper thread, whose end would kill the program early).
pub fn tied(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// A free TCP port on 127.0.0.1 (bound, then released), never the same twice in one
/// process: tests run in parallel, and berth binds with `SO_REUSEPORT`, so two servers
/// handed the same port would both bind it and share its connections instead of failing.
///
/// # Panics
/// If no port can be bound.
#[allow(clippy::unwrap_used)]
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until something accepts connections at `addr`.
///
/// # Errors
/// When nothing does within `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens on {addr} after {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM`).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system, every thread) a process has used so far, in seconds. `/proc`
/// counts it in USER_HZ ticks, which Linux fixes at 100 per second for user space.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat).map(|ticks| ticks as f64 / 100.0)
}

/// utime + stime of one `/proc/PID/stat` line (fields 14 and 15; the command name, field 2,
/// is in parentheses and may hold spaces and parentheses).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Samples the summed resident memory of some processes every 20 ms, in a thread, until
/// stopped; reports the peak.
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    /// Starts sampling `pids`.
    pub fn start(pids: Vec<u32>) -> PeakRss {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak = std::sync::Arc::new(AtomicU64::new(0));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                let total: u64 = pids
                    .iter()
                    .filter_map(|pid| memory_kib(*pid))
                    .map(|m| m.0)
                    .sum();
                p.fetch_max(total, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss {
            peak,
            done,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the peak, KiB.
    pub fn stop(mut self) -> u64 {
        use std::sync::atomic::Ordering;
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::SeqCst)
    }
}

/// `config` with the listener placeholders filled in.
fn fill(
    config: &str,
    http: SocketAddr,
    https: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> String {
    config
        .replace("{http}", &http.to_string())
        .replace("{https}", &https.map(|a| a.to_string()).unwrap_or_default())
        .replace("{admin}", &admin.map(|a| a.to_string()).unwrap_or_default())
}

/// Starts `binary` on `dir/berth.toml`, logging to `dir/berth.log`.
fn spawn(binary: &Path, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("berth.log"))?;
    tied(binary)
        .arg("--config")
        .arg(dir.join("berth.toml"))
        .args(extra)
        .envs(env.iter().copied())
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
}

/// Polls `check` every 50 ms until it holds; returns how long that took.
///
/// # Panics
/// When it does not hold within `limit`: the message is `what` and `logs()`.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    logs: impl Fn() -> String,
) -> Duration {
    let started = std::time::Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `berth`; killed when dropped.
pub struct BerthProcess {
    child: Child,
    /// The plain HTTP listener.
    pub http: SocketAddr,
    /// The HTTPS listener, when the config has `{https}`.
    pub https: Option<SocketAddr>,
    /// The admin listener, when the config has `{admin}`.
    pub admin: Option<SocketAddr>,
    /// Directory with the config file and the log.
    pub dir: tempfile::TempDir,
}

impl BerthProcess {
    /// Starts `binary` on `config`, where the strings `{http}`, `{https}` and `{admin}` stand
    /// for the listener addresses berth is given. Waits until the listeners accept connections.
    ///
    /// # Errors
    /// When berth cannot be started or does not listen within 20 s (its log is included).
    pub fn start(binary: &Path, config: &str) -> io::Result<BerthProcess> {
        BerthProcess::start_with_env(binary, config, &[])
    }

    /// [`BerthProcess::start`], with these environment variables set for berth alone.
    ///
    /// # Errors
    /// As [`BerthProcess::start`].
    pub fn start_with_env(
        binary: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> io::Result<BerthProcess> {
        BerthProcess::start_with_https_on(binary, config, env, [127, 0, 0, 1].into())
    }

    /// [`BerthProcess::start_with_env`], with `{https}` on `ip` (a port free on loopback is
    /// taken): for clients that treat loopback addresses differently, such as dockerd,
    /// which reads no client certificates for a registry on one.
    ///
    /// # Errors
    /// As [`BerthProcess::start`].
    pub fn start_with_https_on(
        binary: &Path,
        config: &str,
        env: &[(&str, &str)],
        ip: std::net::IpAddr,
    ) -> io::Result<BerthProcess> {
        let http: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("berth.toml");
        let https = config
            .contains("{https}")
            .then(|| SocketAddr::new(ip, free_port()));
        let admin = config
            .contains("{admin}")
            .then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        std::fs::write(&config_path, fill(config, http, https, admin))?;
        let child = spawn(binary, dir.path(), &[], env)?;
        let mut process = BerthProcess {
            child,
            http,
            https,
            admin,
            dir,
        };
        let waited = wait_for_port(http, Duration::from_secs(20))
            .and_then(|()| https.map_or(Ok(()), |a| wait_for_port(a, Duration::from_secs(20))))
            .and_then(|()| admin.map_or(Ok(()), |a| wait_for_port(a, Duration::from_secs(20))));
        if let Err(e) = waited {
            let log = process.log();
            let _ = process.child.kill();
            return Err(io::Error::new(e.kind(), format!("{e}; berth log:\n{log}")));
        }
        Ok(process)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file berth was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("berth.toml")
    }

    /// Replaces the config file (placeholders filled in as at start), atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn rewrite_config(&self, config: &str) -> io::Result<()> {
        let tmp = self.dir.path().join(".berth.toml.tmp");
        std::fs::write(&tmp, fill(config, self.http, self.https, self.admin))?;
        std::fs::rename(&tmp, self.config_path())
    }

    /// Sends a signal by name (`HUP`, `QUIT`, `TERM`) with `kill(1)`.
    ///
    /// # Errors
    /// When `kill` fails (the process is gone).
    pub fn signal(&self, name: &str) -> io::Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -s {name} failed")))
        }
    }

    /// Hands this berth's listeners to a new process of `binary` (`--upgrade`, same config):
    /// starts it, sends this one SIGQUIT, and waits until the new one runs.
    ///
    /// # Errors
    /// When the new process cannot be started or does not take over within 20 s.
    pub fn upgrade(&self, binary: &Path) -> io::Result<BerthProcess> {
        let dir = tempfile::tempdir()?;
        std::fs::copy(self.config_path(), dir.path().join("berth.toml"))?;
        let child = spawn(binary, dir.path(), &["--upgrade"], &[])?;
        let mut process = BerthProcess {
            child,
            http: self.http,
            https: self.https,
            admin: self.admin,
            dir,
        };
        // The new process waits for the sockets on the upgrade socket; give it a moment to
        // start listening there before the old one is told to send them.
        std::thread::sleep(Duration::from_millis(300));
        self.signal("QUIT")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !process.log().contains("berth: running on") {
            if !process.running() || std::time::Instant::now() > deadline {
                let _ = process.child.kill();
                return Err(io::Error::other(format!(
                    "the new berth did not take over; its log:\n{}",
                    process.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(process)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit; its exit status, or `None` if it still
    /// runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// Resident and peak resident memory, KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        memory_kib(self.pid())
    }

    /// Everything berth has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("berth.log")
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::{stat_cpu_ticks, tied};

    /// A server a test leaves behind without dropping it — leaked, as when the test process
    /// ends without running destructors — is gone once the test's thread is.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_tied_process_ends_with_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| {
            let child = tied("sleep").arg("600").spawn().unwrap();
            let pid = child.id();
            // Wait until setpriv has become sleep (the death signal is set by then).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
                != "sleep\n"
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "setpriv never ran sleep"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            std::mem::forget(child);
            pid
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Killed and not reaped (nobody waits for it): a zombie, or gone.
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after_name = state.rsplit_once(") ").map_or("", |(_, rest)| rest);
            if state.is_empty() || after_name.starts_with('Z') {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running: {state}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "4242 (bare (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 170 31 0 0 20 0 3 0";
        assert_eq!(stat_cpu_ticks(stat), Some(201));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1"), None);
    }
}
