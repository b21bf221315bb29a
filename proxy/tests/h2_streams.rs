//! HTTP/2 streams that are never allowed to be written: berth reads from the upstream only as
//! far as the client's window allows, so 100 such streams on one connection cost a few MiB,
//! and after `limits.h2-stall-timeout` each is reset and its upstream connection closed. A
//! client that keeps opening its window, however slowly, is never cut, and a quiet stream
//! (server-sent events) does not keep the connection's window from the others.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_testkit::downloads::{pattern, Downloads};
use berth_testkit::process::memory_kib;
use berth_testkit::tls::{install, TestCa};
use berth_testkit::BerthProcess;
use common::{berth, route};
use tokio::net::TcpStream;

const GIB: u64 = 1 << 30;

/// An HTTP/2 connection to berth over TLS, with `window` as the client's initial stream
/// window (SETTINGS_INITIAL_WINDOW_SIZE).
pub(crate) async fn connect(
    https: SocketAddr,
    ca: &TestCa,
    window: u32,
) -> h2::client::SendRequest<bytes::Bytes> {
    let mut config = ca.client_config();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// berth with an HTTPS listener whose certificate for `app.test` comes from a test CA, routing
/// `app.test` to `origin`, with `extra` config; the directory holds the certificates.
fn start(origin: &Downloads, extra: &str) -> (BerthProcess, TestCa, tempfile::TempDir) {
    let ca = TestCa::new("h2 streams test CA");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    install(&certs, "app.test", &ca.issue(&["app.test"])).unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nhttps = \"{{https}}\"\n\n[docker]\nenabled = false\n\n\
         [log]\naccess = \"off\"\n\n[tls]\ncerts-dir = \"{}\"\ndefault-cert = \"none\"\n\n{extra}\n{}",
        certs.display(),
        route("app.test", &[origin.addr], "")
    ));
    (b, ca, dir)
}

fn get(https: SocketAddr, len: u64) -> http::Request<()> {
    http::Request::get(format!("https://app.test:{}/{len}", https.port()))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_whose_window_stays_shut_cost_little_and_are_reset_at_the_stall_timeout() {
    let origin = Downloads::start();
    let stall = Duration::from_secs(3);
    let (b, ca, _dir) = start(
        &origin,
        &format!("[limits]\nh2-stall-timeout = \"{}s\"\n", stall.as_secs()),
    );
    let https = b.https.unwrap();

    // Warm up: whole downloads over HTTP/2 on connections open at once, so that every berth
    // thread (each keeps its connections) has every buffer a stream needs.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut warm = Vec::new();
    // 3 per thread: with at most 2 above the least loaded, every thread takes at least one.
    for _ in 0..threads * 3 {
        warm.push(connect(https, &ca, 1 << 20).await);
    }
    for client in &mut warm {
        let (resp, _) = client.send_request(get(https, 4 << 20), true).unwrap();
        let mut body = resp.await.unwrap().into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = memory_kib(b.pid()).unwrap();
    // The warm-up's upstream connections idle in the pools of the threads that served them
    // (one each): a stream reuses its thread's.
    let pooled = origin.open_connections();
    assert!((1..=threads as u64).contains(&pooled), "{pooled}");

    // 100 streams of a 1 GiB response, none of which the client lets berth write.
    let mut shut = connect(https, &ca, 0).await;
    let mut waiting = Vec::new();
    for _ in 0..100 {
        shut = shut.ready().await.unwrap();
        let (resp, _) = shut.send_request(get(https, GIB), true).unwrap();
        waiting.push(resp);
    }
    let mut bodies = Vec::new();
    for resp in waiting {
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    let opened = Instant::now();
    // Every stream has its upstream connection: each got its head.
    let open = origin.open_connections();
    assert!(
        (pooled + 99..=pooled + 100).contains(&open),
        "{open} ({pooled} pooled)"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (during, _) = memory_kib(b.pid()).unwrap();
    let grown = during.saturating_sub(before);
    assert!(
        grown < 8 << 10,
        "100 streams with a shut window grew berth by {grown} KiB"
    );

    // The stall timeout resets them all and gives their upstream connections back.
    while origin.open_connections() > open - 100 {
        assert!(
            opened.elapsed() < stall + Duration::from_secs(5),
            "{} upstream connections still open after {:?}\n{}",
            origin.open_connections(),
            opened.elapsed(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(opened.elapsed() >= stall - Duration::from_millis(500));
    for mut body in bodies {
        // No byte was sent: the window never opened.
        match body.data().await {
            Some(Err(e)) => assert!(e.is_reset(), "{e}"),
            other => panic!("expected a reset stream, got {other:?}"),
        }
    }

    // A slow reader of a whole 1 GiB response, pausing under the stall timeout (taking
    // longer than it in all), gets every byte.
    let client = connect(https, &ca, 64 << 10).await;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(get(https, GIB), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    let started = Instant::now();
    let (mut got, mut next_pause) = (0u64, 128u64 << 20);
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        assert!(
            chunk
                .iter()
                .enumerate()
                .all(|(i, b)| *b == pattern(got + i as u64)),
            "wrong bytes at {got}"
        );
        got += chunk.len() as u64;
        body.flow_control().release_capacity(chunk.len()).unwrap();
        if got >= next_pause {
            tokio::time::sleep(stall / 2).await;
            next_pause += 128 << 20;
        }
    }
    assert_eq!(got, GIB);
    assert!(started.elapsed() > stall * 2, "{:?}", started.elapsed());
}

/// A stream whose upstream goes quiet (an event stream between events) must not hold the
/// connection's flow-control window: under the default 65,535-byte connection window, a
/// download on the same connection gets every byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_stream_does_not_starve_the_others_on_its_connection() {
    let origin = Downloads::start();
    let (b, ca, _dir) = start(&origin, "");
    let https = b.https.unwrap();
    // A 1 MiB stream window; the connection window stays at the protocol's 65,535 bytes.
    let client = connect(https, &ca, 1 << 20).await;

    let mut client = client.ready().await.unwrap();
    let events = http::Request::get(format!("https://app.test:{}/events", https.port()))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(events, true).unwrap();
    let mut events = resp.await.unwrap().into_body();
    let first = events.data().await.unwrap().unwrap();
    assert_eq!(&first[..], b"data: hello\n\n");
    events.flow_control().release_capacity(first.len()).unwrap();
    // berth has written the event and waits on the quiet upstream for the next.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let len = 8u64 << 20;
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(get(https, len), true).unwrap();
    let download = async {
        let mut body = resp.await.unwrap().into_body();
        let mut got = 0u64;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            got += chunk.len() as u64;
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .unwrap_or_else(|_| panic!("the download beside a quiet stream stalled\n{}", b.log()));
    assert_eq!(got, len);
    // The event stream is still open and waiting.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.data())
            .await
            .is_err()
    );
}
