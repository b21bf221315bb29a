//! Logging for both binaries: `tracing` to stderr, filtered by `BERTH_LOG` (an
//! `EnvFilter` directive such as `info` or `berth_proxy=debug`; default `info`).
//!
//! Pingora logs through the `log` crate; its records are passed on to `tracing` here, and the
//! few that Pingora logs as errors although nobody has to act on them are passed on at debug
//! level instead ([`demoted`]). An ERROR line from berth means an operator should look.
//! Pingora's own debug and trace output is not passed on: it quotes requests whole.
//!
//! Every record is one line, whatever the values in it: a label, a file or a client can put a
//! line break (or a terminal escape) into a value that is logged, and a forged line would
//! follow it. The writer ([`one_line`]) escapes control characters and Unicode line
//! separators inside a record and cuts a record at [`MAX_RECORD`] bytes; [`shown`] does the
//! same for one value shown elsewhere (`/routes`, the dashboard, berth-acme's
//! `/certificates`).
//!
//! `log`'s level is set to the most verbose level the filter can let through (`info` by
//! default), not to trace: a `log` macro evaluates its arguments before any logger sees the
//! record, and Pingora's trace lines copy each body chunk of a chunked upload into a string
//! (with trace on, chunked uploads through berth ran at half speed).

use std::io::Write;

use log::{Level, Log, Metadata, Record};

/// The longest log record written, in bytes; a longer one is cut (and says so).
pub const MAX_RECORD: usize = 16 << 10;

/// Whether `c` is shown escaped: control characters (C0, DEL, C1 — NEL among them) and the
/// Unicode line and paragraph separators, which some log viewers break lines at.
fn hidden(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` with every query — a `?` and what follows it up to a space or a quote — replaced by
/// `?…`: a query string may carry a token (a registry upload's `_state`, a health check's).
pub fn without_queries(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('?') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if in_query && !(c.is_whitespace() || c == '"' || c == '\'') {
            continue;
        }
        if c == '?' {
            in_query = true;
            out.push_str("?…");
        } else {
            in_query = false;
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` with hidden characters (control characters, U+2028, U+2029) escaped (`\n`,
/// `\u{1b}`), at most `max` characters of it, and `…` when it was cut: a value from a label,
/// a file or a client, safe to show.
pub fn shown(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if hidden(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One log record as it is written: `record` (a formatted event, with or without its final
/// newline) with every hidden character escaped, cut at [`MAX_RECORD`] bytes, and one
/// newline at the end — so no value in it can start a line of its own.
pub fn one_line(record: &[u8], out: &mut Vec<u8>) {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let text = String::from_utf8_lossy(record);
    let start = out.len();
    for c in text.chars() {
        if out.len() - start >= MAX_RECORD {
            out.extend_from_slice(" …(cut)".as_bytes());
            break;
        }
        if hidden(c) {
            let mut buf = [0u8; 4];
            for e in c.escape_debug() {
                out.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
            }
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out.push(b'\n');
}

/// Standard error, one record per line ([`one_line`]). The formatter writes each event with
/// one `write_all`, so each `write` here is a whole record.
struct OneLine;

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + 16);
        one_line(buf, &mut out);
        std::io::stderr().lock().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the subscriber; call once, first thing in `main`.
pub fn init() {
    install(
        tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
}

/// Installs the subscriber with `filter`, and the `log` logger at the filter's level.
fn install(filter: tracing_subscriber::EnvFilter) {
    let most_verbose = log_level(filter.max_level_hint());
    // No colours: a colour is an escape sequence, and escape sequences in a record are
    // escaped (a value could carry one to a terminal).
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| OneLine)
        .with_ansi(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    if log::set_boxed_logger(Box::new(FromLog)).is_ok() {
        log::set_max_level(most_verbose);
    }
}

/// The `log` level that lets through what a filter with this hint can show (trace when the
/// filter cannot tell).
fn log_level(hint: Option<tracing_subscriber::filter::LevelFilter>) -> log::LevelFilter {
    use tracing_log::AsLog;
    hint.map_or(log::LevelFilter::Trace, |level| level.as_log())
}

/// What a `log` record from a dependency says when it is routine although logged as an error
/// or warning: Pingora's connection pool losing a race with its own idle check (a new
/// upstream connection is opened instead), clients that leave or speak garbage before or
/// while their request is read, and clients that send an IP address as SNI (rustls ignores
/// it; the default certificate answers) — nothing berth or its operator can do. The replacement is a
/// fixed sentence: Pingora's own text can quote the bytes of the request, query string and
/// all.
pub fn demoted(target: &str, message: &str) -> Option<&'static str> {
    const ROUTINE: [(&str, &str, &str); 5] = [
        (
            "pingora_core::connectors",
            "failed to acquire reusable stream",
            "an idle upstream connection was busy; a new one was opened",
        ),
        (
            "pingora_core::apps",
            "H2 handshake error",
            "an HTTP/2 client left or failed during its handshake",
        ),
        (
            "pingora_proxy",
            "Fail to proxy: Downstream",
            "a client went away or sent garbage while its request was read",
        ),
        (
            "pingora_core::apps::http_app",
            "HTTP server fails to read from downstream",
            "a client sent the admin listener a request it refuses (two Host headers, \
             user information in the target, garbage) or left",
        ),
        (
            "rustls::msgs::handshake",
            "Illegal SNI extension",
            "a client sent an IP address as its TLS server name; it was ignored",
        ),
    ];
    ROUTINE
        .iter()
        .find(|(t, m, _)| target.starts_with(t) && message.starts_with(m))
        .map(|(_, _, says)| *says)
}

/// Passes `log` records on to `tracing`, demoting the routine ones.
struct FromLog;

impl Log for FromLog {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        // Pingora's own debug output quotes requests whole (query strings and all), and is
        // for Pingora's developers: it is not passed on.
        if record.level() > Level::Info && record.target().starts_with("pingora") {
            return;
        }
        if record.level() <= Level::Warn {
            let message = record.args().to_string();
            if let Some(says) = demoted(record.target(), &message) {
                let _ = tracing_log::format_trace(
                    &Record::builder()
                        .level(Level::Debug)
                        .target(record.target())
                        .args(format_args!("{says}"))
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .build(),
                );
                return;
            }
        }
        let _ = tracing_log::format_trace(record);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_macros_are_off_above_the_filter() {
        let level = |directive: &str| {
            log_level(tracing_subscriber::EnvFilter::new(directive).max_level_hint())
        };
        assert_eq!(level("warn,berth_proxy=debug"), log::LevelFilter::Debug);
        assert_eq!(level("trace"), log::LevelFilter::Trace);
        // The only test here that installs the logger (it is global to the process).
        install(tracing_subscriber::EnvFilter::new("info"));
        assert_eq!(log::max_level(), log::LevelFilter::Info);
        assert!(!log::log_enabled!(target: "pingora_core::protocols", log::Level::Trace));
    }

    /// Values full of line breaks, separators, escapes and quotes, logged the ways berth logs:
    /// every record is one line, and says what it was given, escaped.
    #[test]
    fn no_value_ever_breaks_a_record_into_lines() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let mut out = Vec::new();
                one_line(buf, &mut out);
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(&out);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        const NASTY: [char; 12] = [
            '\n', '\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{1b}', '\u{7}', '\u{0}', '"', '\\',
            '\t', 'é',
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let records = 2000;
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..records {
                let len = (next() % 80) as usize + if i % 100 == 0 { 20_000 } else { 0 };
                let value: String = (0..len)
                    .map(|_| match next() % 4 {
                        0 => NASTY[(next() % NASTY.len() as u64) as usize],
                        _ => char::from(b'a' + (next() % 26) as u8),
                    })
                    .collect();
                let forged = format!("{value}\n2026-12-05T00:00:00Z  INFO forged line");
                match i % 3 {
                    0 => tracing::error!("label berth.port: invalid port \"{forged}\""),
                    1 => tracing::warn!(value = %forged, "a field"),
                    _ => tracing::info!(value = ?forged, "debug-formatted"),
                }
            }
        });
        let out = buffer
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(out).expect("UTF-8");
        assert_eq!(text.matches('\n').count(), records);
        for line in text.lines() {
            assert!(!line.contains("\n2026"), "{line}");
            assert!(!line.chars().any(hidden), "{line:?}");
            assert!(line.len() <= MAX_RECORD + 32, "{}", line.len());
        }
        assert!(text.contains("\\n2026-12-05T00:00:00Z  INFO forged line"));
    }

    #[test]
    fn values_are_shown_escaped_and_cut() {
        assert_eq!(
            shown("a\nb\u{2028}c\u{1b}[31m", 64),
            "a\\nb\\u{2028}c\\u{1b}[31m"
        );
        assert_eq!(shown("plain \"quoted\" é", 64), "plain \"quoted\" é");
        assert_eq!(shown(&"x".repeat(70), 64).chars().count(), 65);
        assert_eq!(shown("abc", 3), "abc");
    }

    #[test]
    fn only_the_routine_lines_are_demoted() {
        let pool = demoted(
            "pingora_core::connectors",
            "failed to acquire reusable stream",
        );
        assert!(pool.is_some());
        let said = demoted(
            "pingora_proxy",
            "Fail to proxy: Downstream ReadError context: buf: GET /?_state=t, downstream session type: HTTP/1.1",
        );
        assert!(said.is_some_and(|s| !s.contains("_state")));
        assert!(demoted("pingora_core::apps", "H2 handshake error Downstream ...").is_some());
        assert!(demoted(
            "pingora_core::apps::http_app",
            "HTTP server fails to read from downstream:  InvalidHTTPHeader context: multiple Host header fields"
        )
        .is_some());
        // wrk and other clients send an address as SNI on every handshake.
        assert!(demoted(
            "rustls::msgs::handshake",
            "Illegal SNI extension: ignoring IP address presented as hostname (3132372e302e302e31)"
        )
        .is_some());
        // Everything else keeps its level and its text.
        assert!(demoted("pingora_proxy", "Fail to proxy: Upstream ConnectRefused").is_none());
        assert!(demoted("pingora_core::connectors", "something else").is_none());
        assert!(demoted("berth_proxy::app", "failed to acquire reusable stream").is_none());
    }
}
