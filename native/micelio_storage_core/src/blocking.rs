//! Running blocking work (file I/O, CRCs of large bodies) off the async
//! workers, and driving the futures of blocking stores on the caller's
//! thread. Shared by the store contract and the transfers, so neither
//! imports the other for it.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::error::StoreError;

/// Runs `work` for a blocking store: on the blocking pool when called from
/// the async runtime, in place otherwise (a dirty scheduler, a test).
pub async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| StoreError::Panic(e.to_string()))?
    } else {
        work()
    }
}

/// Drives a future to completion on this thread. For blocking stores, whose
/// futures finish on the first poll; anything else parks until woken.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}
