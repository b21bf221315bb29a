//! The path a request is routed by: one spelling per path, so that a path-scoped route cannot
//! be dodged by writing its path differently. Pure functions, used by the route table (which
//! also refuses paths whose spellings disagree) and by config validation (a route path that
//! is not in this form could never match).

/// The path a request is routed by: `path` with percent-escapes of unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) and of `/` decoded, runs of `/` merged into one, `.` and `..`
/// segments resolved (never above the root), the remaining escapes in upper case, a `%` that
/// starts no escape written `%25`, and bytes outside ASCII escaped — one spelling per path, as nginx matches `location` prefixes on a
/// normalised path. Case is kept otherwise: paths are case-sensitive. A path that needs none
/// of this (the common case) is returned as it is, without allocating. See
/// [`crate::table::RouteTable::route_request`] for what happens when the spelling matters.
pub fn route_path(path: &str) -> std::borrow::Cow<'_, str> {
    let plain =
        !path.contains('%') && !path.contains("//") && !path.contains("/.") && path.is_ascii();
    if plain || !path.starts_with('/') {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded = canonical_escapes(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = true;
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
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
    std::borrow::Cow::Owned(out)
}

/// `path` with `%XX` decoded where XX is an unreserved character or `/`, other escapes in
/// upper case, and non-ASCII bytes and a `%` that starts no escape escaped — so that the
/// result reads the same when normalised again (`%%32e` is `%252e`, not `%2e`, which a second
/// pass would turn into `.`).
fn canonical_escapes(path: &str) -> String {
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
            Some(c) if c.is_ascii_alphanumeric() || b"-._~/".contains(&c) => {
                out.push(char::from(c));
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
        assert!(matches!(
            route_path("/v2/app/blobs/"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
