//! `auth.anonymous-read` against a model written from docs/access.md, not from the code: a
//! request passes without credentials exactly when it is a GET or HEAD of `/v2/_catalog`,
//! `/v2/<name>/tags/list`, `/v2/<name>/manifests/<tag or digest>`, `/v2/<name>/blobs/<digest>`
//! or `/v2/<name>/referrers/<digest>`, spelled as the registry API spells them (the
//! distribution spec's name and tag grammars, the OCI digest grammar; the query is not part
//! of the path). Anything else — `/v2/` itself, uploads, escapes, `//`, dot segments, upper
//! case in a name, other methods — needs credentials. `auth.methods` lets through exactly the
//! standard methods, spelled exactly, that it does not list.
//!
//! Targets are built from pieces that matter (valid and nearly valid names, tags, digests,
//! separators), so the fuzzer reaches both sides of every rule.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use berth_core::route::{OpenAccess, METHODS};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

/// The documented reads, as the specs write their grammars.
fn documented(path: &str) -> bool {
    static READ: OnceLock<Regex> = OnceLock::new();
    let read = READ.get_or_init(|| {
        let component = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
        let name = format!("{component}(?:/{component})*");
        let tag = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
        let digest = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}";
        Regex::new(&format!(
            "^/v2/(?:_catalog|(?P<n1>{name})/tags/list|(?P<n2>{name})/manifests/(?:{tag}|{digest})|(?P<n3>{name})/(?:blobs|referrers)/{digest})$"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    });
    let Some(found) = read.captures(path) else {
        return false;
    };
    // A name is at most 255 characters.
    ["n1", "n2", "n3"]
        .iter()
        .filter_map(|n| found.name(n))
        .all(|n| n.as_str().len() <= 255)
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Name(u8),
    Tag(u8),
    Digest(u8),
    Word(u8),
    Slash,
    Text(String),
}

const NAMES: [&str; 10] = [
    "library/alpine", "a", "team-a/app", "a__b", "a.b", "a--b", "A", "a_", "a._b", "-a",
];
const TAGS: [&str; 7] = ["latest", "v1.2.3", "_x", "-x", ".x", "a b", "x%2F"];
const DIGESTS: [&str; 6] = [
    "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b",
    "sha512:00000000000000000000000000000000",
    "sha256:short",
    "SHA256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b",
    "sha256+b64u:abcdefghijklmnopqrstuvwxyzABCDEF",
    "sha256..x:abcdefghijklmnopqrstuvwxyzABCDEF",
];
const WORDS: [&str; 12] = [
    "v2", "manifests", "blobs", "tags", "list", "_catalog", "referrers", "uploads", ".", "..",
    "%61", "?n=1",
];

fn build(pieces: &[Piece]) -> String {
    let mut target = String::from("/");
    for piece in pieces.iter().take(16) {
        match piece {
            Piece::Name(i) => target.push_str(NAMES[usize::from(*i) % NAMES.len()]),
            Piece::Tag(i) => target.push_str(TAGS[usize::from(*i) % TAGS.len()]),
            Piece::Digest(i) => target.push_str(DIGESTS[usize::from(*i) % DIGESTS.len()]),
            Piece::Word(i) => target.push_str(WORDS[usize::from(*i) % WORDS.len()]),
            Piece::Slash => target.push('/'),
            Piece::Text(t) => target.extend(t.chars().take(8)),
        }
    }
    target
}

fuzz_target!(|input: (u8, Vec<Piece>)| {
    let (m, pieces) = input;
    let target = build(&pieces);
    let methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "MKCOL"];
    let method = methods[usize::from(m) % methods.len()];
    let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
    let expected = (method == "GET" || method == "HEAD") && documented(path);
    assert_eq!(
        OpenAccess::RegistryReads.lets_through(method, &target),
        expected,
        "{method} {target:?}"
    );
    // Fails closed: only a standard method, spelled exactly, that is not listed.
    let listed = OpenAccess::MethodsOtherThan(vec!["POST".into(), "DELETE".into()]);
    assert_eq!(
        listed.lets_through(method, &target),
        METHODS.contains(&method) && method != "POST" && method != "DELETE",
        "{method}"
    );
});
