//! The path a request is routed by, and the other ways upstreams read it, so that a
//! path-scoped route cannot be dodged by writing its path differently. Pure functions, used
//! by the route table (which refuses a path whose readings take different routes) and by
//! config validation (a route path that is not in routed form could never match).
//!
//! Upstreams disagree on what a path means. berth routes by one spelling ([`route_path`],
//! nginx's) and forwards the path as sent; [`readings`] lists what mainstream servers make
//! of it, and the table refuses the request when any of them would land on another route.

use std::borrow::Cow;

/// The path a request is routed by: `path` with percent-escapes of unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) and of `/` decoded, runs of `/` merged into one, `.` and `..`
/// segments resolved (never above the root), the remaining escapes in upper case, a `%` that
/// starts no escape written `%25`, and bytes outside ASCII escaped — one spelling per path,
/// as nginx matches `location` prefixes on a normalised path. Case is kept otherwise: paths
/// are case-sensitive. A path that needs none of this (the common case) is returned as it
/// is, without allocating. See [`crate::table::RouteTable::route_request`] for what happens
/// when the spelling matters.
pub fn route_path(path: &str) -> Cow<'_, str> {
    let plain =
        !path.contains('%') && !path.contains("//") && !path.contains("/.") && path.is_ascii();
    if plain || !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    Cow::Owned(normalise(path, Slashes::DecodeAndMerge))
}

/// Whether every reading of `path` is `path` itself: it holds no `%`, `;`, `\`, tab, CR or
/// LF, no byte outside ASCII, and no `/` followed by `/` or `.`. One pass over the bytes;
/// the route table looks such a path up once.
pub fn reads_one_way(path: &str) -> bool {
    let mut after_slash = false;
    for &b in path.as_bytes() {
        match b {
            b'%' | b';' | b'\\' | b'\t' | b'\n' | b'\r' | 0x80.. => return false,
            b'/' | b'.' if after_slash => return false,
            _ => {}
        }
        after_slash = b == b'/';
    }
    true
}

/// The paths mainstream upstreams serve for a request whose path is `raw` (as sent), besides
/// `raw` itself and [`route_path`]'s reading:
/// - RFC 3986: unreserved escapes decoded, dot segments removed, `//` and `%2F` kept (WHATWG
///   parsers, Go's `url.ResolveReference`, most frameworks that resolve dots);
/// - servlet containers (Tomcat, Jetty, Undertow): `;parameters` removed from each segment,
///   then decoded and normalised, so `/..;/admin` and `/;/admin` are `/admin`;
/// - WHATWG URL parsers (`new URL(path, base)` in Node, Deno, Bun, and the frameworks on
///   them): tab, CR and LF removed, `\` read as `/`, a leading `//` read as an authority (the
///   path is what follows it), then dot segments (`%2e` counts as `.`) removed;
/// - all of those at once, with `%5C` decoded as well (servers that decode escapes before
///   they split the path, or run on Windows).
///
/// A reading that does not start with `/` is none: the route table needs a path.
pub fn readings(raw: &str) -> [String; 4] {
    let without_controls = |path: &str| -> String {
        path.chars()
            .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
            .collect()
    };
    let whatwg = {
        let slashed = without_controls(raw).replace('\\', "/");
        // Two or more leading slashes start an authority, and every slash after the first two
        // is skipped before it: `///evil/admin` is host `evil`, path `/admin`.
        let path = if slashed.starts_with("//") {
            let authority_and_path = slashed.trim_start_matches('/');
            authority_and_path
                .find('/')
                .map_or("/", |at| &authority_and_path[at..])
                .to_string()
        } else {
            slashed
        };
        normalise(&path, Slashes::Keep)
    };
    let everything = {
        let slashed = decode_backslash_escapes(&without_controls(raw)).replace('\\', "/");
        normalise(&without_parameters(&slashed), Slashes::DecodeAndMerge)
    };
    [
        normalise(raw, Slashes::Keep),
        normalise(&without_parameters(raw), Slashes::DecodeAndMerge),
        whatwg,
        everything,
    ]
}

/// What [`normalise`] does with slashes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slashes {
    /// `%2F` decoded and runs of `/` merged (nginx).
    DecodeAndMerge,
    /// `%2F` left escaped and empty segments kept (RFC 3986, WHATWG).
    Keep,
}

/// `path` with unreserved escapes decoded (and `%2F`, as `slashes` says), then dot segments
/// removed. A path that does not start with `/` is returned as it is.
fn normalise(path: &str, slashes: Slashes) -> String {
    if !path.starts_with('/') {
        return path.to_string();
    }
    let decoded = canonical_escapes(path, slashes == Slashes::DecodeAndMerge);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        match segment {
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            "" if slashes == Slashes::DecodeAndMerge => trailing_slash = true,
            name => {
                segments.push(name);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// `path` with each segment's `;parameters` removed, as servlet containers read it.
fn without_parameters(path: &str) -> String {
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` with `%5C` (either case) decoded to `\`.
fn decode_backslash_escapes(path: &str) -> String {
    path.replace("%5C", "\\").replace("%5c", "\\")
}

/// `path` with `%XX` decoded where XX is an unreserved character (or `/`, when
/// `decode_slash`), other escapes in upper case, and non-ASCII bytes and a `%` that starts
/// no escape escaped — so that the result reads the same when normalised again (`%%32e` is
/// `%252e`, not `%2e`, which a second pass would turn into `.`).
fn canonical_escapes(path: &str, decode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(char::from(c));
                i += 3;
            }
            Some(b'/') if decode_slash => {
                out.push('/');
                i += 3;
            }
            Some(c) => {
                out.push('%');
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 15)]));
                i += 3;
            }
            None if b.is_ascii() && b != b'%' => {
                out.push(char::from(b));
                i += 1;
            }
            None => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_routed_normalised() {
        let cases = [
            ("/admin", "/admin"),
            ("/", "/"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%2e%2E/admin", "/admin"),
            ("/%2fadmin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/", "/a/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/...", "/a/..."),
            (
                "/.well-known/acme-challenge/x",
                "/.well-known/acme-challenge/x",
            ),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/%2", "/%252"),
            ("/%zz/x", "/%25zz/x"),
            ("/%%32e", "/%252e"),
            ("/%%32e%%32e/admin", "/%252e%252e/admin"),
            ("/%252e%252e/admin", "/%252e%252e/admin"),
            ("*", "*"),
        ];
        for (raw, routed) in cases {
            assert_eq!(route_path(raw), routed, "{raw}");
            assert_eq!(route_path(routed), routed, "normalising {raw} again");
        }
        assert!(matches!(route_path("/v2/app/blobs/"), Cow::Borrowed(_)));
    }

    #[test]
    fn upstreams_read_parameters_backslashes_and_authorities_their_own_ways() {
        // [RFC 3986, servlet, WHATWG, all at once] for each path as sent.
        let cases: [(&str, [&str; 4]); 14] = [
            (
                "/;/admin/secret.txt",
                [
                    "/;/admin/secret.txt",
                    "/admin/secret.txt",
                    "/;/admin/secret.txt",
                    "/admin/secret.txt",
                ],
            ),
            ("/;x/admin", ["/;x/admin", "/admin", "/;x/admin", "/admin"]),
            (
                "/public/..;/admin",
                ["/public/..;/admin", "/admin", "/public/..;/admin", "/admin"],
            ),
            (
                "/admin;jsessionid=1/x",
                [
                    "/admin;jsessionid=1/x",
                    "/admin/x",
                    "/admin;jsessionid=1/x",
                    "/admin/x",
                ],
            ),
            (
                "/public\\..\\admin",
                [
                    "/public\\..\\admin",
                    "/public\\..\\admin",
                    "/admin",
                    "/admin",
                ],
            ),
            (
                "/public%5C..%5Cadmin",
                [
                    "/public%5C..%5Cadmin",
                    "/public%5C..%5Cadmin",
                    "/public%5C..%5Cadmin",
                    "/admin",
                ],
            ),
            (
                "//evil.test/admin",
                [
                    "//evil.test/admin",
                    "/evil.test/admin",
                    "/admin",
                    "/evil.test/admin",
                ],
            ),
            (
                "/\\evil.test/admin",
                [
                    "/\\evil.test/admin",
                    "/\\evil.test/admin",
                    "/admin",
                    "/evil.test/admin",
                ],
            ),
            (
                "///evil.test/admin",
                [
                    "///evil.test/admin",
                    "/evil.test/admin",
                    "/admin",
                    "/evil.test/admin",
                ],
            ),
            (
                "/\\/evil.test/admin",
                [
                    "/\\/evil.test/admin",
                    "/\\/evil.test/admin",
                    "/admin",
                    "/evil.test/admin",
                ],
            ),
            ("/admin//../x", ["/admin/x", "/x", "/admin/x", "/x"]),
            (
                "/a%2F..%2F..%2Fadmin",
                [
                    "/a%2F..%2F..%2Fadmin",
                    "/admin",
                    "/a%2F..%2F..%2Fadmin",
                    "/admin",
                ],
            ),
            ("/adm\tin", ["/adm\tin", "/adm\tin", "/admin", "/admin"]),
            ("/%2e%2E/admin", ["/admin", "/admin", "/admin", "/admin"]),
        ];
        for (raw, expected) in cases {
            assert_eq!(readings(raw), expected.map(String::from), "{raw:?}");
            assert!(!reads_one_way(raw), "{raw:?}");
        }
        for plain in ["/", "/v2/app/blobs/sha256:ab", "/a.b/c.", "/a-b_c~d", "*"] {
            assert!(reads_one_way(plain), "{plain:?}");
            assert!(readings(plain).iter().all(|r| r == plain), "{plain:?}");
        }
        for not_plain in [
            "/a/.b",
            "//",
            "/caf\u{e9}",
            "/a%20b",
            "/a;b",
            "/a\\b",
            "/a\rb",
        ] {
            assert!(!reads_one_way(not_plain), "{not_plain:?}");
        }
    }
}
