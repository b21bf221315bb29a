//! The route table: an immutable snapshot that the request path reads through `ArcSwap`.
//! Its one writer (the proxy's route writer: file routes plus container routes) builds a new
//! table and swaps it in.
//!
//! Lookup order for a request's host (lowercase, port removed):
//! 1. exact names,
//! 2. leading wildcards `*.example.com`, longest suffix first,
//! 3. trailing wildcards `www.example.*`, longest prefix first,
//! 4. regular expressions `~...`, in the order they were declared.
//!
//! Within the first host entry that has a route whose path prefix matches the request path,
//! the longest prefix wins. A more specific host whose routes do not cover the path falls
//! through to the next host entry (so `api.example.com` with path `/v2` and `*.example.com`
//! with path `/` send `api.example.com/other` to the wildcard route).

use std::collections::HashMap;
use std::sync::Arc;

use crate::route::HostPattern;

/// What the table stores per route; generic so the pure lookup can be tested without a
/// plugin chain.
pub trait Routable {
    /// The route's host pattern.
    fn host(&self) -> &HostPattern;
    /// The route's path prefix.
    fn path(&self) -> &str;
}

/// Routes sharing one host pattern, longest path first.
#[derive(Debug)]
struct HostEntry<R> {
    pattern: HostPattern,
    routes: Vec<Arc<R>>,
}

impl<R: Routable> HostEntry<R> {
    fn find_by(&self, covers: &impl Fn(&str) -> bool) -> Option<&Arc<R>> {
        self.routes.iter().find(|r| covers(r.path()))
    }
}

/// Whether `prefix` covers `path`. A prefix is matched as given (like nginx `location`), so
/// `/v2` covers `/v2/` and `/v2x`; write `/v2/` to mean the directory only.
fn path_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
}

/// Whether `prefix` covers `path` for a router that ignores case (Express and ASP.NET Core by
/// default, IIS), takes `/admin` for `/admin/` (non-strict routers), or reads a suffix after
/// a dot as a format (`/admin.json`: Rails' `(.:format)`, Spring's suffix matching; Windows
/// also drops a trailing dot, `/admin./x`).
fn loosely_covers(prefix: &str, path: &str) -> bool {
    let starts = |start: &str| {
        path.len() >= start.len()
            && path.as_bytes()[..start.len()].eq_ignore_ascii_case(start.as_bytes())
    };
    starts(prefix)
        || prefix.strip_suffix('/').is_some_and(|dir| {
            dir.eq_ignore_ascii_case(path)
                || (starts(dir) && path.as_bytes().get(dir.len()) == Some(&b'.'))
        })
}

/// Where a request goes.
#[derive(Debug)]
pub enum Routed<'a, R> {
    /// This route.
    Route(&'a Arc<R>),
    /// No route covers the host and path.
    None,
    /// The path as sent and the path normalised would take different routes.
    Ambiguous,
    /// A path longer than [`MAX_JUDGED_PATH`] that does not read one way: judging its
    /// readings would cost milliseconds, so it is refused unread.
    TooLong,
}

/// The longest path whose readings are judged (8 KiB); a longer one that reads one way is
/// routed as any other.
pub const MAX_JUDGED_PATH: usize = 8 << 10;

/// An immutable, indexed set of routes.
#[derive(Debug)]
pub struct RouteTable<R> {
    exact: HashMap<String, HostEntry<R>>,
    leading: Vec<HostEntry<R>>,
    trailing: Vec<HostEntry<R>>,
    regex: Vec<HostEntry<R>>,
    all: Vec<Arc<R>>,
}

impl<R> Default for RouteTable<R> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            leading: Vec::new(),
            trailing: Vec::new(),
            regex: Vec::new(),
            all: Vec::new(),
        }
    }
}

impl<R: Routable> RouteTable<R> {
    /// Builds a table from routes in declaration order. Two routes with the same host pattern
    /// and path: the first one is kept (callers detect and report such conflicts).
    pub fn new(routes: impl IntoIterator<Item = Arc<R>>) -> Self {
        let mut table: RouteTable<R> = RouteTable::default();
        for route in routes {
            let key = route.host().to_string();
            let entry = match route.host() {
                HostPattern::Exact(name) => {
                    table
                        .exact
                        .entry(name.clone())
                        .or_insert_with(|| HostEntry {
                            pattern: route.host().clone(),
                            routes: Vec::new(),
                        })
                }
                HostPattern::LeadingWildcard(_) => entry_in(&mut table.leading, &key, route.host()),
                HostPattern::TrailingWildcard(_) => {
                    entry_in(&mut table.trailing, &key, route.host())
                }
                HostPattern::Regex(_) => entry_in(&mut table.regex, &key, route.host()),
            };
            if entry.routes.iter().any(|r| r.path() == route.path()) {
                continue;
            }
            entry.routes.push(route.clone());
            table.all.push(route);
        }
        let by_len = |e: &HostEntry<R>| match &e.pattern {
            HostPattern::LeadingWildcard(s) | HostPattern::TrailingWildcard(s) => s.len(),
            _ => 0,
        };
        table.leading.sort_by_key(|e| std::cmp::Reverse(by_len(e)));
        table.trailing.sort_by_key(|e| std::cmp::Reverse(by_len(e)));
        let entries = table
            .exact
            .values_mut()
            .chain(table.leading.iter_mut())
            .chain(table.trailing.iter_mut())
            .chain(table.regex.iter_mut());
        for entry in entries {
            entry
                .routes
                .sort_by_key(|r| std::cmp::Reverse(r.path().len()));
        }
        table
    }

    /// Finds the route for a host (lowercase, without port) and a request path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<R>> {
        self.lookup_by(host, |prefix| path_matches(prefix, path))
    }

    /// Finds the route for a host whose path prefix `covers` says yes to, in lookup order.
    fn lookup_by(&self, host: &str, covers: impl Fn(&str) -> bool) -> Option<&Arc<R>> {
        if let Some(found) = self.exact.get(host).and_then(|e| e.find_by(&covers)) {
            return Some(found);
        }
        self.leading
            .iter()
            .chain(self.trailing.iter())
            .chain(self.regex.iter())
            .filter(|e| e.pattern.matches(host))
            .find_map(|e| e.find_by(&covers))
    }

    /// Finds the route for a request: `raw_path` is the path as the client sent it. The route
    /// is looked up by the normalised path ([`crate::path::route_path`]); when the path as
    /// sent, or any other way an upstream reads it ([`crate::path::readings`]: RFC 3986,
    /// servlet containers' `;parameters`, WHATWG's `\`, decoded `%2F` and `%5C`), would take
    /// a different route, the request is [`Routed::Ambiguous`]: nginx resolves `/admin/../x`
    /// to `/x` where Flask keeps it under `/admin`, Tomcat serves `/;/admin` as `/admin`, Node
    /// serves `/x\..\admin` as `/admin`, so no route can be chosen safely. A path that reads
    /// one way ([`crate::path::reads_one_way`], nearly every request) is looked up once.
    pub fn route_request(&self, host: &str, raw_path: &str) -> Routed<'_, R> {
        let same = |a: Option<&Arc<R>>, b: Option<&Arc<R>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        // Every reading also as a router that ignores case, or takes `/a` for `/a/`, reads it.
        let agrees = |route: Option<&Arc<R>>, path: &str| {
            same(route, self.lookup(host, path))
                && same(
                    route,
                    self.lookup_by(host, |prefix| loosely_covers(prefix, path)),
                )
        };
        if crate::path::reads_one_way(raw_path) {
            let route = self.lookup(host, raw_path);
            return match route {
                _ if !agrees(route, raw_path) => Routed::Ambiguous,
                Some(r) => Routed::Route(r),
                None => Routed::None,
            };
        }
        if raw_path.len() > MAX_JUDGED_PATH {
            return Routed::TooLong;
        }
        let key = crate::path::route_path(raw_path);
        let route = self.lookup(host, &key);
        let readings = crate::path::readings(raw_path);
        let agree = agrees(route, &key)
            && agrees(route, raw_path)
            && readings.iter().all(|path| agrees(route, path));
        match route {
            _ if !agree => Routed::Ambiguous,
            Some(r) => Routed::Route(r),
            None => Routed::None,
        }
    }

    /// Every route whose host pattern matches `host`, most specific host entry first (the
    /// order [`Self::lookup`] tries them in), regardless of path.
    pub fn routes_for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a Arc<R>> + 'a {
        self.exact
            .get(host)
            .into_iter()
            .chain(
                self.leading
                    .iter()
                    .chain(self.trailing.iter())
                    .chain(self.regex.iter())
                    .filter(move |e| e.pattern.matches(host)),
            )
            .flat_map(|e| e.routes.iter())
    }

    /// Every route, in declaration order.
    pub fn routes(&self) -> &[Arc<R>] {
        &self.all
    }

    /// Whether the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

fn entry_in<'a, R>(
    list: &'a mut Vec<HostEntry<R>>,
    key: &str,
    pattern: &HostPattern,
) -> &'a mut HostEntry<R> {
    let index = match list.iter().position(|e| e.pattern.to_string() == key) {
        Some(i) => i,
        None => {
            list.push(HostEntry {
                pattern: pattern.clone(),
                routes: Vec::new(),
            });
            list.len() - 1
        }
    };
    &mut list[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct R(HostPattern, String, &'static str);
    impl Routable for R {
        fn host(&self) -> &HostPattern {
            &self.0
        }
        fn path(&self) -> &str {
            &self.1
        }
    }

    fn table(defs: &[(&str, &str, &'static str)]) -> RouteTable<R> {
        RouteTable::new(defs.iter().map(|(h, p, name)| {
            Arc::new(R(
                HostPattern::parse(h).expect("pattern"),
                p.to_string(),
                name,
            ))
        }))
    }

    #[test]
    fn precedence_exact_wildcard_regex_then_longest_path() {
        let t = table(&[
            ("~^.*\\.example\\.com$", "/", "regex"),
            ("*.example.com", "/", "wild"),
            ("*.sub.example.com", "/", "wild-longer"),
            ("api.example.com", "/v2", "exact-v2"),
            ("api.example.com", "/v2/blobs", "exact-blobs"),
            ("www.example.*", "/", "trailing"),
            ("~^www\\.", "/", "regex-www"),
            ("other.test", "/only", "other"),
        ]);
        let cases = [
            ("api.example.com", "/v2/", Some("exact-v2")),
            ("api.example.com", "/v2/blobs/uploads", Some("exact-blobs")),
            ("api.example.com", "/metrics", Some("wild")),
            ("x.sub.example.com", "/", Some("wild-longer")),
            ("x.example.com", "/", Some("wild")),
            ("www.example.org", "/", Some("trailing")),
            ("www.foo.org", "/", Some("regex-www")),
            ("other.test", "/only/this", Some("other")),
            ("other.test", "/", None),
            ("unknown.test", "/", None),
            ("example.com", "/", None),
        ];
        for (host, path, expected) in cases {
            assert_eq!(t.lookup(host, path).map(|r| r.2), expected, "{host}{path}");
        }
    }

    #[test]
    fn routes_for_host_ignores_paths_and_keeps_precedence() {
        let t = table(&[
            ("*.example.com", "/", "wild"),
            ("api.example.com", "/v2", "exact-v2"),
            ("other.test", "/", "other"),
        ]);
        let names: Vec<_> = t.routes_for_host("api.example.com").map(|r| r.2).collect();
        assert_eq!(names, ["exact-v2", "wild"]);
        assert_eq!(t.routes_for_host("nothing.test").count(), 0);
    }

    #[test]
    fn duplicate_host_and_path_keeps_the_first() {
        let t = table(&[("a.test", "/", "first"), ("a.test", "/", "second")]);
        assert_eq!(t.lookup("a.test", "/").map(|r| r.2), Some("first"));
        assert_eq!(t.routes().len(), 1);
    }

    #[test]
    fn regexes_keep_declaration_order() {
        let t = table(&[("~a", "/", "first"), ("~b", "/", "second")]);
        assert_eq!(t.lookup("ab.test", "/").map(|r| r.2), Some("first"));
    }

    #[test]
    fn a_path_whose_spellings_take_different_routes_is_ambiguous() {
        let t = table(&[("a.test", "/", "open"), ("a.test", "/admin", "admin")]);
        let routed = |path: &str| match t.route_request("a.test", path) {
            Routed::Route(r) => r.2,
            Routed::None => "none",
            Routed::Ambiguous => "ambiguous",
            Routed::TooLong => "too long",
        };
        // A format suffix, or Windows' trailing dot, on a directory prefix.
        let dir = table(&[("a.test", "/", "open"), ("a.test", "/admin/", "admin")]);
        for path in ["/admin.json", "/ADMIN.html", "/admin./secret", "/admin"] {
            assert!(
                matches!(dir.route_request("a.test", path), Routed::Ambiguous),
                "{path}"
            );
        }
        assert!(matches!(
            dir.route_request("a.test", "/administrator"),
            Routed::Route(r) if r.2 == "open"
        ));
        // A long path is judged only if it reads one way.
        let long = format!("/admin/{}", "x".repeat(MAX_JUDGED_PATH));
        assert_eq!(routed(&long), "admin");
        assert_eq!(routed(&format!("{long};")), "too long");
        assert_eq!(
            routed(&format!("/{}", "/".repeat(MAX_JUDGED_PATH))),
            "too long"
        );
        // One spelling, or spellings that agree: routed.
        assert_eq!(routed("/admin/x"), "admin");
        assert_eq!(routed("/public"), "open");
        assert_eq!(routed("/x/../public"), "open");
        assert_eq!(routed("/admin/./x"), "admin");
        assert_eq!(routed("/admin/%2e/x"), "admin");
        // Spellings that disagree, in either direction: nobody can tell which the upstream
        // means.
        for path in [
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%61dmin",
            "/admin/../public",
            "/admin/%2e%2e/x",
            "/admin//../secret",
            "/admin/x%2F..%2F..%2Fpublic",
        ] {
            assert_eq!(routed(path), "ambiguous", "{path}");
        }
        // Readings of servlet containers (`;parameters`), WHATWG parsers (`\\`, a leading
        // `//` as an authority) and servers that decode `%2F` or `%5C`.
        for path in [
            "/;/admin/secret.txt",
            "/;x/admin/",
            "/public/..;/admin",
            "/admin;x/../../public",
            "/public\\..\\admin",
            "/public%5C..%5Cadmin",
            "//evil.test/admin",
            "/\\evil.test/admin",
            "/adm\tin",
            "/admin%2F..%2Fpublic",
        ] {
            assert_eq!(routed(path), "ambiguous", "{path:?}");
        }
        // Routers that ignore case (Express, ASP.NET Core) or take `/admin` for `/admin/`.
        for path in ["/ADMIN/secret.txt", "/Admin", "/;/ADMIN", "///evil/admin/x"] {
            assert_eq!(routed(path), "ambiguous", "{path:?}");
        }
        let dir = table(&[("a.test", "/", "open"), ("a.test", "/private/", "private")]);
        assert!(matches!(
            dir.route_request("a.test", "/private"),
            Routed::Ambiguous
        ));
        assert!(matches!(
            dir.route_request("a.test", "/privately"),
            Routed::Route(_)
        ));
        // Parameters and backslashes that stay on one route are routed.
        assert_eq!(routed("/admin;jsessionid=1/x"), "admin");
        assert_eq!(routed("/public;v=1"), "open");
        assert_eq!(routed("/public\\x"), "open");
        let none = table(&[("a.test", "/v2", "v2")]);
        assert!(matches!(
            none.route_request("a.test", "/x/../y"),
            Routed::None
        ));
        assert!(matches!(
            none.route_request("a.test", "/x/../v2"),
            Routed::Ambiguous
        ));
    }
}
