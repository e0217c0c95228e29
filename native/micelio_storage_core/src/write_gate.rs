//! Turns for large local writes.
//!
//! Writing a large object to a file is mostly the kernel copying it into
//! the page cache: CPU time on the dirty I/O scheduler's thread. Eight
//! concurrent 8 MiB puts on a 2-core machine kept eight such threads
//! runnable, and the BEAM's normal scheduler threads waited behind them
//! (a process sleeping 1 ms woke 2x later than under `File.write/2`).
//! Each 1 MiB chunk of a large write therefore waits for one of a few
//! turns; throughput is bound by memory bandwidth, not by the number of
//! writers, so it barely changes.

use std::sync::{Condvar, Mutex, OnceLock};

use crate::error::StoreError;
use crate::object::Deadline;

struct Gate {
    free: Mutex<usize>,
    freed: Condvar,
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate {
        free: Mutex::new(turns()),
        freed: Condvar::new(),
    })
}

/// Sized like the I/O runtime: half the cores, at least one
/// (`MICELIO_STORAGE_WRITE_TURNS` overrides).
fn turns() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let setting = std::env::var("MICELIO_STORAGE_WRITE_TURNS").ok();
    crate::threads::io_workers(setting.as_deref(), cores)
}

/// A turn, given back when dropped.
pub struct Turn(&'static Gate);

/// Waits for a turn (blocking: only called on blocking threads), at most
/// until `deadline`: a write stuck in the kernel (a hung network
/// filesystem) makes the others time out instead of waiting for ever.
pub fn turn(deadline: Deadline) -> Result<Turn, StoreError> {
    let gate = gate();
    let mut free = gate.free.lock().unwrap_or_else(|e| e.into_inner());
    while *free == 0 {
        let left = deadline.remaining();
        if left.is_zero() {
            return Err(StoreError::Timeout);
        }
        free = gate
            .freed
            .wait_timeout(free, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *free -= 1;
    Ok(Turn(gate))
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::turn;
    use crate::error::StoreError;
    use crate::object::Deadline;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn never_more_writers_than_turns() {
        let limit = super::turns();
        let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (inside, most) = (inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let _turn = turn(Deadline::far()).unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(most.load(Ordering::SeqCst) <= limit);
        assert_eq!(inside.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_writer_waiting_past_its_deadline_times_out() {
        let held: Vec<_> = (0..super::turns())
            .map(|_| turn(Deadline::far()).unwrap())
            .collect();
        let waited = std::time::Instant::now();
        let late = turn(Deadline::after(std::time::Duration::from_millis(50)));
        assert!(matches!(late, Err(StoreError::Timeout)));
        assert!(waited.elapsed() >= std::time::Duration::from_millis(50));
        drop(held);
        assert!(turn(Deadline::after(std::time::Duration::from_millis(50))).is_ok());
    }
}
