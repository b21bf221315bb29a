//! What the berth-acme integration tests share: the `berth` binary, a berth-acme daemon,
//! waiting for verified HTTPS, a certificate's serial.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `berth` binary, built beside this test's own binaries.
pub(crate) fn berth_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join("berth");
    assert!(
        path.exists(),
        "{} missing: build the workspace",
        path.display()
    );
    path
}

/// Retries `curl` to `https://host:port/path` through berth, verifying against `root`, until
/// what it printed (response head and body) satisfies `accept`, for up to 60 s; returns
/// that output. On timeout, fails with curl's error and `logs()`.
pub(crate) fn wait_for_verified_https(
    https: std::net::SocketAddr,
    host: &str,
    path: &str,
    root: &Path,
    accept: impl Fn(&str) -> bool,
    logs: impl Fn() -> String,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-D", "-", "--cacert"])
            .arg(root)
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", https.port()))
            .arg(format!("https://{host}:{}{path}", https.port()))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&r.stdout).to_string();
        if r.status.success() && accept(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no verified HTTPS to {host}: {}\n{}",
            String::from_utf8_lossy(&r.stderr),
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

pub(crate) fn serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs berth-acme on `config` with `args` (`["once"]`) and waits for it.
pub(crate) fn berth_acme(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth-acme"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// What a finished process printed, stdout then stderr.
pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A berth-acme daemon, killed when dropped.
pub(crate) struct Daemon(pub std::process::Child, pub PathBuf);

impl Daemon {
    pub(crate) fn start(config: &Path, log: PathBuf) -> Daemon {
        Daemon::start_with(config, log, &[])
    }

    /// [`Daemon::start`] with more arguments (`--force-renewal`).
    pub(crate) fn start_with(config: &Path, log: PathBuf, args: &[&str]) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth-acme"))
            .arg("--config")
            .arg(config)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon(child, log)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The serial of the certificate `https` presents for `host` (SNI), as openssl prints it;
/// empty when the handshake fails.
pub(crate) fn served_serial(https: std::net::SocketAddr, host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect {https} -servername {host} 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) use berth_testkit::wait_until;
