//! NIFs of the tiered backend.
//!
//! A RAM hit is answered inline on the normal scheduler: a hash lookup under
//! a shard lock, and a binary that points at the cached bytes (no copy). A
//! disk probe runs on a dirty I/O scheduler. The CDN, the origin and writes
//! run on the tokio runtime and answer by message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use micelio_storage_core::error::StoreError;
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::local::LocalStore;
use micelio_storage_core::object::PutOptions;
use micelio_storage_core::s3::S3Store;
use micelio_storage_core::tiered::{Origin, TieredConfig, TieredStore, Value};
use rustler::{Binary, Encoder, Env, NifMap, OwnedBinary, ResourceArc, Term};

use super::reply::body_reply;
use super::s3::S3ConfigTerm;
use super::{
    borrow_bytes, content_bytes, decode_condition, guarded, key_string, meta_term, ok,
    spawn_checked, BeamBuf, BytesResource, StoreReply,
};

mod atoms {
    rustler::atoms! { miss }
}

/// A cached value, kept as a resource so every hit can hand out a binary
/// pointing at the same bytes.
#[derive(Clone)]
pub struct BeamValue(pub ResourceArc<BytesResource>);

impl Value for BeamValue {
    fn from_bytes(bytes: Bytes) -> Self {
        BeamValue(ResourceArc::new(BytesResource(bytes)))
    }
    fn as_bytes(&self) -> &[u8] {
        &self.0 .0
    }
}

/// Up to this size a binary lives on the process heap, and a copy is
/// cheaper than a reference; above it a copy would allocate.
const HEAP_BINARY_MAX: usize = 64;

/// The binary term of a cached value: tiny ones are copied onto the process
/// heap, others point into the cache (no copy, no allocation).
pub fn value_term<'a>(env: Env<'a>, value: &BeamValue) -> Term<'a> {
    let bytes = value.as_bytes();
    if bytes.len() <= HEAP_BINARY_MAX {
        return crate::encode::bin(env, bytes);
    }
    value.0.make_binary(env, |r| &r.0[..]).to_term(env)
}

/// A configured tiered store.
pub struct TieredResource(pub Arc<TieredStore<BeamValue>>);

#[rustler::resource_impl]
impl rustler::Resource for TieredResource {}

/// The tiered settings as Elixir resolved them; exactly one origin is set.
#[derive(NifMap)]
pub struct TieredConfigTerm {
    memory_max_bytes: u64,
    disk_path: String,
    disk_max_bytes: u64,
    cdn_base_url: Option<String>,
    cdn_timeout_ms: u64,
    local_path: Option<String>,
    s3: Option<S3ConfigTerm>,
    /// Identifies the settings (secrets only as a digest): equal settings share one store.
    fingerprint: String,
}

type Registry = Mutex<HashMap<String, Weak<TieredStore<BeamValue>>>>;

/// Live stores by fingerprint. Two stores over one cache would not see each
/// other's writes, so opening equal settings again returns the live one.
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Default::default)
}

#[rustler::nif(schedule = "DirtyIo")]
fn tiered_open(env: Env, config: TieredConfigTerm) -> Term {
    guarded(env, || {
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(store) = reg.get(&config.fingerprint).and_then(Weak::upgrade) {
            return Ok(ok(env, ResourceArc::new(TieredResource(store))));
        }
        let fingerprint = config.fingerprint.clone();
        let origin = match (config.local_path, config.s3) {
            (_, Some(s3)) => Origin::S3(Arc::new(S3Store::new(s3.into_config()?)?)),
            (Some(path), None) => Origin::Local(Arc::new(LocalStore::open(&PathBuf::from(path))?)),
            (None, None) => {
                return Err(StoreError::InvalidConfig(
                    "origin_backend",
                    "no origin configured".into(),
                ))
            }
        };
        let cfg = TieredConfig {
            memory_max_bytes: config.memory_max_bytes,
            disk_path: PathBuf::from(config.disk_path),
            disk_max_bytes: config.disk_max_bytes,
            cdn_base_url: config.cdn_base_url,
            cdn_timeout: Duration::from_millis(config.cdn_timeout_ms),
        };
        let store = Arc::new(TieredStore::new(cfg, origin)?);
        reg.insert(fingerprint, Arc::downgrade(&store));
        Ok(ok(env, ResourceArc::new(TieredResource(store))))
    })
}

/// `{:ok, bin}`, `{:ok, bin, meta}` or `:miss`.
#[rustler::nif]
fn tiered_get_ram<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    key: Binary<'a>,
    with_meta: bool,
) -> Term<'a> {
    guarded(env, || {
        let hit = store.0.get_memory_with(key.as_slice(), |value, meta| {
            body_reply(env, value_term(env, value), with_meta.then(|| meta.clone()))
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

/// Like `tiered_get_ram`, from the disk tier (filling RAM on a hit). The
/// file is read straight into a BEAM binary, which RAM then shares.
#[rustler::nif(schedule = "DirtyIo")]
fn tiered_get_disk<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    key: Binary<'a>,
    with_meta: bool,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let mut buf = BeamBuf(OwnedBinary::new(0));
        let Some((start, meta)) = store.0.get_disk_into(key.as_str(), &mut buf) else {
            return Ok(atoms::miss().encode(env));
        };
        let bin = buf.0.release(env);
        if store.0.has_memory() {
            let value = BeamValue::from_bytes(borrow_bytes(env, bin));
            store
                .0
                .fill_memory(key.as_str(), start, value, meta.clone());
        }
        Ok(body_reply(env, bin.to_term(env), with_meta.then_some(meta)))
    })
}

#[rustler::nif]
fn tiered_fetch<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    with_meta: bool,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            let (value, meta) = store.fetch(&key, Duration::from_millis(timeout_ms)).await?;
            Ok(StoreReply::Cached(value, with_meta.then_some(meta)))
        })
    })
}

/// `{:ok, meta}` from RAM or disk, or `:miss`.
#[rustler::nif(schedule = "DirtyIo")]
fn tiered_head_local<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    key: Binary<'a>,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        Ok(match store.0.head_local(key.as_str()) {
            Some(meta) => ok(env, meta_term(env, &meta)),
            None => atoms::miss().encode(env),
        })
    })
}

#[rustler::nif]
fn tiered_head_remote<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            let timeout = Duration::from_millis(timeout_ms);
            Ok(StoreReply::Meta(store.head_remote(&key, timeout).await?))
        })
    })
}

#[rustler::nif]
#[allow(clippy::too_many_arguments)]
fn tiered_put<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    content: Term<'a>,
    condition: Term<'a>,
    durable: bool,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let opts = PutOptions {
            condition: decode_condition(condition)?,
            durable,
        };
        let body = borrow_bytes(env, content_bytes(content)?);
        let store = store.0.clone();
        Ok(move || async move {
            let timeout = Duration::from_millis(timeout_ms);
            store.put(&key, body, opts, timeout).await?;
            Ok(StoreReply::Done)
        })
    })
}

#[rustler::nif]
fn tiered_delete<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    reply_ref: Term<'a>,
    key: Binary<'a>,
    durable: bool,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let key = key_string(key)?;
        let store = store.0.clone();
        Ok(move || async move {
            let timeout = Duration::from_millis(timeout_ms);
            store.delete(&key, durable, timeout).await?;
            Ok(StoreReply::Done)
        })
    })
}

#[rustler::nif]
fn tiered_list<'a>(
    env: Env<'a>,
    store: ResourceArc<TieredResource>,
    reply_ref: Term<'a>,
    prefix: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    spawn_checked(env, reply_ref, timeout_ms, || {
        let prefix = Prefix::parse(prefix.as_slice())?.as_str().to_string();
        let store = store.0.clone();
        Ok(move || async move {
            let timeout = Duration::from_millis(timeout_ms);
            Ok(StoreReply::Keys(store.list(&prefix, timeout).await?))
        })
    })
}

/// `[{tier, [{counter, value}]}]` with tier and counter names as strings.
#[rustler::nif]
fn tiered_stats(env: Env, store: ResourceArc<TieredResource>) -> Term {
    ok(env, store.0.stats())
}

/// Bytes the RAM tier charges against its budget now (ghost keys included).
#[rustler::nif]
fn tiered_memory_charged(store: ResourceArc<TieredResource>) -> u64 {
    store.0.memory_charged_bytes()
}
