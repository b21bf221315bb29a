//! Registry token scopes, as the Docker token specification writes them: a client asks the
//! token endpoint for `scope=repository:team-a/app:pull,push` (one `scope` parameter per
//! resource, or several resources in one, separated by spaces), berth grants the part of it
//! the repository rules allow, and a request carrying the token is let through only for what
//! the token grants.
//!
//! Resources berth reads: `repository:<name>:<actions>` (actions `pull`, `push`, `delete`,
//! `*` for all three) and `registry:catalog:*`. Anything else is not granted.

use std::collections::{BTreeMap, BTreeSet};

use super::registry::{form_decode, repository_name, Access, Action};

/// The most repositories one token names; a client asking for more gets the first ones.
pub const MAX_SCOPED_REPOSITORIES: usize = 16;

/// What a token grants: actions per repository, and the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    repositories: BTreeMap<String, BTreeSet<Action>>,
    catalog: bool,
}

impl Scopes {
    /// The scopes a token endpoint request asks for: every `scope` parameter of `query` (as
    /// Go's `url.ParseQuery` reads it), each a space-separated list of resources. Resources
    /// berth does not read, malformed ones, and repositories past
    /// [`MAX_SCOPED_REPOSITORIES`] are left out.
    pub fn asked(query: &str) -> Scopes {
        let mut scopes = Scopes::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if form_decode(k).as_deref() != Some("scope") {
                continue;
            }
            let Some(value) = form_decode(v) else {
                continue;
            };
            for resource in value.split(' ').filter(|r| !r.is_empty()) {
                scopes.add(resource);
            }
        }
        scopes
    }

    /// Adds one resource (`repository:<name>:<actions>` or `registry:catalog:*`).
    fn add(&mut self, resource: &str) {
        let Some((kind, rest)) = resource.split_once(':') else {
            return;
        };
        let Some((name, actions)) = rest.rsplit_once(':') else {
            return;
        };
        match kind {
            "registry" if name == "catalog" => {
                self.catalog |= actions.split(',').any(|a| a == "*");
            }
            "repository" if repository_name(name) => {
                let mut wanted = BTreeSet::new();
                for action in actions.split(',') {
                    if action == "*" {
                        wanted.extend(Action::ALL);
                    } else if let Some(action) = Action::parse(action) {
                        wanted.insert(action);
                    }
                }
                if wanted.is_empty() {
                    return;
                }
                let full = self.repositories.len() >= MAX_SCOPED_REPOSITORIES;
                match self.repositories.get_mut(name) {
                    Some(actions) => actions.extend(wanted),
                    None if !full => {
                        self.repositories.insert(name.to_string(), wanted);
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Keeps only what `may` allows: `may(Some(name), action)` for a repository's action,
    /// `may(None, Action::Pull)` for the catalog.
    pub fn grant(mut self, may: impl Fn(Option<&str>, Action) -> bool) -> Scopes {
        for (name, actions) in &mut self.repositories {
            actions.retain(|a| may(Some(name), *a));
        }
        self.repositories.retain(|_, actions| !actions.is_empty());
        self.catalog = self.catalog && may(None, Action::Pull);
        self
    }

    /// Whether these scopes reach `access`: a repository request's action on its repository
    /// (and `pull` on a mount's source), the catalog if granted. `GET /v2/` needs none; a
    /// request that is not of the registry API, or not spelled as it spells it, is one no
    /// scope names, and no token reaches it.
    pub fn covers(&self, access: &Access) -> bool {
        let has = |name: &str, action: Action| {
            self.repositories
                .get(name)
                .is_some_and(|a| a.contains(&action))
        };
        match access {
            Access::Base => true,
            Access::Unknown => false,
            Access::Catalog => self.catalog,
            Access::Repository {
                name,
                action,
                mount_from,
            } => has(name, *action) && mount_from.as_deref().is_none_or(|f| has(f, Action::Pull)),
        }
    }

    /// The scopes as a token carries them: resources separated by spaces, in a fixed order.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        for (name, actions) in &self.repositories {
            let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
            out.push(format!("repository:{name}:{}", actions.join(",")));
        }
        if self.catalog {
            out.push("registry:catalog:*".to_string());
        }
        out.join(" ")
    }

    /// Reads what [`Scopes::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Scopes> {
        let mut scopes = Scopes::default();
        for resource in text.split(' ').filter(|r| !r.is_empty()) {
            let before = scopes.clone();
            scopes.add(resource);
            if scopes == before {
                return None;
            }
        }
        (scopes.encode() == text).then_some(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::access;

    fn repo(name: &str, action: Action, from: Option<&str>) -> Access {
        Access::Repository {
            name: name.into(),
            action,
            mount_from: from.map(str::to_string),
        }
    }

    #[test]
    fn what_clients_ask_is_read_as_the_specification_writes_it() {
        // The Docker CLI's push: pull and push on the target, pull on a mount's source, in
        // separate parameters; containers/image sends the same; some clients put several
        // resources in one, separated by spaces (encoded as `+` or `%20`).
        let asked = Scopes::asked(
            "account=alice&scope=repository%3Ateam-a%2Fapp%3Apull%2Cpush&service=reg.test\
             &scope=repository:team-b/base:pull&scope=registry%3Acatalog%3A*+repository:x:delete",
        );
        assert_eq!(
            asked.encode(),
            "repository:team-a/app:pull,push repository:team-b/base:pull repository:x:delete \
             registry:catalog:*"
        );
        assert_eq!(
            Scopes::asked("scope=repository:a:*").encode(),
            "repository:a:pull,push,delete"
        );
        // The actions come after the last colon; a name with one is not a repository's.
        assert_eq!(Scopes::asked("scope=repository:a:b:pull").encode(), "");
        // Unknown kinds, actions, bad names and escapes are not granted.
        for query in [
            "scope=repository:Team/app:pull",
            "scope=repository:app:write",
            "scope=repository:app",
            "scope=plugin:app:pull",
            "scope=registry:catalog:pull",
            "scope=repository:app:%zz",
            "scopes=repository:app:pull",
            "",
        ] {
            assert_eq!(Scopes::asked(query), Scopes::default(), "{query}");
        }
        let many: Vec<String> = (0..40)
            .map(|i| format!("scope=repository:r{i}:pull"))
            .collect();
        let asked = Scopes::asked(&many.join("&"));
        assert_eq!(asked.repositories.len(), MAX_SCOPED_REPOSITORIES);
        assert!(asked.covers(&repo("r0", Action::Pull, None)));
        assert!(!asked.covers(&repo("r39", Action::Pull, None)));
    }

    #[test]
    fn a_grant_keeps_what_the_rules_allow_and_covers_only_that() {
        let asked = Scopes::asked(
            "scope=repository:team-a/app:pull,push&scope=repository:secret:pull\
             &scope=registry:catalog:*",
        );
        let granted = asked.grant(|name, action| match name {
            Some("team-a/app") => action == Action::Pull,
            Some(_) => false,
            None => false,
        });
        assert_eq!(granted.encode(), "repository:team-a/app:pull");
        assert!(granted.covers(&repo("team-a/app", Action::Pull, None)));
        assert!(!granted.covers(&repo("team-a/app", Action::Push, None)));
        assert!(!granted.covers(&repo("secret", Action::Pull, None)));
        assert!(!granted.covers(&Access::Catalog));
        assert!(granted.covers(&Access::Base));
        assert!(!granted.covers(&Access::Unknown));
        // An escaped name is not the repository the token names, whatever the registry
        // makes of it.
        let everything = Scopes::asked("scope=repository:a/b:*");
        for (method, target) in [
            ("PUT", "/v2/a%2Fb/manifests/latest"),
            ("DELETE", "/v2/a/b/manifests/%6Catest"),
            ("GET", "/v2/a/b/../b/tags/list"),
        ] {
            assert!(
                !everything.covers(&access(method, target)),
                "{method} {target}"
            );
        }
        assert!(everything.covers(&access("DELETE", "/v2/a/b/manifests/latest")));

        // A mount needs pull on its source in the token too.
        let both = Scopes::asked("scope=repository:a:pull,push&scope=repository:b:pull");
        let target_only = Scopes::asked("scope=repository:a:pull,push");
        let mount = access("POST", "/v2/a/blobs/uploads/?mount=sha256:00&from=b");
        assert_eq!(mount, repo("a", Action::Push, Some("b")));
        assert!(both.covers(&mount));
        assert!(!target_only.covers(&mount));
    }

    #[test]
    fn tokens_carry_their_scopes_exactly() {
        for text in [
            "",
            "repository:a:pull",
            "repository:a/b:pull,push,delete repository:c:delete registry:catalog:*",
        ] {
            let scopes = Scopes::decode(text).expect(text);
            assert_eq!(scopes.encode(), text);
        }
        for bad in [
            "repository:a:push,pull",
            "repository:b:pull repository:a:pull",
            "repository:a:pull  registry:catalog:*",
            "repository:a:pull repository:a:push",
            "repository:a:nothing",
            "registry:catalog:pull",
            " repository:a:pull",
        ] {
            assert_eq!(Scopes::decode(bad), None, "{bad}");
        }
    }
}
