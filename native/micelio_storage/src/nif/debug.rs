//! Hooks that let the test suite prove panics never crash the VM.

use std::time::Duration;

use rustler::{Atom, Encoder, Env, ResourceArc, Term};

use super::guarded;
use crate::runtime::{spawn_reply, Reply, TaskGuard};
use crate::terms::ok_atom;
use micelio_storage_core::error::StoreError;

struct Never;

impl Reply for Never {
    fn encode_reply<'a>(self, env: Env<'a>) -> Term<'a> {
        ok_atom(env)
    }
}

/// Panics on the calling (normal) scheduler inside the panic guard.
#[rustler::nif]
fn debug_panic_sync(env: Env) -> Term {
    guarded(env, || -> Result<Term, StoreError> {
        panic!("deliberate panic (sync)")
    })
}

/// Panics inside a task on the async runtime; the caller gets `{ref, {:error, {:panic, _}}}`.
#[rustler::nif]
fn debug_panic_async<'a>(env: Env<'a>, reply_ref: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let guard = spawn_reply(env, reply_ref, Duration::from_secs(5), async {
            if true {
                panic!("deliberate panic (async)");
            }
            Ok::<Never, StoreError>(Never)
        })?;
        Ok(guard.encode(env))
    })
}

/// Sleeps on the runtime, to test timeouts and cancellation.
#[rustler::nif]
fn debug_sleep<'a>(env: Env<'a>, reply_ref: Term<'a>, sleep_ms: u64, timeout_ms: u64) -> Term<'a> {
    guarded(env, || {
        let guard = spawn_reply(
            env,
            reply_ref,
            Duration::from_millis(timeout_ms),
            async move {
                // 0 replies at once: a round trip through the runtime
                // (tokio rounds a zero sleep up to its 1 ms timer tick).
                if sleep_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
                }
                Ok::<Never, StoreError>(Never)
            },
        )?;
        Ok(guard.encode(env))
    })
}

/// Stops a task whose caller gave up waiting.
#[rustler::nif]
fn task_cancel(guard: ResourceArc<TaskGuard>) -> Atom {
    guard.cancel();
    rustler::types::atom::ok()
}

/// Tasks running on the async runtime.
#[rustler::nif]
fn debug_live_tasks() -> usize {
    crate::runtime::live_tasks()
}
