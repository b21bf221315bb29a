//! Registry permissions per repository (`auth.repositories`, `auth.groups`): who may pull,
//! push and delete what, on a registry route with basic auth. The rules as written, their
//! validation, the validated rules, and the decision itself — a pure function of the rules,
//! the groups, who asks and what the request does ([`super::registry::Access`]).
//!
//! ```toml
//! [[route]]
//! host = "registry.example.com"
//! upstreams = ["127.0.0.1:5000"]
//! profile = "registry"
//! auth.htpasswd = "/etc/berth/htpasswd"
//! auth.groups = "/etc/berth/groups"          # lines "team-a: alice carol"
//! auth.repositories = [                      # the first rule that matches wins
//!   { repositories = ["team-a/*"], users = ["@team-a"], allow = ["pull", "push"] },
//!   { repositories = ["*"], users = ["admin"], allow = ["pull", "push", "delete"] },
//!   { repositories = ["*"], users = ["*"], allow = ["pull"] },
//! ]
//! ```

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::client_auth::CERT_USER_PREFIX;
use super::registry::{repository_name, Access, Action};
use crate::errors::Errors;
use crate::logging::shown;

/// The longest value an error message quotes.
const MAX_SHOWN: usize = 128;

/// Who a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Who {
    /// A user of the htpasswd file.
    User(String),
    /// Every member of a group of `auth.groups` (`@team-a`).
    Group(String),
    /// Any user who logged in (`*`).
    Anyone,
    /// A request without credentials (`anonymous`).
    Anonymous,
}

impl Who {
    fn parse(text: &str) -> Result<Who, String> {
        match text {
            "*" => Ok(Who::Anyone),
            "anonymous" => Ok(Who::Anonymous),
            _ => {
                if let Some(group) = text.strip_prefix('@') {
                    return if group_name(group) {
                        Ok(Who::Group(group.to_string()))
                    } else {
                        Err(format!(
                            "\"{}\" is not a group: write @ and a name of letters, digits, `.`, `_` or `-`",
                            shown(text, MAX_SHOWN)
                        ))
                    };
                }
                if let Some(name) = text.strip_prefix(CERT_USER_PREFIX) {
                    // A certificate's common name: any text but control characters.
                    return if !name.is_empty() && !name.chars().any(char::is_control) {
                        Ok(Who::User(text.to_string()))
                    } else {
                        Err(format!(
                            "\"{}\" is not a certificate's identity: write cert: and the \
                             certificate's common name",
                            shown(text, MAX_SHOWN)
                        ))
                    };
                }
                if user_name(text) {
                    Ok(Who::User(text.to_string()))
                } else {
                    Err(format!(
                        "\"{}\" is not a user: a name as htpasswd writes it (no `:`, spaces or \
                         control characters), @group, \"*\" or \"anonymous\"",
                        shown(text, MAX_SHOWN)
                    ))
                }
            }
        }
    }

    /// Whether this names `user` (`None`: a request without credentials).
    fn names(&self, user: Option<&str>, groups: &Groups) -> bool {
        match (self, user) {
            (Who::Anonymous, None) => true,
            (Who::Anyone, Some(_)) => true,
            (Who::User(name), Some(user)) => name == user,
            (Who::Group(group), Some(user)) => groups.has(group, user),
            _ => false,
        }
    }
}

/// A user name as an htpasswd file may hold it: no `:`, whitespace or control characters.
fn user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
}

/// A group name: letters, digits, `.`, `_` and `-`.
fn group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A repository pattern: a repository name in which `*` stands for any run of characters,
/// `/` included (`team-a/*` is every repository under `team-a/`; `*` is all of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        // With each `*` read as one letter, the pattern is a repository name.
        let probe = text.replace('*', "x");
        if text.contains("**") || !repository_name(&probe) {
            return Err(format!(
                "\"{}\" is not a repository pattern: a repository name (lower-case letters, \
                 digits, `.`, `_`, `-`, components joined by `/`) in which `*` stands for any \
                 run of characters",
                shown(text, MAX_SHOWN)
            ));
        }
        Ok(Pattern(text.to_string()))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic two-pointer match with one backtracking point (linear for one `*`, at
    // most quadratic for several; names are at most 255 bytes).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// One rule as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Repository patterns.
    pub repositories: Vec<String>,
    /// Users, `@group`, `*` or `anonymous`.
    pub users: Vec<String>,
    /// `pull`, `push`, `delete`.
    pub allow: Vec<String>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The repositories it is about.
    pub repositories: Vec<Pattern>,
    /// Who it is about.
    pub users: Vec<Who>,
    /// What it allows them (nothing: a rule that refuses).
    pub allow: Vec<Action>,
}

impl Rule {
    /// `auth.anonymous-read` as a rule: anyone without credentials pulls every repository.
    pub fn anonymous_pulls() -> Rule {
        Rule {
            repositories: vec![Pattern("*".to_string())],
            users: vec![Who::Anonymous],
            allow: vec![Action::Pull],
        }
    }

    fn matches(&self, repository: &str, user: Option<&str>, groups: &Groups) -> bool {
        self.repositories.iter().any(|p| p.matches(repository))
            && self.users.iter().any(|w| w.names(user, groups))
    }
}

/// The members of each group, from `auth.groups`: lines `team-a: alice carol`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Groups(HashMap<String, HashSet<String>>);

impl Groups {
    /// Whether `user` is a member of `group`.
    pub fn has(&self, group: &str, user: &str) -> bool {
        self.0
            .get(group)
            .is_some_and(|members| members.contains(user))
    }

    /// The number of groups.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a groups file: `group: user user ...` per line; blank lines and `#` comments are
/// skipped; a group named twice has the members of both lines.
///
/// # Errors
/// One message per bad line, with its number, never quoting the file.
pub fn parse_groups(text: &str) -> Result<Groups, Vec<String>> {
    let mut groups: HashMap<String, HashSet<String>> = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((group, members)) = line.split_once(':') else {
            errors.push(format!("line {}: expected \"group: user user ...\"", i + 1));
            continue;
        };
        let group = group.trim();
        if !group_name(group) {
            errors.push(format!(
                "line {}: not a group name (letters, digits, `.`, `_`, `-`)",
                i + 1
            ));
            continue;
        }
        let set = groups.entry(group.to_string()).or_default();
        for member in members.split_whitespace() {
            if user_name(member) {
                set.insert(member.to_string());
            } else {
                errors.push(format!(
                    "line {}: a member is not a user name (no `:` or control characters)",
                    i + 1
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(Groups(groups))
    } else {
        Err(errors)
    }
}

/// What the rules decide about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It may go on.
    Allow,
    /// Only with a login: a request without credentials is challenged (`GET /v2/`).
    Login,
    /// Refused: this action on a repository is not granted (`403 DENIED` for a user; for a
    /// request without credentials, `401`, so that the client logs in).
    Deny(Action),
    /// Not a request of the registry API: refused whoever asks.
    Unknown,
}

/// A route's validated rules: the first that matches a repository and a user decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// The first rule naming `repository` and `user` allows `action`.
    pub fn grants(
        &self,
        repository: &str,
        user: Option<&str>,
        groups: &Groups,
        action: Action,
    ) -> bool {
        self.0
            .iter()
            .find(|r| r.matches(repository, user, groups))
            .is_some_and(|r| r.allow.contains(&action))
    }

    /// Whether `user` may pull every repository: each rule that names them grants `pull`,
    /// up to one for `*`. (A rule for some repositories that does not, before it, could
    /// hide names the catalog would show.)
    pub fn pulls_everything(&self, user: Option<&str>, groups: &Groups) -> bool {
        for rule in self
            .0
            .iter()
            .filter(|r| r.users.iter().any(|w| w.names(user, groups)))
        {
            if !rule.allow.contains(&Action::Pull) {
                return false;
            }
            if rule.repositories.iter().any(|p| p.0 == "*") {
                return true;
            }
        }
        false
    }

    /// Whether any rule names a client certificate's identity (`cert:<CN>`).
    pub fn names_certificates(&self) -> bool {
        self.0.iter().any(|r| {
            r.users
                .iter()
                .any(|w| matches!(w, Who::User(u) if u.starts_with(CERT_USER_PREFIX)))
        })
    }

    /// Whether any rule names requests without credentials.
    pub fn names_anonymous(&self) -> bool {
        self.0.iter().any(|r| r.users.contains(&Who::Anonymous))
    }

    /// What the rules decide about `access` by `user` (`None`: no credentials).
    ///
    /// - `GET /v2/` (the API's version check, and what `docker login` asks): any user; a
    ///   request without credentials is challenged, as the token flow needs.
    /// - The catalog lists every repository: only for whoever may pull every one
    ///   ([`Rules::pulls_everything`]).
    /// - A repository request: its action on its repository; a cross-repository mount
    ///   needs `pull` on the repository it mounts from too.
    pub fn decide(&self, access: &Access, user: Option<&str>, groups: &Groups) -> Decision {
        let check = |repository: &str, action: Action| {
            if self.grants(repository, user, groups, action) {
                Decision::Allow
            } else {
                Decision::Deny(action)
            }
        };
        match access {
            Access::Base if user.is_some() => Decision::Allow,
            Access::Base => Decision::Login,
            Access::Catalog if self.pulls_everything(user, groups) => Decision::Allow,
            Access::Catalog => Decision::Deny(Action::Pull),
            Access::Repository {
                name,
                action,
                mount_from,
            } => match check(name, *action) {
                Decision::Allow => match mount_from {
                    Some(from) => check(from, Action::Pull),
                    None => Decision::Allow,
                },
                denied => denied,
            },
            Access::Unknown => Decision::Unknown,
        }
    }
}

/// Validates `auth.repositories`; `key` names a key in errors.
pub fn validate_rules(
    raw: &[RawRule],
    key: &dyn Fn(&str) -> String,
    errors: &mut Errors,
) -> Option<Rules> {
    let mut rules = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, r) in raw.iter().enumerate() {
        let at = |field: &str| format!("{}[{i}].{field}", key("auth.repositories"));
        let mut rule = Rule {
            repositories: Vec::new(),
            users: Vec::new(),
            allow: Vec::new(),
        };
        for (field, empty) in [
            ("repositories", r.repositories.is_empty()),
            ("users", r.users.is_empty()),
        ] {
            if empty {
                errors.push(at(field), "empty: the rule would match nothing");
                ok = false;
            }
        }
        for p in &r.repositories {
            match Pattern::parse(p.trim()) {
                Ok(p) => rule.repositories.push(p),
                Err(e) => {
                    errors.push(at("repositories"), e);
                    ok = false;
                }
            }
        }
        for u in &r.users {
            match Who::parse(u.trim()) {
                Ok(w) => rule.users.push(w),
                Err(e) => {
                    errors.push(at("users"), e);
                    ok = false;
                }
            }
        }
        for a in &r.allow {
            match Action::parse(a.trim()) {
                Some(a) if !rule.allow.contains(&a) => rule.allow.push(a),
                Some(_) => {}
                None => {
                    errors.push(
                        at("allow"),
                        format!(
                            "unknown action \"{}\": expected pull, push or delete",
                            shown(a, MAX_SHOWN)
                        ),
                    );
                    ok = false;
                }
            }
        }
        rule.allow.sort();
        rules.push(rule);
    }
    ok.then_some(Rules(rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repositories: &[&str], users: &[&str], allow: &[&str]) -> RawRule {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect();
        RawRule {
            repositories: owned(repositories),
            users: owned(users),
            allow: owned(allow),
        }
    }

    fn rules(raw: &[RawRule]) -> Rules {
        let mut errors = Errors::default();
        let rules = validate_rules(raw, &|k| k.to_string(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        rules.expect("valid")
    }

    /// The contract's example.
    fn example() -> (Rules, Groups) {
        let rules = rules(&[
            rule(&["team-a/*"], &["@team-a"], &["pull", "push"]),
            rule(&["*"], &["admin"], &["pull", "push", "delete"]),
            rule(&["*"], &["*"], &["pull"]),
        ]);
        let groups = parse_groups("team-a: alice carol admin\n").expect("groups");
        (rules, groups)
    }

    fn on(name: &str, action: Action) -> Access {
        Access::Repository {
            name: name.into(),
            action,
            mount_from: None,
        }
    }

    #[test]
    fn the_first_rule_that_matches_the_repository_and_the_user_decides() {
        let (rules, groups) = example();
        let decide = |user: Option<&str>, access: Access| rules.decide(&access, user, &groups);
        use Action::{Delete, Pull, Push};
        use Decision::{Allow, Deny};
        let cases = [
            (Some("alice"), on("team-a/app", Push), Allow),
            (Some("alice"), on("team-a/app", Pull), Allow),
            (Some("alice"), on("team-a/app", Delete), Deny(Delete)),
            // bob is no member of team-a: the third rule, pulls only.
            (Some("bob"), on("team-a/app", Push), Deny(Push)),
            (Some("bob"), on("team-a/app", Pull), Allow),
            (Some("bob"), on("bob/app", Push), Deny(Push)),
            // alice's first rule is about team-a only; elsewhere she is anyone.
            (Some("alice"), on("other", Push), Deny(Push)),
            // admin is in team-a too: for team-a's repositories, team-a's rule comes first.
            (Some("admin"), on("team-a/app", Delete), Deny(Delete)),
            (Some("admin"), on("other", Delete), Allow),
            // Nobody names anonymous.
            (None, on("other", Pull), Deny(Pull)),
            // `team-a/*` is not `team-a` itself, nor `team-ab/x`.
            (Some("alice"), on("team-a", Push), Deny(Push)),
            (Some("alice"), on("team-ab/x", Push), Deny(Push)),
            (Some("alice"), on("team-a/x/y", Push), Allow),
            (Some("alice"), Access::Base, Allow),
            (None, Access::Base, Decision::Login),
            (Some("alice"), Access::Unknown, Decision::Unknown),
            // The catalog: only for whoever may pull every repository.
            (Some("bob"), Access::Catalog, Allow),
            (Some("admin"), Access::Catalog, Allow),
            (None, Access::Catalog, Deny(Pull)),
        ];
        for (user, access, expected) in cases {
            assert_eq!(
                decide(user, access.clone()),
                expected,
                "{user:?} {access:?}"
            );
        }
    }

    #[test]
    fn a_mount_needs_pull_on_its_source() {
        let (rules, groups) = example();
        let mount = |user: &str, from: &str| {
            let access = Access::Repository {
                name: "team-a/app".into(),
                action: Action::Push,
                mount_from: Some(from.into()),
            };
            rules.decide(&access, Some(user), &groups)
        };
        assert_eq!(mount("alice", "other"), Decision::Allow);
        let secret = Rules(vec![
            rules.0[0].clone(),
            Rule {
                repositories: vec![Pattern("secret/*".into())],
                users: vec![Who::Anyone],
                allow: vec![],
            },
            rules.0[2].clone(),
        ]);
        let access = Access::Repository {
            name: "team-a/app".into(),
            action: Action::Push,
            mount_from: Some("secret/x".into()),
        };
        assert_eq!(
            secret.decide(&access, Some("alice"), &groups),
            Decision::Deny(Action::Pull)
        );
        // Nor does the catalog show secret's names to whoever may not pull them.
        assert_eq!(
            secret.decide(&Access::Catalog, Some("bob"), &groups),
            Decision::Deny(Action::Pull)
        );
    }

    #[test]
    fn anonymous_is_named_only_by_anonymous_and_star_only_names_users() {
        let rules = rules(&[
            rule(&["public/*"], &["anonymous"], &["pull"]),
            rule(&["*"], &["*"], &["pull"]),
        ]);
        let groups = Groups::default();
        assert!(rules.names_anonymous());
        assert!(rules.grants("public/x", None, &groups, Action::Pull));
        assert!(!rules.grants("private/x", None, &groups, Action::Pull));
        assert!(rules.grants("private/x", Some("bob"), &groups, Action::Pull));
        assert!(!rules.grants("public/x", None, &groups, Action::Push));
    }

    #[test]
    fn patterns_match_as_globs() {
        let p = |s: &str| Pattern::parse(s).expect(s);
        assert!(p("*").matches("a/b/c"));
        assert!(p("team-*/app").matches("team-a/app"));
        assert!(p("team-*/app").matches("team-a/b/app"));
        assert!(!p("team-*/app").matches("team-a/apps"));
        assert!(p("a*b*c").matches("abc") && p("a*b*c").matches("aXbYbZc"));
        assert!(!p("a*b*c").matches("acb"));
        assert!(p("exact").matches("exact") && !p("exact").matches("exact/x"));
    }

    #[test]
    fn bad_rules_are_named() {
        let mut errors = Errors::default();
        let raw = [
            rule(&[], &["alice"], &["pull"]),
            rule(&["Team/*"], &["al ice", "@", "cert:"], &["pull", "write"]),
            rule(&["a//b", "**"], &[], &[]),
        ];
        assert!(validate_rules(&raw, &|k| format!("route[0].{k}"), &mut errors).is_none());
        let text = format!("{errors:?}");
        for expected in [
            "route[0].auth.repositories[0].repositories",
            "\\\"Team/*\\\" is not a repository pattern",
            "\\\"al ice\\\" is not a user",
            "\\\"@\\\" is not a group",
            "\\\"cert:\\\" is not a certificate's identity",
            "unknown action \\\"write\\\"",
            "\\\"a//b\\\" is not a repository pattern",
            "\\\"**\\\" is not a repository pattern",
            "route[0].auth.repositories[2].users",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        // A rule that allows nothing is a refusal, and valid.
        assert!(validate_rules(
            &[rule(&["*"], &["*"], &[])],
            &|k| k.into(),
            &mut Errors::default()
        )
        .is_some());
    }

    #[test]
    fn groups_files_parse_and_name_bad_lines() {
        let groups =
            parse_groups("# teams\nteam-a: alice carol\nteam-a: dave\n\nops:\n").expect("ok");
        assert!(groups.has("team-a", "alice") && groups.has("team-a", "dave"));
        assert!(!groups.has("ops", "alice") && !groups.has("nobody", "alice"));
        assert_eq!(groups.len(), 2);
        let errors = parse_groups("alice carol\nbad group: x\nok: a:b\n").expect_err("bad");
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("line 1:"));
        assert!(errors[1].starts_with("line 2:"));
        assert!(errors[2].starts_with("line 3:"));
    }
}
