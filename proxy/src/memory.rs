//! Memory given back once connections close. berth's allocator (mimalloc) returns freed
//! memory to the kernel after a delay (`purge_delay`, 1 s), but only checks for expired
//! delays when some thread frees a page later; after a crowd of idle clients leaves, nothing
//! may be freed for hours and the memory stays resident. A background thread therefore
//! frees one untouched large block every second, which is enough for mimalloc to purge what
//! has waited its delay. Returning memory at once instead (`purge_delay` 0) cost 10-20 % of
//! small-request throughput here.

use std::time::Duration;

/// How often the purge is given its chance.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// A block large enough to be a page of its own, allocated and freed untouched.
const POKE_BYTES: usize = 8 << 20;

/// Starts the thread that lets freed memory go back to the kernel.
pub fn start_purger() {
    let spawned = crate::supervise::spawn_supervised_thread("berth memory", || loop {
        std::thread::sleep(PURGE_EVERY);
        // Fallible: under an address-space limit the poke fails quietly instead of
        // aborting the process.
        let mut poke = Vec::<u8>::new();
        if poke.try_reserve_exact(POKE_BYTES).is_ok() {
            drop(std::hint::black_box(poke));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the memory purge thread; freed memory may stay resident");
    }
}
