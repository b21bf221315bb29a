//! Listeners that cannot be bound, on the real `berth`: at start-up it is an error naming the
//! address, with a non-zero exit status and no half-alive process; a SIGHUP never touches the
//! listeners; an upgrade whose new listener cannot be bound keeps the others serving and
//! `/healthz` says which one is missing.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::client::{send, Request};
use berth_testkit::{free_port, Origin};
use common::{berth, call, route};

fn taken() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn healthz(admin: SocketAddr) -> (u16, String) {
    let r = send(admin, &Request::get(&admin.to_string(), "/healthz"))
        .await
        .unwrap();
    (r.status, r.text())
}

#[test]
fn a_listener_that_cannot_bind_is_a_startup_error() {
    let (_held, addr) = taken();
    let dir = tempfile::tempdir().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nhttp = \"{addr}\"\nmetrics = \"{admin}\"\n\n[docker]\nenabled = false\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let log = std::fs::File::create(dir.path().join("berth.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "berth still runs with its HTTP port taken:\n{}",
                std::fs::read_to_string(dir.path().join("berth.log")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(dir.path().join("berth.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    // Retried for the bind window (5 s), then given up, well before Pingora's 30 s.
    assert!(
        elapsed >= Duration::from_secs(4) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    let line =
        format!("berth: cannot start: listen.http {addr}: cannot listen: Address already in use");
    assert!(stderr.contains(&line), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing was left listening: the admin address is free again.
    assert!(TcpListener::bind(admin).is_ok());
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_naming_a_taken_address_keeps_the_running_listeners() {
    let origin = Origin::start("app");
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n{}",
        route("app.test", &[origin.addr], "")
    ));
    let (_held, addr) = taken();
    let text = std::fs::read_to_string(b.config_path()).unwrap();
    std::fs::write(
        b.config_path(),
        text.replace(&b.http.to_string(), &addr.to_string()),
    )
    .unwrap();
    b.signal("HUP").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b
        .log()
        .contains("reload: listen changed; that takes a restart")
    {
        assert!(Instant::now() < deadline, "{}", b.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(call(&b, &Request::get("app.test", "/")).await.status, 200);
    assert_eq!(healthz(b.admin.unwrap()).await, (200, "ok\n".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_whose_new_listener_cannot_bind_keeps_the_others_and_says_so() {
    let origin = Origin::start("app");
    let state = tempfile::tempdir().unwrap();
    let mut old = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = false\n\n\
         [server]\nupgrade-socket = \"{}\"\ngrace-period = \"1s\"\n\n{}",
        state.path().join("upgrade.sock").display(),
        route("app.test", &[origin.addr], "")
    ));
    // The new process also listens for HTTPS, on an address something else holds.
    let (_held, addr) = taken();
    let certs = state.path().join("certs");
    let text = std::fs::read_to_string(old.config_path()).unwrap();
    std::fs::write(
        old.config_path(),
        text.replace(
            "[docker]",
            &format!(
                "https = \"{addr}\"\n\n[tls]\ncerts-dir = \"{}\"\n\n[docker]",
                certs.display()
            ),
        ),
    )
    .unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_berth"));
    let mut new = tokio::task::block_in_place(|| old.upgrade(binary))
        .unwrap_or_else(|e| panic!("{e}\nold berth log:\n{}", old.log()));
    assert!(old.wait_exit(Duration::from_secs(20)).is_some());
    // The handed-over listeners serve; /healthz names the one that is missing.
    let admin = new.admin.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = healthz(admin).await;
        if status == 503 {
            assert!(
                body.contains(&format!("listener {addr} (berth https): cannot bind")),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{status} {body}\n{}", new.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&new, &Request::get("app.test", "/")).await.status, 200);
    assert!(new.running(), "{}", new.log());
}
