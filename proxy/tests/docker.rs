//! Docker discovery against the real daemon: containers started with labels or nginx-proxy
//! variables become routes, follow health checks and networks, and survive a daemon restart.
//! Images are built locally (`docker import`); every container and network is removed when
//! its test ends, pass or fail.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use berth_testkit::client::Request;
use berth_testkit::docker::{available, docker, run_seed_registry, Container, Network, BUSYBOX};
use berth_testkit::oci::{build_image, manifest_digest};
use berth_testkit::registry::{pull, push};
use berth_testkit::BerthProcess;
use common::{berth, call};

fn berth_with_docker() -> BerthProcess {
    berth("[listen]\nhttp = \"{http}\"\nmetrics = \"{admin}\"\n\n[docker]\nenabled = true\n")
}

/// A berth following the daemon, with the daemon held shared (not restarted meanwhile).
async fn docker_berth() -> (tokio::sync::RwLockReadGuard<'static, ()>, BerthProcess) {
    let shared = berth_testkit::docker::shared().await;
    (shared, berth_with_docker())
}

async fn get(b: &BerthProcess, host: &str) -> (u16, String) {
    let r = call(b, &Request::get(host, "/")).await;
    (r.status, r.text().trim().to_string())
}

/// Polls `check` until it is true, for up to 10 s; panics with berth's log otherwise.
async fn wait_until<F, Fut>(b: &BerthProcess, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}\nberth log:\n{}", b.log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn routes(b: &BerthProcess) -> serde_json::Value {
    let admin = b.admin.unwrap().to_string();
    let r = berth_testkit::client::send(b.admin.unwrap(), &Request::get(&admin, "/routes"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

/// The upstream addresses `/routes` lists for `host`.
async fn upstreams_of(b: &BerthProcess, host: &str) -> Vec<String> {
    let page = routes(b).await;
    page["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["host"] == host)
        .flat_map(|r| r["upstreams"].as_array().unwrap().clone())
        .map(|u| u["addr"].as_str().unwrap().to_string())
        .collect()
}

fn httpd(text: &str, port: u16) -> String {
    format!("echo {text} > /www/index.html && touch /tmp/ok && exec httpd -f -p {port} -h /www")
}

#[tokio::test(flavor = "multi_thread")]
async fn labelled_container_is_routed_until_stopped() {
    let (_shared, b) = docker_berth().await;
    assert_eq!(get(&b, "web.test").await.0, 503);
    let script = httpd("hello-from-web", 8080);
    let c = Container::run(
        "web",
        &[
            "-l",
            "berth.host=web.test",
            "-l",
            "berth.port=8080",
            BUSYBOX,
            "sh",
            "-c",
            &script,
        ],
    )
    .unwrap();
    wait_until(&b, "web.test to be routed", || async {
        get(&b, "web.test").await == (200, "hello-from-web".to_string())
    })
    .await;
    let page = routes(&b).await;
    let route = page["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "web.test")
        .unwrap();
    assert_eq!(route["source"]["kind"], "containers");
    assert_eq!(route["source"]["names"][0], c.name.as_str());
    assert_eq!(
        route["upstreams"][0]["addr"],
        format!("{}:8080", c.ip("bridge").unwrap())
    );
    assert_eq!(page["docker"]["connected"], true);
    let admin = b.admin.unwrap();
    let metrics = berth_testkit::client::send(admin, &Request::get(&admin.to_string(), "/metrics"))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("\nberth_docker_connected 1\n"),
        "{metrics}"
    );
    // Network connect comes before start; either may be the event that routed it.
    assert!(
        metrics.contains("\nberth_docker_events_total{action=\"connect\"} ")
            || metrics.contains("\nberth_docker_events_total{action=\"start\"} "),
        "{metrics}"
    );
    assert!(
        !metrics.contains("\nberth_routes{source=\"docker\"} 0\n"),
        "{metrics}"
    );

    c.stop().unwrap();
    wait_until(&b, "web.test to be gone after docker stop", || async {
        get(&b, "web.test").await.0 == 503
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_recipe_registry_is_routed_and_skopeo_pushes_through_berth() {
    let (_shared, b) = docker_berth().await;
    let host = "registry.example.test";
    let registry = run_seed_registry("registry", host).unwrap();
    let authority = format!("{host}:{}", b.http.port());
    wait_until(&b, "the registry to answer through berth", || async {
        call(&b, &Request::get(&authority, "/v2/")).await.status == 401
    })
    .await;
    let r = call(&b, &Request::get(&authority, "/v2/")).await;
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"berth-test\"")
    );

    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("image");
    let mib = 1 << 20;
    let image = build_image(&layout, "v1", &[24 * mib, 16 * mib, 8 * mib], 11).unwrap();
    let (auth, lay) = (authority.clone(), layout.clone());
    tokio::task::spawn_blocking(move || push(&lay, "v1", &auth, "seed/app", &[host]))
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            let logs = docker(&["logs", &registry.name]).unwrap_or_default();
            panic!("{e}\nberth log:\n{}\nregistry log:\n{logs}", b.log())
        });
    let back = work.path().join("pulled");
    let (auth, dir) = (authority.clone(), back.clone());
    tokio::task::spawn_blocking(move || pull(&auth, "seed/app", "v1", &dir, &[host]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_containers_share_a_host_until_one_turns_unhealthy() {
    let (_shared, b) = docker_berth().await;
    let health = [
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "1s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "1",
    ];
    let mut containers = Vec::new();
    for name in ["one", "two"] {
        let script = httpd(name, 80);
        let mut args = vec!["-l", "berth.host=lb.test"];
        args.extend_from_slice(&health);
        args.extend_from_slice(&[BUSYBOX, "sh", "-c", &script]);
        containers.push(Container::run(name, &args).unwrap());
    }
    wait_until(&b, "both containers to be healthy and routed", || async {
        upstreams_of(&b, "lb.test").await.len() == 2
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (status, text) = get(&b, "lb.test").await;
        assert_eq!(status, 200);
        seen.push(text);
    }
    let ones = seen.iter().filter(|t| *t == "one").count();
    assert_eq!(ones, 5, "round robin over two upstreams: {seen:?}");
    for pair in seen.chunks(2) {
        assert_ne!(pair[0], pair[1], "requests alternate: {seen:?}");
    }

    containers[0].exec(&["rm", "/tmp/ok"]).unwrap();
    containers[0]
        .wait_health("unhealthy", Duration::from_secs(15))
        .unwrap();
    wait_until(&b, "the unhealthy container to be left out", || async {
        upstreams_of(&b, "lb.test").await.len() == 1
    })
    .await;
    for _ in 0..6 {
        assert_eq!(get(&b, "lb.test").await, (200, "two".to_string()));
    }
    let page = routes(&b).await;
    let waiting = page["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == containers[0].name.as_str())
        .unwrap();
    assert_eq!(waiting["state"], "waiting");
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_follow_the_network_rule_and_network_connect() {
    let (_shared, b) = docker_berth().await;
    let front = Network::create("front").unwrap();
    let back = Network::create("back").unwrap();

    // On two networks, no preference: the first network by name.
    let both = Container::run(
        "both",
        &[
            "--network",
            &front.name,
            "-l",
            "berth.host=both.test",
            BUSYBOX,
        ],
    )
    .unwrap();
    docker(&["network", "connect", &back.name, &both.name]).unwrap();
    let first = front.name.as_str().min(back.name.as_str());
    let want = format!("{}:80", both.ip(first).unwrap());
    wait_until(&b, "both.test on the first network by name", || async {
        upstreams_of(&b, "both.test").await == [want.clone()]
    })
    .await;
    assert_eq!(get(&b, "both.test").await, (200, "busybox".to_string()));

    // berth.network names a network the container is not on yet: the rule falls through to
    // the one it has; `network connect` is picked up and the preferred address wins.
    let late = Container::run(
        "late",
        &[
            "--network",
            &back.name,
            "-l",
            "berth.host=late.test",
            "-l",
            &format!("berth.network={}", front.name),
            BUSYBOX,
        ],
    )
    .unwrap();
    let on_back = format!("{}:80", late.ip(&back.name).unwrap());
    wait_until(&b, "late.test on its only network", || async {
        upstreams_of(&b, "late.test").await == [on_back.clone()]
    })
    .await;
    docker(&["network", "connect", &front.name, &late.name]).unwrap();
    let on_front = format!("{}:80", late.ip(&front.name).unwrap());
    wait_until(
        &b,
        "late.test on the preferred network after connect",
        || async { upstreams_of(&b, "late.test").await == [on_front.clone()] },
    )
    .await;
    assert_eq!(get(&b, "late.test").await, (200, "busybox".to_string()));
    drop((both, late));
}

#[tokio::test(flavor = "multi_thread")]
async fn wildcard_and_regex_hosts_and_a_bad_label_skips_only_its_container() {
    let (_shared, b) = docker_berth().await;
    let good = Container::run(
        "patterns",
        &[
            "-e",
            r"VIRTUAL_HOST=*.wild.test, ~^re[0-9]+\.test$",
            BUSYBOX,
        ],
    )
    .unwrap();
    let bad = Container::run(
        "bad",
        &["-l", "berth.host=bad.test", "-l", "berth.port=abc", BUSYBOX],
    )
    .unwrap();
    wait_until(&b, "the wildcard route", || async {
        get(&b, "a.wild.test").await.0 == 200
    })
    .await;
    assert_eq!(get(&b, "deep.er.wild.test").await.0, 200);
    assert_eq!(get(&b, "re42.test").await.0, 200);
    assert_eq!(get(&b, "rex.test").await.0, 503);
    assert_eq!(get(&b, "wild.test").await.0, 503);
    wait_until(&b, "the bad container to be reported", || async {
        routes(&b).await["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == bad.name.as_str())
    })
    .await;
    assert_eq!(get(&b, "bad.test").await.0, 503);
    let page = routes(&b).await;
    let report = page["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == bad.name.as_str())
        .unwrap();
    assert_eq!(report["state"], "invalid");
    let detail = report["detail"][0].as_str().unwrap();
    assert!(
        detail.contains("label berth.port") && detail.contains("\"abc\""),
        "{detail}"
    );
    assert!(b
        .log()
        .contains(&format!("container {}, label berth.port", bad.name)));
    drop(good);
}

/// Labels name files only under `docker.label-files`: `/etc/shadow`, `/proc/self/environ`
/// and `/dev/zero` skip their container with an error that quotes nothing of the file; a FIFO
/// inside the directory is refused at once, and containers started after it are routed as
/// quickly as ever.
#[tokio::test(flavor = "multi_thread")]
async fn labels_name_files_only_under_label_files_and_never_stall_the_routes() {
    let shared = berth_testkit::docker::shared().await;
    let files = tempfile::tempdir().unwrap();
    let fifo = files.path().join("htpasswd-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A copy of a shadow file put inside the directory: read, refused line by line, and
    // quoted nowhere.
    let copied = files.path().join("shadow-copy");
    std::fs::write(
        &copied,
        "root:$6$Zq8saltsalt$hashhashhashhashhash:19700:0:99999:7:::\n\
         daemon:*:19700:0:99999:7:::\n",
    )
    .unwrap();
    let b = berth(&format!(
        "[listen]\nhttp = \"{{http}}\"\nmetrics = \"{{admin}}\"\n\n[docker]\nenabled = true\n\
         label-files = [\"{}\"]\n",
        files.path().display()
    ));
    let outside = |name: &'static str, label: String| {
        let args = [
            "-l".to_string(),
            format!("berth.host={name}.test"),
            "-l".to_string(),
            label,
            BUSYBOX.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Container::run(name, &args).unwrap()
    };
    let shadow = outside("shadow", "berth.auth.htpasswd=/etc/shadow".into());
    let environ = outside(
        "environ",
        "berth.auth.token-secret-file=/proc/self/environ".into(),
    );
    let zero = outside("zero", "berth.auth.htpasswd=/dev/zero".into());
    let climb = outside(
        "climb",
        format!(
            "berth.auth.htpasswd={}/../../etc/shadow",
            files.path().display()
        ),
    );
    let piped = outside("piped", format!("berth.auth.htpasswd={}", fifo.display()));
    let inside = outside(
        "inside",
        format!("berth.auth.htpasswd={}", copied.display()),
    );
    // Started after the FIFO: routed as soon as its events arrive.
    let script = httpd("after-the-fifo", 8080);
    let after = Container::run(
        "after",
        &[
            "-l",
            "berth.host=after.test",
            "-l",
            "berth.port=8080",
            BUSYBOX,
            "sh",
            "-c",
            &script,
        ],
    )
    .unwrap();
    wait_until(&b, "after.test to be routed", || async {
        get(&b, "after.test").await == (200, "after-the-fifo".to_string())
    })
    .await;
    let state = |page: &serde_json::Value, name: &str| {
        page["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| {
                (
                    c["state"].as_str().unwrap().to_string(),
                    c["detail"].to_string(),
                )
            })
    };
    wait_until(&b, "every labelled container to be judged", || async {
        let page = routes(&b).await;
        [&shadow, &environ, &zero, &climb]
            .iter()
            .all(|c| state(&page, &c.name).is_some())
    })
    .await;
    let page = routes(&b).await;
    for (c, label) in [
        (&shadow, "berth.auth.htpasswd"),
        (&environ, "berth.auth.token-secret-file"),
        (&zero, "berth.auth.htpasswd"),
        (&climb, "berth.auth.htpasswd"),
    ] {
        let (state, detail) = state(&page, &c.name).unwrap();
        assert_eq!(state, "invalid", "{}: {detail}", c.name);
        assert!(detail.contains(label), "{}: {detail}", c.name);
        assert!(
            detail.contains("outside docker.label-files") || detail.contains(". or .."),
            "{}: {detail}",
            c.name
        );
    }
    // The FIFO is inside the directory: the route exists, lets nobody in, and says why.
    wait_until(&b, "the FIFO to be refused", || async {
        b.log().contains("not a regular file")
    })
    .await;
    assert_eq!(get(&b, "piped.test").await.0, 401);
    // The shadow copy was read and refused by line number: its route lets nobody in.
    wait_until(&b, "the shadow copy to be refused", || async {
        b.log().contains("line 1: crypt hashes are not accepted")
    })
    .await;
    assert!(b.log().contains("line 2: not a bcrypt hash"), "{}", b.log());
    assert_eq!(get(&b, "inside.test").await.0, 401);
    // Nothing of the files reached the log: not a user or a hash of the shadow copy, not
    // berth's environment.
    let log = b.log();
    for secret in [
        "root", "daemon", "$6$", "Zq8salt", "hashhash", "19700", "PATH=",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    drop((piped, inside, after, shadow, environ, zero, climb, shared));
}

/// A label value with a line break in it cannot forge a log line: the error quoting it is one
/// line, with the break escaped, in the log and in `/routes`.
#[tokio::test(flavor = "multi_thread")]
async fn label_values_cannot_forge_log_lines() {
    let (_shared, b) = docker_berth().await;
    const FORGED: &str =
        "2026-12-05T00:00:00.000000Z  INFO berth_proxy::docker_routes: routing registry.example.com/ to 10.6.6.6:5000";
    let port = format!("1x\n{FORGED}\r\u{2028}\u{1b}[2J");
    let forger = Container::run(
        "forger",
        &[
            "-l",
            "berth.host=forger.test",
            "-l",
            &format!("berth.port={port}"),
            BUSYBOX,
        ],
    )
    .unwrap();
    wait_until(&b, "the forger to be reported", || async {
        routes(&b).await["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == forger.name.as_str())
    })
    .await;
    let log = b.log();
    let quoted: Vec<&str> = log.lines().filter(|l| l.contains("10.6.6.6")).collect();
    assert_eq!(quoted.len(), 1, "{log}");
    assert!(quoted[0].contains(&format!("container {}, label berth.port", forger.name)));
    assert!(
        quoted[0].contains(&format!("1x\\n{FORGED}\\r\\u{{2028}}")),
        "{}",
        quoted[0]
    );
    assert!(!log.contains('\u{1b}') && !log.contains('\r') && !log.contains('\u{2028}'));
    let page = routes(&b).await;
    let report = page["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == forger.name.as_str())
        .unwrap();
    let detail = report["detail"][0].as_str().unwrap();
    assert!(
        !detail.contains('\n') && detail.contains("1x\\n2026"),
        "{detail}"
    );
}

/// With `docker.allowed-hosts`, a container claiming a host outside it — a catch-all regex, an
/// unrelated name — is skipped and named; one inside it is routed.
#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_hosts_are_claimed_by_containers() {
    let shared = berth_testkit::docker::shared().await;
    let b = berth(
        "[listen]\nhttp = \"{http}\"\nmetrics = \"{admin}\"\n\n[docker]\nenabled = true\n\
         allowed-hosts = [\"*.apps.test\"]\n",
    );
    let script = httpd("allowed", 8080);
    let allowed = Container::run(
        "allowed",
        &[
            "-l",
            "berth.host=wiki.apps.test",
            "-l",
            "berth.port=8080",
            BUSYBOX,
            "sh",
            "-c",
            &script,
        ],
    )
    .unwrap();
    let catch_all = Container::run("catchall", &["-l", "berth.host=~.", BUSYBOX]).unwrap();
    let other = Container::run("other", &["-l", "berth.host=bank.test", BUSYBOX]).unwrap();
    wait_until(&b, "wiki.apps.test to be routed", || async {
        get(&b, "wiki.apps.test").await == (200, "allowed".to_string())
    })
    .await;
    wait_until(&b, "the refused containers to be reported", || async {
        let page = routes(&b).await;
        [&catch_all, &other].iter().all(|c| {
            page["containers"].as_array().unwrap().iter().any(|r| {
                r["name"] == c.name.as_str()
                    && r["state"] == "invalid"
                    && r["detail"][0]
                        .as_str()
                        .unwrap()
                        .contains("is not among docker.allowed-hosts")
            })
        })
    })
    .await;
    assert_eq!(get(&b, "bank.test").await.0, 503);
    assert_eq!(get(&b, "anything.test").await.0, 503);
    drop((allowed, catch_all, other, shared));
}

/// Restarts the daemon with the command line it runs with; starts it again on drop if a
/// test failed half-way.
struct DaemonRestart {
    cmdline: Vec<String>,
    log: std::path::PathBuf,
}

impl DaemonRestart {
    fn new() -> DaemonRestart {
        let pid = std::fs::read_to_string("/var/run/docker.pid").expect("dockerd pid file");
        let raw = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
        let cmdline = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        DaemonRestart {
            cmdline,
            log: std::env::temp_dir().join("berth-test-dockerd.log"),
        }
    }

    fn stop(&self) {
        let pid = std::fs::read_to_string("/var/run/docker.pid").unwrap();
        let pid = pid.trim().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "dockerd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start(&self) {
        if available() {
            return;
        }
        let log = std::fs::File::create(&self.log).unwrap();
        // `setsid -f`: the daemon runs in its own session and outlives this test process.
        let forked = std::process::Command::new("setsid")
            .arg("-f")
            .args(&self.cmdline)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(forked.success(), "setsid -f dockerd failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !available() {
            assert!(Instant::now() < deadline, "dockerd did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DaemonRestart {
    fn drop(&mut self) {
        self.start();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_survive_a_daemon_restart_and_resync_after_it() {
    let _alone = berth_testkit::docker::alone().await;
    // Without --live-restore a daemon restart takes every container down with it, and this
    // test would prove nothing about berth.
    let live_restore = docker(&["info", "--format", "{{.LiveRestoreEnabled}}"]).unwrap();
    assert_eq!(
        live_restore, "true",
        "dockerd must run with --live-restore (scripts/test starts it so)"
    );
    let b = berth_with_docker();
    let before = Container::run("before", &["-l", "berth.host=before.test", BUSYBOX]).unwrap();
    wait_until(&b, "before.test", || async {
        get(&b, "before.test").await.0 == 200
    })
    .await;

    // Traffic to the container all through the restart: not one request may fail.
    let traffic = berth_testkit::client::Traffic::start(b.http, "before.test");

    let daemon = DaemonRestart::new();
    tokio::task::block_in_place(|| daemon.stop());
    wait_until(&b, "berth to see the daemon gone", || async {
        routes(&b).await["docker"]["connected"] == false
    })
    .await;
    // The container keeps running (live restore) and berth keeps its last known routes.
    for _ in 0..5 {
        assert_eq!(get(&b, "before.test").await.0, 200);
    }

    tokio::task::block_in_place(|| daemon.start());
    // Started before berth has necessarily reconnected: found by the re-list or its event.
    let after = Container::run("after", &["-l", "berth.host=after.test", BUSYBOX]).unwrap();
    wait_until(&b, "after.test once the daemon is back", || async {
        get(&b, "after.test").await.0 == 200
    })
    .await;
    assert_eq!(get(&b, "before.test").await.0, 200);
    assert_eq!(routes(&b).await["docker"]["connected"], true);
    let (ok, failed) = traffic.stop().await;
    assert!(
        failed.is_empty(),
        "requests failed during the restart: {failed:?}"
    );
    assert!(ok > 50, "only {ok} requests during the restart");
    drop((before, after));
}
