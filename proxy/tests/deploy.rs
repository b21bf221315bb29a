//! The deployable stack: `configs/compose.yml` validated by Docker Compose itself, its berth
//! config by `berth check`, and the files the compose file and the Dockerfile take from the
//! repository present. (Images cannot be pulled here, so the images are not built.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `docker-compose` (Debian's package) or the `docker compose` plugin, whichever is here.
fn compose(args: &[&str]) -> Option<std::process::Output> {
    let file = repo().join("configs/compose.yml");
    let file = file.to_str().unwrap();
    let attempts: [(&str, Vec<&str>); 2] = [
        ("docker-compose", vec!["-f", file]),
        ("docker", vec!["compose", "-f", file]),
    ];
    for (program, prefix) in attempts {
        if let Ok(out) = Command::new(program)
            .args(&prefix)
            .args(args)
            .env("DOCKER_GID", "999")
            .output()
        {
            if out.status.success() || program == "docker-compose" {
                return Some(out);
            }
        }
    }
    None
}

#[test]
fn the_compose_file_is_valid_and_complete() {
    let out = compose(&["config"]).expect(
        "neither docker-compose nor docker compose is installed (scripts/test installs docker-compose)",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The three services, the shared volumes, the read-only socket, the published ports.
    for needle in [
        "berth:",
        "berth-acme:",
        "registry:",
        "berth-certs:",
        "berth-challenges:",
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "published: 443",
        "published: 80",
        "VIRTUAL_HOST: registry.example.com",
        "LETSENCRYPT_HOST: registry.example.com",
        "restart: unless-stopped",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert_eq!(text.matches("docker.sock:ro").count(), 2, "{text}");
}

#[test]
fn the_stack_config_passes_berth_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["check", "--config"])
        .arg(repo().join("configs/compose/berth.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_takes_only_what_the_repository_has() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let stages =
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM "));
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "{line}: {source} is not in the repository"
            );
        }
    }
    assert!(
        dockerfile.contains("\nUSER berth\n"),
        "the runtime stage runs as berth, not root"
    );
    for binary in ["berth", "berth-acme"] {
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "{binary} is not built"
        );
    }
}
