//! berth's own answers as the client reads them best (`error-pages`): the operator's HTML page
//! for a browser, JSON for a client that asks for it, the registry's error JSON on the
//! registry profile (so `docker` prints the message), and berth's short text otherwise.
//!
//! ```toml
//! [defaults]
//! error-pages = "/etc/berth/errors"   # 502.html, 503.json, maintenance.html, ...
//! ```
//! Pages are read when the route is built (a reload reads them again); a page that cannot be
//! read, or is larger than [`PAGE_LIMIT`], is logged and berth's own stands in.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;

use berth_core::compress::parse_q;

use crate::plugin::{Page, Reply};

/// The largest page read.
pub const PAGE_LIMIT: u64 = 256 * 1024;

/// The most a directory's pages may hold together; pages past it are left out (logged).
pub const DIR_LIMIT: u64 = 4 << 20;

/// The stem of the page a maintenance answer uses before its status code's.
pub const MAINTENANCE: &str = "maintenance";

/// The operator's pages: `<stem>.html` and `<stem>.json`, stems being status codes and
/// [`MAINTENANCE`].
#[derive(Debug, Default)]
pub struct ErrorPages {
    pages: HashMap<(String, Kind), Bytes>,
}

fn shared_cache() -> &'static Mutex<HashMap<String, Weak<ErrorPages>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<ErrorPages>>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// What a client is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An HTML page.
    Html,
    /// JSON.
    Json,
    /// berth's short text.
    Text,
}

impl ErrorPages {
    /// Reads the pages of `dir`; unreadable or oversized ones are logged and left out.
    pub fn load(dir: &str) -> ErrorPages {
        let mut pages = HashMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %berth_core::logging::shown(dir, 200), error = %e, "error-pages: cannot read the directory; berth's own pages stand in");
                return ErrorPages { pages };
            }
        };
        let mut total = 0u64;
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let Some((stem, kind)) = name.to_str().and_then(page_name) else {
                continue;
            };
            let path = Path::new(dir).join(&name);
            match read_page(&path) {
                Ok(bytes) if total + bytes.len() as u64 > DIR_LIMIT => tracing::warn!(
                    file = %berth_core::logging::shown(&path.display().to_string(), 200),
                    "error-pages: the directory's pages are over {} MiB together; this one and later ones left out",
                    DIR_LIMIT >> 20
                ),
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    pages.insert((stem.to_string(), kind), bytes);
                }
                Err(e) => tracing::warn!(
                    file = %berth_core::logging::shown(&path.display().to_string(), 200),
                    error = %e,
                    "error-pages: page left out; berth's own stands in"
                ),
            }
        }
        ErrorPages { pages }
    }

    /// The pages of `dir`, read once and shared by every route naming it until
    /// [`ErrorPages::forget_all`] (a reload) makes the next call read them again.
    pub fn shared(dir: &str) -> Arc<ErrorPages> {
        let mut cache = berth_core::sync::lock(shared_cache());
        if let Some(pages) = cache.get(dir).and_then(Weak::upgrade) {
            return pages;
        }
        let pages = Arc::new(ErrorPages::load(dir));
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(dir.to_string(), Arc::downgrade(&pages));
        pages
    }

    /// Makes the next [`ErrorPages::shared`] of every directory read it again.
    pub fn forget_all() {
        berth_core::sync::lock(shared_cache()).clear();
    }

    /// How many pages were read.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether no page was read.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    fn get(&self, stem: &str, kind: Kind) -> Option<&Bytes> {
        self.pages.get(&(stem.to_string(), kind))
    }

    /// `reply` as a client that sent `accept` reads it best; `registry`: the request is one
    /// of the registry API on the registry profile. Answers of their own kind (a 401 and its
    /// challenge, anything with a `Content-Type` already) and non-errors pass unchanged.
    pub fn render(&self, mut reply: Reply, accept: Option<&HeaderValue>, registry: bool) -> Reply {
        let own_type = reply.headers.iter().any(|(n, _)| n == CONTENT_TYPE);
        if reply.status.as_u16() < 400
            || reply.status == StatusCode::UNAUTHORIZED
            || own_type
            || reply.page == Page::Verbatim
        {
            return reply;
        }
        let message = message_of(&reply);
        let (body, content_type): (Bytes, &'static str) = if registry {
            (registry_json(reply.status, &message), "application/json")
        } else {
            let kind = preferred(accept.and_then(|a| a.to_str().ok()).unwrap_or(""));
            let status = reply.status.as_str().to_string();
            let maintenance = (reply.page == Page::Maintenance).then_some(MAINTENANCE);
            let stems = maintenance.into_iter().chain([status.as_str()]);
            let own = stems
                .filter_map(|stem| self.get(stem, kind))
                .next()
                .cloned();
            match (kind, own) {
                (Kind::Html, Some(page)) => (page, "text/html; charset=utf-8"),
                (Kind::Json, Some(page)) => (page, "application/json"),
                (Kind::Html, None) => (html(reply.status, &message), "text/html; charset=utf-8"),
                (Kind::Json, None) => (json(reply.status, &message), "application/json"),
                (Kind::Text, _) => return reply,
            }
        };
        reply.body = body;
        reply
            .headers
            .push((CONTENT_TYPE, HeaderValue::from_static(content_type)));
        reply
    }
}

/// `502.html` → ("502", Html); `maintenance.json` → ("maintenance", Json); anything else: no
/// page.
fn page_name(name: &str) -> Option<(&str, Kind)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let kind = match ext {
        "html" => Kind::Html,
        "json" => Kind::Json,
        _ => return None,
    };
    let status = stem.len() == 3
        && stem.bytes().all(|b| b.is_ascii_digit())
        && matches!(stem.as_bytes()[0], b'4' | b'5');
    (status || stem == MAINTENANCE).then_some((stem, kind))
}

/// Reads one page: a regular file, never through a symlink (a page is sent to any client,
/// so a link must not publish what it points to), opened non-blocking (a FIFO is refused at
/// once), of at most [`PAGE_LIMIT`] bytes.
fn read_page(path: &Path) -> Result<Bytes, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                "a symlink; pages are read only as regular files".to_string()
            } else {
                format!("cannot read: {e}")
            }
        })?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".to_string());
    }
    let mut bytes = Vec::new();
    file.take(PAGE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > PAGE_LIMIT {
        return Err(format!("larger than {} KiB", PAGE_LIMIT / 1024));
    }
    Ok(Bytes::from(bytes))
}

/// The detail of a reply berth wrote (`"<code> <reason>: <detail>\n"`), or its whole text.
fn message_of(reply: &Reply) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    let text = text.trim();
    let reason = reply.status.canonical_reason().unwrap_or("");
    let prefix = format!("{} {reason}: ", reply.status.as_u16());
    text.strip_prefix(&prefix).unwrap_or(text).to_string()
}

/// What `accept` prefers among an HTML page, JSON and text, by q-value (the most specific
/// range naming a type gives its q-value); on a tie text, then HTML, then JSON — so a client
/// that sends `*/*` (curl) keeps berth's short text, and only one that names JSON gets it.
pub fn preferred(accept: &str) -> Kind {
    let offers = [
        (Kind::Text, "text", "plain"),
        (Kind::Html, "text", "html"),
        (Kind::Json, "application", "json"),
    ];
    let mut best: Option<(Kind, u16)> = None;
    for (kind, major, minor) in offers {
        let q = q_for(accept, major, minor);
        if q > 0 && best.is_none_or(|(_, b)| q > b) {
            best = Some((kind, q));
        }
    }
    best.map_or(Kind::Text, |(k, _)| k)
}

/// The q-value `accept` gives `major/minor`, in thousandths: that of the most specific range
/// matching it (`text/html`, then `text/*`, then `*/*`); 0 when none does.
fn q_for(accept: &str, major: &str, minor: &str) -> u16 {
    let mut found: Option<(u8, u16)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let Some((a, b)) = media.split_once('/') else {
            continue;
        };
        let specificity = if a == major && b == minor {
            2
        } else if a == major && b == "*" {
            1
        } else if a == "*" && b == "*" {
            0
        } else {
            continue;
        };
        let mut q = 1000;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim()).unwrap_or(0);
                }
            }
        }
        if found.is_none_or(|(s, _)| specificity > s) {
            found = Some((specificity, q));
        }
    }
    found.map_or(0, |(_, q)| q)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn title(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    )
}

fn html(status: StatusCode, message: &str) -> Bytes {
    let title = escape_html(&title(status));
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body><h1>{title}</h1><p>{}</p></body></html>\n",
        escape_html(message)
    ))
}

fn json(status: StatusCode, message: &str) -> Bytes {
    let value = serde_json::json!({
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
    });
    Bytes::from(format!("{value}\n"))
}

/// The distribution API's error body: `{"errors":[{"code":..,"message":..,"detail":null}]}`,
/// with the code the API has for the status (`TOOMANYREQUESTS`, `SIZE_INVALID`, ...).
pub fn registry_json(status: StatusCode, message: &str) -> Bytes {
    let code = match status.as_u16() {
        403 => "DENIED",
        405 => "UNSUPPORTED",
        413 => "SIZE_INVALID",
        429 => "TOOMANYREQUESTS",
        s if s >= 500 => "UNAVAILABLE",
        _ => "UNSUPPORTED",
    };
    let value = serde_json::json!({
        "errors": [{ "code": code, "message": message, "detail": null }]
    });
    Bytes::from(format!("{value}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_json_clients_json_and_the_rest_text() {
        let cases = [
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                Kind::Html,
            ),
            ("application/json", Kind::Json),
            ("application/json, text/plain;q=0.5", Kind::Json),
            ("*/*", Kind::Text),
            ("", Kind::Text),
            ("text/*", Kind::Text),
            ("text/html;q=0.5, application/json;q=0.9", Kind::Json),
            ("application/*", Kind::Json),
            ("image/png", Kind::Text),
            ("text/plain;q=0, text/html", Kind::Html),
            ("application/json;q=0, */*", Kind::Text),
            ("*/*;q=0.1, application/json", Kind::Json),
            ("application/json, */*;q=0.1", Kind::Json),
        ];
        for (accept, kind) in cases {
            assert_eq!(preferred(accept), kind, "{accept:?}");
        }
    }

    #[test]
    fn berths_own_pages_escape_what_they_quote() {
        let page = html(
            StatusCode::BAD_GATEWAY,
            "<script>alert('x')</script> & \"more\"",
        );
        let page = String::from_utf8_lossy(&page);
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"),
            "{page}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&json(StatusCode::BAD_GATEWAY, "a \"quoted\" word"))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["message"], "a \"quoted\" word");
        let reg: serde_json::Value =
            serde_json::from_slice(&registry_json(StatusCode::TOO_MANY_REQUESTS, "slow down"))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reg["errors"][0]["code"], "TOOMANYREQUESTS");
    }

    #[test]
    fn pages_are_regular_files_never_links_fifos_or_oversized() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        std::fs::write(d.join("502.html"), "ours").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("secret"), "do not serve").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(d.join("secret"), d.join("503.html"))
            .unwrap_or_else(|e| panic!("{e}"));
        let fifo = std::process::Command::new("mkfifo")
            .arg(d.join("504.html"))
            .status()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(fifo.success());
        std::fs::write(d.join("429.html"), vec![b'x'; PAGE_LIMIT as usize + 1])
            .unwrap_or_else(|e| panic!("{e}"));
        let pages = ErrorPages::load(&d.display().to_string());
        assert_eq!(pages.len(), 1);
        assert_eq!(
            pages.get("502", Kind::Html).map(|b| b.as_ref()),
            Some(&b"ours"[..])
        );
        assert!(read_page(&d.join("503.html")).is_err_and(|e| e.contains("symlink")));
        assert!(read_page(&d.join("504.html")).is_err_and(|e| e.contains("not a regular file")));
        assert!(read_page(&d.join("429.html")).is_err_and(|e| e.contains("larger than")));
        // Shared: one read per directory until a reload forgets it.
        let path = d.display().to_string();
        let a = ErrorPages::shared(&path);
        assert!(Arc::ptr_eq(&a, &ErrorPages::shared(&path)));
        ErrorPages::forget_all();
        assert!(!Arc::ptr_eq(&a, &ErrorPages::shared(&path)));
    }

    #[test]
    fn only_status_and_maintenance_pages_are_read() {
        assert_eq!(page_name("502.html"), Some(("502", Kind::Html)));
        assert_eq!(page_name("429.json"), Some(("429", Kind::Json)));
        assert_eq!(
            page_name("maintenance.html"),
            Some(("maintenance", Kind::Html))
        );
        for name in [
            "200.html",
            "50.html",
            "502.htm",
            "x502.html",
            "502.html.bak",
            "index.html",
        ] {
            assert_eq!(page_name(name), None, "{name}");
        }
    }
}
