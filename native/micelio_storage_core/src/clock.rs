//! A coarse clock for cache ages: milliseconds, read with one atomic load
//! (a RAM hit cannot afford a system call). A background thread advances
//! it every few milliseconds, from the first read on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static NOW_MS: AtomicU64 = AtomicU64::new(0);
static START: Once = Once::new();
/// How often the clock advances.
const TICK: Duration = Duration::from_millis(4);

/// Milliseconds since the clock started, to within `TICK`.
pub fn now_ms() -> u64 {
    START.call_once(|| {
        let origin = Instant::now();
        std::thread::Builder::new()
            .name("micelio-storage-clock".into())
            .spawn(move || loop {
                NOW_MS.store(origin.elapsed().as_millis() as u64, Ordering::Relaxed);
                std::thread::sleep(TICK);
            })
            .expect("cannot start the cache clock");
    });
    NOW_MS.load(Ordering::Relaxed)
}

/// Milliseconds since the Unix epoch (for on-disk ages).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
