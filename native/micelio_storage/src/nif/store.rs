//! The store resource and the NIFs that run operations on it: one family
//! for every backend.
//!
//! - `store_run` runs an operation on the tokio runtime and answers
//!   `{ref, result}` by message (network stores, and tiered misses);
//! - `store_run_dirty` runs it on a dirty I/O scheduler, for stores whose
//!   I/O is blocking file access (local): measured ten times cheaper than a
//!   trip through the runtime;
//! - `store_get_cached` answers a RAM hit inline on the calling scheduler
//!   (a hash lookup under a shard lock, a binary pointing at the cached
//!   bytes), and `store_get_disk` a disk-tier hit on a dirty scheduler.
//!
//! Which of these a store takes is its `mode`, returned by `store_open`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::Key;
use micelio_storage_core::object::Deadline;
use micelio_storage_core::registry;
use micelio_storage_core::settings::Settings;
use micelio_storage_core::store::{block_on, SharedStore};
use micelio_storage_core::tiered::{TieredStore, Value};
use rustler::{Binary, Encoder, Env, ResourceArc, Term};

use super::guarded;
use super::operation::Operation;
use crate::buffers::{borrow_bytes, value_term, BeamBody, BeamValue};
use crate::runtime::{spawn_reply, Reply};
use crate::terms::{body_reply, decode_settings, ok, ok_atom};

mod atoms {
    rustler::atoms! { miss, blocking, cached, r#async = "async" }
}

/// A built store, shared by every handle opened with the same settings.
pub struct LiveStore {
    store: SharedStore,
    cache: Option<Arc<TieredStore<BeamValue>>>,
}

/// What Elixir holds: a reference to a live store.
pub struct StoreResource(Arc<LiveStore>);

#[rustler::resource_impl]
impl rustler::Resource for StoreResource {}

type Registry = Mutex<HashMap<(String, Settings), Weak<LiveStore>>>;

/// Live stores by settings. Two tiered stores over one cache directory
/// would not see each other's writes, and two clients for one bucket would
/// keep two pools: opening equal settings again returns the live store.
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn mode<'a>(env: Env<'a>, live: &LiveStore) -> Term<'a> {
    if live.cache.is_some() {
        atoms::cached().encode(env)
    } else if live.store.blocking() {
        atoms::blocking().encode(env)
    } else {
        atoms::r#async().encode(env)
    }
}

/// `{:ok, store, mode}` for `backend` built from `settings`.
#[rustler::nif(schedule = "DirtyIo")]
fn store_open<'a>(env: Env<'a>, backend: String, settings: Term<'a>) -> Term<'a> {
    guarded(env, || {
        let settings = decode_settings(settings)?;
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        let id = (backend, settings);
        let live = match reg.get(&id).and_then(Weak::upgrade) {
            Some(live) => live,
            None => {
                let opened = registry::open::<BeamValue>(&id.0, &id.1)?;
                let live = Arc::new(LiveStore {
                    store: opened.store,
                    cache: opened.cache,
                });
                reg.insert(id, Arc::downgrade(&live));
                live
            }
        };
        let mode = mode(env, &live);
        let resource = ResourceArc::new(StoreResource(live));
        Ok((ok_atom(env), resource, mode).encode(env))
    })
}

fn deadline(timeout_ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(timeout_ms))
}

/// Runs `operation` on the runtime; the result arrives as `{ref, result}`.
#[rustler::nif]
fn store_run<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    reply_ref: Term<'a>,
    operation: Term<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let op = Operation::decode(env, operation)?;
        let shared = store.0.store.clone();
        let deadline = deadline(timeout_ms);
        let work = op.run(shared, Operation::network_alloc(), deadline);
        let timeout = Duration::from_millis(timeout_ms);
        Ok(spawn_reply(env, reply_ref, timeout, work).encode(env))
    })
}

/// Runs `operation` here, on a dirty I/O scheduler (blocking stores only).
#[rustler::nif(schedule = "DirtyIo")]
fn store_run_dirty<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    operation: Term<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        if !store.0.store.blocking() {
            return Err(StoreError::InvalidConfig(
                "backend",
                "this store answers by message: use store_run".into(),
            ));
        }
        let op = Operation::decode(env, operation)?;
        let shared = store.0.store.clone();
        let outcome = block_on(op.run(shared, Operation::file_alloc(), deadline(timeout_ms)))?;
        Ok(outcome.encode_reply(env))
    })
}

/// A RAM hit as `{:ok, bin}` / `{:ok, bin, meta}`, or `:miss`.
#[rustler::nif]
fn store_get_cached<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    key: Binary<'a>,
    with_meta: bool,
) -> Term<'a> {
    guarded(env, || {
        let hit = store.0.cache.as_ref().and_then(|cache| {
            cache.get_memory_with(key.as_slice(), |value, meta| {
                body_reply(env, value_term(env, value), with_meta.then_some(meta))
            })
        });
        match hit {
            Some(term) => Ok(term),
            None => {
                // Validate only on a miss: a bad key must not read as :miss.
                Key::parse(key.as_slice())?;
                Ok(atoms::miss().encode(env))
            }
        }
    })
}

/// Like `store_get_cached`, from the disk tier (filling RAM on a hit). The
/// file is read straight into a BEAM binary, which RAM then shares.
#[rustler::nif(schedule = "DirtyIo")]
fn store_get_disk<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    key: Binary<'a>,
    with_meta: bool,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let Some(cache) = store.0.cache.as_ref() else {
            return Ok(atoms::miss().encode(env));
        };
        let mut buf = BeamBody::for_files(0);
        let Some((ticket, meta)) = cache.get_disk_into(key.as_str(), &mut *buf) else {
            return Ok(atoms::miss().encode(env));
        };
        let bin = match buf.into_any().downcast::<BeamBody>() {
            Ok(beam) => beam.into_term(env),
            Err(_) => unreachable!("for_files makes a BeamBody"),
        };
        if cache.has_memory() {
            let bytes: Binary = bin.decode().map_err(|_| StoreError::Corrupt)?;
            let value = BeamValue::from_bytes(borrow_bytes(env, bytes));
            cache.fill_memory(key.as_str(), ticket, value, meta.clone());
        }
        Ok(body_reply(env, bin, with_meta.then_some(&meta)))
    })
}

/// `{:ok, [{tier, [{counter, value}]}]}` of a tiered store.
#[rustler::nif]
fn store_stats(env: Env, store: ResourceArc<StoreResource>) -> Term {
    guarded(env, || match &store.0.cache {
        Some(cache) => Ok(ok(env, cache.stats())),
        None => Err(StoreError::InvalidConfig(
            "backend",
            format!(
                "stats are kept by the :tiered backend, not :{}",
                store.0.store.backend()
            ),
        )),
    })
}

/// Bytes the RAM tier charges against its budget now (ghost keys included).
#[rustler::nif]
fn store_memory_charged(store: ResourceArc<StoreResource>) -> u64 {
    store
        .0
        .cache
        .as_ref()
        .map_or(0, |c| c.memory_charged_bytes())
}
