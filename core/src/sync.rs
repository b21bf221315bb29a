//! Locking shared state that background services and the request path both touch.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on with the data if another thread panicked while holding it: the
/// values guarded here (a cache, a file stamp, a route builder) stay usable, and a
/// watcher must not stop serving over someone else's panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
