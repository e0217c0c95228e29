//! What the engine tells the outside about its work, without depending on
//! the BEAM: retries counted per operation, and log events handed to a hook
//! (the NIF layer installs one that sends them to Elixir's `Logger`).
//! Nothing here ever carries a secret: callers pass endpoints, operations
//! and counts, never keys or signatures.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

/// How much a log event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// A retry, a refresh that went well.
    Debug,
    /// A credential refresh.
    Info,
    /// A give-up after the last retry, a failed refresh.
    Warning,
}

/// One log event: a message and `(name, value)` metadata.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub level: Level,
    pub message: String,
    pub metadata: Vec<(&'static str, String)>,
}

type Hook = Box<dyn Fn(LogEvent) + Send + Sync>;

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the log hook (once per process; later calls are ignored).
pub fn set_log_hook(hook: impl Fn(LogEvent) + Send + Sync + 'static) {
    let _ = HOOK.set(Box::new(hook));
}

/// Emits a log event, if a hook is installed.
pub fn log(level: Level, message: String, metadata: Vec<(&'static str, String)>) {
    if let Some(hook) = HOOK.get() {
        hook(LogEvent {
            level,
            message,
            metadata,
        });
    }
}

tokio::task_local! {
    static RETRIES: Cell<u32>;
}

/// Notes one retry of the operation running in this task (see `counting`).
pub fn retried() {
    let _ = RETRIES.try_with(|n| n.set(n.get() + 1));
}

/// Runs `work`, counting the retries made inside it.
pub async fn counting<F: Future>(work: F) -> (F::Output, u32) {
    RETRIES
        .scope(Cell::new(0), async move {
            let out = work.await;
            (out, RETRIES.with(Cell::get))
        })
        .await
}
