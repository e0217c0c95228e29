//! Which keys were written recently, and when (in epochs).
//!
//! Bounded: the oldest records are forgotten, and the log then remembers the
//! newest forgotten epoch, so `written_since` errs on the side of "yes".

use std::collections::{HashMap, VecDeque};

/// Records kept; beyond this the oldest are forgotten.
pub const CAPACITY: usize = 65_536;

pub struct WriteLog {
    epoch: u64,
    keys: HashMap<String, u64>,
    order: VecDeque<(String, u64)>,
    forgotten: u64,
    capacity: usize,
}

impl WriteLog {
    pub fn new(capacity: usize) -> Self {
        WriteLog {
            epoch: 0,
            keys: HashMap::new(),
            order: VecDeque::new(),
            forgotten: 0,
            capacity,
        }
    }

    /// The current epoch: a fetch notes it before reading.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Notes a write of `key`.
    pub fn record(&mut self, key: &str) {
        self.epoch += 1;
        self.keys.insert(key.to_string(), self.epoch);
        self.order.push_back((key.to_string(), self.epoch));
        while self.order.len() > self.capacity {
            let (old, at) = self.order.pop_front().expect("non-empty");
            if self.keys.get(&old) == Some(&at) {
                self.keys.remove(&old);
            }
            self.forgotten = self.forgotten.max(at);
        }
    }

    /// Notes that any key may have been written (every read in flight
    /// must not fill).
    pub fn record_all(&mut self) {
        self.epoch += 1;
        self.forgotten = self.epoch;
    }

    /// True if `key` may have been written after epoch `start`.
    pub fn written_since(&self, key: &str, start: u64) -> bool {
        self.forgotten > start || self.keys.get(key).is_some_and(|at| *at > start)
    }

    /// True if `key` is among the recorded writes.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_and_forgets_conservatively() {
        let mut log = WriteLog::new(2);
        let start = log.epoch();
        assert!(!log.written_since("a", start));
        log.record("a");
        assert!(log.written_since("a", start));
        assert!(!log.written_since("b", start));
        assert!(!log.written_since("a", log.epoch()));
        log.record("b");
        log.record("c");
        // "a" was forgotten: any fetch that started before it must not fill.
        assert!(!log.contains("a"));
        assert!(log.written_since("zzz", start));
        assert!(!log.written_since("zzz", log.epoch()));
    }
}
