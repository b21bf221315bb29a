//! Repository rules against a model written from docs/access.md: a registry request, built
//! from its parts, is let through only when the first rule naming its repository and its
//! user allows its action (a mount also needs `pull` where it mounts from; `GET /v2/` any
//! user; the catalog only whoever may pull everything; anything else never), and the
//! request read back from its method and path is the one that was built. With a token, the
//! request must also be one the token asked for and was granted (the intersection of what
//! it asked and what the rules allow), as the Docker token specification says.
#![no_main]

use arbitrary::Arbitrary;
use berth_core::config::parse_config;
use berth_core::route::{access, parse_groups, Access, Action, Decision, Scopes};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

const REPOSITORIES: [&str; 8] = [
    "team-a/app",
    "team-a",
    "team-ab/x",
    "secret/x",
    "public/base",
    "a/manifests/b",
    "bob/app",
    "a.b/c__d/e-f",
];
const PATTERNS: [&str; 9] = [
    "*",
    "team-a/*",
    "team-*",
    "secret/*",
    "public/*",
    "team-a",
    "*/app",
    "*a*",
    "a.b/*/e-f",
];
const WHO: [&str; 7] = ["alice", "bob", "admin", "@team-a", "@ops", "*", "anonymous"];
const USERS: [&str; 3] = ["alice", "bob", "admin"];
const ACTIONS: [&str; 3] = ["pull", "push", "delete"];
const METHODS: [&str; 7] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"];
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[derive(Arbitrary, Debug)]
struct RuleIn {
    repositories: Vec<u8>,
    users: Vec<u8>,
    allow: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Base(u8),
    Catalog(u8),
    Tags(u8, u8),
    Manifest(u8, u8, bool),
    Blob(u8, u8),
    UploadStart(u8, u8, Option<u8>),
    UploadChunk(u8, u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Token {
    own: u8,
    from: u8,
    others: Vec<(u8, u8)>,
    catalog: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<RuleIn>,
    anonymous_read: bool,
    bob_in_team_a: bool,
    user: Option<u8>,
    op: Op,
    /// The request carries a token that asked for actions (bits) on the request's
    /// repository, on its mount source, on these other (repository, actions bits) and, with
    /// `true`, the catalog.
    token: Option<Token>,
}

fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[i as usize % pool.len()]
}

/// What the docs say a request does: (repository, action, mount source), `None` for one
/// the API does not take.
type Expected = Option<(String, &'static str, Option<String>)>;

fn build(op: &Op) -> (String, String, Expected) {
    let repo = |i: &u8| pick(&REPOSITORIES, *i).to_string();
    let method = |i: &u8| pick(&METHODS, *i).to_string();
    let on = |r: String, a: &'static str| Some((r, a, None));
    match op {
        Op::Base(m) => (method(m), "/v2/".into(), None),
        Op::Catalog(m) => (method(m), "/v2/_catalog".into(), None),
        Op::Tags(m, r) => {
            let e = matches!(method(m).as_str(), "GET" | "HEAD").then(|| (repo(r), "pull", None));
            (method(m), format!("/v2/{}/tags/list", repo(r)), e)
        }
        Op::Manifest(m, r, by_digest) => {
            let reference = if *by_digest { DIGEST } else { "v1" };
            let e = match method(m).as_str() {
                "GET" | "HEAD" => on(repo(r), "pull"),
                "PUT" => on(repo(r), "push"),
                "DELETE" => on(repo(r), "delete"),
                _ => None,
            };
            (method(m), format!("/v2/{}/manifests/{reference}", repo(r)), e)
        }
        Op::Blob(m, r) => {
            let e = match method(m).as_str() {
                "GET" | "HEAD" => on(repo(r), "pull"),
                "DELETE" => on(repo(r), "delete"),
                _ => None,
            };
            (method(m), format!("/v2/{}/blobs/{DIGEST}", repo(r)), e)
        }
        Op::UploadStart(m, r, from) => {
            let query = from.map_or(String::new(), |f| {
                format!("?mount={DIGEST}&from={}", repo(&f).replace('/', "%2F"))
            });
            let e = (method(m) == "POST").then(|| (repo(r), "push", from.map(|f| repo(&f))));
            (method(m), format!("/v2/{}/blobs/uploads/{query}", repo(r)), e)
        }
        Op::UploadChunk(m, r) => {
            let e = match method(m).as_str() {
                "GET" | "HEAD" | "PATCH" | "PUT" | "DELETE" => on(repo(r), "push"),
                _ => None,
            };
            (method(m), format!("/v2/{}/blobs/uploads/7a1c-u", repo(r)), e)
        }
        Op::Other(path) => ("GET".into(), path.clone(), None),
    }
}

struct Model {
    rules: Vec<(Vec<Regex>, Vec<&'static str>, Vec<&'static str>)>,
    team_a: Vec<&'static str>,
}

impl Model {
    fn names(&self, who: &str, user: Option<&str>) -> bool {
        match (who, user) {
            ("anonymous", None) => true,
            ("*", Some(_)) => true,
            ("@team-a", Some(u)) => self.team_a.contains(&u),
            ("@ops", Some(u)) => u == "admin",
            (name, Some(u)) => name == u,
            _ => false,
        }
    }

    /// access.md: whoever may pull every repository — each rule naming them allows pull, up
    /// to one for `*`.
    fn pulls_everything(&self, user: Option<&str>) -> bool {
        for (patterns, users, allow) in &self.rules {
            if users.iter().any(|w| self.names(w, user)) {
                if !allow.contains(&"pull") {
                    return false;
                }
                if patterns.iter().any(|p| p.as_str() == "^.*$") {
                    return true;
                }
            }
        }
        false
    }

    fn allows(&self, repository: &str, user: Option<&str>, action: &str) -> bool {
        for (patterns, users, allow) in &self.rules {
            if patterns.iter().any(|p| p.is_match(repository))
                && users.iter().any(|w| self.names(w, user))
            {
                return allow.contains(&action);
            }
        }
        false
    }
}

fuzz_target!(|input: Input| {
    let mut toml = String::from(
        "[listen]\nhttp = \"127.0.0.1:8080\"\n[[route]]\nhost = \"r.test\"\n\
         upstreams = [\"127.0.0.1:1\"]\nprofile = \"registry\"\n\
         auth.htpasswd = \"/h\"\nauth.groups = \"/g\"\nauth.repositories = [\n",
    );
    let mut model = Model {
        rules: Vec::new(),
        team_a: if input.bob_in_team_a { vec!["alice", "bob"] } else { vec!["alice"] },
    };
    for r in input.rules.iter().take(6) {
        let repositories: Vec<&'static str> =
            r.repositories.iter().take(3).map(|i| pick(&PATTERNS, *i)).collect();
        let users: Vec<&'static str> = r.users.iter().take(3).map(|i| pick(&WHO, *i)).collect();
        let allow: Vec<&'static str> = r.allow.iter().take(3).map(|i| pick(&ACTIONS, *i)).collect();
        if repositories.is_empty() || users.is_empty() {
            continue;
        }
        let regexes = repositories
            .iter()
            .map(|p| Regex::new(&format!("^{}$", regex::escape(p).replace(r"\*", ".*"))).expect("re"))
            .collect();
        model.rules.push((regexes, users.clone(), allow.clone()));
        toml.push_str(&format!(
            "{{ repositories = {repositories:?}, users = {users:?}, allow = {allow:?} }},\n"
        ));
    }
    toml.push_str("]\n");
    if input.anonymous_read {
        toml.push_str("auth.anonymous-read = true\n");
        // A rule refusing pulls to users but not to anonymous would be walked around by not
        // logging in: such a file is refused; otherwise anonymous-read is one more rule.
        let walked_around = model
            .rules
            .iter()
            .any(|(_, users, allow)| !allow.contains(&"pull") && !users.contains(&"anonymous"));
        if walked_around {
            assert!(parse_config(&toml).is_err(), "{toml}");
            return;
        }
        let all = Regex::new("^.*$").expect("re");
        model.rules.push((vec![all], vec!["anonymous"], vec!["pull"]));
    }
    let config = parse_config(&toml).unwrap_or_else(|e| panic!("{toml}\n{e:?}"));
    let rules = config.routes[0]
        .auth
        .as_ref()
        .and_then(|a| a.repositories.clone())
        .expect("rules");
    let groups_text = if input.bob_in_team_a { "team-a: alice bob\nops: admin\n" } else { "team-a: alice\nops: admin\n" };
    let groups = parse_groups(groups_text).expect("groups");
    let user = input.user.map(|u| pick(&USERS, u));

    let (method, path, expected) = build(&input.op);
    let read = access(&method, &path);
    let (own, source) = match &read {
        Access::Repository { name, mount_from, .. } => (Some(name.clone()), mount_from.clone()),
        _ => (None, None),
    };
    let mut decision = rules.decide(&read, user, &groups);
    // A token: what it asked, as the token endpoint reads a query, granted where the rules
    // allow; the request then needs both the token and the rules.
    let mut in_token: Box<dyn Fn(&str, &str) -> bool> = Box::new(|_, _| true);
    let mut catalog_in_token = true;
    if let Some(token) = &input.token {
        let mut query = String::from("service=r.test");
        let mut wanted: Vec<(String, &str)> = Vec::new();
        let asked = own
            .iter()
            .map(|r| (r.clone(), token.own))
            .chain(source.iter().map(|r| (r.clone(), token.from)))
            .chain(token.others.iter().take(4).map(|(r, bits)| (pick(&REPOSITORIES, *r).to_string(), *bits)));
        for (repository, bits) in asked {
            let actions: Vec<&str> =
                (0..3).filter(|i| bits & (1 << i) != 0).map(|i| ACTIONS[i]).collect();
            if actions.is_empty() {
                continue;
            }
            query.push_str(&format!(
                "&scope=repository%3A{}%3A{}",
                repository.replace('/', "%2F"),
                actions.join("%2C")
            ));
            wanted.extend(actions.iter().map(|a| (repository.clone(), *a)));
        }
        let catalog = &token.catalog;
        if *catalog {
            query.push_str("&scope=registry:catalog:*");
        }
        let granted = Scopes::asked(&query).grant(|name, action| {
            let asked = match name {
                Some(name) => Access::Repository {
                    name: name.to_string(),
                    action,
                    mount_from: None,
                },
                None => Access::Catalog,
            };
            rules.decide(&asked, user, &groups) == Decision::Allow
        });
        // The grant itself, against the model: each action asked is granted exactly when a
        // rule allows it, nothing else is, and the catalog when asked and all is pullable.
        for r in REPOSITORIES {
            for a in ACTIONS {
                let asked = Access::Repository {
                    name: r.to_string(),
                    action: Action::parse(a).expect("action"),
                    mount_from: None,
                };
                let want = wanted.iter().any(|(w, b)| w == r && *b == a) && model.allows(r, user, a);
                assert_eq!(granted.covers(&asked), want, "{r} {a} {input:?}");
            }
        }
        assert_eq!(
            granted.covers(&Access::Catalog),
            token.catalog && model.pulls_everything(user),
            "catalog {input:?}"
        );
        if !granted.covers(&read) {
            decision = Decision::Deny(Action::Pull);
        }
        let model = &model;
        in_token = Box::new(move |r: &str, a: &str| {
            wanted.iter().any(|(w, b)| w == r && *b == a) && model.allows(r, user, a)
        });
        catalog_in_token = *catalog;
    }
    match (&input.op, &expected) {
        (_, Some((repository, action, from))) => {
            assert_eq!(
                read,
                Access::Repository {
                    name: repository.clone(),
                    action: Action::parse(action).expect("action"),
                    mount_from: from.clone(),
                },
                "{method} {path}"
            );
            let allowed = model.allows(repository, user, action)
                && from.as_ref().is_none_or(|f| model.allows(f, user, "pull"))
                && in_token(repository, action)
                && from.as_ref().is_none_or(|f| in_token(f, "pull"));
            assert_eq!(decision == Decision::Allow, allowed, "{input:?}");
        }
        (Op::Base(_), None) if matches!(method.as_str(), "GET" | "HEAD") => {
            assert_eq!(decision == Decision::Allow, user.is_some());
        }
        (Op::Catalog(_), None) if matches!(method.as_str(), "GET" | "HEAD") => {
            let expected = model.pulls_everything(user) && catalog_in_token;
            assert_eq!(decision == Decision::Allow, expected, "{input:?}");
            // And then every repository is indeed theirs to pull.
            if expected {
                for r in REPOSITORIES {
                    assert!(model.allows(r, user, "pull"), "{r} {input:?}");
                }
            }
        }
        (Op::Other(_), None) => {
            // Only that it never panics: a free path has no oracle here (the grammar's
            // table is in core's unit tests).
        }
        _ => assert_ne!(decision, Decision::Allow, "{method} {path}"),
    }
});
