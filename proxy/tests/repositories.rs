//! Registry permissions per repository (`auth.repositories`, `auth.groups`): the real
//! `berth` in front of Debian's `docker-registry` with no auth of its own, with skopeo, the
//! Docker CLI and raw requests as alice (of team-a), bob, admin and nobody.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use berth_testkit::client::{Body, Request};
use berth_testkit::oci::build_image;
use berth_testkit::registry::{skopeo, Registry};
use berth_testkit::BerthProcess;
use common::{berth, call, config, docker_cli, route, value, wait_for};

const TEAMS: &str = "# teams\nteam-a: alice\n";

const USERS: [(&str, &str); 3] = [
    ("alice", "alice-pw"),
    ("bob", "bob-pw"),
    ("admin", "admin-pw"),
];

fn password(user: &str) -> &'static str {
    USERS.iter().find(|(u, _)| *u == user).unwrap().1
}

fn basic(user: &str) -> String {
    let raw = format!("{user}:{}", password(user));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// berth with the contract's rules, a refusal for `secret/*`, and anonymous pulls of
/// `public/*`, in front of a registry without auth; the groups file holds `groups` (none
/// at all with `None`).
fn registry_with_rules(dir: &Path, groups: Option<&str>) -> (Registry, BerthProcess) {
    let registry =
        Registry::start_open().expect("docker-registry must be installed (scripts/test does)");
    let htpasswd = dir.join("htpasswd");
    for (i, (user, pw)) in USERS.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-bB")
            .arg(&htpasswd)
            .args([user, pw])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let groups_file = dir.join("groups");
    if let Some(text) = groups {
        std::fs::write(&groups_file, text).unwrap();
    }
    let groups = groups_file;
    let rules = format!(
        "profile = \"registry\"\nauth.htpasswd = \"{}\"\nauth.groups = \"{}\"\n\
         auth.repositories = [\n\
           {{ repositories = [\"team-a/*\"], users = [\"@team-a\"], allow = [\"pull\", \"push\"] }},\n\
           {{ repositories = [\"*\"], users = [\"admin\"], allow = [\"pull\", \"push\", \"delete\"] }},\n\
           {{ repositories = [\"secret/*\"], users = [\"*\"], allow = [] }},\n\
           {{ repositories = [\"public/*\"], users = [\"anonymous\"], allow = [\"pull\"] }},\n\
           {{ repositories = [\"*\"], users = [\"*\"], allow = [\"pull\"] }},\n\
         ]",
        htpasswd.display(),
        groups.display()
    );
    let b = berth(
        &config(&route("127.0.0.1", &[registry.addr], &rules))
            .replace("[listen]\n", "[listen]\nmetrics = \"{admin}\"\n"),
    );
    (registry, b)
}

/// skopeo copies the OCI layout at `layout` to `repository:tag` as `user`.
fn push(b: &BerthProcess, layout: &Path, user: &str, repository: &str) -> (bool, String) {
    let creds = format!("{user}:{}", password(user));
    let out = tokio::task::block_in_place(|| {
        skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/{repository}:v1", b.http),
        ])
        .unwrap()
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// skopeo pulls `repository:v1` as `user` (`None`: without credentials) into `into`.
fn pull(b: &BerthProcess, into: &Path, user: Option<&str>, repository: &str) -> bool {
    let mut args = vec!["copy".to_string(), "--src-tls-verify=false".to_string()];
    match user {
        Some(user) => {
            args.push("--src-creds".into());
            args.push(format!("{user}:{}", password(user)));
        }
        None => args.push("--src-no-creds".into()),
    }
    args.push(format!("docker://{}/{repository}:v1", b.http));
    args.push(format!("oci:{}:v1", into.display()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tokio::task::block_in_place(|| skopeo(&args).unwrap().status.success())
}

fn tags_in_storage(registry: &Registry, repository: &str) -> Vec<String> {
    let dir = registry
        .storage()
        .join("docker/registry/v2/repositories")
        .join(repository)
        .join("_manifests/tags");
    let mut tags: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

#[tokio::test(flavor = "multi_thread")]
async fn each_user_pulls_pushes_and_deletes_what_the_rules_grant_and_nothing_else() {
    let work = tempfile::tempdir().unwrap();
    let (registry, b) = registry_with_rules(work.path(), Some(TEAMS));
    let layout = work.path().join("image");
    let image = build_image(&layout, "v1", &[2 << 20, 1 << 20], 31).unwrap();
    let layer = image.layer_digests[0].clone();

    // admin pushes anywhere; alice, of team-a, to team-a's repositories.
    for repository in ["public/base", "secret/x"] {
        let (ok, said) = push(&b, &layout, "admin", repository);
        assert!(ok, "admin push to {repository}: {said}\n{}", b.log());
    }
    let (ok, said) = push(&b, &layout, "alice", "team-a/app");
    assert!(ok, "alice push: {said}\n{}", b.log());
    // bob may pull team-a/app, not push to it or to a repository of his own: refused
    // before a byte is stored.
    let (ok, said) = push(&b, &layout, "bob", "team-a/other");
    assert!(!ok, "bob pushed to team-a: {said}");
    assert!(said.contains("denied"), "{said}");
    assert_eq!(
        tags_in_storage(&registry, "team-a/other"),
        Vec::<String>::new()
    );
    let (ok, said) = push(&b, &layout, "bob", "bob/app");
    assert!(!ok, "bob pushed to bob/app");
    assert!(said.contains("denied"), "{said}");
    assert_eq!(tags_in_storage(&registry, "bob/app"), Vec::<String>::new());
    assert!(pull(
        &b,
        &work.path().join("bob-pull"),
        Some("bob"),
        "team-a/app"
    ));
    // secret/* is refused to everyone but admin (whose rule comes first).
    assert!(!pull(
        &b,
        &work.path().join("bob-secret"),
        Some("bob"),
        "secret/x"
    ));
    assert!(pull(
        &b,
        &work.path().join("admin-secret"),
        Some("admin"),
        "secret/x"
    ));
    // Without credentials: public/* only.
    assert!(pull(
        &b,
        &work.path().join("anon-public"),
        None,
        "public/base"
    ));
    assert!(!pull(
        &b,
        &work.path().join("anon-team"),
        None,
        "team-a/app"
    ));

    // A cross-repository mount needs pull on where it mounts from: alice may push to
    // team-a/app and pull public/base, but not secret/x, which holds the same layer.
    let mount = |from: &str| {
        Request::new(
            "POST",
            "127.0.0.1",
            &format!(
                "/v2/team-a/mounted/blobs/uploads/?mount={layer}&from={}",
                from.replace('/', "%2F")
            ),
        )
        .header("Authorization", &basic("alice"))
    };
    let r = call(&b, &mount("secret/x")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("\"DENIED\""), "{}", r.text());
    // The registry reads `mount` and `from` from a form body too, before the query: a form
    // body is refused whatever the query says.
    let urlencoded = Request::new(
        "POST",
        "127.0.0.1",
        "/v2/team-a/mounted/blobs/uploads/?from=public%2Fbase",
    )
    .header("Authorization", &basic("alice"))
    .header(
        "Content-Type",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
    )
    .body(Body::Bytes(
        format!("mount={layer}&from=secret/x").into_bytes(),
    ));
    let r = call(&b, &urlencoded).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let boundary = "b0undary";
    let multipart = Request::new("POST", "127.0.0.1", "/v2/team-a/mounted/blobs/uploads/")
        .header("Authorization", &basic("alice"))
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::Bytes(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"mount\"\r\n\r\n{layer}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"from\"\r\n\r\nsecret/x\r\n\
                 --{boundary}--\r\n"
            )
            .into_bytes(),
        ));
    let r = call(&b, &multipart).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let blob = format!("/v2/team-a/mounted/blobs/{layer}");
    let head = Request::new("HEAD", "127.0.0.1", &blob).header("Authorization", &basic("alice"));
    assert_eq!(call(&b, &head).await.status, 404, "nothing was mounted");
    let r = call(&b, &mount("public/base")).await;
    assert_eq!(r.status, 201, "the registry mounts it: {}", r.text());
    assert_eq!(call(&b, &head).await.status, 200);

    // Other spellings of a repository bob may not read never reach the registry.
    for target in [
        "/v2/secret%2Fx/manifests/v1",
        "/v2/secret//x/manifests/v1",
        "/v2/public/../secret/x/manifests/v1",
        "/v2/Secret/x/manifests/v1",
        "http://127.0.0.1/v2/secret/x/manifests/v1",
    ] {
        let r = call(
            &b,
            &Request::get("127.0.0.1", target).header("Authorization", &basic("bob")),
        )
        .await;
        assert!(matches!(r.status, 400 | 403), "{target}: {}", r.status);
    }

    // Deleting a manifest: admin's right, not alice's.
    let manifest = format!("/v2/team-a/app/manifests/{}", image.manifest_digest);
    let delete = |user: &str| {
        Request::new("DELETE", "127.0.0.1", &manifest).header("Authorization", &basic(user))
    };
    let r = call(&b, &delete("alice")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = call(&b, &delete("admin")).await;
    assert_eq!(r.status, 202, "{}", r.text());

    // The catalog lists every repository: bob may not pull secret/*, so he does not see it.
    let catalog = |user: &str| {
        Request::get("127.0.0.1", "/v2/_catalog").header("Authorization", &basic(user))
    };
    assert_eq!(call(&b, &catalog("bob")).await.status, 403);
    let r = call(&b, &catalog("admin")).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("secret/x"), "{}", r.text());

    // A user the rules do not know of gets what `*` gets; a request outside the API, none.
    let r = call(
        &b,
        &Request::get("127.0.0.1", "/debug/vars").header("Authorization", &basic("bob")),
    )
    .await;
    assert_eq!(r.status, 403);

    // Refusals are counted by action (when each request has ended: the last one first).
    let m = wait_for(
        &b,
        "berth_registry_denied_total{action=\"unknown\",host=\"127.0.0.1\"}",
        7.0,
    )
    .await;
    let denied = |action: &str| {
        value(
            &m,
            &format!("berth_registry_denied_total{{action=\"{action}\",host=\"127.0.0.1\"}}"),
        )
    };
    assert!(denied("push") >= 2.0, "{m:?}");
    assert_eq!(denied("delete"), 1.0);
    assert!(
        denied("pull") >= 3.0,
        "bob's secret pull, alice's mount, bob's catalog"
    );
    assert!(
        denied("unknown") >= 3.0,
        "the form bodies and the path outside the API"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_cli_is_denied_a_push_the_rules_do_not_grant() {
    let _daemon = berth_testkit::docker::shared().await;
    let work = tempfile::tempdir().unwrap();
    let (_registry, b) = registry_with_rules(work.path(), Some(TEAMS));
    let layout = work.path().join("image");
    build_image(&layout, "v1", &[1 << 20], 32).unwrap();
    for (user, repository) in [("alice", "team-a/app"), ("admin", "public/base")] {
        let (ok, said) = push(&b, &layout, user, repository);
        assert!(ok, "{said}");
    }
    let authority = b.http.to_string();
    let cli = work.path().join("docker-config");
    std::fs::create_dir_all(&cli).unwrap();
    let image = format!("{authority}/team-a/app:v1");

    // Anonymous pulls of public/* only (the rules name anonymous, so berth speaks the
    // token flow the Docker CLI needs to pull without a login).
    let public = format!("{authority}/public/base:v1");
    let (ok, said) = docker_cli(&cli, &["pull", &public]);
    assert!(ok, "anonymous pull of public/base: {said}\n{}", b.log());
    let (ok, said) = docker_cli(&cli, &["pull", &image]);
    assert!(!ok, "anonymous pull of team-a/app: {said}");
    // bob logs in, pulls team-a/app, and is denied a push to it.
    let (ok, said) = docker_cli(
        &cli,
        &["login", "-u", "bob", "-p", password("bob"), &authority],
    );
    assert!(ok, "{said}\n{}", b.log());
    let (ok, said) = docker_cli(&cli, &["pull", &image]);
    assert!(ok, "bob's pull: {said}\n{}", b.log());
    let other = format!("{authority}/team-a/app:bob");
    docker_cli(&cli, &["tag", &image, &other]);
    let (ok, said) = docker_cli(&cli, &["push", &other]);
    assert!(!ok, "bob pushed: {said}");
    assert!(
        said.contains("denied: requested access to the resource is denied"),
        "{said}\n{}",
        b.log()
    );
    // alice may.
    let (ok, said) = docker_cli(
        &cli,
        &["login", "-u", "alice", "-p", password("alice"), &authority],
    );
    assert!(ok, "{said}");
    let (ok, said) = docker_cli(&cli, &["push", &other]);
    assert!(ok, "alice's push: {said}\n{}", b.log());
    for i in [&image, &other, &public] {
        docker_cli(&cli, &["rmi", i]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_groups_file_changes_who_may_push() {
    let work = tempfile::tempdir().unwrap();
    let (_registry, b) = registry_with_rules(work.path(), Some(TEAMS));
    let upload = |user: &str| {
        Request::new("POST", "127.0.0.1", "/v2/team-a/mounted/blobs/uploads/")
            .header("Authorization", &basic(user))
    };
    let with_token = |token: &str| {
        Request::new("POST", "127.0.0.1", "/v2/team-a/mounted/blobs/uploads/")
            .header("Authorization", &format!("Bearer {token}"))
    };
    const PUSH: &[&str] = &["repository:team-a/mounted:pull,push"];
    assert_eq!(call(&b, &upload("bob")).await.status, 403);
    assert_eq!(call(&b, &upload("alice")).await.status, 202);
    // Tokens asked for before the change: each grants what the rules allowed then.
    let bob_before = scoped_token(&b, Some("bob"), PUSH).await;
    let alice_before = scoped_token(&b, Some("alice"), PUSH).await;
    assert_eq!(call(&b, &with_token(&alice_before)).await.status, 202);
    std::fs::write(work.path().join("groups"), "team-a: bob\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&b, &upload("bob")).await.status != 202 {
        assert!(std::time::Instant::now() < deadline, "{}", b.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(call(&b, &upload("alice")).await.status, 403);
    // bob's old token was granted pull only; alice's is held to the rules as they are now.
    assert_eq!(call(&b, &with_token(&bob_before)).await.status, 401);
    assert_eq!(call(&b, &with_token(&alice_before)).await.status, 401);
    let bob_after = scoped_token(&b, Some("bob"), PUSH).await;
    assert_eq!(call(&b, &with_token(&bob_after)).await.status, 202);
    // A bad groups file keeps the groups in effect.
    std::fs::write(work.path().join("groups"), "team-a bob\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !b.log().contains("groups") || !b.log().contains("not used") {
        assert!(std::time::Instant::now() < deadline, "{}", b.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(call(&b, &upload("bob")).await.status, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_holder_is_told_its_token_does_not_reach() {
    let work = tempfile::tempdir().unwrap();
    let (_registry, b) = registry_with_rules(work.path(), Some(TEAMS));
    async fn token(b: &BerthProcess, user: &str) -> String {
        let r = call(
            b,
            &Request::get(
                "127.0.0.1",
                "/v2/_berth/token?service=127.0.0.1&scope=repository:team-a/app:pull,push",
            )
            .header("Authorization", &basic(user)),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let json: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        json["token"].as_str().unwrap().to_string()
    }
    let upload = |token: &str| {
        Request::new("POST", "127.0.0.1", "/v2/team-a/app/blobs/uploads/")
            .header("Authorization", &format!("Bearer {token}"))
    };
    let r = call(&b, &upload(&token(&b, "bob").await)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default().to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(r.text().contains("\"DENIED\""), "{}", r.text());
    let r = call(&b, &upload(&token(&b, "alice").await)).await;
    assert_eq!(r.status, 202, "{}", r.text());
}

/// A token from the token endpoint for `user` (`None`: without credentials) asking `scopes`
/// (each a `scope` parameter).
async fn scoped_token(b: &BerthProcess, user: Option<&str>, scopes: &[&str]) -> String {
    let mut target = "/v2/_berth/token?service=127.0.0.1".to_string();
    for scope in scopes {
        target.push_str("&scope=");
        target.push_str(scope);
    }
    let mut request = Request::get("127.0.0.1", &target);
    if let Some(user) = user {
        request = request.header("Authorization", &basic(user));
    }
    let r = call(b, &request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let json: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    json["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_grants_what_was_asked_and_the_rules_allow_and_no_more() {
    let work = tempfile::tempdir().unwrap();
    let (_registry, b) = registry_with_rules(work.path(), Some(TEAMS));
    let with = |method: &str, target: &str, token: &str| {
        Request::new(method, "127.0.0.1", target)
            .header("Authorization", &format!("Bearer {token}"))
    };
    let status = |r: &berth_testkit::client::Response| {
        let scope = r
            .header("www-authenticate")
            .is_some_and(|c| c.contains("insufficient_scope"));
        (r.status, scope)
    };
    const UPLOAD: &str = "/v2/team-a/app/blobs/uploads/";

    // alice asks for pull and push on team-a/app (granted), pull on secret/x (the rules
    // refuse it) and the catalog (she may not pull everything).
    let alice = scoped_token(
        &b,
        Some("alice"),
        &[
            "repository:team-a/app:pull,push",
            "repository%3Asecret%2Fx%3Apull",
            "registry:catalog:*",
        ],
    )
    .await;
    let r = call(&b, &with("POST", UPLOAD, &alice)).await;
    assert_eq!(r.status, 202, "{}", r.text());
    for target in [
        "/v2/secret/x/tags/list",
        // The rules let alice pull team-b/x; the token was not asked for it.
        "/v2/team-b/x/tags/list",
        "/v2/_catalog",
        "/v2/team-a/app/blobs/uploads/?mount=sha256:00&from=public/base",
    ] {
        let method = if target.contains("mount") {
            "POST"
        } else {
            "GET"
        };
        let r = call(&b, &with(method, target, &alice)).await;
        assert_eq!(status(&r), (401, true), "{target}: {}", r.text());
    }
    // GET /v2/ needs a user's token, whatever it names.
    let r = call(&b, &with("GET", "/v2/", &alice)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A token asking pull only does not push, though the rules would let alice.
    let pulls = scoped_token(&b, Some("alice"), &["repository:team-a/app:pull"]).await;
    let r = call(&b, &with("POST", UPLOAD, &pulls)).await;
    assert_eq!(status(&r), (401, true), "{}", r.text());
    let r = call(&b, &with("GET", "/v2/team-a/app/tags/list", &pulls)).await;
    assert_ne!(r.status, 401, "{}", r.text());

    // A mount needs pull on its source in the token too.
    let mount = "/v2/team-a/app/blobs/uploads/?mount=sha256:00&from=public/base";
    let both = scoped_token(
        &b,
        Some("alice"),
        &[
            "repository:team-a/app:pull,push",
            "repository:public/base:pull",
        ],
    )
    .await;
    let r = call(&b, &with("POST", mount, &both)).await;
    assert_eq!(r.status, 202, "{}", r.text());

    // admin may read the catalog when the token says so.
    let admin = scoped_token(&b, Some("admin"), &["registry:catalog:*"]).await;
    let r = call(&b, &with("GET", "/v2/_catalog", &admin)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let admin = scoped_token(&b, Some("admin"), &["repository:public/base:*"]).await;
    let r = call(&b, &with("GET", "/v2/_catalog", &admin)).await;
    assert_eq!(status(&r), (401, true), "{}", r.text());
    let r = call(&b, &with("DELETE", "/v2/public/base/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000", &admin)).await;
    assert_ne!(r.status, 401, "{}", r.text());

    // Without credentials: pull where a rule names anonymous, nothing else.
    let anonymous = scoped_token(
        &b,
        None,
        &[
            "repository:public/base:pull,push",
            "repository:team-a/app:pull",
        ],
    )
    .await;
    let r = call(&b, &with("GET", "/v2/public/base/tags/list", &anonymous)).await;
    assert_ne!(r.status, 401, "{}", r.text());
    for (method, target) in [
        ("GET", "/v2/team-a/app/tags/list"),
        ("POST", "/v2/public/base/blobs/uploads/"),
    ] {
        let r = call(&b, &with(method, target, &anonymous)).await;
        assert_eq!(r.status, 401, "{target}: {}", r.text());
    }
    // Nothing asked, nothing granted.
    let nothing = scoped_token(&b, Some("admin"), &[]).await;
    let r = call(&b, &with("GET", "/v2/public/base/tags/list", &nothing)).await;
    assert_eq!(status(&r), (401, true), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_groups_file_never_read_lets_nothing_through_until_it_is() {
    let work = tempfile::tempdir().unwrap();
    let (_registry, b) = registry_with_rules(work.path(), None);
    let upload = |user: &str| {
        Request::new("POST", "127.0.0.1", "/v2/team-a/app/blobs/uploads/")
            .header("Authorization", &basic(user))
    };
    let pull = Request::get("127.0.0.1", "/v2/public/base/tags/list")
        .header("Authorization", &basic("bob"));
    // A rule about a group must not stop matching because the group is unknown: nothing
    // passes, not even what no group rule is about.
    assert_eq!(call(&b, &upload("alice")).await.status, 403);
    assert_eq!(call(&b, &pull).await.status, 403);
    std::fs::write(work.path().join("groups"), TEAMS).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while call(&b, &upload("alice")).await.status != 202 {
        assert!(std::time::Instant::now() < deadline, "{}", b.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(call(&b, &pull).await.status, 403);
}
