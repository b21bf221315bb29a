//! Upstream health: the state of each checked upstream, the book that keeps one state per
//! distinct check (shared by the routes that check the same upstream the same way, and kept
//! across the reloads that rebuild them), and the prober that runs the checks.
//!
//! Requests only read an atomic flag ([`UpstreamHealth::up`]); the checks run in a
//! background service ([`Prober`]), one task per check as it falls due, each with a new
//! connection made the way the route's requests make theirs (the same TLS options, timeouts
//! and server name). A connection a request could not make counts as a failed check
//! ([`UpstreamHealth::connect_failed`]).
//!
//! ```toml
//! [[route]]
//! host = "app.example.com"
//! upstreams = ["10.0.0.5:8080", "10.0.0.6:8080"]
//! health-check = "/healthz"
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_http::RequestHeader;
use serde::Serialize;

use berth_core::logging::{shown, without_queries};
use berth_core::route::HealthCheck;

/// How often the prober looks for checks that fell due.
pub const TICK: Duration = Duration::from_millis(100);

/// The `User-Agent` of berth's checks, so an upstream's log can tell them from requests.
pub const USER_AGENT: &str = "berth-health-check";

/// One check of one upstream, as it is sent: where to, how, and what to ask for.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The connection, made as the route's requests make theirs.
    pub peer: HttpPeer,
    /// The `Host` header: the route's host, or the upstream's address for a route whose
    /// host is a pattern.
    pub host: String,
    /// The path and the thresholds.
    pub check: HealthCheck,
}

impl Probe {
    /// Two probes with the same key check the same thing the same way.
    fn key(&self) -> String {
        format!(
            "{:x} {:?} {:?} {:?}",
            self.peer.reuse_hash(),
            self.peer.options.connection_timeout,
            self.host,
            self.check
        )
    }

    /// Asks once: `Ok` for a 2xx or 3xx answer within the timeout, else why not.
    async fn run(&self, connector: &Connector) -> Result<(), String> {
        let ask = async {
            let (mut session, _) = connector
                .get_http_session(&self.peer)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let mut req = RequestHeader::build("GET", self.check.path.as_bytes(), None)
                .map_err(|e| e.to_string())?;
            for (name, value) in [
                (http::header::HOST, self.host.as_str()),
                (http::header::USER_AGENT, USER_AGENT),
                (http::header::CONNECTION, "close"),
            ] {
                req.insert_header(name, value).map_err(|e| e.to_string())?;
            }
            session
                .write_request_header(Box::new(req))
                .await
                .map_err(|e| format!("cannot send the check: {e}"))?;
            session
                .read_response()
                .await
                .map_err(|e| format!("no answer: {e}"))?;
            let status = session
                .get_status()
                .ok_or_else(|| "no status in the answer".to_string())?;
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        };
        match tokio::time::timeout(self.check.timeout, ask).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.check.timeout)
            )),
        }
    }
}

/// The health of one upstream as one check sees it.
#[derive(Debug)]
pub struct UpstreamHealth {
    probe: Probe,
    up: AtomicBool,
    state: Mutex<State>,
    checks_ok: AtomicU64,
    checks_failed: AtomicU64,
    connect_failures: AtomicU64,
    /// A check is running (the next one waits for it).
    probing: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// Failures in a row while up, successes in a row while down.
    in_a_row: u32,
    next_due: Instant,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
    /// When the upstream last went down or came back.
    changed: Option<SystemTime>,
}

/// What `/routes` and the metrics show of an upstream's health.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// The upstream's address.
    pub upstream: String,
    /// In the rotation.
    pub healthy: bool,
    /// Checks that succeeded since the check began.
    pub checks_ok: u64,
    /// Checks that failed since the check began.
    pub checks_failed: u64,
    /// Connections requests could not make (counted as failed checks).
    pub connect_failures: u64,
    /// Unix milliseconds of the last check's end.
    pub last_check_ms: Option<u128>,
    /// Why the last failure failed.
    pub last_error: Option<String>,
    /// Unix milliseconds of the last change between healthy and not.
    pub changed_ms: Option<u128>,
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl UpstreamHealth {
    fn new(probe: Probe) -> UpstreamHealth {
        // The first check within a second (or the interval), at a point that differs from one
        // upstream to the next: the checks of many upstreams do not all go out at once.
        let spread = probe.check.interval.min(Duration::from_secs(1));
        let offset = spread.mul_f64((probe.peer.reuse_hash() % 1000) as f64 / 1000.0);
        UpstreamHealth {
            probe,
            up: AtomicBool::new(true),
            state: Mutex::new(State {
                in_a_row: 0,
                next_due: Instant::now() + offset,
                last_check: None,
                last_error: None,
                changed: None,
            }),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// In the rotation: healthy, or not yet found otherwise.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A request could not connect to the upstream: a failed check.
    pub fn connect_failed(&self, why: &str) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.record(Err(format!("a request could not connect: {why}")));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a check's outcome and takes the upstream out or brings it back when the
    /// thresholds are reached.
    pub(crate) fn record(&self, outcome: Result<(), String>) {
        let check = &self.probe.check;
        let mut state = self.lock();
        let now = SystemTime::now();
        state.last_check = Some(now);
        let up = self.up();
        match outcome {
            Ok(_) => {
                state.in_a_row = if up { 0 } else { state.in_a_row + 1 };
                if !up && state.in_a_row >= check.passes {
                    state.in_a_row = 0;
                    state.changed = Some(now);
                    self.up.store(true, Ordering::Relaxed);
                    tracing::info!(
                        upstream = %self.probe.peer.address(),
                        check = %self.shown_check(),
                        passes = check.passes,
                        "upstream healthy again: back in the rotation"
                    );
                }
            }
            Err(error) => {
                state.in_a_row = if up { state.in_a_row + 1 } else { 0 };
                let error = shown(&error, 300);
                tracing::debug!(upstream = %self.probe.peer.address(), %error, "health check failed");
                if up && state.in_a_row >= check.fails {
                    state.in_a_row = 0;
                    state.changed = Some(now);
                    self.up.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        upstream = %self.probe.peer.address(),
                        check = %self.shown_check(),
                        fails = check.fails,
                        %error,
                        "upstream unhealthy: out of the rotation until it passes its checks"
                    );
                }
                state.last_error = Some(error);
            }
        }
    }

    fn shown_check(&self) -> String {
        format!(
            "GET {} (Host: {})",
            without_queries(&self.probe.check.path),
            shown(&self.probe.host, 100)
        )
    }

    /// Claims the next check if it is due at `now`.
    fn take_due(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if now < state.next_due || self.probing.swap(true, Ordering::AcqRel) {
            return false;
        }
        state.next_due = now + self.probe.check.interval;
        true
    }

    /// Runs the check once and records it; the next check may be claimed once this one has
    /// ended, however it ends (a task that panics or is dropped included).
    async fn check(&self, connector: &Connector) {
        struct Ended<'a>(&'a AtomicBool);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _ended = Ended(&self.probing);
        let outcome = self.probe.run(connector).await;
        match &outcome {
            Ok(_) => self.checks_ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.checks_failed.fetch_add(1, Ordering::Relaxed),
        };
        self.record(outcome);
    }

    /// The state as `/routes` and the metrics show it.
    pub fn view(&self) -> HealthView {
        let state = self.lock();
        HealthView {
            upstream: self.probe.peer.address().to_string(),
            healthy: self.up(),
            checks_ok: self.checks_ok.load(Ordering::Relaxed),
            checks_failed: self.checks_failed.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            last_check_ms: state.last_check.map(unix_ms),
            last_error: state.last_error.clone(),
            changed_ms: state.changed.map(unix_ms),
        }
    }
}

/// One state per distinct check, shared by every route that checks the same upstream the
/// same way, for as long as one of them is live (a reload that rebuilds a route keeps what
/// its checks found).
#[derive(Debug, Default)]
pub struct HealthBook {
    entries: Mutex<HashMap<String, Weak<UpstreamHealth>>>,
}

impl HealthBook {
    /// The state of `probe`'s check: the live one, or a new one (healthy, checked at once).
    pub fn entry(&self, probe: Probe) -> Arc<UpstreamHealth> {
        let key = probe.key();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = entries.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let health = Arc::new(UpstreamHealth::new(probe));
        entries.insert(key, Arc::downgrade(&health));
        health
    }

    /// The states some route still holds (the others are forgotten).
    fn live(&self) -> Vec<Arc<UpstreamHealth>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| e.strong_count() > 0);
        entries.values().filter_map(Weak::upgrade).collect()
    }
}

/// The background service that runs the checks as they fall due.
pub struct Prober {
    book: Arc<HealthBook>,
    connector: Arc<Connector>,
}

impl Prober {
    /// Runs the checks of the states in `book`.
    pub fn new(book: Arc<HealthBook>) -> Prober {
        Prober {
            book,
            connector: Arc::new(Connector::new(None)),
        }
    }

    /// Starts the checks that are due now.
    fn start_due(&self) {
        let now = Instant::now();
        for health in self.book.live() {
            if health.take_due(now) {
                let connector = self.connector.clone();
                tokio::spawn(async move { health.check(&connector).await });
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.start_due(),
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(addr: &str, fails: u32, passes: u32) -> Probe {
        Probe {
            peer: HttpPeer::new(addr, false, String::new()),
            host: "a.test".into(),
            check: HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                fails,
                passes,
            },
        }
    }

    #[test]
    fn out_after_fails_in_a_row_back_after_passes_in_a_row() {
        let h = UpstreamHealth::new(probe("127.0.0.1:1", 3, 2));
        assert!(h.up(), "healthy until found otherwise");
        h.record(Err("answered 500".into()));
        h.record(Err("answered 500".into()));
        h.record(Ok(()));
        h.record(Err("answered 500".into()));
        h.record(Err("answered 500".into()));
        assert!(h.up(), "a success resets the count");
        h.connect_failed("connection refused");
        assert!(!h.up(), "three in a row, a request's among them");
        assert_eq!(h.view().connect_failures, 1);
        assert!(h
            .view()
            .last_error
            .is_some_and(|e| e.contains("connection refused")));
        h.record(Ok(()));
        h.record(Err("answered 500".into()));
        h.record(Ok(()));
        assert!(!h.up(), "a failure resets the passes");
        h.record(Ok(()));
        assert!(h.up(), "two in a row");
        assert!(h.view().changed_ms.is_some());
    }

    #[test]
    fn one_state_per_check_while_a_route_holds_it() {
        let book = HealthBook::default();
        let a = book.entry(probe("127.0.0.1:1", 3, 2));
        let same = book.entry(probe("127.0.0.1:1", 3, 2));
        assert!(Arc::ptr_eq(&a, &same));
        a.record(Err("answered 500".into()));
        let other = book.entry(probe("127.0.0.1:1", 4, 2));
        assert!(!Arc::ptr_eq(&a, &other), "other thresholds, another state");
        let elsewhere = book.entry(probe("127.0.0.1:2", 3, 2));
        assert!(!Arc::ptr_eq(&a, &elsewhere));
        assert_eq!(book.live().len(), 3);
        drop((a, same, other));
        assert_eq!(book.live().len(), 1, "states no route holds are forgotten");
        let again = book.entry(probe("127.0.0.1:1", 3, 2));
        assert_eq!(again.view().last_error, None, "a new state");
        drop(elsewhere);
    }

    #[test]
    fn a_check_is_claimed_once_per_interval() {
        let h = UpstreamHealth::new(probe("127.0.0.1:1", 3, 2));
        let now = Instant::now();
        assert!(
            h.take_due(now + Duration::from_secs(1)),
            "due within a second"
        );
        assert!(!h.take_due(now + Duration::from_secs(5)), "still running");
        h.probing.store(false, Ordering::Release);
        assert!(!h.take_due(now + Duration::from_millis(1500)));
        assert!(h.take_due(now + Duration::from_secs(2)));
    }
}
