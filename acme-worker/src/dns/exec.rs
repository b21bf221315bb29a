//! The `exec` provider: any DNS API, scripted. berth-acme runs `CMD present FQDN VALUE` to
//! publish a record and `CMD cleanup FQDN VALUE` to remove it (lego's convention: FQDN ends
//! with a dot, e.g. `_acme-challenge.example.com.`). Exit status 0 is success; anything else
//! fails that certificate's order, with the status and the end of stderr in the log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Longest run of the program.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of stderr a failure quotes (the end of it; only that much is kept).
const STDERR_QUOTE: usize = 2048;
/// How long stderr may stay open after the program exited (a child it left in the
/// background may hold it): what arrived by then is what is quoted.
const STDERR_GRACE: Duration = Duration::from_secs(1);

/// Where a failure's message quotes the program's stderr: the log shows it, `/certificates`
/// (which may be scraped from further away) stops before it.
pub const STDERR_MARK: &str = "; stderr: ";

/// Reads `stderr` to its end, keeping only the last [`STDERR_QUOTE`] bytes in `kept`.
async fn tail_of(mut stderr: tokio::process::ChildStderr, kept: &std::sync::Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let mut kept = kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.extend_from_slice(&chunk[..n]);
        if kept.len() > STDERR_QUOTE {
            let excess = kept.len() - STDERR_QUOTE;
            kept.drain(..excess);
        }
    }
}

/// Runs `command action fqdn value`, for at most [`RUN_TIMEOUT`].
///
/// # Errors
/// When it cannot start, runs too long or exits non-zero.
pub async fn run(command: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
    run_within(command, action, fqdn, value, RUN_TIMEOUT).await
}

/// [`run`] with its own time limit. The program runs in a process group of its own, which is
/// killed as a whole when the time is up, and after the program exited (whatever it left
/// running in the background goes with it).
///
/// # Errors
/// As [`run`].
pub async fn run_within(
    command: &Path,
    action: &str,
    fqdn: &str,
    value: &str,
    limit: Duration,
) -> Result<(), String> {
    let shown = command.display();
    let mut child = tokio::process::Command::new(command)
        .args([action, fqdn, value])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("acme.dns-exec {shown}: cannot start: {e}"))?;
    let group = child.id();
    let kept = std::sync::Mutex::new(Vec::new());
    let stderr = child.stderr.take();
    let reading = async {
        if let Some(stderr) = stderr {
            tail_of(stderr, &kept).await;
        }
    };
    tokio::pin!(reading);
    let mut read_all = false;
    let waited = tokio::time::timeout(limit, async {
        loop {
            tokio::select! {
                status = child.wait() => return status,
                () = &mut reading, if !read_all => read_all = true,
            }
        }
    })
    .await;
    let status = match waited {
        Ok(status) => status,
        Err(_) => {
            kill_group(group);
            let _ = child.wait().await;
            return Err(format!(
                "acme.dns-exec {shown} {action}: still running after {}s; killed{}",
                limit.as_secs(),
                quote(&kept)
            ));
        }
    };
    if !read_all {
        // What the program wrote before it exited; a child it left behind may keep stderr
        // open, and is not waited for.
        let _ = tokio::time::timeout(STDERR_GRACE, &mut reading).await;
    }
    // Whatever it left running in its group goes with it.
    kill_group(group);
    let status = status.map_err(|e| format!("acme.dns-exec {shown}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "acme.dns-exec {shown} {action} {fqdn}: {status}{}",
        quote(&kept)
    ))
}

/// The end of the program's stderr, after [`STDERR_MARK`]; empty when it wrote nothing.
fn quote(kept: &std::sync::Mutex<Vec<u8>>) -> String {
    let kept = kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = String::from_utf8_lossy(&kept);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("{STDERR_MARK}{}", text.escape_debug())
    }
}

/// Kills the process group `leader` leads (the program and whatever it started); a group
/// that is gone already is fine.
fn kill_group(leader: Option<u32>) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    let Some(pid) = leader.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    match killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(
            pgid = pid,
            "acme: cannot kill the dns-exec process group: {e}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`run_within`], again when another test's fork still held the script open for writing
    /// (ETXTBSY: "Text file busy"), which says nothing about the code under test.
    async fn run_within(
        command: &Path,
        action: &str,
        fqdn: &str,
        value: &str,
        limit: Duration,
    ) -> Result<(), String> {
        for _ in 0..20 {
            match super::run_within(command, action, fqdn, value, limit).await {
                Err(e) if e.contains("Text file busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        Err("the script stayed busy".into())
    }

    async fn run(command: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
        run_within(command, action, fqdn, value, RUN_TIMEOUT).await
    }

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("hook");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    #[tokio::test]
    async fn arguments_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("args");
        let ok = script(dir.path(), &format!("echo \"$@\" > {}", out.display()));
        run(&ok, "present", "_acme-challenge.a.test.", "v4lue")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap_or_default(),
            "present _acme-challenge.a.test. v4lue\n"
        );
        let fails = script(dir.path(), "echo 'zone not found' >&2; exit 3");
        let e = run(&fails, "cleanup", "_acme-challenge.a.test.", "v")
            .await
            .expect_err("exit 3");
        assert!(
            e.contains("cleanup _acme-challenge.a.test.: exit status: 3; stderr: zone not found"),
            "{e}"
        );
        let missing = dir.path().join("missing");
        let e = run(&missing, "present", "x.", "v")
            .await
            .expect_err("missing");
        assert!(e.contains("cannot start"), "{e}");
    }
    #[tokio::test]
    async fn a_program_that_hangs_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pid_file = dir.path().join("child.pid");
        let hangs = script(
            dir.path(),
            &format!("sleep 30 & echo $! > {}\nwait", pid_file.display()),
        );
        let started = std::time::Instant::now();
        let e = run_within(&hangs, "present", "x.", "v", Duration::from_secs(1))
            .await
            .expect_err("hangs");
        assert!(e.contains("still running after 1s; killed"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let child = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let child = child.trim();
        assert!(!child.is_empty(), "the script never started its child");
        // Killed with its group: gone, or a zombie awaiting its reaper, once the signal has
        // been taken (it is delivered when the process next runs).
        let dead = || {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !dead() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dead(), "the background child lives on");
    }

    #[tokio::test]
    async fn a_child_left_holding_stderr_does_not_hold_up_a_success() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let detaches = script(dir.path(), "sleep 20 >&2 &\nexit 0");
        let started = std::time::Instant::now();
        run(&detaches, "present", "x.", "v")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn only_the_end_of_a_long_stderr_is_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let chatty = script(
            dir.path(),
            "head -c 5000000 /dev/zero | tr '\\0' x >&2; echo THE-END >&2; exit 1",
        );
        let e = run(&chatty, "present", "x.", "v")
            .await
            .expect_err("exit 1");
        assert!(
            e.ends_with("THE-END"),
            "{}",
            &e[e.len().saturating_sub(100)..]
        );
        assert!(e.len() < STDERR_QUOTE + 200, "{}", e.len());
    }
}
