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
    /// The origin a tiered store caches, once its write listener is set.
    origin: Mutex<Option<String>>,
}

/// What Elixir holds: a reference to a live store.
pub struct StoreResource(Arc<LiveStore>);

impl StoreResource {
    /// The store, through the contract.
    pub fn shared(&self) -> SharedStore {
        self.0.store.clone()
    }
}

#[rustler::resource_impl]
impl rustler::Resource for StoreResource {}

/// A live store, and its cache on its own: a cache may outlive the store's
/// last handle for a while (a write or a fetch finishing in its own task),
/// and must then be reused, not opened twice over one directory.
type Registry = Mutex<HashMap<(String, Settings), (Weak<LiveStore>, CacheRef)>>;

type CacheRef = Option<Weak<TieredStore<BeamValue>>>;

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
        reg.retain(|_, (live, cache)| {
            live.strong_count() > 0 || cache.as_ref().is_some_and(|c| c.strong_count() > 0)
        });
        let id = (backend, settings);
        let found = reg
            .get(&id)
            .map(|(live, cache)| (live.upgrade(), cache.as_ref().and_then(Weak::upgrade)));
        let live = match found {
            Some((Some(live), _)) => live,
            // The cache is still running: wrap it again.
            Some((None, Some(cache))) => Arc::new(LiveStore {
                store: cache.clone(),
                cache: Some(cache),
                origin: Mutex::new(None),
            }),
            _ => {
                let opened = registry::open::<BeamValue>(&id.0, &id.1)?;
                Arc::new(LiveStore {
                    store: opened.store,
                    cache: opened.cache,
                    origin: Mutex::new(None),
                })
            }
        };
        let cache = live.cache.as_ref().map(Arc::downgrade);
        reg.insert(id, (Arc::downgrade(&live), cache));
        let mode = mode(env, &live);
        let resource = ResourceArc::new(StoreResource(live));
        Ok((ok_atom(env), resource, mode).encode(env))
    })
}

fn deadline(timeout_ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(timeout_ms))
}

/// The names of every setting the engine reads (checked against the Elixir
/// settings table by a test).
#[rustler::nif]
fn engine_setting_names() -> Vec<&'static str> {
    micelio_storage_core::settings::Setting::ALL
        .iter()
        .map(|s| s.as_str())
        .collect()
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
        Ok(spawn_reply(env, reply_ref, timeout, work)?.encode(env))
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
            return Err(StoreError::Unsupported(
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

/// A disk-tier hit as `{:ok, path, offset, meta}`: a private hard link to
/// the checked file (the caller sends it with sendfile, then removes it),
/// where the content starts, and the metadata. `:miss` otherwise.
#[rustler::nif(schedule = "DirtyIo")]
fn store_disk_file<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreResource>,
    key: Binary<'a>,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let found = store
            .0
            .cache
            .as_ref()
            .and_then(|c| c.disk_file(key.as_str()));
        Ok(match found {
            Some((path, offset, meta)) => (
                crate::terms::ok_atom(env),
                path.to_string_lossy().to_string(),
                offset,
                crate::terms::meta_term(env, &meta),
            )
                .encode(env),
            None => atoms::miss().encode(env),
        })
    })
}

/// `{:ok, [{tier, [{counter, value}]}]}` of a tiered store.
#[rustler::nif]
fn store_stats(env: Env, store: ResourceArc<StoreResource>) -> Term {
    guarded(env, || match &store.0.cache {
        Some(cache) => Ok(ok(env, cache.stats())),
        None => Err(StoreError::Unsupported(format!(
            "stats are kept by the :tiered backend, not :{}",
            store.0.store.backend()
        ))),
    })
}

/// What the store does beyond the core operations, as a map with atom keys
/// (rustler encodes the struct field by field: no name is spelled twice).
#[derive(rustler::NifMap)]
struct CapabilitiesMap {
    presigned_urls: bool,
    public_urls: bool,
    incomplete_uploads: bool,
    server_side_copy: bool,
    read_cache: bool,
    object_tags: bool,
}

#[rustler::nif]
fn store_capabilities(store: ResourceArc<StoreResource>) -> CapabilitiesMap {
    let c = store.0.store.capabilities();
    CapabilitiesMap {
        presigned_urls: c.presigned_urls,
        public_urls: c.public_urls,
        incomplete_uploads: c.incomplete_uploads,
        server_side_copy: c.server_side_copy,
        read_cache: c.read_cache,
        object_tags: c.object_tags,
    }
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

mod coherence_atoms {
    rustler::atoms! { micelio_storage_written, started, done }
}

/// Sends `{:micelio_storage_written, tag, :started | :done, keys, writer}` to `pid`
/// for every write through this tiered store, so the node's coherence
/// server can tell the other nodes. `:done` comes from the write's own task,
/// also when its caller timed out or died. Other stores ignore it.
#[rustler::nif]
fn store_set_write_listener(
    env: Env,
    store: ResourceArc<StoreResource>,
    pid: rustler::LocalPid,
    tag: String,
) -> Term {
    use micelio_storage_core::tiered::WritePhase;
    guarded(env, || {
        if let Some(cache) = &store.0.cache {
            *store.0.origin.lock().unwrap_or_else(|p| p.into_inner()) = Some(tag.clone());
            // Identifies the writer, which must not invalidate itself again
            // after a read has refilled it.
            let writer = Arc::as_ptr(cache) as usize as u64;
            cache.set_write_hook(Box::new(move |phase, keys| {
                let keys: Vec<&str> = keys.iter().map(Key::as_str).collect();
                let phase = match phase {
                    WritePhase::Started => coherence_atoms::started(),
                    WritePhase::Done => coherence_atoms::done(),
                };
                let mut msg = rustler::env::OwnedEnv::new();
                let _ = msg.send_and_clear(&pid, |e| {
                    let written = coherence_atoms::micelio_storage_written();
                    (written, tag.as_str(), phase, &keys, writer).encode(e)
                });
            }));
        }
        Ok(ok_atom(env))
    })
}

/// The live tiered caches over `origin` (all of them when `None`), but the
/// one whose id is `except`.
fn caches_of(origin: Option<&str>, except: u64) -> Vec<Arc<TieredStore<BeamValue>>> {
    let reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    reg.values()
        .filter_map(|(live, _)| live.upgrade())
        .filter(|live| {
            let tag = live.origin.lock().unwrap_or_else(|p| p.into_inner());
            origin.is_none_or(|o| tag.as_deref() == Some(o))
        })
        .filter_map(|live| live.cache.clone())
        .filter(|cache| Arc::as_ptr(cache) as usize as u64 != except)
        .collect()
}

/// Drops this node's cached copies of `keys` in every tiered store over
/// `origin` but the writer `except` (0: none), for a write elsewhere. File I/O (the disk tier): on a dirty
/// scheduler.
#[rustler::nif(schedule = "DirtyIo")]
fn store_invalidate<'a>(
    env: Env<'a>,
    origin: String,
    keys: Vec<Binary<'a>>,
    except: u64,
) -> Term<'a> {
    guarded(env, || {
        for cache in caches_of(Some(&origin), except) {
            for key in &keys {
                if let Ok(key) = std::str::from_utf8(key.as_slice()) {
                    cache.invalidate(key);
                }
            }
        }
        Ok(ok_atom(env))
    })
}

/// Drops every copy in every tiered store (a node that may have missed
/// invalidations while cut off).
#[rustler::nif(schedule = "DirtyIo")]
fn store_invalidate_all(env: Env) -> Term {
    guarded(env, || {
        for cache in caches_of(None, 0) {
            cache.invalidate_all();
        }
        Ok(ok_atom(env))
    })
}
