//! The one process-wide tokio runtime, and replying to Elixir by message.
//!
//! An async NIF checks its arguments, spawns the work here and returns a
//! `TaskGuard` at once; the result arrives in the caller's mailbox as
//! `{ref, result, retries}` (the retries the engine made, for telemetry). If the caller dies, its guard is garbage-collected and the
//! task is aborted, so abandoned work does not run on.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use rustler::env::OwnedEnv;
use rustler::{Encoder, Env, LocalPid, ResourceArc, Term};
use tokio::runtime::Runtime;

use crate::terms::error_tuple;
use micelio_storage_core::error::{panic_message, StoreError};
use micelio_storage_core::observe;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
/// Held while the runtime is built, so two first callers build one.
static BUILDING: Mutex<()> = Mutex::new(());

/// The shared runtime, started on first use. Starting it needs descriptors
/// (epoll, an eventfd) and threads: when the process has run out, the
/// caller gets `{:io, :emfile}` (or what else ran out) and a later call
/// tries again, instead of a panic that would leave no runtime for good.
pub fn runtime() -> Result<&'static Runtime, StoreError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _building = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let workers = micelio_storage_core::threads::io_workers(
        std::env::var("MICELIO_STORAGE_IO_THREADS").ok().as_deref(),
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    );
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("micelio-storage-io")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| built))
}

/// The caller's reply reference, carried in the external term format.
///
/// Why not a term saved in an `OwnedEnv` made by the NIF: that env is
/// memory of the calling scheduler's allocator, and freeing it on an I/O
/// thread hands the free back to that scheduler, waking it if it sleeps
/// (with `+sbwt none`, 23% more concurrent GETs per second without it).
/// The bytes are Rust's, and the reply env is made on the I/O thread.
pub struct ReplyTag(Vec<u8>);

impl ReplyTag {
    /// Encodes `reference` (a few dozen bytes).
    pub fn of(reference: Term) -> Self {
        ReplyTag(reference.to_binary().as_slice().to_vec())
    }

    /// The same reference, made in `env` (`:undefined` cannot happen: the
    /// bytes came from `term_to_binary` above, never from a peer).
    pub fn term<'a>(&self, env: Env<'a>) -> Term<'a> {
        env.binary_to_term(&self.0)
            .map_or_else(|| rustler::types::atom::undefined().encode(env), |(t, _)| t)
    }
}

/// Aborts its task when dropped: held by the caller while it waits.
pub struct TaskGuard {
    abort: tokio::task::AbortHandle,
}

#[rustler::resource_impl]
impl rustler::Resource for TaskGuard {}

impl TaskGuard {
    /// Stops the task now (used when the Elixir side times out first).
    pub fn cancel(&self) {
        self.abort.abort();
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

/// A successful result that can be turned into a term in the reply env.
pub trait Reply: Send + 'static {
    /// Encodes the `{:ok, ...}` (or bare) success term.
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a>;
}

/// Runs `work` on the runtime with a timeout and sends `{ref, result,
/// retries}` to the caller; fails only when the runtime cannot be started.
pub fn spawn_reply<F, T>(
    env: Env,
    reply_ref: Term,
    timeout: Duration,
    work: F,
) -> Result<ResourceArc<TaskGuard>, StoreError>
where
    F: Future<Output = Result<T, StoreError>> + Send + 'static,
    T: Reply,
{
    let runtime = runtime()?;
    let pid: LocalPid = env.pid();
    let tag = ReplyTag::of(reply_ref);
    let handle = runtime.spawn(async move {
        let _live = LiveTask::start();
        let guarded = tokio::time::timeout(timeout, AssertUnwindSafe(work).catch_unwind());
        let (outcome, retries) = observe::counting(guarded).await;
        let outcome = match outcome {
            Err(_) => Err(StoreError::Timeout),
            Ok(Err(payload)) => Err(StoreError::Panic(panic_message(payload))),
            Ok(Ok(result)) => result,
        };
        let _ = OwnedEnv::new().send_and_clear(&pid, move |env| {
            let reply = match outcome {
                Ok(value) => value.encode_reply(env),
                Err(err) => error_tuple(env, &err),
            };
            (tag.term(env), reply, retries).encode(env)
        });
    });
    Ok(ResourceArc::new(TaskGuard {
        abort: handle.abort_handle(),
    }))
}

static LIVE_TASKS: AtomicUsize = AtomicUsize::new(0);

/// Counts tasks on the runtime; an aborted task drops its future, and this with it.
struct LiveTask;

impl LiveTask {
    fn start() -> Self {
        LIVE_TASKS.fetch_add(1, Ordering::Relaxed);
        LiveTask
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        LIVE_TASKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many spawned tasks are running now (for tests of cancellation).
pub fn live_tasks() -> usize {
    LIVE_TASKS.load(Ordering::Relaxed)
}
