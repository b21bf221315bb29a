// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! A keep-alive pool per thread, for single-threaded runtimes that keep each connection on
//! one thread ([`ServerConf::thread_local_connections`]).
//!
//! An idle connection is a plain entry in the releasing thread's list: no task watches it, no
//! lock guards it and nothing is shared with other threads. Whether it is still usable is
//! checked when it is taken (a non-blocking read, which sees a close or stray data the
//! moment it is needed), and one sweeper task per thread drops the connections that timed out,
//! were closed by the server or belong to a connector that is gone. This is how nginx's
//! upstream keep-alive cache behaves; it costs no task spawn, channel or wake-up per request.
//!
//! [`ServerConf::thread_local_connections`]: crate::server::configuration::ServerConf

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use crate::upstreams::peer::Peer;
use log::debug;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;

/// How often a thread's sweeper looks at its idle connections, at most: sooner when one of
/// them times out sooner.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

thread_local! {
    /// This thread's idle connections, per connector.
    static POOLS: RefCell<HashMap<usize, Pool>> = RefCell::new(HashMap::new());
    /// This thread's sweeper task, while it runs.
    static SWEEPER: RefCell<Option<JoinHandle<()>>> = const { RefCell::new(None) };
}

/// One connector's idle connections on one thread.
struct Pool {
    /// Gone when the connector is dropped: its connections are closed at the next sweep.
    connector: Weak<()>,
    /// The connector's count of idle connections that received data.
    unexpected_data: Arc<AtomicU64>,
    /// Per group key, least recently released first.
    groups: HashMap<u64, VecDeque<Idle>>,
    len: usize,
}

struct Idle {
    stream: Stream,
    released: Instant,
    expires: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// The per-thread pools of one connector (see the module's description).
pub(crate) struct LocalPool {
    id: usize,
    alive: Arc<()>,
    /// Idle connections each thread keeps for this connector.
    capacity: usize,
    unexpected_data: Arc<AtomicU64>,
    evicted: Option<PoolCallback>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// Whether the calling thread runs a single-threaded runtime, which alone makes a per-thread
/// pool (and its sweeper task) stay on this thread.
pub(crate) fn on_local_runtime() -> bool {
    Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

impl LocalPool {
    pub(crate) fn new(
        capacity: usize,
        unexpected_data: Arc<AtomicU64>,
        evicted: Option<PoolCallback>,
    ) -> Self {
        LocalPool {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alive: Arc::new(()),
            capacity,
            unexpected_data,
            evicted,
        }
    }

    /// Keeps `stream` for reuse under `key` on this thread, for at most `idle_timeout`.
    /// Call only on a single-threaded runtime ([`on_local_runtime`]).
    pub(crate) fn put(&self, stream: Stream, key: u64, idle_timeout: Option<Duration>) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let idle = Idle {
            stream,
            released: now,
            expires: idle_timeout.map(|t| now + t),
        };
        let evicted = POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let pool = pools.entry(self.id).or_insert_with(|| Pool {
                connector: Arc::downgrade(&self.alive),
                unexpected_data: self.unexpected_data.clone(),
                groups: HashMap::new(),
                len: 0,
            });
            let evicted = if pool.len >= self.capacity {
                pool.pop_least_recent()
            } else {
                None
            };
            pool.groups.entry(key).or_default().push_back(idle);
            pool.len += 1;
            evicted
        });
        if let Some(evicted) = evicted {
            debug!("idle connection evicted from a full thread-local pool");
            if let Some(callback) = &self.evicted {
                callback(evicted.released.elapsed());
            }
        }
        // (Re)start the sweeper unless it runs: one that ended with its runtime or a panic
        // is replaced.
        SWEEPER.with(|sweeper| {
            let mut sweeper = sweeper.borrow_mut();
            if sweeper.as_ref().is_none_or(JoinHandle::is_finished) {
                *sweeper = Some(tokio::spawn(sweep()));
            }
        });
    }

    /// The most recently released idle connection to `peer` on this thread that is still
    /// usable, if there is one.
    pub(crate) fn get<P: Peer>(&self, peer: &P) -> Option<Stream> {
        let key = peer.reuse_hash();
        let now = Instant::now();
        loop {
            let idle = POOLS.with(|pools| {
                let mut pools = pools.borrow_mut();
                let pool = pools.get_mut(&self.id)?;
                let group = pool.groups.get_mut(&key)?;
                let idle = group.pop_back();
                if group.is_empty() {
                    pool.groups.remove(&key);
                }
                if idle.is_some() {
                    pool.len -= 1;
                }
                idle
            })?;
            let expired = idle.expired(now);
            let mut stream = idle.stream;
            if !expired
                && test_reusable_stream(&mut stream, &self.unexpected_data)
                && connected_to(peer, &stream)
            {
                return Some(stream);
            }
        }
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        // This thread's connections go now; other threads' at their next sweep.
        let _ = POOLS.try_with(|pools| pools.borrow_mut().remove(&self.id));
    }
}

impl Pool {
    fn pop_least_recent(&mut self) -> Option<Idle> {
        let key = *self
            .groups
            .iter()
            .filter_map(|(key, group)| Some((key, group.front()?.released)))
            .min_by_key(|(_, released)| *released)?
            .0;
        let group = self.groups.get_mut(&key)?;
        let idle = group.pop_front();
        if group.is_empty() {
            self.groups.remove(&key);
        }
        self.len -= idle.is_some() as usize;
        idle
    }

    /// Moves what timed out, was closed or sent stray data into `dead`, to be dropped once
    /// the pools are no longer borrowed; `false` once the pool is empty or its connector gone.
    fn sweep(&mut self, now: Instant, dead: &mut Vec<Idle>) -> bool {
        if self.connector.strong_count() == 0 {
            dead.extend(self.groups.drain().flat_map(|(_, group)| group));
            return false;
        }
        for group in self.groups.values_mut() {
            for _ in 0..group.len() {
                let Some(mut idle) = group.pop_front() else {
                    break;
                };
                if !idle.expired(now)
                    && test_reusable_stream(&mut idle.stream, &self.unexpected_data)
                {
                    group.push_back(idle);
                } else {
                    dead.push(idle);
                }
            }
        }
        self.groups.retain(|_, group| !group.is_empty());
        self.len = self.groups.values().map(VecDeque::len).sum();
        self.len > 0
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.groups
            .values()
            .flat_map(|group| group.iter().filter_map(|idle| idle.expires))
            .min()
    }
}

/// Whether a pooled `stream` is connected to `peer`'s address, read from the address the
/// stream recorded when it connected rather than asked of the kernel (`getpeername`).
fn connected_to<P: Peer>(peer: &P, stream: &Stream) -> bool {
    if peer.get_proxy().is_none() {
        if let Some(addr) = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned())
        {
            return &addr == peer.address();
        }
    }
    #[cfg(unix)]
    {
        peer.matches_fd(stream.id())
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::{AsRawSocket, RawSocket};
        struct WrappedRawSocket(RawSocket);
        impl AsRawSocket for WrappedRawSocket {
            fn as_raw_socket(&self) -> RawSocket {
                self.0
            }
        }
        peer.matches_sock(WrappedRawSocket(stream.id() as RawSocket))
    }
}

/// This thread's sweeper: runs while the thread holds idle connections.
async fn sweep() {
    loop {
        let wait = POOLS.with(|pools| {
            pools
                .borrow()
                .values()
                .filter_map(Pool::next_expiry)
                .min()
                .map_or(SWEEP_EVERY, |t| {
                    t.saturating_duration_since(Instant::now()).min(SWEEP_EVERY)
                })
        });
        tokio::time::sleep(wait).await;
        let now = Instant::now();
        let mut dead = Vec::new();
        let empty = POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            pools.retain(|_, pool| pool.sweep(now, &mut dead));
            pools.is_empty()
        });
        // closing a connection may run other code (a tracer, a custom stream): not while the
        // pools are borrowed
        drop(dead);
        if empty {
            return;
        }
    }
}
