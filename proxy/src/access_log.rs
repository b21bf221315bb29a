//! The access log: one JSON line per request, written when the request ends (a 10 GiB upload
//! logs once, at the end), to standard output or a file.
//!
//! Lines are handed to a writer thread through a bounded channel, so the request path never
//! waits for a disk or a pipe; the writer wakes every [`WRITE_EVERY`] and writes what
//! arrived in one go. If it falls more than [`QUEUE_LINES`] lines behind, further lines are
//! dropped and counted rather than slowing requests down.
//!
//! ```toml
//! [log]
//! access = "stdout"   # "off", or a file path: "/var/log/berth/access.log"
//! ```

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::Duration;

use serde::Serialize;

use berth_core::config::AccessLog;

/// Lines that may wait for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 65_536;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the request ended, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The client's address: the TCP peer, or the address a trusted proxy named; `null`
    /// when a trusted proxy named none that could be read.
    pub client: Option<IpAddr>,
    /// The TCP peer (the client, or a proxy in front of berth).
    pub peer: Option<IpAddr>,
    /// The request's host name (lowercase, without port).
    pub host: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request path, without the query string (which may carry secrets).
    pub path: &'a str,
    /// Status sent to the client; 499 when the client went away before an answer.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Time from the request's arrival to its end, milliseconds.
    pub duration_ms: f64,
    /// The upstream of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// Where the route came from (`file`, `container web`); absent when no route matched.
    pub route: Option<String>,
}

/// Writes access-log lines from a background thread.
pub struct AccessLogger {
    tx: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl AccessLogger {
    /// Starts the writer for `target`; `None` when the log is off.
    ///
    /// # Errors
    /// When the file cannot be opened for appending.
    pub fn start(target: &AccessLog) -> io::Result<Option<AccessLogger>> {
        let out: Box<dyn Write + Send> = match target {
            AccessLog::Off => return Ok(None),
            AccessLog::Stdout => Box::new(io::stdout()),
            AccessLog::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            ),
        };
        let (tx, rx) = sync_channel(QUEUE_LINES);
        crate::supervise::spawn_supervised_thread("berth access log", move || {
            write_lines(rx, out)
        })?;
        Ok(Some(AccessLogger {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues one line.
    pub fn log(&self, entry: &Entry<'_>) {
        let mut line = Vec::with_capacity(256);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "access log: the writer cannot keep up; lines are being dropped"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// How often the writer thread wakes to write what was queued. Requests never wake it: a
/// wake-up per line (a futex call and a context switch) cost more than the line itself.
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// The writer thread: every [`WRITE_EVERY`], writes everything queued in one go.
fn write_lines(rx: Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = io::BufWriter::with_capacity(256 << 10, out);
    loop {
        std::thread::sleep(WRITE_EVERY);
        let mut wrote = false;
        let mut result = Ok(());
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    wrote = true;
                    if result.is_ok() {
                        result = out.write_all(&line);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        if wrote {
            if let Err(e) = result.and_then(|()| out.flush()) {
                tracing::error!(error = %e, "access log: write failed");
            }
        }
    }
}

/// RFC 3339 UTC time with milliseconds, for the `time` field.
pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
