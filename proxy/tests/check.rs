//! `berth check`: every error with its key path, exit 1; the embedded default passes.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

#[test]
fn embedded_default_passes() {
    let out = berth().arg("check").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("embedded default configuration is valid")
    );
}

#[test]
fn every_error_is_named_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[listen]
http = "0.0.0.0:8080"

[defaults]
read-timout = "900s"
connect-timeout = "ten seconds"

[[route]]
host = "registry.example.com"
upstreams = ["127.0.0.1:5000"]

[[route]]
host = "b.example.com"
upstreams = ["127.0.0.1:5000"]

[[route]]
host = "c.example.com"
upstreams = ["x:y"]
"#,
    )
    .unwrap();
    let out = berth()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "defaults.read-timout: unknown key",
        "defaults.connect-timeout: invalid duration \"ten seconds\"",
        "route[2].upstreams[0]: invalid socket address \"x:y\"",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // Running (not just checking) a bad file refuses to start, with the same list.
    let out = berth().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("route[2].upstreams[0]"));
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let out = berth()
        .args(["check", "--config", "/nonexistent/berth.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/berth.toml"));
}

#[test]
fn htpasswd_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(
        &good,
        "alice:$2y$05$1nL5FI/UUYxJTje7P22Sge0bXeZRJhcHOG1EkNC6BPEyU8hlr0nle\n",
    )
    .unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "bob:$apr1$x$y\n").unwrap();
    let missing = dir.path().join("missing");
    let path = dir.path().join("berth.toml");
    let route = |host: &str, file: &std::path::Path| {
        format!(
            "[[route]]\nhost = \"{host}\"\nupstreams = [\"127.0.0.1:5000\"]\nauth.htpasswd = \"{}\"\n",
            file.display()
        )
    };
    std::fs::write(
        &path,
        format!(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n\n{}{}{}[[route]]\nhost = \"d.test\"\nupstreams = [\"127.0.0.1:5000\"]\nauth.htpasswd = \"relative\"\nauth.realm = \"a\\\"b\"\n",
            route("a.test", &good),
            route("b.test", &bad),
            route("c.test", &missing)
        ),
    )
    .unwrap();
    let check = || {
        berth()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    // Key errors first: the relative path and the quote in the realm.
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("route[3].auth.htpasswd: \"relative\" is not an absolute path"),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[3].auth.realm: invalid realm"),
        "{stderr}"
    );

    // Then the files themselves.
    let text = std::fs::read_to_string(&path).unwrap();
    let text = &text[..text.find("[[route]]\nhost = \"d.test\"").unwrap()];
    std::fs::write(&path, text).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("route[1].auth.htpasswd: ") && stderr.contains("line 1: MD5 (apr1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("route[2].auth.htpasswd: ") && stderr.contains("cannot read"),
        "{stderr}"
    );
    assert!(!stderr.contains("route[0]"), "{stderr}");

    // A token secret that is too short is named, without being quoted; a good one passes.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "tooshort\n").unwrap();
    let registry = |secret: &std::path::Path| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n\n[[route]]\nhost = \"r.test\"\nupstreams = [\"127.0.0.1:5000\"]\n\
             profile = \"registry\"\nauth.htpasswd = \"{}\"\nauth.anonymous-read = true\n\
             auth.token-secret-file = \"{}\"\n",
            good.display(),
            secret.display()
        )
    };
    std::fs::write(&path, registry(&secret)).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("route[0].auth.token-secret-file: ")
            && stderr.contains("8 bytes; a token secret needs at least 32"),
        "{stderr}"
    );
    assert!(!stderr.contains("tooshort"), "{stderr}");
    std::fs::write(&secret, "c0ffee".repeat(8)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A client CA file is read as the handshake will read it.
    let ca = dir.path().join("clients.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[listen]\nhttp = \"127.0.0.1:8080\"\n\n[[route]]\nhost = \"c.test\"\n\
             upstreams = [\"127.0.0.1:5000\"]\nclient-ca = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("route[0].client-ca: ") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    std::fs::write(&ca, berth_testkit::tls::TestCa::new("clients").pem()).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_says_what_berth_does_with_an_example_and_version_prints_it() {
    let out = berth().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "edge proxy for self-hosted container registries",
        "Examples:",
        "berth check --config",
        "--upgrade",
        "docs/configuration.md",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    assert!(help.lines().count() <= 40, "more than a screen:\n{help}");
    let out = berth().args(["check", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("listen.htp: unknown key"));
    let out = berth().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
}
