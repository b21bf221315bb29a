//! Logging for both binaries: `tracing` to stderr, filtered by `BERTH_LOG` (an
//! `EnvFilter` directive such as `info` or `berth_proxy=debug`; default `info`).
//!
//! Pingora logs through the `log` crate; its records are passed on to `tracing` here, and the
//! few that Pingora logs as errors although nobody has to act on them are passed on at debug
//! level instead ([`demoted`]). An ERROR line from berth means an operator should look.
//! Pingora's own debug and trace output is not passed on: it quotes requests whole.
//!
//! `log`'s level is set to the most verbose level the filter can let through (`info` by
//! default), not to trace: a `log` macro evaluates its arguments before any logger sees the
//! record, and Pingora's trace lines copy each body chunk of a chunked upload into a string
//! (with trace on, chunked uploads through berth ran at half speed).

use log::{Level, Log, Metadata, Record};

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
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    const ROUTINE: [(&str, &str, &str); 4] = [
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
