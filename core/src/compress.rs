//! Response compression (`compress`), the decisions: which coding a client accepts
//! (`Accept-Encoding`, q-values honoured), and whether a response may be compressed at all.
//! Pure functions over headers; the proxy's `Compress` step applies them and encodes.
//!
//! A response is compressed when all of these hold:
//! - the client accepts `zstd`, `br` or `gzip` (the highest q-value wins; on a tie, zstd, then
//!   br, then gzip); `identity` alone, `q=0`, or no `Accept-Encoding` at all: not compressed;
//! - the request is not a `HEAD` (its headers would promise a coding and no length, which a
//!   `GET` of the same resource to another client may not get), is made over HTTP/1.1 or
//!   later, asks for no `Range` and says no `Cache-Control: no-transform`;
//! - the response has a body (not 1xx, 204, 206 or 304), no `Content-Encoding` of its own,
//!   no `Content-Range`, no `Cache-Control: no-transform`, a compressible `Content-Type`
//!   ([`compressible_type`]) and a `Content-Length` of at least [`MIN_SIZE`] (or none: a
//!   streamed body).
//!
//! Every response that could be compressed for some client gets `Vary: Accept-Encoding`,
//! whether or not this client's was, so caches keep the two apart. A `304` to a client that
//! negotiates a coding gets the `Vary` and the weak `ETag` its `200` would have had.

use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    RANGE,
};
use http::{HeaderMap, Method, StatusCode, Version};

/// Responses shorter than this are sent as they are: their coding's framing eats most of
/// what compression would save.
pub const MIN_SIZE: u64 = 1024;

/// A content coding berth compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Coding {
    /// Every coding, in the order a tie between q-values is broken.
    pub const PREFERRED: [Coding; 3] = [Coding::Zstd, Coding::Br, Coding::Gzip];

    /// The coding's name in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The coding to use for a client that sent `accept_encoding`, by RFC 9110 §12.5.3: each
/// listed coding with its q-value (1 when absent), `*` standing for every coding not listed,
/// `q=0` meaning "not acceptable", and an `identity` ranked above every coding meaning "as it
/// is". `None`: the client takes no coding berth has (or sent no header, or one that could
/// not be read). An entry whose q-value is malformed is ignored.
pub fn negotiate(accept_encoding: &[u8]) -> Option<Coding> {
    let text = std::str::from_utf8(accept_encoding).ok()?;
    // Thousandths, so that q-values compare exactly.
    let mut listed: [Option<u16>; 3] = [None; 3];
    let mut any: Option<u16> = None;
    let mut identity: Option<u16> = None;
    for entry in text.split(',') {
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for param in parts {
            // A parameter other than q (or a stray `;`) says nothing about preference.
            let Some((key, value)) = param.split_once('=') else {
                if param.trim().eq_ignore_ascii_case("q") {
                    q = None;
                }
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                q = parse_q(value.trim());
            }
        }
        let Some(q) = q else { continue };
        let slot = if name == "*" {
            &mut any
        } else if name.eq_ignore_ascii_case("identity") {
            &mut identity
        } else {
            match Coding::PREFERRED
                .iter()
                .position(|c| name.eq_ignore_ascii_case(c.as_str()))
                .or_else(|| name.eq_ignore_ascii_case("x-gzip").then_some(2))
            {
                Some(i) => &mut listed[i],
                None => continue,
            }
        };
        // A coding listed twice keeps its highest q-value.
        *slot = Some(slot.map_or(q, |before| before.max(q)));
    }
    let mut best: Option<(u16, Coding)> = None;
    for (i, coding) in Coding::PREFERRED.iter().enumerate() {
        let q = listed[i].or(any).unwrap_or(0);
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, *coding));
        }
    }
    // A client that ranks the body as it is above every coding gets it as it is (identity
    // unlisted competes with nothing: "gzip" alone asks for gzip).
    best.filter(|(q, _)| identity.is_none_or(|i| *q >= i))
        .map(|(_, c)| c)
}

/// A q-value (`0`, `0.5`, `1`, `1.000`) in thousandths; `None` when it is not one (RFC 9110
/// §12.4.2; `Accept` and `Accept-Encoding` share it).
pub fn parse_q(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether a body of `content_type` is worth compressing: text, JSON, XML, JavaScript, SVG,
/// WebAssembly and uncompressed font formats — not images, video, archives or anything else
/// already compressed. Parameters (`; charset=utf-8`) are ignored.
pub fn compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        // Event streams are text, but each event must leave at once; berth flushes every
        // chunk, so they could be compressed, yet clients of long-lived streams are often
        // simple readers: left as they are, as nginx and Caddy leave them.
        "text" => sub != "event-stream",
        "application" => {
            sub.ends_with("+json")
                || sub.ends_with("+xml")
                || matches!(
                    sub,
                    "json"
                        | "javascript"
                        | "x-javascript"
                        | "ecmascript"
                        | "xml"
                        | "wasm"
                        | "graphql"
                        | "x-ndjson"
                        | "ndjson"
                        | "toml"
                        | "yaml"
                        | "x-yaml"
                        | "vnd.ms-fontobject"
                        | "x-font-ttf"
                        | "x-font-opentype"
                        | "x-protobuf"
                        | "rtf"
                        | "x-sh"
                )
        }
        "image" => matches!(sub, "svg+xml" | "x-icon" | "vnd.microsoft.icon" | "bmp"),
        "font" => matches!(sub, "ttf" | "otf" | "sfnt"),
        _ => false,
    }
}

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request's HTTP version.
    pub version: Version,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Add `Accept-Encoding` to `Vary`: the response would be compressed for some client.
    pub vary: bool,
    /// The coding to compress this response with, if any.
    pub coding: Option<Coding>,
}

/// Whether (and how) to compress a response with `status` and `headers` to `request`, by the
/// rules of the module documentation.
pub fn decide(request: Request<'_>, status: StatusCode, headers: &HeaderMap) -> Decision {
    let never = Decision {
        vary: false,
        coding: None,
    };
    let request_ok = request.method != Method::HEAD
        && request.version >= Version::HTTP_11
        && !request.headers.contains_key(RANGE)
        && !no_transform(request.headers);
    if status == StatusCode::NOT_MODIFIED {
        // A 304 stands for the 200 this client would get: its Vary and (weakened) ETag too
        // (RFC 9110 §15.4.5), or a cache would refresh its compressed copy with a strong tag.
        // Its type is unknown (a 304 has no body): any client that negotiates a coding is
        // told the weak form, which weak comparison still matches.
        let coding = request_ok.then(|| accepted(request)).flatten();
        return Decision {
            vary: coding.is_some(),
            coding,
        };
    }
    if !compressible_response(status, headers) {
        return never;
    }
    Decision {
        vary: true,
        coding: request_ok.then(|| accepted(request)).flatten(),
    }
}

/// The coding the request's `Accept-Encoding` lines choose; several lines are one list
/// (RFC 9110 §5.3).
fn accepted(request: Request<'_>) -> Option<Coding> {
    let joined: Vec<u8> = request
        .headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b","[..]);
    negotiate(&joined)
}

/// Whether `Cache-Control` says `no-transform` (request or response, RFC 9111 §5.2).
fn no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    })
}

/// Whether a response is one berth would compress for a client that accepts it.
fn compressible_response(status: StatusCode, headers: &HeaderMap) -> bool {
    if status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT)
    {
        return false;
    }
    if headers.contains_key(CONTENT_ENCODING) || headers.contains_key(CONTENT_RANGE) {
        return false;
    }
    if no_transform(headers) {
        return false;
    }
    let typed = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(compressible_type);
    if !typed {
        return false;
    }
    match headers.get(CONTENT_LENGTH) {
        None => true,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n >= MIN_SIZE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_decide_and_ties_go_to_zstd_then_br_then_gzip() {
        let cases: [(&str, Option<Coding>); 27] = [
            ("gzip", Some(Coding::Gzip)),
            ("gzip, deflate, br, zstd", Some(Coding::Zstd)),
            ("gzip, deflate, br", Some(Coding::Br)),
            ("br;q=0.5, gzip", Some(Coding::Gzip)),
            ("br;q=1.0, gzip;q=0.999", Some(Coding::Br)),
            ("gzip;q=0", None),
            ("gzip;q=0.000", None),
            ("identity", None),
            ("", None),
            ("deflate", None),
            ("*", Some(Coding::Zstd)),
            ("*;q=0", None),
            ("*, zstd;q=0, br;q=0", Some(Coding::Gzip)),
            ("zstd;q=0.1, *;q=0.2", Some(Coding::Br)),
            ("GZIP", Some(Coding::Gzip)),
            ("x-gzip", Some(Coding::Gzip)),
            ("gzip ; q=0.8 , br ; q=0.9", Some(Coding::Br)),
            // A malformed q-value drops its entry, not the header.
            ("br;q=2, gzip;q=0.5", Some(Coding::Gzip)),
            ("br;q=0.1234, gzip", Some(Coding::Gzip)),
            ("br;q, gzip;q=0.1", Some(Coding::Gzip)),
            ("gzip;q=0, gzip;q=1", Some(Coding::Gzip)),
            ("br;level=9", Some(Coding::Br)),
            ("gzip;", Some(Coding::Gzip)),
            ("gzip;foo;q=0, *", Some(Coding::Zstd)),
            ("gzip;q=0.5, identity;q=1", None),
            ("gzip;q=0.5, identity;q=0.5", Some(Coding::Gzip)),
            ("gzip, identity;q=0", Some(Coding::Gzip)),
        ];
        for (header, expected) in cases {
            assert_eq!(negotiate(header.as_bytes()), expected, "{header:?}");
        }
        assert_eq!(negotiate(b"\xffgzip"), None);
    }

    #[test]
    fn types_worth_compressing() {
        for t in [
            "text/html",
            "text/css; charset=utf-8",
            "application/json",
            "application/vnd.api+json",
            "application/javascript",
            "image/svg+xml",
            "application/wasm",
            "TEXT/PLAIN",
        ] {
            assert!(compressible_type(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "video/mp4",
            "text/event-stream",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "",
            "text",
        ] {
            assert!(!compressible_type(t), "{t}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
                v.parse().unwrap_or_else(|e| panic!("{e}")),
            );
        }
        h
    }

    #[test]
    fn responses_and_requests_that_are_never_compressed() {
        let get = Method::GET;
        let gzip = headers(&[("accept-encoding", "gzip")]);
        let request = Request {
            method: &get,
            version: Version::HTTP_11,
            headers: &gzip,
        };
        let html = [("content-type", "text/html")];
        let yes = decide(request, StatusCode::OK, &headers(&html));
        assert_eq!(
            yes,
            Decision {
                vary: true,
                coding: Some(Coding::Gzip)
            }
        );
        let responses: [(u16, &[(&str, &str)]); 7] = [
            (204, &html),
            (206, &html),
            (
                200,
                &[("content-type", "text/html"), ("content-encoding", "br")],
            ),
            (
                200,
                &[("content-type", "text/html"), ("content-length", "1023")],
            ),
            (200, &[("content-type", "image/png")]),
            (
                200,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, No-Transform"),
                ],
            ),
            (
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-range", "bytes 0-1/2"),
                ],
            ),
        ];
        for (status, pairs) in responses {
            let d = decide(
                request,
                StatusCode::from_u16(status).unwrap_or_else(|e| panic!("{e}")),
                &headers(pairs),
            );
            assert_eq!(
                d,
                Decision {
                    vary: false,
                    coding: None
                },
                "{status} {pairs:?}"
            );
        }
        assert!(decide(
            request,
            StatusCode::NOT_FOUND,
            &headers(&[("content-type", "text/html"), ("content-length", "1024")])
        )
        .coding
        .is_some());
        // A 304 carries what its 200 would: Vary and, for a client with a coding, the coding
        // (whose ETag is weakened); none for a client without.
        assert_eq!(
            decide(request, StatusCode::NOT_MODIFIED, &HeaderMap::new()),
            yes
        );
        let plain = headers(&[("accept-encoding", "identity")]);
        let d = decide(
            Request {
                method: &get,
                version: Version::HTTP_11,
                headers: &plain,
            },
            StatusCode::NOT_MODIFIED,
            &HeaderMap::new(),
        );
        assert_eq!(d.coding, None);
        // Requests that get the response as it is, with Vary all the same.
        let head = Method::HEAD;
        let no_transform = headers(&[
            ("accept-encoding", "gzip"),
            ("cache-control", "no-transform"),
        ]);
        let ranged = headers(&[("accept-encoding", "gzip"), ("range", "bytes=0-")]);
        let split = headers(&[("accept-encoding", "deflate"), ("accept-encoding", "br")]);
        let cases = [
            (&head, Version::HTTP_11, &gzip, None),
            (&get, Version::HTTP_10, &gzip, None),
            (&get, Version::HTTP_11, &ranged, None),
            (&get, Version::HTTP_11, &no_transform, None),
            (&get, Version::HTTP_2, &split, Some(Coding::Br)),
        ];
        for (method, version, h, expected) in cases {
            let d = decide(
                Request {
                    method,
                    version,
                    headers: h,
                },
                StatusCode::OK,
                &headers(&html),
            );
            assert_eq!(
                d,
                Decision {
                    vary: true,
                    coding: expected
                },
                "{method} {version:?} {h:?}"
            );
        }
    }
}
