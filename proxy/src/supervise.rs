//! No service dies quietly. Every Pingora service berth runs (the listeners and the background
//! services) is [`Supervised`]: a panic in it, or a return before shutdown, ends the process
//! with a line naming the service, so Docker's and systemd's restart policies see a dead proxy
//! rather than one that answers `/healthz` while it drops every plain-HTTP request.
//!
//! Listeners are bound by berth before Pingora starts ([`bind_listener`]), so a port that is
//! taken is a start-up error with the address and the reason (after [`BIND_WINDOW`] of
//! retries), not a service thread that panics 30 s later. Pingora takes the bound socket from
//! its table of listening sockets, the same table a graceful upgrade hands to the next process.
//! During an upgrade the sockets come from the running berth instead; an address it did not
//! have is bound when its service starts, and if that fails the other listeners go on and
//! `/healthz` says which one is missing ([`Health`]) — an upgrade never takes the running
//! listeners down.

use std::any::Any;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::{ServiceReadyNotifier, ServiceWithDependents};

use berth_core::sync::lock;

/// How long berth keeps trying a listening address that is in use (a previous berth that is
/// still exiting), before it gives up.
pub const BIND_WINDOW: Duration = Duration::from_secs(5);
const BIND_STEP: Duration = Duration::from_millis(250);

/// Binds a listening socket on `addr` as Pingora would (`SO_REUSEADDR`, non-blocking),
/// retrying an address in use for [`BIND_WINDOW`].
///
/// # Errors
/// The last error, once the window is over or at once for any other error.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let started = Instant::now();
    loop {
        match TcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return Ok(listener);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && started.elapsed() + BIND_STEP < BIND_WINDOW =>
            {
                std::thread::sleep(BIND_STEP);
            }
            Err(e) => return Err(e),
        }
    }
}

/// What is wrong with the running process, for `/healthz`: listeners that could not be
/// bound during an upgrade.
#[derive(Debug, Default)]
pub struct Health {
    failures: Mutex<Vec<String>>,
}

impl Health {
    /// Every failure so far; empty when all is well.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }

    fn fail(&self, what: String) {
        lock(&self.failures).push(what);
    }
}

/// What happens when a supervised service dies: the process ends. Tests put in something
/// that records instead.
pub type OnDeath = Arc<dyn Fn(&str) + Send + Sync>;

/// Logs `why` and ends the process with status 1.
pub fn exit_on_death() -> OnDeath {
    Arc::new(|why: &str| {
        tracing::error!("{why}; berth exits so that it can be restarted");
        std::process::exit(1);
    })
}

/// Wraps services for [`pingora_core::server::Server::add_service`].
#[derive(Clone)]
pub struct Supervisor {
    health: Arc<Health>,
    on_death: OnDeath,
}

impl Supervisor {
    /// A supervisor whose services end the process when they die.
    pub fn new(health: Arc<Health>) -> Supervisor {
        Supervisor {
            health,
            on_death: exit_on_death(),
        }
    }

    /// With `on_death` instead of ending the process.
    pub fn with_on_death(health: Arc<Health>, on_death: OnDeath) -> Supervisor {
        Supervisor { health, on_death }
    }

    /// A background service (or a listener Pingora binds itself).
    pub fn service<S: ServiceWithDependents>(&self, inner: S) -> Supervised<S> {
        Supervised {
            inner,
            listener: None,
            supervisor: self.clone(),
        }
    }

    /// A listening service on `addr`, with the socket berth bound for it (`None` during an
    /// upgrade: the running berth hands it over, or it is bound when the service starts).
    pub fn listening<S: ServiceWithDependents>(
        &self,
        inner: S,
        addr: SocketAddr,
        bound: Option<TcpListener>,
    ) -> Supervised<S> {
        Supervised {
            inner,
            listener: Some((addr, bound)),
            supervisor: self.clone(),
        }
    }
}

/// A service that ends the process when it panics or stops before shutdown.
pub struct Supervised<S> {
    inner: S,
    listener: Option<(SocketAddr, Option<TcpListener>)>,
    supervisor: Supervisor,
}

impl<S: ServiceWithDependents> Supervised<S> {
    /// Puts this service's socket into Pingora's table unless the table has one for the
    /// address already (handed over by the berth being upgraded). `false` when there is none
    /// and none can be bound.
    fn provide_socket(&mut self, fds: Option<&ListenFds>) -> bool {
        let (Some((addr, bound)), Some(table)) = (self.listener.as_mut(), fds) else {
            return true;
        };
        let key = addr.to_string();
        if table.lock().get(&key).is_some() {
            return true;
        }
        let socket = match bound.take() {
            Some(socket) => Ok(socket),
            None => bind_listener(*addr),
        };
        match socket {
            Ok(socket) => {
                table.lock().add(key, socket.into_raw_fd());
                true
            }
            Err(e) => {
                let what = format!("listener {addr} ({}): cannot bind: {e}", self.inner.name());
                tracing::error!("{what}; the other listeners keep serving");
                self.supervisor.health.fail(what);
                false
            }
        }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Supervised<S> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if !self.provide_socket(fds.as_ref()) {
            ready_notifier.notify_ready();
            let _ = shutdown.wait_for(|stop| *stop).await;
            return;
        }
        let name = self.inner.name().to_string();
        let run = self
            .inner
            .start_service(fds, shutdown.clone(), listeners_per_fd, ready_notifier);
        let died = match AssertUnwindSafe(run).catch_unwind().await {
            Err(panic) => Some(format!(
                "service \"{name}\" panicked: {}",
                panic_message(panic.as_ref())
            )),
            Ok(()) if !*shutdown.borrow() => {
                Some(format!("service \"{name}\" stopped before shutdown"))
            }
            Ok(()) => None,
        };
        if let Some(why) = died {
            (self.supervisor.on_death)(&why);
        }
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(
        &self,
        global: &pingora_core::server::RuntimeOpts,
    ) -> Option<pingora_core::server::RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited);
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `body` on a thread named `name`; a panic in it ends the process as a service's would.
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_supervised_thread(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    let label = name.to_string();
    let on_death = exit_on_death();
    std::thread::Builder::new()
        .name(label.clone())
        .spawn(move || {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(body)) {
                on_death(&format!(
                    "thread \"{label}\" panicked: {}",
                    panic_message(panic.as_ref())
                ));
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::services::background::{background_service, BackgroundService};

    struct Dies(&'static str);

    #[async_trait]
    impl BackgroundService for Dies {
        async fn start(&self, mut shutdown: ShutdownWatch) {
            match self.0 {
                "panics" => panic!("the watcher broke"),
                "returns" => {}
                _ => {
                    let _ = shutdown.changed().await;
                }
            }
        }
    }

    async fn outcome(kind: &'static str, stop_first: bool) -> Vec<String> {
        let deaths = Arc::new(Mutex::new(Vec::new()));
        let recorded = deaths.clone();
        let supervisor = Supervisor::with_on_death(
            Arc::default(),
            Arc::new(move |why: &str| lock(&recorded).push(why.to_string())),
        );
        let mut service = supervisor.service(background_service(kind, Dies(kind)));
        let (tx, rx) = tokio::sync::watch::channel(false);
        if stop_first {
            tx.send(true).expect("send");
        }
        let (ready, _waiter) = tokio::sync::watch::channel(false);
        let notifier = ServiceReadyNotifier::new(ready);
        let stop = async {
            if !stop_first {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(true);
            }
        };
        tokio::join!(service.start_service(None, rx, 1, notifier), stop);
        let out = lock(&deaths).clone();
        out
    }

    #[tokio::test]
    async fn a_service_that_panics_or_returns_early_is_a_death() {
        assert_eq!(
            outcome("panics", false).await,
            ["service \"BG panics\" panicked: the watcher broke"]
        );
        assert_eq!(
            outcome("returns", false).await,
            ["service \"BG returns\" stopped before shutdown"]
        );
        assert!(outcome("waits", false).await.is_empty());
        // Returning once shutdown was asked for is how services end.
        assert!(outcome("returns", true).await.is_empty());
    }

    #[test]
    fn a_taken_address_is_retried_then_reported() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let started = Instant::now();
        let e = bind_listener(addr).expect_err("in use");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(started.elapsed() >= BIND_WINDOW - BIND_STEP * 2);
        // Freed during the window: bound.
        let freer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            drop(taken);
        });
        let bound = bind_listener(addr).expect("freed in time");
        assert_eq!(bound.local_addr().expect("addr"), addr);
        freer.join().expect("join");
    }
}
