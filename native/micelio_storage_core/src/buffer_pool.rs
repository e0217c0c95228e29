//! Buffers kept for reuse by large reads.
//!
//! Why: memory freshly mapped for a buffer is faulted in and zeroed by the
//! kernel page by page, and a buffer that must grow with the bytes that
//! arrive (never from a peer's word) is mapped again at every growth. A
//! kept buffer has already been faulted in and has already grown: the next
//! read only copies its bytes in. Downloads keep the buffers of their
//! ranges here, and the NIF layer the buffers of large GET bodies.

use std::ops::Deref;
use std::sync::Mutex;

/// Emptied buffers waiting for the next `take`, the largest last.
pub struct BufferPool {
    kept: Mutex<Vec<Vec<u8>>>,
    /// At most this many wait.
    most: usize,
    /// Larger ones are freed when given back.
    largest: usize,
}

impl BufferPool {
    /// A pool that keeps up to `most` buffers of up to `largest` bytes of
    /// capacity each: what it holds while idle is at most their product.
    pub const fn new(most: usize, largest: usize) -> Self {
        BufferPool {
            kept: Mutex::new(Vec::new()),
            most,
            largest,
        }
    }

    /// The largest kept buffer (empty), or a new one of `capacity`.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        self.lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Keeps `buffer`, emptied, for a later `take`: unless it is larger than
    /// the pool keeps, or the pool is full of buffers at least as large
    /// (a larger one replaces the smallest).
    pub fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > self.largest || self.most == 0 {
            return;
        }
        buffer.clear();
        let mut kept = self.lock();
        if kept.len() >= self.most {
            if kept[0].capacity() >= buffer.capacity() {
                return;
            }
            kept.remove(0);
        }
        let at = kept.partition_point(|b| b.capacity() <= buffer.capacity());
        kept.insert(at, buffer);
    }

    /// How many buffers wait.
    pub fn kept(&self) -> usize {
        self.lock().len()
    }

    /// The list, whole even if a holder panicked (a push or a pop).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A buffer of `home`'s, given back to it when dropped. As the owner of a
/// `Bytes` (`Bytes::from_owner`), it goes back once every slice of that is
/// dropped, such as the BEAM binaries made over it.
pub struct Lent<H: Deref<Target = BufferPool> + Send + 'static> {
    buffer: Vec<u8>,
    home: H,
}

impl<H: Deref<Target = BufferPool> + Send + 'static> Lent<H> {
    /// A buffer taken from `home` (see `BufferPool::take`).
    pub fn take(home: H, capacity: usize) -> Self {
        Lent {
            buffer: home.take(capacity),
            home,
        }
    }

    /// Lends `buffer`, which goes to `home` when this is dropped.
    pub fn of(buffer: Vec<u8>, home: H) -> Self {
        Lent { buffer, home }
    }

    /// The buffer, to fill.
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buffer
    }

    /// The buffer.
    pub fn buffer(&self) -> &Vec<u8> {
        &self.buffer
    }
}

impl<H: Deref<Target = BufferPool> + Send + 'static> AsRef<[u8]> for Lent<H> {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl<H: Deref<Target = BufferPool> + Send + 'static> Drop for Lent<H> {
    fn drop(&mut self) {
        self.home.give(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_and_the_largest_first() {
        let pool = BufferPool::new(4, 1 << 20);
        let mut small = pool.take(100);
        small.extend_from_slice(b"old");
        let large = pool.take(1000);
        let (small_at, large_at) = (small.as_ptr(), large.as_ptr());
        pool.give(small);
        pool.give(large);
        let first = pool.take(10);
        assert_eq!(first.as_ptr(), large_at);
        let second = pool.take(10);
        assert_eq!(second.as_ptr(), small_at);
        assert!(second.is_empty());
        // Nothing left: a new one of the asked capacity.
        assert!(pool.take(10).capacity() >= 10);
    }

    #[test]
    fn it_keeps_at_most_so_many_no_larger_than_its_limit() {
        let pool = BufferPool::new(2, 1000);
        pool.give(Vec::with_capacity(2000));
        assert_eq!(pool.kept(), 0, "larger than the pool keeps");
        pool.give(Vec::with_capacity(100));
        pool.give(Vec::with_capacity(300));
        pool.give(Vec::with_capacity(50));
        assert_eq!(pool.kept(), 2, "full: a smaller one is freed");
        pool.give(Vec::with_capacity(500));
        assert_eq!(pool.kept(), 2);
        let capacities: Vec<usize> = (0..2).map(|_| pool.take(0).capacity()).collect();
        assert_eq!(capacities[0], 500, "a larger one replaced the smallest");
        assert!(capacities[1] >= 300 && capacities[1] < 500);
    }

    #[test]
    fn a_lent_buffer_comes_back_once_every_slice_of_its_bytes_is_dropped() {
        let pool = Arc::new(BufferPool::new(4, 1 << 20));
        let mut lent = Lent::take(pool.clone(), 4096);
        lent.buffer_mut().extend_from_slice(&[7; 4096]);
        let at = lent.buffer().as_ptr();
        let bytes = Bytes::from_owner(lent);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.kept(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        assert_eq!(pool.kept(), 1);
        let again = pool.take(0);
        assert_eq!(again.as_ptr(), at);
    }
}
