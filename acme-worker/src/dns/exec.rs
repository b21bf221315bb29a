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
/// How much of stderr a failure quotes.
const STDERR_QUOTE: usize = 2048;

/// Runs `command action fqdn value`.
///
/// # Errors
/// When it cannot start, runs longer than [`RUN_TIMEOUT`] or exits non-zero.
pub async fn run(command: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), String> {
    let shown = command.display();
    let mut child = tokio::process::Command::new(command)
        .args([action, fqdn, value])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("acme.dns-exec {shown}: cannot start: {e}"))?;
    let mut stderr = child.stderr.take();
    let collect = async move {
        let mut out = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        out
    };
    let waited = tokio::time::timeout(RUN_TIMEOUT, async {
        let (status, err) = tokio::join!(child.wait(), collect);
        (status, err)
    })
    .await;
    let Ok((status, err)) = waited else {
        return Err(format!(
            "acme.dns-exec {shown} {action}: still running after {}s; killed",
            RUN_TIMEOUT.as_secs()
        ));
    };
    let status = status.map_err(|e| format!("acme.dns-exec {shown}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&err);
    let text = text.trim();
    let tail = if text.len() > STDERR_QUOTE {
        let mut at = text.len() - STDERR_QUOTE;
        while !text.is_char_boundary(at) {
            at += 1;
        }
        &text[at..]
    } else {
        text
    };
    Err(format!(
        "acme.dns-exec {shown} {action} {fqdn}: {status}{}",
        if tail.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", tail.escape_debug())
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
