//! berth's own basic auth: the real `berth` with an htpasswd file (made by Debian's
//! `htpasswd -B`), a recording origin, and skopeo logging in and pushing through berth's auth
//! to a registry that has none of its own.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_testkit::client::{Body, Request};
use berth_testkit::oci::{build_image, manifest_digest};
use berth_testkit::registry::{skopeo, Registry, PASSWORD, USER};
use berth_testkit::{BerthProcess, Origin};
use common::{berth, call, config, docker_cli, files_below, route};

fn htpasswd(file: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("htpasswd");
    if !file.exists() {
        cmd.arg("-c");
    }
    let out = cmd
        .args(["-bB"])
        .arg(file)
        .args([user, password])
        .output()
        .expect("htpasswd must be installed (scripts/test installs apache2-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_right_wrong_missing_malformed_and_reloaded() {
    let origin = Origin::start("app");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("htpasswd");
    htpasswd(&file, "alice", "correct horse");
    let tokens = work.path().join("challenges/.well-known/acme-challenge");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join(TOKEN), format!("{TOKEN}.thumb")).unwrap();
    let b = berth(&config(&format!(
        "[acme]\nchallenge-dir = \"{}\"\n\n{}{}",
        work.path().join("challenges").display(),
        route(
            "app.test",
            &[origin.addr],
            &format!(
                "auth.htpasswd = \"{}\"\nauth.realm = \"app\"",
                file.display()
            )
        ),
        route(
            "reg.test",
            &[origin.addr],
            &format!(
                "profile = \"registry\"\nauth.htpasswd = \"{}\"",
                file.display()
            )
        ),
    )));

    // Missing credentials: 401 with the challenge; nothing reaches the origin.
    let r = call(&b, &Request::get("app.test", "/")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"app\""));
    assert_eq!(r.header("docker-distribution-api-version"), None);
    // Under the registry profile the 401 says it speaks the distribution API.
    let r = call(&b, &Request::get("reg.test", "/v2/")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"berth\""));
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // Right credentials pass, and the origin sees the request.
    let ok =
        Request::get("app.test", "/x").header("Authorization", &basic("alice", "correct horse"));
    let r = call(&b, &ok).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen().unwrap().target, "/x");
    assert_eq!(origin.hits(), 1);

    // Wrong password, unknown user, malformed headers: 401 each.
    for value in [
        basic("alice", "wrong"),
        basic("mallory", "correct horse"),
        basic("alice", "correct horse ").to_string(),
        "Basic not-base64!".to_string(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice")
        ),
        "Bearer abc".to_string(),
        "Basic".to_string(),
    ] {
        let r = call(
            &b,
            &Request::get("app.test", "/").header("Authorization", &value),
        )
        .await;
        assert_eq!(r.status, 401, "{value}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"app\""));
    }
    assert_eq!(origin.hits(), 1);

    // An upload without credentials is refused before its body goes anywhere.
    let upload = Request::new("PATCH", "app.test", "/upload").body(Body::random(8 << 20, true));
    let r = call(&b, &upload).await;
    assert_eq!(r.status, 401);
    assert_eq!(origin.hits(), 1);
    // With Expect: 100-continue the client is told before it sends the body.
    let r = call(&b, &upload.clone().expect_continue()).await;
    assert_eq!(r.status, 401);
    assert!(!r.got_continue);
    assert_eq!(origin.hits(), 1);

    // The ACME challenge path needs no credentials.
    let challenge = format!("/.well-known/acme-challenge/{TOKEN}");
    let r = call(&b, &Request::get("app.test", &challenge)).await;
    assert_eq!((r.status, r.text()), (200, format!("{TOKEN}.thumb")));

    // A new user in the file works within a couple of seconds, without a restart.
    htpasswd(&file, "bob", "battery staple");
    let bob =
        Request::get("app.test", "/").header("Authorization", &basic("bob", "battery staple"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if call(&b, &bob).await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "bob never let in:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&b, &ok).await.status, 200, "alice is still there");

    // A broken file is refused with its line named; the users in effect stay.
    std::fs::write(&file, "alice:$apr1$abc$def\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.log().contains("line 1: MD5 (apr1)") {
        assert!(Instant::now() < deadline, "no error logged:\n{}", b.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(call(&b, &bob).await.status, 200);
    assert_eq!(call(&b, &ok).await.status, 200);
    // No password and no hash in the log.
    let log = b.log();
    for secret in ["correct horse", "battery staple", "$apr1$abc"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// A registry with no auth of its own behind berth, whose route has basic auth for
/// [`USER`] plus `extra`; returns them with the work directory and its skopeo auth file.
fn registry_behind_auth(extra: &str) -> (Registry, BerthProcess, tempfile::TempDir, String) {
    let registry =
        Registry::start_open().expect("docker-registry must be installed (scripts/test does)");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("htpasswd");
    htpasswd(&file, USER, PASSWORD);
    let b = berth(&config(&route(
        "127.0.0.1",
        &[registry.addr],
        &format!(
            "profile = \"registry\"\nauth.htpasswd = \"{}\"\n{extra}",
            file.display()
        ),
    )));
    let authfile = work.path().join("auth.json").to_str().unwrap().to_string();
    (registry, b, work, authfile)
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_logs_in_and_pushes_through_berths_auth() {
    let (registry, b, work, authfile) = registry_behind_auth("");
    let authfile = authfile.as_str();
    let authority = b.http.to_string();

    let login = |password: &str| {
        skopeo(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile,
            "-u",
            USER,
            "-p",
            password,
            &authority,
        ])
        .unwrap()
    };
    let out = tokio::task::block_in_place(|| login("not-the-password"));
    assert!(!out.status.success(), "a wrong password must not log in");
    let out = tokio::task::block_in_place(|| login(PASSWORD));
    assert!(
        out.status.success(),
        "{}\n{}\nberth log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        b.log()
    );

    let mib = 1 << 20;
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[24 * mib, 8 * mib], 11).unwrap();
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{authority}/berth/auth:v1");
    // Without the login: refused.
    let out = tokio::task::block_in_place(|| {
        skopeo(&["copy", "--dest-tls-verify=false", &src, &dst]).unwrap()
    });
    assert!(!out.status.success());
    // With it: pushed, and pulled back with the same digest.
    let out = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            authfile,
            &src,
            &dst,
        ])
        .unwrap()
    });
    assert!(
        out.status.success(),
        "{}\nberth log:\n{}\nregistry log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.log(),
        registry.log()
    );
    let back = work.path().join("back");
    let back_ref = format!("oci:{}:v1", back.display());
    let out = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-authfile",
            authfile,
            &dst,
            &back_ref,
        ])
        .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_pulls_and_authenticated_pushes_with_skopeo() {
    let (registry, b, work, authfile) = registry_behind_auth("auth.anonymous-read = true");
    let authority = b.http.to_string();
    let run = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| skopeo(args).unwrap());
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let login = |password: &str| {
        run(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &authfile,
            "-u",
            USER,
            "-p",
            password,
            &authority,
        ])
    };

    // docker login / skopeo login still see the challenge: a wrong password is refused.
    let (ok, said) = login("not-the-password");
    assert!(!ok, "a wrong password logged in: {said}");
    let (ok, said) = login(PASSWORD);
    assert!(ok, "{said}\nberth log:\n{}", b.log());

    let mib = 1 << 20;
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[6 * mib, 2 * mib], 21).unwrap();
    let src = format!("oci:{}:v1", layout.display());
    let dst = format!("docker://{authority}/berth/public:v1");

    // An anonymous push is refused before a byte of it reaches the registry.
    let (ok, said) = run(&["copy", "--dest-tls-verify=false", &src, &dst]);
    assert!(!ok, "an anonymous push went through: {said}");
    assert!(
        said.contains("401") || said.to_lowercase().contains("unauthorized"),
        "{said}"
    );
    let stored = files_below(&registry.storage());
    assert!(stored.is_empty(), "the registry stored {stored:?}");

    // With the login: pushed.
    let (ok, said) = run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-authfile",
        &authfile,
        &src,
        &dst,
    ]);
    assert!(
        ok,
        "{said}\nberth log:\n{}\nregistry log:\n{}",
        b.log(),
        registry.log()
    );
    // The storage looked at above is where the registry keeps what it is given.
    assert!(!files_below(&registry.storage()).is_empty());

    // Anonymous: pulled back, same digest, and the tag list read.
    let back = work.path().join("back");
    let back_ref = format!("oci:{}:v1", back.display());
    let (ok, said) = run(&["copy", "--src-tls-verify=false", &dst, &back_ref]);
    assert!(
        ok,
        "an anonymous pull failed: {said}\nberth log:\n{}",
        b.log()
    );
    assert_eq!(manifest_digest(&back, "v1").unwrap(), image.manifest_digest);
    let (ok, said) = run(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{authority}/berth/public"),
    ]);
    assert!(ok && said.contains("\"v1\""), "{said}");

    // A wrong password is refused even for a read, and for a push.
    let wrong = work.path().join("wrong.json");
    std::fs::write(&wrong, std::fs::read_to_string(&authfile).unwrap()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let bad = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong"));
    let text = std::fs::read_to_string(&wrong)
        .unwrap()
        .replace(&encoded, &bad);
    assert!(text.contains(&bad), "{text}");
    std::fs::write(&wrong, text).unwrap();
    let (ok, said) = run(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-authfile",
        wrong.to_str().unwrap(),
        &src,
        &format!("docker://{authority}/berth/public:v2"),
    ]);
    assert!(!ok, "a wrong password pushed: {said}");

    // What each request needs, as sent.
    let digest = &image.manifest_digest;
    for (method, target, expected) in [
        ("GET", "/v2/".to_string(), 401),
        ("HEAD", "/v2/berth/public/manifests/v1".to_string(), 200),
        ("GET", format!("/v2/berth/public/manifests/{digest}"), 200),
        ("GET", "/v2/_catalog".to_string(), 200),
        (
            "DELETE",
            format!("/v2/berth/public/manifests/{digest}"),
            401,
        ),
        ("POST", "/v2/berth/public/blobs/uploads/".to_string(), 401),
        (
            "GET",
            "/v2/berth/public/blobs/uploads/0123".to_string(),
            401,
        ),
        ("GET", "/v2/berth//public/manifests/v1".to_string(), 401),
        ("GET", "/v2/berth/%70ublic/manifests/v1".to_string(), 401),
        ("GET", "/v2/berth/x/../public/manifests/v1".to_string(), 401),
        (
            "GET",
            "/v2/berth/public/manifests/v1?ns=example".to_string(),
            200,
        ),
        ("GET", "/v2/berth/public/tags/list".to_string(), 200),
        ("get", "/v2/berth/public/manifests/v1".to_string(), 401),
        ("OPTIONS", "/v2/berth/public/manifests/v1".to_string(), 401),
    ] {
        let mut req = Request::new(method, "127.0.0.1", &target);
        if method == "GET" || method == "HEAD" {
            req = req.header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            );
        }
        let r = call(&b, &req).await;
        assert_eq!(r.status, expected, "{method} {target}: {}", r.text());
        if expected == 401 {
            assert!(r.header("www-authenticate").is_some(), "{method} {target}");
        }
    }
    let with_wrong = Request::get("127.0.0.1", "/v2/berth/public/manifests/v1")
        .header("Authorization", &basic(USER, "wrong"));
    assert_eq!(call(&b, &with_wrong).await.status, 401);
    // An empty login (`Basic Og==`, what registry clients send without one) is none: a read
    // passes, a write does not; two Authorization headers are refused whatever they say.
    let empty = "Basic Og==";
    let read =
        Request::get("127.0.0.1", "/v2/berth/public/tags/list").header("Authorization", empty);
    assert_eq!(call(&b, &read).await.status, 200);
    let write = Request::new("POST", "127.0.0.1", "/v2/berth/public/blobs/uploads/")
        .header("Authorization", empty);
    assert_eq!(call(&b, &write).await.status, 401);
    let two = Request::get("127.0.0.1", "/v2/berth/public/tags/list")
        .header("Authorization", empty)
        .header("Authorization", &basic(USER, "wrong"));
    assert_eq!(call(&b, &two).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_methods_open_the_methods_not_listed_and_fail_closed() {
    let origin = Origin::start("app");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("htpasswd");
    htpasswd(&file, "alice", "correct horse");
    let b = berth(&config(&route(
        "wiki.test",
        &[origin.addr],
        &format!(
            "auth.htpasswd = \"{}\"\nauth.methods = [\"POST\", \"DELETE\", \"GET\"]",
            file.display()
        ),
    )));
    let right = basic("alice", "correct horse");
    let wrong = basic("alice", "battery staple");
    for (method, authorization, expected) in [
        ("PUT", None, 200),
        ("PATCH", None, 200),
        ("OPTIONS", None, 200),
        ("PUT", Some(wrong.as_str()), 401),
        ("PUT", Some("Basic Og=="), 200),
        ("POST", None, 401),
        ("POST", Some("Basic Og=="), 401),
        ("POST", Some(right.as_str()), 200),
        ("DELETE", None, 401),
        ("GET", None, 401),
        ("HEAD", None, 401),
        ("GET", Some(right.as_str()), 200),
        // Not one of the standard methods as spelled: credentials needed, whatever the list.
        ("post", None, 401),
        ("MKCOL", None, 401),
        ("PURGE", None, 401),
    ] {
        let mut req = Request::new(method, "wiki.test", "/page");
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let r = call(&b, &req).await;
        assert_eq!(
            r.status,
            expected,
            "{method} {authorization:?}: {}",
            r.text()
        );
    }
}

/// `docker` with its own (empty) client config, so no login of the machine is used.

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_pulls_anonymously_and_pushes_after_login() {
    let _daemon = berth_testkit::docker::shared().await;
    let (registry, b, work, authfile) = registry_behind_auth("auth.anonymous-read = true");
    let authority = b.http.to_string();
    // An image pushed with a login (skopeo), for the Docker CLI to pull.
    let login = tokio::task::block_in_place(|| {
        skopeo(&[
            "login",
            "--tls-verify=false",
            "--authfile",
            &authfile,
            "-u",
            USER,
            "-p",
            PASSWORD,
            &authority,
        ])
        .unwrap()
    });
    assert!(login.status.success());
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[3 << 20, 1 << 20], 22).unwrap();
    let public = format!("{authority}/berth/public:v1");
    let copied = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-authfile",
            &authfile,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{public}"),
        ])
        .unwrap()
    });
    assert!(copied.status.success(), "{copied:?}");

    // No login: `docker pull` fetches an anonymous token and pulls.
    let cli = work.path().join("docker-config");
    std::fs::create_dir_all(&cli).unwrap();
    let (ok, said) = docker_cli(&cli, &["pull", &public]);
    assert!(ok, "anonymous docker pull: {said}\nberth log:\n{}", b.log());
    assert!(said.contains(&image.manifest_digest), "{said}");

    // No login: a push is refused, and nothing of it is stored.
    let other = format!("{authority}/berth/other:v1");
    let (ok, said) = docker_cli(&cli, &["tag", &public, &other]);
    assert!(ok, "{said}");
    let (ok, said) = docker_cli(&cli, &["push", &other]);
    assert!(!ok, "an anonymous docker push went through: {said}");
    assert!(said.contains("unauthorized"), "{said}");
    let stored = files_below(&registry.storage());
    assert!(
        !stored
            .iter()
            .any(|p| p.to_string_lossy().contains("repositories/berth/other")),
        "{stored:?}"
    );

    // docker login: a wrong password is refused, the right one logs in; then the push works.
    let (ok, said) = docker_cli(&cli, &["login", "-u", USER, "-p", "wrong", &authority]);
    assert!(!ok, "a wrong password logged in: {said}");
    let (ok, said) = docker_cli(&cli, &["login", "-u", USER, "-p", PASSWORD, &authority]);
    assert!(
        ok && said.contains("Login Succeeded"),
        "{said}\nberth log:\n{}",
        b.log()
    );
    let (ok, said) = docker_cli(&cli, &["push", &other]);
    assert!(
        ok,
        "docker push after login: {said}\nberth log:\n{}",
        b.log()
    );
    let tags = call(&b, &Request::get("127.0.0.1", "/v2/berth/other/tags/list")).await;
    assert_eq!(tags.status, 200);
    assert!(tags.text().contains("\"v1\""), "{}", tags.text());
    for image in [&public, &other] {
        docker_cli(&cli, &["rmi", image]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_hands_out_anonymous_and_user_tokens() {
    // Two routes on one htpasswd file: one with public reads (tokens), one with basic auth.
    let registry = Registry::start_open().expect("docker-registry must be installed");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("htpasswd");
    htpasswd(&file, USER, PASSWORD);
    let secret = work.path().join("token-secret");
    std::fs::write(&secret, format!("{}\n", "7f".repeat(32))).unwrap();
    let routes = |secret_key: &str| {
        config(&format!(
            "[forwarded]\ntrusted-proxies = [\"127.0.0.1/32\"]\n\n{}{}",
            route(
                "127.0.0.1",
                &[registry.addr],
                &format!(
                    "profile = \"registry\"\nauth.htpasswd = \"{}\"\nauth.anonymous-read = true\n{secret_key}",
                    file.display()
                )
            ),
            route(
                "localhost",
                &[registry.addr],
                &format!("profile = \"registry\"\nauth.htpasswd = \"{}\"", file.display())
            ),
        ))
    };
    let with_secret = format!("auth.token-secret-file = \"{}\"", secret.display());
    let b = berth(&routes(&with_secret));
    let port = b.http.port();
    let host = format!("127.0.0.1:{port}");
    let host = host.as_str();
    let token_of = |r: &berth_testkit::Response| -> String {
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(json["token"], json["access_token"]);
        assert_eq!(json["expires_in"], 300);
        assert!(json["issued_at"].as_str().unwrap().ends_with('Z'));
        json["token"].as_str().unwrap().to_string()
    };
    let bearer = |token: &str| format!("Bearer {token}");

    // The challenge names the token endpoint on the host and port the client used.
    let r = call(&b, &Request::get(host, "/v2/")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "Bearer realm=\"http://127.0.0.1:{port}/v2/_berth/token\",service=\"127.0.0.1\""
            )
            .as_str()
        )
    );

    // Anonymous: a token that reads, and does nothing else.
    let r = call(
        &b,
        &Request::get(
            host,
            "/v2/_berth/token?service=127.0.0.1&scope=repository:berth/x:pull,push",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let anonymous = token_of(&r);
    let read =
        Request::get(host, "/v2/berth/x/tags/list").header("Authorization", &bearer(&anonymous));
    assert_eq!(
        call(&b, &read).await.status,
        404,
        "a read reaches the registry"
    );
    for (method, target) in [("GET", "/v2/"), ("POST", "/v2/berth/x/blobs/uploads/")] {
        let r = call(
            &b,
            &Request::new(method, host, target).header("Authorization", &bearer(&anonymous)),
        )
        .await;
        assert_eq!(r.status, 401, "{method} {target}");
    }

    // A user's token: what it asked for (everything the route lets a user do, here).
    let r = call(
        &b,
        &Request::get(
            host,
            "/v2/_berth/token?account=x&service=127.0.0.1&scope=repository:berth/x:pull,push",
        )
        .header("Authorization", &basic(USER, PASSWORD)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let user = token_of(&r);
    assert_ne!(user, anonymous);
    for (method, target, status) in [
        ("GET", "/v2/", 200),
        ("POST", "/v2/berth/x/blobs/uploads/", 202),
        ("POST", "/v2/berth/y/blobs/uploads/", 401),
    ] {
        let r = call(
            &b,
            &Request::new(method, host, target).header("Authorization", &bearer(&user)),
        )
        .await;
        assert_eq!(r.status, status, "{method} {target}: {}", r.text());
    }

    // A wrong password gets no token; neither does a token, nor a POST.
    let r = call(
        &b,
        &Request::get(host, "/v2/_berth/token").header("Authorization", &basic(USER, "wrong")),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("UNAUTHORIZED"), "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    let r = call(
        &b,
        &Request::get(host, "/v2/_berth/token").header("Authorization", &bearer(&user)),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = call(&b, &Request::new("POST", host, "/v2/_berth/token")).await;
    assert_eq!(r.status, 405);

    // A token whose payload names another user is refused, with invalid_token.
    let (payload, tag) = user.split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8(b64.decode(payload).unwrap()).unwrap();
    assert!(text.contains(&format!("\0{USER}\0")), "{text:?}");
    let forged = format!(
        "{}.{tag}",
        b64.encode(text.replace(&format!("\0{USER}\0"), "\0root\0"))
    );
    let r = call(
        &b,
        &Request::get(host, "/v2/").header("Authorization", &bearer(&forged)),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .ends_with(",error=\"invalid_token\""),
        "{:?}",
        r.header("www-authenticate")
    );

    // Another berth with the same secret file takes the token (edges of a Swarm, an
    // upgrade); one signing with a secret of its own does not.
    let same = berth(&routes(&with_secret));
    let own = berth(&routes(""));
    for (other, status) in [(&same, 200), (&own, 401)] {
        let h = format!("127.0.0.1:{}", other.http.port());
        let r = call(
            other,
            &Request::get(&h, "/v2/").header("Authorization", &bearer(&user)),
        )
        .await;
        assert_eq!(r.status, status, "{}", r.text());
    }
    // Behind a trusted proxy that terminates TLS, the realm says https.
    let r = call(
        &b,
        &Request::get(host, "/v2/").header("X-Forwarded-Proto", "https"),
    )
    .await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"https://"),
        "{:?}",
        r.header("www-authenticate")
    );

    // The basic-auth route on the same file takes no token, and has no token endpoint.
    let other = format!("localhost:{port}");
    let r = call(
        &b,
        &Request::get(&other, "/v2/").header("Authorization", &bearer(&user)),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    for auth in [None, Some(basic(USER, PASSWORD))] {
        let mut req = Request::get(&other, "/v2/_berth/token");
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = call(&b, &req).await;
        assert!(!r.text().contains("access_token"), "{auth:?}: {}", r.text());
    }

    // A change of the htpasswd file ends the tokens signed before it.
    let loaded = b.log().matches("htpasswd loaded").count();
    htpasswd(&file, "bob", "battery staple");
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.log().matches("htpasswd loaded").count() == loaded {
        assert!(
            Instant::now() < deadline,
            "the file was not re-read:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = call(
        &b,
        &Request::get(host, "/v2/").header("Authorization", &bearer(&user)),
    )
    .await;
    assert_eq!(
        r.status, 401,
        "a token signed before the change still works"
    );
}
