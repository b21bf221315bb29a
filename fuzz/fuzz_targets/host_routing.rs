//! Route lookup against a model written from the documentation, not from the code: `Host`
//! parsing, host patterns (exact, `*.x`, `x.*`, `~regex`), the documented precedence (exact,
//! then leading wildcards longest first, then trailing wildcards longest first, then regexes in
//! declaration order; within the first host entry that covers the path, the longest prefix),
//! and paths matched after normalisation (nginx's: unreserved escapes and `%2F` decoded,
//! slashes merged, then RFC 3986 dot-segment removal; other escapes upper case, non-ASCII
//! and stray `%` escaped), with a request refused as ambiguous when any way an upstream reads
//! its path takes another route than that: the path as sent, RFC 3986 (no slash merging, `%2F`
//! kept), servlet containers (`;parameters` cut from each segment), WHATWG URL parsers (tab,
//! CR, LF dropped, `\` as `/`, two or more leading slashes as an authority, `%2e` as `.`), and
//! all of these with `%5C` decoded too — each also as a router that ignores case, serves
//! `/a` for a prefix `/a/`, or `/a.json` for it (docs/security.md). The table must answer exactly what the model
//! answers.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use berth_core::route::HostPattern;
use berth_core::path::{readings, route_path};
use berth_core::route::host_of;
use berth_core::table::{Routable, RouteTable, Routed};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<(String, Prefix)>,
    authority: String,
    path: Vec<Piece>,
}

/// Paths are built from pieces that matter to normalisation, so the fuzzer reaches them.
#[derive(Arbitrary, Debug)]
enum Piece {
    Slash,
    Dot,
    Text(String),
    Escape(u8, bool),
    Semicolon,
    Backslash,
    Tab,
}

/// A route's path prefix: as given, or the start of the request's path (its case flipped, a
/// slash added), so that prefixes and paths meet often enough to test the readings.
#[derive(Arbitrary, Debug)]
enum Prefix {
    Given(String),
    OfPath { len: u8, flip_case: bool, slash: bool },
}

impl Prefix {
    fn text(&self, path: &str) -> String {
        let text = match self {
            Prefix::Given(text) => text.clone(),
            Prefix::OfPath { len, flip_case, slash } => {
                let mut text: String = path.chars().take(usize::from(*len)).collect();
                if *flip_case {
                    text = text
                        .chars()
                        .map(|c| match c {
                            'a'..='z' => c.to_ascii_uppercase(),
                            'A'..='Z' => c.to_ascii_lowercase(),
                            _ => c,
                        })
                        .collect();
                }
                if *slash {
                    text.push('/');
                }
                text
            }
        };
        format!("/{}", text.trim_start_matches('/'))
    }
}

fn build_path(pieces: &[Piece]) -> String {
    let mut path = String::from("/");
    for piece in pieces.iter().take(24) {
        match piece {
            Piece::Slash => path.push('/'),
            Piece::Dot => path.push('.'),
            Piece::Text(t) => path.extend(t.chars().filter(|c| *c != '?' && *c != '#').take(8)),
            Piece::Escape(b, true) => path.push_str(&format!("%{b:02X}")),
            Piece::Escape(b, false) => path.push_str(&format!("%{b:02x}")),
            Piece::Semicolon => path.push(';'),
            Piece::Backslash => path.push('\\'),
            Piece::Tab => path.push('\t'),
        }
    }
    path
}

struct R {
    host: HostPattern,
    path: String,
    index: usize,
}

impl Routable for R {
    fn host(&self) -> &HostPattern {
        &self.host
    }
    fn path(&self) -> &str {
        &self.path
    }
}

/// A host pattern as the documentation describes it, from the text the user wrote.
#[derive(Clone, PartialEq)]
enum Model {
    Exact(String),
    /// `*.example.com` → `example.com`: any name below it, at any depth.
    Below(String),
    /// `www.example.*` → `www.example`: any name that continues it with more labels.
    Continues(String),
    Regex(String),
}

impl Model {
    fn of(text: &str) -> Model {
        let text = text.trim();
        if let Some(re) = text.strip_prefix('~') {
            return Model::Regex(re.to_string());
        }
        let lower = text.to_ascii_lowercase();
        if let Some(base) = lower.strip_prefix("*.") {
            Model::Below(base.to_string())
        } else if let Some(base) = lower.strip_suffix(".*") {
            Model::Continues(base.to_string())
        } else {
            Model::Exact(lower)
        }
    }

    fn matches(&self, host: &str) -> bool {
        let labels: Vec<&str> = host.split('.').collect();
        match self {
            Model::Exact(name) => host == name,
            Model::Below(base) => {
                let base: Vec<&str> = base.split('.').collect();
                labels.len() > base.len() && labels[labels.len() - base.len()..] == base[..]
            }
            Model::Continues(base) => {
                let base: Vec<&str> = base.split('.').collect();
                labels.len() > base.len()
                    && labels[..base.len()] == base[..]
                    && labels[base.len()..].iter().all(|l| !l.is_empty())
            }
            Model::Regex(re) => regex::Regex::new(re).is_ok_and(|r| r.is_match(host)),
        }
    }

    /// (tier, -length) — smaller sorts first; regexes keep declaration order (stable sort).
    fn rank(&self) -> (u8, i64) {
        match self {
            Model::Exact(_) => (0, 0),
            Model::Below(base) => (1, -(base.len() as i64)),
            Model::Continues(base) => (2, -(base.len() as i64)),
            Model::Regex(_) => (3, 0),
        }
    }
}

/// One spelling per byte: unreserved characters (and `/`, when `slash`) bare, other escapes
/// upper case, non-ASCII and a `%` that starts no escape escaped.
fn decode(raw: &str, slash: bool) -> String {
    let mut decoded = String::new();
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| &bytes[i + 1..i + 3])
            .filter(|hex| hex.iter().all(|c| c.is_ascii_hexdigit()))
            .map(|hex| u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16));
        match escape {
            Some(Ok(b)) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (slash && b == b'/') => {
                decoded.push(char::from(b));
                i += 3;
            }
            Some(Ok(b)) => {
                decoded.push_str(&format!("%{b:02X}"));
                i += 3;
            }
            _ if bytes[i] >= 0x80 || bytes[i] == b'%' => {
                decoded.push_str(&format!("%{:02X}", bytes[i]));
                i += 1;
            }
            _ => {
                decoded.push(char::from(bytes[i]));
                i += 1;
            }
        }
    }
    decoded
}

fn merge_slashes(path: &str) -> String {
    let mut merged = String::new();
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    merged
}

/// RFC 3986 §5.2.4 remove_dot_segments: the RFC's loop over an input buffer and an output
/// buffer.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path;
    let mut output = String::new();
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest;
        } else if input.starts_with("/./") {
            input = &input[2..];
        } else if input == "/." {
            input = "/";
        } else if input.starts_with("/../") || input == "/.." {
            input = if input == "/.." { "/" } else { &input[3..] };
            match output.rfind('/') {
                Some(at) => output.truncate(at),
                None => output.clear(),
            }
        } else if input == "." || input == ".." {
            input = "";
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |n| n + start);
            output.push_str(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// nginx's reading, the one routes are matched by: escapes of unreserved characters and `/`
/// decoded, slashes merged, dot segments removed.
fn model_path(raw: &str) -> String {
    if !raw.starts_with('/') {
        return raw.to_string();
    }
    remove_dot_segments(&merge_slashes(&decode(raw, true)))
}

/// A servlet container's path: everything from a `;` to the end of its segment cut.
fn cut_parameters(raw: &str) -> String {
    let mut out = String::new();
    let mut in_parameter = false;
    for c in raw.chars() {
        match c {
            '/' => {
                in_parameter = false;
                out.push(c);
            }
            ';' => in_parameter = true,
            _ if !in_parameter => out.push(c),
            _ => {}
        }
    }
    out
}

/// Every other reading of a path that upstreams apply (docs/security.md).
fn other_readings(raw: &str) -> Vec<String> {
    let no_controls: String = raw.chars().filter(|c| !"\t\r\n".contains(*c)).collect();
    let whatwg = {
        let slashed = no_controls.replace('\\', "/");
        // `//authority/path`: the path is what follows the authority; any further slashes
        // before the authority are skipped (`///evil/admin` is `/admin`).
        let path = if slashed.starts_with("//") {
            let rest = slashed.trim_start_matches('/');
            match rest.find('/') {
                Some(at) => rest[at..].to_string(),
                None => "/".to_string(),
            }
        } else {
            slashed
        };
        remove_dot_segments(&decode(&path, false))
    };
    let everything = {
        let backslashes = no_controls
            .replace("%5C", "/")
            .replace("%5c", "/")
            .replace('\\', "/");
        model_path(&cut_parameters(&backslashes))
    };
    vec![
        raw.to_string(),
        remove_dot_segments(&decode(raw, false)),
        model_path(&cut_parameters(raw)),
        whatwg,
        everything,
    ]
}

fuzz_target!(|input: Input| {
    let raw_path = build_path(&input.path);
    let path = route_path(&raw_path);
    assert_eq!(path, model_path(&raw_path), "normalising {raw_path:?}");
    assert_eq!(route_path(&path), path, "normalising is idempotent: {raw_path:?}");
    // Every reading the table judges is one the model knows, and the other way round.
    let mut judged: Vec<String> = readings(&raw_path).to_vec();
    judged.extend([raw_path.clone(), path.to_string()]);
    let mut known = other_readings(&raw_path);
    known.push(model_path(&raw_path));
    for list in [&mut judged, &mut known] {
        list.sort();
        list.dedup();
    }
    assert_eq!(judged, known, "the readings of {raw_path:?}");

    let Some(host) = host_of(&input.authority) else {
        return;
    };
    assert_eq!(host, host.to_ascii_lowercase(), "{:?}", input.authority);
    assert!(!host.is_empty() && !host.ends_with('.'), "{host:?}");
    assert!(!host.starts_with('.') && !host.contains(".."), "{host:?}");

    let mut routes = Vec::new();
    let mut models = Vec::new();
    for (pattern, prefix) in input.routes.iter().take(16) {
        if pattern.len() > 64 {
            continue;
        }
        let Ok(parsed) = HostPattern::parse(pattern) else {
            continue;
        };
        let prefix = prefix.text(&raw_path);
        let index = routes.len();
        models.push((Model::of(pattern), prefix.clone(), index, pattern.clone()));
        routes.push(Arc::new(R {
            host: parsed,
            path: prefix,
            index,
        }));
    }
    let table = RouteTable::new(routes.iter().cloned());

    // The model: host entries in documented order; the first whose routes cover the path
    // answers with its longest prefix. The first declared of two equal routes is kept.
    let mut entries: Vec<Model> = Vec::new();
    for (model, _, _, _) in &models {
        if !entries.contains(model) {
            entries.push(model.clone());
        }
    }
    entries.sort_by_key(Model::rank);
    let pick = |p: &str| {
        entries.iter().filter(|m| m.matches(&host)).find_map(|m| {
            models
                .iter()
                .filter(|(model, prefix, _, _)| model == m && p.starts_with(prefix.as_str()))
                .min_by_key(|(_, prefix, index, _)| (std::cmp::Reverse(prefix.len()), *index))
                .map(|(_, _, index, _)| *index)
        })
    };
    // The same for a router that ignores case, serves `/a` for a prefix `/a/`, or reads
    // `/a.json` as `/a/` with a format.
    let pick_loosely = |p: &str| {
        let p = p.to_ascii_lowercase();
        entries.iter().filter(|m| m.matches(&host)).find_map(|m| {
            models
                .iter()
                .filter(|(model, prefix, _, _)| {
                    let prefix = prefix.to_ascii_lowercase();
                    let dir = prefix.strip_suffix('/');
                    model == m
                        && (p.starts_with(prefix.as_str())
                            || dir == Some(p.as_str())
                            || dir.is_some_and(|d| p.starts_with(&format!("{d}."))))
                })
                .min_by_key(|(_, prefix, index, _)| (std::cmp::Reverse(prefix.len()), *index))
                .map(|(_, _, index, _)| *index)
        })
    };
    let by_normalised = pick(&model_path(&raw_path));
    let mut every_reading = other_readings(&raw_path);
    every_reading.push(model_path(&raw_path));
    // Some(route), None for no route, or "ambiguous" as usize::MAX.
    let expected = if every_reading
        .iter()
        .all(|reading| pick(reading) == by_normalised && pick_loosely(reading) == by_normalised)
    {
        by_normalised
    } else {
        Some(usize::MAX)
    };
    let got = match table.route_request(&host, &raw_path) {
        Routed::Route(r) => Some(r.index),
        Routed::None => None,
        Routed::Ambiguous => Some(usize::MAX),
        // Paths built here are far shorter than MAX_JUDGED_PATH.
        Routed::TooLong => Some(usize::MAX - 1),
    };
    assert_eq!(
        got, expected,
        "host {host:?} path {raw_path:?} (routed as {path:?}), routes {:?}",
        models
            .iter()
            .map(|(_, prefix, _, pattern)| (pattern.as_str(), prefix.as_str()))
            .collect::<Vec<_>>()
    );
});
