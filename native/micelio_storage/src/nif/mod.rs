//! The NIF functions: decode terms, call a store, encode the reply.
//!
//! - `store`: opening a store, and running operations on it (async, on a
//!   dirty scheduler, or from the cache inline);
//! - `operation`: the operations a caller can ask of any store;
//! - `transfer`: files and streams larger than memory, with progress;
//! - `signing`: the SigV4 signer on its own (`Micelio.Storage.S3.sign_headers/4`);
//! - `logging`: the engine's log events, sent to `Logger`;
//! - `keys`: the key rules in words, for error messages;
//! - `debug`: hooks for the test suite.

pub mod debug;
mod documents;
pub mod keys;
pub mod logging;
pub mod operation;
mod profile;
pub mod signing;
pub mod store;
pub mod transfer;

use std::panic::{catch_unwind, AssertUnwindSafe};

use rustler::{Env, Term};

use crate::terms::error_tuple;
use micelio_storage_core::error::{panic_message, StoreError};

/// Runs a synchronous NIF body; a panic becomes `{:error, {:panic, msg}}`.
pub fn guarded<'a>(env: Env<'a>, body: impl FnOnce() -> Result<Term<'a>, StoreError>) -> Term<'a> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(term)) => term,
        Ok(Err(err)) => error_tuple(env, &err),
        Err(payload) => error_tuple(env, &StoreError::Panic(panic_message(payload))),
    }
}
