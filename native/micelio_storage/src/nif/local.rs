//! NIFs of the local backend. They run on dirty I/O schedulers: a local read
//! or write is a few syscalls, and that measured 10x cheaper than a round trip
//! through the async runtime. The deadline is checked between I/O chunks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustler::{Binary, Encoder, Env, OwnedBinary, ResourceArc, Term};

use super::{content_bytes, decode_condition, guarded, meta_term, ok, ok_atom, BeamBuf};
use micelio_storage_core::key::{Key, Prefix};
use micelio_storage_core::local::LocalStore;
use micelio_storage_core::object::{Deadline, PutOptions};

/// A configured local store, held by Elixir and reused by every call.
pub struct LocalStoreResource(pub Arc<LocalStore>);

#[rustler::resource_impl]
impl rustler::Resource for LocalStoreResource {}

fn deadline(timeout_ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(timeout_ms))
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_open<'a>(env: Env<'a>, root: String) -> Term<'a> {
    guarded(env, || {
        let store = LocalStore::open(&PathBuf::from(root))?;
        Ok(ok(
            env,
            ResourceArc::new(LocalStoreResource(Arc::new(store))),
        ))
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_get<'a>(
    env: Env<'a>,
    store: ResourceArc<LocalStoreResource>,
    key: Binary<'a>,
    with_meta: bool,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let mut buf = BeamBuf(OwnedBinary::new(0));
        let meta = store.0.get_into(key, deadline(timeout_ms), &mut buf)?;
        let bin = buf.0.release(env);
        Ok(if with_meta {
            (super::atoms::ok(), bin, meta_term(env, &meta)).encode(env)
        } else {
            ok(env, bin)
        })
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_head<'a>(
    env: Env<'a>,
    store: ResourceArc<LocalStoreResource>,
    key: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let meta = store.0.head(key, deadline(timeout_ms))?;
        Ok(ok(env, meta_term(env, &meta)))
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_put<'a>(
    env: Env<'a>,
    store: ResourceArc<LocalStoreResource>,
    key: Binary<'a>,
    content: Term<'a>,
    condition: Term<'a>,
    durable: bool,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        let content = content_bytes(content)?;
        let opts = PutOptions {
            condition: decode_condition(condition)?,
            durable,
        };
        store
            .0
            .put(key, content.as_slice(), &opts, deadline(timeout_ms))?;
        Ok(ok_atom(env))
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_delete<'a>(
    env: Env<'a>,
    store: ResourceArc<LocalStoreResource>,
    key: Binary<'a>,
    durable: bool,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let key = Key::parse(key.as_slice())?;
        store.0.delete(key, durable, deadline(timeout_ms))?;
        Ok(ok_atom(env))
    })
}

#[rustler::nif(schedule = "DirtyIo")]
fn local_list<'a>(
    env: Env<'a>,
    store: ResourceArc<LocalStoreResource>,
    prefix: Binary<'a>,
    timeout_ms: u64,
) -> Term<'a> {
    guarded(env, || {
        let prefix = Prefix::parse(prefix.as_slice())?;
        let keys = store.0.list(prefix, deadline(timeout_ms))?;
        Ok(ok(env, keys))
    })
}
