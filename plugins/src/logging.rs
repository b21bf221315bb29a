//! Logging for both binaries: `tracing` to stderr, filtered by `BERTH_LOG` (an
//! `EnvFilter` directive such as `info` or `berth_proxy=debug`; default `info`).
//!
//! Pingora logs through the `log` crate; its records are passed on to `tracing` here, and the
//! few that Pingora logs as errors although nobody has to act on them are passed on at debug
//! level instead ([`demoted`]). An ERROR line from berth means an operator should look.

use log::{Level, Log, Metadata, Record};

/// Installs the subscriber; call once, first thing in `main`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    if log::set_boxed_logger(Box::new(FromLog)).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

/// Whether a `log` record from a dependency is routine although logged as an error or
/// warning: Pingora's connection pool losing a race with its own idle check (a new upstream
/// connection is opened instead), and clients that leave or speak garbage before or while
/// their request is read (nothing berth or its operator can do).
pub fn demoted(target: &str, message: &str) -> bool {
    const ROUTINE: [(&str, &str); 3] = [
        (
            "pingora_core::connectors",
            "failed to acquire reusable stream",
        ),
        ("pingora_core::apps", "H2 handshake error"),
        ("pingora_proxy", "Fail to proxy: Downstream"),
    ];
    ROUTINE
        .iter()
        .any(|(t, m)| target.starts_with(t) && message.starts_with(m))
}

/// Passes `log` records on to `tracing`, demoting the routine ones.
struct FromLog;

impl Log for FromLog {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        if record.level() <= Level::Warn {
            let message = record.args().to_string();
            if demoted(record.target(), &message) {
                let _ = tracing_log::format_trace(
                    &Record::builder()
                        .level(Level::Debug)
                        .target(record.target())
                        .args(format_args!("{message}"))
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
    fn only_the_routine_lines_are_demoted() {
        assert!(demoted(
            "pingora_core::connectors",
            "failed to acquire reusable stream"
        ));
        assert!(demoted(
            "pingora_proxy",
            "Fail to proxy: Downstream ReadError context: ..., downstream session type: HTTP/1.1"
        ));
        assert!(demoted(
            "pingora_core::apps",
            "H2 handshake error Downstream ..."
        ));
        // Everything else keeps its level.
        assert!(!demoted(
            "pingora_proxy",
            "Fail to proxy: Upstream ConnectRefused"
        ));
        assert!(!demoted("pingora_core::connectors", "something else"));
        assert!(!demoted(
            "berth_proxy::app",
            "failed to acquire reusable stream"
        ));
    }
}
